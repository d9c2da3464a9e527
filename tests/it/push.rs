//! APNs push against an in-test HTTP/2 server playing Apple (it requires and records the
//! client certificate), with push certificates made by `openssl` under a throwaway "Apple" CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use citadel::sim::apns::{self, MockApns, MockApnsConfig, MockResponse};
use citadel::sim::connect_proxy::ConnectProxy;
use citadel_certs::{CertificateAuthority, ServerIdentity};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Appliance, run, text};
use crate::mdm::{Device, api, api_token, data, enqueue, verify_profile};

const TOPIC: &str = "com.apple.mgmt.External.5e2c1d3a-citadel-test";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
}

/// A throwaway "Apple" CA that signs push certificates (what Apple's portal does).
pub struct AppleCa {
    pub dir: PathBuf,
}

impl AppleCa {
    /// Creates the CA in `<parent>/apple`.
    pub fn create(parent: &Path) -> AppleCa {
        let dir = parent.join("apple");
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=Test Apple WWDR",
                "-days",
                "3",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        AppleCa { dir }
    }

    /// Signs `csr` (PEM file) as Apple would for `topic`; returns the certificate file.
    pub fn issue(&self, csr: &Path, topic: &str, name: &str) -> PathBuf {
        std::fs::write(
            self.dir.join("ext.cnf"),
            "[ext]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
        )
        .unwrap();
        let out = self.dir.join(format!("{name}.pem"));
        let subject = format!("/UID={topic}/CN=APSP:{topic}/C=US");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "30",
                "-subj",
                &subject,
                "-extfile",
                "ext.cnf",
                "-extensions",
                "ext",
                "-out",
                out.to_str().unwrap(),
            ],
        );
        out
    }

    /// A key and a certificate for `topic`, made without Citadel (as a renewal elsewhere).
    pub(crate) fn issue_with_key(&self, topic: &str, name: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=renewal",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                csr.to_str().unwrap(),
            ],
        );
        (self.issue(&csr, topic, name), key)
    }
}

/// The Apple CA and the mock APNs that trusts it.
struct Apple {
    ca: AppleCa,
    runtime: tokio::runtime::Runtime,
    mock: MockApns,
    /// Trust anchor for the mock's TLS certificate (what `apns.ca_file` points at).
    server_ca: PathBuf,
}

impl Apple {
    fn start(dir: &Path) -> Apple {
        let ca = AppleCa::create(dir);
        let dir = ca.dir.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let tls_ca = CertificateAuthority::generate("mock-apns", now).unwrap();
        let tls = tls_ca
            .issue_server_certificate(&ServerIdentity::new(["localhost"]).unwrap(), now)
            .unwrap();
        let server_ca = dir.join("server-ca.pem");
        std::fs::write(&server_ca, tls_ca.certificate_pem()).unwrap();
        let mut config = MockApnsConfig::new("127.0.0.1:0".parse().unwrap(), tls.cert_pem, tls.key_pem);
        config.client_ca_pem = Some(std::fs::read_to_string(dir.join("ca.pem")).unwrap());
        let mock = runtime.block_on(apns::start(config)).unwrap();
        Apple {
            ca,
            runtime,
            mock,
            server_ca,
        }
    }

    fn wait_for(&self, n: usize) {
        assert!(
            self.runtime
                .block_on(self.mock.wait_for_count(n, Duration::from_secs(20))),
            "expected {n} pushes, got {}",
            self.mock.count()
        );
    }

    /// No push arrives within a while.
    fn quiet(&self, n: usize) {
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(self.mock.count(), n, "no further push expected");
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[apns]\nbase_url = \"{}\"\nca_file = \"{}\"\nsweep_after_hours = 0\n{extra}",
            self.mock.base_url(),
            self.server_ca.display()
        )
    }
}

fn start_with(a: &mut Appliance, config: &str) {
    std::fs::create_dir_all(a.tmp.path()).unwrap();
    let file = a.tmp.path().join("citadel.toml");
    std::fs::write(&file, config).unwrap();
    a.spawn(&["--config", file.to_str().unwrap()]);
    a.wait_healthy();
}

fn metric(a: &Appliance, client: &reqwest::blocking::Client, line_start: &str) -> u64 {
    let body = client.get(a.url("/metrics")).send().unwrap().text().unwrap();
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in {body}"))
}

