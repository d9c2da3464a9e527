//! Apple MDM protocol against the real server, with messages built independently: bodies by
//! Python's `plistlib`, `Mdm-Signature` headers by `openssl cms -sign` with an identity
//! certificate that Debian's `scepclient` obtained over SCEP.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::harness::{Appliance, run, text};
use crate::scep::{certificates, challenge, scepclient};

/// JSON on stdin → plist on stdout (`xml` or `binary`); `{"$data": "<base64>"}` becomes data.
const TO_PLIST: &str = r#"
import base64, json, plistlib, sys
def conv(v):
    if isinstance(v, dict):
        if set(v) == {"$data"}:
            return base64.b64decode(v["$data"])
        return {k: conv(x) for k, x in v.items()}
    if isinstance(v, list):
        return [conv(x) for x in v]
    return v
fmt = plistlib.FMT_BINARY if sys.argv[1] == "binary" else plistlib.FMT_XML
sys.stdout.buffer.write(plistlib.dumps(conv(json.load(sys.stdin)), fmt=fmt))
"#;

/// plist on stdin → JSON on stdout (data as base64 strings).
const FROM_PLIST: &str = r#"
import base64, json, plistlib, sys, datetime
def conv(v):
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {k: conv(x) for k, x in v.items()}
    if isinstance(v, list):
        return [conv(x) for x in v]
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    return v
json.dump(conv(plistlib.loads(sys.stdin.buffer.read())), sys.stdout)
"#;

fn python(script: &str, arg: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .args(["-c", script, arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    out.stdout
}

pub fn plist(value: &Value) -> Vec<u8> {
    python(TO_PLIST, "xml", value.to_string().as_bytes())
}

fn binary_plist(value: &Value) -> Vec<u8> {
    python(TO_PLIST, "binary", value.to_string().as_bytes())
}

pub fn parse_plist(bytes: &[u8]) -> Value {
    serde_json::from_slice(&python(FROM_PLIST, "", bytes)).unwrap()
}

pub fn data(bytes: &[u8]) -> Value {
    json!({ "$data": data_encoding::BASE64.encode(bytes) })
}

/// An API token made with the CLI, as an administrator would.
pub fn api_token(a: &Appliance) -> String {
    api_token_with_role(a, "owner")
}

/// A token acting with `role` (tokens are made at the command line, not by other tokens).
pub fn api_token_with_role(a: &Appliance, role: &str) -> String {
    let out = run(a
        .cmd()
        .args(["api-token", "create", "--name", "tests", "--role", role]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// A virtual device: an identity from `scepclient`, messages signed with `openssl cms`.
pub struct Device {
    pub udid: String,
    pub key: PathBuf,
    pub cert: PathBuf,
    dir: PathBuf,
}

impl Device {
    pub fn enrol(a: &Appliance, name: &str) -> Device {
        let c = challenge(a, None);
        Self::enrol_with(a, name, &c)
    }

    /// Enrols with a given one-time challenge (e.g. the one in a downloaded profile).
    pub fn enrol_with(a: &Appliance, name: &str, c: &str) -> Device {
        let e = scepclient(a, name, c, &[]);
        assert!(
            e.out.status.success(),
            "scepclient: {}{}",
            text(&e.out.stdout),
            text(&e.out.stderr)
        );
        let dir = e.cert.parent().unwrap().to_path_buf();
        Device {
            udid: format!("{:08X}-0000-4000-8000-{:012X}", name.len(), fxhash(name)),
            key: e.key,
            cert: e.cert,
            dir,
        }
    }

    /// base64 of a detached CMS signature over `body` (`openssl cms -sign`, no -nodetach).
    pub fn sign(&self, body: &[u8]) -> String {
        sign_with(&self.dir, &self.cert, &self.key, body)
    }

    pub fn send(&self, client: &Client, url: &str, body: Vec<u8>) -> Response {
        let sig = self.sign(&body);
        client
            .put(url)
            .header("Mdm-Signature", sig)
            .body(body)
            .send()
            .unwrap()
    }

    /// A client that presents this device's certificate as its TLS identity (mTLS).
    pub fn mtls_client(&self, a: &Appliance) -> Client {
        let mut pem = std::fs::read(&self.cert).unwrap();
        pem.extend(std::fs::read(&self.key).unwrap());
        reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(a.export_ca()).unwrap()).unwrap()])
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }

    pub fn checkin(&self, a: &Appliance, client: &Client, msg: Value) -> Response {
        self.send(client, &a.url("/mdm/checkin"), plist(&msg))
    }

    pub fn connect(&self, a: &Appliance, client: &Client, msg: Value) -> Response {
        self.send(client, &a.url("/mdm/connect"), plist(&msg))
    }

    pub fn authenticate(&self, a: &Appliance, client: &Client) {
        let r = self.checkin(
            a,
            client,
            json!({"MessageType": "Authenticate", "UDID": self.udid, "Topic": "com.apple.mgmt.test",
                   "DeviceName": "Nurse's iPad", "Model": "iPad13,1", "ModelName": "iPad",
                   "ProductName": "iPad13,1", "SerialNumber": format!("SER{}", &self.udid[..8]),
                   "OSVersion": "18.1", "BuildVersion": "22B83"}),
        );
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    }

    pub fn token_update(&self, a: &Appliance, client: &Client) {
        let r = self.checkin(
            a,
            client,
            json!({"MessageType": "TokenUpdate", "UDID": self.udid, "Topic": "com.apple.mgmt.test",
                   "Token": data(&[0xab; 32]), "PushMagic": "magic-1", "UnlockToken": data(b"unlock")}),
        );
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    }

    /// Answers with `status` (or Idle) and returns the next command, parsed.
    pub fn answer(
        &self,
        a: &Appliance,
        client: &Client,
        status: &str,
        uuid: Option<&str>,
        extra: Value,
    ) -> Option<Value> {
        let mut msg = json!({"UDID": self.udid, "Status": status});
        if let Some(u) = uuid {
            msg["CommandUUID"] = json!(u);
        }
        if let Value::Object(m) = extra {
            for (k, v) in m {
                msg[k] = v;
            }
        }
        let r = self.connect(a, client, msg);
        assert_eq!(r.status(), 200);
        let body = r.bytes().unwrap();
        (!body.is_empty()).then(|| parse_plist(&body))
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) & 0xffff_ffff_ffff
}

fn sign_with(dir: &Path, cert: &Path, key: &Path, body: &[u8]) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let (input, output) = (dir.join(format!("body-{n}")), dir.join(format!("sig-{n}")));
    std::fs::write(&input, body).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-sign", "-binary", "-outform", "DER", "-md", "sha256"])
        .arg("-signer")
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&output)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    data_encoding::BASE64.encode(&std::fs::read(&output).unwrap())
}

