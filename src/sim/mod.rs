//! Stand-ins for the outside world, built into the binary so that `citadel simulate`, the
//! tests and the benchmarks share them: an APNs-compatible HTTP/2 endpoint, an HTTPS CONNECT
//! proxy, and virtual Apple devices.

pub mod apns;
pub mod ceiling;
pub mod connect_proxy;
pub mod device;
pub mod fleet;
pub mod run;
