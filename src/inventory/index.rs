//! The device list's in-memory index: one compact row per enrollment with what the list
//! searches, filters and sorts on, so that a query over 100,000 devices is a scan of memory,
//! not of the store.
//!
//! The store stays the source of truth. The index is built from it at start-up and a row is
//! re-read from the store after every write that touches its enrollment, inventory or
//! ownership ([`DeviceIndex::refresh`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{self, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{DeviceInventory, Ownership, Platform};
use crate::mdm::enrollment::{EnrollmentKind, EnrollmentRecord, EnrollmentStatus};
use crate::scep::registry;
use crate::store::{Store, StoreError, Tree, decode};

/// Whether a device meets the baseline: a passcode, compliant with its profiles, and storage
/// encrypted. `Unknown` until it has reported its security state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compliance {
    Compliant,
    Noncompliant,
    Unknown,
}

impl Compliance {
    pub fn name(self) -> &'static str {
        match self {
            Self::Compliant => "compliant",
            Self::Noncompliant => "noncompliant",
            Self::Unknown => "unknown",
        }
    }

    pub fn of(inv: Option<&DeviceInventory>) -> Self {
        let Some(inv) = inv.filter(|i| i.security_updated_at.is_some()) else {
            return Self::Unknown;
        };
        let failed = [
            inv.passcode_present,
            inv.passcode_compliant,
            inv.storage_encrypted,
        ]
        .contains(&Some(false));
        if failed {
            Self::Noncompliant
        } else {
            Self::Compliant
        }
    }
}

/// A dotted OS version, compared numerically (`17.10` > `17.9`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OsVersion(pub [u32; 3]);

impl OsVersion {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = [0u32; 3];
        let mut n = 0;
        for (i, p) in s.trim().split('.').enumerate() {
            if i >= 3 {
                break;
            }
            parts[i] = p.parse().ok()?;
            n += 1;
        }
        (n > 0).then_some(Self(parts))
    }
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// One enrollment as the list sees it.
///
/// Its text — ID, name, serial number, model and the search haystack — is one allocation, and
/// the row is the B-tree's key (ordered and found by ID): at 100,000 devices that is 100,000
/// small allocations instead of seven times as many, and B-tree leaves of 1 KiB instead of
/// 1.75 KiB (BENCHMARKS.md, issue 6).
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// The ID, the name, serial number and model (each present or not, see `present`), then
    /// the lower-case haystack the text search looks in.
    text: Box<str>,
    /// Where the ID, name, serial number and model end in `text`.
    ends: [u16; 4],
    /// Bits 0, 1 and 2: the name, serial number and model are present.
    present: u8,
    pub kind: EnrollmentKind,
    pub status: EnrollmentStatus,
    pub platform: Platform,
    pub ownership: Ownership,
    pub compliance: Compliance,
    pub os_version: Option<OsVersion>,
    pub supervised: Option<bool>,
    pub passcode_present: Option<bool>,
    pub storage_encrypted: Option<bool>,
    /// Milliseconds since the epoch.
    pub last_seen_at: i64,
    pub enrolled_at: i64,
    pub identity_not_after: Option<i64>,
}

/// What the index keeps of one string a device reported: enough to find and sort it by (a
/// device can send a name of any length; a row's parts stay well within `DeviceRow::ends`').
const MAX_PART_BYTES: usize = 256;

