//! Sign-in throttling.
//!
//! An attempt is counted as a failure *before* the password is checked (and the count taken
//! back when it succeeds), so attempts sent in parallel cannot all slip in before the first
//! failure is recorded. Two counters, each over `window`:
//! - per account name and source address: a handful of failures lock that pair;
//! - per source address: failures across names lock the address.
//!
//! There is deliberately no lock on a name from everywhere: anyone with a few addresses could
//! then keep any administrator (every Owner) locked out. Guessing from many addresses is
//! bounded per address, and a password alone signs in no one — every administrator has a
//! second factor.
//!
//! Unknown account names are counted like real ones, so a lockout does not reveal which names
//! exist. IPv6 sources are counted per /64. The counters live in memory (a restart or a
//! password reset clears them) and their number is bounded; a live lock is never forgotten to
//! make room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// More distinct keys than this and the oldest unlocked ones are forgotten.
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures per account name and source within `window` before that pair is locked.
    pub account_failures: u32,
    /// Failures per source address within `window` before it is locked.
    pub source_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    limit: u32,
    first_failure_at: OffsetDateTime,
    locked_until: Option<OffsetDateTime>,
}

impl Counter {
    fn live_lock(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.locked_until.filter(|u| *u > now)
    }
}

/// The keys of one attempt.
fn keys(scope: &str, account: &str, source: Option<&str>) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(source) = source.map(source_group) {
        if !account.is_empty() {
            keys.push(format!("pair:{scope}{account}\0{source}"));
        }
        keys.push(format!("source:{scope}{source}"));
    }
    keys
}

/// An IPv6 address counts as its /64 (one customer's network); anything else as itself.
fn source_group(source: &str) -> String {
    match source.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
        _ => source.to_owned(),
    }
}

pub struct LoginThrottle {
    policy: ThrottlePolicy,
    counters: Mutex<HashMap<String, Counter>>,
}

/// An attempt let through: counted as failed until [`LoginThrottle::succeeded`] says
/// otherwise.
#[derive(Debug, Clone)]
pub struct Attempt {
    keys: Vec<String>,
    /// Set when counting this attempt locked something: until when, if it fails.
    pub locks_until: Option<OffsetDateTime>,
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

    fn limit(&self, key: &str) -> u32 {
        let p = &self.policy;
        if key.starts_with("pair:") {
            p.account_failures.max(1)
        } else {
            p.source_failures.max(1)
        }
    }

