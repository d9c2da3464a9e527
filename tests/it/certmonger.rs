//! SCEP against certmonger (Debian's `certmonger`, driven with `getcert`), the enrolment daemon
//! of Red Hat / FreeIPA hosts. certmonger sends PKIOperation by GET (never POST), picks AES-256
//! and SHA-256 from GetCACaps, and signs with a throwaway certificate whose serial number is its
//! 32-byte transaction ID.
//!
//! Every test runs its own certmonger on its own D-Bus session bus (a private `dbus-daemon`
//! with a config in the test's temporary directory); nothing talks to the system bus or
//! writes under /var/lib/certmonger.
//!
//! certmonger's `scep-submit` passes the CA file given with `add-scep-ca -R` to libcurl for
//! GetCACaps/GetCACert but not for the PKIOperation request, which is then checked against
//! libcurl's built-in bundle (/etc/ssl/certs/ca-certificates.crt on Debian). So certmonger runs
//! in a private mount namespace (`unshare`) where that path is bind-mounted to Citadel's CA:
//! the machine's trust store is untouched.
//!
//! certmonger's 32-byte signer serial is longer than RFC 5280 allows a CA to issue; Citadel's
//! decoder accepts up to 64 bytes for such throwaway signers (certs/src/scep/asn1.rs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Appliance, run, text};

const GETCERT: &str = "/usr/bin/getcert";
const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";
/// The session-bus build of the daemon (keeps its state under $HOME/.config/certmonger).
/// `/usr/sbin/certmonger -s` would still keep it under /var/lib/certmonger.
const CERTMONGER_SESSION: [&str; 2] = [
    "/usr/lib/certmonger/certmonger-session",
    "/usr/libexec/certmonger/certmonger-session",
];
/// libcurl's default CA bundle on Debian.
const CURL_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn missing(what: &str) -> ! {
    panic!("{what} is missing: run `installer/dev.sh deps` (Debian packages certmonger, dbus-daemon)")
}

/// A private session bus and a certmonger-session on it, both killed on drop.
struct Certmonger {
    dir: PathBuf,
    env: Vec<(String, String)>,
    bus: Child,
    _bus_stdout: BufReader<ChildStdout>,
    daemon: Child,
}

impl Certmonger {
    /// Starts the bus and the daemon under `<a.tmp>/certmonger`, trusting `ca` for TLS.
    fn start(a: &Appliance, ca: &Path) -> Self {
        if !Path::new(GETCERT).exists() {
            missing("certmonger (getcert)");
        }
        if !Path::new(DBUS_DAEMON).exists() {
            missing("dbus-daemon");
        }
        let session = CERTMONGER_SESSION
            .iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| missing("certmonger-session"));
        assert!(
            Path::new(CURL_CA_BUNDLE).exists(),
            "{CURL_CA_BUNDLE} is missing: install ca-certificates"
        );

        let dir = a.tmp.path().join("certmonger");
        let home = dir.join("home");
        for sub in ["run", "tmp", ".config", ".cache", ".local/share"] {
            std::fs::create_dir_all(home.join(sub)).unwrap();
        }
        let config = home.join(".config/certmonger");
        let env: Vec<(String, String)> = vec![
            ("HOME", home.clone()),
            ("XDG_CONFIG_HOME", home.join(".config")),
            ("XDG_DATA_HOME", home.join(".local/share")),
            ("XDG_CACHE_HOME", home.join(".cache")),
            ("XDG_RUNTIME_DIR", home.join("run")),
            ("TMPDIR", home.join("tmp")),
            ("CERTMONGER_TMPDIR", home.join("tmp")),
            ("CERTMONGER_CONFIG_DIR", config.clone()),
            ("CERTMONGER_REQUESTS_DIR", config.join("requests")),
            ("CERTMONGER_CAS_DIR", config.join("cas")),
            ("CERTMONGER_LOCAL_CA_DIR", config.join("local")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.display().to_string()))
        .chain([
            // Whatever looks for a system bus finds none.
            (
                "DBUS_SYSTEM_BUS_ADDRESS".to_owned(),
                format!("unix:path={}", dir.join("no-system-bus").display()),
            ),
            ("LANG".to_owned(), "C".to_owned()),
            ("LC_ALL".to_owned(), "C".to_owned()),
        ])
        .collect();