pub fn api(
    a: &Appliance,
    client: &Client,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, a.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// `GET /api/v1/devices/{udid}`.
pub fn device_detail(a: &Appliance, client: &Client, token: &str, udid: &str) -> Value {
    let (status, d) = api(
        a,
        client,
        token,
        reqwest::Method::GET,
        &format!("/api/v1/devices/{udid}"),
        None,
    );
    assert_eq!(status, 200, "{d}");
    d
}

pub fn enqueue(a: &Appliance, client: &Client, token: &str, targets: &[&str], command: Value) -> String {
    let (status, body) = api(
        a,
        client,
        token,
        reqwest::Method::POST,
        "/api/v1/commands",
        Some(json!({"targets": targets, "command": command})),
    );
    assert_eq!(status, 201, "{body}");
    body["command_uuid"].as_str().unwrap().to_owned()
}

#[test]
fn full_flow_authenticate_token_update_command_and_result() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let dev = Device::enrol(&a, "ipad-1");
    dev.authenticate(&a, &client);

    // Authenticated but not yet pushable.
    let (s, d) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/devices/{}", dev.udid),
        None,
    );
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["status"], "authenticated");
    assert_eq!(d["pushable"], false);
    assert_eq!(d["device_name"], "Nurse's iPad");

    dev.token_update(&a, &client);
    let d = device_detail(&a, &client, &token, &dev.udid);
    assert_eq!(d["status"], "active");
    assert_eq!(d["pushable"], true);
    assert!(
        d.get("push_magic").is_none() && !d.to_string().contains("magic-1"),
        "no push secrets: {d}"
    );

    // Nothing queued: an Idle gets an empty 200.
    assert_eq!(dev.answer(&a, &client, "Idle", None, json!({})), None);

    let uuid = enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName", "OSVersion", "SerialNumber"]}),
    );
    let cmd = dev
        .answer(&a, &client, "Idle", None, json!({}))
        .expect("the queued command");
    assert_eq!(cmd["CommandUUID"], uuid.as_str());
    assert_eq!(cmd["Command"]["RequestType"], "DeviceInformation");
    assert_eq!(cmd["Command"]["Queries"][1], "OSVersion");

    let next = dev.answer(
        &a,
        &client,
        "Acknowledged",
        Some(&uuid),
        json!({"QueryResponses": {"DeviceName": "Nurse's iPad", "OSVersion": "18.1", "SerialNumber": "F17X"}}),
    );
    assert_eq!(next, None);

    let (s, c) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/commands/{uuid}"),
        None,
    );
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["request_type"], "DeviceInformation");
    let t = &c["targets"][0];
    assert_eq!(t["enrollment_id"], dev.udid.as_str());
    assert_eq!(t["status"], "Acknowledged");
    assert_eq!(t["result"]["QueryResponses"]["OSVersion"], "18.1");
    assert!(t["sent_at"].is_string() && t["answered_at"].is_string());

    // The device record shows the history; the list finds it by serial number.
    let d = device_detail(&a, &client, &token, &dev.udid);
    assert_eq!(d["commands"][0]["command_uuid"], uuid.as_str());
    assert_eq!(d["pending_commands"], 0);
    let serial = d["serial_number"].as_str().unwrap().to_lowercase();
    let (s, list) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/devices?search={serial}"),
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, none) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/devices?search=nomatch",
        None,
    );
    assert_eq!(none["items"].as_array().unwrap().len(), 0);

    // An error result keeps its error chain.
    let uuid = enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "RestartDevice"}),
    );
    let cmd = dev.answer(&a, &client, "Idle", None, json!({})).unwrap();
    assert_eq!(cmd["CommandUUID"], uuid.as_str());
    dev.answer(
        &a,
        &client,
        "Error",
        Some(&uuid),
        json!({"ErrorChain": [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain", "LocalizedDescription": "Not supervised"}]}),
    );
    let (_, c) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/commands/{uuid}"),
        None,
    );
    assert_eq!(c["targets"][0]["status"], "Error");
    assert_eq!(c["targets"][0]["error_chain"][0]["ErrorCode"], 12021);
}

#[test]
fn not_now_is_delivered_again_in_the_next_session() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let dev = Device::enrol(&a, "mac-2");
    dev.authenticate(&a, &client);
    dev.token_update(&a, &client);
    let first = enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "ProfileList"}),
    );
    let second = enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "CertificateList"}),
    );

    let cmd = dev.answer(&a, &client, "Idle", None, json!({})).unwrap();
    assert_eq!(cmd["CommandUUID"], first.as_str());
    // NotNow: the rest of this session skips it…
    let cmd = dev
        .answer(&a, &client, "NotNow", Some(&first), json!({}))
        .unwrap();
    assert_eq!(cmd["CommandUUID"], second.as_str());
    assert_eq!(
        dev.answer(
            &a,
            &client,
            "Acknowledged",
            Some(&second),
            json!({"CertificateList": []})
        ),
        None
    );
    // …and the next session delivers it again.
    let cmd = dev.answer(&a, &client, "Idle", None, json!({})).unwrap();
    assert_eq!(cmd["CommandUUID"], first.as_str());
    assert_eq!(
        dev.answer(
            &a,
            &client,
            "Acknowledged",
            Some(&first),
            json!({"ProfileList": []})
        ),
        None
    );
    let (_, c) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/commands/{first}"),
        None,
    );
    assert_eq!(c["targets"][0]["status"], "Acknowledged");
    assert_eq!(c["targets"][0]["not_now_count"], 1);
    // A second identical inventory query while one is pending is coalesced.
    let one = enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "SecurityInfo"}),
    );
    let (s, two) = api(
        &a,
        &client,
        &token,
        reqwest::Method::POST,
        "/api/v1/commands",
        Some(json!({"targets": [dev.udid], "command": {"RequestType": "SecurityInfo"}})),
    );
    assert_eq!(s, 201);
    assert_eq!(two["queued"], 0);
    assert_eq!(two["coalesced"][0]["command_uuid"], one.as_str());

    // Authenticate again (the device re-enrolled): its queue is cleared.
    dev.authenticate(&a, &client);
    assert_eq!(dev.answer(&a, &client, "Idle", None, json!({})), None);
    let (_, c) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/commands/{one}"),
        None,
    );
    assert_eq!(c["targets"][0]["status"], "Cancelled");
    let d = device_detail(&a, &client, &token, &dev.udid);
    assert_eq!(
        (d["status"].as_str(), d["pushable"].as_bool()),
        (Some("authenticated"), Some(false))
    );
}

