//! The web console over a large fleet, in a real browser: the real binary serving a store of
//! 100,000 devices, Debian's Chromium driven over WebDriver (chromedriver). For the devices
//! page it reports time to first render (first contentful paint of the server-rendered page),
//! to interactive (hydrated), and to the first page of devices on screen; then a search and a
//! sort through the page; and the size of the embedded bundle as sent (compressed).
//!
//! `cargo bench --bench console` (`DEVICES=n` changes the fleet size, `RUNS=n` the page loads).
//! Needs `installer/build-ui.sh` before the build (the bundle is embedded), chromium and
//! chromium-driver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use citadel::store::{SledOptions, SledStore, Store};
use serde_json::{Value, json};

#[path = "common/fleet.rs"]
mod synthetic;
#[path = "../tests/common/webdriver.rs"]
mod webdriver;

use webdriver::Browser;

const BIN: &str = env!("CARGO_BIN_EXE_citadel");

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many times the device list has been drawn with an answer.
fn marks(d: &Browser) -> u64 {
    d.js("return performance.getEntriesByName('citadel-devices-ready').length")
        .as_u64()
        .unwrap_or(0)
}

/// Milliseconds until the list is drawn again after `before` draws.
fn redrawn(d: &Browser, before: u64) -> f64 {
    d.time_until(
        &format!("return performance.getEntriesByName('citadel-devices-ready').length > {before}"),
        Duration::from_secs(120),
    )
    .as_secs_f64()
        * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let devices: usize = std::env::var("DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = Command::new(BIN)
        .args(["--data-dir", data.to_str().unwrap(), "init", "--listen", &listen])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let started = Instant::now();
    {
        let store = SledStore::open(&data.join("store"), &SledOptions::default()).unwrap();
        synthetic::fill(&store, devices, time::OffsetDateTime::now_utc());
        store.flush().unwrap();
    }
    println!(
        "store: {devices} devices written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // An Owner without a second factor (this is a benchmark, not a deployment).
    let config = tmp.path().join("citadel.toml");
    std::fs::write(&config, "[admin]\nrequire_mfa = false\n").unwrap();
    let stdout = tmp.path().join("serve.out");
    let server = Command::new(BIN)
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "serve",
            "--listen",
            &listen,
            "--config",
            config.to_str().unwrap(),
        ])
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(tmp.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap();
    let _server = Killed(server);
    let base = format!("https://localhost:{port}");
    let http = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let started = Instant::now();
    while !http
        .get(format!("{base}/healthz"))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the appliance did not start: {}",
            std::fs::read_to_string(tmp.path().join("serve.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "appliance healthy after {:.1} s (index of {devices} built)",
        started.elapsed().as_secs_f64()
    );
    // `init` made the data directory, so it printed the one-time bootstrap secret.
    let secret = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 39 && l.matches('-').count() == 7)
        .expect("bootstrap secret")
        .to_owned();
    let password = "violet tram orbits the quay";
    let res = http
        .post(format!("{base}/api/v1/setup"))
        .json(&json!({ "bootstrap_secret": secret, "username": "bench", "display_name": "Bench", "password": password }))
        .send()
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().unwrap());
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({ "username": "bench", "password": password }))
        .send()
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-citadel_session="))
        .expect("session cookie");
    let (name, value) = cookie.split_once('=').unwrap();

    // The browser trusts the appliance's CA, as an administrator's managed desktop does.
    let d = Browser::launch(&tmp.path().join("browser"), &data.join("pki/ca.crt"));
    d.goto(&format!("{base}/favicon.ico"));
    d.call(
        reqwest::Method::POST,
        "/cookie",
        json!({ "cookie": { "name": name, "value": value, "path": "/", "secure": true, "httpOnly": true, "sameSite": "Strict" } }),
    );

    let (mut paint, mut hydrated, mut ready, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bundle = Value::Null;
    for run in 0..runs {
        let started = Instant::now();
        d.goto(&format!("{base}/devices"));
        d.time_until(
            "return performance.getEntriesByName('citadel-devices-ready').length > 0 && document.querySelectorAll('.table.devices tbody tr').length > 0",
            Duration::from_secs(120),
        );
        let wall = started.elapsed().as_secs_f64() * 1000.0;
        let t = d.js(
            "const p = n => performance.getEntriesByName(n)[0]?.startTime;
             return { paint: p('first-contentful-paint'), hydrated: p('citadel-hydrated'), ready: p('citadel-devices-ready'),
                      rows: document.querySelectorAll('.table.devices tbody tr').length,
                      shown: document.querySelector('[role=status]')?.innerText,
                      bundle: performance.getEntriesByType('resource').filter(e => e.name.includes('/pkg/'))
                        .map(e => ({ name: new URL(e.name).pathname, sent: e.encodedBodySize, size: e.decodedBodySize })) }",
        );
        println!("run {run}: {t}  (wall {wall:.0} ms)");
        if run == 0 {
            // The first load fills the browser's cache: not what an administrator sees daily.
            bundle = t["bundle"].clone();
            continue;
        }
        paint.push(t["paint"].as_f64().unwrap_or(f64::NAN));
        hydrated.push(t["hydrated"].as_f64().unwrap_or(f64::NAN));
        ready.push(t["ready"].as_f64().unwrap_or(f64::NAN));
        total.push(wall);
    }

    // A search and a sort through the page (each: the URL changes, the API answers, the table
    // is redrawn).
    let mut search = Vec::new();
    let mut sort = Vec::new();
    for i in 0..runs {
        let term = format!("Ward {}", i % 40);
        let id = d.find("#device-search");
        d.call(reqwest::Method::POST, &format!("/element/{id}/clear"), json!({}));
        let before = marks(&d);
        d.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": format!("{term}\n") }),
        );
        search.push(redrawn(&d, before));
        let before = marks(&d);
        d.js("document.querySelector('th[aria-sort] button').click(); return null");
        sort.push(redrawn(&d, before));
    }

    println!();
    println!(
        "devices page over {devices} devices, median of {} loads (cached bundle):",
        runs - 1
    );
    println!(
        "  first contentful paint (server-rendered page)   {:7.0} ms",
        median(paint)
    );
    println!(
        "  interactive (hydrated)                          {:7.0} ms",
        median(hydrated)
    );
    println!(
        "  first page of devices on screen                 {:7.0} ms",
        median(ready)
    );
    println!(
        "  WebDriver navigation to devices on screen       {:7.0} ms",
        median(total)
    );
    println!(
        "  search typed → table redrawn                    {:7.0} ms",
        median(search)
    );
    println!(
        "  sort clicked → table redrawn                    {:7.0} ms",
        median(sort)
    );
    println!("bundle as sent on the first load (bytes over the wire / decoded):");
    for f in bundle.as_array().cloned().unwrap_or_default() {
        println!(
            "  {:24} {:>9} / {:>9}",
            f["name"].as_str().unwrap_or(""),
            f["sent"],
            f["size"]
        );
    }
}
