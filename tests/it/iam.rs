//! Administrators, sessions and permissions, through the real binary over HTTPS.
//!
//! TOTP codes come from an independent RFC 6238 implementation (Python's standard library), and
//! cookies are handled by hand so that their attributes can be checked.

use std::collections::BTreeMap;
use std::process::Command;

use reqwest::Method;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::harness::{Appliance, run, text};
use crate::mdm::api_token;

const COOKIE: &str = "__Host-citadel_session";
const OWNER_PASSWORD: &str = "violet tram orbits the quay";

/// The TOTP code for `secret` (base32) at the current 30-second step plus `offset` steps,
/// computed by Python's hmac/hashlib (an implementation independent of the server's).
pub(crate) fn totp(secret: &str, offset: i64) -> String {
    let script = "import base64,hmac,hashlib,struct,time,sys\n\
        s=sys.argv[1]; k=base64.b32decode(s+'='*(-len(s)%8))\n\
        c=int(time.time())//30+int(sys.argv[2])\n\
        h=hmac.new(k,struct.pack('>Q',c),hashlib.sha1).digest(); o=h[-1]&15\n\
        print('%06d'%((struct.unpack('>I',h[o:o+4])[0]&0x7fffffff)%1000000))";
    let out = run(Command::new("python3").args(["-c", script, secret, &offset.to_string()]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

pub(crate) fn bootstrap_secret(a: &Appliance) -> String {
    a.stdout()
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 39 && l.matches('-').count() == 7)
        .expect("bootstrap secret in the first-start notice")
        .to_owned()
}

/// A browser, as far as the server can tell: a session cookie and the CSRF token.
struct Console {
    client: Client,
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Console {
    fn new(a: &Appliance) -> Self {
        Self {
            client: a.client(),
            base: a.url(""),
            cookie: None,
            csrf: None,
        }
    }

    fn send(&self, method: Method, path: &str, body: Option<Value>, csrf: bool) -> Response {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", format!("{COOKIE}={c}"));
        }
        if csrf && let Some(t) = &self.csrf {
            req = req.header("X-CSRF-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().unwrap()
    }

    fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None, true)
    }

    fn post(&self, path: &str, body: Value) -> Response {
        self.send(Method::POST, path, Some(body), true)
    }

    /// Takes the session a response set (checking the cookie's attributes) and its CSRF
    /// token; returns the body.
    fn adopt(&mut self, res: Response) -> Value {
        assert_eq!(res.status(), 200, "sign-in refused");
        let set: Vec<String> = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let cookie = set
            .iter()
            .find(|c| c.starts_with(&format!("{COOKIE}=")))
            .unwrap_or_else(|| panic!("no session cookie in {set:?}"));
        for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
        }
        assert!(
            !cookie.contains("Domain="),
            "__Host- cookies have no Domain: {cookie}"
        );
        let value = cookie[COOKIE.len() + 1..].split(';').next().unwrap().to_owned();
        self.cookie = Some(value);
        let body: Value = res.json().unwrap();
        self.csrf = Some(body["csrf_token"].as_str().unwrap().to_owned());
        body
    }

    fn login(&mut self, username: &str, password: &str, code: Option<&str>) -> Response {
        self.send(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({ "username": username, "password": password, "code": code })),
            false,
        )
    }
}

fn audit_actions(a: &Appliance, token: &str, query: &str) -> Vec<Value> {
    let res = a
        .client()
        .get(a.url(&format!("/api/v1/audit{query}")))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().unwrap()["items"].as_array().unwrap().clone()
}

