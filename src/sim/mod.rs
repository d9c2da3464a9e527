//! Stand-ins for the outside world, built into the binary so that `citadel simulate`, the
//! tests and the benchmarks share them: an APNs-compatible HTTP/2 endpoint, an HTTPS CONNECT
//! proxy, and virtual Apple devices.

pub mod apns;
pub mod ceiling;
pub mod connect_proxy;
pub mod device;
pub mod fleet;
pub mod run;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A poisoned lock only means a thread panicked while holding it; the stand-ins' data (counters,
/// recordings, device state) is still usable, so they carry on rather than fail.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
