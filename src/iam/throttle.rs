//! Sign-in throttling: failures are counted per account name and per source address; too many
//! within the window lock that key for a while.
//!
//! Unknown account names are counted like real ones, so a lockout does not reveal which names
//! exist. The counters live in memory (a restart clears them) and are bounded.

use std::collections::HashMap;
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// More distinct keys than this and the oldest quiet ones are forgotten.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures per account name within `window` before it is locked.
    pub account_failures: u32,
    /// Failures per source address within `window` before it is locked.
    pub source_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    first_failure_at: OffsetDateTime,
    locked_until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    Account(&'a str),
    Source(&'a str),
}

impl Key<'_> {
    fn owned(self) -> String {
        match self {
            Key::Account(a) => format!("account:{a}"),
            Key::Source(s) => format!("source:{s}"),
        }
    }
}

pub struct LoginThrottle {
    policy: ThrottlePolicy,
    counters: Mutex<HashMap<String, Counter>>,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    Counted,
    /// This failure locked the key until the given time.
    Locked(OffsetDateTime),
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            counters: Mutex::new(HashMap::new()),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counter>> {
        // The map holds only counters; after a panic elsewhere it is still usable.
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// When `key` is locked at `now`, until when.
    pub fn locked_until(&self, key: Key<'_>, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.counters()
            .get(&key.owned())
            .and_then(|c| c.locked_until)
            .filter(|until| *until > now)
    }

    pub fn record_failure(&self, key: Key<'_>, now: OffsetDateTime) -> FailureEffect {
        let limit = match key {
            Key::Account(_) => self.policy.account_failures,
            Key::Source(_) => self.policy.source_failures,
        };
        let mut counters = self.counters();
        if counters.len() >= MAX_KEYS {
            let window = self.policy.window;
            counters
                .retain(|_, c| now - c.first_failure_at < window || c.locked_until.is_some_and(|u| u > now));
            if counters.len() >= MAX_KEYS
                && let Some(oldest) = counters
                    .iter()
                    .min_by_key(|(_, c)| c.first_failure_at)
                    .map(|(k, _)| k.clone())
            {
                counters.remove(&oldest);
            }
        }
        let counter = counters.entry(key.owned()).or_insert(Counter {
            failures: 0,
            first_failure_at: now,
            locked_until: None,
        });
        if now - counter.first_failure_at >= self.policy.window
            || counter.locked_until.is_some_and(|u| u <= now)
        {
            *counter = Counter {
                failures: 0,
                first_failure_at: now,
                locked_until: None,
            };
        }
        counter.failures += 1;
        if counter.failures >= limit.max(1) {
            let until = now + self.policy.lockout;
            counter.locked_until = Some(until);
            return FailureEffect::Locked(until);
        }
        FailureEffect::Counted
    }

    /// A successful sign-in clears the account's count (not the source's: one good password
    /// must not reset the count of an address trying many accounts).
    pub fn record_success(&self, account: &str) {
        self.counters().remove(&Key::Account(account).owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 09:00 UTC);

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottlePolicy {
            account_failures: 3,
            source_failures: 5,
            window: Duration::minutes(15),
            lockout: Duration::minutes(15),
        })
    }

    #[test]
    fn locks_after_the_limit_and_unlocks_after_the_lockout() {
        let t = throttle();
        let alice = Key::Account("alice");
        assert_eq!(t.record_failure(alice, NOW), FailureEffect::Counted);
        assert_eq!(t.record_failure(alice, NOW), FailureEffect::Counted);
        assert_eq!(
            t.record_failure(alice, NOW),
            FailureEffect::Locked(NOW + Duration::minutes(15))
        );
        assert!(t.locked_until(alice, NOW + Duration::minutes(14)).is_some());
        assert!(t.locked_until(Key::Account("bob"), NOW).is_none());
        assert!(t.locked_until(alice, NOW + Duration::minutes(15)).is_none());
        // After the lockout the count starts again.
        assert_eq!(
            t.record_failure(alice, NOW + Duration::minutes(16)),
            FailureEffect::Counted
        );
    }

    #[test]
    fn failures_outside_the_window_and_successes_reset_the_account_only() {
        let t = throttle();
        let (alice, src) = (Key::Account("alice"), Key::Source("192.0.2.7"));
        t.record_failure(alice, NOW);
        t.record_failure(alice, NOW);
        t.record_failure(alice, NOW + Duration::minutes(20));
        assert!(t.locked_until(alice, NOW + Duration::minutes(20)).is_none());
        for _ in 0..4 {
            t.record_failure(src, NOW);
        }
        t.record_success("alice");
        assert!(matches!(t.record_failure(src, NOW), FailureEffect::Locked(_)));
        assert_eq!(t.record_failure(alice, NOW), FailureEffect::Counted);
    }

    #[test]
    fn memory_stays_bounded() {
        let t = throttle();
        for i in 0..(MAX_KEYS + 50) {
            t.record_failure(Key::Source(&format!("10.0.{}.{}", i / 256, i % 256)), NOW);
        }
        assert!(t.counters().len() <= MAX_KEYS);
    }
}