fn clamp(s: &str) -> &str {
    if s.len() <= MAX_PART_BYTES {
        return s;
    }
    let mut end = MAX_PART_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl DeviceRow {
    fn build(
        record: &EnrollmentRecord,
        inv: Option<&DeviceInventory>,
        ownership: Ownership,
        not_after: Option<i64>,
    ) -> Self {
        let f = &record.facts;
        fn pick<'a>(from_inv: Option<&'a String>, fact: &'a Option<String>) -> Option<&'a str> {
            from_inv.or(fact.as_ref()).map(|s| clamp(s))
        }
        let device_name = pick(inv.and_then(|i| i.device_name.as_ref()), &f.device_name);
        let serial_number = pick(inv.and_then(|i| i.serial_number.as_ref()), &f.serial_number);
        let model_name = pick(inv.and_then(|i| i.model_name.as_ref()), &f.model_name);
        let os = inv.and_then(|i| i.os_version.as_ref()).or(f.os_version.as_ref());
        let platform = super::platform(record, inv);
        // Enrollment IDs are short (a UDID, or one and a user's), never clamped: the row is found by it.
        let id = record.id.as_str();
        let mut text = String::with_capacity(192);
        let mut ends = [0u16; 4];
        let mut present = 0u8;
        for (i, part) in [Some(id), device_name, serial_number, model_name]
            .into_iter()
            .enumerate()
        {
            if let Some(part) = part {
                text.push_str(part);
                if i > 0 {
                    present |= 1 << (i - 1);
                }
            }
            ends[i] = u16::try_from(text.len()).unwrap_or(u16::MAX);
        }
        for part in [
            Some(id),
            device_name,
            serial_number,
            // What it said at enrolment stays findable after a report changed it.
            f.device_name.as_deref(),
            f.serial_number.as_deref(),
            model_name,
            f.product_name.as_deref(),
            f.model.as_deref(),
            record.user_short_name.as_deref(),
            record.user_long_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            text.push_str(&clamp(part).to_lowercase());
            text.push('\n');
        }
        Self {
            text: text.into(),
            ends,
            present,
            kind: record.kind,
            status: record.status,
            platform,
            ownership,
            compliance: Compliance::of(inv),
            os_version: os.and_then(|v| OsVersion::parse(v)),
            supervised: inv.and_then(|i| i.is_supervised),
            passcode_present: inv.and_then(|i| i.passcode_present),
            storage_encrypted: inv.and_then(|i| i.storage_encrypted),
            last_seen_at: millis(record.last_seen_at),
            enrolled_at: millis(record.enrolled_at),
            identity_not_after: not_after,
        }
    }

    fn span(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(0),
        };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.text
            .get(usize::from(start)..usize::from(end))
            .unwrap_or_default()
    }

    /// The string after the ID, if present (1: name, 2: serial number, 3: model).
    fn part(&self, i: usize) -> Option<&str> {
        (self.present & (1 << (i - 1)) != 0).then(|| self.span(i))
    }

    pub fn id(&self) -> &str {
        self.span(0)
    }

    pub fn device_name(&self) -> Option<&str> {
        self.part(1)
    }

    pub fn serial_number(&self) -> Option<&str> {
        self.part(2)
    }

    pub fn model_name(&self) -> Option<&str> {
        self.part(3)
    }

    fn haystack(&self) -> &str {
        let start = usize::from(self.ends[3]);
        self.text.get(start..).unwrap_or_default()
    }
}

// A row is found and ordered by its ID alone (the index holds one row per ID).
impl PartialEq for DeviceRow {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for DeviceRow {}

impl PartialOrd for DeviceRow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DeviceRow {
    fn cmp(&self, other: &Self) -> Ordering {
        self.id().cmp(other.id())
    }
}

impl std::borrow::Borrow<str> for DeviceRow {
    fn borrow(&self) -> &str {
        self.id()
    }
}

/// What to list: every field optional; all given ones must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFilter {
    /// Text in the ID, name, serial number, model or user (case-insensitive).
    pub search: Option<String>,
    /// Comma-separated platforms (`ios,ipados`).
    pub platform: Option<String>,
    /// OS version at least this (`17.0`).
    pub os_min: Option<String>,
    /// OS version below this (`18.0`).
    pub os_below: Option<String>,
    pub ownership: Option<Ownership>,
    pub compliance: Option<Compliance>,
    /// Last seen more than this many days ago.
    pub not_seen_days: Option<u32>,
    pub supervised: Option<bool>,
    pub status: Option<EnrollmentStatus>,
    pub kind: Option<EnrollmentKind>,
}

/// A filter checked and ready to run.
#[derive(Debug)]
struct Matcher {
    needle: Option<String>,
    platforms: Option<Vec<Platform>>,
    os_min: Option<OsVersion>,
    os_below: Option<OsVersion>,
    ownership: Option<Ownership>,
    compliance: Option<Compliance>,
    seen_before: Option<i64>,
    supervised: Option<bool>,
    status: Option<EnrollmentStatus>,
    kind: Option<EnrollmentKind>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("unknown platform {0:?} (ios, ipados, macos, tvos, visionos, watchos)")]
    Platform(String),
    #[error("{0:?} is not an OS version like 17.4")]
    Version(String),
    #[error("cannot sort by {0:?}")]
    Sort(String),
}