    /// Lets an attempt by `account` (empty: none, e.g. the bootstrap secret) from `source`
    /// through, counting it as a failure; refuses with the end of the lockout when a key is
    /// locked.
    pub fn begin(
        &self,
        account: &str,
        source: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Attempt, OffsetDateTime> {
        self.begin_in("", account, source, now)
    }

    /// [`Self::begin`] with counters of their own (`scope`): the portal's end users, whose
    /// typos must not lock administrators sharing an office's address out, nor the reverse.
    pub fn begin_in(
        &self,
        scope: &str,
        account: &str,
        source: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Attempt, OffsetDateTime> {
        let keys = keys(scope, account, source);
        let mut counters = self.counters();
        if let Some(until) = keys
            .iter()
            .filter_map(|k| counters.get(k).and_then(|c| c.live_lock(now)))
            .max()
        {
            return Err(until);
        }
        make_room(&mut counters, keys.len(), self.policy.window, now);
        let mut locks_until = None;
        for key in &keys {
            let limit = self.limit(key);
            let counter = counters.entry(key.clone()).or_insert(Counter {
                failures: 0,
                limit,
                first_failure_at: now,
                locked_until: None,
            });
            if now - counter.first_failure_at >= self.policy.window
                || counter.locked_until.is_some_and(|u| u <= now)
            {
                *counter = Counter {
                    failures: 0,
                    limit,
                    first_failure_at: now,
                    locked_until: None,
                };
            }
            counter.failures += 1;
            if counter.failures >= counter.limit {
                let until = now + self.policy.lockout;
                counter.locked_until = Some(until);
                locks_until = Some(until);
            }
        }
        Ok(Attempt { keys, locks_until })
    }

    /// Takes back the failure `attempt` was counted as: the name-and-source pair starts
    /// afresh; the address's counter drops by one (one good password must not wipe out its
    /// failures with other names).
    pub fn succeeded(&self, attempt: &Attempt) {
        self.take_back(attempt, true);
    }

    /// Takes back an attempt that decided nothing (the directory could not be reached): every
    /// counter drops by one.
    pub fn cancel(&self, attempt: &Attempt) {
        self.take_back(attempt, false);
    }

    fn take_back(&self, attempt: &Attempt, forget_pair: bool) {
        let mut counters = self.counters();
        for key in &attempt.keys {
            if forget_pair && key.starts_with("pair:") {
                counters.remove(key);
            } else if let Some(c) = counters.get_mut(key) {
                c.failures = c.failures.saturating_sub(1);
                if c.failures < c.limit {
                    c.locked_until = None;
                }
            }
        }
    }

    /// Forgets every count and lock of `account` (a password reset).
    pub fn unlock(&self, account: &str) {
        let pair = format!("pair:{account}\0");
        self.counters().retain(|k, _| !k.starts_with(&pair));
    }
}

/// Frees room for `wanted` new keys: forgets stale counters, then the oldest unlocked ones.
/// Live locks are kept even if the table stays full.
fn make_room(counters: &mut HashMap<String, Counter>, wanted: usize, window: Duration, now: OffsetDateTime) {
    if counters.len() + wanted <= MAX_KEYS {
        return;
    }
    counters.retain(|_, c| now - c.first_failure_at < window || c.live_lock(now).is_some());
    while counters.len() + wanted > MAX_KEYS {
        // The quietest first: keys near their limit are the ones guessing is pressing on.
        let oldest = counters
            .iter()
            .filter(|(_, c)| c.live_lock(now).is_none())
            .min_by_key(|(_, c)| (c.failures, c.first_failure_at))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                counters.remove(&k);
            }
            None => return,
        }
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
    fn attempts_in_flight_count_before_their_outcome_is_known() {
        let t = throttle();
        // Three attempts start at once (none has failed yet): the fourth is refused.
        let attempts: Vec<Attempt> = (0..3)
            .map(|_| t.begin("alice", Some("192.0.2.1"), NOW).unwrap())
            .collect();
        assert_eq!(attempts[2].locks_until, Some(NOW + Duration::minutes(15)));
        assert!(t.begin("alice", Some("192.0.2.1"), NOW).is_err());
        // Another address may still try the name; the lock ends after the lockout.
        assert!(t.begin("alice", Some("192.0.2.2"), NOW).is_ok());
        assert!(
            t.begin("alice", Some("192.0.2.1"), NOW + Duration::minutes(15))
                .is_ok()
        );
    }

    #[test]
    fn a_success_takes_its_count_back() {
        let t = throttle();
        for _ in 0..2 {
            t.begin("alice", Some("192.0.2.1"), NOW).unwrap();
        }
        let good = t.begin("alice", Some("192.0.2.1"), NOW).unwrap();
        assert!(good.locks_until.is_some(), "would lock if it failed");
        t.succeeded(&good);
        assert!(
            t.begin("alice", Some("192.0.2.1"), NOW).is_ok(),
            "the pair starts afresh"
        );
    }

    #[test]
    fn many_names_lock_a_source_but_many_sources_never_lock_a_name() {
        let t = throttle();
        // Failures from 100 addresses do not lock the name for the 101st (or its owner).
        for i in 0..100 {
            t.begin("alice", Some(&format!("10.0.0.{i}")), NOW).unwrap();
        }
        assert!(t.begin("alice", Some("10.9.9.9"), NOW).is_ok());
        // One address trying five names is locked, for any name.
        for name in ["a", "b", "c", "d", "e"] {
            t.begin(name, Some("192.0.2.50"), NOW).unwrap();
        }
        assert!(t.begin("f", Some("192.0.2.50"), NOW).is_err());
        // An IPv6 /64 counts as one source.
        for i in 0..5 {
            t.begin(&format!("n{i}"), Some(&format!("2001:db8:1:2::{i}")), NOW)
                .unwrap();
        }
        assert!(t.begin("z", Some("2001:db8:1:2:ffff::1"), NOW).is_err());
        assert!(t.begin("z", Some("2001:db8:1:3::1"), NOW).is_ok());
    }

    #[test]
    fn unlock_forgets_a_name() {
        let t = throttle();
        for _ in 0..3 {
            t.begin("alice", Some("192.0.2.1"), NOW).unwrap();
        }
        assert!(t.begin("alice", Some("192.0.2.1"), NOW).is_err());
        t.unlock("alice");
        assert!(t.begin("alice", Some("192.0.2.1"), NOW).is_ok());
    }

    #[test]
    fn memory_stays_bounded_and_live_locks_are_kept() {
        let t = throttle();
        for _ in 0..3 {
            t.begin("alice", Some("192.0.2.1"), NOW).unwrap();
        }
        for i in 0..(MAX_KEYS + 50) {
            let _ = t.begin(
                "",
                Some(&format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)),
                NOW,
            );
        }
        assert!(t.counters().len() <= MAX_KEYS);
        assert!(
            t.begin("alice", Some("192.0.2.1"), NOW).is_err(),
            "the lock survived"
        );
    }
}
