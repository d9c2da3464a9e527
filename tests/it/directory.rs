//! Directory sign-in against a real OpenLDAP server (Debian's slapd), over ldaps:// and
//! StartTLS, with the directory's groups mapped to roles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Appliance, free_port, run, text};
use crate::mdm::api_token;

/// A throw-away slapd (`tests/ldap/start-slapd.sh`), stopped on drop.
struct Slapd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
}

impl Slapd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ldap/start-slapd.sh");
        let log = std::fs::File::create(dir.path().join("slapd.log")).unwrap();
        let child = Command::new("sh")
            .arg(script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(tls_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut slapd = Self {
            child,
            dir,
            port,
            tls_port,
        };
        // slapd writes its pid file once its listeners are bound and the database is open.
        let started = Instant::now();
        while !slapd.dir.path().join("slapd.pid").exists() {
            if let Some(status) = slapd.child.try_wait().unwrap() {
                panic!("slapd exited ({status}): {}", slapd.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "slapd did not start: {}",
                slapd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        slapd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Applies an LDIF change as the directory's administrator.
    fn modify(&self, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H", &format!("ldaps://127.0.0.1:{}", self.tls_port)])
            .args(["-D", "cn=admin,dc=example,dc=org", "-w", "admin-pass"])
            .env("LDAPTLS_CACERT", self.ca())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(ldif.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "ldapmodify: {}", text(&out.stderr));
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config file pointing the appliance at `url`, trusting `ca`.
fn config(a: &Appliance, url: &str, starttls: bool, ca: &Path) -> PathBuf {
    let path = a.tmp.path().join("directory.toml");
    std::fs::write(
        &path,
        format!(
            r#"[admin.directory]
url = "{url}"
starttls = {starttls}
ca_file = {ca:?}
bind_dn = "cn=citadel,ou=services,dc=example,dc=org"
bind_password = "citadel-svc-pass"
user_base = "ou=people,dc=example,dc=org"
group_base = "ou=groups,dc=example,dc=org"

[[admin.directory.groups]]
group = "cn=mdm-admins,ou=groups,dc=example,dc=org"
role = "administrator"

[[admin.directory.groups]]
group = "CN=mdm-helpdesk,ou=groups,dc=example,dc=org"
role = "help_desk"
"#
        ),
    )
    .unwrap();
    path
}

fn start(url: &str, starttls: bool, ca: &Path) -> Appliance {
    let mut a = Appliance::new();
    let cfg = config(&a, url, starttls, ca);
    a.spawn(&["--config", cfg.to_str().unwrap()]);
    a.wait_healthy();
    a
}

fn login(a: &Appliance, username: &str, password: &str) -> reqwest::blocking::Response {
    a.client()
        .post(a.url("/api/v1/auth/login"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .unwrap()
}

fn denied_reasons(a: &Appliance, token: &str) -> Vec<(String, String)> {
    let res = a
        .client()
        .get(a.url("/api/v1/audit?action=auth.login"))
        .bearer_auth(token)
        .send()
        .unwrap();
    res.json::<Value>().unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] != "success")
        .map(|r| {
            (
                r["target"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn directory_users_sign_in_with_roles_from_their_groups() {
    let slapd = Slapd::start();
    let a = start(
        &format!("ldaps://127.0.0.1:{}", slapd.tls_port),
        false,
        &slapd.ca(),
    );
    let token = api_token(&a);

    // Alice is in mdm-admins: an Administrator, provisioned at first sign-in, who must enrol
    // TOTP before anything else.
    let res = login(&a, "Alice", "alice-pass");
    assert_eq!(res.status(), 200, "{}", res.text().unwrap());
    let body: Value = res.json().unwrap();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["display_name"], "Alice Anderson");
    assert_eq!(body["role"], "administrator");
    assert_eq!(body["pending"], json!(["mfa_enrolment"]));
    // Bob is in mdm-helpdesk (the mapping's DN differs in case, as AD's often do).
    let res = login(&a, "bob", "bob-pass");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().unwrap()["role"], "help_desk");
    // Refusals: wrong password, a person in no mapped group, a name the directory does not
    // know, an empty password (never sent as an anonymous bind).
    assert_eq!(login(&a, "alice", "wrong").status(), 401);
    assert_eq!(login(&a, "carol", "carol-pass").status(), 401);
    assert_eq!(login(&a, "dave", "whatever").status(), 401);
    assert_eq!(login(&a, "alice", "").status(), 401);
    assert_eq!(
        login(&a, "*", "alice-pass").status(),
        401,
        "filter characters are escaped"
    );
    let denied = denied_reasons(&a, &token);
    for (who, why) in [
        ("alice", "wrong password"),
        ("carol", "directory groups map to no role"),
        ("dave", "unknown account"),
    ] {
        assert!(
            denied.iter().any(|(t, r)| t == who && r == why),
            "{who}: {why} not in {denied:?}"
        );
    }
    let users: Vec<Value> = a
        .client()
        .get(a.url("/api/v1/users"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let alice = users.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(alice["source"], "directory");
    assert!(!users.iter().any(|u| u["username"] == "carol"));

    // Carol is no administrator, but every directory user may use the self-service portal.
    let portal = |user: &str, password: &str| {
        a.client()
            .post(a.url("/api/v1/portal/login"))
            .json(&json!({ "username": user, "password": password }))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(portal("carol", "carol-pass"), 200);
    assert_eq!(portal("carol", "not-carols"), 401);
    assert_eq!(portal("dave", "whatever"), 401);

    // Alice leaves mdm-admins in the directory. Re-checking the directory (hourly, or now
    // from the command line) takes her role away and ends her session at once.
    let res = login(&a, "alice", "alice-pass");
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let session = || {
        a.client()
            .get(a.url("/api/v1/auth/session"))
            .header("Cookie", &cookie)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(session(), 200);
    slapd.modify(
        "dn: cn=mdm-admins,ou=groups,dc=example,dc=org\nchangetype: modify\nreplace: member\nmember: uid=carol,ou=people,dc=example,dc=org\n",
    );
    let out = run(a.cmd().args(["admin", "sync-directory"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("alice:"), "{}", text(&out.stdout));
    assert_eq!(session(), 401);
    assert_eq!(login(&a, "alice", "alice-pass").status(), 401);
    let user: Value = a
        .client()
        .get(a.url("/api/v1/users/alice"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(user["role"], "");
    let synced = a
        .client()
        .get(a.url("/api/v1/audit?action=administrator.directory."))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert!(
        synced["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["target"] == "alice"
                && r["action"] == "administrator.directory.sync"
                && r["reason"].as_str().unwrap().contains("no longer grants")),
        "{synced}"
    );
}

#[test]
fn directory_over_starttls_and_an_untrusted_server_is_refused() {
    let slapd = Slapd::start();
    let a = start(&format!("ldap://127.0.0.1:{}", slapd.port), true, &slapd.ca());
    assert_eq!(login(&a, "bob", "bob-pass").status(), 200);
    drop(a);

    // A server whose certificate the configured CA did not issue: no password is sent, the
    // sign-in fails as unavailable and the failure is audited.
    let other = tempfile::tempdir().unwrap();
    let ca = other.path().join("other-ca.pem");
    let out = run(Command::new("openssl").args([
        "req",
        "-x509",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        other.path().join("k.pem").to_str().unwrap(),
        "-out",
        ca.to_str().unwrap(),
        "-days",
        "2",
        "-subj",
        "/CN=Some Other CA",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a = start(&format!("ldaps://127.0.0.1:{}", slapd.tls_port), false, &ca);
    let res = login(&a, "bob", "bob-pass");
    assert_eq!(res.status(), 503);
    let token = api_token(&a);
    let res = a
        .client()
        .get(a.url("/api/v1/audit?action=auth.login&outcome=failure"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let items = res.json::<Value>().unwrap()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        items[0]["reason"]
            .as_str()
            .unwrap()
            .contains("directory unavailable")
    );

    // Plain ldap:// without StartTLS is refused at start-up.
    let plain = Appliance::new();
    let cfg = config(
        &plain,
        &format!("ldap://127.0.0.1:{}", slapd.port),
        false,
        &slapd.ca(),
    );
    let out = run(plain
        .cmd()
        .args(["--config", cfg.to_str().unwrap(), "config", "check"]));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("in clear"), "{}", text(&out.stderr));
}
