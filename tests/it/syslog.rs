//! Forwarding the audit log to a real syslog collector (Debian's rsyslog, which parses the
//! RFC 5424 messages) over TCP and over TLS, across a collector outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Appliance, free_port, run, text};
use crate::mdm::api_token;

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn test_pki(dir: &Path) {
    let sh = format!(
        "set -e; cd {dir:?}
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
          -days 2 -subj '/CN=Test SIEM CA' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=siem 2>/dev/null
        printf 'basicConstraints=critical,CA:FALSE\\nextendedKeyUsage=serverAuth\\nsubjectAltName=IP:127.0.0.1\\n' > ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null"
    );
    let out = run(Command::new("sh").args(["-c", &sh]));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// rsyslogd in the foreground, writing each message's parsed RFC 5424 fields to a file.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    port: u16,
    tls: bool,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, tls: bool) -> Self {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let d = dir.display();
        let (global_tls, module) = if tls {
            (
                format!(
                    " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
                     DefaultNetstreamDriverCertFile=\"{d}/server.pem\" DefaultNetstreamDriverKeyFile=\"{d}/server.key\""
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")",
            )
        } else {
            (String::new(), "module(load=\"imtcp\")")
        };
        let conf = format!(
            r#"global(workDirectory="{d}/work"{global_tls})
{module}
template(name="fields" type="list") {{
  property(name="pri") constant(value="|")
  property(name="timereported" dateFormat="rfc3339") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="structured-data") constant(value="|")
  property(name="msg") constant(value="\n")
}}
ruleset(name="audit") {{ action(type="omfile" file="{d}/received.log" template="fields") }}
input(type="imtcp" port="{port}" ruleset="audit")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.join("rsyslogd.out")).unwrap();
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rsyslogd is installed: run installer/dev.sh deps");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "rsyslogd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            dir: dir.to_owned(),
            port,
            tls,
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Received messages as (pri, hostname, app, msgid, structured data, msg).
    fn received(&self) -> Vec<[String; 6]> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(7, '|').collect();
                [f[0], f[2], f[3], f[4], f[5], f[6]].map(str::to_owned)
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    fn wait_for(&self, n: usize) -> Vec<[String; 6]> {
        let started = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} of {n} messages arrived: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn appliance(collector: &Rsyslog) -> Appliance {
    let mut a = Appliance::new();
    let tls = if collector.tls {
        format!("tls = true\nca_file = {:?}\n", collector.dir.join("ca.pem"))
    } else {
        "tls = false\n".to_owned()
    };
    let config = a.tmp.path().join("syslog.toml");
    std::fs::write(
        &config,
        format!(
            "[audit.syslog]\naddress = \"127.0.0.1:{}\"\nhostname = \"citadel-test\"\n{tls}",
            collector.port
        ),
    )
    .unwrap();
    a.spawn(&["--config", config.to_str().unwrap()]);
    a.wait_healthy();
    a
}

fn challenge(a: &Appliance, token: &str) {
    let res = a
        .client()
        .post(a.url("/api/v1/scep/challenges"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
}

/// The sequence numbers of the audit records among `messages`, in arrival order.
fn seqs(messages: &[[String; 6]]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m[3] != "audit.checkpoint")
        .map(|m| {
            serde_json::from_str::<Value>(&m[5]).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn audit_records_reach_a_tls_syslog_collector_as_rfc5424() {
    let tmp = tempfile::tempdir().unwrap();
    test_pki(tmp.path());
    let collector = Rsyslog::start(tmp.path(), free_port(), true);
    let a = appliance(&collector);
    let token = api_token(&a);
    challenge(&a, &token);
    challenge(&a, &token);
    let out = run(a.cmd().args(["audit", "checkpoint"]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let got = collector.wait_for(4);
    let msgids: Vec<&str> = got.iter().map(|m| m[3].as_str()).collect();
    assert_eq!(
        msgids,
        [
            "api_token.create",
            "scep_challenge.create",
            "scep_challenge.create",
            "audit.checkpoint"
        ]
    );
    for m in &got[..3] {
        assert_eq!(m[0], "110", "facility 13 (log audit), severity 6");
        assert_eq!(m[1], "citadel-test");
        assert_eq!(m[2], "citadel");
        assert!(m[4].starts_with("[citadel@32473 seq=\""), "{}", m[4]);
    }
    // The message is the record itself: its hash is the one the appliance holds.
    let listed: Value = a
        .client()
        .get(a.url("/api/v1/audit"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    for (m, r) in got[..3].iter().zip(listed["items"].as_array().unwrap()) {
        let forwarded: Value = serde_json::from_str(&m[5]).unwrap();
        assert_eq!(&forwarded, r);
        assert!(m[4].contains(&format!("hash=\"{}\"", r["hash"].as_str().unwrap())));
    }
    let checkpoint: Value = serde_json::from_str(&got[3][5]).unwrap();
    assert_eq!(checkpoint["seq"], 3);
    let health: Value = a.client().get(a.url("/healthz")).send().unwrap().json().unwrap();
    assert_eq!(health["audit_forwarding"]["connected"], true);
}

#[test]
fn forwarding_resumes_after_a_collector_outage_without_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut collector = Rsyslog::start(tmp.path(), port, false);
    let a = appliance(&collector);
    let token = api_token(&a);
    challenge(&a, &token);
    assert_eq!(seqs(&collector.wait_for(2)), [1, 2]);

    // The collector goes away; the appliance keeps recording.
    collector.stop();
    for _ in 0..3 {
        challenge(&a, &token);
    }
    std::thread::sleep(Duration::from_secs(1));
    let collector = Rsyslog::start(tmp.path(), port, false);
    let got = collector.wait_for(5);
    let mut seen = seqs(&got);
    // At least once and in order: a batch that may have been lost is sent again.
    seen.dedup();
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique, [1, 2, 3, 4, 5], "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1] || w[1] <= 2), "{seen:?}");
}
