//! Citadel: an on-premises Mobile Device Management appliance in one binary.
//! See ARCHITECTURE.md for the map.

pub mod admin_client;
pub mod appliance;
pub mod audit;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod iam;
pub mod inventory;
pub mod mdm;
pub mod pki;
pub mod portal;
pub mod push;
pub mod scep;
pub mod sim;
pub mod store;
pub mod telemetry;
