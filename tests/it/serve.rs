//! The appliance foundation: start-up, TLS, files on disk, configuration, shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{Appliance, run, text};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `openssl s_client` against the appliance; returns (success, combined output).
fn s_client(port: u16, ca: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(["-verify_return_error", "-verify_hostname", "localhost", "-CAfile"])
        .arg(ca)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn healthz_reports_version_and_store() {
    let a = Appliance::start();
    let res = a.client().get(a.url("/healthz")).send().unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-request-id").is_some());
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["store"]["status"], "ok");
    assert_eq!(body["store"]["backend"], "sled");
    assert_eq!(body["store"]["schema_version"], 2);
    assert_eq!(body["tls"]["source"], "managed");
    assert!(body["tls"]["days_left"].as_i64().unwrap() > 300);
}

#[test]
fn tls_chain_verifies_with_openssl_and_old_protocols_are_refused() {
    let a = Appliance::start();
    let ca = a.export_ca();
    let (ok, out) = s_client(a.port, &ca, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let (ok, out) = s_client(a.port, &ca, &["-tls1_2"]);
    assert!(ok && out.contains("TLSv1.2"), "{out}");
    let (ok, out) = s_client(a.port, &ca, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 must be refused: {out}");
    // A client that does not trust Citadel's CA must fail verification.
    let (ok, _) = s_client(a.port, Path::new("/dev/null"), &[]);
    assert!(!ok);
    // /ca.pem serves exactly what `citadel ca export` prints; /ca.crt is its DER form.
    let client = a.client();
    let served = client.get(a.url("/ca.pem")).send().unwrap().text().unwrap();
    assert_eq!(served, std::fs::read_to_string(&ca).unwrap());
    let der = client.get(a.url("/ca.crt")).send().unwrap().bytes().unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&der)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        text(&out.stdout).contains("Citadel Root CA"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn data_dir_and_keys_are_owner_only() {
    let a = Appliance::start();
    assert_eq!(mode(&a.data_dir), 0o700);
    assert_eq!(mode(&a.data_dir.join("pki")), 0o700);
    assert_eq!(mode(&a.data_dir.join("store")), 0o700);
    assert_eq!(mode(&a.data_dir.join("pki/ca.key")), 0o600);
    assert_eq!(mode(&a.data_dir.join("pki/issuing.key")), 0o600);
    assert_eq!(mode(&a.data_dir.join("pki/ra.key")), 0o600);
    assert_eq!(mode(&a.data_dir.join("pki/server.key")), 0o600);
    // The keys really are the certificates' keys (openssl as the oracle).
    for (cert, key) in [
        ("ca.crt", "ca.key"),
        ("issuing.crt", "issuing.key"),
        ("ra.crt", "ra.key"),
        ("server.crt", "server.key"),
    ] {
        let pubkey = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            out.stdout
        };
        let pki = a.data_dir.join("pki");
        let from_cert = pubkey(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            pki.join(cert).to_str().unwrap(),
        ]);
        let from_key = pubkey(&["pkey", "-pubout", "-in", pki.join(key).to_str().unwrap()]);
        assert_eq!(from_cert, from_key, "{key} does not match {cert}");
    }
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(a.data_dir.join("pki/ca.crt"))
        .arg(a.data_dir.join("pki/server.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn first_start_prints_secret_once_and_restart_keeps_the_ca() {
    let mut a = Appliance::start();
    let first = a.stdout();
    assert!(first.contains("One-time bootstrap secret"), "{first}");
    assert!(first.contains("/ca.pem"), "{first}");
    let ca_before = std::fs::read_to_string(a.export_ca()).unwrap();
    let cert_before = std::fs::read_to_string(a.data_dir.join("pki/server.crt")).unwrap();
    a.restart();
    assert!(!a.stdout().contains("bootstrap secret"), "{}", a.stdout());
    assert_eq!(std::fs::read_to_string(a.export_ca()).unwrap(), ca_before);
    assert_eq!(
        std::fs::read_to_string(a.data_dir.join("pki/server.crt")).unwrap(),
        cert_before
    );
    let res = a.client().get(a.url("/healthz")).send().unwrap();
    assert_eq!(res.status(), 200);
}

#[test]
fn sigterm_drains_and_flushes() {
    let mut a = Appliance::start();
    assert_eq!(a.stop(), 0);
    let log = a.stderr();
    assert!(log.contains("store flushed"), "{log}");
    // Healthcheck now fails with exit 1 and says why.
    let out = run(a
        .cmd()
        .args(["healthcheck", "--listen", &a.listen(), "--timeout", "1"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn refuses_a_data_dir_others_can_read() {
    let a = Appliance::new();
    std::fs::create_dir(&a.data_dir).unwrap();
    std::fs::set_permissions(&a.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(a.cmd().args(["serve", "--listen", &a.listen()]));
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("chmod 700"), "{err}");
    assert!(
        !a.data_dir.join("pki").exists(),
        "nothing may be written into an unsafe directory"
    );
}

#[test]
fn refuses_a_loosened_key_file() {
    let a = Appliance::new();
    let out = run(a.cmd().args(["init", "--listen", &a.listen()]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = a.data_dir.join("pki/ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(a.cmd().args(["serve", "--listen", &a.listen()]));
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("chmod 600"), "{}", text(&out.stderr));
}

#[test]
fn unknown_config_key_is_rejected_by_name() {
    let a = Appliance::new();
    let config = a.tmp.path().join("citadel.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten_adress = \"oops\"\n",
    )
    .unwrap();
    for sub in [&["config", "check"][..], &["serve"][..]] {
        let out = run(a.cmd().arg("--config").arg(&config).args(sub));
        assert_eq!(out.status.code(), Some(78), "{sub:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("listen_adress"),
            "{}",
            text(&out.stderr)
        );
    }
    // The same through the environment.
    let out = run(a
        .cmd()
        .args(["config", "check"])
        .env("CITADEL_SERVER__LISTEN_PORT", "1"));
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("listen_port"), "{}", text(&out.stderr));
}

#[test]
fn config_check_prints_effective_values_with_secrets_redacted() {
    let a = Appliance::new();
    let secret = a.tmp.path().join("bootstrap.secret");
    std::fs::write(&secret, "a-very-secret-bootstrap-value\n").unwrap();
    let config = a.tmp.path().join("citadel.toml");
    std::fs::write(
        &config,
        format!("[server]\nhostnames = [\"mdm.example.org\"]\n[admin]\nbootstrap_secret_file = {secret:?}\n"),
    )
    .unwrap();
    let out = run(a
        .cmd()
        .arg("--config")
        .arg(&config)
        .args(["config", "check", "--listen", "127.0.0.1:9999"])
        .env("CITADEL_LOG__FORMAT", "json"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("listen = \"127.0.0.1:9999\""), "{shown}");
    assert!(shown.contains("mdm.example.org"), "{shown}");
    assert!(shown.contains("format = \"json\""), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("very-secret"), "{shown}");
}

#[test]
fn preset_bootstrap_secret_is_not_printed() {
    let mut a = Appliance::new();
    let secret = a.tmp.path().join("bootstrap.secret");
    std::fs::write(&secret, "a-very-secret-bootstrap-value\n").unwrap();
    let config = a.tmp.path().join("citadel.toml");
    std::fs::write(&config, format!("[admin]\nbootstrap_secret_file = {secret:?}\n")).unwrap();
    a.spawn(&["--config", config.to_str().unwrap()]);
    a.wait_healthy();
    assert!(!a.stdout().contains("bootstrap secret"), "{}", a.stdout());
    assert!(!a.stdout().contains("very-secret"));
}

#[test]
fn access_log_has_request_id_method_path_status_and_latency() {
    let mut a = Appliance::new();
    let config = a.tmp.path().join("citadel.toml");
    std::fs::write(&config, "[log]\nformat = \"json\"\n").unwrap();
    a.spawn(&["--config", config.to_str().unwrap()]);
    a.wait_healthy();
    let res = a
        .client()
        .get(a.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
    let forged = a
        .client()
        .get(a.url("/ca.pem"))
        .header("x-request-id", "bad id INFO fake=1")
        .send()
        .unwrap();
    assert_ne!(forged.headers()["x-request-id"], "bad id INFO fake=1");
    // Idle HTTP/2 connections would hold the graceful shutdown until its timeout.
    drop((res, forged));
    assert_eq!(a.stop(), 0);
    let lines: Vec<serde_json::Value> = a
        .stderr()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "citadel::access" && l["span"]["request_id"] == "trace-me-123")
        .unwrap_or_else(|| panic!("no access line: {lines:#?}"));
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/healthz");
    assert_eq!(access["status"], 200);
    assert!(access["latency_ms"].as_f64().is_some());
}

#[test]
fn server_certificate_near_expiry_is_renewed_at_start() {
    let mut a = Appliance::new();
    assert!(
        run(a.cmd().args(["init", "--listen", &a.listen()]))
            .status
            .success()
    );
    let pki = a.data_dir.join("pki");
    // Replace the server certificate with one from the same CA that expires in 10 days.
    let csr = a.tmp.path().join("s.csr");
    let ok = Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(pki.join("server.key"))
        .args(["-subj", "/CN=localhost", "-out"])
        .arg(&csr)
        .status()
        .unwrap();
    assert!(ok.success());
    let ext = a.tmp.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ok = Command::new("openssl")
        .args(["x509", "-req", "-days", "10", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(pki.join("ca.crt"))
        .arg("-CAkey")
        .arg(pki.join("ca.key"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(pki.join("server.crt"))
        .status()
        .unwrap();
    assert!(ok.success());
    let short_lived = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    a.spawn(&[]);
    a.wait_healthy();
    let renewed = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    assert_ne!(renewed, short_lived);
    assert!(
        a.stderr().contains("issued a new TLS server certificate"),
        "{}",
        a.stderr()
    );
    let health: serde_json::Value = a.client().get(a.url("/healthz")).send().unwrap().json().unwrap();
    assert!(health["tls"]["days_left"].as_i64().unwrap() > 300, "{health}");
    let (ok, out) = s_client(a.port, &a.export_ca(), &[]);
    assert!(ok, "{out}");
}

#[test]
fn operator_supplied_certificate_is_served() {
    let mut a = Appliance::new();
    let dir = a.tmp.path().to_path_buf();
    // The site's own CA and a server certificate from it, made with openssl.
    let sh = format!(
        "set -e; cd {dir}
         openssl req -x509 -newkey rsa:2048 -nodes -keyout site-ca.key -out site-ca.pem -days 30 -subj '/CN=Site Enterprise CA' 2>/dev/null
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout site.key -out site.csr -subj '/CN=localhost' 2>/dev/null
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf
         openssl x509 -req -in site.csr -CA site-ca.pem -CAkey site-ca.key -days 20 -extfile ext.cnf -out site.pem 2>/dev/null
         chmod 600 site.key",
        dir = dir.display()
    );
    assert!(Command::new("sh").args(["-c", &sh]).status().unwrap().success());
    let config = dir.join("citadel.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            dir.join("site.pem"),
            dir.join("site.key")
        ),
    )
    .unwrap();
    a.spawn(&["--config", config.to_str().unwrap()]);
    let site_ca = dir.join("site-ca.pem");
    a.wait_healthy_with(&["--ca", site_ca.to_str().unwrap()]);
    let (ok, out) = s_client(a.port, &site_ca, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("Site Enterprise CA"), "{out}");
    // Citadel's own CA still exists for device identities, but does not sign the TLS cert.
    let (ok, _) = s_client(a.port, &a.export_ca(), &[]);
    assert!(!ok);
}

#[test]
fn commands_explain_what_is_missing() {
    let a = Appliance::new();
    let out = run(a.cmd().args(["ca", "export"]));
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("citadel init"),
        "{}",
        text(&out.stderr)
    );
    let out = run(a
        .cmd()
        .args(["--config", "/nonexistent/citadel.toml", "config", "check"]));
    assert_eq!(out.status.code(), Some(78));
    assert!(text(&out.stderr).contains("/nonexistent/citadel.toml"));
    for sub in [
        &["serve"][..],
        &["healthcheck"],
        &["init"],
        &["ca", "export"],
        &["config", "check"],
    ] {
        let out = run(a.cmd().args(sub).arg("--help"));
        assert!(out.status.success(), "{sub:?}");
        assert!(text(&out.stdout).contains("Usage: citadel"), "{sub:?}");
    }
}

#[test]
fn init_is_idempotent_and_a_second_server_on_the_same_data_is_refused() {
    let mut a = Appliance::new();
    let out = run(a.cmd().args(["init", "--listen", &a.listen()]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("One-time bootstrap secret"));
    let out = run(a.cmd().args(["init", "--listen", &a.listen()]));
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("already initialised"),
        "{}",
        text(&out.stdout)
    );
    a.spawn(&[]);
    a.wait_healthy();
    let other_port = crate::harness::free_port();
    let out = run(a
        .cmd()
        .args(["serve", "--listen", &format!("127.0.0.1:{other_port}")]));
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn survives_kill_9() {
    let mut a = Appliance::start();
    assert!(a.stdout().contains("One-time bootstrap secret"));
    let ca = std::fs::read_to_string(a.export_ca()).unwrap();
    a.kill_hard();
    a.spawn(&[]);
    a.wait_healthy();
    // The bootstrap record was durable before the secret was shown, so it is not re-issued.
    assert!(!a.stdout().contains("bootstrap secret"), "{}", a.stdout());
    assert_eq!(std::fs::read_to_string(a.export_ca()).unwrap(), ca);
    let health: serde_json::Value = a.client().get(a.url("/healthz")).send().unwrap().json().unwrap();
    assert_eq!(health["store"]["status"], "ok");
}

#[test]
fn a_busy_port_is_explained() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let a = Appliance::new();
    let out = run(a.cmd().args(["serve", "--listen", &format!("127.0.0.1:{port}")]));
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--listen"), "{}", text(&out.stderr));
}

/// The console's assets are compressed once at build time and served in the encoding the
/// browser asks for; Debian's `brotli` and `gzip` decode them back to the same bytes.
#[test]
fn console_assets_are_served_precompressed() {
    let a = Appliance::start();
    let fetch = |name: &str, accept: &str| {
        let res = a
            .client()
            .get(a.url(&format!("/pkg/{name}")))
            .header("Accept-Encoding", accept)
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "{name} {accept}");
        let header = |h: &str| {
            res.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let (encoding, vary, etag) = (header("content-encoding"), header("vary"), header("etag"));
        (encoding, vary, etag, res.bytes().unwrap().to_vec())
    };
    let decode = |tool: &str, bytes: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, bytes).unwrap();
        let out = Command::new(tool).arg("-dc").arg(&input).output().expect(tool);
        assert!(out.status.success(), "{tool}: {}", text(&out.stderr));
        out.stdout
    };
    for name in ["citadel_bg.wasm", "citadel.js", "citadel.css"] {
        let (encoding, _, plain_tag, raw) = fetch(name, "identity");
        assert_eq!(encoding, "identity", "{name}");
        // A client that takes none of the built encodings gets the file as it is (the server
        // does not deflate 2 MB per request).
        let (encoding, _, _, as_is) = fetch(name, "deflate");
        assert_eq!(
            (encoding.as_str(), as_is.len()),
            ("identity", raw.len()),
            "{name}"
        );
        let (encoding, vary, br_tag, br) = fetch(name, "gzip, deflate, br, zstd");
        assert_eq!(
            (encoding.as_str(), vary.as_str()),
            ("br", "Accept-Encoding"),
            "{name}"
        );
        assert_eq!(decode("brotli", &br), raw, "{name}");
        let (encoding, _, gz_tag, gz) = fetch(name, "gzip");
        assert_eq!(encoding, "gzip", "{name}");
        assert_eq!(decode("gzip", &gz), raw, "{name}");
        // One tag per representation: a cache never answers gzip with brotli.
        assert!(
            plain_tag != br_tag && br_tag != gz_tag,
            "{plain_tag} {br_tag} {gz_tag}"
        );
        if name.ends_with(".wasm") {
            assert!(raw.starts_with(b"\0asm"));
            assert!(br.len() * 3 < raw.len(), "{} of {}", br.len(), raw.len());
        }
    }
}
