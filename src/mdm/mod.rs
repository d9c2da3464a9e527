//! The Apple MDM protocol: enrollments, check-in, the command queue, enrollment profiles and
//! the command schema.

pub mod actions;
pub mod enrollment;
pub mod identity;
pub mod profile;
pub mod queue;
pub mod redact;
pub mod schema;
pub mod service;
pub mod webhook;

pub use service::{CheckinReply, ConnectRequest, MdmError, MdmOptions, MdmService};
