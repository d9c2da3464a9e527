//! The web console in a real browser: Debian's Chromium driven over WebDriver by chromedriver.
//! Chromium trusts Citadel's CA through its NSS database, as a managed desktop would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Appliance, free_port, text};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    /// Starts chromedriver with a private HOME whose NSS database trusts `ca`.
    fn launch(home: &Path, ca: &Path) -> Self {
        for tool in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run `installer/dev.sh deps`"
            );
        }
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        let certutil = |args: &[&str]| {
            let out = Command::new("certutil")
                .args(args)
                .output()
                .expect("certutil (libnss3-tools)");
            assert!(out.status.success(), "certutil {args:?}: {}", text(&out.stderr));
        };
        certutil(&["-d", &db, "-N", "--empty-password"]);
        certutil(&[
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "citadel-test-ca",
            "-i",
            ca.to_str().unwrap(),
        ]);

        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let started = Instant::now();
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = home.join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,800",
                         format!("--user-data-dir={}", profile.display())]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            http,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res: Value = req.send().unwrap().json().unwrap();
        if let Some(err) = res["value"].get("error") {
            panic!("WebDriver {path}: {err}: {}", res["value"]["message"]);
        }
        res["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Browser console entries since the last call.
    fn console(&self) -> Vec<Value> {
        self.call(reqwest::Method::POST, "/se/log", json!({ "type": "browser" }))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn screenshot(&self, to: &Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", Value::Null);
        let png = data_encoding::BASE64
            .decode(b64.as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn console_renders_hydrates_and_navigates_in_chromium() {
    let a = Appliance::start();
    // The server-rendered page must not claim to be hydrated: only the wasm may set it.
    let html = a.client().get(a.url("/")).send().unwrap().text().unwrap();
    assert!(html.contains("<nav"), "{html}");
    assert!(!html.contains("data-hydrated"), "{html}");

    let home = a.tmp.path().join("browser-home");
    let browser = Browser::launch(&home, &a.export_ca());
    browser.goto(&a.url("/"));
    browser.wait_for("hydration", "return document.body.dataset.hydrated === 'true'");

    let loaded =
        browser.js("return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)");
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(
        loaded
            .iter()
            .any(|p| p.starts_with("/pkg/") && p.ends_with(".js")),
        "{loaded:?}"
    );
    assert!(
        loaded
            .iter()
            .any(|p| p.starts_with("/pkg/") && p.ends_with(".wasm")),
        "{loaded:?}"
    );
    let title = browser.js("return document.title");
    assert!(title.as_str().unwrap_or_default().contains("Citadel"), "{title}");
    browser.screenshot(&screenshot_path("dashboard.png"));

    // Client-side navigation works after hydration: no full page load.
    browser.js("window.__citadel_marker = 1; return null");
    browser.js("document.querySelector('nav a[href=\"/devices\"]').click(); return null");
    browser.wait_for("devices page", "return location.pathname === '/devices' && document.querySelector('h1')?.textContent.includes('Devices')");
    assert_eq!(
        browser.js("return window.__citadel_marker"),
        json!(1),
        "navigation reloaded the page"
    );
    assert_eq!(
        browser.js("return document.querySelector('nav a[aria-current=\"page\"]')?.getAttribute('href')"),
        json!("/devices")
    );

    let errors: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}
