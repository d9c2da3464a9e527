//! Identity and access. For now: the one-time bootstrap secret that lets the first
//! administrator in, and admin API tokens.

pub mod api_tokens;
pub mod bootstrap;
