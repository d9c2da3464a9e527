//! The fleet simulator against the real appliance: 50 virtual devices enrol over SCEP, are woken
//! by pushes to the simulator's APNs endpoint, and live through inventory, profiles, lock, lost
//! mode and erase; the API must agree with what the devices did. Also `citadel simulate` itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use citadel::sim::fleet::{DeviceState, Fleet, FleetOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Appliance, run, text};
use crate::mdm::{api, api_token, api_token_with_role};
use crate::push::AppleCa;

const TOPIC: &str = "com.apple.mgmt.External.citadel-fleet-test";

/// Makes a push certificate under a throwaway "Apple" CA and imports it, as an administrator
/// would with Apple's.
fn import_push_certificate(a: &Appliance) {
    let apple = AppleCa::create(a.tmp.path());
    let csr = apple.dir.join("push.csr");
    let out = run(a.cmd().args(["push-cert", "csr", "--out"]).arg(&csr));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cert = apple.issue(&csr, TOPIC, "push");
    let out = run(a.cmd().args(["push-cert", "import", "--cert"]).arg(&cert));
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

struct World {
    a: Appliance,
    runtime: tokio::runtime::Runtime,
    fleet: Arc<Fleet>,
    client: reqwest::blocking::Client,
    token: String,
}

impl World {
    /// An appliance whose APNs is the fleet's push listener, with a push certificate.
    fn start(devices: usize, not_now_rate: f64) -> World {
        Self::start_with(devices, not_now_rate, false)
    }

    /// As [`World::start`]; `inventory` has enrolling devices asked for their inventory.
    fn start_with(devices: usize, not_now_rate: f64, inventory: bool) -> World {
        let mut a = Appliance::new();
        a.inventory_on_enrollment = inventory;
        let out = run(a.cmd().args(["init", "--listen", &a.listen()]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        // Made before the server runs (the CLI then writes the store directly).
        let token = api_token(&a);
        let ca_pem = std::fs::read_to_string(a.export_ca()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut options = FleetOptions::new(a.url(""), ca_pem, token.clone());
        options.devices = devices;
        options.concurrency = 16;
        options.not_now_rate = not_now_rate;
        options.seed = 50;
        options.key_pool = 8;
        let fleet = Fleet::new(options, Arc::new(citadel::clock::SystemClock)).unwrap();
        let (addr, push_ca) = runtime
            .block_on(fleet.listen_for_pushes("127.0.0.1:0".parse().unwrap(), None))
            .unwrap();
        let push_ca_file = a.tmp.path().join("push-ca.pem");
        std::fs::write(&push_ca_file, push_ca.unwrap()).unwrap();
        let config = a.tmp.path().join("citadel.toml");
        std::fs::write(
            &config,
            format!(
                "[apns]\nbase_url = \"https://localhost:{}\"\nca_file = \"{}\"\n",
                addr.port(),
                push_ca_file.display()
            ),
        )
        .unwrap();
        a.spawn(&["--config", config.to_str().unwrap()]);
        a.wait_healthy();
        import_push_certificate(&a);
        let client = a.client();
        World {
            a,
            runtime,
            fleet,
            client,
            token,
        }
    }

    fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        api(&self.a, &self.client, &self.token, method, path, body)
    }

    /// Sends `command` to `targets` through the fleet (so that its answers are tracked) and
    /// waits for every target's final answer; returns the command as the API shows it.
    fn command(&self, targets: &[&str], command: Value) -> Value {
        let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
        let n = targets.len();
        let uuid = self
            .runtime
            .block_on(self.fleet.enqueue(command.clone(), Some(targets), None))
            .unwrap();
        let answered = self
            .runtime
            .block_on(self.fleet.wait_answered(&uuid, Duration::from_secs(60)));
        assert_eq!(
            answered,
            n,
            "{command}: only {answered} of {n} answered; errors {:?}\nserver log:\n{}",
            self.fleet.counters().errors,
            self.a.stderr()
        );
        // The server records the answer before it replies; poll briefly all the same.
        for _ in 0..50 {
            let (s, view) = self.api(Method::GET, &format!("/api/v1/commands/{uuid}"), None);
            assert_eq!(s, 200, "{view}");
            if view["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["answered_at"].is_string())
            {
                return view;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the API never showed every answer of {uuid}");
    }

    fn states(&self) -> BTreeMap<String, DeviceState> {
        self.fleet
            .device_states()
            .into_iter()
            .map(|s| (s.udid.clone(), s))
            .collect()
    }
}

fn statuses(view: &Value) -> BTreeMap<String, String> {
    view["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["enrollment_id"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn profile_payload(identifier: &str) -> String {
    let mut d = plist::Dictionary::new();
    for (k, v) in [
        ("PayloadType", "Configuration"),
        ("PayloadIdentifier", identifier),
        ("PayloadDisplayName", "Ward Wi-Fi"),
        ("PayloadUUID", "6A1B8B5C-9D9E-4C1A-8F64-0B2D7E3A1C55"),
    ] {
        d.insert(k.into(), plist::Value::String(v.into()));
    }
    d.insert("PayloadVersion".into(), plist::Value::Integer(1.into()));
    d.insert("PayloadContent".into(), plist::Value::Array(Vec::new()));
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &plist::Value::Dictionary(d)).unwrap();
    data_encoding::BASE64.encode(&xml)
}

#[test]
fn fifty_devices_live_through_their_lifecycle() {
    let w = World::start(50, 0.2);
    let enrolment = w.runtime.block_on(w.fleet.enrol_all(|_| {}));
    assert_eq!(enrolment.enrolled, 50, "errors: {:?}", w.fleet.counters().errors);
    let states = w.states();

    // The appliance knows every device as it presented itself.
    let (s, page) = w.api(Method::GET, "/api/v1/devices?limit=500", None);
    assert_eq!(s, 200);
    let listed: BTreeMap<String, Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["enrollment_id"].as_str().unwrap().to_owned(), d.clone()))
        .collect();
    assert_eq!(listed.len(), 50);
    for (udid, state) in &states {
        let d = &listed[udid];
        assert_eq!(d["serial_number"], state.serial_number.as_str());
        assert_eq!(d["pushable"], true, "{d}");
        assert_eq!(d["status"], "active", "{d}");
    }
    let platforms = |p: &str| states.values().filter(|s| s.platform == p).count();
    assert_eq!(
        (platforms("iphone"), platforms("ipad"), platforms("mac")),
        (30, 10, 10)
    );
    let udids: Vec<&str> = states.keys().map(String::as_str).collect();

    // Inventory of the whole fleet: pushed, delivered, NotNow retried, acknowledged.
    let view = w.command(
        &udids,
        json!({"RequestType": "DeviceInformation", "Queries": ["SerialNumber", "OSVersion", "Model"]}),
    );
    for t in view["targets"].as_array().unwrap() {
        assert_eq!(t["status"], "Acknowledged", "{t}");
        let udid = t["enrollment_id"].as_str().unwrap();
        let responses = &t["result"]["QueryResponses"];
        assert_eq!(
            responses["SerialNumber"],
            states[udid].serial_number.as_str(),
            "{t}"
        );
        assert_eq!(
            responses.as_object().unwrap().len(),
            3,
            "only the queried keys: {t}"
        );
    }
    let not_now_retries: u64 = view["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["not_now_count"].as_u64().unwrap())
        .sum();
    assert!(
        not_now_retries > 0,
        "at a 20 % NotNow rate some of 50 devices refused once"
    );
    let counters = w.fleet.counters();
    assert!(counters.pushes_received >= 50, "{counters:?}");
    assert_eq!(
        counters.answers.get("NotNow").copied().unwrap_or(0),
        not_now_retries
    );

    // Profiles: installed on ten, removed from five; ProfileList reports what is installed.
    let ten = &udids[..10];
    let view = w.command(
        ten,
        json!({"RequestType": "InstallProfile", "Payload": profile_payload("org.hospital.wifi")}),
    );
    assert!(statuses(&view).values().all(|s| s == "Acknowledged"), "{view}");
    // Readers of the command see what the profile is, not what it holds (Wi-Fi keys…).
    let shown = view["command_plist"].as_str().unwrap();
    assert!(
        shown.contains("&lt;profile org.hospital.wifi (Ward Wi-Fi), payloads: none;")
            && !shown.contains("<data>"),
        "{shown}"
    );
    let view = w.command(
        &ten[..5],
        json!({"RequestType": "RemoveProfile", "Identifier": "org.hospital.wifi"}),
    );
    assert!(statuses(&view).values().all(|s| s == "Acknowledged"), "{view}");
    let view = w.command(ten, json!({"RequestType": "ProfileList"}));
    for t in view["targets"].as_array().unwrap() {
        let udid = t["enrollment_id"].as_str().unwrap();
        let reported: Vec<&str> = t["result"]["ProfileList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["PayloadIdentifier"].as_str().unwrap())
            .collect();
        let installed = w.states()[udid].profiles.clone();
        assert_eq!(reported, installed, "{udid}");
        let expected: &[&str] = if ten[..5].contains(&udid) {
            &[]
        } else {
            &["org.hospital.wifi"]
        };
        assert_eq!(reported, expected, "{udid}");
    }

    // Lock three devices.
    let view = w.command(
        &udids[10..13],
        json!({"RequestType": "DeviceLock", "Message": "Return to ward 4"}),
    );
    assert!(statuses(&view).values().all(|s| s == "Acknowledged"));

    // Lost mode and location: a location only comes back from a device in lost mode.
    let phones: Vec<&str> = states
        .values()
        .filter(|s| s.platform == "iphone")
        .map(|s| s.udid.as_str())
        .take(3)
        .collect();
    let view = w.command(
        &phones[..2],
        json!({"RequestType": "EnableLostMode", "Message": "Lost phone", "PhoneNumber": "+44 20 7946 0000"}),
    );
    assert!(statuses(&view).values().all(|s| s == "Acknowledged"), "{view}");
    let view = w.command(&phones, json!({"RequestType": "DeviceLocation"}));
    let location_command = format!("/api/v1/commands/{}", view["command_uuid"].as_str().unwrap());
    for t in view["targets"].as_array().unwrap() {
        let udid = t["enrollment_id"].as_str().unwrap();
        if phones[..2].contains(&udid) {
            assert_eq!(t["status"], "Acknowledged", "{t}");
            assert!(t["result"]["Latitude"].is_number(), "{t}");
        } else {
            assert_eq!(t["status"], "Error", "not in lost mode: {t}");
            assert_eq!(t["error_chain"][0]["ErrorCode"], 12067, "{t}");
        }
    }
    // The phone's user sees it in lost mode, and where it said it was, in the portal; the
    // phone not in lost mode shows no location.
    let (s, body) = w.api(
        Method::POST,
        "/api/v1/portal-users",
        Some(json!({"username": "ward-nurse", "password": "the night shift ends at seven"})),
    );
    assert_eq!(s, 201, "{body}");
    for phone in [phones[0], phones[2]] {
        let (s, body) = w.api(
            Method::PUT,
            &format!("/api/v1/devices/{phone}/user"),
            Some(json!({"username": "ward-nurse"})),
        );
        assert_eq!(s, 200, "{body}");
    }
    let nurse = crate::portal::PortalUser::sign_in(&w.a, "ward-nurse", "the night shift ends at seven");
    let me = nurse.me();
    let mine = |udid: &str| {
        me["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["enrollment_id"] == udid)
            .cloned()
            .unwrap_or_else(|| panic!("{udid} not in {me}"))
    };
    let lost = mine(phones[0]);
    assert_eq!(lost["lost_mode"], true, "{lost}");
    assert!(lost["last_location"]["latitude"].is_number(), "{lost}");
    let found = mine(phones[2]);
    assert_eq!(
        (&found["lost_mode"], &found["last_location"]),
        (&json!(false), &Value::Null),
        "{found}"
    );
    // A reader without devices.locate (an auditor) sees that an answer came, not where from.
    let as_auditor: Value = w
        .client
        .get(w.a.url(&location_command))
        .bearer_auth(api_token_with_role(&w.a, "auditor"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let answer = as_auditor["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["enrollment_id"] == phones[0])
        .unwrap();
    assert_eq!(
        answer["result"]["Latitude"], "<hidden: needs devices.locate>",
        "{answer}"
    );
    assert!(
        !answer["result_plist"].as_str().unwrap().contains("<real>"),
        "{answer}"
    );
    // Handing a corporate device to someone lets them locate it from the portal: that needs
    // devices.locate, which this role lacks (taking it away from them does not).
    let (s, body) = w.api(
        Method::POST,
        "/api/v1/roles",
        Some(json!({"name": "assigner", "permissions": ["devices.read", "devices.manage"]})),
    );
    assert_eq!(s, 201, "{body}");
    let assigner = api_token_with_role(&w.a, "assigner");
    let assign = |id: &str, user: Value| {
        w.client
            .put(w.a.url(&format!("/api/v1/devices/{id}/user")))
            .bearer_auth(&assigner)
            .json(&json!({ "username": user }))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(assign(phones[1], json!("ward-nurse")), 403, "lost mode");
    assert_eq!(
        assign(phones[2], json!("ward-nurse")),
        403,
        "corporate: the portal locates it"
    );
    assert_eq!(assign(phones[0], Value::Null), 200, "taking it away");
    assert_eq!(assign(phones[0], json!("ward-nurse")), 403, "lost mode");
    let (s, _) = w.api(
        Method::PUT,
        &format!("/api/v1/devices/{}/user", phones[0]),
        Some(json!({"username": "ward-nurse"})),
    );
    assert_eq!(s, 200, "an administrator may (they can locate it anyway)");
    // Lost mode ends: where the phone was is forgotten, in its answers too.
    let view = w.command(&phones[..1], json!({"RequestType": "DisableLostMode"}));
    assert!(statuses(&view).values().all(|s| s == "Acknowledged"), "{view}");
    let (_, after) = w.api(Method::GET, &location_command, None);
    let answer = after["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["enrollment_id"] == phones[0])
        .unwrap();
    assert_eq!(answer["status"], "Acknowledged", "{answer}");
    assert_eq!(answer["result"]["Status"], "Acknowledged", "{answer}");
    assert!(answer["result"].get("Latitude").is_none(), "{answer}");
    assert!(
        !answer["result_plist"].as_str().unwrap().contains("<real>"),
        "{answer}"
    );
    let (_, fixes) = w.api(
        Method::GET,
        &format!("/api/v1/devices/{}/locations", phones[0]),
        None,
    );
    assert_eq!(fixes["items"], json!([]), "{fixes}");
    let me = nurse.me();
    let ended = me["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["enrollment_id"] == phones[0])
        .unwrap();
    assert_eq!(
        (&ended["lost_mode"], &ended["last_location"]),
        (&json!(false), &Value::Null),
        "{ended}"
    );

    // Erase one device: it acknowledges, then disappears; what is queued later stays queued.
    let erased = udids[20];
    let view = w.command(&[erased], json!({"RequestType": "EraseDevice", "PIN": "123456"}));
    assert_eq!(statuses(&view)[erased], "Acknowledged");
    let (s, created) = w.api(
        Method::POST,
        "/api/v1/commands",
        Some(json!({"targets": [erased], "command": {"RequestType": "ProfileList"}})),
    );
    assert_eq!(s, 201, "{created}");
    std::thread::sleep(Duration::from_secs(2));
    let (_, view) = w.api(
        Method::GET,
        &format!("/api/v1/commands/{}", created["command_uuid"].as_str().unwrap()),
        None,
    );
    assert_eq!(
        view["targets"][0]["answered_at"],
        Value::Null,
        "an erased device answers nothing: {view}"
    );

    // The devices' own state agrees with what the API recorded.
    let end = w.states();
    for (udid, s) in &end {
        assert_eq!(s.locked, udids[10..13].contains(&udid.as_str()), "{udid}");
        // The first phone was found (lost mode ended above).
        assert_eq!(s.lost_mode, udid == phones[1], "{udid}");
        assert_eq!(s.erased, udid == erased, "{udid}");
        assert_eq!(
            s.locations_reported,
            u32::from(phones[..2].contains(&udid.as_str())),
            "{udid}"
        );
    }
    let counters = w.fleet.counters();
    assert_eq!(counters.erased, 1);
    assert!(counters.errors.is_empty(), "{:?}", counters.errors);
    w.runtime.block_on(w.fleet.shutdown());
}

/// `citadel simulate` as an administrator runs it against their appliance: devices enrol
/// through one-time links with mTLS identities, a command fans out, the JSON report adds up.
/// `citadel simulate` against `a` with its CA and `token`, then `args`.
fn simulate(a: &Appliance, token: &str, args: &[&str]) -> std::process::Output {
    let ca = a.export_ca();
    let server = a.url("");
    let mut cmd = a.cmd();
    cmd.args([
        "simulate",
        "--server",
        &server,
        "--ca",
        ca.to_str().unwrap(),
        "--api-token",
        token,
    ]);
    run(cmd.args(args))
}

/// `citadel simulate-ceiling` beside the appliance, stopped when dropped.
struct Ceiling(std::process::Child);

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_closed_loop_is_reported_beside_its_ceiling() {
    let a = Appliance::start();
    let token = api_token(&a);
    let port = crate::harness::free_port();
    let _ceiling = Ceiling(
        a.cmd()
            .args(["simulate-ceiling", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the ceiling did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ceiling_url = format!("https://localhost:{port}");
    // 4 s a side: a 3 s slice of each, then 1 s of each.
    let out = simulate(
        &a,
        &token,
        &[
            "--devices",
            "4",
            "--concurrency",
            "4",
            "--replay",
            "--duration",
            "4s",
            "--ceiling-url",
            &ceiling_url,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "closed-loop", "{report}");
    assert_eq!(report["error_count"], 0, "{report}");
    let ceiling = &report["ceiling"];
    assert_eq!(ceiling["url"], format!("{ceiling_url}/mdm/connect"), "{report}");
    let (rate, ceiling_rate) = (
        report["roundtrips_per_sec"].as_f64().unwrap(),
        ceiling["roundtrips_per_sec"].as_f64().unwrap(),
    );
    assert!(rate > 0.0 && ceiling_rate > 0.0, "{report}");
    assert!(
        (ceiling["ratio"].as_f64().unwrap() - rate / ceiling_rate).abs() < 1e-9,
        "{report}"
    );
    // Each side's round trips are its own: every one timed, none of the other side's.
    assert_eq!(report["latency"]["count"], report["roundtrips"], "{report}");
    let ceiling_count = ceiling["latency"]["count"].as_f64().unwrap();
    assert!((ceiling_count / ceiling_rate - 4.0).abs() < 1.0, "{report}");
    // The devices that made them are enrolled in the appliance.
    let (s, page) = api(&a, &a.client(), &token, Method::GET, "/api/v1/devices", None);
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}

#[test]
fn the_simulate_command_reports_a_run() {
    let a = Appliance::start();
    let token = api_token(&a);
    let state = a.tmp.path().join("state.json");
    let out = simulate(
        &a,
        &token,
        &[
            "--devices",
            "6",
            "--concurrency",
            "3",
            "--duration",
            "20s",
            "--mix",
            "iphone=1,mac=1",
            "--auth",
            "mtls",
            "--profile-source",
            "link",
            "--poll-interval",
            "1s",
            "--command",
            "SecurityInfo",
            "--json",
            "--state-out",
            state.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["devices"], 6);
    assert_eq!(report["enrolled"], 6, "{report}");
    assert_eq!(report["mode"], "poll");
    assert_eq!(report["command"]["answered"], 6, "{report}");
    assert_eq!(report["answers"]["Acknowledged"], 6, "{report}");
    assert!(report["roundtrips"].as_u64().unwrap() >= 12, "{report}");
    assert!(
        report["command_latency"]["p99_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["error_count"], 0, "{report}");
    let states: Vec<Value> = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(states.len(), 6);
    assert_eq!(states.iter().filter(|s| s["platform"] == "mac").count(), 3);

    // The appliance saw the same six devices, enrolled by link (each link used once).
    let (s, page) = api(&a, &a.client(), &token, Method::GET, "/api/v1/devices", None);
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 6);

    // With --replay, each device's answer to --command is signed before the command is
    // queued under a UUID the simulator chose; the appliance verifies and records each one.
    let out = simulate(
        &a,
        &token,
        &[
            "--devices",
            "4",
            "--duration",
            "20s",
            "--mix",
            "iphone=1,mac=1",
            "--poll-interval",
            "1s",
            "--replay",
            "--command",
            "DeviceInformation",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["command"]["answered"], 4, "{report}");
    assert_eq!(report["command"]["presigned"], 4, "{report}");
    assert_eq!(report["command"]["presigned_sent"], 4, "{report}");
    assert_eq!(report["error_count"], 0, "{report}");
    let uuid = report["command"]["command_uuid"].as_str().unwrap();
    let (s, view) = api(
        &a,
        &a.client(),
        &token,
        Method::GET,
        &format!("/api/v1/commands/{uuid}"),
        None,
    );
    assert_eq!(s, 200, "{view}");
    let targets = view["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 4, "{view}");
    for t in targets {
        assert_eq!(t["status"], "Acknowledged", "{view}");
        assert!(
            t["result_plist"].as_str().unwrap().contains("QueryResponses"),
            "{view}"
        );
    }

    // Bad options fail with a message, not a panic.
    let out = run(a.cmd().args([
        "simulate",
        "--server",
        &a.url(""),
        "--ca",
        "/nonexistent",
        "--api-token",
        &token,
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read"), "{}", text(&out.stderr));
    let out = run(a.cmd().args([
        "simulate",
        "--server",
        &a.url(""),
        "--ca",
        a.export_ca().to_str().unwrap(),
        "--api-token",
        "wrong",
        "--devices",
        "1",
        "--duration",
        "0s",
        "--json",
    ]));
    assert_eq!(out.status.code(), Some(1), "no device could enrol");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        report.is_null() || report["errors"]["profile: HTTP 401"] == 1,
        "{report}"
    );
}

/// Polls a device's record until `ready` holds for it (inventory arrives asynchronously).
fn wait_device(w: &World, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let (s, d) = w.api(Method::GET, &format!("/api/v1/devices/{id}"), None);
        assert_eq!(s, 200, "{d}");
        if ready(&d) {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{id}: {what} never happened; errors {:?}\nserver log:\n{}",
        w.fleet.counters().errors,
        w.a.stderr()
    );
}

fn list(w: &World, id: &str, which: &str) -> Vec<Value> {
    let (s, v) = w.api(Method::GET, &format!("/api/v1/devices/{id}/{which}"), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enrollment_id"], id);
    v["items"].as_array().unwrap().clone()
}

#[test]
fn enrolled_devices_report_a_typed_inventory_within_the_privacy_rules() {
    let w = World::start_with(10, 0.0, true);
    let enrolment = w.runtime.block_on(w.fleet.enrol_all(|_| {}));
    assert_eq!(enrolment.enrolled, 10, "errors: {:?}", w.fleet.counters().errors);
    let states = w.states();
    let complete = |d: &Value| {
        let i = &d["inventory"];
        [
            "information_updated_at",
            "security_updated_at",
            "apps_updated_at",
            "profiles_updated_at",
            "certificates_updated_at",
        ]
        .iter()
        .all(|k| i[k].is_string())
            && d["pending_commands"] == 0
    };

    // Nobody asked: enrolment alone queued the inventory, pushed, and the devices answered.
    let mut phone = None;
    for (udid, state) in &states {
        let d = wait_device(&w, udid, "a complete inventory", complete);
        let inv = &d["inventory"];
        assert_eq!(d["ownership"], "corporate");
        assert_eq!(inv["serial_number"], state.serial_number.as_str(), "{inv}");
        assert_eq!(inv["udid"], udid.as_str());
        let platform = match state.platform {
            "iphone" => "ios",
            "ipad" => "ipados",
            _ => "macos",
        };
        assert_eq!(inv["platform"], platform, "{inv}");
        assert!(
            inv["os_version"].is_string() && inv["model_name"].is_string(),
            "{inv}"
        );
        let battery = inv["battery_level"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&battery), "{inv}");
        assert_eq!(inv["storage_capacity_gb"], 128.0);
        assert!(inv["wifi_mac"].as_str().unwrap().len() == 17, "{inv}");
        assert_eq!(inv["passcode_present"], true);
        assert_eq!(inv["storage_encrypted"], true, "{inv}");
        assert_eq!(inv["is_supervised"], true);
        match platform {
            "ios" => {
                assert!(inv["phone_number"].as_str().unwrap().starts_with("+44"), "{inv}");
                assert!(
                    inv["imei"].is_string() && inv["current_carrier_network"].is_string(),
                    "{inv}"
                );
                phone = Some(udid.clone());
            }
            "macos" => {
                assert_eq!(
                    (
                        &inv["filevault_enabled"],
                        &inv["firewall_enabled"],
                        &inv["sip_enabled"]
                    ),
                    (&json!(true), &json!(true), &json!(true)),
                    "{inv}"
                );
                assert_eq!(inv["phone_number"], Value::Null);
            }
            _ => assert_eq!(inv["phone_number"], Value::Null, "an iPad has none: {inv}"),
        }
        // Every device reports again within the interval, at its own time.
        let next = time::OffsetDateTime::parse(
            d["next_inventory_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(next > now && next <= now + time::Duration::hours(24), "{next}");

        // Apps with the MDM's marked managed; the identity certificate read from its DER.
        let apps = list(&w, udid, "apps");
        assert_eq!(apps.len(), 4, "{apps:?}");
        let managed: Vec<&str> = apps
            .iter()
            .filter(|a| a["managed"] == true)
            .map(|a| a["bundle_id"].as_str().unwrap())
            .collect();
        assert_eq!(managed, ["com.microsoft.Office.Outlook", "org.hospital.rota"]);
        assert!(
            apps.iter()
                .all(|a| a["size_bytes"].as_u64().unwrap() > 25_000_000)
        );
        let certs = list(&w, udid, "certificates");
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0]["is_identity"], true);
        assert_eq!(
            certs[0]["serial_hex"], d["identity_certificate_serial"],
            "{certs:?}"
        );
        assert!(certs[0]["not_after"].is_string());
        assert!(list(&w, udid, "profiles").is_empty());
    }
    let phone = phone.expect("the mix has iPhones");

    // Lost mode shows up in the next report, and the change goes into the device's history.
    w.command(
        &[phone.as_str()],
        json!({"RequestType": "EnableLostMode", "Message": "Please call the ward"}),
    );
    let before = wait_device(&w, &phone, "nothing", |_| true)["inventory"]["information_updated_at"].clone();
    let (s, refreshed) = w.api(Method::POST, &format!("/api/v1/devices/{phone}/inventory"), None);
    assert_eq!(s, 202, "{refreshed}");
    assert!(refreshed["commands_queued"].as_u64().unwrap() >= 5, "{refreshed}");
    let d = wait_device(&w, &phone, "a fresh report", |d| {
        d["inventory"]["information_updated_at"] != before && complete(d)
    });
    assert_eq!(d["inventory"]["lost_mode_enabled"], true);
    let (s, history) = w.api(Method::GET, &format!("/api/v1/devices/{phone}/history"), None);
    assert_eq!(s, 200);
    let changes = history["items"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["field"] == "lost_mode_enabled" && c["from"] == "false" && c["to"] == "true"),
        "{history}"
    );

    // Declared personal: the phone number and the owner's own apps are dropped at once, and the
    // next report asks only for what the rules allow.
    let (s, v) = w.api(
        Method::PUT,
        &format!("/api/v1/devices/{phone}/ownership"),
        Some(json!({"ownership": "personal", "reason": "BYOD scheme"})),
    );
    assert_eq!(s, 200, "{v}");
    let d = wait_device(&w, &phone, "nothing", |_| true);
    assert_eq!(d["ownership"], "personal");
    assert_eq!(d["inventory"]["phone_number"], Value::Null);
    assert_eq!(list(&w, &phone, "apps").len(), 2);
    let before = d["inventory"]["apps_updated_at"].clone();
    let (s, _) = w.api(Method::POST, &format!("/api/v1/devices/{phone}/inventory"), None);
    assert_eq!(s, 202);
    let d = wait_device(&w, &phone, "a personal report", |d| {
        d["inventory"]["apps_updated_at"] != before && complete(d)
    });
    assert_eq!(
        d["inventory"]["phone_number"],
        Value::Null,
        "never asked, never kept"
    );
    let apps = list(&w, &phone, "apps");
    assert!(
        apps.len() == 2 && apps.iter().all(|a| a["managed"] == true),
        "{apps:?}"
    );
    let asked: Vec<&str> = d["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["request_type"].as_str().unwrap())
        .collect();
    assert!(!asked.is_empty());
    let history = w
        .api(Method::GET, &format!("/api/v1/devices/{phone}/history"), None)
        .1;
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["field"] != "phone_number"),
        "{history}"
    );

    // The list filters, sorts and pages over what the devices reported.
    let count = |query: &str| {
        let (s, v) = w.api(Method::GET, &format!("/api/v1/devices?{query}"), None);
        assert_eq!(s, 200, "{query}: {v}");
        v["total"].as_u64().unwrap() as usize
    };
    let of = |p: &str| states.values().filter(|s| s.platform == p).count();
    assert_eq!(count("platform=macos"), of("mac"));
    assert_eq!(count("platform=ios,ipados"), of("iphone") + of("ipad"));
    assert_eq!(count("compliance=compliant"), 10);
    assert_eq!(count("compliance=noncompliant"), 0);
    assert_eq!(count("ownership=personal"), 1);
    assert_eq!(count("supervised=true&status=active"), 10);
    assert_eq!(count("not_seen_days=1"), 0);
    assert_eq!(count("os_min=99"), 0);
    assert_eq!(count("os_min=14&os_below=99"), 10);
    let serial = states[&phone].serial_number.to_lowercase();
    let (_, found) = w.api(Method::GET, &format!("/api/v1/devices?search={serial}"), None);
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["items"][0]["enrollment_id"], phone.as_str());
    assert_eq!(found["items"][0]["ownership"], "personal");
    assert_eq!(found["items"][0]["platform"], "ios");
    // Sorted by a time that no longer moves (a live fleet's last_seen_at changes between the
    // query and the reading of its rows).
    let (_, newest) = w.api(
        Method::GET,
        "/api/v1/devices?sort=-enrolled_at&limit=3&offset=2",
        None,
    );
    assert_eq!(
        (
            newest["total"].as_u64(),
            newest["items"].as_array().unwrap().len()
        ),
        (Some(10), 3)
    );
    assert_eq!(newest["next"], Value::Null, "cursors are for the default order");
    let seen: Vec<&str> = newest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["enrolled_at"].as_str().unwrap())
        .collect();
    // The index orders by millisecond; devices enrolled within one are in ID order.
    let ms = |t: &str| t.get(..23).unwrap_or(t).to_owned();
    assert!(seen.windows(2).all(|p| ms(p[0]) >= ms(p[1])), "{seen:?}");
    for bad in [
        "os_min=eighteen",
        "sort=colour",
        "platform=android",
        "compliance=mostly",
        "colour=red",
    ] {
        let (s, v) = w.api(Method::GET, &format!("/api/v1/devices?{bad}"), None);
        assert_eq!(s, 400, "{bad}: {v}");
    }

    // Export: CSV read back by Python's csv module; JSON with the same filter.
    let csv = w
        .client
        .get(w.a.url("/api/v1/devices/export?format=csv&platform=ios,ipados&sort=serial_number"))
        .bearer_auth(&w.token)
        .send()
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv_file = w.a.tmp.path().join("devices.csv");
    std::fs::write(&csv_file, csv.bytes().unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import csv, json, sys; print(json.dumps(list(csv.DictReader(open(sys.argv[1], newline='')))))")
        .arg(&csv_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), of("iphone") + of("ipad"));
    let serials: Vec<&str> = rows
        .iter()
        .map(|r| r["serial_number"].as_str().unwrap())
        .collect();
    let mut sorted = serials.clone();
    sorted.sort_unstable();
    assert_eq!(serials, sorted);
    for r in &rows {
        let udid = r["enrollment_id"].as_str().unwrap();
        assert_eq!(r["serial_number"], states[udid].serial_number.as_str());
        assert_eq!(r["compliance"], "compliant");
        assert!(r["os_version"].as_str().unwrap().contains('.'), "{r}");
    }
    let (s, json_export) = w.api(
        Method::GET,
        "/api/v1/devices/export?format=json&ownership=corporate",
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(json_export.as_array().unwrap().len(), 9);
    for bad in ["format=xlsx", "format=csv&limit=5", "format=csv&sort=colour"] {
        let (s, v) = w.api(Method::GET, &format!("/api/v1/devices/export?{bad}"), None);
        assert_eq!(s, 400, "{bad}: {v}");
    }

    // The fleet report agrees with the devices.
    let (s, report) = w.api(Method::GET, "/api/v1/reports/fleet", None);
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["devices"], 10);
    assert_eq!(
        report["by_platform"]["macos"].as_u64().unwrap() as usize,
        of("mac")
    );
    assert_eq!(report["by_ownership"]["personal"], 1);
    assert_eq!(report["by_compliance"]["compliant"], 10);
    assert_eq!(report["not_seen"]["count"], 0);
    assert_eq!(report["identity_expiring"]["count"], 0, "{report}");
    let os_total: u64 = report["by_os_version"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(os_total, 10);
    // Device identities last two years (scep.certificate_validity_days): within 800 days every
    // one expires.
    let (_, soon) = w.api(Method::GET, "/api/v1/reports/fleet?expiring_days=800", None);
    assert_eq!(soon["identity_expiring"]["count"], 10, "{soon}");
    assert_eq!(soon["identity_expiring"]["devices"].as_array().unwrap().len(), 10);

    // Bad requests get clear answers.
    let (s, _) = w.api(Method::GET, "/api/v1/devices/NO-SUCH-DEVICE/apps", None);
    assert_eq!(s, 404);
    let (s, _) = w.api(Method::POST, "/api/v1/devices/NO-SUCH-DEVICE/inventory", None);
    assert_eq!(s, 404);
    let (s, v) = w.api(
        Method::PUT,
        &format!("/api/v1/devices/{phone}/ownership"),
        Some(json!({"ownership": "borrowed"})),
    );
    assert_eq!(s, 400, "{v}");
    let anonymous = w
        .client
        .get(w.a.url(&format!("/api/v1/devices/{phone}/apps")))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Polls a command until every target has answered; returns the command as the API shows it.
fn wait_command(w: &World, uuid: &str) -> Value {
    for _ in 0..300 {
        let (s, view) = w.api(Method::GET, &format!("/api/v1/commands/{uuid}"), None);
        assert_eq!(s, 200, "{view}");
        if view["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["answered_at"].is_string())
        {
            return view;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{uuid} was never answered; server log:\n{}", w.a.stderr());
}

fn act(w: &World, id: &str, action: &str, params: Value) -> (u16, Value) {
    w.api(
        Method::POST,
        &format!("/api/v1/devices/{id}/actions/{action}"),
        Some(params),
    )
}

#[test]
fn remote_actions_round_trip_with_their_preconditions_and_privacy_rules() {
    let w = World::start_with(8, 0.0, true);
    let enrolment = w.runtime.block_on(w.fleet.enrol_all(|_| {}));
    assert_eq!(enrolment.enrolled, 8, "errors: {:?}", w.fleet.counters().errors);
    let states = w.states();
    let first = |p: &str| {
        states
            .values()
            .filter(|s| s.platform == p)
            .map(|s| s.udid.clone())
            .collect::<Vec<_>>()
    };
    let (phones, ipads, macs) = (first("iphone"), first("ipad"), first("mac"));
    assert!(phones.len() >= 2 && !ipads.is_empty() && !macs.is_empty());
    for id in states.keys() {
        wait_device(&w, id, "an inventory", |d| {
            d["inventory"]["security_updated_at"].is_string() && d["pending_commands"] == 0
        });
    }
    let (phone, other_phone, mac) = (&phones[0], &phones[1], &macs[0]);
    let acked = |view: &Value| assert_eq!(view["targets"][0]["status"], "Acknowledged", "{view}");

    // Lock: queued, delivered by push, acknowledged; the device is locked.
    let (s, lock) = act(
        &w,
        phone,
        "lock",
        json!({"reason": "left in a taxi", "message": "Call IT", "phone_number": "+44 20 7946 0000"}),
    );
    assert_eq!(s, 202, "{lock}");
    assert!(
        lock["actor"].as_str().unwrap().starts_with("api-token:"),
        "{lock}"
    );
    acked(&wait_command(&w, lock["command_uuid"].as_str().unwrap()));
    assert!(w.states()[phone].locked);

    // Locate only in lost mode; lost mode needs a message; locations kept only while lost.
    let (s, v) = act(&w, phone, "locate", json!({"reason": "where is it"}));
    assert_eq!(s, 409, "{v}");
    let (s, v) = act(&w, phone, "enable_lost_mode", json!({"reason": "lost"}));
    assert_eq!(s, 400, "{v}");
    let (s, lost) = act(
        &w,
        phone,
        "enable_lost_mode",
        json!({"reason": "lost", "message": "Please return to ward 7", "footnote": "Citadel NHS Trust"}),
    );
    assert_eq!(s, 202, "{lost}");
    acked(&wait_command(&w, lost["command_uuid"].as_str().unwrap()));
    wait_device(&w, phone, "lost mode recorded", |d| {
        d["inventory"]["lost_mode_enabled"] == true
    });
    for _ in 0..2 {
        let (s, locate) = act(&w, phone, "locate", json!({"reason": "find it"}));
        assert_eq!(s, 202, "{locate}");
        acked(&wait_command(&w, locate["command_uuid"].as_str().unwrap()));
    }
    let (_, fixes) = w.api(Method::GET, &format!("/api/v1/devices/{phone}/locations"), None);
    let fixes = fixes["items"].as_array().unwrap().clone();
    assert_eq!(fixes.len(), 2, "{fixes:?}");
    assert!(
        (fixes[0]["latitude"].as_f64().unwrap() - 51.5).abs() < 0.1,
        "{fixes:?}"
    );
    let (s, sound) = act(&w, phone, "play_sound", json!({"reason": "it is nearby"}));
    assert_eq!(s, 202, "{sound}");
    acked(&wait_command(&w, sound["command_uuid"].as_str().unwrap()));
    let (s, found) = act(&w, phone, "disable_lost_mode", json!({"reason": "found"}));
    assert_eq!(s, 202);
    acked(&wait_command(&w, found["command_uuid"].as_str().unwrap()));
    wait_device(&w, phone, "lost mode over", |d| {
        d["inventory"]["lost_mode_enabled"] == false
    });
    let (_, fixes) = w.api(Method::GET, &format!("/api/v1/devices/{phone}/locations"), None);
    assert!(
        fixes["items"].as_array().unwrap().is_empty(),
        "history ends with lost mode: {fixes}"
    );
    assert!(!w.states()[phone].lost_mode);

    // Clear the passcode with the unlock token the phone escrowed at enrolment; Macs have none.
    let (s, clear) = act(&w, phone, "clear_passcode", json!({"reason": "user forgot it"}));
    assert_eq!(s, 202, "{clear}");
    acked(&wait_command(&w, clear["command_uuid"].as_str().unwrap()));
    assert!(w.states()[phone].passcode_cleared);
    let (s, v) = act(&w, mac, "clear_passcode", json!({"reason": "user forgot it"}));
    assert_eq!(s, 409, "{v}");

    // Restart a Mac; locking a Mac needs a PIN.
    let (s, v) = act(&w, mac, "lock", json!({"reason": "stolen"}));
    assert_eq!(s, 400, "{v}");
    let (s, restart) = act(&w, mac, "restart", json!({"reason": "apply update"}));
    assert_eq!(s, 202, "{restart}");
    acked(&wait_command(&w, restart["command_uuid"].as_str().unwrap()));
    assert_eq!(w.states()[mac].restarts, 1);
    let (s, off) = act(&w, mac, "shut_down", json!({"reason": "moving office"}));
    assert_eq!(s, 202, "{off}");
    acked(&wait_command(&w, off["command_uuid"].as_str().unwrap()));
    assert_eq!(
        w.states()[mac].restarts,
        2,
        "the simulator counts shut-downs with restarts"
    );

    // Personal devices are never located or erased.
    let (s, _) = w.api(
        Method::PUT,
        &format!("/api/v1/devices/{other_phone}/ownership"),
        Some(json!({"ownership": "personal"})),
    );
    assert_eq!(s, 200);
    let serial = states[other_phone].serial_number.clone();
    let (s, v) = act(
        &w,
        other_phone,
        "erase",
        json!({"reason": "leaver", "confirm": serial}),
    );
    assert_eq!(s, 403, "{v}");
    let (s, v) = act(
        &w,
        other_phone,
        "enable_lost_mode",
        json!({"reason": "lost", "message": "x"}),
    );
    assert_eq!(s, 403, "{v}");

    // A personal device leaves by retirement: its enrollment profile removed, managed data with
    // it; it checks out and the appliance marks it unenrolled.
    let (s, retire) = act(&w, other_phone, "retire", json!({"reason": "left the trust"}));
    assert_eq!(s, 202, "{retire}");
    acked(&wait_command(&w, retire["command_uuid"].as_str().unwrap()));
    wait_device(&w, other_phone, "check-out", |d| d["status"] == "unenrolled");
    assert!(w.states()[other_phone].retired);
    let (s, v) = act(&w, other_phone, "lock", json!({"reason": "too late"}));
    assert_eq!(s, 409, "{v}");

    // Erase: the serial typed back, then the device acknowledges and leaves.
    let (s, v) = act(
        &w,
        phone,
        "erase",
        json!({"reason": "beyond repair", "confirm": "WRONG"}),
    );
    assert_eq!(s, 400, "{v}");
    let serial = states[phone].serial_number.clone();
    let (s, erase) = act(
        &w,
        phone,
        "erase",
        json!({"reason": "beyond repair", "confirm": serial, "preserve_data_plan": true}),
    );
    assert_eq!(s, 202, "{erase}");
    acked(&wait_command(&w, erase["command_uuid"].as_str().unwrap()));
    assert!(w.states()[phone].erased);

    // Every action is on record with who, when and why.
    let (_, history) = w.api(Method::GET, &format!("/api/v1/devices/{phone}/actions"), None);
    let taken: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        taken,
        [
            "erase",
            "clear_passcode",
            "disable_lost_mode",
            "play_sound",
            "locate",
            "locate",
            "enable_lost_mode",
            "lock"
        ],
        "{history}"
    );
    assert!(
        history["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["reason"].is_string() && a["at"].is_string())
    );
    // … and in the audit log, beside the refusals (oldest first).
    let (_, log) = w.api(
        Method::GET,
        &format!("/api/v1/audit?target={phone}&action=device.action.&limit=1000"),
        None,
    );
    let audited: Vec<(&str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "success")
        .map(|r| (r["action"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(audited.len(), taken.len(), "{log}");
    assert_eq!(audited.last().map(|a| a.0), Some("device.action.erase"));
    assert_eq!(audited.last().map(|a| a.1), Some("beyond repair"));
    let (_, refused) = w.api(
        Method::GET,
        &format!("/api/v1/audit?target={other_phone}&outcome=denied"),
        None,
    );
    let refused: Vec<&str> = refused["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert!(
        refused.contains(&"device.action.erase") && refused.contains(&"device.action.enable_lost_mode"),
        "{refused:?}"
    );
    // Each device's enrolment is on record, as the device itself.
    let (_, enrolled) = w.api(
        Method::GET,
        &format!("/api/v1/audit?target={phone}&action=device.enroll"),
        None,
    );
    assert_eq!(enrolled["items"][0]["actor"]["id"], phone.as_str(), "{enrolled}");

    // Bulk: restart every iPad, paced; erase needs the count typed back.
    let (s, bulk) = w.api(
        Method::POST,
        "/api/v1/devices/actions/restart",
        Some(json!({"filter": {"platform": "ipados"}, "params": {"reason": "weekly restart"}})),
    );
    assert_eq!(s, 202, "{bulk}");
    assert_eq!(bulk["eligible"].as_u64().unwrap() as usize, ipads.len(), "{bulk}");
    for ipad in &ipads {
        let d = wait_device(&w, ipad, "the bulk restart", |d| {
            d["pending_commands"] == 0 && d["commands"][0]["request_type"] == "RestartDevice"
        });
        assert_eq!(d["commands"][0]["status"], "Acknowledged", "{d}");
    }
    assert!(ipads.iter().all(|i| w.states()[i].restarts == 1));
    let (s, v) = w.api(
        Method::POST,
        "/api/v1/devices/actions/erase",
        Some(json!({"filter": {"platform": "macos"}, "params": {"reason": "decommission"}})),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(&format!("ERASE {} DEVICES", macs.len())),
        "{v}"
    );
    for (path, body, status) in [
        (
            "/api/v1/devices/actions/self_destruct",
            json!({"filter": {}, "params": {"reason": "x"}}),
            400,
        ),
        (
            "/api/v1/devices/actions/restart",
            json!({"filter": {"platform": "android"}, "params": {"reason": "xyz"}}),
            400,
        ),
        (
            "/api/v1/devices/actions/restart",
            json!({"filter": {}, "params": {"reason": ""}}),
            400,
        ),
        (
            "/api/v1/devices/NO-SUCH-DEVICE/actions/lock",
            json!({"reason": "xyz"}),
            404,
        ),
    ] {
        let (s, v) = w.api(Method::POST, path, Some(body));
        assert_eq!(s, status, "{path}: {v}");
    }
}

/// What the console reads besides the device list, checked against independent parsers: a bulk
/// action's dry run (exact count, nothing queued, nothing audited) by filter and by named
/// devices; each device's action availability; the fleet charts (SVG parsed by Python's XML
/// parser); the command catalog; the command's plists (parsed by `plistlib`); the appliance's
/// certificate lifetimes; the audit log newest first.
#[test]
fn the_console_api_answers_dry_runs_charts_catalog_and_plists() {
    let w = World::start(4, 0.0);
    let enrolment = w.runtime.block_on(w.fleet.enrol_all(|_| {}));
    assert_eq!(enrolment.enrolled, 4);
    let ids = w.fleet.enrollment_ids();
    let (_, before) = w.api(Method::GET, "/api/v1/audit?order=newest&limit=1", None);

    // Dry runs: by filter (every active device) and by name (one unknown name is left out).
    let (s, plan) = w.api(
        Method::POST,
        "/api/v1/devices/actions/lock",
        Some(json!({"filter": {}, "params": {"reason": "dry run", "pin": "123456"}, "dry_run": true})),
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(
        (plan["matched"].as_u64(), plan["eligible"].as_u64()),
        (Some(4), Some(4)),
        "{plan}"
    );
    let mut named = ids[..2].to_vec();
    named.push("NO-SUCH-DEVICE".into());
    let (s, plan) = w.api(
        Method::POST,
        "/api/v1/devices/actions/lock",
        Some(json!({"targets": named, "params": {"reason": "dry run", "pin": "123456"}, "dry_run": true})),
    );
    assert_eq!(s, 200, "{plan}");
    assert_eq!(
        (plan["matched"].as_u64(), plan["eligible"].as_u64()),
        (Some(3), Some(2)),
        "{plan}"
    );
    assert_eq!(plan["skipped"]["not an active enrollment"], 1, "{plan}");
    let (_, after) = w.api(Method::GET, "/api/v1/audit?order=newest&limit=1", None);
    assert_eq!(
        before["items"][0]["seq"], after["items"][0]["seq"],
        "a dry run is not audited"
    );
    for id in &ids {
        let (_, d) = w.api(Method::GET, &format!("/api/v1/devices/{id}"), None);
        assert_eq!(d["pending_commands"], 0, "a dry run queued something: {d}");
    }
    // Too many names is refused.
    let many: Vec<String> = (0..401).map(|i| format!("D{i}")).collect();
    let (s, _) = w.api(
        Method::POST,
        "/api/v1/devices/actions/lock",
        Some(json!({"targets": many, "params": {"reason": "x"}, "dry_run": true})),
    );
    assert_eq!(s, 400);
    // A filter and names together, or no names, are refused.
    for body in [
        json!({"filter": {}, "targets": [ids[0]], "params": {"reason": "x"}, "dry_run": true}),
        json!({"targets": [], "params": {"reason": "x"}, "dry_run": true}),
    ] {
        let (s, answer) = w.api(Method::POST, "/api/v1/devices/actions/lock", Some(body));
        assert_eq!(s, 400, "{answer}");
    }

    // Named devices, for real: exactly those two are locked.
    let (s, accepted) = w.api(
        Method::POST,
        "/api/v1/devices/actions/lock",
        Some(json!({"targets": ids[..2], "params": {"reason": "two selected in the console", "pin": "123456"}})),
    );
    assert_eq!(s, 202, "{accepted}");
    assert_eq!(accepted["eligible"], 2, "{accepted}");

    // Each device lists the actions with permission and availability.
    let (_, d) = w.api(Method::GET, &format!("/api/v1/devices/{}", ids[0]), None);
    let actions = d["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 10, "{d}");
    let erase = actions.iter().find(|a| a["action"] == "erase").unwrap();
    assert_eq!(erase["permitted"], true);
    assert_eq!(erase["request_type"], "EraseDevice");

    // Charts: well-formed SVG with one bar per platform and the counts in its description.
    let res = w
        .client
        .get(w.a.url("/api/v1/reports/fleet/platforms.svg"))
        .bearer_auth(&w.token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    let svg = res.text().unwrap();
    let script = "import sys, xml.etree.ElementTree as ET\n\
        root = ET.fromstring(sys.stdin.read()); ns = '{http://www.w3.org/2000/svg}'\n\
        print(len(root.findall(ns + 'rect')), root.find(ns + 'desc').text)";
    let mut py = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    py.stdin.take().unwrap().write_all(svg.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "{svg}");
    let parsed = text(&out.stdout);
    let (_, report) = w.api(Method::GET, "/api/v1/reports/fleet", None);
    let platforms = report["by_platform"].as_object().unwrap();
    assert!(
        parsed.starts_with(&format!("{} ", platforms.len())),
        "{parsed} vs {report}"
    );
    for (name, n) in platforms {
        assert!(parsed.contains(&format!("{name}: {n}")), "{parsed}");
    }
    let res = w
        .client
        .get(w.a.url("/api/v1/reports/fleet/secrets.svg"))
        .bearer_auth(&w.token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 404);

    // The catalog, from Apple's schema.
    let (s, catalog) = w.api(Method::GET, "/api/v1/commands/catalog", None);
    assert_eq!(s, 200);
    let lock = catalog["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["request_type"] == "DeviceLock")
        .unwrap();
    assert_eq!(lock["permission"], "devices.lock");
    assert!(lock["platforms"]["ios"]["introduced"].is_string(), "{lock}");
    assert!(
        lock["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "Message" && k["type"] == "string")
    );

    // A command's plists, as sent and as answered.
    let view = w.command(&[ids[0].as_str()], json!({"RequestType": "SecurityInfo"}));
    let plist_field = |v: &Value, key: &str| {
        let script = format!(
            "import plistlib,sys; d = plistlib.loads(sys.stdin.buffer.read()); print(d[{key:?}] if {key:?} in d else d['Command']['RequestType'])"
        );
        let mut py = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        py.stdin
            .take()
            .unwrap()
            .write_all(v.as_str().unwrap().as_bytes())
            .unwrap();
        let out = py.wait_with_output().unwrap();
        assert!(out.status.success(), "{v}");
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(plist_field(&view["command_plist"], "RequestType"), "SecurityInfo");
    assert_eq!(
        plist_field(&view["targets"][0]["result_plist"], "Status"),
        "Acknowledged"
    );

    // Certificate lifetimes for the banners.
    let (s, status) = w.api(Method::GET, "/api/v1/status", None);
    assert_eq!(s, 200);
    assert!(status["ca"]["days_left"].as_i64().unwrap() > 300, "{status}");
    assert!(status["tls"]["not_after"].is_string(), "{status}");
    assert_eq!(status["push"]["configured"], true, "{status}");

    // The audit log newest first, paging backwards with `before`.
    let (s, newest) = w.api(Method::GET, "/api/v1/audit?order=newest&limit=3", None);
    assert_eq!(s, 200);
    let seqs: Vec<u64> = newest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|p| p[0] == p[1] + 1), "{seqs:?}");
    let next = newest["next"].as_u64().unwrap();
    let (_, older) = w.api(
        Method::GET,
        &format!("/api/v1/audit?order=newest&limit=3&before={next}"),
        None,
    );
    assert_eq!(older["items"][0]["seq"].as_u64().unwrap(), next - 1);
    let (s, _) = w.api(Method::GET, "/api/v1/audit?before=5", None);
    assert_eq!(s, 400, "before without order=newest");
    let (_, lock_records) = w.api(
        Method::GET,
        "/api/v1/audit?order=newest&action=device.bulk_action.lock",
        None,
    );
    assert_eq!(
        lock_records["items"].as_array().unwrap().len(),
        1,
        "one real bulk action, no dry runs"
    );
}
