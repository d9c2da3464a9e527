//! Optional webhook: check-in events and command results POSTed as JSON to a configured URL,
//! signed with HMAC-SHA256 so the receiver can tell they came from this appliance.
//!
//! Delivery is best effort and never slows a device down: events go through a bounded queue to
//! one background task; when the queue is full, events are dropped and counted in the log.

use hmac::{Hmac, Mac};
use plist::Dictionary;
use serde::Serialize;
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::enrollment::EnrollmentRecord;
use super::schema::plist_to_json;

/// Header carrying `sha256=<hex HMAC of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Citadel-Signature";
const QUEUE: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `checkin` or `command_result`.
    pub event: &'static str,
    /// The check-in message type, or the result status.
    pub kind: String,
    pub enrollment_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

impl Event {
    pub fn checkin(kind: &str, record: &EnrollmentRecord, at: OffsetDateTime) -> Self {
        Self {
            event: "checkin",
            kind: kind.to_owned(),
            enrollment_id: record.id.clone(),
            at,
            command_uuid: None,
            serial_number: record.facts.serial_number.clone(),
            result: None,
        }
    }

    pub fn result(
        enrollment_id: &str,
        uuid: &str,
        status: &str,
        body: &Dictionary,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            event: "command_result",
            kind: status.to_owned(),
            enrollment_id: enrollment_id.to_owned(),
            at,
            command_uuid: Some(uuid.to_owned()),
            serial_number: None,
            // Whoever receives webhooks is not a reader with devices.locate, and secrets stay here.
            result: Some(plist_to_json(&plist::Value::Dictionary(
                crate::mdm::redact::redacted(body.clone(), false),
            ))),
        }
    }
}

/// The sending side, held by the MDM service.
#[derive(Debug, Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Event>,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

impl Webhook {
    /// Starts the delivery task on the current tokio runtime.
    pub fn start(url: String, secret: Vec<u8>, client: reqwest::Client) -> Self {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let body = match serde_json::to_vec(&event) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "webhook event not serialisable");
                        continue;
                    }
                };
                let sent = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, sign(&secret, &body))
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), event = event.event, "webhook receiver refused an event")
                    }
                    Err(e) => tracing::warn!(error = %e, event = event.event, "webhook delivery failed"),
                }
            }
        });
        Self { tx }
    }

    pub fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!("webhook queue full or closed; event dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn results_go_out_without_secrets_or_locations() {
        let mut body = plist::Dictionary::new();
        body.insert("Status".into(), plist::Value::String("Acknowledged".into()));
        body.insert("Latitude".into(), plist::Value::Real(51.5072));
        body.insert(
            "ActivationLockBypassCode".into(),
            plist::Value::String("BYPASS".into()),
        );
        let at = time::macros::datetime!(2026-12-06 10:00 UTC);
        let event = super::Event::result("D1", "U1", "Acknowledged", &body, at);
        let json = serde_json::to_string(&event).unwrap_or_default();
        assert!(!json.contains("51.5072") && !json.contains("BYPASS"), "{json}");
        assert!(json.contains("Acknowledged"), "{json}");
    }
}