#[test]
fn binary_plists_user_channels_and_user_enrollment() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let mac = Device::enrol(&a, "mac-3");
    // Binary plist bodies are read like XML ones.
    let auth = binary_plist(
        &json!({"MessageType": "Authenticate", "UDID": mac.udid, "Topic": "com.apple.mgmt.test",
                                     "DeviceName": "Lab Mac", "Model": "Mac14,2", "ModelName": "MacBook Air"}),
    );
    assert!(auth.starts_with(b"bplist00"));
    let r = mac.send(&client, &a.url("/mdm/checkin"), auth);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    mac.token_update(&a, &client);

    // The macOS user channel: UDID:UserID, its parent the device.
    let r = mac.checkin(
        &a,
        &client,
        json!({"MessageType": "TokenUpdate", "UDID": mac.udid, "UserID": "A1B2C3D4-USER", "UserShortName": "nurse",
               "UserLongName": "Night Nurse", "Topic": "com.apple.mgmt.test", "Token": data(&[1; 32]), "PushMagic": "m2"}),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let user_id = format!("{}:A1B2C3D4-USER", mac.udid);
    let (s, u) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/devices/{user_id}"),
        None,
    );
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["kind"], "user_channel");
    assert_eq!(u["parent_id"], mac.udid.as_str());
    assert_eq!(u["user_short_name"], "nurse");
    // The user channel has its own queue.
    let uuid = enqueue(
        &a,
        &client,
        &token,
        &[&user_id],
        json!({"RequestType": "ProfileList"}),
    );
    assert_eq!(
        mac.answer(&a, &client, "Idle", None, json!({})),
        None,
        "not on the device channel"
    );
    let user_idle = binary_plist(&json!({"UDID": mac.udid, "UserID": "A1B2C3D4-USER", "Status": "Idle"}));
    let r = mac.send(&client, &a.url("/mdm/connect"), user_idle);
    assert_eq!(r.status(), 200);
    assert_eq!(parse_plist(&r.bytes().unwrap())["CommandUUID"], uuid.as_str());

    // User Enrollment (BYOD): identified by EnrollmentID, no UDID.
    let byod = Device::enrol(&a, "byod-4");
    let r = byod.checkin(
        &a,
        &client,
        json!({"MessageType": "Authenticate", "EnrollmentID": "BYOD-ENROLLMENT-4", "Topic": "com.apple.mgmt.test",
               "DeviceName": "Personal iPhone", "Model": "iPhone15,2", "ModelName": "iPhone"}),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let (s, e) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/devices/BYOD-ENROLLMENT-4",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(e["kind"], "user_enrollment");
    let r = byod.checkin(
        &a,
        &client,
        json!({"MessageType": "TokenUpdate", "EnrollmentID": "BYOD-ENROLLMENT-4", "EnrollmentUserID": "EU-9",
               "Topic": "com.apple.mgmt.test", "Token": data(&[2; 32]), "PushMagic": "m3"}),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let (s, e) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/devices/BYOD-ENROLLMENT-4:EU-9",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(e["kind"], "user_enrollment_user");

    // Paging: four enrollments, two per page, then filtered by status.
    let (_, p1) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/devices?limit=2",
        None,
    );
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let next = p1["next"].as_str().unwrap();
    let (_, p2) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/devices?limit=2&after={next}"),
        None,
    );
    let ids: Vec<&str> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["items"].as_array().unwrap())
        .map(|d| d["enrollment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered, no repeats: {ids:?}"
    );
    let (_, active) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/devices?status=active",
        None,
    );
    assert_eq!(
        active["items"].as_array().unwrap().len(),
        3,
        "BYOD's device channel had no TokenUpdate"
    );
    let (s, _) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/devices?status=sleeping",
        None,
    );
    assert_eq!(s, 400);
}

