//! The enrollment profile (`.mobileconfig`): trust in our root, a SCEP payload that fetches the
//! device identity with a one-time challenge, and the MDM payload that uses that identity.
//! Signed by the server's TLS identity so that devices show it as verified.

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree};

pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";

/// What the profile points devices at.
#[derive(Debug, Clone)]
pub struct ProfileParams<'a> {
    /// `https://host:port`, no trailing slash.
    pub base_url: &'a str,
    pub topic: &'a str,
    pub organization: &'a str,
    pub root_der: &'a [u8],
    /// A fresh one-time SCEP challenge for this profile.
    pub challenge: &'a str,
}

fn payload(kind: &str, identifier: &str, uuid: &str, name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), Value::String(kind.into()));
    d.insert("PayloadIdentifier".into(), Value::String(identifier.into()));
    d.insert("PayloadUUID".into(), Value::String(uuid.into()));
    d.insert("PayloadVersion".into(), Value::Integer(1.into()));
    d.insert("PayloadDisplayName".into(), Value::String(name.into()));
    d
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// The enrollment profile's `PayloadIdentifier` for an appliance at `base_url`. Removing the
/// profile with this identifier (RemoveProfile) takes the device out of management.
pub fn profile_identifier(base_url: &str) -> String {
    let host_id: String = base_url
        .trim_start_matches("https://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("com.citadel.enroll.{host_id}")
}

/// The unsigned profile, XML.
pub fn build(p: &ProfileParams<'_>) -> Result<Vec<u8>, plist::Error> {
    let prefix = profile_identifier(p.base_url);

    let mut root = payload(
        "com.apple.security.root",
        &format!("{prefix}.root"),
        &new_uuid(),
        "Citadel Root CA",
    );
    root.insert("PayloadContent".into(), Value::Data(p.root_der.to_vec()));

    let scep_uuid = new_uuid();
    let mut scep = payload(
        "com.apple.security.scep",
        &format!("{prefix}.scep"),
        &scep_uuid,
        "Device identity",
    );
    let pair = |k: &str, v: &str| {
        Value::Array(vec![Value::Array(vec![
            Value::String(k.into()),
            Value::String(v.into()),
        ])])
    };
    let mut scep_content = Dictionary::new();
    scep_content.insert("URL".into(), Value::String(format!("{}/scep", p.base_url)));
    scep_content.insert("Name".into(), Value::String("Citadel".into()));
    scep_content.insert(
        "Subject".into(),
        Value::Array(vec![
            pair("O", p.organization),
            pair("CN", "Citadel device identity"),
        ]),
    );
    scep_content.insert("Challenge".into(), Value::String(p.challenge.into()));
    scep_content.insert("Keysize".into(), Value::Integer(2048.into()));
    scep_content.insert("Key Type".into(), Value::String("RSA".into()));
    // 1 = signing, 4 = encryption.
    scep_content.insert("Key Usage".into(), Value::Integer(5.into()));
    scep_content.insert("Retries".into(), Value::Integer(3.into()));
    scep_content.insert("RetryDelay".into(), Value::Integer(10.into()));
    scep.insert("PayloadContent".into(), Value::Dictionary(scep_content));

    let mut mdm = payload(
        "com.apple.mdm",
        &format!("{prefix}.mdm"),
        &new_uuid(),
        "Device management",
    );
    mdm.insert("IdentityCertificateUUID".into(), Value::String(scep_uuid));
    mdm.insert("Topic".into(), Value::String(p.topic.into()));
    mdm.insert(
        "ServerURL".into(),
        Value::String(format!("{}/mdm/connect", p.base_url)),
    );
    mdm.insert(
        "CheckInURL".into(),
        Value::String(format!("{}/mdm/checkin", p.base_url)),
    );
    mdm.insert("SignMessage".into(), Value::Boolean(true));
    mdm.insert("AccessRights".into(), Value::Integer(8191.into()));
    mdm.insert("CheckOutWhenRemoved".into(), Value::Boolean(true));
    mdm.insert(
        "ServerCapabilities".into(),
        Value::Array(vec![
            Value::String("com.apple.mdm.per-user-connections".into()),
            Value::String("com.apple.mdm.bootstraptoken".into()),
        ]),
    );

    let mut top = payload(
        "Configuration",
        &prefix,
        &new_uuid(),
        &format!("{} device management", p.organization),
    );
    top.insert("PayloadOrganization".into(), Value::String(p.organization.into()));
    top.insert("PayloadScope".into(), Value::String("System".into()));
    top.insert(
        "PayloadContent".into(),
        Value::Array(vec![
            Value::Dictionary(root),
            Value::Dictionary(scep),
            Value::Dictionary(mdm),
        ]),
    );
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &Value::Dictionary(top))?;
    Ok(out)
}

// ---------------------------------------------------------------- one-time enrollment links

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentLink {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub used_at: Option<OffsetDateTime>,
    /// The portal user whose personal device this link enrols.
    #[serde(default)]
    pub assigned_user: Option<String>,
}

