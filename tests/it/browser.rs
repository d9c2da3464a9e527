//! The web console in a real browser: Debian's Chromium driven over WebDriver by chromedriver
//! (`tests/common/webdriver.rs`), trusting Citadel's CA as a managed desktop would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Appliance, run, text};
use crate::iam::{bootstrap_secret, totp};
use crate::mdm::api_token;
use crate::push::AppleCa;
use crate::webdriver::Browser;

/// Screenshots of the main pages, kept as CI artefacts: `target/ui-screenshots/`.
fn screenshot_path(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Signs in through the form; `code` for accounts with a second factor.
fn sign_in(browser: &Browser, a: &Appliance, username: &str, password: &str, code: Option<&str>) {
    browser.goto(&a.url("/login"));
    browser.wait_for("hydration", "return document.body.dataset.hydrated === 'true'");
    browser.type_into("#username", username);
    browser.type_into("#password", password);
    if let Some(code) = code {
        browser.type_into("#code", code);
    }
    browser.click("form button[type=submit]");
    browser.wait_for(
        "signed in",
        "return location.pathname !== '/login' && document.body.dataset.hydrated === 'true' && !!document.querySelector('.user-menu')",
    );
}

fn sign_out(browser: &Browser) {
    browser.click(".user-menu button");
    browser.wait_for("sign-in page", "return location.pathname === '/login'");
}

/// Every console error or CSP violation the browser logged.
fn assert_no_console_errors(browser: &Browser) {
    let errors: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
        // Refused API calls are logged by the browser: the session probes before signing in
        // (401, console and portal) and the help desk's erase attempt (403).
        .filter(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            let probe = |path: &str| {
                m.contains(&format!(
                    "{path} - Failed to load resource: the server responded with a status of 401"
                ))
            };
            !m.contains("status of 403") && !probe("/api/v1/auth/session") && !probe("/api/v1/portal/me")
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

const OWNER: &str = "olivia";
const OWNER_PASSWORD: &str = "violet tram orbits the quay";
const HELP_DESK: &str = "harold";
const HELP_DESK_PASSWORD: &str = "seven lanterns over the weir";

/// The issue's walk through the console in Chromium: first sign-in and TOTP set-up, sign-in with
/// TOTP, simulated devices appearing, filtering, a device's page, DeviceLock sent and
/// acknowledged, the audit entry; a help-desk user without the Erase button who gets 403 when
/// calling erase anyway. Screenshots of each main page.
#[test]
fn an_administrator_runs_the_fleet_from_the_console_in_chromium() {
    let a = Appliance::start();
    // The server-rendered page must not claim to be hydrated: only the wasm may set it.
    let res = a.client().get(a.url("/devices")).send().unwrap();
    let policy = res
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(policy.contains("script-src 'self' 'nonce-"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = res.text().unwrap();
    assert!(html.contains("<nav"), "{html}");
    assert!(!html.contains("data-hydrated"), "{html}");

    let home = a.tmp.path().join("browser-home");
    let browser = Browser::launch(&home, &a.export_ca());

    // Not signed in: any page leads to the sign-in form, and back after it.
    browser.goto(&a.url("/devices?platform=ios"));
    browser.wait_for(
        "redirect to sign-in",
        "return location.pathname === '/login' && document.body.dataset.hydrated === 'true'",
    );
    let loaded =
        browser.js("return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)");
    let loaded: Vec<String> = serde_json::from_value(loaded).unwrap();
    assert!(loaded.iter().any(|p| p == "/pkg/citadel.js"), "{loaded:?}");
    assert!(loaded.iter().any(|p| p == "/pkg/citadel_bg.wasm"), "{loaded:?}");
    // Nothing from anywhere but the appliance.
    let origin = a.url("");
    let foreign = browser.js(&format!(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith({}))",
        json!(origin.trim_end_matches('/'))
    ));
    assert_eq!(foreign, json!([]));
    browser.screenshot(&screenshot_path("sign-in.png"));

    // First start: the bootstrap secret (as `citadel serve` printed it) makes the first Owner,
    // who is signed in and asked for a second factor.
    browser.click("a[href='/setup']");
    browser.wait_for(
        "set-up page",
        "return location.pathname === '/setup' && !!document.querySelector('#setup-secret')",
    );
    browser.type_into("#setup-secret", &bootstrap_secret(&a));
    browser.type_into("#setup-username", OWNER);
    browser.type_into("#setup-display", "Olivia Owner");
    browser.type_into("#setup-password", OWNER_PASSWORD);
    browser.type_into("#setup-repeat", OWNER_PASSWORD);
    browser.click("form button[type=submit]");
    browser.wait_for(
        "account set-up",
        "return location.pathname === '/account' && !!document.querySelector('#totp-secret')",
    );
    let secret = browser.text_of("#totp-secret");
    browser.type_into("#totp-code", &totp(&secret, 0));
    browser.click("#totp-code ~ button[type=submit]");
    browser.wait_for(
        "recovery codes",
        "return document.querySelectorAll('.codes li').length === 10",
    );
    sign_out(&browser);

    // Signing in with the TOTP code (the next step's: each code works once).
    sign_in(&browser, &a, OWNER, OWNER_PASSWORD, Some(&totp(&secret, 1)));
    browser.wait_for(
        "dashboard",
        "return location.pathname === '/' && document.querySelector('h1')?.textContent === 'Dashboard'",
    );
    browser.wait_text("empty fleet", "No devices yet");

    // Simulated devices enrol (polling every second, so commands are answered without APNs).
    let token = api_token(&a);
    let mut simulator = a
        .cmd()
        .args([
            "simulate",
            "--server",
            &a.url(""),
            "--ca",
            a.export_ca().to_str().unwrap(),
            "--api-token",
            &token,
            "--devices",
            "6",
            "--concurrency",
            "3",
            "--duration",
            "300s",
            "--mix",
            "iphone=1,mac=1",
            "--poll-interval",
            "1s",
            "--seed",
            "9",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _simulator = Kill(&mut simulator);

    browser.js("document.querySelector('nav a[href=\"/devices\"]').click(); return null");
    let started = Instant::now();
    loop {
        browser.wait_for(
            "device list",
            "return !!document.querySelector('.table.devices, .empty-state')",
        );
        if browser.js("return document.body.innerText.includes('of 6 devices')") == json!(true) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "devices did not appear"
        );
        std::thread::sleep(Duration::from_secs(1));
        browser.goto(&a.url("/devices"));
    }
    browser.wait_for("hydration", "return document.body.dataset.hydrated === 'true'");
    browser.screenshot(&screenshot_path("devices.png"));

    // Client-side navigation and filtering: no full page load.
    browser.js("window.__citadel_marker = 1; return null");
    browser.js("const s = document.querySelector('#filter-platform'); s.value = 'ios'; s.dispatchEvent(new Event('change')); return null");
    browser.wait_for(
        "filtered list",
        "return location.search.includes('platform=ios') && document.body.innerText.includes('of 3 devices')",
    );
    let platforms = browser.js("return [...document.querySelectorAll('.table.devices tbody tr')].map(r => r.innerText.includes('iOS'))");
    assert_eq!(platforms, json!([true, true, true]));
    assert_eq!(
        browser.js("return window.__citadel_marker"),
        json!(1),
        "filtering reloaded the page"
    );
    assert_eq!(
        browser.js("return document.querySelector('nav a[aria-current=\"page\"]')?.getAttribute('href')"),
        json!("/devices")
    );

    // Open the first iPhone, lock it, and watch the command be acknowledged.
    browser.click(".table.devices tbody tr td a");
    browser.wait_for("device page", "return location.pathname.startsWith('/devices/') && !!document.querySelector('button[data-action=lock]')");
    let device_path = browser
        .js("return location.pathname")
        .as_str()
        .unwrap()
        .to_owned();
    let device_id = device_path.trim_start_matches("/devices/").to_owned();
    assert!(browser.js("return !!document.querySelector('button[data-action=erase]')") == json!(true));
    browser.click("button[data-action=lock]");
    browser.type_into("#action-reason", "Reported lost in ward 4");
    browser.type_into("#action-message", "Please return to IT");
    browser.click("button[data-confirm=action]");
    browser.wait_text("command in history", "DeviceLock");
    browser.wait_for(
        "DeviceLock acknowledged",
        "return [...document.querySelectorAll('#commands tr')].some(r => r.innerText.includes('DeviceLock') && r.innerText.toLowerCase().includes('acknowledged'))",
    );
    browser.screenshot(&screenshot_path("device.png"));
    // This appliance does not ask new devices for inventory by itself (the test harness turns
    // that off): ask from the page, and the device answers (it is supervised, which lost mode
    // needs later).
    browser.click("button[data-refresh=inventory]");
    browser.wait_for(
        "inventory answered",
        "return [...document.querySelectorAll('#commands tr')].some(r => r.innerText.includes('DeviceInformation') && r.innerText.toLowerCase().includes('acknowledged'))",
    );
    // The phone is Nina's: she will see it in the self-service portal.
    browser.type_into("#assign-user", "nina");
    browser.click("form:has(#assign-user) button[type=submit]");
    browser.wait_text("assigned", "Saved: the device belongs to nina in the portal.");
    assert!(browser.text_of("#overview").contains("nina"));

    // The raw plist of the command and of the device's answer.
    browser.js("const d = [...document.querySelectorAll('#commands tr')].find(r => r.innerText.includes('DeviceLock')).querySelector('details'); d.open = true; d.dispatchEvent(new Event('toggle')); return null");
    browser.wait_for(
        "plists",
        "return [...document.querySelectorAll('pre.plist')].length === 2",
    );
    let plists = browser.js("return [...document.querySelectorAll('pre.plist')].map(p => p.innerText)");
    assert!(
        plists[0]
            .as_str()
            .unwrap()
            .contains("<string>DeviceLock</string>"),
        "{plists}"
    );
    assert!(
        plists[1]
            .as_str()
            .unwrap()
            .contains("<string>Acknowledged</string>"),
        "{plists}"
    );

    // The audit log shows who locked it and why.
    browser.js("document.querySelector('nav a[href=\"/audit\"]').click(); return null");
    browser.wait_for(
        "audit entry",
        &format!(
            "return [...document.querySelectorAll('.table.audit tbody tr')].some(r => r.innerText.includes('device.action.lock') && r.innerText.includes({}) && r.innerText.includes('Reported lost in ward 4'))",
            json!(device_id)
        ),
    );
    browser.screenshot(&screenshot_path("audit.png"));

    browser.js("document.querySelector('nav a[href=\"/\"]').click(); return null");
    browser.wait_for("dashboard charts", "return [...document.querySelectorAll('.chart img')].length === 3 && [...document.querySelectorAll('.chart img')].every(i => i.complete && i.naturalWidth > 0)");
    assert!(browser.js("return document.body.textContent.includes('Enrolled devices')") == json!(true));
    browser.screenshot(&screenshot_path("dashboard.png"));

    // Keyboard: on a freshly loaded page the first Tab reaches the skip link, which is visible
    // when focused.
    browser.goto(&a.url("/"));
    browser.wait_for("hydration", "return document.body.dataset.hydrated === 'true'");
    browser.call(
        reqwest::Method::POST,
        "/actions",
        json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
            { "type": "keyDown", "value": "\u{E004}" }, { "type": "keyUp", "value": "\u{E004}" }] }] }),
    );
    assert_eq!(
        browser.js("return document.activeElement?.className"),
        json!("skip-link")
    );
    assert_eq!(
        browser.js("return document.activeElement.getBoundingClientRect().top >= 0"),
        json!(true)
    );

    // The other main pages render their data (screenshots for the record).
    for (path, ready) in [
        ("/enrollment", "document.querySelector('#link-ttl')"),
        (
            "/commands",
            "document.querySelectorAll('#command-type option').length > 50",
        ),
        (
            "/settings",
            "document.body.innerText.includes('Certificate authority') && document.body.innerText.includes('Enrollment and inventory') && !document.querySelector('.loading')",
        ),
        (
            "/settings/administrators",
            "document.body.innerText.includes(\"olivia\") && !document.querySelector('.loading')",
        ),
        (
            "/settings/tokens",
            "!document.querySelector('.loading') && !!document.querySelector('#token-name')",
        ),
    ] {
        browser.goto(&a.url(path));
        browser.wait_for(
            path,
            &format!("return document.body.dataset.hydrated === 'true' && !!({ready})"),
        );
        browser.screenshot(&screenshot_path(&format!(
            "{}.png",
            path.trim_start_matches('/').replace('/', "-")
        )));
    }

    // A command from Apple's schema to the three iPhones, with its progress counting up live.
    browser.goto(&a.url("/commands"));
    browser.wait_for("command catalog", "return document.body.dataset.hydrated === 'true' && document.querySelectorAll('#command-type option').length > 50");
    browser.js("const s = document.querySelector('#command-type'); s.value = 'SecurityInfo'; s.dispatchEvent(new Event('change')); return null");
    browser.js("const s = document.querySelector('#target-platform'); s.value = 'ios'; s.dispatchEvent(new Event('change')); return null");
    browser.wait_text("targets counted", "3 active devices will receive the command.");
    browser.click(".command-form > button[type=submit]");
    browser.wait_for(
        "command acknowledged by all three",
        "return document.querySelector('.progress dd[data-status=Acknowledged]')?.innerText === '3'",
    );
    browser.screenshot(&screenshot_path("commands-progress.png"));

    // The push certificate from the console: a request made on the appliance (checked by
    // openssl), signed by a stand-in for Apple, uploaded back.
    browser.goto(&a.url("/settings"));
    browser.wait_for(
        "settings",
        "return document.body.dataset.hydrated === 'true' && !!document.querySelector('#csr-email')",
    );
    browser.click("#csr-email ~ button[type=submit]");
    browser.wait_for(
        "certificate request",
        "return (document.querySelector('#csr-pem')?.value || '').includes('BEGIN CERTIFICATE REQUEST')",
    );
    let csr = a.tmp.path().join("console-push.csr");
    std::fs::write(
        &csr,
        browser
            .js("return document.querySelector('#csr-pem').value")
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let out = run(Command::new("openssl")
        .args(["req", "-noout", "-verify", "-in"])
        .arg(&csr));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let apple = AppleCa::create(a.tmp.path());
    let cert =
        std::fs::read_to_string(apple.issue(&csr, "com.apple.mgmt.External.console-test", "console-push"))
            .unwrap();
    browser.type_into("#push-pem", &cert);
    browser.click("#push-pem ~ button[type=submit]");
    browser.wait_text("push certificate imported", "Push certificate imported.");
    browser.wait_text("topic shown", "com.apple.mgmt.External.console-test");
    // Its renewal with a new key, as PKCS#12 (as Keychain exports it), chosen as a file.
    let (renewed, renewed_key) = apple.issue_with_key("com.apple.mgmt.External.console-test", "console-p12");
    let p12 = a.tmp.path().join("console-push.p12");
    let out = run(Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-legacy",
            "-passout",
            "pass:p12 secret",
            "-in",
        ])
        .arg(&renewed)
        .arg("-inkey")
        .arg(&renewed_key)
        .arg("-out")
        .arg(&p12));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file_input = browser.find("#push-p12");
    browser.call(
        reqwest::Method::POST,
        &format!("/element/{file_input}/value"),
        json!({ "text": p12.to_str().unwrap() }),
    );
    browser.type_into("#push-p12-password", "p12 secret");
    browser.click("#push-p12-password ~ button[type=submit]");
    browser.wait_text("PKCS#12 imported", "Push certificate and key imported.");
    let status: Value = a
        .client()
        .get(a.url("/api/v1/push-cert"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let renewed_serial = run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&renewed));
    let norm = |s: &str| s.replace(':', "").trim_start_matches('0').to_lowercase();
    assert_eq!(
        norm(status["serial"].as_str().unwrap_or_default()),
        norm(text(&renewed_serial.stdout).trim().trim_start_matches("serial=")),
        "{status}"
    );

    // A selection on the Devices page carried to the Commands page: exactly those devices.
    browser.goto(&a.url("/devices?platform=macos"));
    browser.wait_for("the Macs", "return document.body.dataset.hydrated === 'true' && document.body.innerText.includes('of 3 devices')");
    browser.click("input[aria-label='Select all devices on this page']");
    browser.wait_text("selection", "3 devices selected");
    browser.click("a[href^='/commands?devices=']");
    browser.wait_text(
        "carried selection",
        "3 devices chosen on the Devices page will receive the command.",
    );
    browser.wait_for(
        "command catalog",
        "return document.querySelectorAll('#command-type option').length > 50",
    );
    browser.choose("#command-type", "SecurityInfo");
    browser.click(".command-form > button[type=submit]");
    browser.wait_for(
        "command acknowledged by the three Macs",
        "return document.querySelector('.progress dd[data-status=Acknowledged]')?.innerText === '3'",
    );

    // Administrators and roles: a custom role, an administrator given it, then changed,
    // given a temporary password and a new second factor, and removed — each confirmed.
    browser.goto(&a.url("/settings/administrators"));
    browser.wait_for(
        "administrators",
        "return document.body.dataset.hydrated === 'true' && !document.querySelector('.loading')",
    );
    browser.click_button("New role");
    browser.type_into("#role-name", "ward_support");
    browser.type_into("#role-description", "Ward devices only");
    browser.click("#perm-devices-read");
    browser.click("#perm-devices-lock");
    browser.click("#edit-role button[type=submit]");
    browser.wait_text("custom role listed", "Ward devices only");
    browser.click(".page-actions button.primary");
    browser.type_into("#new-username", "dora");
    browser.type_into("#new-display", "Dora Desk");
    browser.wait_for(
        "custom role offered",
        "return !!document.querySelector('#new-role option[value=ward_support]')",
    );
    browser.choose("#new-role", "ward_support");
    browser.type_into("#new-password", "a first password for dora");
    browser.click("#create-user button[type=submit]");
    browser.click_button("Manage dora");
    // The dialog shows her role as it is (a select built before its options would not).
    browser.wait_for(
        "her role shown",
        "return document.querySelector('#manage-role')?.selectedOptions[0]?.value === 'ward_support'",
    );
    browser.type_into("#manage-display", "Dora D. Desk");
    browser.choose("#manage-role", "help_desk");
    browser.click("#manage-display ~ button[type=submit]");
    browser.wait_text("saved", "Changes saved.");
    browser.type_into("#manage-password", "a temporary password for dora");
    browser.click("#manage-password ~ button[type=submit]");
    browser.wait_text("password reset", "Temporary password set");
    browser.click_button("Reset second factor");
    browser.click("#manage-user .confirm-inline button.danger");
    browser.wait_text("second factor reset", "Second factor removed");
    browser.screenshot(&screenshot_path("settings-manage-administrator.png"));
    browser.click_button("Remove dora");
    browser.click("#manage-user .confirm-inline button.danger");
    browser.wait_for("dora removed", "return !document.querySelector('#manage-user[open]') && ![...document.querySelectorAll('td')].some(t => t.innerText === 'dora')");
    let records: Value = a
        .client()
        .get(a.url("/api/v1/audit?order=newest&actor=olivia&limit=50"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let done: Vec<String> = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "success")
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap(),
                r["target"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for expected in [
        "role.create ward_support",
        "administrator.create dora",
        "administrator.update dora",
        "administrator.password.reset dora",
        "administrator.mfa.reset dora",
        "administrator.delete dora",
    ] {
        assert!(done.iter().any(|d| d == expected), "{expected} not in {done:?}");
    }

    // A tablet's width: the layout fits (wide tables scroll inside their frame).
    browser.call(
        reqwest::Method::POST,
        "/window/rect",
        json!({ "width": 820, "height": 1180 }),
    );
    browser.goto(&a.url("/devices"));
    browser.wait_for(
        "devices at tablet width",
        "return document.body.dataset.hydrated === 'true' && document.querySelectorAll('.table.devices tbody tr').length > 0",
    );
    assert_eq!(
        browser.js("return document.documentElement.scrollWidth <= window.innerWidth"),
        json!(true),
        "the page is wider than a tablet"
    );
    browser.screenshot(&screenshot_path("devices-tablet.png"));
    browser.call(
        reqwest::Method::POST,
        "/window/rect",
        json!({ "width": 1280, "height": 800 }),
    );
    assert_no_console_errors(&browser);

    // A help-desk user (made by the Owner over the API, second factor set up over the API).
    let help_desk_secret = make_help_desk_user(&a, &token);
    sign_out(&browser);
    sign_in(
        &browser,
        &a,
        HELP_DESK,
        HELP_DESK_PASSWORD,
        Some(&totp(&help_desk_secret, 1)),
    );
    browser.goto(&a.url(&device_path));
    browser.wait_for("device page", "return document.body.dataset.hydrated === 'true' && !!document.querySelector('button[data-action=lock]')");
    assert_eq!(
        browser.js("return !!document.querySelector('button[data-action=erase]')"),
        json!(false),
        "the help desk must not see Erase"
    );
    let status = browser.js_async(&format!(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/auth/session').then(r => r.json()).then(s =>
           fetch('/api/v1/devices/{device_id}/actions/erase', {{method: 'POST',
             headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token}},
             body: JSON.stringify({{reason: 'trying anyway', confirm: 'x'}})}}))
         .then(r => done(r.status)).catch(e => done(String(e)));"
    ));
    assert_eq!(status, json!(403));
    assert_no_console_errors(&browser);

    // The self-service portal: a person sees the device assigned to them and locks it.
    let client = a.client();
    let res = client
        .post(a.url("/api/v1/portal-users"))
        .bearer_auth(&token)
        .json(&json!({ "username": "nina", "display_name": "Nina Nurse", "password": "harbour kettles sing at dawn" }))
        .send()
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().unwrap());
    browser.goto(&a.url("/portal"));
    browser.wait_for(
        "portal sign-in",
        "return location.pathname === '/portal/login' && document.body.dataset.hydrated === 'true'",
    );
    browser.type_into("#portal-username", "nina");
    browser.type_into("#portal-password", "harbour kettles sing at dawn");
    browser.click("form button[type=submit]");
    browser.wait_for("her devices", "return document.querySelectorAll('.portal-devices .card').length === 1 && !!document.querySelector('button[data-action=lock]')");
    browser.screenshot(&screenshot_path("portal.png"));
    browser.click(".portal-devices button[data-action=lock]");
    browser.type_into("#portal-reason", "Left it on the bus");
    browser.click("#portal-reason ~ .dialog-buttons button[type=submit]");
    browser.wait_text(
        "lock sent",
        "Sent. The device receives it the next time it is online.",
    );
    // Lost mode from the portal; once the phone has taken it, it can be located and found.
    browser.click(".portal-devices button[data-action=lost_mode]");
    browser.type_into("#portal-reason", "Please call 555 0100");
    browser.click("#portal-action .dialog-buttons button[type=submit]");
    browser.wait_text("lost mode sent", "Lost mode is on");
    let portal = a.url("/portal");
    browser.reload_until(
        &portal,
        "lost mode on",
        "return !!document.querySelector('button[data-action=found]')",
    );
    browser.click(".portal-devices button[data-action=locate]");
    browser.click("#portal-action .dialog-buttons button[type=submit]");
    browser.wait_text("locate sent", "Asked for its location");
    browser.reload_until(
        &portal,
        "a location",
        "return !!document.querySelector('.portal-devices a[href^=\"geo:\"]')",
    );
    browser.screenshot(&screenshot_path("portal-lost-mode.png"));
    browser.click(".portal-devices button[data-action=found]");
    browser.click("#portal-action .dialog-buttons button[type=submit]");
    browser.reload_until(
        &portal,
        "lost mode off",
        "return !!document.querySelector('button[data-action=lost_mode]')",
    );
    // Asking IT to erase it: the console shows the request on the device's page.
    browser.click(".portal-devices button[data-action=request_erase]");
    browser.type_into("#portal-reason", "Dropped it in the harbour");
    browser.click("#portal-action .dialog-buttons button[type=submit]");
    browser.wait_text(
        "erase requested",
        "Your IT team has been asked to erase the device.",
    );
    browser.click("a[href='/portal/privacy']");
    browser.wait_text("privacy rules", "Location");
    browser.screenshot(&screenshot_path("portal-privacy.png"));
    let res = client
        .get(a.url(&format!(
            "/api/v1/audit?order=newest&action=device.action.lock&actor=nina&target={device_id}"
        )))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let records: Value = res.json().unwrap();
    assert_eq!(records["items"][0]["actor"]["id"], "nina", "{records}");
    assert_no_console_errors(&browser);

    // The help desk (still signed in to the console) sees whose device it is and her request,
    // but may not dismiss it (that is for those who may erase).
    browser.goto(&a.url(&device_path));
    browser.wait_for(
        "device page",
        "return document.body.dataset.hydrated === 'true' && !!document.querySelector('#overview')",
    );
    browser.wait_text("erase request", "nina asked on");
    browser.wait_text("her reason", "Dropped it in the harbour");
    assert!(browser.text_of("#overview").contains("nina"));
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('button')].some(b => b.innerText.includes('Dismiss'))"),
        json!(false)
    );
    browser.screenshot(&screenshot_path("device-erase-request.png"));
    assert_no_console_errors(&browser);
}

