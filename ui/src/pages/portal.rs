//! The self-service portal: people sign in with their directory (or portal) password, see
//! their own devices and what the organisation can see of them, enrol a new device with a
//! personal link, and lock, find or report a lost one — as the appliance's settings allow.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Outlet;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, Load, encode, use_api};
use crate::components::{
    Badge, ErrorNotice, Modal, OutcomeNotice, PageHeader, field, show_load, when, when_field,
};
use crate::pages::devices::platform_name;

/// `GET /api/v1/portal/me`.
#[derive(Deserialize, Clone, PartialEq)]
struct Me {
    username: String,
    csrf_token: String,
    devices: Vec<Value>,
}

/// The signed-in portal user, shared by the portal's pages.
#[derive(Clone, Copy)]
struct PortalUser {
    me: RwSignal<Load<Me>>,
    reload: RwSignal<u64>,
}

#[component]
pub fn PortalFrame() -> impl IntoView {
    let api = use_api();
    let me = RwSignal::new(Load::Loading);
    let reload = RwSignal::new(0u64);
    provide_context(PortalUser { me, reload });
    Effect::new(move |_| {
        reload.track();
        crate::api::spawn(async move {
            let r = api.get::<Me>("/api/v1/portal/me").await;
            if let Ok(m) = &r {
                api.set_csrf(Some(m.csrf_token.clone()));
            }
            me.set(match r {
                Ok(m) => Load::Ready(m),
                Err(e) => Load::Failed(e),
            });
        });
    });
    let sign_out = move |_| {
        crate::api::spawn(async move {
            let _ = api.post::<_, Value>("/api/v1/portal/logout", &json!({})).await;
            api.set_csrf(None);
            reload.update(|n| *n += 1);
        });
    };
    view! {
        <header class="topbar portal-bar">
            <a class="brand" href="/portal">
                <span class="brand-name">{crate::PRODUCT_NAME}</span>
                <span class="brand-tag">"Self-service"</span>
            </a>
            {move || matches!(&*me.read(), Load::Ready(_)).then(|| view! {
                <nav class="user-menu" aria-label="Portal">
                    <a class="user-name" href="/portal">"My devices"</a>
                    <a class="user-name" href="/portal/privacy">"Privacy"</a>
                    <button type="button" class="button subtle" on:click=sign_out>"Sign out"</button>
                </nav>
            })}
        </header>
        <main id="main" class="content standalone portal">
            <Outlet />
        </main>
    }
}

fn use_portal_user() -> PortalUser {
    use_context::<PortalUser>().unwrap_or(PortalUser {
        me: RwSignal::new(Load::Loading),
        reload: RwSignal::new(0),
    })
}

/// Sends a signed-out visitor to the portal's sign-in page.
#[component]
fn RequirePortalUser(children: ChildrenFn) -> impl IntoView {
    let user = use_portal_user();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if matches!(&*user.me.read(), Load::Failed(e) if e.status == 401) {
            navigate(
                "/portal/login",
                leptos_router::NavigateOptions {
                    replace: true,
                    ..Default::default()
                },
            );
        }
    });
    let state = Memo::new(move |_| match &*user.me.read() {
        Load::Ready(_) => Some(None),
        Load::Failed(e) if e.status != 401 => Some(Some(e.clone())),
        _ => None,
    });
    move || match state.get() {
        Some(None) => children().into_any(),
        Some(Some(e)) => view! { <ErrorNotice error=e /> }.into_any(),
        None => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
    }
}

#[component]
pub fn PortalLogin() -> impl IntoView {
    let api = use_api();
    let user = use_portal_user();
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let navigate = leptos_router::hooks::use_navigate();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = json!({ "username": username.get_untracked(), "password": password.get_untracked() });
        let navigate = navigate.clone();
        crate::api::spawn(async move {
            match api.post::<_, Value>("/api/v1/portal/login", &body).await {
                Ok(_) => {
                    // Who is signed in must be known before the devices page looks.
                    if let Ok(me) = api.get::<Me>("/api/v1/portal/me").await {
                        api.set_csrf(Some(me.csrf_token.clone()));
                        user.me.set(Load::Ready(me));
                    }
                    navigate("/portal", Default::default());
                }
                Err(e) => {
                    password.set(String::new());
                    error.set(Some(if e.status == 401 {
                        "The user name or password is not right.".to_owned()
                    } else {
                        e.to_string()
                    }));
                }
            }
        });
    };
    view! {
        <Title text="Sign in to the self-service portal" />
        <div class="signin-card">
            <h1>"Your devices"</h1>
            <p>"Sign in with your work account to see and manage the devices your organisation manages for you."</p>
            <form on:submit=submit>
                <label for="portal-username">"User name"</label>
                <input id="portal-username" autocomplete="username" required bind:value=username />
                <label for="portal-password">"Password"</label>
                <input id="portal-password" type="password" autocomplete="current-password" required bind:value=password />
                {move || error.get().map(|e| view! { <p class="notice error" role="alert">{e}</p> })}
                <button type="submit" class="button primary">"Sign in"</button>
            </form>
        </div>
    }
}

