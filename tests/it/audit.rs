//! The audit log through the real binary: what the API and the CLI record, who can read it,
//! and `citadel audit verify` catching an edit made to the store behind the appliance's back.

use reqwest::blocking::Response;
use serde_json::Value;

use crate::harness::{Appliance, run, text};
use crate::mdm::api_token;

/// `GET` an admin API path with the token.
fn get(a: &Appliance, token: &str, path: &str) -> Response {
    a.client().get(a.url(path)).bearer_auth(token).send().unwrap()
}

/// `POST` JSON (or nothing) to an admin API path with the token.
fn post(a: &Appliance, token: &str, path: &str, body: Option<Value>) -> Response {
    let req = a.client().post(a.url(path)).bearer_auth(token);
    match body {
        Some(body) => req.json(&body),
        None => req,
    }
    .send()
    .unwrap()
}

fn audit(a: &Appliance, token: &str, query: &str) -> Value {
    let res = get(a, token, &format!("/api/v1/audit{query}"));
    assert_eq!(res.status(), 200, "{query}");
    res.json().unwrap()
}

/// Recomputes an export's chain with Python's json and hashlib; returns how many records held.
fn recheck_with_python(export: &str) -> usize {
    use std::io::Write;
    let script = "import sys, json, hashlib\n\
        prev = '0' * 64\n\
        n = 0\n\
        for line in sys.stdin:\n\
        \x20   r = json.loads(line)\n\
        \x20   h = r.pop('hash')\n\
        \x20   assert r['prev_hash'] == prev, ('unlinked', r['seq'])\n\
        \x20   c = json.dumps(r, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()\n\
        \x20   assert hashlib.sha256(c).hexdigest() == h, ('altered', r['seq'])\n\
        \x20   prev = h\n\
        \x20   n += 1\n\
        print(n)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(export.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    text(&out.stdout).trim().parse().unwrap()
}