impl DeviceFilter {
    fn matcher(&self, now: OffsetDateTime) -> Result<Matcher, QueryError> {
        let version = |v: &Option<String>| {
            v.as_deref()
                .map(|s| OsVersion::parse(s).ok_or_else(|| QueryError::Version(s.to_owned())))
                .transpose()
        };
        let platforms = self
            .platform
            .as_deref()
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        serde_json::from_value::<Platform>(serde_json::Value::String(p.to_lowercase()))
                            .map_err(|_| QueryError::Platform(p.to_owned()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Matcher {
            needle: self
                .search
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_lowercase),
            platforms,
            os_min: version(&self.os_min)?,
            os_below: version(&self.os_below)?,
            ownership: self.ownership,
            compliance: self.compliance,
            seen_before: self
                .not_seen_days
                .map(|d| millis(now - time::Duration::days(i64::from(d)))),
            supervised: self.supervised,
            status: self.status,
            kind: self.kind,
        })
    }
}

impl Matcher {
    fn matches(&self, r: &DeviceRow) -> bool {
        self.status.is_none_or(|s| s == r.status)
            && self.kind.is_none_or(|k| k == r.kind)
            && self.ownership.is_none_or(|o| o == r.ownership)
            && self.compliance.is_none_or(|c| c == r.compliance)
            && self.supervised.is_none_or(|s| Some(s) == r.supervised)
            && self.seen_before.is_none_or(|t| r.last_seen_at < t)
            && self.platforms.as_ref().is_none_or(|ps| ps.contains(&r.platform))
            && self.os_min.is_none_or(|v| r.os_version.is_some_and(|o| o >= v))
            && self.os_below.is_none_or(|v| r.os_version.is_some_and(|o| o < v))
            && self
                .needle
                .as_ref()
                .is_none_or(|n| r.haystack().contains(n.as_str()))
    }
}

/// Sort keys of the list; a `-` prefix sorts descending. Ties are broken by ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    Name,
    Serial,
    Model,
    Platform,
    OsVersion,
    LastSeen,
    Enrolled,
}

impl SortKey {
    pub fn parse(s: &str) -> Result<(Self, bool), QueryError> {
        let (name, descending) = match s.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let key = match name {
            "enrollment_id" | "id" => Self::Id,
            "device_name" | "name" => Self::Name,
            "serial_number" => Self::Serial,
            "model_name" | "model" => Self::Model,
            "platform" => Self::Platform,
            "os_version" => Self::OsVersion,
            "last_seen_at" => Self::LastSeen,
            "enrolled_at" => Self::Enrolled,
            _ => return Err(QueryError::Sort(s.to_owned())),
        };
        Ok((key, descending))
    }

    fn compare(self, a: &DeviceRow, b: &DeviceRow) -> Ordering {
        let by = match self {
            Self::Id => Ordering::Equal,
            Self::Name => a.device_name().cmp(&b.device_name()),
            Self::Serial => a.serial_number().cmp(&b.serial_number()),
            Self::Model => a.model_name().cmp(&b.model_name()),
            Self::Platform => a.platform.name().cmp(b.platform.name()),
            Self::OsVersion => a.os_version.cmp(&b.os_version),
            Self::LastSeen => a.last_seen_at.cmp(&b.last_seen_at),
            Self::Enrolled => a.enrolled_at.cmp(&b.enrolled_at),
        };
        by.then_with(|| a.id().cmp(b.id()))
    }
}

/// One page of a query: the IDs in order, and how many matched in all.
#[derive(Debug, PartialEq, Eq)]
pub struct QueryPage {
    pub ids: Vec<String>,
    pub total: usize,
}

#[derive(Debug, Default)]
pub struct DeviceIndex {
    rows: RwLock<BTreeSet<DeviceRow>>,
    /// Bumped under the write lock by every change to `rows`.
    generation: AtomicU64,
    /// The last fleet report, reused while nothing changed (a dashboard asks for the report
    /// and three charts of it at once).
    last_report: Mutex<Option<CachedReport>>,
}

#[derive(Debug)]
struct CachedReport {
    generation: u64,
    at: OffsetDateTime,
    stale_days: u32,
    expiring_days: u32,
    report: Arc<FleetReport>,
}

/// How long an unchanged fleet's report is reused: its thresholds ("not seen for N days",
/// "expiring within N days") move with the clock.
const REPORT_REUSE: time::Duration = time::Duration::seconds(10);