fn last_push(a: &Appliance, client: &reqwest::blocking::Client, token: &str, id: &str, want: &str) -> Value {
    for _ in 0..100 {
        let (_, d) = api(
            a,
            client,
            token,
            Method::GET,
            &format!("/api/v1/devices/{id}"),
            None,
        );
        if d["last_push"]["last_outcome"] == want {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("last push of {id} never became {want}");
}

#[test]
fn push_certificate_lifecycle_and_wakeups() {
    let mut a = Appliance::new();
    let apple = Apple::start(a.tmp.path());
    start_with(&mut a, &apple.config(""));
    let client = a.client();
    let token = api_token(&a);

    // Before any certificate: the API and /healthz say devices cannot be woken.
    let (s, status) = api(&a, &client, &token, Method::GET, "/api/v1/push-cert", None);
    assert_eq!(s, 200);
    assert_eq!(status["configured"], false);
    assert!(
        status["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no push certificate")
    );

    // The administrator's flow: CSR from Citadel, certificate from "Apple", import by CLI while
    // the server runs (the pending key is used).
    let csr = a.tmp.path().join("push.csr");
    let out = run(a
        .cmd()
        .args(["push-cert", "csr", "--email", "it@hospital.example", "--out"])
        .arg(&csr));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read_to_string(&csr)
            .unwrap()
            .contains("BEGIN CERTIFICATE REQUEST")
    );
    let first = apple.ca.issue(&csr, TOPIC, "push1");
    let out = run(a.cmd().args(["push-cert", "import", "--cert"]).arg(&first));
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !a.data_dir.join("pki/push-request.key").exists(),
        "the pending key became the push key"
    );
    let out = run(a.cmd().args(["push-cert", "show"]));
    assert!(text(&out.stdout).contains(TOPIC), "{}", text(&out.stdout));

    let (_, status) = api(&a, &client, &token, Method::GET, "/api/v1/push-cert", None);
    assert_eq!(status["configured"], true, "{status}");
    assert_eq!(status["topic"], TOPIC);
    assert_eq!(status["topic_source"], "certificate");
    assert!(status["subject"].as_str().unwrap().contains("APSP"));
    assert!(
        (28..=30).contains(&status["days_left"].as_i64().unwrap()),
        "{status}"
    );
    assert!(
        status["warnings"][0].as_str().unwrap().contains("expires in"),
        "30-day warning: {status}"
    );
    let health: Value = client.get(a.url("/healthz")).send().unwrap().json().unwrap();
    assert!(
        health["warnings"][0].as_str().unwrap().contains("expires in"),
        "{health}"
    );
    // Profiles now carry the imported topic and no warning.
    let r = client
        .get(a.url("/api/v1/enrollment/profile"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert!(r.headers().get("warning").is_none());
    let profile = verify_profile(&a, &r.bytes().unwrap());
    let mdm_payload = profile["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["PayloadType"] == "com.apple.mdm")
        .unwrap()
        .clone();
    assert_eq!(mdm_payload["Topic"], TOPIC);

    // A device enrolls; a queued command wakes it.
    let dev = Device::enrol(&a, "pushed-1");
    dev.authenticate(&a, &client);
    dev.token_update(&a, &client);
    enqueue(
        &a,
        &client,
        &token,
        &[&dev.udid],
        json!({"RequestType": "ProfileList"}),
    );
    if !apple
        .runtime
        .block_on(apple.mock.wait_for_count(1, Duration::from_secs(10)))
    {
        let m = client.get(a.url("/metrics")).send().unwrap().text().unwrap();
        panic!(
            "no push after enqueue; metrics:\n{m}\nserver log:\n{}",
            a.stderr()
        );
    }
    let p = &apple.mock.requests()[0];
    assert_eq!(p.token, hex::encode([0xab; 32]));
    assert_eq!(p.magic.as_deref(), Some("magic-1"));
    assert_eq!(p.topic.as_deref(), Some(TOPIC));
    assert_eq!(p.push_type.as_deref(), Some("mdm"));
    assert_eq!(p.priority.as_deref(), Some("10"));
    let expiration: i64 = p.expiration.as_deref().unwrap().parse().unwrap();
    assert!(expiration > time::OffsetDateTime::now_utc().unix_timestamp());
    assert_eq!(
        p.client_cert_uid.as_deref(),
        Some(TOPIC),
        "the push certificate is the client identity"
    );
    let first_cert = p.client_cert_sha256.clone();
    last_push(&a, &client, &token, &dev.udid, "delivered");

    // An explicit push.
    let (s, _) = api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    assert_eq!(s, 202);
    apple.wait_for(2);

    // Apple rejects the certificate: one attempt, then the circuit stays open.
    apple
        .mock
        .set_default_response(MockResponse::error(403, "BadCertificate"));
    api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    apple.wait_for(3);
    last_push(&a, &client, &token, &dev.udid, "certificate_rejected");
    api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    apple.quiet(3);
    assert_eq!(
        metric(
            &a,
            &client,
            "citadel_push_total{outcome=\"certificate_rejected\"}"
        ),
        1
    );
    assert!(metric(&a, &client, "citadel_push_total{outcome=\"circuit_open\"}") >= 1);

    // A renewed certificate (same topic, its own key) goes into service without a restart and
    // closes the circuit.
    apple.mock.reset_responses();
    let (renewed, renewed_key) = apple.ca.issue_with_key(TOPIC, "push2");
    let out = run(a
        .cmd()
        .args(["push-cert", "import", "--cert"])
        .arg(&renewed)
        .arg("--key")
        .arg(&renewed_key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    apple.wait_for(4);
    let renewed_cert = apple.mock.requests()[3].client_cert_sha256.clone();
    assert_ne!(renewed_cert, first_cert, "the renewed certificate is in use");

    // A certificate for another topic would strand every device: refused.
    let (other, other_key) = apple
        .ca
        .issue_with_key("com.apple.mgmt.External.someone-else", "push3");
    let out = run(a
        .cmd()
        .args(["push-cert", "import", "--cert"])
        .arg(&other)
        .arg("--key")
        .arg(&other_key));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("strand"), "{}", text(&out.stderr));
    let (s, e) = api(
        &a,
        &client,
        &token,
        Method::PUT,
        "/api/v1/push-cert",
        Some(json!({"cert_pem": std::fs::read_to_string(&other).unwrap(),
                    "key_pem": std::fs::read_to_string(&other_key).unwrap()})),
    );
    assert_eq!(s, 409, "{e}");

    // The same renewal as PKCS#12 through the API (legacy encryption, as Keychain exports).
    openssl(
        &apple.ca.dir,
        &[
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            "push2.pem",
            "-inkey",
            "push2.key",
            "-passout",
            "pass:p12pass",
            "-out",
            "push2.p12",
        ],
    );
    let p12 = std::fs::read(apple.ca.dir.join("push2.p12")).unwrap();
    let (s, st) = api(
        &a,
        &client,
        &token,
        Method::PUT,
        "/api/v1/push-cert",
        Some(json!({"p12_base64": data_encoding::BASE64.encode(&p12), "password": "p12pass"})),
    );
    assert_eq!(s, 200, "{st}");
    let (s, _) = api(
        &a,
        &client,
        &token,
        Method::PUT,
        "/api/v1/push-cert",
        Some(json!({"p12_base64": data_encoding::BASE64.encode(&p12), "password": "wrong"})),
    );
    assert_eq!(s, 400);

    // 410 Unregistered: no more pushes to that token until the device sends a new one.
    apple
        .mock
        .set_default_response(MockResponse::unregistered(1_764_000_000_000));
    api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    apple.wait_for(5);
    last_push(&a, &client, &token, &dev.udid, "unregistered");
    api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    apple.quiet(5);
    apple.mock.reset_responses();
    let r = dev.checkin(
        &a,
        &client,
        json!({"MessageType": "TokenUpdate", "UDID": dev.udid, "Topic": TOPIC,
               "Token": data(&[0xcd; 32]), "PushMagic": "magic-2"}),
    );
    assert_eq!(r.status(), 200);
    api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    apple.wait_for(6);
    let p = &apple.mock.requests()[5];
    assert_eq!(
        (p.token.as_str(), p.magic.as_deref()),
        (hex::encode([0xcd; 32]).as_str(), Some("magic-2"))
    );

    assert!(metric(&a, &client, "citadel_push_total{outcome=\"delivered\"}") >= 3);
    assert_eq!(
        metric(&a, &client, "citadel_push_total{outcome=\"unregistered\"}"),
        1
    );
    assert!(metric(&a, &client, "citadel_push_certificate_expiry_seconds") > 27 * 86400);
}

#[test]
fn pushes_reach_apple_through_an_authenticating_connect_proxy() {
    let mut a = Appliance::new();
    let apple = Apple::start(a.tmp.path());
    let proxy: ConnectProxy = apple
        .runtime
        .block_on(ConnectProxy::with_credentials(
            "127.0.0.1:0".parse().unwrap(),
            "dmz",
            "s3cret",
        ))
        .unwrap();
    let proxy_url = proxy.url().replace("http://", "http://dmz:s3cret@");
    start_with(&mut a, &apple.config(&format!("proxy = \"{proxy_url}\"\n")));
    let client = a.client();
    let token = api_token(&a);
    let (cert, key) = apple.ca.issue_with_key(TOPIC, "proxied");
    let out = run(a
        .cmd()
        .args(["push-cert", "import", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dev = Device::enrol(&a, "proxied-1");
    dev.authenticate(&a, &client);
    dev.token_update(&a, &client);
    let (s, _) = api(
        &a,
        &client,
        &token,
        Method::POST,
        "/api/v1/push",
        Some(json!({"targets": [dev.udid]})),
    );
    assert_eq!(s, 202);
    apple.wait_for(1);
    let tunnels = proxy.requests();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert_eq!(
        tunnels[0].target,
        format!("localhost:{}", apple.mock.addr().port())
    );
    assert!(tunnels[0].authorization_presented);
    assert_eq!(tunnels[0].status, 200);
}

#[test]
fn a_renewed_certificate_takes_over_while_pushes_flow() {
    let mut a = Appliance::new();
    let apple = Apple::start(a.tmp.path());
    start_with(&mut a, &apple.config(""));
    let client = a.client();
    let token = api_token(&a);
    let (cert, key) = apple.ca.issue_with_key(TOPIC, "flow1");
    assert!(
        run(a
            .cmd()
            .args(["push-cert", "import", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key))
        .status
        .success()
    );
    // One device with many user channels: each has its own push token.
    let dev = Device::enrol(&a, "flow-dev");
    dev.authenticate(&a, &client);
    dev.token_update(&a, &client);
    let mut targets = vec![dev.udid.clone()];
    for i in 0..24u8 {
        let r = dev.checkin(
            &a,
            &client,
            json!({"MessageType": "TokenUpdate", "UDID": dev.udid, "UserID": format!("USER-{i}"), "Topic": TOPIC,
                   "Token": data(&[i; 32]), "PushMagic": format!("m{i}")}),
        );
        assert_eq!(r.status(), 200);
        targets.push(format!("{}:USER-{i}", dev.udid));
    }
    apple.mock.set_delay(Duration::from_millis(20));
    let (renewed, renewed_key) = apple.ca.issue_with_key(TOPIC, "flow2");
    let mut expected = 0;
    for round in 0..6 {
        api(
            &a,
            &client,
            &token,
            Method::POST,
            "/api/v1/push",
            Some(json!({"targets": targets})),
        );
        expected += targets.len();
        if round == 2 {
            let out = run(a
                .cmd()
                .args(["push-cert", "import", "--cert"])
                .arg(&renewed)
                .arg("--key")
                .arg(&renewed_key));
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        apple.wait_for(expected);
    }
    let requests = apple.mock.requests();
    assert!(requests.iter().all(|r| r.status == 200));
    let certs: std::collections::HashSet<_> = requests.iter().map(|r| r.client_cert_sha256.clone()).collect();
    assert_eq!(certs.len(), 2, "both certificates were used, none failed");
    let renewed_sha256 = {
        use sha2::Digest;
        let der = citadel_certs::pem_to_der(&std::fs::read_to_string(&renewed).unwrap()).unwrap();
        hex::encode(sha2::Sha256::digest(&der))
    };
    assert_eq!(
        requests.last().unwrap().client_cert_sha256.as_deref(),
        Some(renewed_sha256.as_str())
    );
    assert_eq!(
        metric(&a, &client, "citadel_push_total{outcome=\"transport_error\"}"),
        0
    );
}
