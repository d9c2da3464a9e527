//! Appliance settings: the push certificate (status and upload), the CA and TLS certificates;
//! administrators and roles; API tokens.

use leptos::prelude::*;
use serde_json::{Value, json};

use crate::api::{ApiError, Load, load, use_api};
use crate::components::{
    Badge, ConfirmButton, ErrorNotice, Facts, Modal, OutcomeNotice, PageHeader, field, show_load, when_field,
};
use crate::pages::device::ErrorOrReauth;
use crate::session::use_session;

#[component]
fn SettingsNav() -> impl IntoView {
    let session = use_session();
    view! {
        <nav class="section-nav" aria-label="Settings">
            <a href="/settings">"Certificates"</a>
            <Show when=move || session.can("users.read")>
                <a href="/settings/administrators">"Administrators and roles"</a>
                <a href="/settings/portal-users">"Portal users"</a>
            </Show>
            <Show when=move || session.can("api_tokens.manage")>
                <a href="/settings/tokens">"API tokens"</a>
            </Show>
        </nav>
    }
}

fn cert_rows(c: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("Subject", field(c, "subject")),
        ("Expires", when_field(c, "not_after")),
        ("Days left", field(c, "days_left")),
    ]
}

#[component]
pub fn Settings() -> impl IntoView {
    let session = use_session();
    let reload = RwSignal::new(0u64);
    let status = load::<Value>(|| Some("/api/v1/status".to_owned()), reload);
    view! {
        <PageHeader title="Settings" lead="The appliance's certificates and who may use it." />
        <SettingsNav />
        <section class="card" aria-labelledby="push-title">
            <h2 id="push-title">"APNs push certificate"</h2>
            {show_load(status, "the push certificate", |s: &Value| {
                let push = s.get("push").cloned().unwrap_or_default();
                let push_rows = vec![
                    ("Configured", field(&push, "configured")),
                    ("Topic", field(&push, "topic")),
                    ("Subject", field(&push, "subject")),
                    ("Serial", field(&push, "serial")),
                    ("Expires", when_field(&push, "not_after")),
                    ("Days left", field(&push, "days_left")),
                ];
                let warnings: Vec<String> = push
                    .get("warnings")
                    .and_then(Value::as_array)
                    .map(|w| w.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                view! {
                    {warnings.into_iter().map(|w| view! { <p class="notice" role="status">{w}</p> }).collect_view()}
                    <Facts rows=push_rows />
                }
            })}
            <p class="help">
                "To get one: create a certificate request below (or run " <code>"citadel push-cert csr"</code>
                " on the appliance), upload it to Apple's push certificates portal with your organisation's Apple ID, then upload the certificate Apple returns here. Renew with the same Apple ID: a new topic orphans every enrolled device."
            </p>
            // Outside the loaded part: a refresh after an upload keeps the forms and their notices.
            <Show when=move || session.can("settings.manage")>
                <PushRequest />
                <PushUpload reload />
                <PushP12Upload reload />
            </Show>
        </section>
        {show_load(status, "the certificates", |s: &Value| {
            let ca = s.get("ca").map(cert_rows).unwrap_or_default();
            let tls = s.get("tls").map(cert_rows).unwrap_or_default();
            view! {
                <section class="card" aria-labelledby="ca-title">
                    <h2 id="ca-title">"Certificate authority"</h2>
                    <p class="help">"Issues device identities over SCEP. Its key never leaves the appliance."</p>
                    <Facts rows=ca />
                </section>
                <section class="card" aria-labelledby="tls-title">
                    <h2 id="tls-title">"Server TLS certificate"</h2>
                    <Facts rows=tls />
                </section>
            }
        })}
        <Show when=move || session.can("settings.read")>
            <Configuration />
        </Show>
    }
}

/// The effective settings, read-only: they are changed in `citadel.toml` (then restart).
#[component]
fn Configuration() -> impl IntoView {
    let reload = RwSignal::new(0u64);
    let settings = load::<Value>(|| Some("/api/v1/settings".to_owned()), reload);
    let titles = [
        ("scep", "SCEP"),
        ("mdm", "Enrollment and inventory"),
        ("apns", "APNs (push) and proxy"),
        ("webhook", "Webhooks"),
        ("sessions", "Console sign-in"),
        ("directory", "Directory"),
        ("audit_forwarding", "Audit log forwarding"),
        ("portal", "Self-service portal"),
    ];
    view! {
        <section class="card" aria-labelledby="config-title">
            <h2 id="config-title">"Configuration"</h2>
            <p class="help">"Set in citadel.toml (or CITADEL_* environment variables); restart the appliance after a change. Secrets are never shown."</p>
            {show_load(settings, "the settings", move |s: &Value| {
                titles
                    .iter()
                    .map(|(key, title)| {
                        let rows: Vec<(String, String)> = s
                            .get(*key)
                            .and_then(Value::as_object)
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| {
                                        let shown = match v {
                                            Value::Null => "not set".to_owned(),
                                            Value::Object(_) => v.to_string(),
                                            other => crate::components::text_of(other),
                                        };
                                        (k.replace('_', " "), shown)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        view! {
                            <h3>{*title}</h3>
                            <dl class="facts">
                                {rows.into_iter().map(|(k, v)| view! { <div><dt>{k}</dt><dd>{v}</dd></div> }).collect_view()}
                            </dl>
                        }
                    })
                    .collect_view()
            })}
        </section>
    }
}

/// A certificate request for Apple's portal, made on the appliance (its key never leaves it).
#[component]
fn PushRequest() -> impl IntoView {
    let api = use_api();
    let email = RwSignal::new(String::new());
    let request = RwSignal::new(None::<Result<String, ApiError>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "email": email.get_untracked() });
        crate::api::spawn(async move {
            request.set(Some(api.post_for_text("/api/v1/push-cert/csr", &body).await));
        });
    };
    view! {
        <form class="stacked" on:submit=submit>
            <label for="csr-email">"Contact e-mail for Apple (optional)"</label>
            <input id="csr-email" type="email" autocomplete="email" bind:value=email />
            <button type="submit" class="button">"Create certificate request"</button>
            {move || request.get().map(|r| match r {
                Err(e) => view! { <ErrorOrReauth error=e on_retry=Callback::new(move |()| request.set(None)) /> }.into_any(),
                Ok(pem) => {
                    let href = format!("data:application/pkcs10;charset=utf-8,{}", crate::api::encode(&pem));
                    view! {
                        <label for="csr-pem">"Certificate request"</label>
                        <textarea id="csr-pem" readonly rows="6" prop:value=pem></textarea>
                        <a class="button primary" href=href download="citadel-push.csr">"Download citadel-push.csr"</a>
                    }.into_any()
                }
            })}
        </form>
    }
}