#[test]
fn identities_are_strict() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let alice = Device::enrol(&a, "alice-5");
    let bob = Device::enrol(&a, "bob-6");
    for d in [&alice, &bob] {
        d.authenticate(&a, &client);
        d.token_update(&a, &client);
    }
    let secret = enqueue(
        &a,
        &client,
        &token,
        &[&alice.udid],
        json!({"RequestType": "DeviceLock", "Message": "alice only"}),
    );

    // Bob's certificate on Alice's UDID: refused everywhere, Alice's queue untouched.
    let as_alice = |msg: Value| {
        let body = plist(&msg);
        client
            .put(a.url("/mdm/connect"))
            .header("Mdm-Signature", bob.sign(&body))
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(
        as_alice(json!({"UDID": alice.udid, "Status": "Idle"})).status(),
        401
    );
    assert_eq!(
        as_alice(json!({"UDID": alice.udid, "Status": "Acknowledged", "CommandUUID": secret})).status(),
        401
    );
    let body = plist(&json!({"MessageType": "Authenticate", "UDID": alice.udid, "Topic": "t"}));
    let r = client
        .put(a.url("/mdm/checkin"))
        .header("Mdm-Signature", bob.sign(&body))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bob cannot answer Alice's command through his own enrollment either.
    assert_eq!(
        bob.answer(&a, &client, "Acknowledged", Some(&secret), json!({})),
        None
    );
    let (_, c) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!("/api/v1/commands/{secret}"),
        None,
    );
    assert_eq!(c["targets"][0]["status"], "Queued", "{c}");
    // Each refusal is in the audit log, naming the enrollment and both certificates.
    let (_, log) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        &format!(
            "/api/v1/audit?action=device.identity_mismatch&target={}",
            alice.udid
        ),
        None,
    );
    let refused = log["items"].as_array().unwrap();
    assert!(refused.len() >= 2, "{log}");
    assert!(
        refused.iter().all(|r| r["outcome"] == "denied"
            && r["actor"]["id"] == bob.udid.as_str()
            && r["reason"]
                .as_str()
                .unwrap()
                .starts_with("presented certificate ")),
        "{log}"
    );
    // Both identities were issued on the record.
    let (_, issued) = api(
        &a,
        &client,
        &token,
        reqwest::Method::GET,
        "/api/v1/audit?action=certificate.issue",
        None,
    );
    assert_eq!(issued["items"].as_array().unwrap().len(), 2, "{issued}");
    assert_eq!(
        alice.answer(&a, &client, "Idle", None, json!({})).unwrap()["CommandUUID"],
        secret.as_str()
    );

    // A valid signature over another body: refused.
    let signed = plist(&json!({"UDID": alice.udid, "Status": "Idle"}));
    let tampered = plist(&json!({"UDID": bob.udid, "Status": "Idle"}));
    let r = client
        .put(a.url("/mdm/connect"))
        .header("Mdm-Signature", alice.sign(&signed))
        .body(tampered)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // No identity, or garbage in the header: refused.
    let body = plist(&json!({"UDID": alice.udid, "Status": "Idle"}));
    assert_eq!(
        client
            .put(a.url("/mdm/connect"))
            .body(body.clone())
            .send()
            .unwrap()
            .status(),
        401
    );
    for junk in ["", "not base64!", "AAAA", &"A".repeat(40_000)] {
        let r = client
            .put(a.url("/mdm/connect"))
            .header("Mdm-Signature", junk)
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{junk:.20}");
    }
    // A certificate from another CA (self-signed) is refused even with a valid signature.
    let dir = a.tmp.path().join("rogue");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=rogue",
            "-days",
            "1",
        ])
        .args(["-keyout", "k.pem", "-out", "c.pem"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let sig = sign_with(&dir, &dir.join("c.pem"), &dir.join("k.pem"), &body);
    let r = client
        .put(a.url("/mdm/connect"))
        .header("Mdm-Signature", sig)
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nor is one made elsewhere with Alice's serial number and name: the registry holds the
    // certificate issued under that serial, and this is not it.
    let openssl_out = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let alice_cert = alice.cert.to_str().unwrap();
    let serial = openssl_out(&["x509", "-in", alice_cert, "-noout", "-serial"]);
    let subject = openssl_out(&[
        "x509", "-in", alice_cert, "-noout", "-subject", "-nameopt", "compat",
    ]);
    let (serial, subject) = (
        serial.trim().trim_start_matches("serial="),
        subject.trim().trim_start_matches("subject="),
    );
    openssl_out(&[
        "req",
        "-x509",
        "-key",
        "k.pem",
        "-subj",
        subject,
        "-set_serial",
        &format!("0x{serial}"),
        "-days",
        "1",
        "-out",
        "twin.pem",
    ]);
    assert_eq!(
        openssl_out(&["x509", "-in", "twin.pem", "-noout", "-serial"]).trim(),
        format!("serial={serial}")
    );
    let refusals = || a.stderr().matches("was not issued by this appliance").count();
    let before = refusals();
    let r = client
        .put(a.url("/mdm/connect"))
        .header(
            "Mdm-Signature",
            sign_with(&dir, &dir.join("twin.pem"), &dir.join("k.pem"), &body),
        )
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(refusals(), before + 1, "{}", a.stderr());
    // The command channel reads a small body before it knows the certificate is ours (it is
    // then compared with the enrollment's), a large one only after: the twin's small junk is
    // a bad request, its large junk is refused unread.
    let junk = |len: usize| {
        let junk = vec![b'x'; len];
        client
            .put(a.url("/mdm/connect"))
            .header(
                "Mdm-Signature",
                sign_with(&dir, &dir.join("twin.pem"), &dir.join("k.pem"), &junk),
            )
            .body(junk)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(junk(1024), 400);
    assert_eq!(junk(4 * 1024 + 1), 401);
    assert_eq!(refusals(), before + 2, "{}", a.stderr());

    // mTLS: Alice's certificate as the TLS client identity, no header.
    let mtls = alice.mtls_client(&a);
    let r = mtls.put(a.url("/mdm/connect")).body(body).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(parse_plist(&r.bytes().unwrap())["CommandUUID"], secret.as_str());
    let as_bob = plist(&json!({"UDID": bob.udid, "Status": "Idle"}));
    assert_eq!(
        mtls.put(a.url("/mdm/connect"))
            .body(as_bob)
            .send()
            .unwrap()
            .status(),
        401
    );
    drop(mtls);

    // A resumed TLS session (stateless ticket) carries Alice's certificate: a reconnection
    // presents no certificate and is still Alice — OpenSSL's client as the oracle of what
    // was resumed.
    let ca = a.export_ca();
    let session = a.tmp.path().join("alice-session.pem");
    let idle = plist(&json!({"UDID": alice.udid, "Status": "Idle"}));
    let first = s_client_put(
        &a,
        &ca,
        &[
            "-cert",
            path(&alice.cert),
            "-key",
            path(&alice.key),
            "-sess_out",
            path(&session),
        ],
        &idle,
    );
    assert!(
        first.contains("\nNew, TLSv1.3") && first.contains("HTTP/1.1 200"),
        "{first}"
    );
    let resumed = s_client_put(&a, &ca, &["-sess_in", path(&session)], &idle);
    assert!(resumed.contains("\nReused, TLSv1.3"), "not resumed: {resumed}");
    assert!(resumed.contains("HTTP/1.1 200"), "{resumed}");
    let metrics = client.get(a.url("/metrics")).send().unwrap().text().unwrap();
    let resumptions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("citadel_tls_handshakes_total{kind=\"resumed\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resumed handshake count in /metrics:\n{metrics}"));
    assert!(resumptions >= 1, "{metrics}");
    let fresh = s_client_put(&a, &ca, &[], &idle);
    assert!(fresh.contains("HTTP/1.1 401"), "{fresh}");

    // CheckOut ends the enrollment and revokes its certificate.
    let r = alice.checkin(
        &a,
        &client,
        json!({"MessageType": "CheckOut", "UDID": alice.udid, "Topic": "t"}),
    );
    assert_eq!(r.status(), 200);
    let d = device_detail(&a, &client, &token, &alice.udid);
    assert_eq!(d["status"], "unenrolled");
    let serial = d["identity_certificate_serial"].as_str().unwrap().to_owned();
    let revoked = certificates(&a)
        .into_iter()
        .find(|c| c["serial"] == serial.as_str())
        .unwrap();
    assert!(revoked["status"].to_string().contains("revoked"), "{revoked}");
    assert_eq!(
        alice
            .connect(&a, &client, json!({"UDID": alice.udid, "Status": "Idle"}))
            .status(),
        401
    );
    // Revocation reaches resumed sessions too.
    let resumed = s_client_put(&a, &ca, &["-sess_in", path(&session)], &idle);
    assert!(
        resumed.contains("\nReused, TLSv1.3") && resumed.contains("HTTP/1.1 401"),
        "{resumed}"
    );
}

/// Revoking a device's certificate (`citadel ca revoke`, through the running appliance) cuts
/// it off the command channel at its next request, signed or over mTLS, while its
/// enrollment still names that certificate; its neighbour is untouched.
#[test]
fn a_revoked_certificate_is_refused_at_the_next_request() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let carol = Device::enrol(&a, "carol-8");
    let dave = Device::enrol(&a, "dave-9");
    for d in [&carol, &dave] {
        d.authenticate(&a, &client);
        d.token_update(&a, &client);
    }
    let idle = |d: &Device| {
        d.connect(&a, &client, json!({"UDID": d.udid, "Status": "Idle"}))
            .status()
    };
    let mtls = carol.mtls_client(&a);
    let mtls_idle = || {
        mtls.put(a.url("/mdm/connect"))
            .body(plist(&json!({"UDID": carol.udid, "Status": "Idle"})))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(idle(&carol), 200);
    assert_eq!(mtls_idle(), 200);

    let d = device_detail(&a, &client, &token, &carol.udid);
    let serial = d["identity_certificate_serial"].as_str().unwrap().to_owned();
    let out = run(a.cmd().args(["ca", "revoke", &serial]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(idle(&carol), 401);
    assert_eq!(
        mtls_idle(),
        401,
        "the TLS session is still open; its certificate no longer counts"
    );
    let result = carol.connect(
        &a,
        &client,
        json!({"UDID": carol.udid, "Status": "Acknowledged", "CommandUUID": "00000000-0000-0000-0000-000000000000"}),
    );
    assert_eq!(result.status(), 401);
    assert!(
        a.stderr().contains("the certificate has been revoked"),
        "{}",
        a.stderr()
    );
    let d = device_detail(&a, &client, &token, &carol.udid);
    assert_eq!(
        d["identity_certificate_serial"],
        serial.as_str(),
        "the enrollment still names it"
    );
    assert_eq!(idle(&dave), 200);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `PUT /mdm/connect` over `openssl s_client` (HTTP/1.1, one request); returns what it printed:
/// the handshake summary ("New" or "Reused") and the HTTP response.
fn s_client_put(a: &Appliance, ca: &Path, extra: &[&str], body: &[u8]) -> String {
    let mut request = format!(
        "PUT /mdm/connect HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &a.listen(),
            "-servername",
            "localhost",
            "-tls1_3",
            "-ign_eof",
        ])
        .args(["-CAfile", path(ca), "-verify_return_error"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&request).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bad_messages_get_clear_errors() {
    let a = Appliance::start();
    let client = a.client();
    let dev = Device::enrol(&a, "dev-7");
    dev.authenticate(&a, &client);
    let send_raw = |path: &str, body: Vec<u8>| dev.send(&client, &a.url(path), body).status().as_u16();
    assert_eq!(send_raw("/mdm/checkin", b"<plist><dict><key>oops".to_vec()), 400);
    assert_eq!(send_raw("/mdm/connect", b"\x00\x01binary junk".to_vec()), 400);
    assert_eq!(send_raw("/mdm/checkin", plist(&json!(["not", "a", "dict"]))), 400);
    let r = dev.checkin(&a, &client, json!({"MessageType": "Launch", "UDID": dev.udid}));
    assert_eq!(r.status(), 400);
    let r = dev.checkin(&a, &client, json!({"UDID": dev.udid}));
    assert_eq!(r.status(), 400);
    let r = dev.connect(&a, &client, json!({"UDID": dev.udid, "Status": "Acknowledged"}));
    assert_eq!(r.status(), 400, "a result needs its CommandUUID");
    let r = dev.connect(&a, &client, json!({"UDID": dev.udid, "Status": "Sleepy"}));
    assert_eq!(r.status(), 400);
    // Features that are off answer 410.
    let r = dev.checkin(
        &a,
        &client,
        json!({"MessageType": "UserAuthenticate", "UDID": dev.udid, "UserID": "U1"}),
    );
    assert_eq!(r.status(), 410);
    for kind in ["DeclarativeManagement", "GetToken", "ReturnToService"] {
        let r = dev.checkin(&a, &client, json!({"MessageType": kind, "UDID": dev.udid}));
        assert_eq!(r.status(), 410, "{kind}");
    }
    // Bootstrap token escrow round trip.
    let r = dev.checkin(&a, &client, json!({"MessageType": "SetBootstrapToken", "UDID": dev.udid, "BootstrapToken": data(b"bootstrap-secret")}));
    assert_eq!(r.status(), 200);
    let r = dev.checkin(
        &a,
        &client,
        json!({"MessageType": "GetBootstrapToken", "UDID": dev.udid}),
    );
    assert_eq!(r.status(), 200);
    let got = parse_plist(&r.bytes().unwrap());
    assert_eq!(
        got["BootstrapToken"],
        data_encoding::BASE64.encode(b"bootstrap-secret")
    );
    // Without an identity nothing is parsed, small body (an Idle, answered on the HTTP
    // worker) or large (a result, answered on the blocking pool).
    let unsigned = |body: Vec<u8>| {
        client
            .put(a.url("/mdm/connect"))
            .body(body)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(unsigned(b"\x00\x01binary junk".to_vec()), 401);
    assert_eq!(unsigned(plist(&json!({"UDID": dev.udid, "Status": "Idle"}))), 401);
    assert_eq!(unsigned(vec![b'x'; 64 * 1024]), 401);
    let padded =
        json!({"UDID": dev.udid, "Status": "Acknowledged", "CommandUUID": "c", "Pad": "x".repeat(4096)});
    assert_eq!(unsigned(plist(&padded)), 401);
    // A binary plist of 60 arrays, each holding the next twice: ~250 bytes that would unfold
    // into 2^60 values. Signed by the device, refused on both channels, nothing built.
    let mut bomb = b"bplist00".to_vec();
    let offsets: Vec<u8> = (0..=60u8).map(|i| 8 + 3 * i).collect();
    for i in 0..60u8 {
        bomb.extend_from_slice(&[0xA2, i + 1, i + 1]);
    }
    bomb.extend_from_slice(&[0x10, 0x01]);
    let table = bomb.len() as u64;
    bomb.extend_from_slice(&offsets);
    bomb.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 1]);
    for field in [offsets.len() as u64, 0, table] {
        bomb.extend_from_slice(&field.to_be_bytes());
    }
    for path in ["/mdm/connect", "/mdm/checkin"] {
        let r = dev.send(&client, &a.url(path), bomb.clone());
        assert_eq!(r.status(), 400, "{path}");
        let why = r.text().unwrap();
        assert!(why.contains("unfolds far beyond its size"), "{path}: {why}");
    }
    // Huge bodies are refused before they are read in full.
    let huge = vec![b'x'; 5 * 1024 * 1024];
    let r = client.put(a.url("/mdm/connect")).body(huge).send().unwrap();
    assert_eq!(r.status(), 413);
    // The server is still fine.
    assert_eq!(dev.answer(&a, &client, "Idle", None, json!({})), None);
}

#[test]
fn admin_api_validates_commands_against_apples_schema() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let dev = Device::enrol(&a, "dev-8");
    dev.authenticate(&a, &client);
    dev.token_update(&a, &client);
    let post = |body: Value| {
        api(
            &a,
            &client,
            &token,
            reqwest::Method::POST,
            "/api/v1/commands",
            Some(body),
        )
    };
    let (s, e) = post(json!({"targets": [dev.udid], "command": {"RequestType": "MakeCoffee"}}));
    assert_eq!(s, 400, "{e}");
    let (s, e) = post(json!({"targets": [dev.udid], "command": {"RequestType": "RemoveProfile"}}));
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("Identifier"), "{e}");
    let (s, e) =
        post(json!({"targets": [dev.udid], "command": {"RequestType": "DeviceLock", "Mesage": "typo"}}));
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("Mesage"), "{e}");
    let (s, _) = post(json!({"targets": ["NO-SUCH-DEVICE"], "command": {"RequestType": "DeviceLock"}}));
    assert_eq!(s, 400);
    let (s, _) = post(json!({"targets": [], "command": {"RequestType": "DeviceLock"}}));
    assert_eq!(s, 400);
    // Without a token, with a wrong one, with a revoked one: 401.
    let r = client
        .post(a.url("/api/v1/commands"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, _) = api(
        &a,
        &client,
        "citadel_wrong",
        reqwest::Method::GET,
        "/api/v1/devices",
        None,
    );
    assert_eq!(s, 401);
    // A raw plist command body, with data (InstallProfile's Payload).
    let body = plist(&json!({"RequestType": "InstallProfile", "Payload": data(b"<plist>profile</plist>")}));
    let r = client
        .post(a.url(&format!("/api/v1/commands?targets={}", dev.udid)))
        .bearer_auth(&token)
        .header("Content-Type", "application/x-apple-plist")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let uuid = r.json::<Value>().unwrap()["command_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let cmd = dev.answer(&a, &client, "Idle", None, json!({})).unwrap();
    assert_eq!(cmd["CommandUUID"], uuid.as_str());
    assert_eq!(
        cmd["Command"]["Payload"],
        data_encoding::BASE64.encode(b"<plist>profile</plist>")
    );
    assert_eq!(
        dev.answer(&a, &client, "Acknowledged", Some(&uuid), json!({})),
        None
    );

    // A UUID chosen by the caller (a script that retries): used as given, once.
    let chosen = "5e1f0c2a-3b4d-4c6e-8f10-2a3b4c5d6e7f";
    let (s, created) = post(
        json!({"targets": [dev.udid], "command": {"RequestType": "DeviceLock"},
                                   "command_uuid": chosen}),
    );
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["command_uuid"], chosen.to_uppercase());
    let (s, e) = post(
        json!({"targets": [dev.udid], "command": {"RequestType": "DeviceLock"},
                             "command_uuid": chosen.to_uppercase()}),
    );
    assert_eq!(s, 409, "{e}");
    let (s, e) = post(
        json!({"targets": [dev.udid], "command": {"RequestType": "DeviceLock"},
                             "command_uuid": "lock-1"}),
    );
    assert_eq!(s, 400, "{e}");
    // …also as a whole command plist, CommandUUID beside Command, as Apple writes commands.
    let plisted = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d".to_uppercase();
    let whole = plist(&json!({"Command": {"RequestType": "SecurityInfo"}, "CommandUUID": plisted}));
    let send_whole = || {
        client
            .post(a.url(&format!("/api/v1/commands?targets={}", dev.udid)))
            .bearer_auth(&token)
            .header("Content-Type", "application/x-apple-plist")
            .body(whole.clone())
            .send()
            .unwrap()
    };
    let r = send_whole();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().unwrap()["command_uuid"], plisted.as_str());
    assert_eq!(send_whole().status(), 409);
    // The device receives each once, under the UUID chosen.
    let cmd = dev.answer(&a, &client, "Idle", None, json!({})).unwrap();
    assert_eq!(cmd["CommandUUID"], chosen.to_uppercase());
    let cmd = dev
        .answer(
            &a,
            &client,
            "Acknowledged",
            Some(&chosen.to_uppercase()),
            json!({}),
        )
        .unwrap();
    assert_eq!(cmd["CommandUUID"], plisted.as_str());
    assert_eq!(
        dev.answer(
            &a,
            &client,
            "Acknowledged",
            Some(&plisted),
            json!({"SecurityInfo": {}})
        ),
        None
    );

    let list = run(a.cmd().args(["api-token", "list"]));
    assert!(text(&list.stdout).contains("tests"), "{}", text(&list.stdout));
    let id = text(&list.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(run(a.cmd().args(["api-token", "revoke", &id])).status.success());
    let (s, _) = api(&a, &client, &token, reqwest::Method::GET, "/api/v1/devices", None);
    assert_eq!(s, 401);
}

pub fn verify_profile(a: &Appliance, signed: &[u8]) -> Value {
    let dir = a.tmp.path().join(format!("profile-{}", signed.len()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.der"), signed).unwrap();
    let out = Command::new("openssl")
        .args([
            "cms", "-verify", "-inform", "DER", "-in", "p.der", "-purpose", "any", "-out", "p.xml", "-CAfile",
        ])
        .arg(a.export_ca())
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new("openssl")
        .args([
            "smime",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "p.der",
            "-purpose",
            "any",
            "-out",
            "/dev/null",
            "-CAfile",
        ])
        .arg(a.export_ca())
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    parse_plist(&std::fs::read(dir.join("p.xml")).unwrap())
}

#[test]
fn enrollment_profiles_and_one_time_links() {
    let mut a = Appliance::new();
    std::fs::create_dir_all(a.tmp.path()).unwrap();
    let cfg = a.tmp.path().join("citadel.toml");
    std::fs::write(
        &cfg,
        "[apple]\ntopic = \"com.apple.mgmt.External.1234\"\n[mdm]\norganization = \"County Hospital\"\n",
    )
    .unwrap();
    a.spawn(&["--config", cfg.to_str().unwrap()]);
    a.wait_healthy();
    let client = a.client();
    let token = api_token(&a);
    // Without admin credentials: no profile.
    assert_eq!(
        client
            .get(a.url("/api/v1/enrollment/profile"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let r = client
        .get(a.url("/api/v1/enrollment/profile"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-apple-aspen-config");
    // The configured topic goes into the profile, but without a push certificate devices
    // still cannot be woken, and the API says so.
    assert!(
        r.headers()["warning"]
            .to_str()
            .unwrap()
            .contains("cannot be woken")
    );
    let health: Value = client.get(a.url("/healthz")).send().unwrap().json().unwrap();
    assert_eq!(health["push"]["topic_source"], "config");
    assert_eq!(health["push"]["topic"], "com.apple.mgmt.External.1234");
    let profile = verify_profile(&a, &r.bytes().unwrap());
    assert_eq!(profile["PayloadOrganization"], "County Hospital");
    let payloads = profile["PayloadContent"].as_array().unwrap();
    let by_type = |t: &str| payloads.iter().find(|p| p["PayloadType"] == t).unwrap().clone();
    let (root, scep, mdm) = (
        by_type("com.apple.security.root"),
        by_type("com.apple.security.scep"),
        by_type("com.apple.mdm"),
    );
    let root_der = data_encoding::BASE64
        .decode(root["PayloadContent"].as_str().unwrap().as_bytes())
        .unwrap();
    let ca_der = client.get(a.url("/ca.crt")).send().unwrap().bytes().unwrap();
    assert_eq!(root_der, ca_der.to_vec());
    assert_eq!(mdm["IdentityCertificateUUID"], scep["PayloadUUID"]);
    assert_eq!(mdm["Topic"], "com.apple.mgmt.External.1234");
    assert_eq!(mdm["SignMessage"], true);
    assert_eq!(mdm["AccessRights"], 8191);
    assert_eq!(mdm["CheckOutWhenRemoved"], true);
    assert!(mdm["ServerURL"].as_str().unwrap().ends_with("/mdm/connect"));
    assert!(mdm["CheckInURL"].as_str().unwrap().ends_with("/mdm/checkin"));
    assert!(
        mdm["ServerCapabilities"]
            .to_string()
            .contains("com.apple.mdm.per-user-connections")
    );
    let sc = &scep["PayloadContent"];
    assert_eq!(sc["Keysize"], 2048);
    assert_eq!(sc["Key Usage"], 5);
    assert!(sc["URL"].as_str().unwrap().ends_with("/scep"));
    // The challenge in the profile enrols exactly one device.
    let c = sc["Challenge"].as_str().unwrap();
    let first = scepclient(&a, "profile-dev", c, &[]);
    assert!(first.out.status.success(), "{}", text(&first.out.stdout));
    assert!(!scepclient(&a, "profile-dev-2", c, &[]).out.status.success());

    // A one-time link: works once, then 410.
    let (s, link) = api(
        &a,
        &client,
        &token,
        reqwest::Method::POST,
        "/api/v1/enrollment/links",
        Some(json!({})),
    );
    assert_eq!(s, 201, "{link}");
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/enroll/").unwrap()..];
    let r = client.get(a.url(path)).send().unwrap();
    assert_eq!(r.status(), 200);
    verify_profile(&a, &r.bytes().unwrap());
    assert_eq!(client.get(a.url(path)).send().unwrap().status(), 410);
    assert_eq!(
        client.get(a.url("/enroll/nosuchlink")).send().unwrap().status(),
        404
    );
}

#[test]
fn without_a_topic_the_api_warns_that_devices_cannot_be_woken() {
    let a = Appliance::start();
    let client = a.client();
    let token = api_token(&a);
    let r = client
        .get(a.url("/api/v1/enrollment/profile"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["warning"]
            .to_str()
            .unwrap()
            .contains("cannot be woken")
    );
    let (_, link) = api(
        &a,
        &client,
        &token,
        reqwest::Method::POST,
        "/api/v1/enrollment/links",
        None,
    );
    assert!(
        link["warnings"][0].as_str().unwrap().contains("cannot be woken"),
        "{link}"
    );
    let health: Value = client.get(a.url("/healthz")).send().unwrap().json().unwrap();
    assert!(
        health["warnings"][0]
            .as_str()
            .unwrap()
            .contains("cannot be woken"),
        "{health}"
    );
}

/// A webhook receiver in Python that checks the HMAC itself and records what it got.
const RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, sys
secret, out = sys.argv[1].encode(), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Citadel-Signature", ""))
        with open(out, "a") as f:
            f.write(json.dumps({"valid": ok, "event": json.loads(body)}) + "\n")
        self.send_response(200 if ok else 401)
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

#[test]
fn webhook_events_are_signed() {
    let mut a = Appliance::new();
    std::fs::create_dir_all(a.tmp.path()).unwrap();
    let events = a.tmp.path().join("events.jsonl");
    let mut receiver = Command::new("python3")
        .args(["-c", RECEIVER, "hook-secret-123", events.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.stdout.as_mut().unwrap()),
        &mut port,
    )
    .unwrap();
    let cfg = a.tmp.path().join("citadel.toml");
    std::fs::write(
        &cfg,
        format!(
            "[webhook]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"hook-secret-123\"\n",
            port.trim()
        ),
    )
    .unwrap();
    a.spawn(&["--config", cfg.to_str().unwrap()]);
    a.wait_healthy();
    let client = a.client();
    let token = api_token(&a);
    let dev = Device::enrol(&a, "hooked-9");
    dev.authenticate(&a, &client);
    dev.token_update(&a, &client);
    let uuid = enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "SecurityInfo"}),
    );
    dev.answer(&a, &client, "Idle", None, json!({}));
    dev.answer(
        &a,
        &client,
        "Acknowledged",
        Some(&uuid),
        json!({"SecurityInfo": {"PasscodePresent": true}}),
    );
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    let got: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter().all(|e| e["valid"] == true),
        "HMAC checked by Python: {got:?}"
    );
    assert_eq!(got[0]["event"]["kind"], "Authenticate");
    assert_eq!(got[1]["event"]["kind"], "TokenUpdate");
    assert_eq!(got[2]["event"]["event"], "command_result");
    assert_eq!(got[2]["event"]["command_uuid"], uuid.as_str());
    assert_eq!(got[2]["event"]["result"]["SecurityInfo"]["PasscodePresent"], true);
}
