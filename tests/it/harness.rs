//! Starts the real `citadel` binary on a free port with a temporary data directory and waits
//! for `citadel healthcheck` to pass, the way an operator's supervisor would.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_citadel");

/// A `citadel` command with a clean environment: no stray CITADEL_* variables, no system
/// config file picked up by accident.
pub fn citadel(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("CITADEL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub struct Appliance {
    pub tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    run_count: usize,
    /// Whether enrolling devices get the inventory commands queued. Off unless a test asks:
    /// the protocol tests check the queue command by command.
    pub inventory_on_enrollment: bool,
}

impl Appliance {
    /// A fresh data directory (not yet created: citadel creates it) and a free port.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        Self {
            tmp,
            data_dir,
            port: free_port(),
            child: None,
            run_count: 0,
            inventory_on_enrollment: false,
        }
    }

    pub fn start() -> Self {
        let mut a = Self::new();
        a.spawn(&[]);
        a.wait_healthy();
        a
    }

    pub fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    pub fn cmd(&self) -> Command {
        citadel(&self.data_dir)
    }

    fn log_path(&self, stream: &str, run: usize) -> PathBuf {
        self.tmp.path().join(format!("{stream}.{run}.log"))
    }

    /// Starts `citadel serve` with extra arguments; output goes to per-run log files.
    pub fn spawn(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "already running");
        self.run_count += 1;
        let stdout = std::fs::File::create(self.log_path("stdout", self.run_count)).unwrap();
        let stderr = std::fs::File::create(self.log_path("stderr", self.run_count)).unwrap();
        let child = self
            .cmd()
            .args(["serve", "--listen", &self.listen()])
            .args(extra)
            .env(
                "CITADEL_MDM__INVENTORY_ON_ENROLLMENT",
                self.inventory_on_enrollment.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log_path("stdout", self.run_count)).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_path("stderr", self.run_count)).unwrap_or_default()
    }

    /// Polls `citadel healthcheck` until it passes.
    pub fn wait_healthy(&mut self) -> Duration {
        self.wait_healthy_with(&[])
    }

    pub fn wait_healthy_with(&mut self, healthcheck_args: &[&str]) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!("citadel exited early with {status}\nstderr:\n{}", self.stderr());
            }
            let out = run(self
                .cmd()
                .args(["healthcheck", "--listen", &self.listen(), "--timeout", "2"])
                .args(healthcheck_args));
            if out.status.success() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "citadel did not become healthy: {}\nstderr:\n{}",
                text(&out.stderr),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("citadel did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or clean up, like a power cut.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("not running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn restart(&mut self) {
        assert_eq!(self.stop(), 0, "stderr:\n{}", self.stderr());
        self.spawn(&[]);
        self.wait_healthy();
    }

    /// The root CA as `citadel ca export` prints it, written to a file for other tools.
    pub fn export_ca(&self) -> PathBuf {
        let out = run(self.cmd().args(["ca", "export"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let path = self.tmp.path().join("exported-ca.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    /// The issuing CA and the root (`citadel ca export --chain`), for verifying device
    /// certificates.
    pub fn export_chain(&self) -> PathBuf {
        let out = run(self.cmd().args(["ca", "export", "--chain"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let path = self.tmp.path().join("exported-chain.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    /// An HTTPS client that trusts only this appliance's CA.
    pub fn client(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read(self.export_ca()).unwrap();
        reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
