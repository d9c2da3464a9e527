//! A browser for the console's tests and benchmarks: Debian's Chromium driven over W3C
//! WebDriver by chromedriver, trusting the appliance's CA through its own NSS database (as a
//! managed desktop would). Shared by `tests/it/browser.rs` and `benches/console.rs` by path.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    pub http: reqwest::blocking::Client,
}

impl Browser {
    /// Starts chromedriver with a private HOME whose NSS database trusts `ca`.
    pub fn launch(home: &Path, ca: &Path) -> Self {
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
            assert!(
                out.status.success(),
                "certutil {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
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

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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

    pub fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
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

    pub fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }));
    }

    pub fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    pub fn wait_for(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what} at {}: {}",
                self.js("return location.href"),
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How long until `script` returns true, polled every 5 ms (for measurements).
    pub fn time_until(&self, script: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        while self.js(script) != json!(true) {
            assert!(started.elapsed() < timeout, "timed out: {script}");
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    /// Runs `script` with a `done` callback as its last argument and returns what it passes.
    pub fn js_async(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            json!({ "script": script, "args": [] }),
        )
    }

    /// The WebDriver element matching `css`, waiting for it to appear.
    pub fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let res: Value = self
                .http
                .post(url)
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if let Some(id) = res["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no element {css}: {}",
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call(reqwest::Method::POST, &format!("/element/{id}/click"), json!({}));
    }

    /// Types into a field as a user would (key events, so the page's bindings see it).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(reqwest::Method::POST, &format!("/element/{id}/clear"), json!({}));
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    pub fn text_of(&self, css: &str) -> String {
        self.find(css);
        self.js(&format!(
            "return document.querySelector({}).innerText",
            json!(css)
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Clicks the first button whose text is exactly `label`.
    pub fn click_button(&self, label: &str) {
        self.wait_for(
            label,
            &format!(
                "const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === {}); if (b) b.click(); return !!b",
                json!(label)
            ),
        );
    }

    /// Sets a `<select>` as a user choosing an option would.
    pub fn choose(&self, css: &str, value: &str) {
        self.find(css);
        self.js(&format!(
            "const s = document.querySelector({}); s.value = {}; s.dispatchEvent(new Event('change')); return null",
            json!(css),
            json!(value)
        ));
    }

    /// Loads `url` again (once a second) until `script` holds: for what devices do meanwhile.
    pub fn reload_until(&self, url: &str, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            self.goto(url);
            self.wait_for(
                "hydration",
                "return document.body.dataset.hydrated === 'true' && !document.querySelector('.loading')",
            );
            if self.js(script) == json!(true) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}: {}",
                self.js("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    pub fn wait_text(&self, what: &str, needle: &str) {
        self.wait_for(
            what,
            &format!("return document.body.innerText.includes({})", json!(needle)),
        );
    }

    /// Browser console entries since the last call.
    pub fn console(&self) -> Vec<Value> {
        self.call(reqwest::Method::POST, "/se/log", json!({ "type": "browser" }))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn screenshot(&self, to: &Path) {
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