/// Upload of the certificate Apple returned (PEM; its key is the one the CSR was made with,
/// kept by the appliance) or of a PKCS#12 bundle with its password.
#[component]
fn PushUpload(reload: RwSignal<u64>) -> impl IntoView {
    let api = use_api();
    let pem = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<String, ApiError>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "cert_pem": pem.get_untracked() });
        crate::api::spawn(async move {
            let r = api
                .put::<_, Value>("/api/v1/push-cert", &body)
                .await
                .map(|_| "Push certificate imported.".to_owned());
            if r.is_ok() {
                pem.set(String::new());
                reload.update(|n| *n += 1);
            }
            result.set(Some(r));
        });
    };
    view! {
        <form class="stacked" on:submit=submit>
            <label for="push-pem">"Certificate from Apple (PEM)"</label>
            <textarea id="push-pem" required rows="6" placeholder="-----BEGIN CERTIFICATE-----" bind:value=pem></textarea>
            <OutcomeNotice outcome=result />
            <button type="submit" class="button primary">"Upload"</button>
        </form>
    }
}

/// The role names for a `<select>` bound to `chosen`: the appliance's list (custom roles too),
/// or the built-in ones for a user who may not read the list. Each option says whether it is
/// the chosen one: a select's value set before its options exist (or before they change) is
/// lost, and the select would show one role while another is sent.
fn role_options(roles: RwSignal<Load<Vec<Value>>>, chosen: RwSignal<String>) -> impl IntoView {
    move || {
        let names: Vec<String> = match &*roles.read() {
            Load::Ready(list) => list.iter().map(|r| field(r, "name")).collect(),
            _ => ["auditor", "help_desk", "administrator", "owner"]
                .map(str::to_owned)
                .to_vec(),
        };
        names
            .into_iter()
            .map(|n| {
                let this = n.clone();
                view! { <option value=n.clone() prop:selected=move || chosen.get() == this>{n.replace('_', " ")}</option> }
            })
            .collect_view()
    }
}

