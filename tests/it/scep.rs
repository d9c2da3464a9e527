//! SCEP (RFC 8894) against independent clients: Debian's `scepclient`, with `openssl` checking
//! what it received.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::{Appliance, run, text};

const SCEPCLIENT: &str = "/usr/bin/scepclient";

pub struct Enrolment {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub out: Output,
}

/// Runs `scepclient` against the appliance, trusting its CA for TLS, in its own directory.
pub fn scepclient(a: &Appliance, name: &str, challenge: &str, extra: &[&str]) -> Enrolment {
    assert!(
        Path::new(SCEPCLIENT).exists(),
        "scepclient is missing: run `installer/dev.sh deps`"
    );
    let dir = a.tmp.path().join(format!("client-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("device.key"), dir.join("device.pem"));
    let out = Command::new(SCEPCLIENT)
        .env("SSL_CERT_FILE", a.export_ca())
        .current_dir(&dir)
        .args([
            "-server-url",
            &a.url("/scep"),
            "-challenge",
            challenge,
            "-cn",
            name,
        ])
        .arg("-private-key")
        .arg(&key)
        .arg("-certificate")
        .arg(&cert)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Enrolment { key, cert, out }
}

pub fn challenge(a: &Appliance, ttl: Option<&str>) -> String {
    let mut cmd = a.cmd();
    cmd.args(["scep", "challenge"]);
    if let Some(ttl) = ttl {
        cmd.args(["--ttl", ttl]);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

pub fn certificates(a: &Appliance) -> Vec<serde_json::Value> {
    let out = run(a.cmd().args(["ca", "list", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `openssl verify` of a device certificate: the root is the only trust anchor; the issuing CA
/// comes from `citadel ca export --chain` as an untrusted intermediate.
fn openssl_verify(a: &Appliance, cert: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .args(extra)
        .arg("-CAfile")
        .arg(a.export_ca())
        .arg("-untrusted")
        .arg(a.export_chain())
        .arg(cert)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn scepclient_enrols_with_a_one_time_challenge_and_openssl_verifies_the_result() {
    let a = Appliance::start();
    let secret = challenge(&a, None);
    let e = scepclient(&a, "device-1", &secret, &[]);
    assert!(
        e.out.status.success(),
        "scepclient failed: {}{}",
        text(&e.out.stdout),
        text(&e.out.stderr)
    );
    let (ok, out) = openssl_verify(&a, &e.cert, &["-purpose", "sslclient"]);
    assert!(ok, "{out}");
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&e.cert)
        .output()
        .unwrap();
    assert!(
        text(&subject.stdout).contains("device-1"),
        "{}",
        text(&subject.stdout)
    );
    let list = certificates(&a);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"]["state"], "active");
    assert_eq!(list[0]["issued_via"]["kind"], "one_time_challenge");
    assert!(e.key.exists());

    // The same challenge never pays for a second certificate.
    let again = scepclient(&a, "device-2", &secret, &[]);
    assert!(!again.out.status.success(), "a reused challenge must fail");
    assert!(!again.cert.exists());
    assert_eq!(certificates(&a).len(), 1);
}

#[test]
fn wrong_and_expired_challenges_issue_nothing() {
    let a = Appliance::start();
    let wrong = scepclient(&a, "wrong", "NOT-A-REAL-CHALLENGE", &[]);
    assert!(!wrong.out.status.success());
    assert!(!wrong.cert.exists());
    let short = challenge(&a, Some("1"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = scepclient(&a, "expired", &short, &[]);
    assert!(!expired.out.status.success());
    assert!(certificates(&a).is_empty());
    assert!(a.stderr().contains("expired challenge"), "{}", a.stderr());
}

#[test]
fn revocation_reaches_the_crl() {
    let a = Appliance::start();
    let e = scepclient(&a, "to-revoke", &challenge(&a, None), &[]);
    assert!(e.out.status.success(), "{}", text(&e.out.stderr));
    let serial = certificates(&a)[0]["serial"].as_str().unwrap().to_owned();
    let out = run(a.cmd().args(["ca", "revoke", &serial]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(certificates(&a)[0]["status"]["state"], "revoked");
    let crl = a.client().get(a.url("/ca/crl")).send().unwrap();
    assert_eq!(crl.status(), 200);
    let crl_path = a.tmp.path().join("ca.crl");
    std::fs::write(&crl_path, crl.bytes().unwrap()).unwrap();
    let pem = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in"])
        .arg(&crl_path)
        .args(["-outform", "PEM"])
        .output()
        .unwrap();
    assert!(pem.status.success(), "{}", text(&pem.stderr));
    let crl_pem = a.tmp.path().join("ca.crl.pem");
    std::fs::write(&crl_pem, &pem.stdout).unwrap();
    let (ok, out) = openssl_verify(
        &a,
        &e.cert,
        &["-crl_check", "-CRLfile", crl_pem.to_str().unwrap()],
    );
    assert!(!ok, "a revoked certificate must fail CRL checking: {out}");
    assert!(out.contains("revoked"), "{out}");
    let unknown = run(a.cmd().args(["ca", "revoke", "0123abcd"]));
    assert!(!unknown.status.success());
}

#[test]
fn capabilities_and_ca_certificate() {
    let a = Appliance::start();
    let client = a.client();
    let caps = client
        .get(a.url("/scep?operation=GetCACaps"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for cap in [
        "POSTPKIOperation",
        "SHA-256",
        "SHA-512",
        "AES",
        "DES3",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(
            caps.lines().any(|l| l.trim() == cap),
            "{cap} missing from {caps:?}"
        );
    }
    // GetCACert: the RA devices encrypt to and the root that issued it, as PKCS#7.
    let res = client.get(a.url("/scep?operation=GetCACert")).send().unwrap();
    assert_eq!(res.headers()["content-type"], "application/x-x509-ca-ra-cert");
    let p7 = a.tmp.path().join("getcacert.p7b");
    std::fs::write(&p7, res.bytes().unwrap()).unwrap();
    let out = Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
        .arg(&p7)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let certs = text(&out.stdout);
    assert_eq!(certs.matches("BEGIN CERTIFICATE").count(), 2, "{certs}");
    assert!(certs.contains("Citadel SCEP RA"), "{certs}");
    assert!(certs.contains("Citadel Root CA"), "{certs}");
    let root = std::fs::read_to_string(a.export_ca()).unwrap();
    assert!(
        certs.contains(root.trim()),
        "the root in GetCACert is the exported root"
    );
    // The RA is an RSA end entity that chains to the exported root and may encrypt.
    let begin = certs.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = certs.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let ra = a.tmp.path().join("ra.pem");
    std::fs::write(&ra, format!("{}\n", &certs[begin..end])).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&ra)
        .output()
        .unwrap();
    let ra_text = text(&out.stdout);
    assert!(
        ra_text.contains("Citadel SCEP RA"),
        "the RA comes first: {ra_text}"
    );
    assert!(
        ra_text.contains("rsaEncryption") && ra_text.contains("(2048 bit)"),
        "{ra_text}"
    );
    assert!(
        ra_text.contains("CA:FALSE") && ra_text.contains("Key Encipherment"),
        "{ra_text}"
    );
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(a.export_ca())
        .arg(&ra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn malformed_oversized_and_unauthenticated_requests_fail_cleanly() {
    let a = Appliance::start();
    let client = a.client();
    let post = |body: Vec<u8>| {
        client
            .post(a.url("/scep?operation=PKIOperation"))
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post(b"definitely not DER".to_vec()), 400);
    assert_eq!(post(vec![0x30, 0x82, 0xff, 0xff, 0x06]), 400, "truncated DER");
    assert_eq!(post(vec![0u8; 2 * 1024 * 1024]), 413);
    // A long GET (clients repeat the message in the URL) is read, not refused for its length.
    let long = "A".repeat(16 * 1024);
    let res = client
        .get(a.url(&format!("/scep?operation=PKIOperation&message={long}")))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = client.get(a.url("/scep?operation=Bogus")).send().unwrap();
    assert_eq!(res.status(), 400);
    // The admin API needs a credential; the bootstrap secret is not one.
    let res = client.post(a.url("/api/v1/scep/challenges")).send().unwrap();
    assert_eq!(res.status(), 401);
    let res = client
        .post(a.url("/api/v1/scep/challenges"))
        .bearer_auth("wrong")
        .send()
        .unwrap();
    assert_eq!(res.status(), 401);
    let secret = a
        .stdout()
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 39 && l.matches('-').count() == 7)
        .expect("bootstrap secret in the first-start notice")
        .to_owned();
    let res = client
        .post(a.url("/api/v1/scep/challenges"))
        .bearer_auth(&secret)
        .json(&serde_json::json!({ "ttl_secs": 600 }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 401);
    let token = crate::mdm::api_token(&a);
    let res = client
        .post(a.url("/api/v1/scep/challenges"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "ttl_secs": 600 }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["challenge"].as_str().unwrap().len(), 32);
    // The server is still healthy after all of that.
    assert_eq!(client.get(a.url("/healthz")).send().unwrap().status(), 200);
}

#[test]
fn a_challenge_made_while_the_server_is_stopped_is_honoured_later() {
    let mut a = Appliance::new();
    assert!(
        run(a.cmd().args(["init", "--listen", &a.listen()]))
            .status
            .success()
    );
    let secret = challenge(&a, None);
    a.spawn(&[]);
    a.wait_healthy();
    let e = scepclient(&a, "offline-made", &secret, &[]);
    assert!(e.out.status.success(), "{}", text(&e.out.stderr));
}

#[test]
fn renewal_replaces_the_certificate_and_a_revoked_one_cannot_renew() {
    let a = Appliance::start();
    let first = scepclient(&a, "renewing", &challenge(&a, None), &[]);
    assert!(first.out.status.success(), "{}", text(&first.out.stderr));
    let original = std::fs::read(&first.cert).unwrap();
    // With its certificate present, scepclient sends a RenewalReq signed by it, no challenge.
    let renewed = scepclient(&a, "renewing", "", &[]);
    assert!(renewed.out.status.success(), "{}", text(&renewed.out.stderr));
    assert_ne!(std::fs::read(&renewed.cert).unwrap(), original);
    let (ok, out) = openssl_verify(&a, &renewed.cert, &[]);
    assert!(ok, "{out}");
    let list = certificates(&a);
    assert_eq!(list.len(), 2, "{list:?}");
    let old = list
        .iter()
        .find(|c| c["status"]["state"] == "superseded")
        .expect("old one superseded");
    let new = list
        .iter()
        .find(|c| c["status"]["state"] == "active")
        .expect("new one active");
    assert_eq!(new["issued_via"]["kind"], "renewal");
    assert_eq!(new["issued_via"]["previous_serial"], old["serial"]);
    assert_eq!(old["status"]["by_serial"], new["serial"]);

    let serial = new["serial"].as_str().unwrap().to_owned();
    assert!(run(a.cmd().args(["ca", "revoke", &serial])).status.success());
    let refused = scepclient(&a, "renewing", "", &[]);
    assert!(
        !refused.out.status.success(),
        "a revoked certificate must not renew"
    );
    assert_eq!(certificates(&a).len(), 2);
    assert!(a.stderr().contains("certificate is revoked"), "{}", a.stderr());
}

#[test]
fn a_static_challenge_from_config_can_be_used_repeatedly() {
    let mut a = Appliance::new();
    let secret = a.tmp.path().join("scep.secret");
    std::fs::write(&secret, "site-wide-static-challenge\n").unwrap();
    let config = a.tmp.path().join("citadel.toml");
    std::fs::write(&config, format!("[scep]\nstatic_challenge_file = {secret:?}\n")).unwrap();
    a.spawn(&["--config", config.to_str().unwrap()]);
    a.wait_healthy();
    for name in ["static-1", "static-2"] {
        let e = scepclient(&a, name, "site-wide-static-challenge", &[]);
        assert!(e.out.status.success(), "{name}: {}", text(&e.out.stderr));
    }
    let list = certificates(&a);
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|c| c["issued_via"]["kind"] == "static_challenge"),
        "{list:?}"
    );
    assert!(
        !scepclient(&a, "static-wrong", "site-wide-static-challengX", &[])
            .out
            .status
            .success()
    );
}

/// The simulator's device-side SCEP client against the real server: GetCACert, PKCSReq by
/// POST, CertRep opened with the device key; `openssl verify` checks what it got.
#[test]
fn the_built_in_device_client_enrols_over_https() {
    use citadel_certs::scep::client::{CertRepOutcome, DeviceRequest, ca_certificates};
    let a = Appliance::start();
    let client = a.client();
    let cacert = client
        .get(a.url("/scep?operation=GetCACert"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let certs = ca_certificates(&cacert).unwrap();
    assert_eq!(certs.len(), 2);
    let device = DeviceRequest::new("simulated-ipad", &challenge(&a, None)).unwrap();
    let message = device.pkcs_req(&certs[0], "sim-tx-1").unwrap();
    let rep = client
        .post(a.url("/scep?operation=PKIOperation"))
        .body(message)
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let CertRepOutcome::Issued { certificate, chain } = device.open_cert_rep(&rep, &certs[0]).unwrap() else {
        panic!("not issued");
    };
    assert_eq!(chain.len(), 2, "issuing CA and root");
    let pem = |der: &[u8]| {
        let b64 = data_encoding::BASE64.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    };
    let leaf = a.tmp.path().join("sim-leaf.pem");
    std::fs::write(&leaf, pem(&certificate)).unwrap();
    let (ok, out) = openssl_verify(&a, &leaf, &[]);
    assert!(ok, "{out}");
    // A second request with the same (now used) challenge fails cleanly.
    let again = DeviceRequest::new("simulated-ipad-2", "used-or-unknown").unwrap();
    let rep = client
        .post(a.url("/scep?operation=PKIOperation"))
        .body(again.pkcs_req(&certs[0], "sim-tx-2").unwrap())
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert!(matches!(
        again.open_cert_rep(&rep, &certs[0]).unwrap(),
        CertRepOutcome::Failed(_)
    ));
}
