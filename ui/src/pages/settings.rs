//! Appliance settings: the push certificate (status and upload), the CA and TLS certificates;
//! administrators and roles; API tokens.

use leptos::prelude::*;
use serde_json::{Value, json};

use crate::api::{ApiError, load, use_api};
use crate::components::{Badge, ErrorNotice, Facts, Modal, PageHeader, field, show_load, when_field};
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
    let result = RwSignal::new(None::<Result<(), ApiError>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "cert_pem": pem.get_untracked() });
        crate::api::spawn(async move {
            let r = api.put::<_, Value>("/api/v1/push-cert", &body).await.map(|_| ());
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
            {move || result.get().map(|r| match r {
                Ok(()) => view! { <p class="notice success" role="status">"Push certificate imported."</p> }.into_any(),
                Err(e) => view! { <ErrorOrReauth error=e on_retry=Callback::new(move |()| result.set(None)) /> }.into_any(),
            })}
            <button type="submit" class="button primary">"Upload"</button>
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
    let remove_target = RwSignal::new(None::<String>);
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
    let remove_open = RwSignal::new(false);
    let remove = move |_| {
        let Some(name) = remove_target.get_untracked() else {
            return;
        };
        crate::api::spawn(async move {
            match api
                .delete::<Value>(&format!("/api/v1/users/{}", crate::api::encode(&name)))
                .await
            {
                Ok(_) => {
                    remove_target.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => {
                    // Shown on the page (with the sign-in form when that is what is missing).
                    remove_open.set(false);
                    error.set(Some(e));
                }
            }
        });
    };
    // One way only: a signal notifies on every set, so two effects feeding each other loop.
    Effect::new(move |_| remove_open.set(remove_target.get().is_some()));
    view! {
        <PageHeader title="Administrators and roles" lead="Who may sign in to the console, and what each role may do.">
            <Show when=move || session.can("users.manage")>
                <button type="button" class="button primary" on:click=move |_| { error.set(None); create_open.set(true); }>"Add administrator"</button>
            </Show>
        </PageHeader>
        <SettingsNav />
        {move || error.get().map(|e| view! { <ErrorOrReauth error=e on_retry=Callback::new(move |()| error.set(None)) /> })}
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
                                let target = name.clone();
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
                                            <button type="button" class="button subtle" on:click=move |_| remove_target.set(Some(target.clone()))>
                                                {format!("Remove {name}")}
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
        <section class="card" aria-labelledby="roles-title">
            <h2 id="roles-title">"Roles"</h2>
            {show_load(roles, "roles", |list: &Vec<Value>| view! {
                <div class="table-wrap">
                    <table class="table">
                        <thead><tr><th scope="col">"Role"</th><th scope="col">"Description"</th><th scope="col">"Permissions"</th></tr></thead>
                        <tbody>
                            {list.iter().map(|r| view! {
                                <tr>
                                    <td>{field(r, "name").replace('_', " ")}</td>
                                    <td>{field(r, "description")}</td>
                                    <td>{r.get("permissions").and_then(Value::as_array).map(|p| p.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            })}
        </section>
        <Modal open=create_open title="Add administrator" id="create-user">
            <form class="stacked" on:submit=create>
                <label for="new-username">"User name"</label>
                <input id="new-username" required autocomplete="off" bind:value=username />
                <label for="new-display">"Full name"</label>
                <input id="new-display" bind:value=display />
                <label for="new-role">"Role"</label>
                <select id="new-role" prop:value=move || role.get() on:change=move |ev| role.set(event_target_value(&ev))>
                    {move || match &*roles.read() {
                        crate::api::Load::Ready(list) => list.iter().map(|r| {
                            let n = field(r, "name");
                            view! { <option value=n.clone()>{n.replace('_', " ")}</option> }
                        }).collect_view().into_any(),
                        _ => view! { <option value="help_desk">"help desk"</option> }.into_any(),
                    }}
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
        <Modal open=remove_open title="Remove administrator?" id="remove-user">
            <p>{move || format!("{} will be signed out and can no longer sign in. Their API tokens are revoked.", remove_target.get().unwrap_or_default())}</p>
            <div class="dialog-buttons">
                <button type="button" class="button" on:click=move |_| remove_open.set(false)>"Cancel"</button>
                <button type="button" class="button danger" on:click=remove>"Remove"</button>
            </div>
        </Modal>
    }
}

#[component]
pub fn Tokens() -> impl IntoView {
    let api = use_api();
    let reload = RwSignal::new(0u64);
    let tokens = load::<Vec<Value>>(|| Some("/api/v1/api-tokens".to_owned()), reload);
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
                        <option value="auditor">"auditor"</option>
                        <option value="help_desk">"help desk"</option>
                        <option value="administrator">"administrator"</option>
                        <option value="owner">"owner"</option>
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