/// The file chosen in `input`, base64-encoded (read in the browser).
#[cfg(feature = "hydrate")]
async fn chosen_file_base64(input: Option<leptos::web_sys::HtmlInputElement>) -> Result<String, ApiError> {
    let file = input
        .and_then(|i| i.files())
        .and_then(|files| files.get(0))
        .ok_or_else(|| ApiError::local("Choose the .p12 file first."))?;
    let buffer = wasm_bindgen_futures::JsFuture::from(file.array_buffer())
        .await
        .map_err(|_| ApiError::local("The file could not be read."))?;
    Ok(data_encoding::BASE64.encode(&js_sys::Uint8Array::new(&buffer).to_vec()))
}

/// The server renders the form; only the browser reads files.
#[cfg(not(feature = "hydrate"))]
async fn chosen_file_base64(_input: Option<leptos::web_sys::HtmlInputElement>) -> Result<String, ApiError> {
    Err(ApiError::local("Files are read in the browser."))
}

/// A push certificate with its key as PKCS#12 (moving from another MDM, or a Keychain export).
#[component]
fn PushP12Upload(reload: RwSignal<u64>) -> impl IntoView {
    let api = use_api();
    let file: NodeRef<leptos::html::Input> = NodeRef::new();
    let password = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<String, ApiError>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let input = file.get_untracked();
        crate::api::spawn(async move {
            let r = match chosen_file_base64(input).await {
                Ok(p12) => {
                    let body = json!({ "p12_base64": p12, "password": password.get_untracked() });
                    api.put::<_, Value>("/api/v1/push-cert", &body)
                        .await
                        .map(|_| "Push certificate and key imported.".to_owned())
                }
                Err(e) => Err(e),
            };
            if r.is_ok() {
                password.set(String::new());
                reload.update(|n| *n += 1);
            }
            result.set(Some(r));
        });
    };
    view! {
        <form class="stacked" on:submit=submit>
            <label for="push-p12">"Or: certificate and key as PKCS#12 (.p12), e.g. from another MDM"</label>
            <input id="push-p12" type="file" accept=".p12,.pfx,application/x-pkcs12" node_ref=file />
            <label for="push-p12-password">"Its password"</label>
            <input id="push-p12-password" type="password" autocomplete="off" bind:value=password />
            <OutcomeNotice outcome=result />
            <button type="submit" class="button">"Upload PKCS#12"</button>
        </form>
    }
}