        // The bus: session type, socket in our directory, no service activation.
        let bus_config = dir.join("bus.conf");
        std::fs::write(
            &bus_config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.display()
            ),
        )
        .unwrap();
        let mut bus = Command::new(DBUS_DAEMON)
            .arg(format!("--config-file={}", bus_config.display()))
            .args(["--nofork", "--print-address=1"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("dbus.log")).unwrap())
            .spawn()
            .unwrap();
        let mut bus_stdout = BufReader::new(bus.stdout.take().unwrap());
        let mut address = String::new();
        bus_stdout.read_line(&mut address).unwrap();
        let address = address.trim().to_owned();
        if !address.starts_with("unix:") {
            let _ = bus.kill();
            let _ = bus.wait();
            panic!(
                "dbus-daemon printed no address: {}",
                std::fs::read_to_string(dir.join("dbus.log")).unwrap_or_default()
            );
        }
        let mut env = env;
        env.push(("DBUS_SESSION_BUS_ADDRESS".to_owned(), address));

        // The daemon, in its own mount namespace where libcurl's bundle is Citadel's CA.
        let bundle = dir.join("trust.pem");
        std::fs::copy(ca, &bundle).unwrap();
        let is_root = text(&run(Command::new("id").arg("-u")).stdout).trim() == "0";
        let mut unshare = Command::new("unshare");
        if !is_root {
            unshare.arg("--map-root-user");
        }
        let daemon = unshare
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$2" && exec "$3" -s -n -d 2"#)
            .arg("sh")
            .arg(&bundle)
            .arg(CURL_CA_BUNDLE)
            .arg(session)
            .env_remove("DBUS_STARTER_ADDRESS")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("certmonger.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("certmonger.err")).unwrap())
            .spawn()
            .unwrap();
        let mut cm = Self {
            dir,
            env,
            bus,
            _bus_stdout: bus_stdout,
            daemon,
        };
        cm.wait_ready();
        cm
    }

    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("certmonger.log"), read("certmonger.err"))
    }

    fn getcert(&self, args: &[&str]) -> std::process::Output {
        run(Command::new(GETCERT)
            .args(args)
            .env_remove("DBUS_STARTER_ADDRESS")
            .envs(self.env.iter().map(|(k, v)| (k, v))))
    }

    /// Until certmonger answers on the bus.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.daemon.try_wait().unwrap() {
                panic!("certmonger exited early with {status}:\n{}", self.log());
            }
            if self.getcert(&["list-cas", "-s"]).status.success() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "certmonger did not come up on the session bus:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn add_scep_ca(&self, name: &str, url: &str, ca: &Path) {
        let out = self.getcert(&[
            "add-scep-ca",
            "-s",
            "-c",
            name,
            "-u",
            url,
            "-R",
            ca.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "getcert add-scep-ca: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// Files a request and polls it to a final state; returns (status, `getcert list` text).
    fn enrol(&self, ca_name: &str, nick: &str, challenge: &str) -> Enrolment {
        let dir = self.dir.join(format!("out-{nick}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, cert) = (dir.join("device.key"), dir.join("device.pem"));
        let started = Instant::now();
        let out = self.getcert(&[
            "request",
            "-s",
            "-c",
            ca_name,
            "-I",
            nick,
            "-k",
            key.to_str().unwrap(),
            "-f",
            cert.to_str().unwrap(),
            "-N",
            &format!("CN={nick}"),
            "-L",
            challenge,
        ]);
        assert!(
            out.status.success(),
            "getcert request: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        loop {
            let out = self.getcert(&["list", "-s", "-i", nick]);
            let listing = text(&out.stdout);
            let status = listing
                .lines()
                .find_map(|l| l.trim().strip_prefix("status:"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let stuck = listing.lines().any(|l| l.trim() == "stuck: yes");
            let done = stuck
                || matches!(
                    status.as_str(),
                    "MONITORING"
                        | "CA_REJECTED"
                        | "CA_UNREACHABLE"
                        | "CA_UNCONFIGURED"
                        | "NEED_GUIDANCE"
                        | "NEED_CA"
                        | "NEWLY_ADDED_NEED_KEYINFO_READ_PIN"
                );
            if done {
                return Enrolment {
                    status,
                    listing,
                    cert,
                    elapsed: started.elapsed(),
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "request {nick} still {status:?} after 60 s:\n{listing}\ncertmonger log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Certmonger {
    fn drop(&mut self) {
        for child in [&mut self.daemon, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Enrolment {
    status: String,
    listing: String,
    cert: PathBuf,
    elapsed: Duration,
}

fn challenge(a: &Appliance) -> String {
    let out = run(a.cmd().args(["scep", "challenge"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn certificates(a: &Appliance) -> Vec<serde_json::Value> {
    let out = run(a.cmd().args(["ca", "list", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Citadel's log without terminal colour codes.
fn plain_log(a: &Appliance) -> String {
    let raw = a.stderr();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn certmonger_enrols_by_get_with_aes_and_sha256_over_a_private_session_bus() {
    let a = Appliance::start();
    let ca = a.export_ca();
    let cm = Certmonger::start(&a, &ca);
    cm.add_scep_ca("citadel", &a.url("/scep"), &ca);

    let e = cm.enrol("citadel", "cm-device-1", &challenge(&a));
    let log = plain_log(&a);
    assert_eq!(
        e.status,
        "MONITORING",
        "certmonger did not get a certificate:\n{}\ncitadel log:\n{log}\ncertmonger log:\n{}",
        e.listing,
        cm.log()
    );
    eprintln!("certmonger enrolled in {:?}", e.elapsed);

    // The certificate on disk chains to Citadel's CA.
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg("-untrusted")
        .arg(a.export_chain())
        .arg(&e.cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let list = certificates(&a);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["status"]["state"], "active");
    assert_eq!(list[0]["issued_via"]["kind"], "one_time_challenge");

    // How it got there: PKIOperation by GET (no POST to /scep at all), AES + SHA-256.
    assert!(log.contains("SCEP certificate issued"), "{log}");
    assert!(log.contains("method=GET path=/scep status=200"), "{log}");
    assert!(
        !log.contains("method=POST path=/scep "),
        "certmonger should not POST:\n{log}"
    );
    assert!(!log.contains("single-DES"), "{log}");
    let cm_log = cm.log();
    assert!(cm_log.contains("Server supports AES, using AES256"), "{cm_log}");
    assert!(cm_log.contains("Server supports SHA-256, using that"), "{cm_log}");
}

#[test]
fn certmonger_with_a_wrong_challenge_is_rejected_and_nothing_is_issued() {
    let a = Appliance::start();
    let ca = a.export_ca();
    let cm = Certmonger::start(&a, &ca);
    cm.add_scep_ca("citadel", &a.url("/scep"), &ca);

    let e = cm.enrol("citadel", "cm-wrong", "NOT-A-REAL-CHALLENGE");
    let log = plain_log(&a);
    assert_eq!(
        e.status,
        "CA_REJECTED",
        "{}\ncitadel log:\n{log}\ncertmonger log:\n{}",
        e.listing,
        cm.log()
    );
    assert!(!e.cert.exists());
    assert!(certificates(&a).is_empty());
    assert!(log.contains("SCEP enrollment refused"), "{log}");
}