#[derive(Deserialize, Clone)]
struct PersonalLink {
    url: String,
    expires_at: String,
    qr_svg: String,
}

#[component]
pub fn PortalHome() -> impl IntoView {
    view! {
        <PageHeader title="Your devices" lead="The devices your organisation manages for you." />
        <RequirePortalUser>
            <MyDevices />
            <EnrolNew />
        </RequirePortalUser>
    }
}

#[component]
fn MyDevices() -> impl IntoView {
    let user = use_portal_user();
    let api = use_api();
    let outcome = RwSignal::new(None::<Result<String, ApiError>>);
    // (device, its name, the action, whether it is a Mac)
    let pending = RwSignal::new(None::<(String, String, &'static str, bool)>);
    let open = RwSignal::new(false);
    Effect::new(move |_| open.set(pending.get().is_some()));
    let reason = RwSignal::new(String::new());
    let pin = RwSignal::new(String::new());
    let confirm = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some((id, _, action, _)) = pending.get_untracked() else {
            return;
        };
        let text = reason.get_untracked();
        // Lock and lost mode show the text on the device's screen; an erase request tells IT.
        let body = match action {
            "request_erase" => json!({ "reason": text }),
            "found" | "locate" => json!({}),
            _ => {
                let mut b = json!({ "message": text });
                let pin = pin.get_untracked();
                if !pin.trim().is_empty() {
                    b["pin"] = Value::String(pin.trim().to_owned());
                }
                b
            }
        };
        crate::api::spawn(async move {
            let r = api
                .post::<_, Value>(&format!("/api/v1/portal/devices/{}/{action}", encode(&id)), &body)
                .await;
            outcome.set(Some(r.map(|_| {
                match action {
                    "request_erase" => "Your IT team has been asked to erase the device.".to_owned(),
                    "lost_mode" => {
                        "Lost mode is on: the device shows your message and can be located.".to_owned()
                    }
                    "found" => "Lost mode ends the next time the device is online.".to_owned(),
                    "locate" => {
                        "Asked for its location: it appears here once the device answers (reload the page)."
                            .to_owned()
                    }
                    _ => "Sent. The device receives it the next time it is online.".to_owned(),
                }
            })));
            pending.set(None);
            open.set(false);
            reason.set(String::new());
            pin.set(String::new());
            user.reload.update(|n| *n += 1);
        });
    };
    let title = Signal::derive(move || match pending.get() {
        Some((_, name, "request_erase", _)) => format!("Ask IT to erase {name}?"),
        Some((_, name, "lost_mode", _)) => format!("Put {name} in lost mode?"),
        Some((_, name, "found", _)) => format!("End lost mode on {name}?"),
        Some((_, name, "locate", _)) => format!("Ask {name} where it is?"),
        Some((_, name, _, _)) => format!("Lock {name}?"),
        None => String::new(),
    });
    view! {
        <OutcomeNotice outcome=outcome />
        {show_load(user.me, "your devices", move |me: &Me| {
            if me.devices.is_empty() {
                return view! {
                    <div class="empty-state"><h2>"No devices yet"</h2><p>"Enrol one below: it appears here once it is set up."</p></div>
                }.into_any();
            }
            view! {
                <div class="cards portal-devices">
                    {me.devices.iter().map(|d| {
                        let id = field(d, "enrollment_id");
                        let name = { let n = field(d, "device_name"); if n.is_empty() { field(d, "model_name") } else { n } };
                        let allowed = d.get("allowed").cloned().unwrap_or_default();
                        let can = |k: &str| allowed.get(k).and_then(Value::as_bool) == Some(true);
                        let lost = d.get("lost_mode").and_then(Value::as_bool) == Some(true);
                        let location = d.get("last_location").filter(|l| !l.is_null()).cloned();
                        let mac = field(d, "platform") == "macos";
                        let button = |action: &'static str, label: &'static str, danger: bool| {
                            let (id, name) = (id.clone(), name.clone());
                            view! {
                                <button type="button" class=if danger { "button danger" } else { "button" } data-action=action
                                    on:click=move |_| pending.set(Some((id.clone(), name.clone(), action, mac)))>{label}</button>
                            }
                        };
                        view! {
                            <section class="card">
                                <h2>{name.clone()}</h2>
                                <dl class="facts">
                                    <div><dt>"Model"</dt><dd>{field(d, "model_name")}</dd></div>
                                    <div><dt>"System"</dt><dd>{format!("{} {}", platform_name(&field(d, "platform")), field(d, "os_version"))}</dd></div>
                                    <div><dt>"Owned by"</dt><dd>{field(d, "ownership")}</dd></div>
                                    <div><dt>"Compliance"</dt><dd><Badge text=field(d, "compliance") /></dd></div>
                                    <div><dt>"Last seen"</dt><dd>{when_field(d, "last_seen_at")}</dd></div>
                                    {lost.then(|| view! { <div><dt>"Lost mode"</dt><dd><Badge text="On" /></dd></div> })}
                                    {location.map(|l| view! { <LastLocation fix=l /> })}
                                </dl>
                                <div class="action-buttons">
                                    {can("lock").then(|| button("lock", "Lock", false))}
                                    {(can("locate") && !lost).then(|| button("lost_mode", "Lost mode", false))}
                                    {(can("locate") && lost).then(|| button("locate", "Locate", false))}
                                    {(can("locate") && lost).then(|| button("found", "I found it", false))}
                                    {can("request_erase").then(|| button("request_erase", "Ask IT to erase", true))}
                                </div>
                            </section>
                        }
                    }).collect_view()}
                </div>
            }.into_any()
        })}
        <Modal open title id="portal-action">
            <form class="stacked" on:submit=confirm>
                // Ending lost mode and locating need no words.
                <Show when=move || matches!(pending.get(), Some((_, _, "lock" | "lost_mode" | "request_erase", _)))>
                    <label for="portal-reason">
                        {move || match pending.get() {
                            Some((_, _, "request_erase", _)) => "What happened? (your IT team sees this)",
                            _ => "Message on the device's screen (for whoever finds it)",
                        }}
                    </label>
                    <textarea id="portal-reason" required bind:value=reason></textarea>
                </Show>
                <Show when=move || matches!(pending.get(), Some((_, _, "lock", true)))>
                    <label for="portal-pin">"Six-digit PIN to unlock the Mac afterwards"</label>
                    <input id="portal-pin" inputmode="numeric" pattern="[0-9]{6}" required autocomplete="off" bind:value=pin />
                </Show>
                <div class="dialog-buttons">
                    <button type="button" class="button" on:click=move |_| { pending.set(None); open.set(false); }>"Cancel"</button>
                    <button type="submit" class="button danger">"Confirm"</button>
                </div>
            </form>
        </Modal>
    }
}

/// Where a device in lost mode last said it was: coordinates, accuracy and time, and a
/// `geo:` link that opens the user's own maps app (the page itself loads no map).
#[component]
fn LastLocation(fix: Value) -> impl IntoView {
    let lat = fix.get("latitude").and_then(Value::as_f64).unwrap_or_default();
    let lon = fix.get("longitude").and_then(Value::as_f64).unwrap_or_default();
    let accuracy = fix
        .get("horizontal_accuracy")
        .and_then(Value::as_f64)
        .map(|m| format!(" (within {m:.0} m)"))
        .unwrap_or_default();
    let href = format!("geo:{lat:.6},{lon:.6}");
    view! {
        <div>
            <dt>"Last location"</dt>
            <dd>
                <a href=href>{format!("{lat:.5}, {lon:.5}")}</a>
                {format!("{accuracy}, {}", when_field(&fix, "at"))}
            </dd>
        </div>
    }
}

#[component]
fn EnrolNew() -> impl IntoView {
    let api = use_api();
    let link = RwSignal::new(None::<Result<PersonalLink, ApiError>>);
    let create = move |_| {
        crate::api::spawn(async move {
            link.set(Some(
                api.post::<_, PersonalLink>("/api/v1/portal/enrollment-link", &json!({}))
                    .await,
            ));
        });
    };
    view! {
        <section class="card" aria-labelledby="enrol-title">
            <h2 id="enrol-title">"Add a device"</h2>
            <p>"Get a personal link, then open it on the new device (or scan the code with its camera). The device becomes yours in this list. See " <a href="/portal/privacy">"what your organisation can see"</a> " first."</p>
            <button type="button" class="button primary" on:click=create>"Get an enrollment link"</button>
            {move || link.get().map(|r| match r {
                Err(e) => view! { <ErrorNotice error=e /> }.into_any(),
                Ok(l) => view! {
                    <div class="link-result">
                        <div class="qr" role="img" aria-label="QR code of your enrollment link" inner_html=l.qr_svg.clone()></div>
                        <div>
                            <label for="portal-link">"Your link"</label>
                            <input id="portal-link" class="link-url" readonly prop:value=l.url.clone() />
                            <p class="help">{format!("Works once, until {}.", when(&l.expires_at))}</p>
                        </div>
                    </div>
                }.into_any(),
            })}
        </section>
    }
}

#[component]
pub fn PortalPrivacy() -> impl IntoView {
    let reload = RwSignal::new(0u64);
    let rules = crate::api::load::<Vec<Value>>(|| Some("/api/v1/portal/privacy".to_owned()), reload);
    view! {
        <PageHeader title="What your organisation can see" lead="Device management works through Apple's protocol, which limits what can be seen — more so on a device you own." />
        <RequirePortalUser>
            {show_load(rules, "the privacy rules", |list: &Vec<Value>| view! {
                <div class="table-wrap">
                    <table class="table">
                        <thead><tr><th scope="col">"Information"</th><th scope="col">"Organisation's device"</th><th scope="col">"Your own device"</th></tr></thead>
                        <tbody>
                            {list.iter().map(|r| view! {
                                <tr><td>{field(r, "information")}</td><td>{field(r, "corporate")}</td><td>{field(r, "personal")}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            })}
        </RequirePortalUser>
    }
}