/// A help-desk account with its second factor enrolled; returns the TOTP secret.
fn make_help_desk_user(a: &Appliance, owner_token: &str) -> String {
    let client = a.client();
    let initial = "a first password chosen by olivia";
    let res = client
        .post(a.url("/api/v1/users"))
        .bearer_auth(owner_token)
        .json(
            &json!({ "username": HELP_DESK, "display_name": "Harold Help", "role": "help_desk",
                       "password": initial }),
        )
        .send()
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().unwrap());
    let session_of = |res: reqwest::blocking::Response| -> (String, String) {
        assert_eq!(res.status(), 200);
        let cookie = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with("__Host-citadel_session="))
            .unwrap();
        let body: Value = res.json().unwrap();
        (cookie, body["csrf_token"].as_str().unwrap().to_owned())
    };
    let (cookie, csrf) = session_of(
        client
            .post(a.url("/api/v1/auth/login"))
            .json(&json!({ "username": HELP_DESK, "password": initial }))
            .send()
            .unwrap(),
    );
    // His own password first (the Owner's is temporary), then the authenticator.
    let (cookie, csrf) = session_of(
        client
            .post(a.url("/api/v1/auth/password"))
            .header("Cookie", &cookie)
            .header("X-CSRF-Token", &csrf)
            .json(&json!({ "current_password": initial, "new_password": HELP_DESK_PASSWORD }))
            .send()
            .unwrap(),
    );
    let begun: Value = client
        .post(a.url("/api/v1/auth/totp"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let secret = begun["secret"].as_str().unwrap().to_owned();
    let confirmed = client
        .post(a.url("/api/v1/auth/totp/confirm"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "code": totp(&secret, 0) }))
        .send()
        .unwrap();
    assert_eq!(confirmed.status(), 200, "{}", confirmed.text().unwrap());
    secret
}