#[test]
fn changes_and_refusals_are_audited_and_tampering_is_detected() {
    let mut a = Appliance::start();
    let token = api_token(&a); // through the admin socket: audited as the CLI
    let client = a.client();

    // A refused action: the device does not exist.
    let res = post(
        &a,
        &token,
        "/api/v1/devices/NO-SUCH-DEVICE/actions/lock",
        Some(serde_json::json!({ "reason": "reported lost on ward 7" })),
    );
    assert_eq!(res.status(), 404);
    // A command for two devices that are not enrolled: refused.
    let res = post(
        &a,
        &token,
        "/api/v1/commands",
        Some(serde_json::json!({ "targets": ["A-1", "A-2"], "command": { "RequestType": "SecurityInfo" } })),
    );
    assert_eq!(res.status(), 400, "{}", res.text().unwrap_or_default());

    // A SCEP challenge and an enrollment link: recorded, their secrets not.
    let res = post(&a, &token, "/api/v1/scep/challenges", None);
    assert_eq!(res.status(), 201);
    let challenge = res.json::<Value>().unwrap()["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = post(&a, &token, "/api/v1/enrollment/links", None);
    assert_eq!(res.status(), 201);
    let link = res.json::<Value>().unwrap();
    let link_secret = link["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    let all = audit(&a, &token, "");
    let dump = all.to_string();
    assert!(!dump.contains(&challenge) && !dump.contains(&link_secret) && !dump.contains(&token));
    let items = all["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "api_token.create",
            "device.action.lock",
            "command.create.SecurityInfo",
            "scep_challenge.create",
            "enrollment_link.create"
        ]
    );
    assert_eq!(items[4]["target"], link["id"]);
    assert_eq!(items[0]["actor"], serde_json::json!({ "kind": "cli" }));
    let refused = &items[1];
    assert_eq!(refused["outcome"], "denied");
    assert_eq!(refused["target"], "NO-SUCH-DEVICE");
    assert_eq!(refused["source"], "127.0.0.1");
    assert_eq!(refused["actor"]["kind"], "api_token");
    assert_eq!(refused["actor"]["id"], items[0]["target"]);
    assert_eq!(
        (items[2]["target"].as_str(), items[2]["outcome"].as_str()),
        (Some("2 devices"), Some("denied"))
    );
    assert!(items[2]["reason"].as_str().unwrap().contains("not enrolled"));
    // Each record names the hash of the one before it.
    assert_eq!(items[1]["prev_hash"], items[0]["hash"]);
    assert_eq!(items[2]["prev_hash"], items[1]["hash"]);

    // Filters and paging.
    let denied = audit(&a, &token, "?outcome=denied&action=device.action.");
    assert_eq!(denied["items"].as_array().unwrap().len(), 1);
    let denied = audit(&a, &token, "?outcome=denied");
    assert_eq!(denied["items"].as_array().unwrap().len(), 2);
    let page = audit(&a, &token, "?limit=2");
    assert_eq!(page["next"], 2);
    let rest = audit(&a, &token, "?after=2");
    assert_eq!(rest["items"][0]["seq"], 3);
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert!(rest["next"].is_null());
    // The export: JSON lines, the same records, chained.
    let res = get(&a, &token, "/api/v1/audit/export");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let body = res.text().unwrap();
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The export itself is recorded before it is read.
    assert_eq!(&lines[..5], items);
    assert_eq!(lines[5]["action"], "audit.export");
    assert!(lines.windows(2).all(|w| w[1]["prev_hash"] == w[0]["hash"]));
    // Anyone can re-check an export without Citadel: each hash is the SHA-256 of the line's
    // other fields in canonical JSON (RFC 8785), here recomputed by Python.
    assert_eq!(recheck_with_python(&body), lines.len());
    let res = get(&a, &token, "/api/v1/audit/export?outcome=denied");
    assert_eq!(res.text().unwrap().lines().count(), 2);
    let res = get(&a, &token, "/api/v1/audit/export?limit=5");
    assert_eq!(res.status(), 400);
    // Unauthenticated readers and bad queries are refused.
    let res = client.get(a.url("/api/v1/audit")).send().unwrap();
    assert_eq!(res.status(), 401);
    let res = get(&a, &token, "/api/v1/audit?outcome=maybe");
    assert_eq!(res.status(), 400);
    // There is no way to change the log through the API.
    let res = client
        .delete(a.url("/api/v1/audit"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert!(res.status() == 404 || res.status() == 405, "{}", res.status());

    // Verified while running (through the admin socket) and after a stop (on the store).
    let out = run(a.cmd().args(["audit", "verify"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("7 records verified"),
        "{}",
        text(&out.stderr)
    );
    a.stop();
    let out = run(a
        .cmd()
        .args(["api-token", "create", "--name", "offline", "--role", "owner"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(a.cmd().args(["audit", "verify", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["verified"], 8);

    // Someone with the disk rewrites why the lock was refused.
    {
        use citadel::store::{SledOptions, SledStore, Store, Tree};
        let store = SledStore::open(&a.data_dir.join("store"), &SledOptions::default()).unwrap();
        let key = 2u64.to_be_bytes();
        let mut record: Value =
            serde_json::from_slice(&store.get(Tree::Audit, &key).unwrap().unwrap()).unwrap();
        record["reason"] = Value::String("routine check".into());
        store
            .put(Tree::Audit, &key, &serde_json::to_vec(&record).unwrap())
            .unwrap();
        store.flush().unwrap();
    }
    let out = run(a.cmd().args(["audit", "verify"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("record 2 was altered"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn signed_checkpoints_expose_a_chain_rewritten_whole() {
    let mut a = Appliance::start();
    let token = api_token(&a);
    for _ in 0..3 {
        assert_eq!(post(&a, &token, "/api/v1/scep/challenges", None).status(), 201);
    }
    let out = run(a.cmd().args(["audit", "checkpoint"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (seq, hash) = (
        made["seq"].as_u64().unwrap(),
        made["hash"].as_str().unwrap().to_owned(),
    );
    assert_eq!(seq, 4, "token creation and three challenges");
    let again = run(a.cmd().args(["audit", "checkpoint"]));
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("already covers"),
        "{}",
        text(&again.stderr)
    );

    // The API lists it with the head; the signature checks out with openssl against the
    // appliance's root, and what it signs is the record's hash.
    let listed: Value = get(&a, &token, "/api/v1/audit/checkpoints").json().unwrap();
    assert_eq!(listed["checkpoints"][0]["hash"], hash.as_str());
    assert!(listed["head"]["seq"].as_u64().unwrap() >= seq);
    let der = data_encoding::BASE64
        .decode(listed["checkpoints"][0]["signed"].as_str().unwrap().as_bytes())
        .unwrap();
    let signed = a.tmp.path().join("checkpoint.p7m");
    std::fs::write(&signed, der).unwrap();
    let ca = a.export_ca();
    let out = run(std::process::Command::new("openssl").args([
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        signed.to_str().unwrap(),
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "any",
    ]));
    assert!(out.status.success(), "openssl: {}", text(&out.stderr));
    let statement: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(statement["format"], "citadel-audit-checkpoint/1");
    assert_eq!(statement["seq"], seq);
    assert_eq!(statement["hash"], hash.as_str());
    let record = &audit(&a, &token, &format!("?after={}&limit=1", seq - 1))["items"][0];
    assert_eq!(record["hash"], hash.as_str());
    let expect = format!("{seq}:{hash}");
    let out = run(a.cmd().args(["audit", "verify", "--expect", &expect]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Someone with the disk replaces the whole chain with a consistent forgery.
    a.stop();
    {
        use citadel::audit::{Actor, AuditEvent, AuditLog, Outcome};
        use citadel::store::{SledOptions, SledStore, Store, Tree};
        use std::sync::Arc;
        let store = SledStore::open(&a.data_dir.join("store"), &SledOptions::default()).unwrap();
        let keys: Vec<Vec<u8>> = store
            .scan_prefix(Tree::Audit, b"", None, 10_000)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            store.delete(Tree::Audit, &k).unwrap();
        }
        store.delete(Tree::Meta, b"audit_head").unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let log = AuditLog::open(Arc::clone(&store)).unwrap();
        for _ in 0..6 {
            log.append(
                AuditEvent::new(Actor::System, "nothing.happened", Outcome::Success),
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        }
        store.flush().unwrap();
    }
    let out = run(a.cmd().args(["audit", "verify"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("checkpoint signed for record 4")
            && text(&out.stderr).contains("rewritten"),
        "{}",
        text(&out.stderr)
    );
    // Removing the checkpoints too hides the forgery from the store alone — which is why the
    // checkpoints also leave the appliance — but not from a hash kept elsewhere.
    {
        use citadel::store::{SledOptions, SledStore, Store, Tree};
        let store = SledStore::open(&a.data_dir.join("store"), &SledOptions::default()).unwrap();
        store.delete(Tree::AuditCheckpoints, &seq.to_be_bytes()).unwrap();
        store.flush().unwrap();
    }
    let out = run(a.cmd().args(["audit", "verify"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(a.cmd().args(["audit", "verify", "--expect", &expect]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("record 4 is not the one expected"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn downloads_redemptions_exports_and_pushes_are_audited() {
    let a = Appliance::start();
    let token = api_token(&a);
    let res = get(&a, &token, "/api/v1/enrollment/profile");
    assert_eq!(res.status(), 200);
    let res = post(&a, &token, "/api/v1/enrollment/links", None);
    let link = res.json::<Value>().unwrap();
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/enroll/").unwrap()..];
    assert_eq!(a.client().get(a.url(path)).send().unwrap().status(), 200);
    assert_eq!(
        get(&a, &token, "/api/v1/devices/export?platform=ios").status(),
        200
    );
    let res = post(
        &a,
        &token,
        "/api/v1/push",
        Some(serde_json::json!({ "targets": ["A-1"] })),
    );
    assert_eq!(res.status(), 202);
    let items = audit(&a, &token, "")["items"].as_array().unwrap().clone();
    let find = |action: &str| {
        items
            .iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("{action} not in {items:?}"))
            .clone()
    };
    assert_eq!(find("enrollment_profile.create")["actor"]["kind"], "api_token");
    let redeemed = find("enrollment_link.redeem");
    assert_eq!(redeemed["target"], link["id"]);
    assert_eq!(redeemed["actor"]["kind"], "anonymous");
    assert!(
        find("device.export")["reason"]
            .as_str()
            .unwrap()
            .contains("platform=ios")
    );
    assert_eq!(find("push.request")["target"], "A-1");
}