#[component]
pub fn Administrators() -> impl IntoView {
    let session = use_session();
    let api = use_api();
    let reload = RwSignal::new(0u64);
    let users = load::<Vec<Value>>(|| Some("/api/v1/users".to_owned()), reload);
    let roles = load::<Vec<Value>>(|| Some("/api/v1/roles".to_owned()), reload);
    let create_open = RwSignal::new(false);
    let username = RwSignal::new(String::new());
    let display = RwSignal::new(String::new());
    let role = RwSignal::new("help_desk".to_owned());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({
            "username": username.get_untracked(),
            "display_name": display.get_untracked(),
            "role": role.get_untracked(),
            "password": password.get_untracked(),
        });
        crate::api::spawn(async move {
            match api.post::<_, Value>("/api/v1/users", &body).await {
                Ok(_) => {
                    for s in [username, display, password] {
                        s.set(String::new());
                    }
                    create_open.set(false);
                    reload.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    // The administrator being managed (their row as listed).
    let managed = RwSignal::new(None::<Value>);
    let manage_open = RwSignal::new(false);
    // One way only: a signal notifies on every set, so two effects feeding each other loop.
    Effect::new(move |_| manage_open.set(managed.get().is_some()));
    let manage_title = Signal::derive(move || {
        managed
            .get()
            .map(|u| format!("Manage {}", field(&u, "username")))
            .unwrap_or_default()
    });
    view! {
        <PageHeader title="Administrators and roles" lead="Who may sign in to the console, and what each role may do.">
            <Show when=move || session.can("users.manage")>
                <button type="button" class="button primary" on:click=move |_| { error.set(None); create_open.set(true); }>"Add administrator"</button>
            </Show>
        </PageHeader>
        <SettingsNav />
        {show_load(users, "administrators", move |list: &Vec<Value>| {
            let can_manage = session.can("users.manage");
            view! {
                <div class="table-wrap">
                    <table class="table">
                        <thead><tr>
                            <th scope="col">"User"</th><th scope="col">"Name"</th><th scope="col">"Role"</th>
                            <th scope="col">"Second factor"</th><th scope="col">"Last sign-in"</th><th scope="col">"State"</th>
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr></thead>
                        <tbody>
                            {list.iter().map(|u| {
                                let name = field(u, "username");
                                let row = u.clone();
                                let disabled = u.get("disabled").and_then(Value::as_bool) == Some(true);
                                view! {
                                    <tr>
                                        <td>{name.clone()}</td>
                                        <td>{field(u, "display_name")}</td>
                                        <td>{field(u, "role").replace('_', " ")}</td>
                                        <td>{if u.get("mfa_enrolled").and_then(Value::as_bool) == Some(true) { "Set up" } else { "Not yet" }}</td>
                                        <td>{when_field(u, "last_login_at")}</td>
                                        <td><Badge text=if disabled { "disabled" } else { "active" } /></td>
                                        <td>{can_manage.then(|| view! {
                                            <button type="button" class="button subtle" on:click=move |_| managed.set(Some(row.clone()))>
                                                {format!("Manage {name}")}
                                            </button>
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            }
        })}
        <Roles roles reload />
        <Modal open=create_open title="Add administrator" id="create-user">
            <form class="stacked" on:submit=create>
                <label for="new-username">"User name"</label>
                <input id="new-username" required autocomplete="off" bind:value=username />
                <label for="new-display">"Full name"</label>
                <input id="new-display" bind:value=display />
                <label for="new-role">"Role"</label>
                <select id="new-role" prop:value=move || role.get() on:change=move |ev| role.set(event_target_value(&ev))>
                    {role_options(roles, role)}
                </select>
                <label for="new-password">"First password (they replace it at first sign-in)"</label>
                <input id="new-password" type="password" autocomplete="new-password" required minlength="12" bind:value=password />
                {move || error.get().map(|e| view! { <ErrorOrReauth error=e on_retry=Callback::new(move |()| error.set(None)) /> })}
                <div class="dialog-buttons">
                    <button type="button" class="button" on:click=move |_| create_open.set(false)>"Cancel"</button>
                    <button type="submit" class="button primary">"Add"</button>
                </div>
            </form>
        </Modal>
        <Modal open=manage_open title=manage_title id="manage-user">
            {move || managed.get().map(|u| view! {
                <ManageUser user=u roles reload on_close=Callback::new(move |()| { managed.set(None); manage_open.set(false); }) />
            })}
        </Modal>
    }
}

/// A dialog's step answered: on success the list is read again and the dialog closes;
/// otherwise `on_error` shows why.
fn close_on_success(
    r: Result<Value, ApiError>,
    reload: RwSignal<u64>,
    on_close: Callback<()>,
    on_error: impl FnOnce(ApiError),
) {
    match r {
        Ok(_) => {
            reload.update(|n| *n += 1);
            on_close.run(());
        }
        Err(e) => on_error(e),
    }
}

/// One administrator: name, role and whether they may sign in; a temporary password; a new
/// second factor; removal. The appliance decides what the signed-in user may change (never
/// their own role, never someone holding more than they do) and audits each step.
#[component]
fn ManageUser(
    user: Value,
    roles: RwSignal<Load<Vec<Value>>>,
    reload: RwSignal<u64>,
    on_close: Callback<()>,
) -> impl IntoView {
    let api = use_api();
    let session = use_session();
    let name = field(&user, "username");
    let path = format!("/api/v1/users/{}", crate::api::encode(&name));
    let is_self = session.username().as_deref() == Some(name.as_str());
    let display = RwSignal::new(field(&user, "display_name"));
    let role = RwSignal::new(field(&user, "role"));
    let disabled = RwSignal::new(user.get("disabled").and_then(Value::as_bool) == Some(true));
    let password = RwSignal::new(String::new());
    let outcome = RwSignal::new(None::<Result<String, ApiError>>);
    // Every step: call, then say what happened (or ask for the password again, then retry).
    let done = move |r: Result<Value, ApiError>, said: String| {
        if r.is_ok() {
            reload.update(|n| *n += 1);
        }
        outcome.set(Some(r.map(|_| said)));
    };
    let save = {
        let path = path.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let mut body = json!({
                "display_name": display.get_untracked(),
                "disabled": disabled.get_untracked(),
            });
            if !is_self {
                body["role"] = Value::String(role.get_untracked());
            }
            let path = path.clone();
            crate::api::spawn(async move {
                done(
                    api.patch::<_, Value>(&path, &body).await,
                    "Changes saved.".to_owned(),
                );
            });
        }
    };
    let reset_password = {
        let path = format!("{path}/password");
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let body = json!({ "password": password.get_untracked() });
            let path = path.clone();
            crate::api::spawn(async move {
                let r = api.post::<_, Value>(&path, &body).await;
                if r.is_ok() {
                    password.set(String::new());
                }
                done(
                    r,
                    "Temporary password set: give it to them; they choose their own at next sign-in."
                        .to_owned(),
                );
            });
        }
    };
    let reset_mfa = Callback::new({
        let path = format!("{path}/mfa/reset");
        move |()| {
            let path = path.clone();
            crate::api::spawn(async move {
                done(
                    api.post::<_, Value>(&path, &json!({})).await,
                    "Second factor removed: they set up a new one at next sign-in.".to_owned(),
                );
            });
        }
    });
    let remove = Callback::new({
        let path = path.clone();
        move |()| {
            let path = path.clone();
            crate::api::spawn(async move {
                let r = api.delete::<Value>(&path).await;
                close_on_success(r, reload, on_close, |e| outcome.set(Some(Err(e))));
            });
        }
    });
    view! {
        <OutcomeNotice outcome=outcome />
        <form class="stacked" on:submit=save>
            <label for="manage-display">"Full name"</label>
            <input id="manage-display" bind:value=display />
            <label for="manage-role">"Role"</label>
            <select id="manage-role" disabled=is_self aria-describedby=is_self.then_some("manage-role-help")
                prop:value=move || role.get() on:change=move |ev| role.set(event_target_value(&ev))>
                {role_options(roles, role)}
            </select>
            {is_self.then(|| view! { <p id="manage-role-help" class="help">"Nobody changes their own role."</p> })}
            // Locking oneself out, or removing one's own second factor, is not done from here.
            {(!is_self).then(|| view! {
                <label class="check">
                    <input type="checkbox" prop:checked=move || disabled.get() on:change=move |ev| disabled.set(event_target_checked(&ev)) />
                    "Cannot sign in (disabled; their sessions end)"
                </label>
            })}
            <button type="submit" class="button primary">"Save changes"</button>
        </form>
        <form class="stacked" on:submit=reset_password>
            <h3>"Password"</h3>
            <label for="manage-password">"Temporary password (they replace it at next sign-in)"</label>
            <input id="manage-password" type="password" autocomplete="new-password" required minlength="12" bind:value=password />
            <button type="submit" class="button">"Set temporary password"</button>
        </form>
        {if is_self {
            view! { <p class="help">"Your own password and authenticator are changed on " <a href="/account">"your account page"</a> "; another Owner removes or disables your account."</p> }.into_any()
        } else {
            view! {
                <h3>"Second factor"</h3>
                <ConfirmButton label="Reset second factor" question="Their authenticator stops working and their sessions end; they set up a new one at next sign-in." confirm="Reset second factor" on_confirm=reset_mfa />
                <h3>"Remove"</h3>
                <ConfirmButton label=format!("Remove {name}") question=format!("{name} is signed out and can no longer sign in; their API tokens are revoked.") confirm="Remove" on_confirm=remove />
            }.into_any()
        }}
        <div class="dialog-buttons">
            <button type="button" class="button" on:click=move |_| on_close.run(())>"Close"</button>
        </div>
    }
}

/// The roles: the built-in ones as they are, custom ones made and changed here from the
/// appliance's list of permissions.
#[component]
fn Roles(roles: RwSignal<Load<Vec<Value>>>, reload: RwSignal<u64>) -> impl IntoView {
    let session = use_session();
    let permissions = load::<Vec<Value>>(|| Some("/api/v1/permissions".to_owned()), reload);
    // The role being edited; an empty name makes a new one.
    let editing = RwSignal::new(None::<Value>);
    let open = RwSignal::new(false);
    Effect::new(move |_| open.set(editing.get().is_some()));
    let title = Signal::derive(move || match editing.get() {
        Some(r) if !field(&r, "name").is_empty() => format!("Role {}", field(&r, "name")),
        _ => "New role".to_owned(),
    });
    view! {
        <section class="card" aria-labelledby="roles-title">
            <h2 id="roles-title">"Roles"</h2>
            <Show when=move || session.can("users.manage")>
                <button type="button" class="button" on:click=move |_| editing.set(Some(json!({})))>"New role"</button>
            </Show>
            {show_load(roles, "roles", move |list: &Vec<Value>| {
                let can_manage = session.can("users.manage");
                view! {
                    <div class="table-wrap">
                        <table class="table">
                            <thead><tr>
                                <th scope="col">"Role"</th><th scope="col">"Description"</th><th scope="col">"Permissions"</th>
                                <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                            </tr></thead>
                            <tbody>
                                {list.iter().map(|r| {
                                    let builtin = r.get("builtin").and_then(Value::as_bool) != Some(false);
                                    let name = field(r, "name");
                                    let row = r.clone();
                                    view! {
                                        <tr>
                                            <td>{name.replace('_', " ")}{builtin.then_some(" (built in)")}</td>
                                            <td>{field(r, "description")}</td>
                                            <td>{r.get("permissions").and_then(Value::as_array).map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()}</td>
                                            <td>{(can_manage && !builtin).then(|| view! {
                                                <button type="button" class="button subtle" on:click=move |_| editing.set(Some(row.clone()))>{format!("Edit {name}")}</button>
                                            })}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }
            })}
        </section>
        <Modal open title id="edit-role">
            {move || editing.get().map(|r| view! {
                <RoleEditor role=r permissions reload on_close=Callback::new(move |()| { editing.set(None); open.set(false); }) />
            })}
        </Modal>
    }
}

#[component]
fn RoleEditor(
    role: Value,
    permissions: RwSignal<Load<Vec<Value>>>,
    reload: RwSignal<u64>,
    on_close: Callback<()>,
) -> impl IntoView {
    let api = use_api();
    let existing = field(&role, "name");
    let creating = existing.is_empty();
    let name = RwSignal::new(existing.clone());
    let description = RwSignal::new(field(&role, "description"));
    let granted = RwSignal::new(
        role.get("permissions")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    let error = RwSignal::new(None::<ApiError>);
    let path = format!("/api/v1/roles/{}", crate::api::encode(&existing));
    let save = {
        let path = path.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let mut body = json!({
                "description": description.get_untracked(),
                "permissions": granted.get_untracked(),
            });
            if creating {
                body["name"] = Value::String(name.get_untracked());
            }
            let path = path.clone();
            crate::api::spawn(async move {
                let r = if creating {
                    api.post::<_, Value>("/api/v1/roles", &body).await
                } else {
                    api.put::<_, Value>(&path, &body).await
                };
                close_on_success(r, reload, on_close, |e| error.set(Some(e)));
            });
        }
    };
    let remove = Callback::new(move |()| {
        let path = path.clone();
        crate::api::spawn(async move {
            let r = api.delete::<Value>(&path).await;
            close_on_success(r, reload, on_close, |e| error.set(Some(e)));
        });
    });
    view! {
        <form class="stacked" on:submit=save>
            <label for="role-name">"Name (lower case, e.g. ward_support)"</label>
            <input id="role-name" required disabled=!creating pattern="[a-z0-9_\\-]{1,64}" bind:value=name />
            <label for="role-description">"Description"</label>
            <input id="role-description" bind:value=description />
            <fieldset>
                <legend>"Permissions"</legend>
                {show_load(permissions, "permissions", move |list: &Vec<Value>| {
                    list.iter().map(|p| {
                        let perm = field(p, "name");
                        let (p1, p2) = (perm.clone(), perm.clone());
                        let id = format!("perm-{}", perm.replace('.', "-"));
                        let label_for = id.clone();
                        let fresh = p.get("needs_fresh_authentication").and_then(Value::as_bool) == Some(true);
                        view! {
                            <div class="check">
                                <input type="checkbox" id=id
                                    prop:checked=move || granted.with(|g| g.contains(&p1))
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        granted.update(|g| {
                                            g.retain(|x| *x != p2);
                                            if on { g.push(p2.clone()); }
                                        });
                                    } />
                                <label for=label_for>
                                    <code>{perm.clone()}</code>" — "{field(p, "description")}
                                    {fresh.then_some(" (asks for the password again)")}
                                </label>
                            </div>
                        }
                    }).collect_view()
                })}
            </fieldset>
            {move || error.get().map(|e| view! { <ErrorOrReauth error=e on_retry=Callback::new(move |()| error.set(None)) /> })}
            <div class="dialog-buttons">
                <button type="button" class="button" on:click=move |_| on_close.run(())>"Cancel"</button>
                <button type="submit" class="button primary">{if creating { "Create role" } else { "Save role" }}</button>
            </div>
        </form>
        {(!creating).then(|| view! {
            <ConfirmButton label="Delete this role" question="A role still held by someone cannot be deleted." confirm="Delete role" on_confirm=remove />
        })}
    }
}

/// People who sign in to the self-service portal with a password kept by the appliance (people
/// in the directory sign in with their directory password and need no entry here).
#[component]
pub fn PortalUsers() -> impl IntoView {
    let session = use_session();
    let api = use_api();
    let reload = RwSignal::new(0u64);
    let users = load::<Vec<Value>>(|| Some("/api/v1/portal-users".to_owned()), reload);
    let username = RwSignal::new(String::new());
    let display = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let outcome = RwSignal::new(None::<Result<String, ApiError>>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({
            "username": username.get_untracked(),
            "display_name": display.get_untracked(),
            "password": password.get_untracked(),
        });
        crate::api::spawn(async move {
            let r = api.post::<_, Value>("/api/v1/portal-users", &body).await;
            let r = r.map(|u| {
                for s in [username, display, password] {
                    s.set(String::new());
                }
                reload.update(|n| *n += 1);
                format!("{} can sign in to the portal now.", field(&u, "username"))
            });
            outcome.set(Some(r));
        });
    };
    let remove = move |name: String| {
        Callback::new(move |()| {
            let path = format!("/api/v1/portal-users/{}", crate::api::encode(&name));
            let said =
                format!("{name} can no longer sign in to the portal; their devices belong to nobody now.");
            crate::api::spawn(async move {
                let r = api.delete::<Value>(&path).await.map(|_| said);
                reload.update(|n| *n += 1);
                outcome.set(Some(r));
            });
        })
    };
    view! {
        <PageHeader title="Portal users" lead="People who use the self-service portal with a password kept by the appliance. Directory users sign in with their directory password." />
        <SettingsNav />
        <OutcomeNotice outcome=outcome />
        <Show when=move || session.can("users.manage")>
            <section class="card" aria-labelledby="new-portal-user-title">
                <h2 id="new-portal-user-title">"New portal user"</h2>
                <form class="filters" on:submit=create>
                    <div class="field">
                        <label for="portal-user-name">"User name"</label>
                        <input id="portal-user-name" required autocomplete="off" bind:value=username />
                    </div>
                    <div class="field grow">
                        <label for="portal-user-display">"Full name"</label>
                        <input id="portal-user-display" bind:value=display />
                    </div>
                    <div class="field">
                        <label for="portal-user-password">"Password"</label>
                        <input id="portal-user-password" type="password" autocomplete="new-password" required minlength="12" bind:value=password />
                    </div>
                    <button type="submit" class="button primary">"Add"</button>
                </form>
            </section>
        </Show>
        {show_load(users, "portal users", move |list: &Vec<Value>| {
            if list.is_empty() {
                return view! { <p class="muted">"No portal users with a local password."</p> }.into_any();
            }
            let can_manage = session.can("users.manage");
            view! {
                <div class="table-wrap">
                    <table class="table">
                        <thead><tr>
                            <th scope="col">"User"</th><th scope="col">"Name"</th><th scope="col">"Added"</th><th scope="col">"State"</th>
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr></thead>
                        <tbody>
                            {list.iter().map(|u| {
                                let name = field(u, "username");
                                let disabled = u.get("disabled").and_then(Value::as_bool) == Some(true);
                                view! {
                                    <tr>
                                        <td>{name.clone()}</td>
                                        <td>{field(u, "display_name")}</td>
                                        <td>{when_field(u, "created_at")}</td>
                                        <td><Badge text=if disabled { "disabled" } else { "active" } /></td>
                                        <td>{can_manage.then(|| view! {
                                            <ConfirmButton label=format!("Remove {name}")
                                                question=format!("{name} is signed out of the portal; the devices that were theirs belong to nobody.")
                                                confirm="Remove" on_confirm=remove(name.clone()) />
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            }.into_any()
        })}
    }
}

#[component]
pub fn Tokens() -> impl IntoView {
    let api = use_api();
    let reload = RwSignal::new(0u64);
    let tokens = load::<Vec<Value>>(|| Some("/api/v1/api-tokens".to_owned()), reload);
    let session = use_session();
    let roles = load::<Vec<Value>>(
        move || session.can("users.read").then(|| "/api/v1/roles".to_owned()),
        reload,
    );
    let name = RwSignal::new(String::new());
    let role = RwSignal::new("auditor".to_owned());
    let days = RwSignal::new("90".to_owned());
    let created = RwSignal::new(None::<Result<String, ApiError>>);
    let revoke_target = RwSignal::new(None::<(String, String)>);
    let revoke_open = RwSignal::new(false);
    Effect::new(move |_| revoke_open.set(revoke_target.get().is_some()));
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({
            "name": name.get_untracked(),
            "role": role.get_untracked(),
            "ttl_days": days.get_untracked().parse::<u32>().ok(),
        });
        crate::api::spawn(async move {
            let r = api
                .post::<_, Value>("/api/v1/api-tokens", &body)
                .await
                .map(|v| field(&v, "token"));
            if r.is_ok() {
                name.set(String::new());
                reload.update(|n| *n += 1);
            }
            created.set(Some(r));
        });
    };
    let revoke = move |_| {
        let Some((id, _)) = revoke_target.get_untracked() else {
            return;
        };
        crate::api::spawn(async move {
            let r = api
                .post::<_, Value>(&format!("/api/v1/api-tokens/{id}/revoke"), &json!({}))
                .await;
            revoke_target.set(None);
            revoke_open.set(false);
            if let Err(e) = r {
                created.set(Some(Err(e)));
            }
            reload.update(|n| *n += 1);
        });
    };
    view! {
        <PageHeader title="API tokens" lead="Tokens let scripts and integrations use the same API as the console, with a role's rights." />
        <SettingsNav />
        <section class="card" aria-labelledby="new-token-title">
            <h2 id="new-token-title">"New token"</h2>
            <form class="filters" on:submit=create>
                <div class="field grow">
                    <label for="token-name">"Name"</label>
                    <input id="token-name" required bind:value=name placeholder="Inventory export for the CMDB" />
                </div>
                <div class="field">
                    <label for="token-role">"Role"</label>
                    <select id="token-role" prop:value=move || role.get() on:change=move |ev| role.set(event_target_value(&ev))>
                        {role_options(roles, role)}
                    </select>
                </div>
                <div class="field">
                    <label for="token-days">"Expires after (days)"</label>
                    <input id="token-days" type="number" min="1" max="3650" bind:value=days />
                </div>
                <button type="submit" class="button primary">"Create token"</button>
            </form>
            {move || created.get().map(|r| match r {
                Ok(token) => view! {
                    <div class="notice success" role="status">
                        <p>"Copy the token now: it is shown only once."</p>
                        <input class="link-url" readonly aria-label="New API token" prop:value=token />
                    </div>
                }.into_any(),
                Err(e) => view! { <ErrorNotice error=e /> }.into_any(),
            })}
        </section>
        {show_load(tokens, "API tokens", move |list: &Vec<Value>| {
            if list.is_empty() {
                return view! { <p class="muted">"No API tokens yet."</p> }.into_any();
            }
            view! {
                <div class="table-wrap">
                    <table class="table">
                        <thead><tr>
                            <th scope="col">"Name"</th><th scope="col">"Role"</th><th scope="col">"Made by"</th>
                            <th scope="col">"Created"</th><th scope="col">"Expires"</th><th scope="col">"Last used"</th>
                            <th scope="col">"State"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr></thead>
                        <tbody>
                            {list.iter().map(|t| {
                                let revoked = t.get("revoked_at").is_some_and(|v| !v.is_null());
                                let id = field(t, "id");
                                let token_name = field(t, "name");
                                let label = format!("Revoke {token_name}");
                                view! {
                                    <tr>
                                        <td>{token_name.clone()}</td>
                                        <td>{field(t, "role")}</td>
                                        <td>{field(t, "created_by")}</td>
                                        <td>{when_field(t, "created_at")}</td>
                                        <td>{when_field(t, "expires_at")}</td>
                                        <td>{when_field(t, "last_used_at")}</td>
                                        <td><Badge text=if revoked { "revoked" } else { "active" } /></td>
                                        <td>{(!revoked).then(|| view! {
                                            <button type="button" class="button subtle" on:click=move |_| revoke_target.set(Some((id.clone(), token_name.clone())))>{label}</button>
                                        })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            }.into_any()
        })}
        <Modal open=revoke_open title="Revoke token?" id="revoke-token">
            <p>{move || format!("Scripts using “{}” stop working at once.", revoke_target.get().map(|t| t.1).unwrap_or_default())}</p>
            <div class="dialog-buttons">
                <button type="button" class="button" on:click=move |_| { revoke_target.set(None); revoke_open.set(false); }>"Cancel"</button>
                <button type="button" class="button danger" on:click=revoke>"Revoke"</button>
            </div>
        </Modal>
    }
}
