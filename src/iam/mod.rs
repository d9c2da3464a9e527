//! Identity and access. For now: the one-time bootstrap secret that lets the first
//! administrator in.

pub mod bootstrap;
