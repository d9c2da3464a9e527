//! Check-in and command-channel handling, and the admin operations on enrollments and commands.
//!
//! Every entry point takes an already authenticated [`DeviceIdentity`]; this module decides
//! whether that identity may speak for the enrollment the message names.

use std::sync::Arc;

use plist::{Dictionary, Value};
use time::OffsetDateTime;

use super::actions;
use super::enrollment::{
    self, ChannelView, DeviceFacts, EnrollmentRecord, EnrollmentRef, EnrollmentStatus, PushInfo,
};
use super::identity::{DeviceIdentity, IdentityError, PresentedCertificate};
use super::queue::{self, DeliveryStatus, Enqueued, ReportOutcome, Sequence};
use super::schema;
use super::webhook::{Event, Webhook};
use crate::inventory::index::DeviceIndex;
use crate::inventory::{self, schedule::InventorySchedule};
use crate::pki::Pki;
use crate::push::PushService;
use crate::scep::ScepService;
use crate::scep::registry::IssuedVia;
use crate::store::{Store, StoreError, Tree};

#[derive(Debug, Clone)]
pub struct MdmOptions {
    /// Accept macOS UserAuthenticate (without a password challenge) instead of answering 410.
    pub user_authenticate: bool,
    /// How long answered commands and their results are kept.
    pub retention: time::Duration,
    /// When devices report their inventory.
    pub inventory: InventorySchedule,
    /// Queue the inventory commands at a device's first TokenUpdate.
    pub inventory_on_enrollment: bool,
    /// The `PayloadIdentifier` of the enrollment profiles this appliance hands out.
    pub enrollment_profile: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MdmError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Gone(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// Forbidden by policy (privacy rules) whoever asks.
    #[error("{0}")]
    Refused(String),
    /// Not possible in the device's current platform or state.
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

fn bad(reason: impl Into<String>) -> MdmError {
    MdmError::BadRequest(reason.into())
}

/// Why a certificate may not speak for an enrollment (the HTTP layer logs it with the reason).
fn refused_identity(e: IdentityError, serial: &str) -> MdmError {
    match e {
        IdentityError::Store(s) => MdmError::Store(s),
        other => MdmError::Unauthorized(format!("{other} (certificate {serial})")),
    }
}

/// What to answer a check-in with.
#[derive(Debug, PartialEq)]
pub enum CheckinReply {
    Empty,
    Plist(Vec<u8>),
}

pub struct MdmService {
    store: Arc<dyn Store>,
    pki: Arc<Pki>,
    scep: Arc<ScepService>,
    sequence: Sequence,
    options: MdmOptions,
    webhook: Option<Webhook>,
    /// Wakes devices when commands are queued for them (absent in tools and benchmarks).
    push: Option<Arc<PushService>>,
    /// The device list's in-memory index, kept in step with every enrollment write.
    index: Arc<DeviceIndex>,
    /// Where refused device identities are recorded (absent in tools and benchmarks).
    audit: Option<Arc<crate::audit::AuditLog>>,
    /// Queues an Idle need not read (nothing added since they were found empty).
    empty_queues: queue::EmptyQueues,
}

/// Empty queues remembered: the devices talking now (a few dozen bytes each).
const EMPTY_QUEUES_KEPT: usize = 16_384;

fn parse_plist(body: &[u8]) -> Result<Dictionary, MdmError> {
    if body.is_empty() {
        return Err(bad("empty body"));
    }
    refuse_reference_bombs(body)?;
    plist::from_bytes::<Dictionary>(body).map_err(|e| bad(format!("not a plist dictionary: {e}")))
}

/// A binary plist may reference one object from many places, and the parser copies it for
/// each: a chain of arrays that each name the next twice turns 2 KiB into more values than
/// memory holds. Apple's encoders share strings, numbers and data, not containers, so a real
/// message has at most about one value per byte; one that unfolds into far more is refused
/// before it is built (the count walks the values without keeping them, and stops at the
/// budget).
fn refuse_reference_bombs(body: &[u8]) -> Result<(), MdmError> {
    if !body.starts_with(b"bplist") {
        return Ok(());
    }
    let budget = body.len().saturating_mul(4).saturating_add(1024);
    VALUE_BUDGET.with(|b| b.set(budget));
    let counted = plist::from_bytes::<CountedValues>(body);
    let exhausted = VALUE_BUDGET.with(|b| b.get()) == 0;
    match counted {
        Err(_) if exhausted => Err(bad(
            "the binary plist unfolds far beyond its size (containers referenced over and over)",
        )),
        // Anything else wrong is for the parse proper to report.
        _ => Ok(()),
    }
}

thread_local! {
    static VALUE_BUDGET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Every value of a plist, counted against `VALUE_BUDGET` and dropped.
struct CountedValues;

impl<'de> serde::Deserialize<'de> for CountedValues {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl CountVisitor {
    fn spend<E: serde::de::Error>() -> Result<CountedValues, E> {
        VALUE_BUDGET.with(|b| match b.get() {
            0 => Err(E::custom("value budget exhausted")),
            n => {
                b.set(n - 1);
                Ok(CountedValues)
            }
        })
    }
}

impl<'de> serde::de::Visitor<'de> for CountVisitor {
    type Value = CountedValues;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any plist value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<CountedValues, E> {
        Self::spend()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<CountedValues, D::Error> {
        d.deserialize_any(CountVisitor)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<CountedValues, D::Error> {
        d.deserialize_any(CountVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CountedValues, A::Error> {
        Self::spend::<A::Error>()?;
        while seq.next_element::<CountedValues>()?.is_some() {}
        Ok(CountedValues)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<CountedValues, A::Error> {
        Self::spend::<A::Error>()?;
        while map.next_entry::<CountedValues, CountedValues>()?.is_some() {}
        Ok(CountedValues)
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<CountedValues, A::Error> {
        use serde::de::VariantAccess;
        let (CountedValues, variant) = data.variant::<CountedValues>()?;
        variant.newtype_variant::<CountedValues>()
    }
}

/// A `/mdm/connect` body, parsed but not yet trusted: [`MdmService::answer_connect`] checks
/// the identity behind it before acting on anything in it.
#[derive(Debug)]
pub struct ConnectRequest {
    msg: Dictionary,
}

impl ConnectRequest {
    pub fn parse(body: &[u8]) -> Result<Self, MdmError> {
        parse_plist(body).map(|msg| Self { msg })
    }

    /// An Idle only asks for the next command: store reads and at most two small writes
    /// (the command marked sent, `last_seen` once a minute) — no result to store or ingest.
    pub fn is_idle(&self) -> bool {
        string(&self.msg, "Status") == Some("Idle")
    }
}

fn string<'a>(dict: &'a Dictionary, key: &str) -> Option<&'a str> {
    dict.get(key).and_then(Value::as_string)
}

fn data<'a>(dict: &'a Dictionary, key: &str) -> Option<&'a [u8]> {
    dict.get(key).and_then(Value::as_data)
}

fn empty_dict_plist(entries: Dictionary) -> Result<Vec<u8>, MdmError> {
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &Value::Dictionary(entries))
        .map_err(|e| MdmError::Internal(e.to_string()))?;
    Ok(out)
}

impl MdmService {
    pub fn new(
        store: Arc<dyn Store>,
        pki: Arc<Pki>,
        scep: Arc<ScepService>,
        options: MdmOptions,
        webhook: Option<Webhook>,
        push: Option<Arc<PushService>>,
        index: Arc<DeviceIndex>,
    ) -> Self {
        Self {
            store,
            pki,
            scep,
            sequence: Sequence::default(),
            options,
            webhook,
            push,
            index,
            audit: None,
            empty_queues: queue::EmptyQueues::new(EMPTY_QUEUES_KEPT),
        }
    }

    /// Records identity mismatches in `log`.
    pub fn with_audit(mut self, log: Arc<crate::audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    pub fn options(&self) -> &MdmOptions {
        &self.options
    }

    /// Stores an enrollment record and brings its row in the device list up to date.
    fn put_enrollment(&self, record: &EnrollmentRecord) -> Result<(), MdmError> {
        enrollment::put(self.store.as_ref(), record)?;
        if let Err(e) = self.index.update(self.store.as_ref(), record) {
            tracing::warn!(enrollment = %record.id, error = %e, "device list row not refreshed");
        }
        Ok(())
    }

    /// Re-reads one device's list row. The store is already written, so a failure here only
    /// leaves the list stale until the device's next write; it is logged, not returned.
    fn reindex(&self, id: &str) {
        if let Err(e) = self.index.refresh(self.store.as_ref(), id) {
            tracing::warn!(enrollment = %id, error = %e, "device list row not refreshed");
        }
    }

    /// The store (for read-only views beside the service's own).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The device list's index.
    pub fn index(&self) -> &DeviceIndex {
        &self.index
    }

    /// Sets a device's ownership; turning it personal removes at once what may not be kept.
    pub fn set_ownership(&self, id: &str, ownership: inventory::Ownership) -> Result<(), MdmError> {
        if enrollment::get(self.store.as_ref(), id)?.is_none() {
            return Err(MdmError::NotFound(id.to_owned()));
        }
        inventory::set_ownership(self.store.as_ref(), id, ownership)?;
        if ownership == inventory::Ownership::Personal {
            inventory::drop_forbidden(self.store.as_ref(), id)?;
        }
        self.reindex(id);
        Ok(())
    }

    fn emit(&self, event: Event) {
        if let Some(w) = &self.webhook {
            w.send(event);
        }
    }

    /// The enrollment `target` when `identity` may speak for it: the bound certificate, or a
    /// renewal of it (which re-binds). Anything else is refused and logged.
    fn authorise(
        &self,
        target: &EnrollmentRef,
        identity: &DeviceIdentity,
        now: OffsetDateTime,
    ) -> Result<EnrollmentRecord, MdmError> {
        let Some(mut record) = enrollment::get(self.store.as_ref(), &target.id)? else {
            tracing::warn!(enrollment = %target.id, certificate = %identity.serial, "message for an unknown enrollment");
            return Err(MdmError::Unauthorized("unknown enrollment".into()));
        };
        if record.certificate_sha256 == identity.sha256 {
            return Ok(record);
        }
        let renewal_of_bound = matches!(
            &identity.record.issued_via,
            IssuedVia::Renewal { previous_serial } if *previous_serial == record.certificate_serial
        );
        if renewal_of_bound {
            tracing::info!(enrollment = %record.id, serial = %identity.serial, "renewed identity certificate bound");
            self.store
                .delete(Tree::CertificateBindings, record.certificate_sha256.as_bytes())?;
            record.certificate_sha256 = identity.sha256.clone();
            record.certificate_serial = identity.serial.clone();
            if !record.kind.is_user_channel() {
                self.store.put(
                    Tree::CertificateBindings,
                    identity.sha256.as_bytes(),
                    record.id.as_bytes(),
                )?;
            }
            record.last_seen_at = now;
            self.put_enrollment(&record)?;
            return Ok(record);
        }
        tracing::warn!(
            enrollment = %target.id, presented_serial = %identity.serial, bound_serial = %record.certificate_serial,
            "device identity mismatch: request refused"
        );
        if let Some(log) = &self.audit {
            use crate::audit::{Actor, AuditEvent, Outcome};
            // The actor is whoever holds the presented certificate: the enrollment it is bound
            // to, else the certificate itself.
            let presenter = self
                .store
                .get(Tree::CertificateBindings, identity.sha256.as_bytes())
                .ok()
                .flatten()
                .map(|id| String::from_utf8_lossy(&id).into_owned())
                .unwrap_or_else(|| format!("certificate:{}", identity.serial));
            let event = AuditEvent::new(
                Actor::Device(presenter),
                "device.identity_mismatch",
                Outcome::Denied,
            )
            .target(target.id.as_str())
            .reason(format!(
                "presented certificate {}, bound certificate {}",
                identity.serial, record.certificate_serial
            ));
            if let Err(e) = log.append(event, now) {
                tracing::error!(enrollment = %target.id, error = %e, "audit record not written");
            }
        }
        Err(MdmError::Unauthorized(
            "this certificate is not the one bound to the enrollment".into(),
        ))
    }

    /// [`Self::authorise`] for the command channel, where every request of every session
    /// lands: the certificate bound to the enrollment needs no registry read (the registry
    /// vouched for it when it was bound), only its dates and the revocation list; any other
    /// certificate (a renewal, a stranger's) takes the registry's full check first.
    fn authorise_connect(
        &self,
        target: &EnrollmentRef,
        presented: &PresentedCertificate,
        now: OffsetDateTime,
    ) -> Result<ChannelView, MdmError> {
        if let Some(view) = enrollment::channel_view(self.store.as_ref(), &target.id)?
            && view.certificate_sha256 == presented.sha256
        {
            presented
                .check_still_valid(self.store.as_ref(), now)
                .map_err(|e| refused_identity(e, &presented.serial))?;
            return Ok(view);
        }
        let identity = presented
            .clone()
            .registered(self.store.as_ref(), now)
            .map_err(|e| refused_identity(e, &presented.serial))?;
        Ok(ChannelView::from(&self.authorise(target, &identity, now)?))
    }

    /// The whole record behind `view`, for the rarer steps that need more than the view.
    fn full_record(&self, view: &ChannelView) -> Result<EnrollmentRecord, MdmError> {
        enrollment::get(self.store.as_ref(), &view.id)?
            .ok_or_else(|| MdmError::Unauthorized("unknown enrollment".into()))
    }

    /// Who a freshly authenticated device belongs to: the portal user its certificate's
    /// challenge was made for (their personal link), made personal unless an administrator
    /// already said otherwise; a device re-enrolling without one belongs to nobody any more.
    fn apply_assignment(
        &self,
        id: &str,
        identity: &DeviceIdentity,
        now: OffsetDateTime,
    ) -> Result<(), MdmError> {
        let store = self.store.as_ref();
        let assigned = crate::scep::registry::get(store, &identity.serial)?.and_then(|c| c.assigned_user);
        let current = crate::portal::device_user(store, id)?;
        if assigned == current {
            return Ok(());
        }
        crate::portal::set_device_user(store, id, assigned.as_deref())?;
        let reason = match &assigned {
            Some(user) => {
                if store.get(Tree::Ownership, id.as_bytes())?.is_none() {
                    inventory::set_ownership(store, id, inventory::Ownership::Personal)?;
                    inventory::drop_forbidden(store, id)?;
                }
                format!("enrolled with {user}'s personal link from the portal")
            }
            None => "re-enrolled without a portal link: belongs to nobody".to_owned(),
        };
        self.audit_device(id, "device.assign", reason, now);
        tracing::info!(enrollment = %id, user = ?assigned, "device assignment set at enrolment");
        Ok(())
    }

    /// Records a device's own act (enrolment, check-out) in the audit log.
    fn audit_device(&self, id: &str, action: &str, reason: String, now: OffsetDateTime) {
        if let Some(log) = &self.audit {
            use crate::audit::{Actor, AuditEvent, Outcome};
            let event = AuditEvent::new(Actor::Device(id.to_owned()), action, Outcome::Success)
                .target(id)
                .reason(reason);
            if let Err(e) = log.append(event, now) {
                tracing::error!(enrollment = %id, error = %e, "audit record not written");
            }
        }
    }

    /// Handles a check-in message (`/mdm/checkin`).
    pub fn checkin(
        &self,
        identity: &DeviceIdentity,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<CheckinReply, MdmError> {
        let msg = parse_plist(body)?;
        let Some(message_type) = string(&msg, "MessageType") else {
            return Err(bad("no MessageType"));
        };
        let target = enrollment::resolve(&msg).map_err(|e| bad(e.to_string()))?;
        match message_type {
            "Authenticate" => self.authenticate(&msg, &target, identity, now),
            "TokenUpdate" => self.token_update(&msg, &target, identity, now),
            "CheckOut" => self.check_out(&target, identity, now),
            "SetBootstrapToken" => {
                let mut record = self.authorise(&target, identity, now)?;
                match data(&msg, "BootstrapToken") {
                    Some(token) if !token.is_empty() => {
                        record.bootstrap_token_sealed = Some(
                            self.pki
                                .seal(token, &format!("bootstrap:{}", record.id))
                                .map_err(|e| MdmError::Internal(e.to_string()))?,
                        );
                    }
                    // An empty or absent token clears the escrowed one.
                    _ => record.bootstrap_token_sealed = None,
                }
                record.last_seen_at = now;
                self.put_enrollment(&record)?;
                tracing::info!(enrollment = %record.id, escrowed = record.bootstrap_token_sealed.is_some(), "bootstrap token updated");
                Ok(CheckinReply::Empty)
            }
            "GetBootstrapToken" => {
                let record = self.authorise(&target, identity, now)?;
                let mut reply = Dictionary::new();
                if let Some(sealed) = &record.bootstrap_token_sealed {
                    match self.pki.open(sealed, &format!("bootstrap:{}", record.id)) {
                        Some(token) => {
                            reply.insert("BootstrapToken".into(), Value::Data(token.to_vec()));
                        }
                        None => {
                            tracing::error!(enrollment = %record.id, "escrowed bootstrap token does not open")
                        }
                    }
                }
                Ok(CheckinReply::Plist(empty_dict_plist(reply)?))
            }
            "UserAuthenticate" => {
                self.authorise(&target.device(), identity, now)?;
                if !self.options.user_authenticate {
                    return Err(MdmError::Gone("user authentication is not enabled"));
                }
                // An empty DigestChallenge lets the user channel proceed without a password.
                let mut reply = Dictionary::new();
                reply.insert("DigestChallenge".into(), Value::String(String::new()));
                Ok(CheckinReply::Plist(empty_dict_plist(reply)?))
            }
            "DeclarativeManagement" => {
                self.authorise(&target, identity, now)?;
                Err(MdmError::Gone("declarative management is not available yet"))
            }
            "GetToken" => {
                self.authorise(&target, identity, now)?;
                Err(MdmError::Gone("no token services are configured"))
            }
            "ReturnToService" => {
                self.authorise(&target, identity, now)?;
                Err(MdmError::Gone("return to service is not configured"))
            }
            other => {
                tracing::warn!(message_type = %other, enrollment = %target.id, "unknown check-in message type");
                Err(bad(format!("unknown check-in message type {other:?}")))
            }
        }
    }

    fn authenticate(
        &self,
        msg: &Dictionary,
        target: &EnrollmentRef,
        identity: &DeviceIdentity,
        now: OffsetDateTime,
    ) -> Result<CheckinReply, MdmError> {
        if target.kind.is_user_channel() {
            return Err(bad("Authenticate comes from a device channel only"));
        }
        // A certificate bound to one device cannot (re-)enrol as another.
        if let Some(bound) = self
            .store
            .get(Tree::CertificateBindings, identity.sha256.as_bytes())?
            && bound != target.id.as_bytes()
        {
            tracing::warn!(
                enrollment = %target.id, bound_to = %String::from_utf8_lossy(&bound), serial = %identity.serial,
                "device identity mismatch: Authenticate with another device's certificate refused"
            );
            return Err(MdmError::Unauthorized(
                "this certificate belongs to another enrollment".into(),
            ));
        }
        let previous = enrollment::get(self.store.as_ref(), &target.id)?;
        // A personal enrolment (a certificate from someone's portal link) never takes over a
        // device that is enrolled and not already theirs: otherwise anyone with a portal
        // account could claim, and cut off, a colleague's device by naming its UDID.
        if let Some(old) = &previous
            && old.status != EnrollmentStatus::Unenrolled
            && old.certificate_sha256 != identity.sha256
            && let Some(user) = crate::scep::registry::get(self.store.as_ref(), &identity.serial)?
                .and_then(|c| c.assigned_user)
            && crate::portal::device_user(self.store.as_ref(), &target.id)?.as_deref() != Some(user.as_str())
        {
            tracing::warn!(enrollment = %target.id, %user, "personal enrolment over an enrolled device refused");
            self.audit_device(
                &target.id,
                "device.identity_mismatch",
                format!("a certificate from {user}'s portal link tried to take over this enrolled device"),
                now,
            );
            return Err(MdmError::Unauthorized(
                "this device is enrolled; it must leave management before a personal enrolment".into(),
            ));
        }
        let cleared = queue::clear(self.store.as_ref(), &target.id, now)?;
        if let Some(old) = &previous
            && old.certificate_sha256 != identity.sha256
        {
            self.store
                .delete(Tree::CertificateBindings, old.certificate_sha256.as_bytes())?;
        }
        let record = EnrollmentRecord {
            facts: DeviceFacts::from_authenticate(msg),
            ..EnrollmentRecord::new(
                target.id.clone(),
                target.kind,
                identity.sha256.clone(),
                identity.serial.clone(),
                now,
            )
        };
        self.store.put(
            Tree::CertificateBindings,
            identity.sha256.as_bytes(),
            target.id.as_bytes(),
        )?;
        self.put_enrollment(&record)?;
        self.apply_assignment(&record.id, identity, now)?;
        tracing::info!(
            enrollment = %record.id, kind = ?record.kind, serial = %identity.serial, re_enrolled = previous.is_some(),
            cleared_commands = cleared, "device authenticated"
        );
        self.emit(Event::checkin("Authenticate", &record, now));
        Ok(CheckinReply::Empty)
    }

    fn token_update(
        &self,
        msg: &Dictionary,
        target: &EnrollmentRef,
        identity: &DeviceIdentity,
        now: OffsetDateTime,
    ) -> Result<CheckinReply, MdmError> {
        let token = data(msg, "Token").filter(|t| !t.is_empty() && t.len() <= 256);
        let push_magic = string(msg, "PushMagic").filter(|m| !m.is_empty() && m.len() <= 256);
        let (Some(token), Some(push_magic)) = (token, push_magic) else {
            return Err(bad("TokenUpdate needs a Token and a PushMagic"));
        };
        let topic = string(msg, "Topic").unwrap_or_default();
        if let Some(push) = &self.push
            && let (expected, true) = push.topic()
            && topic != expected
        {
            tracing::warn!(enrollment = %target.id, %topic, %expected, "TokenUpdate for another push topic: this device cannot be woken");
        }
        let mut record = if target.kind.is_user_channel() {
            let parent = target.device();
            let device = self.authorise(&parent, identity, now)?;
            match enrollment::get(self.store.as_ref(), &target.id)? {
                // Authorised (and re-bound after a renewal) like any other channel.
                Some(_) => self.authorise(target, identity, now)?,
                None => EnrollmentRecord {
                    parent: Some(device.id.clone()),
                    facts: device.facts.clone(),
                    user_short_name: string(msg, "UserShortName").map(str::to_owned),
                    user_long_name: string(msg, "UserLongName").map(str::to_owned),
                    ..EnrollmentRecord::new(
                        target.id.clone(),
                        target.kind,
                        device.certificate_sha256.clone(),
                        device.certificate_serial.clone(),
                        now,
                    )
                },
            }
        } else {
            self.authorise(target, identity, now)?
        };
        if record.status == EnrollmentStatus::Unenrolled {
            return Err(MdmError::Unauthorized("the enrollment has checked out".into()));
        }
        let first = record.status == EnrollmentStatus::Authenticated;
        record.status = EnrollmentStatus::Active;
        record.push = Some(PushInfo {
            token_hex: hex::encode(token),
            push_magic: push_magic.to_owned(),
            topic: topic.to_owned(),
        });
        if let Some(unlock) = data(msg, "UnlockToken").filter(|t| !t.is_empty()) {
            record.unlock_token_sealed = Some(
                self.pki
                    .seal(unlock, &format!("unlock:{}", record.id))
                    .map_err(|e| MdmError::Internal(e.to_string()))?,
            );
        }
        record.awaiting_configuration =
            matches!(msg.get("AwaitingConfiguration"), Some(Value::Boolean(true)));
        record.token_updated_at = Some(now);
        record.last_seen_at = now;
        self.put_enrollment(&record)?;
        tracing::info!(enrollment = %record.id, first, "push token updated");
        if first {
            let facts = &record.facts;
            self.audit_device(
                &record.id,
                "device.enroll",
                format!(
                    "{:?} {} serial {} OS {}",
                    record.kind,
                    facts.model.as_deref().unwrap_or("unknown model"),
                    facts.serial_number.as_deref().unwrap_or("unknown"),
                    facts.os_version.as_deref().unwrap_or("unknown"),
                ),
                now,
            );
        }
        self.emit(Event::checkin("TokenUpdate", &record, now));
        if first && self.options.inventory_on_enrollment && !record.kind.is_user_channel() {
            // The device has just enrolled: learn what it is. A failure leaves it to the schedule.
            if let Err(e) = self.queue_inventory(&record, now) {
                tracing::warn!(enrollment = %record.id, error = %e, "inventory not queued at enrollment");
            }
        }
        Ok(CheckinReply::Empty)
    }

    fn check_out(
        &self,
        target: &EnrollmentRef,
        identity: &DeviceIdentity,
        now: OffsetDateTime,
    ) -> Result<CheckinReply, MdmError> {
        let mut record = self.authorise(target, identity, now)?;
        self.unenrol(&mut record, now, "the device checked out")?;
        self.audit_device(
            &record.id,
            "device.checkout",
            "the device left management".into(),
            now,
        );
        self.emit(Event::checkin("CheckOut", &record, now));
        Ok(CheckinReply::Empty)
    }

    /// Marks an enrollment unenrolled, drops its queue and (for a device channel) revokes its
    /// identity certificate.
    fn unenrol(&self, record: &mut EnrollmentRecord, now: OffsetDateTime, why: &str) -> Result<(), MdmError> {
        queue::clear(self.store.as_ref(), &record.id, now)?;
        record.status = EnrollmentStatus::Unenrolled;
        record.unenrolled_at = Some(now);
        record.push = None;
        record.unlock_token_sealed = None;
        record.bootstrap_token_sealed = None;
        self.put_enrollment(record)?;
        if !record.kind.is_user_channel() {
            // Out of management, out of lost mode: where it was is not kept.
            inventory::end_lost_mode(self.store.as_ref(), &record.id)?;
            // A device that left management belongs to nobody: whoever enrols it next does.
            if crate::portal::device_user(self.store.as_ref(), &record.id)?.is_some() {
                crate::portal::set_device_user(self.store.as_ref(), &record.id, None)?;
            }
            self.store
                .delete(Tree::CertificateBindings, record.certificate_sha256.as_bytes())?;
            if let Err(e) = self.scep.revoke(&record.certificate_serial, now) {
                tracing::error!(enrollment = %record.id, error = %e, "could not revoke the identity certificate");
            }
        }
        tracing::info!(enrollment = %record.id, reason = why, "enrollment ended");
        Ok(())
    }

    /// Handles a command-channel request (`/mdm/connect`): stores the result the device
    /// reports, then answers with its next command, or `None` for an empty 200.
    pub fn connect(
        &self,
        identity: &PresentedCertificate,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<Vec<u8>>, MdmError> {
        self.answer_connect(identity, &ConnectRequest::parse(body)?, body, now)
    }

    /// [`Self::connect`] for a body already parsed (`body` is what was parsed: results are
    /// stored as the device sent them).
    pub fn answer_connect(
        &self,
        identity: &PresentedCertificate,
        request: &ConnectRequest,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Option<Vec<u8>>, MdmError> {
        let msg = &request.msg;
        let target = enrollment::resolve(msg).map_err(|e| bad(e.to_string()))?;
        let record = self.authorise_connect(&target, identity, now)?;
        if record.status == EnrollmentStatus::Unenrolled {
            return Err(MdmError::Unauthorized("the enrollment has checked out".into()));
        }
        let status = string(msg, "Status").ok_or_else(|| bad("no Status"))?;
        let skip_not_now = match status {
            "Idle" => false,
            "Acknowledged" | "Error" | "CommandFormatError" | "NotNow" => {
                let uuid = string(msg, "CommandUUID")
                    .filter(|u| !u.is_empty() && u.len() <= 64)
                    .ok_or_else(|| bad("a result needs its CommandUUID"))?;
                let delivery_status = match status {
                    "Acknowledged" => DeliveryStatus::Acknowledged,
                    "Error" => DeliveryStatus::Error,
                    "CommandFormatError" => DeliveryStatus::CommandFormatError,
                    _ => DeliveryStatus::NotNow,
                };
                let (outcome, recorded) =
                    queue::prepare_report(self.store.as_ref(), &record.id, uuid, delivery_status, body, now)?;
                match outcome {
                    ReportOutcome::Recorded { request_type } => {
                        // An inventory answer is stored in the same write as what it changes.
                        if delivery_status == DeliveryStatus::Acknowledged
                            && inventory::INVENTORY_REQUEST_TYPES.contains(&request_type.as_str())
                        {
                            let full = self.full_record(&record)?;
                            self.ingest_inventory(&full, uuid, &request_type, msg, now, &recorded)?;
                        } else {
                            self.store.apply(recorded)?;
                        }
                        if delivery_status != DeliveryStatus::NotNow {
                            self.emit(Event::result(&record.id, uuid, status, msg, now));
                        }
                    }
                    ReportOutcome::NotPending => {
                        tracing::warn!(enrollment = %record.id, command_uuid = %uuid, %status, "result for a command that is not pending for this enrollment; ignored");
                    }
                }
                true
            }
            other => return Err(bad(format!("unknown Status {other:?}"))),
        };
        // last_seen is written at most once a minute: a busy session must not be a write storm.
        if now - record.last_seen_at >= time::Duration::minutes(1) {
            let mut full = self.full_record(&record)?;
            full.last_seen_at = now;
            self.put_enrollment(&full)?;
        }
        match self
            .empty_queues
            .next(self.store.as_ref(), &self.sequence, &record.id, skip_not_now)?
        {
            Some((uuid, plist)) => {
                queue::mark_sent(self.store.as_ref(), &uuid, &record.id, now)?;
                Ok(Some(plist))
            }
            None => Ok(None),
        }
    }

    // ---------------------------------------------------------------- remote actions

    /// Checks `action` for device `id` without queuing anything; the error says why not.
    pub fn check_action(
        &self,
        id: &str,
        action: actions::Action,
        params: &actions::ActionParams,
    ) -> Result<(), MdmError> {
        self.checked_action(id, action, params).map(|_| ())
    }

    /// For each action, why this device cannot take it now (`None`: it can, given the right
    /// parameters). The console offers only what could work.
    pub fn action_availability(&self, id: &str) -> Result<Vec<(actions::Action, Option<String>)>, MdmError> {
        let probe = actions::ActionParams {
            reason: "availability check".into(),
            ..actions::ActionParams::default()
        };
        let mut out = Vec::with_capacity(actions::Action::ALL.len());
        for action in actions::Action::ALL {
            let why = match self.checked_action(id, action, &probe) {
                // Missing parameters are the administrator's to give.
                Ok(_) | Err(MdmError::BadRequest(_)) => None,
                Err(e @ (MdmError::Refused(_) | MdmError::Precondition(_))) => Some(e.to_string()),
                Err(e) => return Err(e),
            };
            out.push((action, why));
        }
        Ok(out)
    }

    fn checked_action(
        &self,
        id: &str,
        action: actions::Action,
        params: &actions::ActionParams,
    ) -> Result<EnrollmentRecord, MdmError> {
        let record =
            enrollment::get(self.store.as_ref(), id)?.ok_or_else(|| MdmError::NotFound(id.to_owned()))?;
        if record.kind.is_user_channel() {
            return Err(MdmError::Precondition(
                "actions are taken on a device, not on one of its user channels".into(),
            ));
        }
        if record.status != EnrollmentStatus::Active {
            return Err(MdmError::Precondition(format!(
                "the device is not enrolled and reachable (status {:?})",
                record.status
            )));
        }
        let inv = inventory::get(self.store.as_ref(), id)?;
        let platform = inventory::platform(&record, inv.as_ref());
        let target = actions::Target {
            enrollment_id: id,
            platform,
            ownership: inventory::ownership(self.store.as_ref(), &record)?,
            inventory: inv.as_ref(),
            unlock_token_escrowed: record.unlock_token_sealed.is_some(),
        };
        actions::check(action, params, &target).map_err(|refusal| match refusal {
            actions::Refusal::Privacy(m) => MdmError::Refused(m.into()),
            actions::Refusal::Precondition(m) => MdmError::Precondition(m),
            actions::Refusal::Invalid(m) => MdmError::BadRequest(m),
        })?;
        Ok(record)
    }

    /// Checks `action` for device `id` and queues its command; records who did it and why.
    pub fn perform_action(
        &self,
        id: &str,
        action: actions::Action,
        params: &actions::ActionParams,
        actor: &str,
        bulk_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<actions::ActionRecord, MdmError> {
        let record = match self.checked_action(id, action, params) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(enrollment = %id, %actor, ?action, reason = %params.reason, refused = %e, "remote action refused");
                return Err(e);
            }
        };
        let unlock_token = match (action, &record.unlock_token_sealed) {
            (actions::Action::ClearPasscode, Some(sealed)) => Some(
                self.pki
                    .open(sealed, &format!("unlock:{id}"))
                    .ok_or_else(|| MdmError::Internal("the escrowed UnlockToken cannot be opened".into()))?,
            ),
            _ => None,
        };
        // The profile the device reports as ours, else the one this appliance hands out now.
        let enrollment_profile = inventory::list::<inventory::InstalledProfile>(
            self.store.as_ref(),
            id,
            inventory::List::Profiles,
        )?
        .into_iter()
        .map(|p| p.identifier)
        .find(|i| i.starts_with("com.citadel.enroll."))
        .unwrap_or_else(|| self.options.enrollment_profile.clone());
        let command = actions::command(
            action,
            params,
            unlock_token.as_ref().map(|t| t.as_slice()),
            &enrollment_profile,
        );
        let enqueued = self.enqueue(
            std::slice::from_ref(&record.id),
            &command,
            actions::ACTION_PRIORITY,
            actor,
            now,
        )?;
        let taken = actions::ActionRecord {
            at: now,
            actor: actor.to_owned(),
            action,
            enrollment_id: id.to_owned(),
            reason: params.reason.trim().to_owned(),
            command_uuid: enqueued.command_uuid,
            bulk_id: bulk_id.map(str::to_owned),
        };
        actions::record(self.store.as_ref(), &taken)?;
        tracing::warn!(
            enrollment = %id, %actor, ?action, reason = %taken.reason, command_uuid = %taken.command_uuid,
            "remote action queued"
        );
        Ok(taken)
    }

    // ---------------------------------------------------------------- inventory

    /// Updates the inventory from an answer, writing `recorded` (the answer's delivery) in the
    /// same batch. Only a failure to write `recorded` is an error; an inventory that cannot be
    /// updated is logged (the answer is stored alone; the next report will try again).
    fn ingest_inventory(
        &self,
        record: &EnrollmentRecord,
        uuid: &str,
        request_type: &str,
        msg: &Dictionary,
        now: OffsetDateTime,
        recorded: &crate::store::WriteBatch,
    ) -> Result<(), StoreError> {
        // Only an app list's interpretation depends on what was asked (ManagedAppsOnly).
        let command = if request_type == "InstalledApplicationList" {
            match queue::command(self.store.as_ref(), uuid) {
                Ok(Some(c)) => plist::from_bytes::<Dictionary>(c.plist.as_bytes())
                    .ok()
                    .and_then(|mut d| d.remove("Command"))
                    .and_then(Value::into_dictionary),
                _ => None,
            }
        } else {
            None
        };
        match inventory::ingest(
            self.store.as_ref(),
            recorded,
            record,
            request_type,
            command.as_ref(),
            msg,
            now,
        )? {
            Ok(inventory::Ingested::Updated {
                changes,
                inventory,
                ownership,
            }) => {
                self.index.update_inventory(record, &inventory, ownership);
                if changes > 0 {
                    tracing::info!(enrollment = %record.id, %request_type, changes, "inventory changed");
                }
            }
            Ok(inventory::Ingested::Ignored) => {}
            Err(e) => {
                tracing::warn!(enrollment = %record.id, %request_type, error = %e, "inventory not updated")
            }
        }
        Ok(())
    }

    /// The inventory commands for `record`'s device, by its platform and ownership.
    fn inventory_commands(&self, record: &EnrollmentRecord) -> Result<Vec<Dictionary>, MdmError> {
        let platform = inventory::platform(record, inventory::get(self.store.as_ref(), &record.id)?.as_ref());
        let ownership = inventory::ownership(self.store.as_ref(), record)?;
        let user_enrollment = record.kind == enrollment::EnrollmentKind::UserEnrollment;
        Ok(inventory::schedule::commands(
            platform,
            ownership,
            user_enrollment,
        ))
    }

    /// Queues the inventory commands for one device channel and moves it to its next slot.
    fn queue_inventory(&self, record: &EnrollmentRecord, now: OffsetDateTime) -> Result<usize, MdmError> {
        let mut queued = 0;
        for command in self.inventory_commands(record)? {
            queued += self
                .enqueue(
                    std::slice::from_ref(&record.id),
                    &command,
                    inventory::schedule::INVENTORY_PRIORITY,
                    inventory::schedule::ACTOR,
                    now,
                )?
                .queued
                .len();
        }
        let interval = self.options.inventory.interval;
        inventory::schedule::schedule_at(
            self.store.as_ref(),
            &record.id,
            inventory::schedule::next_due(&record.id, interval, now),
        )?;
        Ok(queued)
    }

    /// Queues inventory for up to `max` devices whose report is due at `now`; returns how many
    /// devices were asked. Devices that left are taken off the schedule.
    pub fn run_inventory_schedule(&self, now: OffsetDateTime, max: usize) -> Result<usize, MdmError> {
        let mut asked = 0;
        for id in inventory::schedule::due(self.store.as_ref(), now, max)? {
            match enrollment::get(self.store.as_ref(), &id)? {
                Some(record) if record.pushable() && !record.kind.is_user_channel() => {
                    self.queue_inventory(&record, now)?;
                    asked += 1;
                }
                _ => inventory::schedule::unschedule(self.store.as_ref(), &id)?,
            }
        }
        Ok(asked)
    }

    /// Asks one device for its inventory now (the admin API's "refresh").
    pub fn refresh_inventory(&self, id: &str, now: OffsetDateTime) -> Result<usize, MdmError> {
        match enrollment::get(self.store.as_ref(), id)? {
            Some(record) if record.status == EnrollmentStatus::Active && !record.kind.is_user_channel() => {
                self.queue_inventory(&record, now)
            }
            Some(_) => Err(MdmError::Precondition(
                "only an active device channel reports inventory".into(),
            )),
            None => Err(MdmError::NotFound(id.to_owned())),
        }
    }

    // ---------------------------------------------------------------- admin operations

    /// Validates `command` (the inner `Command` dictionary) against Apple's schema and queues it
    /// for `targets`, which must be current enrollments, under a new UUID.
    pub fn enqueue(
        &self,
        targets: &[String],
        command: &Dictionary,
        priority: u8,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Enqueued, MdmError> {
        self.enqueue_as(None, targets, command, priority, actor, now)
    }

    /// [`Self::enqueue`], under `chosen_uuid` when the caller gives one: a caller that retries
    /// with the same UUID cannot queue the command twice (409 while the store holds it).
    pub fn enqueue_as(
        &self,
        chosen_uuid: Option<&str>,
        targets: &[String],
        command: &Dictionary,
        priority: u8,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Enqueued, MdmError> {
        if targets.is_empty() {
            return Err(bad("no targets"));
        }
        if command.contains_key("CommandUUID") {
            return Err(bad(
                "CommandUUID goes beside the Command dictionary, not inside it",
            ));
        }
        let uuid = match chosen_uuid {
            None => uuid::Uuid::new_v4(),
            Some(chosen) => match uuid::Uuid::try_parse(chosen) {
                Ok(u) if !u.is_nil() => u,
                _ => return Err(bad("the command UUID must be a UUID (8-4-4-4-12 hex digits)")),
            },
        };
        let uuid = uuid.hyphenated().to_string().to_uppercase();
        schema::validate(command).map_err(|e| bad(e.to_string()))?;
        let mut unknown = Vec::new();
        let mut unique = Vec::with_capacity(targets.len());
        // In ID order, whatever order they came in: the enrollments are then read, the queue
        // entries written and the devices pushed in key order, from pages just cached.
        let sorted: std::collections::BTreeSet<&String> = targets.iter().collect();
        for t in sorted {
            match enrollment::get(self.store.as_ref(), t)? {
                Some(r) if r.status != EnrollmentStatus::Unenrolled => unique.push(t.clone()),
                _ => unknown.push(t.clone()),
            }
        }
        if !unknown.is_empty() {
            let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
            return Err(bad(format!(
                "{} target(s) are not enrolled: {}{}",
                unknown.len(),
                shown.join(", "),
                if unknown.len() > 5 { ", …" } else { "" }
            )));
        }
        let out = queue::enqueue_as(
            self.store.as_ref(),
            &self.sequence,
            &uuid,
            &unique,
            command,
            priority,
            actor,
            now,
        )
        .map_err(|e| match e {
            StoreError::Aborted(taken) => MdmError::Precondition(taken),
            other => MdmError::Store(other),
        })?;
        if let Some(push) = &self.push {
            push.request(out.queued.iter().cloned());
        }
        tracing::info!(
            command_uuid = %out.command_uuid, request_type = string(command, "RequestType").unwrap_or_default(),
            queued = out.queued.len(), coalesced = out.coalesced.len(), actor, "command queued"
        );
        Ok(out)
    }

    pub fn command(
        &self,
        uuid: &str,
    ) -> Result<Option<(queue::CommandRecord, Vec<queue::Delivery>)>, MdmError> {
        let Some(record) = queue::command(self.store.as_ref(), uuid)? else {
            return Ok(None);
        };
        let deliveries = queue::deliveries(self.store.as_ref(), uuid, None, 10_000)?;
        Ok(Some((record, deliveries)))
    }

    pub fn enrollment(&self, id: &str) -> Result<Option<EnrollmentRecord>, MdmError> {
        Ok(enrollment::get(self.store.as_ref(), id)?)
    }

    pub fn history(&self, id: &str, limit: usize) -> Result<Vec<queue::Delivery>, MdmError> {
        Ok(queue::history(self.store.as_ref(), id, limit)?)
    }

    pub fn pending(&self, id: &str) -> Result<usize, MdmError> {
        Ok(queue::pending_count(self.store.as_ref(), id)?)
    }

    /// Prunes answered commands older than the retention period.
    pub fn prune(&self, now: OffsetDateTime) -> Result<usize, MdmError> {
        let cutoff = now - self.options.retention;
        let mut total = 0;
        loop {
            let n = queue::prune(self.store.as_ref(), cutoff, 1000)?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary plist of `depth` arrays, each holding the next one twice, ending in an integer:
    /// a few hundred bytes that unfold into 2^depth values.
    fn reference_bomb(depth: u8) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..depth {
            offsets.push(u16::try_from(out.len()).unwrap());
            out.extend_from_slice(&[0xA2, i + 1, i + 1]);
        }
        offsets.push(u16::try_from(out.len()).unwrap());
        out.extend_from_slice(&[0x10, 0x01]);
        let table = out.len() as u64;
        for o in &offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&[2, 1]);
        out.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&table.to_be_bytes());
        out
    }

    #[test]
    fn binary_plists_that_unfold_far_beyond_their_size_are_refused_unbuilt() {
        // Small enough to unfold: the construction is a real plist the parser reads.
        let small = reference_bomb(3);
        let value: plist::Value = plist::from_bytes(&small).unwrap();
        assert_eq!(format!("{value:?}").matches("Integer").count(), 8);
        assert!(refuse_reference_bombs(&small).is_ok());
        // 2^60 values from ~400 bytes: refused, at once.
        let started = std::time::Instant::now();
        let err = parse_plist(&reference_bomb(60)).unwrap_err();
        assert!(err.to_string().contains("unfolds far beyond its size"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // What devices send in binary — shared strings included — is read as before.
        let mut apps = Vec::new();
        for i in 0..200 {
            let mut app = Dictionary::new();
            app.insert("Identifier".into(), Value::String(format!("com.example.app{i}")));
            app.insert("Version".into(), Value::String("1.0".into()));
            app.insert("Installing".into(), Value::Boolean(false));
            apps.push(Value::Dictionary(app));
        }
        let mut msg = Dictionary::new();
        msg.insert("Status".into(), Value::String("Acknowledged".into()));
        msg.insert("InstalledApplicationList".into(), Value::Array(apps));
        let mut binary = Vec::new();
        plist::to_writer_binary(&mut binary, &Value::Dictionary(msg.clone())).unwrap();
        assert_eq!(parse_plist(&binary).unwrap(), msg);
    }

    /// A service over a memory store, with no push or webhook.
    fn service(now: OffsetDateTime) -> (tempfile::TempDir, Arc<dyn Store>, MdmService) {
        let tmp = tempfile::tempdir().unwrap();
        let data = crate::datadir::DataDir::prepare(&tmp.path().join("data")).unwrap();
        let (pki, _) = Pki::load_or_create(&data, "test", now).unwrap();
        let pki = Arc::new(pki);
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let scep = Arc::new(ScepService::new(
            Arc::clone(&store),
            Arc::clone(&pki),
            crate::scep::ScepOptions::from(&crate::config::ScepSection::default()),
        ));
        let mdm = MdmService::new(
            Arc::clone(&store),
            pki,
            scep,
            MdmOptions {
                user_authenticate: false,
                retention: time::Duration::days(30),
                inventory: InventorySchedule {
                    interval: time::Duration::hours(24),
                },
                inventory_on_enrollment: true,
                enrollment_profile: "com.citadel.enroll.test".into(),
            },
            None,
            None,
            Arc::new(DeviceIndex::default()),
        );
        (tmp, store, mdm)
    }

    /// A device channel `id` in `status`, its certificate named after it.
    fn device_record(id: &str, status: EnrollmentStatus, now: OffsetDateTime) -> EnrollmentRecord {
        let mut r = EnrollmentRecord::new(
            id.into(),
            enrollment::EnrollmentKind::Device,
            id.into(),
            id.into(),
            now,
        );
        r.status = status;
        r
    }

    #[test]
    fn a_command_is_queued_once_per_target_in_id_order() {
        const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);
        let (_tmp, store, mdm) = service(NOW);
        for (id, status) in [
            ("C", EnrollmentStatus::Active),
            ("A", EnrollmentStatus::Active),
            ("B", EnrollmentStatus::Unenrolled),
        ] {
            enrollment::put(store.as_ref(), &device_record(id, status, NOW)).unwrap();
        }
        let mut command = Dictionary::new();
        command.insert("RequestType".into(), Value::String("DeviceLock".into()));
        let targets = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let out = mdm
            .enqueue(&targets(&["C", "A", "C"]), &command, 50, "admin", NOW)
            .unwrap();
        assert_eq!(out.queued, ["A", "C"], "in ID order, each once");
        assert_eq!(queue::pending_count(store.as_ref(), "C").unwrap(), 1);
        let err = mdm
            .enqueue(&targets(&["A", "B", "X"]), &command, 50, "admin", NOW)
            .unwrap_err();
        assert!(
            err.to_string().contains("2 target(s) are not enrolled: B, X"),
            "{err}"
        );
        assert_eq!(
            queue::pending_count(store.as_ref(), "A").unwrap(),
            1,
            "nothing queued"
        );
    }

    /// A caller may choose the command's UUID (canonicalised), once: the same UUID again is a
    /// conflict that queues nothing, and anything but a UUID is refused.
    #[test]
    fn a_command_uuid_chosen_by_the_caller_is_used_once() {
        const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);
        let (_tmp, store, mdm) = service(NOW);
        for id in ["A", "B"] {
            enrollment::put(store.as_ref(), &device_record(id, EnrollmentStatus::Active, NOW)).unwrap();
        }
        let mut command = Dictionary::new();
        command.insert("RequestType".into(), Value::String("DeviceLock".into()));
        let chosen = "0f2e4c6a-8b1d-4e3f-a5c7-9d0b2e4f6a8c";
        let out = mdm
            .enqueue_as(Some(chosen), &["A".into()], &command, 50, "admin", NOW)
            .unwrap();
        assert_eq!(out.command_uuid, chosen.to_uppercase());
        assert_eq!(
            queue::next(store.as_ref(), "A", false).unwrap().unwrap().0,
            out.command_uuid
        );

        let again = mdm
            .enqueue_as(
                Some(&chosen.to_uppercase()),
                &["B".into()],
                &command,
                50,
                "admin",
                NOW,
            )
            .unwrap_err();
        assert!(matches!(again, MdmError::Precondition(_)), "{again:?}");
        assert!(again.to_string().contains("already exists"), "{again}");
        assert_eq!(
            queue::pending_count(store.as_ref(), "B").unwrap(),
            0,
            "nothing queued"
        );
        assert_eq!(queue::pending_count(store.as_ref(), "A").unwrap(), 1);
        let record = queue::command(store.as_ref(), &out.command_uuid)
            .unwrap()
            .unwrap();
        assert_eq!(record.targets, 1, "the first command is untouched");

        for bad in [
            "",
            "not-a-uuid",
            "00000000-0000-0000-0000-000000000000",
            &"a".repeat(4096),
        ] {
            let err = mdm
                .enqueue_as(Some(bad), &["B".into()], &command, 50, "admin", NOW)
                .unwrap_err();
            assert!(matches!(err, MdmError::BadRequest(_)), "{bad:?}: {err:?}");
        }
        let mut inside = command.clone();
        inside.insert("CommandUUID".into(), Value::String(chosen.into()));
        assert!(matches!(
            mdm.enqueue(&["B".into()], &inside, 50, "admin", NOW),
            Err(MdmError::BadRequest(_))
        ));
        assert_eq!(queue::pending_count(store.as_ref(), "B").unwrap(), 0);
    }

    /// The command channel takes the certificate bound to the enrollment as it stands (no
    /// registry read), but not once it has expired or been revoked; any other certificate
    /// meets the registry's full check, and a renewal of the bound one re-binds.
    #[test]
    fn the_command_channel_takes_the_bound_certificate_only_while_valid_and_not_revoked() {
        use crate::scep::registry::{self, CertificateRecord, CertificateStatus, IssuedVia};
        use crate::store::StoreExt;
        const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);
        let year = time::Duration::days(365);
        let (_tmp, store, mdm) = service(NOW);
        let certificate = |serial: &str, sha256: &str, issued_via| {
            let record = CertificateRecord {
                serial: serial.into(),
                subject: "CN=device".into(),
                sha256_fingerprint: sha256.into(),
                not_before: NOW - year,
                not_after: NOW + year,
                issued_at: NOW - year,
                issued_via,
                transaction_id: serial.into(),
                status: CertificateStatus::Active,
                assigned_user: None,
            };
            store
                .put_record(Tree::Certificates, serial.as_bytes(), &record)
                .unwrap();
            PresentedCertificate {
                sha256: sha256.into(),
                serial: serial.into(),
                source: super::super::identity::IdentitySource::MdmSignature,
                not_before: record.not_before,
                not_after: record.not_after,
            }
        };
        let bound = certificate("0d", "fp-bound", IssuedVia::OneTimeChallenge);
        let mut record = EnrollmentRecord::new(
            "DEV".into(),
            enrollment::EnrollmentKind::Device,
            bound.sha256.clone(),
            bound.serial.clone(),
            NOW,
        );
        record.status = EnrollmentStatus::Active;
        enrollment::put(store.as_ref(), &record).unwrap();
        let idle = br#"<plist version="1.0"><dict><key>UDID</key><string>DEV</string><key>Status</key><string>Idle</string></dict></plist>"#;
        let request = ConnectRequest::parse(idle).unwrap();
        let connect =
            |presented: &PresentedCertificate, now| mdm.answer_connect(presented, &request, idle, now);

        assert_eq!(connect(&bound, NOW).unwrap(), None);
        let expired = connect(&bound, NOW + year + time::Duration::seconds(1)).unwrap_err();
        assert!(matches!(expired, MdmError::Unauthorized(_)), "{expired:?}");

        // A certificate made elsewhere with the bound one's serial number.
        let forged = PresentedCertificate {
            sha256: "fp-forged".into(),
            ..bound.clone()
        };
        let err = connect(&forged, NOW).unwrap_err();
        assert!(err.to_string().contains("not issued by this appliance"), "{err}");
        // A certificate of ours, bound to nothing (or to another device).
        let stranger = certificate("0f", "fp-stranger", IssuedVia::OneTimeChallenge);
        let err = connect(&stranger, NOW).unwrap_err();
        assert!(err.to_string().contains("not the one bound"), "{err}");

        // Revoked: refused from the next request on.
        registry::revoke(store.as_ref(), &bound.serial, NOW).unwrap();
        assert_eq!(registry::revoked_at(store.as_ref(), "0d").unwrap(), Some(NOW));
        let err = connect(&bound, NOW).unwrap_err();
        assert!(
            matches!(&err, MdmError::Unauthorized(m) if m.contains("revoked")),
            "{err:?}"
        );
        // Its renewal (issued before the revocation, say) takes over the enrollment.
        let renewal = certificate(
            "0e",
            "fp-renewal",
            IssuedVia::Renewal {
                previous_serial: "0d".into(),
            },
        );
        assert_eq!(connect(&renewal, NOW).unwrap(), None);
        let rebound = enrollment::get(store.as_ref(), "DEV").unwrap().unwrap();
        assert_eq!(rebound.certificate_sha256, "fp-renewal");
        assert_eq!(connect(&renewal, NOW).unwrap(), None, "now by the binding");
    }

    #[test]
    fn due_devices_are_asked_for_their_inventory_and_move_to_their_next_slot() {
        use crate::inventory::schedule::{due_at, schedule_at};
        const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);
        let day = time::Duration::hours(24);
        let (_tmp, store, mdm) = service(NOW);
        let device = |id: &str, status| {
            let mut r = device_record(id, status, NOW);
            r.facts.product_name = Some("iPhone16,1".into());
            r.push = (status == EnrollmentStatus::Active).then(|| PushInfo {
                token_hex: "00".into(),
                push_magic: "m".into(),
                topic: "t".into(),
            });
            enrollment::put(store.as_ref(), &r).unwrap();
        };
        device("PHONE", EnrollmentStatus::Active);
        device("GONE", EnrollmentStatus::Unenrolled);
        device("LATER", EnrollmentStatus::Active);
        let minute = time::Duration::minutes(1);
        schedule_at(store.as_ref(), "PHONE", NOW - minute).unwrap();
        schedule_at(store.as_ref(), "GONE", NOW - minute).unwrap();
        schedule_at(store.as_ref(), "LATER", NOW + time::Duration::hours(1)).unwrap();

        assert_eq!(mdm.run_inventory_schedule(NOW, 100).unwrap(), 1);
        // A corporate iPhone: DeviceInformation, SecurityInfo, both app lists, profiles, certificates.
        assert_eq!(queue::pending_count(store.as_ref(), "PHONE").unwrap(), 6);
        assert_eq!(queue::pending_count(store.as_ref(), "LATER").unwrap(), 0);
        let next = due_at(store.as_ref(), "PHONE").unwrap().unwrap();
        assert!(next > NOW && next <= NOW + day, "{next}");
        assert_eq!(
            due_at(store.as_ref(), "GONE").unwrap(),
            None,
            "a device that left is unscheduled"
        );
        assert_eq!(
            mdm.run_inventory_schedule(NOW, 100).unwrap(),
            0,
            "nothing is due twice"
        );

        // A day on: due again; what is still pending is not queued twice.
        assert_eq!(mdm.run_inventory_schedule(next, 100).unwrap(), 2);
        assert_eq!(queue::pending_count(store.as_ref(), "PHONE").unwrap(), 6);
        assert_eq!(due_at(store.as_ref(), "PHONE").unwrap(), Some(next + day));
    }

    /// Whatever a device sends, parsing and identifying it returns a result, never a panic.
    #[test]
    fn mutated_messages_never_panic() {
        let valid = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>MessageType</key><string>TokenUpdate</string>
<key>UDID</key><string>0000-1111</string><key>UserID</key><string>U&#39;1</string>
<key>Token</key><data>q83v</data></dict></plist>"#;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for round in 0..20_000 {
            let mut m = valid.to_vec();
            for _ in 0..(1 + round % 4) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % m.len();
                match x % 3 {
                    0 => m[at] = (x >> 8) as u8,
                    1 => m.truncate(at.max(1)),
                    _ => m.insert(at, (x >> 16) as u8),
                }
            }
            if let Ok(dict) = parse_plist(&m) {
                let _ = enrollment::resolve(&dict);
            }
        }
        for junk in [&b""[..], b"bplist00", b"<plist>", &[0u8; 64]] {
            assert!(parse_plist(junk).is_err());
        }
        let dict = parse_plist(valid).unwrap();
        assert_eq!(enrollment::resolve(&dict).unwrap().id, "0000-1111:U'1");
    }
}