/// The identity certificate's expiry, from the registry.
fn identity_not_after(store: &dyn Store, record: &EnrollmentRecord) -> Result<Option<i64>, StoreError> {
    Ok(registry::get(store, &record.certificate_serial)?.map(|c| c.not_after.unix_timestamp()))
}

impl DeviceIndex {
    /// Builds the index from every enrollment in the store.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let index = Self::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan_prefix(Tree::Enrollments, b"", after.as_deref(), 1000)?;
            let full = page.len() == 1000;
            let mut rows = Vec::with_capacity(page.len());
            for (k, v) in &page {
                let record: EnrollmentRecord = decode(Tree::Enrollments, k, v)?;
                rows.push(Self::row(store, &record)?);
            }
            after = page.last().map(|(k, _)| k.clone());
            if let Ok(mut map) = index.rows.write() {
                for row in rows {
                    map.replace(row);
                }
            }
            if !full {
                return Ok(index);
            }
        }
    }

    fn row(store: &dyn Store, record: &EnrollmentRecord) -> Result<DeviceRow, StoreError> {
        let inv = super::get(store, &record.id)?;
        let ownership = super::ownership(store, record)?;
        Ok(DeviceRow::build(
            record,
            inv.as_ref(),
            ownership,
            identity_not_after(store, record)?,
        ))
    }

    /// Rebuilds the row of an enrollment record just written (saves re-reading it).
    pub fn update(&self, store: &dyn Store, record: &EnrollmentRecord) -> Result<(), StoreError> {
        let row = Self::row(store, record)?;
        if let Ok(mut map) = self.rows.write() {
            map.replace(row);
            self.generation.fetch_add(1, atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Rebuilds a row from an inventory just written, without reading anything back: what a
    /// report cannot change (the identity certificate's expiry) is kept from the current row.
    pub fn update_inventory(&self, record: &EnrollmentRecord, inv: &DeviceInventory, ownership: Ownership) {
        if let Ok(mut map) = self.rows.write() {
            let not_after = map.get(record.id.as_str()).and_then(|r| r.identity_not_after);
            let row = DeviceRow::build(record, Some(inv), ownership, not_after);
            map.replace(row);
            self.generation.fetch_add(1, atomic::Ordering::Relaxed);
        }
    }

    /// Re-reads one enrollment's row from the store (after a write that touched it).
    pub fn refresh(&self, store: &dyn Store, id: &str) -> Result<(), StoreError> {
        let row = match crate::mdm::enrollment::get(store, id)? {
            Some(record) => Some(Self::row(store, &record)?),
            None => None,
        };
        if let Ok(mut map) = self.rows.write() {
            match row {
                Some(row) => {
                    map.replace(row);
                }
                None => {
                    map.remove(id);
                }
            }
            self.generation.fetch_add(1, atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The IDs matching `filter`, sorted, `offset`/`limit` applied (or, for the default order,
    /// starting after the ID `after`).
    pub fn query(
        &self,
        filter: &DeviceFilter,
        sort: Option<&str>,
        after: Option<&str>,
        offset: usize,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<QueryPage, QueryError> {
        let matcher = filter.matcher(now)?;
        let (key, descending) = match sort {
            Some(s) => SortKey::parse(s)?,
            None => (SortKey::Id, false),
        };
        let Ok(rows) = self.rows.read() else {
            return Ok(QueryPage {
                ids: Vec::new(),
                total: 0,
            });
        };
        if key == SortKey::Id && !descending {
            // Already in ID order: count everything, keep only the page.
            let mut ids = Vec::with_capacity(limit.min(1000));
            let mut total = 0;
            for r in rows.iter().filter(|r| matcher.matches(r)) {
                total += 1;
                let past_cursor = after.is_none_or(|a| r.id() > a);
                if past_cursor && total > offset && ids.len() < limit {
                    ids.push(r.id().to_string());
                }
            }
            return Ok(QueryPage { ids, total });
        }
        let mut hits: Vec<&DeviceRow> = rows.iter().filter(|r| matcher.matches(r)).collect();
        let total = hits.len();
        let order = |a: &&DeviceRow, b: &&DeviceRow| {
            let o = key.compare(a, b);
            if descending { o.reverse() } else { o }
        };
        // Only the page needs full order: two linear selections cut it out, then it is sorted
        // (a full sort of 100,000 rows costs more than the whole query budget).
        let end = offset.saturating_add(limit).min(total);
        if offset >= end {
            return Ok(QueryPage {
                ids: Vec::new(),
                total,
            });
        }
        if offset > 0 {
            hits.select_nth_unstable_by(offset, order);
        }
        let page = &mut hits[offset..];
        let k = end - offset;
        if k < page.len() {
            page.select_nth_unstable_by(k - 1, order);
        }
        let page = &mut page[..k];
        page.sort_unstable_by(order);
        let ids = page.iter().map(|r| r.id().to_string()).collect();
        Ok(QueryPage { ids, total })
    }

    /// Runs `f` over every row matching `filter` (for reports and exports).
    pub fn for_each(
        &self,
        filter: &DeviceFilter,
        now: OffsetDateTime,
        mut f: impl FnMut(&DeviceRow),
    ) -> Result<(), QueryError> {
        let matcher = filter.matcher(now)?;
        if let Ok(rows) = self.rows.read() {
            rows.iter().filter(|r| matcher.matches(r)).for_each(&mut f);
        }
        Ok(())
    }
}

/// Devices of one report line: how many, and the first of them.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeviceSet {
    pub count: usize,
    /// Up to [`REPORT_SAMPLE`] enrollment IDs, the most urgent first where there is an order.
    pub devices: Vec<String>,
}

/// Enrollment IDs listed per report line (the list's filters give the rest).
pub const REPORT_SAMPLE: usize = 100;

impl DeviceSet {
    fn from(mut hits: Vec<(i64, &str)>) -> Self {
        hits.sort_unstable();
        Self {
            count: hits.len(),
            devices: hits
                .iter()
                .take(REPORT_SAMPLE)
                .map(|(_, id)| (*id).to_owned())
                .collect(),
        }
    }
}

/// The fleet at a glance: active devices (not user channels) by platform, OS version, model,
/// ownership and compliance, and the lists that need someone's attention.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct FleetReport {
    pub devices: usize,
    pub by_platform: BTreeMap<String, usize>,
    /// `platform version`, e.g. `ios 18.1`.
    pub by_os_version: BTreeMap<String, usize>,
    pub by_model: BTreeMap<String, usize>,
    pub by_ownership: BTreeMap<String, usize>,
    pub by_compliance: BTreeMap<String, usize>,
    pub stale_days: u32,
    /// Not seen for `stale_days` days, longest silent first.
    pub not_seen: DeviceSet,
    pub expiring_days: u32,
    /// Identity certificates expiring within `expiring_days` days, soonest first: re-enrol them
    /// before they lapse, or the devices drop out of management.
    pub identity_expiring: DeviceSet,
    pub without_passcode: DeviceSet,
    pub without_encryption: DeviceSet,
}

fn version_text(v: OsVersion) -> String {
    match v.0 {
        [a, b, 0] => format!("{a}.{b}"),
        [a, b, c] => format!("{a}.{b}.{c}"),
    }
}

impl DeviceIndex {
    /// The fleet report at `now`: the last one if the fleet has not changed since and it was
    /// made with the same thresholds less than [`REPORT_REUSE`] ago.
    pub fn report(&self, now: OffsetDateTime, stale_days: u32, expiring_days: u32) -> Arc<FleetReport> {
        let Ok(rows) = self.rows.read() else {
            return Arc::default();
        };
        // Read under the read lock: no change can land until the report is made.
        let generation = self.generation.load(atomic::Ordering::Relaxed);
        if let Ok(cached) = self.last_report.lock()
            && let Some(c) = cached.as_ref()
            && c.generation == generation
            && (c.stale_days, c.expiring_days) == (stale_days, expiring_days)
            && (now - c.at).abs() < REPORT_REUSE
        {
            return Arc::clone(&c.report);
        }
        let report = Arc::new(Self::report_of(&rows, now, stale_days, expiring_days));
        if let Ok(mut cached) = self.last_report.lock() {
            *cached = Some(CachedReport {
                generation,
                at: now,
                stale_days,
                expiring_days,
                report: Arc::clone(&report),
            });
        }
        report
    }

    /// The fleet report made now, whatever was made before (for measuring it).
    pub fn fresh_report(&self, now: OffsetDateTime, stale_days: u32, expiring_days: u32) -> FleetReport {
        match self.rows.read() {
            Ok(rows) => Self::report_of(&rows, now, stale_days, expiring_days),
            Err(_) => FleetReport::default(),
        }
    }

    fn report_of(
        rows: &BTreeSet<DeviceRow>,
        now: OffsetDateTime,
        stale_days: u32,
        expiring_days: u32,
    ) -> FleetReport {
        let mut r = FleetReport {
            stale_days,
            expiring_days,
            ..FleetReport::default()
        };
        let stale_before = millis(now - time::Duration::days(i64::from(stale_days)));
        let expiring_before = (now + time::Duration::days(i64::from(expiring_days))).unix_timestamp();
        let (mut stale, mut expiring, mut no_passcode, mut unencrypted) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Counted under borrowed keys, turned into strings once at the end.
        let mut platforms: HashMap<Platform, usize> = HashMap::new();
        let mut versions: HashMap<(Platform, Option<OsVersion>), usize> = HashMap::new();
        let mut models: HashMap<&str, usize> = HashMap::new();
        let mut ownerships: HashMap<Ownership, usize> = HashMap::new();
        let mut compliances: HashMap<Compliance, usize> = HashMap::new();
        for row in rows.iter() {
            if row.status != EnrollmentStatus::Active || row.kind.is_user_channel() {
                continue;
            }
            r.devices += 1;
            *platforms.entry(row.platform).or_default() += 1;
            *versions.entry((row.platform, row.os_version)).or_default() += 1;
            *models.entry(row.model_name().unwrap_or("unknown")).or_default() += 1;
            *ownerships.entry(row.ownership).or_default() += 1;
            *compliances.entry(row.compliance).or_default() += 1;
            if row.last_seen_at < stale_before {
                stale.push((row.last_seen_at, row.id()));
            }
            if let Some(t) = row.identity_not_after.filter(|t| *t < expiring_before) {
                expiring.push((t, row.id()));
            }
            if row.passcode_present == Some(false) {
                no_passcode.push((0, row.id()));
            }
            if row.storage_encrypted == Some(false) {
                unencrypted.push((0, row.id()));
            }
        }
        r.by_platform = platforms
            .into_iter()
            .map(|(p, n)| (p.name().to_owned(), n))
            .collect();
        for ((p, v), n) in versions {
            let version = v.map_or_else(|| "unknown".to_owned(), version_text);
            *r.by_os_version
                .entry(format!("{} {version}", p.name()))
                .or_default() += n;
        }
        r.by_model = models.into_iter().map(|(m, n)| (m.to_owned(), n)).collect();
        r.by_ownership = ownerships
            .into_iter()
            .map(|(o, n)| (o.name().to_owned(), n))
            .collect();
        r.by_compliance = compliances
            .into_iter()
            .map(|(c, n)| (c.name().to_owned(), n))
            .collect();
        r.not_seen = DeviceSet::from(stale);
        r.identity_expiring = DeviceSet::from(expiring);
        r.without_passcode = DeviceSet::from(no_passcode);
        r.without_encryption = DeviceSet::from(unencrypted);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::enrollment::DeviceFacts;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);

    fn row(i: usize) -> DeviceRow {
        let platform = [Platform::Ios, Platform::Ipados, Platform::Macos][i % 3];
        let mut record = EnrollmentRecord::new(
            format!("DEV-{i:06}"),
            EnrollmentKind::Device,
            String::new(),
            String::new(),
            NOW - time::Duration::days((i % 60) as i64),
        );
        record.status = EnrollmentStatus::Active;
        record.facts = DeviceFacts {
            device_name: Some(format!("Ward {} device", i % 7)),
            serial_number: Some(format!("SN{i:08}")),
            model_name: Some(["iPhone", "iPad", "MacBook Air"][i % 3].into()),
            os_version: Some(format!("{}.{}", 16 + i % 3, i % 5)),
            ..DeviceFacts::default()
        };
        let inv = DeviceInventory {
            platform,
            passcode_present: Some(!i.is_multiple_of(10)),
            passcode_compliant: Some(true),
            storage_encrypted: Some(!i.is_multiple_of(10)),
            is_supervised: Some(i.is_multiple_of(2)),
            security_updated_at: Some(NOW),
            ..DeviceInventory::default()
        };
        let ownership = if i.is_multiple_of(4) {
            Ownership::Personal
        } else {
            Ownership::Corporate
        };
        DeviceRow::build(&record, Some(&inv), ownership, None)
    }

    fn index(n: usize) -> DeviceIndex {
        let index = DeviceIndex::default();
        {
            let mut map = index.rows.write().unwrap();
            for i in 0..n {
                let r = row(i);
                map.replace(r);
            }
        }
        index
    }

    #[test]
    fn filters_combine_and_pages_add_up() {
        let idx = index(3000);
        let all = idx
            .query(&DeviceFilter::default(), None, None, 0, 100, NOW)
            .unwrap();
        assert_eq!((all.total, all.ids.len()), (3000, 100));
        assert_eq!(all.ids[0], "DEV-000000");

        let f = DeviceFilter {
            platform: Some("ios, ipados".into()),
            os_below: Some("18".into()),
            compliance: Some(Compliance::Noncompliant),
            ..Default::default()
        };
        let page = idx.query(&f, None, None, 0, 5000, NOW).unwrap();
        // i % 3 ∈ {0,1} (iOS/iPadOS), OS 16.x or 17.x (i % 3 ∈ {0,1} again), i % 10 == 0.
        let expected = (0..3000).filter(|i| i % 3 != 2 && i % 10 == 0).count();
        assert_eq!(page.total, expected);

        let stale = DeviceFilter {
            not_seen_days: Some(30),
            ..Default::default()
        };
        // Each was last seen when it enrolled, i % 60 days ago.
        let expected = (0..3000).filter(|i| i % 60 > 30).count();
        assert_eq!(idx.query(&stale, None, None, 0, 1, NOW).unwrap().total, expected);

        let search = DeviceFilter {
            search: Some("sn0000012".into()),
            ..Default::default()
        };
        assert_eq!(idx.query(&search, None, None, 0, 100, NOW).unwrap().total, 10);

        // Cursor paging in ID order visits everything once.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = idx
                .query(&DeviceFilter::default(), None, after.as_deref(), 0, 700, NOW)
                .unwrap();
            if p.ids.is_empty() {
                break;
            }
            after = p.ids.last().cloned();
            seen.extend(p.ids);
        }
        assert_eq!(seen.len(), 3000);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn sorting_by_any_key_matches_a_full_sort() {
        let idx = index(2000);
        for sort in [
            "-last_seen_at",
            "os_version",
            "-os_version",
            "device_name",
            "serial_number",
        ] {
            let (key, desc) = SortKey::parse(sort).unwrap();
            let rows = idx.rows.read().unwrap();
            let mut all: Vec<&DeviceRow> = rows.iter().collect();
            all.sort_by(|a, b| {
                let o = key.compare(a, b);
                if desc { o.reverse() } else { o }
            });
            let expected: Vec<String> = all.iter().skip(40).take(25).map(|r| r.id().to_string()).collect();
            drop(rows);
            let page = idx
                .query(&DeviceFilter::default(), Some(sort), None, 40, 25, NOW)
                .unwrap();
            assert_eq!(page.ids, expected, "{sort}");
        }
        assert_eq!(
            idx.query(&DeviceFilter::default(), Some("colour"), None, 0, 1, NOW),
            Err(QueryError::Sort("colour".into()))
        );
        let bad = DeviceFilter {
            platform: Some("android".into()),
            ..Default::default()
        };
        assert_eq!(
            idx.query(&bad, None, None, 0, 1, NOW),
            Err(QueryError::Platform("android".into()))
        );
    }

    #[test]
    fn the_report_counts_and_lists_what_needs_attention() {
        let idx = index(600);
        let r = idx.report(NOW, 30, 30);
        assert_eq!(r.devices, 600);
        assert_eq!(r.by_platform["ios"], 200);
        assert_eq!(r.by_platform.values().sum::<usize>(), 600);
        assert_eq!(r.by_os_version.values().sum::<usize>(), 600);
        assert_eq!(r.by_ownership["personal"], 150);
        assert_eq!(r.without_passcode.count, 60);
        assert_eq!(r.by_compliance["noncompliant"], 60);
        assert_eq!(r.not_seen.count, (0..600).filter(|i| i % 60 > 30).count());
        // Longest silent first.
        assert_eq!(r.not_seen.devices[0], "DEV-000059");
        assert_eq!(r.identity_expiring.count, 0);
    }

    #[test]
    fn an_unchanged_fleet_reuses_its_report_for_a_few_seconds() {
        let idx = index(30);
        let first = idx.report(NOW, 30, 30);
        assert!(Arc::ptr_eq(
            &first,
            &idx.report(NOW + time::Duration::seconds(5), 30, 30)
        ));
        // Other thresholds, a later time, or any change to the fleet: made again.
        assert!(!Arc::ptr_eq(&first, &idx.report(NOW, 7, 30)));
        let again = idx.report(NOW, 30, 30);
        assert!(!Arc::ptr_eq(&again, &idx.report(NOW + REPORT_REUSE, 30, 30)));
        let before = idx.report(NOW, 30, 30);
        let mut record = EnrollmentRecord::new(
            "DEV-NEW".into(),
            EnrollmentKind::Device,
            String::new(),
            String::new(),
            NOW,
        );
        record.status = EnrollmentStatus::Active;
        idx.update_inventory(&record, &DeviceInventory::default(), Ownership::Corporate);
        let after = idx.report(NOW, 30, 30);
        assert_eq!((before.devices, after.devices), (30, 31));
        assert_eq!(*after, idx.fresh_report(NOW, 30, 30));
    }

    #[test]
    fn a_row_keeps_each_string_apart_and_absent_ones_absent() {
        let mut record = EnrollmentRecord::new(
            "UDID-1:U-2".into(),
            EnrollmentKind::UserChannel,
            String::new(),
            String::new(),
            NOW,
        );
        record.user_short_name = Some("Élodie".into());
        // Present but empty, absent, and one from the report overriding the enrolment's.
        record.facts.device_name = Some(String::new());
        record.facts.model_name = Some("iPad".into());
        let inv = DeviceInventory {
            model_name: Some("iPad Pro".into()),
            ..DeviceInventory::default()
        };
        let row = DeviceRow::build(&record, Some(&inv), Ownership::Corporate, None);
        assert_eq!(row.id(), "UDID-1:U-2");
        assert_eq!(row.device_name(), Some(""));
        assert_eq!(row.serial_number(), None);
        assert_eq!(row.model_name(), Some("iPad Pro"));
        assert_eq!(row.haystack(), "udid-1:u-2\n\n\nipad pro\nélodie\n");
        // Absent sorts before empty, as the Option it stands for.
        let other = DeviceRow::build(
            &EnrollmentRecord {
                id: "X".into(),
                ..record.clone()
            },
            None,
            Ownership::Corporate,
            None,
        );
        assert_eq!(other.serial_number(), None);
        assert!(SortKey::Serial.compare(&other, &row) == Ordering::Greater);
        assert!(SortKey::Model.compare(&other, &row) == Ordering::Less);
    }

    #[test]
    fn a_name_of_any_length_is_kept_to_a_bounded_prefix() {
        let mut record = EnrollmentRecord::new(
            "DEV-LONG".into(),
            EnrollmentKind::Device,
            String::new(),
            String::new(),
            NOW,
        );
        let long = "é".repeat(20_000) + "tail";
        record.facts.device_name = Some(long.clone());
        record.facts.serial_number = Some(long);
        let row = DeviceRow::build(&record, None, Ownership::Corporate, None);
        let name = row.device_name().unwrap();
        assert!(
            name.len() <= MAX_PART_BYTES && name.len() > MAX_PART_BYTES - 4,
            "{}",
            name.len()
        );
        assert!(name.chars().all(|c| c == 'é'));
        assert_eq!(row.serial_number(), Some(name));
        assert_eq!(row.id(), "DEV-LONG");
        let idx = DeviceIndex::default();
        idx.rows.write().unwrap().replace(row);
        let filter = DeviceFilter {
            search: Some("ÉÉÉ".into()),
            ..DeviceFilter::default()
        };
        assert_eq!(
            idx.query(&filter, None, None, 0, 10, NOW).unwrap().ids,
            ["DEV-LONG"]
        );
    }

    /// 100,000 rows sit in B-tree leaves of eleven: at 88 bytes a leaf fits jemalloc's 1 KiB
    /// class (the row with its key and separate strings made leaves of 1.75 KiB).
    #[test]
    fn a_row_stays_small() {
        assert!(
            std::mem::size_of::<DeviceRow>() <= 88,
            "{}",
            std::mem::size_of::<DeviceRow>()
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(OsVersion::parse("17.10").unwrap() > OsVersion::parse("17.9").unwrap());
        assert_eq!(OsVersion::parse("18"), OsVersion::parse("18.0.0"));
        assert_eq!(OsVersion::parse("eighteen"), None);
    }
}
