//! The end-user self-service portal through the real binary: a user enrols their own device
//! with a personal link, sees it with its compliance, acts on it within the privacy rules and
//! what the site allows — and cannot see or touch anyone else's.

use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::harness::Appliance;
use crate::mdm::{Device, api_token, verify_profile};

const COOKIE: &str = "__Host-citadel_portal";

pub(crate) struct PortalUser {
    client: Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl PortalUser {
    pub(crate) fn sign_in(a: &Appliance, username: &str, password: &str) -> Self {
        let client = a.client();
        let res = client
            .post(a.url("/api/v1/portal/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "{username}");
        let cookie = res
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.starts_with(&format!("{COOKIE}="))
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
        );
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let csrf = res.json::<Value>().unwrap()["csrf_token"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            client,
            base: a.url(""),
            cookie,
            csrf,
        }
    }

    fn send(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("X-CSRF-Token", &self.csrf);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().unwrap()
    }

    pub(crate) fn me(&self) -> Value {
        let res = self.send(Method::GET, "/api/v1/portal/me", None);
        assert_eq!(res.status(), 200);
        res.json().unwrap()
    }
}

fn admin(a: &Appliance, token: &str, method: Method, path: &str, body: Option<Value>) -> Response {
    let mut req = a.client().request(method, a.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().unwrap()
}

#[test]
fn users_enrol_and_act_on_their_own_devices_only() {
    let a = Appliance::start();
    let token = api_token(&a);
    for (user, password) in [
        ("alice", "alice keeps a quiet garden"),
        ("bob", "bob rides the late ferry"),
    ] {
        let res = admin(
            &a,
            &token,
            Method::POST,
            "/api/v1/portal-users",
            Some(json!({ "username": user, "password": password })),
        );
        assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    }
    let alice = PortalUser::sign_in(&a, "alice", "alice keeps a quiet garden");
    let bob = PortalUser::sign_in(&a, "bob", "bob rides the late ferry");
    assert_eq!(
        a.client()
            .post(a.url("/api/v1/portal/login"))
            .json(&json!({ "username": "alice", "password": "wrong" }))
            .send()
            .unwrap()
            .status(),
        401
    );

    // Alice's personal link: the profile it serves checks in with a one-time assignment.
    let res = alice.send(Method::POST, "/api/v1/portal/enrollment-link", None);
    assert_eq!(res.status(), 201);
    let link: Value = res.json().unwrap();
    // A person holds a few unused links at a time, not thousands.
    for _ in 0..4 {
        assert_eq!(
            alice
                .send(Method::POST, "/api/v1/portal/enrollment-link", None)
                .status(),
            201
        );
    }
    assert_eq!(
        alice
            .send(Method::POST, "/api/v1/portal/enrollment-link", None)
            .status(),
        409
    );
    assert!(link["qr_svg"].as_str().unwrap().contains("<svg"));
    let url = link["url"].as_str().unwrap();
    let signed = a
        .client()
        .get(a.url(&url[url.find("/enroll/").unwrap()..]))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let profile = verify_profile(&a, &signed);
    let scep = profile["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["PayloadType"] == "com.apple.security.scep")
        .unwrap()
        .clone();
    let challenge = scep["PayloadContent"]["Challenge"].as_str().unwrap().to_owned();

    // Her phone enrols with that profile's challenge: its certificate names her, so the
    // device is hers. Bob's iPad is enrolled by IT and assigned to him.
    let client = a.client();
    let phone = Device::enrol_with(&a, "alice-phone", &challenge);
    phone.authenticate(&a, &client);
    phone.token_update(&a, &client);
    // A device enrolled with an administrator's challenge belongs to nobody.
    let spare = Device::enrol(&a, "spare-phone");
    spare.authenticate(&a, &client);
    let ipad = Device::enrol(&a, "bob-ipad");
    ipad.authenticate(&a, &client);
    ipad.token_update(&a, &client);
    let res = admin(
        &a,
        &token,
        Method::PUT,
        &format!("/api/v1/devices/{}/user", ipad.udid),
        Some(json!({ "username": "bob" })),
    );
    assert_eq!(res.status(), 200);

    let mine = alice.me();
    let devices = mine["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{mine}");
    assert_eq!(devices[0]["enrollment_id"], phone.udid.as_str());
    assert_eq!(
        devices[0]["ownership"], "personal",
        "enrolled from the portal: personal"
    );
    assert_eq!(
        devices[0]["allowed"]["locate"], false,
        "personal devices are never located"
    );
    assert_eq!(
        (&devices[0]["lost_mode"], &devices[0]["last_location"]),
        (&json!(false), &Value::Null)
    );
    assert!(devices[0].get("compliance").is_some());
    let his = bob.me();
    assert_eq!(his["devices"][0]["enrollment_id"], ipad.udid.as_str());
    assert_eq!(his["devices"][0]["allowed"]["locate"], true, "corporate");

    // Alice cannot see or act on Bob's iPad: the same answer as for no device at all.
    let path = |id: &str, what: &str| format!("/api/v1/portal/devices/{id}/{what}");
    assert_eq!(
        alice
            .send(Method::POST, &path(&ipad.udid, "lock"), Some(json!({})))
            .status(),
        404
    );
    assert_eq!(
        alice
            .send(Method::POST, &path("NO-SUCH", "lock"), Some(json!({})))
            .status(),
        404
    );
    // Her own: lock works; locating a personal device is refused by the privacy rules; an
    // erase request goes to the administrators.
    let res = alice.send(
        Method::POST,
        &path(&phone.udid, "lock"),
        Some(json!({ "message": "Lost — call 555 0100" })),
    );
    assert_eq!(res.status(), 202, "{}", res.text().unwrap());
    assert_eq!(
        alice
            .send(Method::POST, &path(&phone.udid, "locate"), Some(json!({})))
            .status(),
        403
    );
    assert_eq!(
        alice
            .send(Method::POST, &path(&phone.udid, "request_erase"), Some(json!({})))
            .status(),
        400,
        "a reason is required"
    );
    let res = alice.send(
        Method::POST,
        &path(&phone.udid, "request_erase"),
        Some(json!({ "reason": "stolen on the train" })),
    );
    assert_eq!(res.status(), 202);
    let requests: Vec<Value> = admin(&a, &token, Method::GET, "/api/v1/erase-requests", None)
        .json()
        .unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        (
            requests[0]["username"].as_str(),
            requests[0]["enrollment_id"].as_str()
        ),
        (Some("alice"), Some(phone.udid.as_str()))
    );
    // The device's page says whose it is and what she asked.
    let device_path = format!("/api/v1/devices/{}", phone.udid);
    let detail: Value = admin(&a, &token, Method::GET, &device_path, None).json().unwrap();
    assert_eq!(detail["assigned_user"], "alice", "{detail}");
    assert_eq!(detail["erase_requests"][0]["reason"], "stolen on the train");
    let spare_detail: Value = admin(
        &a,
        &token,
        Method::GET,
        &format!("/api/v1/devices/{}", spare.udid),
        None,
    )
    .json()
    .unwrap();
    assert!(spare_detail["assigned_user"].is_null(), "{spare_detail}");
    assert_eq!(spare_detail["erase_requests"], json!([]));
    // An administrator may dismiss it (erasing the device would clear it too).
    assert_eq!(
        admin(
            &a,
            &token,
            Method::DELETE,
            &format!("/api/v1/erase-requests/{}", phone.udid),
            None
        )
        .status(),
        204
    );
    let requests: Vec<Value> = admin(&a, &token, Method::GET, "/api/v1/erase-requests", None)
        .json()
        .unwrap();
    assert!(requests.is_empty());
    let detail: Value = admin(&a, &token, Method::GET, &device_path, None).json().unwrap();
    assert_eq!(detail["erase_requests"], json!([]), "dismissed");
    // The lock reached the device's queue.
    let next = phone
        .answer(&a, &client, "Idle", None, json!({}))
        .expect("a command");
    assert_eq!(next["Command"]["RequestType"], "DeviceLock");

    // Realms stay apart: a portal cookie opens no admin route, an admin token no portal route,
    // and state changes need the CSRF token.
    let res = a
        .client()
        .get(a.url("/api/v1/devices"))
        .header("Cookie", &alice.cookie)
        .send()
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        admin(&a, &token, Method::GET, "/api/v1/portal/me", None).status(),
        401
    );
    let res = a
        .client()
        .post(a.url(&path(&phone.udid, "lock")))
        .header("Cookie", &alice.cookie)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 403);
    let privacy: Vec<Value> = alice
        .send(Method::GET, "/api/v1/portal/privacy", None)
        .json()
        .unwrap();
    assert!(
        privacy
            .iter()
            .any(|r| r["information"] == "Location" && r["personal"] == "never")
    );

    // The audit log has it all, with the user as actor.
    let log: Value = admin(&a, &token, Method::GET, "/api/v1/audit?actor=alice", None)
        .json()
        .unwrap();
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "portal.login",
        "enrollment_link.create",
        "device.action.lock",
        "portal.request_erase",
    ] {
        assert!(actions.contains(&expected), "{expected} not in {actions:?}");
    }
    let assigned: Value = admin(
        &a,
        &token,
        Method::GET,
        &format!("/api/v1/audit?action=device.assign&target={}", phone.udid),
        None,
    )
    .json()
    .unwrap();
    assert!(
        assigned["items"][0]["reason"].as_str().unwrap().contains("alice"),
        "{assigned}"
    );
    // Bob cannot take Alice's enrolled phone over with a certificate from his own link.
    let res = bob.send(Method::POST, "/api/v1/portal/enrollment-link", None);
    let url = res.json::<Value>().unwrap()["url"].as_str().unwrap().to_owned();
    let signed = a
        .client()
        .get(a.url(&url[url.find("/enroll/").unwrap()..]))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let bobs = verify_profile(&a, &signed)["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["PayloadType"] == "com.apple.security.scep")
        .unwrap()["PayloadContent"]["Challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let impostor = Device::enrol_with(&a, "bob-impostor", &bobs);
    let r = impostor.checkin(
        &a,
        &client,
        json!({"MessageType": "Authenticate", "UDID": phone.udid, "Topic": "com.apple.mgmt.test"}),
    );
    assert_eq!(r.status(), 401);
    assert_eq!(alice.me()["devices"].as_array().unwrap().len(), 1, "still hers");
    assert!(
        bob.me()["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["enrollment_id"] != phone.udid.as_str())
    );

    // When the phone leaves management it belongs to nobody: whoever enrols it next does.
    let r = phone.checkin(
        &a,
        &client,
        json!({"MessageType": "CheckOut", "UDID": phone.udid, "Topic": "com.apple.mgmt.test"}),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(alice.me()["devices"].as_array().unwrap().len(), 0);

    // Signing out ends the portal session.
    assert_eq!(
        alice.send(Method::POST, "/api/v1/portal/logout", None).status(),
        204
    );
    assert_eq!(alice.send(Method::GET, "/api/v1/portal/me", None).status(), 401);
}