#[test]
fn the_first_owner_enrols_totp_and_sessions_resist_csrf_and_fixation() {
    let a = Appliance::start();
    let secret = bootstrap_secret(&a);
    let mut owner = Console::new(&a);
    let anonymous = Console::new(&a);
    let setup = |secret: &str, password: &str| {
        anonymous.send(
            Method::POST,
            "/api/v1/setup",
            Some(json!({ "bootstrap_secret": secret, "username": "Olivia", "display_name": "Olivia Owner", "password": password })),
            false,
        )
    };
    assert_eq!(setup("AAAA-BBBB", OWNER_PASSWORD).status(), 401);
    let weak = setup(&secret, "Password123!");
    assert_eq!(weak.status(), 400);
    assert!(weak.text().unwrap().contains("too easy to guess"));
    let res = setup(&secret, OWNER_PASSWORD);
    let body = owner.adopt(res);
    assert_eq!(body["username"], "olivia");
    assert_eq!(body["role"], "owner");
    assert_eq!(body["pending"], json!(["mfa_enrolment"]));
    // The secret is void once used.
    assert_eq!(setup(&secret, OWNER_PASSWORD).status(), 401);

    // Until MFA is enrolled the session grants nothing but enrolment.
    let res = owner.get("/api/v1/devices");
    assert_eq!(res.status(), 403);
    assert!(res.text().unwrap().contains("two-factor"));
    // State changes need the CSRF token.
    assert_eq!(
        owner
            .send(Method::POST, "/api/v1/auth/totp", None, false)
            .status(),
        403
    );
    let res = owner.post("/api/v1/auth/totp", json!({}));
    assert_eq!(res.status(), 200);
    let enrolment: Value = res.json().unwrap();
    let totp_secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    assert!(enrolment["qr_svg"].as_str().unwrap().contains("<svg"));
    let res = owner.post("/api/v1/auth/totp/confirm", json!({ "code": "000000" }));
    assert_eq!(res.status(), 400);
    let before = owner.cookie.clone();
    let res = owner.post(
        "/api/v1/auth/totp/confirm",
        json!({ "code": totp(&totp_secret, 0) }),
    );
    let confirmed = owner.adopt(res);
    let recovery: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(confirmed["pending"], json!([]));
    assert_eq!(confirmed["mfa_enrolled"], true);
    // The privilege change came with a new session; the old cookie is dead.
    assert_ne!(before, owner.cookie);
    let stale = Console {
        cookie: before,
        ..Console::new(&a)
    };
    assert_eq!(stale.get("/api/v1/auth/session").status(), 401);
    assert_eq!(owner.get("/api/v1/devices").status(), 200);

    // Session fixation: a cookie planted before sign-in is never adopted.
    let mut planted = Console::new(&a);
    planted.cookie = Some("attacker-chosen-session-value".into());
    assert_eq!(
        planted.login("olivia", OWNER_PASSWORD, None).status(),
        401,
        "code required"
    );
    // One code for the sign-in and its replay: computed twice, a 30-second boundary between
    // the two would make them different codes (and the replay a valid sign-in).
    let code = totp(&totp_secret, 1);
    let res = planted.login("olivia", OWNER_PASSWORD, Some(&code));
    planted.adopt(res);
    assert_ne!(planted.cookie.as_deref(), Some("attacker-chosen-session-value"));
    let fixed = Console {
        cookie: Some("attacker-chosen-session-value".into()),
        ..Console::new(&a)
    };
    assert_eq!(fixed.get("/api/v1/devices").status(), 401);
    // A code is accepted once.
    assert_eq!(
        Console::new(&a)
            .login("olivia", OWNER_PASSWORD, Some(&code))
            .status(),
        401
    );

    // Own sessions: listed, and one can end another.
    let res = owner.get("/api/v1/auth/sessions");
    assert_eq!(res.status(), 200);
    let list: Vec<Value> = res.json().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let other = list.iter().find(|s| s["current"] == false).unwrap();
    let res = owner.send(
        Method::DELETE,
        &format!("/api/v1/auth/sessions/{}", other["id"].as_str().unwrap()),
        None,
        true,
    );
    assert_eq!(res.status(), 204);
    assert_eq!(planted.get("/api/v1/devices").status(), 401);

    // Re-authentication (here with a recovery code) replaces the session.
    let old = owner.cookie.clone();
    let res = owner.post(
        "/api/v1/auth/reauthenticate",
        json!({ "password": OWNER_PASSWORD, "code": recovery[0] }),
    );
    let body = owner.adopt(res);
    assert_eq!(body["recovery_codes_left"], 9);
    assert_ne!(old, owner.cookie);
    // A recovery code works once.
    let res = owner.post(
        "/api/v1/auth/reauthenticate",
        json!({ "password": OWNER_PASSWORD, "code": recovery[0] }),
    );
    assert_eq!(res.status(), 401);

    // Sign-ins, enrolment and set-up are in the audit log, with the failures.
    let token = api_token(&a);
    let records = audit_actions(&a, &token, "?action=auth.");
    let count = |action: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome)
            .count()
    };
    assert!(count("auth.login", "success") >= 1, "{records:?}");
    assert!(count("auth.login", "denied") >= 2, "{records:?}");
    assert_eq!(count("auth.totp.enrol", "success"), 1);
    assert_eq!(count("auth.totp.enrol", "denied"), 1);
    assert_eq!(count("auth.session.revoke", "success"), 1);
    assert!(count("auth.reauthenticate", "denied") >= 1);
    let setup_records = audit_actions(&a, &token, "?action=administrator.setup");
    assert_eq!(
        setup_records
            .iter()
            .map(|r| (
                r["outcome"].as_str().unwrap(),
                r["actor"]["kind"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        vec![
            ("denied", "bootstrap"),
            ("success", "bootstrap"),
            ("denied", "bootstrap")
        ]
    );

    // Signing out ends the session and clears the cookie.
    let res = owner.post("/api/v1/auth/logout", json!({}));
    assert_eq!(res.status(), 204);
    let cleared = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cleared.contains("Max-Age=0") || cleared.contains("Expires="),
        "{cleared}"
    );
    assert_eq!(owner.get("/api/v1/devices").status(), 401);
}

#[test]
fn lockout_new_accounts_and_help_desk_limits() {
    let a = Appliance::start();
    let token = api_token(&a);
    let client = a.client();
    let create = |body: Value| {
        client
            .post(a.url("/api/v1/users"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap()
    };
    let initial = "a temporary opening phrase";
    let res = create(
        json!({ "username": "hana", "display_name": "Hana Help", "role": "help_desk", "password": initial }),
    );
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    assert_eq!(
        create(json!({ "username": "hana", "role": "help_desk", "password": initial })).status(),
        409
    );
    assert_eq!(
        create(json!({ "username": "ivan", "role": "no-such-role", "password": initial })).status(),
        400
    );

    // Five wrong passwords lock the account, even against the right one; unknown names lock
    // the same way.
    let mut hana = Console::new(&a);
    for _ in 0..5 {
        assert_eq!(hana.login("hana", "not the password at all", None).status(), 401);
    }
    let res = hana.login("hana", initial, None);
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    for _ in 0..5 {
        assert_eq!(hana.login("nobody", "whatever it is", None).status(), 401);
    }
    assert_eq!(hana.login("nobody", "whatever it is", None).status(), 429);
    let denied = audit_actions(&a, &token, "?action=auth.login&outcome=denied");
    assert!(
        denied
            .iter()
            .any(|r| r["target"] == "hana" && r["reason"].as_str().unwrap().contains("locked until")),
        "{denied:?}"
    );
    assert!(
        denied
            .iter()
            .any(|r| r["target"] == "nobody" && r["reason"] == "unknown account")
    );

    // An Owner unlocks nothing by hand here; a second help-desk account shows the first
    // sign-in steps instead: new password and TOTP before anything else.
    let res = create(json!({ "username": "jon", "role": "help_desk", "password": initial }));
    assert_eq!(res.status(), 201);
    let mut jon = Console::new(&a);
    let res = jon.login("jon", initial, None);
    let body = jon.adopt(res);
    assert_eq!(body["pending"], json!(["mfa_enrolment", "password_change"]));
    assert_eq!(jon.get("/api/v1/devices").status(), 403);
    let res = jon.post(
        "/api/v1/auth/password",
        json!({ "current_password": initial, "new_password": "jon's quiet lighthouse keeper" }),
    );
    jon.adopt(res);
    let res = jon.post("/api/v1/auth/totp", json!({}));
    let secret = res.json::<Value>().unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = jon.post("/api/v1/auth/totp/confirm", json!({ "code": totp(&secret, 0) }));
    let body = jon.adopt(res);
    assert_eq!(body["pending"], json!([]));
    assert_eq!(body["role"], "help_desk");

    // Help desk: sees devices, may lock, may not erase (403 and audited), cannot manage users.
    assert_eq!(jon.get("/api/v1/devices").status(), 200);
    let lock = jon.post(
        "/api/v1/devices/no-such-device/actions/lock",
        json!({ "reason": "lost on ward 4" }),
    );
    assert_eq!(lock.status(), 404, "allowed, but there is no such device");
    let erase = jon.post(
        "/api/v1/devices/no-such-device/actions/erase",
        json!({ "reason": "stolen", "confirm_serial": "X" }),
    );
    assert_eq!(erase.status(), 403);
    assert!(erase.text().unwrap().contains("devices.erase"));
    let raw = jon.post(
        "/api/v1/commands",
        json!({ "targets": ["no-such-device"], "command": { "RequestType": "EraseDevice" } }),
    );
    assert_eq!(
        raw.status(),
        403,
        "the command API is no way around the permission"
    );
    assert_eq!(jon.get("/api/v1/users").status(), 403);
    let refused = audit_actions(&a, &token, "?action=access.denied");
    assert!(
        refused.iter().any(|r| r["actor"]["id"] == "jon"
            && r["target"] == "POST /api/v1/devices/no-such-device/actions/erase"),
        "{refused:?}"
    );

    // Disabling an account ends its sessions at once.
    let res = client
        .patch(a.url("/api/v1/users/jon"))
        .bearer_auth(&token)
        .json(&json!({ "disabled": true }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(jon.get("/api/v1/devices").status(), 401);
    // Tokens and users never hold secrets in what the API shows.
    let users = client
        .get(a.url("/api/v1/users"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!users.contains("argon2") && !users.contains(&secret), "{users}");

    // Managing people is not being Owner: a role with users.manage can neither hand out nor
    // touch more than it holds itself.
    let res = client
        .post(a.url("/api/v1/roles"))
        .bearer_auth(&token)
        .json(&json!({ "name": "people", "permissions": ["users.read", "users.manage", "devices.read"] }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    let out = run(a
        .cmd()
        .args(["api-token", "create", "--name", "hr", "--role", "people"]));
    let hr = text(&out.stdout).trim().to_owned();
    let res = create(json!({ "username": "olga", "role": "owner", "password": initial }));
    assert_eq!(res.status(), 201);
    let as_hr = |method: Method, path: &str, body: Value| {
        client
            .request(method, a.url(path))
            .bearer_auth(&hr)
            .json(&body)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(
        as_hr(Method::PATCH, "/api/v1/users/hana", json!({ "role": "owner" })),
        403
    );
    assert_eq!(
        as_hr(
            Method::POST,
            "/api/v1/users",
            json!({ "username": "eve", "role": "owner", "password": initial })
        ),
        403
    );
    assert_eq!(
        as_hr(Method::POST, "/api/v1/users/olga/mfa/reset", json!({})),
        403
    );
    assert_eq!(
        as_hr(
            Method::PUT,
            "/api/v1/roles/people",
            json!({ "permissions": ["users.manage", "settings.manage"] })
        ),
        403
    );
    let res = client
        .post(a.url("/api/v1/roles"))
        .bearer_auth(&token)
        .json(&json!({ "name": "readers", "permissions": ["devices.read"] }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(
        as_hr(Method::PATCH, "/api/v1/users/hana", json!({ "role": "readers" })),
        403,
        "hana's help-desk role holds more than hr does"
    );
    assert_eq!(
        as_hr(
            Method::POST,
            "/api/v1/users",
            json!({ "username": "ron", "role": "readers", "password": initial })
        ),
        201
    );
    assert_eq!(
        as_hr(
            Method::PATCH,
            "/api/v1/users/ron",
            json!({ "display_name": "Ron" })
        ),
        200
    );
    // Tokens do not make tokens.
    let res = client
        .post(a.url("/api/v1/api-tokens"))
        .bearer_auth(&token)
        .json(&json!({ "name": "child", "role": "auditor" }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 403);
    let refusals = audit_actions(&a, &token, "?action=administrator.update&outcome=denied");
    assert!(!refusals.is_empty(), "refused changes are audited");
}

/// The access rules, as the product promises them: every admin API route and the permission
/// it needs. The server's own table (`GET /api/v1/routes`) must equal this, so a route added
/// or loosened without updating the promise fails here.
const SPEC: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/setup", "public"),
    ("POST", "/api/v1/auth/login", "public"),
    ("POST", "/api/v1/auth/logout", "signed_in"),
    ("GET", "/api/v1/auth/session", "signed_in"),
    ("POST", "/api/v1/auth/reauthenticate", "signed_in"),
    ("POST", "/api/v1/auth/password", "signed_in"),
    ("POST", "/api/v1/auth/totp", "signed_in"),
    ("POST", "/api/v1/auth/totp/confirm", "signed_in"),
    ("GET", "/api/v1/auth/sessions", "signed_in"),
    ("DELETE", "/api/v1/auth/sessions/{id}", "signed_in"),
    ("GET", "/api/v1/permissions", "signed_in"),
    ("GET", "/api/v1/routes", "signed_in"),
    ("GET", "/api/v1/users", "users.read"),
    ("POST", "/api/v1/users", "users.manage"),
    ("GET", "/api/v1/users/{username}", "users.read"),
    ("PATCH", "/api/v1/users/{username}", "users.manage"),
    ("DELETE", "/api/v1/users/{username}", "users.manage"),
    ("POST", "/api/v1/users/{username}/password", "users.manage"),
    ("POST", "/api/v1/users/{username}/mfa/reset", "users.manage"),
    ("GET", "/api/v1/roles", "users.read"),
    ("POST", "/api/v1/roles", "users.manage"),
    ("PUT", "/api/v1/roles/{name}", "users.manage"),
    ("DELETE", "/api/v1/roles/{name}", "users.manage"),
    ("GET", "/api/v1/api-tokens", "api_tokens.manage"),
    ("POST", "/api/v1/api-tokens", "api_tokens.manage"),
    ("POST", "/api/v1/api-tokens/{id}/revoke", "api_tokens.manage"),
    ("POST", "/api/v1/scep/challenges", "enrollment.manage"),
    ("GET", "/api/v1/enrollment/profile", "enrollment.manage"),
    ("POST", "/api/v1/enrollment/links", "enrollment.manage"),
    ("POST", "/api/v1/commands", "commands.send"),
    ("GET", "/api/v1/commands/catalog", "commands.read"),
    ("GET", "/api/v1/commands/{uuid}", "commands.read"),
    ("GET", "/api/v1/devices", "devices.read"),
    ("GET", "/api/v1/devices/export", "devices.read"),
    ("GET", "/api/v1/reports/fleet", "devices.read"),
    ("GET", "/api/v1/reports/fleet/{chart}", "devices.read"),
    ("GET", "/api/v1/status", "signed_in"),
    ("GET", "/api/v1/settings", "settings.read"),
    ("POST", "/api/v1/devices/actions/{action}", "device_action"),
    ("POST", "/api/v1/devices/{id}/actions/{action}", "device_action"),
    ("GET", "/api/v1/devices/{id}/actions", "devices.read"),
    ("GET", "/api/v1/devices/{id}/locations", "devices.locate"),
    ("GET", "/api/v1/devices/{id}", "devices.read"),
    ("GET", "/api/v1/devices/{id}/apps", "devices.read"),
    ("GET", "/api/v1/devices/{id}/profiles", "devices.read"),
    ("GET", "/api/v1/devices/{id}/certificates", "devices.read"),
    ("GET", "/api/v1/devices/{id}/history", "devices.read"),
    ("POST", "/api/v1/devices/{id}/inventory", "devices.manage"),
    ("PUT", "/api/v1/devices/{id}/ownership", "devices.manage"),
    ("GET", "/api/v1/push-cert", "settings.read"),
    ("PUT", "/api/v1/push-cert", "settings.manage"),
    ("POST", "/api/v1/push-cert/csr", "settings.manage"),
    ("POST", "/api/v1/push", "push.send"),
    ("GET", "/api/v1/audit", "audit.read"),
    ("GET", "/api/v1/audit/export", "audit.read"),
    ("GET", "/api/v1/audit/checkpoints", "audit.read"),
    ("POST", "/api/v1/portal/login", "public"),
    ("POST", "/api/v1/portal/logout", "portal"),
    ("GET", "/api/v1/portal/me", "portal"),
    ("GET", "/api/v1/portal/privacy", "portal"),
    ("POST", "/api/v1/portal/enrollment-link", "portal"),
    ("POST", "/api/v1/portal/devices/{id}/{action}", "portal"),
    ("GET", "/api/v1/portal-users", "users.read"),
    ("POST", "/api/v1/portal-users", "users.manage"),
    ("DELETE", "/api/v1/portal-users/{username}", "users.manage"),
    ("PUT", "/api/v1/devices/{id}/user", "devices.manage"),
    ("GET", "/api/v1/erase-requests", "devices.read"),
    ("DELETE", "/api/v1/erase-requests/{id}", "devices.erase"),
];

/// The path of a route with sample values for its parameters.
fn sample_path(path: &str, action: &str) -> String {
    path.replace("/api-tokens/{id}", "/api-tokens/000000000000")
        .replace("{id}", "no-such-device")
        .replace("{action}", action)
        .replace("{username}", "no-such-user")
        .replace("{name}", "no-such-role")
        .replace("{chart}", "platforms.svg")
        .replace("{uuid}", "00000000-0000-0000-0000-000000000000")
}

const ACTIONS: [(&str, &str); 10] = [
    ("lock", "devices.lock"),
    ("erase", "devices.erase"),
    ("clear_passcode", "devices.clear_passcode"),
    ("restart", "devices.restart"),
    ("shut_down", "devices.restart"),
    ("enable_lost_mode", "devices.locate"),
    ("locate", "devices.locate"),
    ("play_sound", "devices.locate"),
    ("disable_lost_mode", "devices.locate"),
    ("retire", "devices.retire"),
];

#[test]
fn permission_matrix_every_role_and_every_route() {
    let a = Appliance::start();
    let owner = api_token(&a);
    let client = a.client();
    // A custom role and a token scoped to two permissions join the built-in roles.
    let res = client
        .post(a.url("/api/v1/roles"))
        .bearer_auth(&owner)
        .json(&json!({ "name": "night-shift", "description": "Nights", "permissions": ["devices.read", "devices.lock"] }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().unwrap());
    let roles: Vec<Value> = client
        .get(a.url("/api/v1/roles"))
        .bearer_auth(&owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut principals: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for role in &roles {
        let name = role["name"].as_str().unwrap().to_owned();
        let out = run(a
            .cmd()
            .args(["api-token", "create", "--name", &name, "--role", &name]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let perms = role["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        principals.insert(name, (text(&out.stdout).trim().to_owned(), perms));
    }
    let out = run(a.cmd().args([
        "api-token",
        "create",
        "--name",
        "scoped",
        "--permission",
        "audit.read",
        "--permission",
        "devices.erase",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    principals.insert(
        "scoped".into(),
        (
            text(&out.stdout).trim().to_owned(),
            vec!["audit.read".into(), "devices.erase".into()],
        ),
    );
    assert_eq!(principals.len(), 6);

    // What the promise says, independent of the server's own tables.
    let has = |role: &str, p: &str| principals[role].1.iter().any(|x| x == p);
    assert!(!has("help_desk", "devices.erase") && has("help_desk", "devices.lock"));
    assert!(!has("administrator", "users.manage") && !has("administrator", "settings.manage"));
    assert!(has("auditor", "audit.read") && principals["auditor"].1.iter().all(|p| p.ends_with(".read")));

    let routes: Vec<Value> = client
        .get(a.url("/api/v1/routes"))
        .bearer_auth(&owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut served: Vec<(String, String, String)> = routes
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap().to_owned();
            (field("method"), field("path"), field("required"))
        })
        .collect();
    let mut promised: Vec<(String, String, String)> = SPEC
        .iter()
        .map(|(m, p, r)| (m.to_string(), p.to_string(), r.to_string()))
        .collect();
    served.sort();
    promised.sort();
    assert_eq!(
        served, promised,
        "the served access rules differ from the promised ones"
    );
    let mut checked = 0;
    for route in &routes {
        let method = Method::from_bytes(route["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = route["path"].as_str().unwrap();
        let required = route["required"].as_str().unwrap();
        let variants: Vec<(String, Option<&str>)> = if required == "device_action" {
            ACTIONS
                .iter()
                .map(|(action, perm)| (sample_path(path, action), Some(*perm)))
                .collect()
        } else {
            let needed = match required {
                "public" | "signed_in" => None,
                p => Some(p),
            };
            vec![(sample_path(path, "lock"), needed)]
        };
        for (url, needed) in variants {
            let send = |token: Option<&str>| {
                let mut req = client.request(method.clone(), a.url(&url));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                if method != Method::GET && method != Method::DELETE {
                    req = req.json(&json!({}));
                }
                req.send().unwrap().status().as_u16()
            };
            let anonymous = send(None);
            if required == "public" {
                assert!(
                    anonymous != 401 && anonymous != 403,
                    "{method} {url}: {anonymous}"
                );
                continue;
            }
            assert_eq!(anonymous, 401, "{method} {url} without credentials");
            if required == "portal" {
                // End users' routes: no administrator credential opens them.
                for (name, (token, _)) in &principals {
                    assert_eq!(send(Some(token)), 401, "{name}: {method} {url}");
                    checked += 1;
                }
                continue;
            }
            for (name, (token, perms)) in &principals {
                let status = send(Some(token));
                let allowed = needed.is_none_or(|p| perms.iter().any(|x| x == p));
                if allowed {
                    assert!(
                        status != 401 && (status != 403 || needed.is_none()),
                        "{name}: {method} {url} -> {status}"
                    );
                } else {
                    assert_eq!(status, 403, "{name}: {method} {url} needs {needed:?}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked} combinations");
    // A role that is in use cannot be deleted; the permission list names every permission.
    let res = client
        .delete(a.url("/api/v1/roles/night-shift"))
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(res.status(), 409);
    let perms: Vec<Value> = client
        .get(a.url("/api/v1/permissions"))
        .bearer_auth(&owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(perms.len(), 19);
}

#[test]
fn an_owner_locked_out_is_recovered_at_the_command_line() {
    let mut a = Appliance::start();
    let secret = bootstrap_secret(&a);
    let mut owner = Console::new(&a);
    let res = owner.send(
        Method::POST,
        "/api/v1/setup",
        Some(json!({ "bootstrap_secret": secret, "username": "olivia", "password": OWNER_PASSWORD })),
        false,
    );
    owner.adopt(res);
    let res = owner.post("/api/v1/auth/totp", json!({}));
    let totp_secret = res.json::<Value>().unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = owner.post(
        "/api/v1/auth/totp/confirm",
        json!({ "code": totp(&totp_secret, 0) }),
    );
    owner.adopt(res);

    let list = run(a.cmd().args(["admin", "list"]));
    assert!(list.status.success(), "{}", text(&list.stderr));
    let line = text(&list.stdout)
        .lines()
        .find(|l| l.starts_with("olivia"))
        .unwrap()
        .to_owned();
    assert!(line.contains("owner") && line.contains("yes"), "{line}");

    // The phone with the authenticator is lost: the second factor is removed, the password
    // alone signs in, and enrolment is the only thing the session may do.
    let out = run(a.cmd().args(["admin", "reset-mfa", "olivia"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(owner.get("/api/v1/devices").status(), 401, "sessions ended");
    let mut again = Console::new(&a);
    let res = again.login("olivia", OWNER_PASSWORD, None);
    assert_eq!(again.adopt(res)["pending"], json!(["mfa_enrolment"]));

    // The password is forgotten too, with the server stopped: a new one is printed once.
    a.stop();
    let out = run(a.cmd().args(["admin", "reset-password", "olivia"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let password = text(&out.stdout).trim().to_owned();
    assert!(password.len() >= 20, "{password}");
    assert!(
        run(a.cmd().args(["admin", "reset-password", "nobody"]))
            .status
            .code()
            == Some(1)
    );
    a.spawn(&[]);
    a.wait_healthy();
    let mut after = Console::new(&a);
    assert_eq!(after.login("olivia", OWNER_PASSWORD, None).status(), 401);
    let res = after.login("olivia", &password, None);
    assert_eq!(
        after.adopt(res)["pending"],
        json!(["mfa_enrolment", "password_change"])
    );
    let token = api_token(&a);
    let records = audit_actions(&a, &token, "?actor=cli&action=administrator.");
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["administrator.mfa.reset", "administrator.password.reset"]
    );
}