fn link_key(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a link token (returned once; only its hash is stored).
pub fn create_link(
    store: &dyn Store,
    ttl: time::Duration,
    created_by: &str,
    assigned_user: Option<&str>,
    now: OffsetDateTime,
) -> Result<(String, EnrollmentLink), StoreError> {
    let bytes: [u8; 24] = rand::random();
    let token = data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase();
    let key = link_key(&token);
    let link = EnrollmentLink {
        id: hex::encode(&key[..6]),
        created_at: now,
        expires_at: now + ttl,
        created_by: created_by.to_owned(),
        used_at: None,
        assigned_user: assigned_user.map(str::to_owned),
    };
    store.put_record(Tree::EnrollmentLinks, &key, &link)?;
    Ok((token, link))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    Unknown,
    Used,
    Expired,
}

/// Redeems a link exactly once, even under concurrent requests.
/// Unused, unexpired links made for `user` (the portal caps how many one person holds).
pub fn open_links_of(store: &dyn Store, user: &str, now: OffsetDateTime) -> Result<usize, StoreError> {
    let mut n = 0;
    for (k, v) in crate::store::scan_all(store, Tree::EnrollmentLinks, b"")? {
        let link: EnrollmentLink = crate::store::decode(Tree::EnrollmentLinks, &k, &v)?;
        if link.assigned_user.as_deref() == Some(user) && link.used_at.is_none() && link.expires_at > now {
            n += 1;
        }
    }
    Ok(n)
}

pub fn redeem_link(
    store: &dyn Store,
    token: &str,
    now: OffsetDateTime,
) -> Result<Result<EnrollmentLink, LinkRefusal>, StoreError> {
    if token.is_empty() || token.len() > 64 || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Ok(Err(LinkRefusal::Unknown));
    }
    let key = link_key(token);
    let outcome = std::sync::Mutex::new(Err(LinkRefusal::Unknown));
    store.transaction(&|tx| {
        let result = match tx.get(Tree::EnrollmentLinks, &key)? {
            None => Err(LinkRefusal::Unknown),
            Some(bytes) => {
                let mut link: EnrollmentLink = crate::store::decode(Tree::EnrollmentLinks, &key, &bytes)?;
                if link.used_at.is_some() {
                    Err(LinkRefusal::Used)
                } else if link.expires_at <= now {
                    Err(LinkRefusal::Expired)
                } else {
                    link.used_at = Some(now);
                    tx.put(Tree::EnrollmentLinks, &key, &crate::store::encode(&link)?)?;
                    Ok(link)
                }
            }
        };
        if let Ok(mut slot) = outcome.lock() {
            *slot = result;
        }
        Ok(())
    })?;
    Ok(outcome.into_inner().unwrap_or(Err(LinkRefusal::Unknown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    #[test]
    fn profile_has_the_three_payloads_wired_together() {
        let xml = build(&ProfileParams {
            base_url: "https://mdm.example.org:8443",
            topic: "com.apple.mgmt.External.x",
            organization: "Ministry",
            root_der: b"DER",
            challenge: "CHALLENGE",
        })
        .unwrap();
        let top: Dictionary = plist::from_bytes(&xml).unwrap();
        let content = top["PayloadContent"].as_array().unwrap();
        let types: Vec<&str> = content
            .iter()
            .map(|p| p.as_dictionary().unwrap()["PayloadType"].as_string().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "com.apple.security.root",
                "com.apple.security.scep",
                "com.apple.mdm"
            ]
        );
        let scep = content[1].as_dictionary().unwrap();
        let mdm = content[2].as_dictionary().unwrap();
        assert_eq!(mdm["IdentityCertificateUUID"], scep["PayloadUUID"]);
        assert_eq!(
            mdm["ServerURL"].as_string(),
            Some("https://mdm.example.org:8443/mdm/connect")
        );
        assert_eq!(mdm["AccessRights"].as_signed_integer(), Some(8191));
        let sc = scep["PayloadContent"].as_dictionary().unwrap();
        assert_eq!(sc["Challenge"].as_string(), Some("CHALLENGE"));
        assert_eq!(sc["Key Usage"].as_signed_integer(), Some(5));
    }

    #[test]
    fn links_are_one_time_and_expire() {
        let store = MemoryStore::new();
        let (token, _) = create_link(&store, time::Duration::hours(1), "t", None, NOW).unwrap();
        assert!(redeem_link(&store, &token, NOW).unwrap().is_ok());
        assert_eq!(redeem_link(&store, &token, NOW).unwrap(), Err(LinkRefusal::Used));
        let (old, _) = create_link(&store, time::Duration::hours(1), "t", None, NOW).unwrap();
        assert_eq!(
            redeem_link(&store, &old, NOW + time::Duration::hours(2)).unwrap(),
            Err(LinkRefusal::Expired)
        );
        assert_eq!(
            redeem_link(&store, "nope", NOW).unwrap(),
            Err(LinkRefusal::Unknown)
        );
        assert_eq!(
            redeem_link(&store, "../../x", NOW).unwrap(),
            Err(LinkRefusal::Unknown)
        );
    }
}
