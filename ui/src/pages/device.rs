//! One device: overview, hardware, security, apps, profiles, certificates, lost-mode
//! locations, the command history with each command's and answer's plist, and the remote
//! actions the signed-in role may take on a device of this ownership.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use serde::Serialize;
use serde_json::Value;

use crate::api::{ApiError, Load, encode, load, use_api};
use crate::components::{
    Badge, ConfirmButton, ErrorNotice, Facts, Modal, OutcomeNotice, PageHeader, field, show_load, text_of,
    when_field,
};
use crate::pages::devices::platform_name;
use crate::session::use_session;

/// How often the page asks again while a command is on its way.
const POLL_MS: u64 = 2000;

fn inv(d: &Value, key: &str) -> String {
    d.get("inventory")
        .and_then(|i| i.get(key))
        .map(text_of)
        .unwrap_or_default()
}

fn label_of(action: &str) -> &'static str {
    match action {
        "lock" => "Lock",
        "enable_lost_mode" => "Enable lost mode",
        "disable_lost_mode" => "End lost mode",
        "locate" => "Locate",
        "play_sound" => "Play a sound",
        "restart" => "Restart",
        "shut_down" => "Shut down",
        "clear_passcode" => "Clear passcode",
        "retire" => "Remove from management",
        "erase" => "Erase",
        _ => "Action",
    }
}

#[component]
pub fn DeviceDetail() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let reload = RwSignal::new(0u64);
    let detail = load::<Value>(move || Some(format!("/api/v1/devices/{}", encode(&id()))), reload);

    let title = Signal::derive(move || match &*detail.read() {
        Load::Ready(d) => {
            let name = field(d, "device_name");
            if name.is_empty() {
                field(d, "enrollment_id")
            } else {
                name
            }
        }
        _ => "Device".to_owned(),
    });

    view! {
        <PageHeader title>
            <a class="button subtle" href="/devices">"All devices"</a>
        </PageHeader>
        {show_load(detail, "the device", move |d: &Value| {
            let d = d.clone();
            view! { <DeviceBody device=d /> }
        })}
    }
}

#[component]
fn DeviceBody(device: Value) -> impl IntoView {
    // Only the command history is asked for again (after an action, and while a command is
    // on its way): the rest of the page, and any dialog open on it, stays as it is.
    let commands_reload = RwSignal::new(0u64);
    let session = use_session();
    let d = device;
    let id = field(&d, "enrollment_id");
    let lost = d
        .get("inventory")
        .and_then(|i| i.get("lost_mode_enabled"))
        .and_then(Value::as_bool)
        == Some(true);
    let overview = vec![
        ("Status", field(&d, "status")),
        ("Platform", platform_name(&field(&d, "platform"))),
        ("Ownership", field(&d, "ownership")),
        ("Compliance", field(&d, "compliance")),
        ("User", field(&d, "user_long_name")),
        ("Enrolled", when_field(&d, "enrolled_at")),
        ("Last seen", when_field(&d, "last_seen_at")),
        ("Commands waiting", field(&d, "pending_commands")),
        ("Next inventory", when_field(&d, "next_inventory_at")),
        ("Enrollment ID", id.clone()),
    ];
    let hardware = vec![
        ("Model", field(&d, "model_name")),
        ("Model number", inv(&d, "model_number")),
        ("Product", field(&d, "product_name")),
        ("Serial number", field(&d, "serial_number")),
        ("OS version", field(&d, "os_version")),
        ("Build", field(&d, "build_version")),
        ("IMEI", field(&d, "imei")),
        ("MEID", field(&d, "meid")),
        ("Storage capacity (GB)", inv(&d, "storage_capacity_gb")),
        ("Storage free (GB)", inv(&d, "storage_available_gb")),
        (
            "Battery",
            d.get("battery_level")
                .and_then(Value::as_f64)
                .map(|b| format!("{:.0} %", b * 100.0))
                .unwrap_or_default(),
        ),
        ("Wi-Fi MAC", inv(&d, "wifi_mac")),
        ("Bluetooth MAC", inv(&d, "bluetooth_mac")),
    ];
    let security = vec![
        ("Supervised", field(&d, "is_supervised")),
        ("Passcode set", field(&d, "passcode_present")),
        ("Storage encrypted", field(&d, "storage_encrypted")),
        ("Passcode compliant", inv(&d, "passcode_compliant")),
        ("Activation lock", inv(&d, "activation_lock_enabled")),
        ("FileVault", inv(&d, "filevault_enabled")),
        ("Firewall", inv(&d, "firewall_enabled")),
        ("System Integrity Protection", inv(&d, "sip_enabled")),
        ("Lost mode", if lost { "On".to_owned() } else { String::new() }),
        ("Bootstrap token escrowed", field(&d, "bootstrap_token_escrowed")),
        (
            "Identity certificate serial",
            field(&d, "identity_certificate_serial"),
        ),
    ];
    let actions: Vec<Value> = d
        .get("actions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let commands: Vec<Value> = d
        .get("commands")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let serial = {
        let s = field(&d, "serial_number");
        if s.is_empty() { id.clone() } else { s }
    };
    let platform = field(&d, "platform");
    let can_locate = session.can("devices.locate");
    let erase_requests: Vec<Value> = d
        .get("erase_requests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Shown beside the facts and changed in place when an administrator assigns the device.
    let assigned = RwSignal::new(field(&d, "assigned_user"));
    let assign_id = id.clone();
    let base = format!("/api/v1/devices/{}", encode(&id));

    view! {
        <nav class="section-nav" aria-label="Sections">
            <a href="#overview">"Overview"</a>
            <a href="#actions">"Actions"</a>
            <a href="#hardware">"Hardware"</a>
            <a href="#security">"Security"</a>
            <a href="#apps">"Apps"</a>
            <a href="#profiles">"Profiles"</a>
            <a href="#certificates">"Certificates"</a>
            {(lost && can_locate).then(|| view! { <a href="#location">"Location"</a> })}
            <a href="#commands">"Commands"</a>
        </nav>
        <EraseRequests id=id.clone() requests=erase_requests />
        <section id="overview" class="card" aria-labelledby="overview-title">
            <h2 id="overview-title">"Overview"</h2>
            <Facts rows=overview />
            <dl class="facts">
                <div>
                    <dt>"Belongs to (self-service portal)"</dt>
                    <dd>{move || { let u = assigned.get(); if u.is_empty() { "nobody".to_owned() } else { u } }}</dd>
                </div>
            </dl>
            <Show when=move || session.can("devices.manage")>
                <RefreshInventory id=assign_id.clone() reload=commands_reload />
                <AssignUser id=assign_id.clone() assigned />
            </Show>
        </section>
        <section id="actions" class="card" aria-labelledby="actions-title">
            <h2 id="actions-title">"Actions"</h2>
            <Actions id=id.clone() actions serial platform reload=commands_reload />
        </section>
        <section id="hardware" class="card" aria-labelledby="hardware-title">
            <h2 id="hardware-title">"Hardware"</h2>
            <Facts rows=hardware />
        </section>
        <section id="security" class="card" aria-labelledby="security-title">
            <h2 id="security-title">"Security"</h2>
            <Facts rows=security />
        </section>
        <ListSection id="apps" title="Installed apps" path=format!("{base}/apps")
            columns=vec![("name", "Name"), ("bundle_id", "Identifier"), ("short_version", "Version"), ("managed", "Managed")] />
        <ListSection id="profiles" title="Profiles" path=format!("{base}/profiles")
            columns=vec![("display_name", "Name"), ("identifier", "Identifier"), ("organization", "Organization"), ("is_managed", "Managed")] />
        <ListSection id="certificates" title="Certificates" path=format!("{base}/certificates")
            columns=vec![("common_name", "Common name"), ("issuer", "Issuer"), ("is_identity", "Identity"), ("not_after", "Expires")] />
        {(lost && can_locate).then(|| view! {
            <ListSection id="location" title="Location history (lost mode)" path=format!("{base}/locations")
                columns=vec![("at", "When"), ("latitude", "Latitude"), ("longitude", "Longitude"), ("horizontal_accuracy", "Accuracy (m)")] />
        })}
        <section id="commands" class="card" aria-labelledby="commands-title">
            <h2 id="commands-title">"Command history"</h2>
            <LiveCommands path=base.clone() initial=commands reload=commands_reload />
        </section>
    }
}

/// What the device's user asked for in the self-service portal: the request, and for those
/// who may erase, a way to dismiss it (erasing the device, under Actions, also clears it).
#[component]
fn EraseRequests(id: String, requests: Vec<Value>) -> impl IntoView {
    let api = use_api();
    let session = use_session();
    let dismissed = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    if requests.is_empty() {
        return ().into_any();
    }
    let dismiss = Callback::new(move |()| {
        let path = format!("/api/v1/erase-requests/{}", encode(&id));
        crate::api::spawn(async move {
            match api.delete::<Value>(&path).await {
                Ok(_) => dismissed.set(true),
                Err(e) => error.set(Some(e)),
            }
        });
    });
    view! {
        <Show when=move || !dismissed.get()>
            <section class="notice warning" role="status" aria-labelledby="erase-requests-title">
                <h2 id="erase-requests-title">"Erase requested"</h2>
                <ul>
                    {requests.iter().map(|r| view! {
                        <li>{format!("{} asked on {}: “{}”", field(r, "username"), when_field(r, "requested_at"), field(r, "reason"))}</li>
                    }).collect_view()}
                </ul>
                {move || error.get().map(|e| view! { <ErrorOrReauth error=e on_retry=Callback::new(move |()| error.set(None)) /> })}
                <Show when=move || session.can("devices.erase")>
                    <p class="help">"Erase it under Actions (that also closes the request), or dismiss the request."</p>
                    <ConfirmButton label="Dismiss the request" question="The user's request is closed without erasing the device." confirm="Dismiss" on_confirm=dismiss />
                </Show>
            </section>
        </Show>
    }
    .into_any()
}

/// Asks the device for its inventory now rather than at its next scheduled time.
#[component]
fn RefreshInventory(id: String, reload: RwSignal<u64>) -> impl IntoView {
    let api = use_api();
    let outcome = RwSignal::new(None::<Result<String, ApiError>>);
    let ask = move |_| {
        let path = format!("/api/v1/devices/{}/inventory", encode(&id));
        crate::api::spawn(async move {
            let r = api.post::<_, Value>(&path, &serde_json::json!({})).await.map(|_| {
                "Inventory requested: the answers appear in the command history below, and in these facts when the page is loaded again."
                    .to_owned()
            });
            if r.is_ok() {
                reload.update(|n| *n += 1);
            }
            outcome.set(Some(r));
        });
    };
    view! {
        <button type="button" class="button" data-refresh="inventory" on:click=ask>"Ask for inventory now"</button>
        <OutcomeNotice outcome=outcome />
    }
}

/// Who the device belongs to in the self-service portal (what that person sees there).
#[component]
fn AssignUser(id: String, assigned: RwSignal<String>) -> impl IntoView {
    let api = use_api();
    let username = RwSignal::new(assigned.get_untracked());
    let outcome = RwSignal::new(None::<Result<String, ApiError>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = username.get_untracked().trim().to_owned();
        let body = serde_json::json!({ "username": (!name.is_empty()).then_some(name.clone()) });
        let path = format!("/api/v1/devices/{}/user", encode(&id));
        crate::api::spawn(async move {
            let r = api.put::<_, Value>(&path, &body).await.map(|_| {
                assigned.set(name.clone());
                if name.is_empty() {
                    "Saved: the device belongs to nobody in the portal.".to_owned()
                } else {
                    format!("Saved: the device belongs to {name} in the portal.")
                }
            });
            outcome.set(Some(r));
        });
    };
    view! {
        <form class="filters" on:submit=submit>
            <div class="field grow">
                <label for="assign-user">"Belongs to (user name; empty for nobody)"</label>
                <input id="assign-user" autocomplete="off" maxlength="64" bind:value=username />
            </div>
            <button type="submit" class="button">"Save"</button>
        </form>
        <OutcomeNotice outcome=outcome />
    }
}

/// A table of `items` from one of the device's inventory lists.
#[component]
fn ListSection(
    id: &'static str,
    title: &'static str,
    path: String,
    columns: Vec<(&'static str, &'static str)>,
) -> impl IntoView {
    let reload = RwSignal::new(0u64);
    let list = load::<Value>(move || Some(path.clone()), reload);
    let title_id = format!("{id}-title");
    let heading_id = title_id.clone();
    view! {
        <section id=id class="card" aria-labelledby=title_id>
            <h2 id=heading_id>{title}</h2>
            {show_load(list, "", move |v: &Value| {
                let items: Vec<Value> = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                if items.is_empty() {
                    return view! { <p class="muted">"Nothing reported yet."</p> }.into_any();
                }
                let cols = columns.clone();
                view! {
                    <div class="table-wrap">
                        <table class="table">
                            <thead><tr>{cols.iter().map(|(_, h)| view! { <th scope="col">{*h}</th> }).collect_view()}</tr></thead>
                            <tbody>
                                {items.iter().map(|item| view! {
                                    <tr>{cols.iter().map(|(k, _)| {
                                        let text = if k.ends_with("_at") || *k == "not_after" || *k == "at" { when_field(item, k) } else { field(item, k) };
                                        view! { <td>{text}</td> }
                                    }).collect_view()}</tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            })}
        </section>
    }
}

/// The device's command history, asked for again every [`POLL_MS`] while a command is still
/// on its way to the device.
#[component]
fn LiveCommands(path: String, initial: Vec<Value>, reload: RwSignal<u64>) -> impl IntoView {
    let latest = RwSignal::new(initial);
    let api = use_api();
    let pending = move || {
        latest.with(|c| {
            c.iter().any(|c| {
                c.get("status")
                    .and_then(Value::as_str)
                    .is_some_and(crate::components::is_pending)
            })
        })
    };
    Effect::new(move |previous: Option<u64>| {
        let bumped = reload.get();
        // The first run shows what the page loaded; later ones fetch.
        if previous.is_some() {
            let path = path.clone();
            crate::api::spawn(async move {
                if let Ok(d) = api.get::<Value>(&path).await {
                    let commands = d
                        .get("commands")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let _ = latest.try_set(commands);
                }
            });
        }
        bumped
    });
    Effect::new(move |_| {
        if pending() {
            // One poll at a time: the timer asks again only if nothing else (an action) did
            // meanwhile. The page may be gone when it fires.
            let at = reload.get_untracked();
            set_timeout(
                move || {
                    if reload.try_get_untracked() == Some(at) {
                        let _ = reload.try_update(|n| *n += 1);
                    }
                },
                std::time::Duration::from_millis(POLL_MS),
            );
        }
    });
    view! { <CommandHistory latest /> }
}

/// The history table. Rows are keyed by command: polling updates a row's status and times in
/// place, so a plist someone has opened stays open.
#[component]
fn CommandHistory(latest: RwSignal<Vec<Value>>) -> impl IntoView {
    let empty = Memo::new(move |_| latest.with(Vec::is_empty));
    let uuids = move || latest.with(|list| list.iter().map(|c| field(c, "command_uuid")).collect::<Vec<_>>());
    move || {
        if empty.get() {
            return view! { <p class="muted">"No commands sent yet."</p> }.into_any();
        }
        view! {
            <div class="table-wrap">
                <table class="table commands">
                    <thead>
                        <tr>
                            <th scope="col">"Command"</th>
                            <th scope="col">"Status"</th>
                            <th scope="col">"Queued"</th>
                            <th scope="col">"Answered"</th>
                            <th scope="col">"Details"</th>
                        </tr>
                    </thead>
                    <tbody>
                        <For each=uuids key=|uuid| uuid.clone() let:uuid>
                            <CommandRow uuid latest />
                        </For>
                    </tbody>
                </table>
            </div>
        }
        .into_any()
    }
}

#[component]
fn CommandRow(uuid: String, latest: RwSignal<Vec<Value>>) -> impl IntoView {
    let this = uuid.clone();
    let row = Memo::new(move |_| {
        latest.with(|list| {
            list.iter()
                .find(|c| field(c, "command_uuid") == this)
                .cloned()
                .unwrap_or_default()
        })
    });
    let status = Signal::derive(move || row.with(|c| field(c, "status")));
    let initial = row.get_untracked();
    let row_uuid = uuid.clone();
    view! {
        <tr data-command=row_uuid>
            <td>{field(&initial, "request_type")}</td>
            <td class="command-status">
                {move || view! { <Badge text=status.get() /> }}
                {move || {
                    let not_now = row.with(|c| c.get("not_now_count").and_then(Value::as_u64).unwrap_or(0));
                    (not_now > 0).then(|| view! { <span class="muted">{format!(" (not now ×{not_now})")}</span> })
                }}
            </td>
            <td>{when_field(&initial, "queued_at")}</td>
            <td>{move || row.with(|c| when_field(c, "answered_at"))}</td>
            <td><CommandPlists uuid device=field(&initial, "enrollment_id") status /></td>
        </tr>
    }
}

/// The command and the device's answer, as plists, loaded when opened.
#[component]
fn CommandPlists(uuid: String, device: String, status: Signal<String>) -> impl IntoView {
    let opened = RwSignal::new(false);
    let reload = RwSignal::new(0u64);
    // An open plist follows the command: the answer appears when it arrives.
    Effect::new(move |previous: Option<String>| {
        let now = status.get();
        if previous.is_some_and(|p| p != now) && opened.get_untracked() {
            reload.update(|n| *n += 1);
        }
        now
    });
    let path_uuid = uuid.clone();
    let command = load::<Value>(
        move || {
            opened
                .get()
                .then(|| format!("/api/v1/commands/{}", encode(&path_uuid)))
        },
        reload,
    );
    view! {
        <details on:toggle=move |_| opened.set(true)>
            <summary>"Plist"</summary>
            <Show when=move || opened.get()>
                {let device = device.clone(); show_load(command, "the command", move |c: &Value| {
                    // A command sent to several devices: this device's answer.
                    let result = c
                        .get("targets")
                        .and_then(Value::as_array)
                        .and_then(|t| t.iter().find(|d| field(d, "enrollment_id") == device))
                        .cloned()
                        .unwrap_or_default();
                    view! {
                        <h3>"Command"</h3>
                        <pre class="plist">{field(c, "command_plist")}</pre>
                        <h3>"Answer"</h3>
                        {match result.get("result_plist").and_then(Value::as_str) {
                            Some(p) => view! { <pre class="plist">{p.to_owned()}</pre> }.into_any(),
                            None => view! { <p class="muted">"No answer yet."</p> }.into_any(),
                        }}
                    }
                })}
            </Show>
        </details>
    }
}

#[derive(Serialize, Default)]
struct ActionParams {
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    footnote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confirm: Option<String>,
}

fn some(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// The action buttons: only those the role holds; those the device cannot take now are
/// disabled with the reason next to them. Each opens a dialog that asks why (and what the
/// action needs), and erasing asks for the serial number typed out.
#[component]
fn Actions(
    id: String,
    actions: Vec<Value>,
    serial: String,
    platform: String,
    reload: RwSignal<u64>,
) -> impl IntoView {
    let api = use_api();
    let permitted: Vec<Value> = actions
        .into_iter()
        .filter(|a| a.get("permitted").and_then(Value::as_bool) == Some(true))
        .collect();
    if permitted.is_empty() {
        return view! { <p class="muted">"Your role cannot take remote actions on devices."</p> }.into_any();
    }
    let open = RwSignal::new(false);
    let chosen = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let message = RwSignal::new(String::new());
    let phone = RwSignal::new(String::new());
    let footnote = RwSignal::new(String::new());
    let pin = RwSignal::new(String::new());
    let confirm = RwSignal::new(String::new());
    let outcome = RwSignal::new(None::<Result<String, ApiError>>);
    let reauth = RwSignal::new(false);
    let mac = platform == "macos";
    let serial_text = serial.clone();

    let send = Callback::new({
        let id = id.clone();
        move |()| {
            let action = chosen.get_untracked();
            let body = ActionParams {
                reason: reason.get_untracked(),
                message: some(message.get_untracked()),
                phone_number: some(phone.get_untracked()),
                footnote: some(footnote.get_untracked()),
                pin: some(pin.get_untracked()),
                confirm: (action == "erase").then(|| confirm.get_untracked()),
            };
            let path = format!("/api/v1/devices/{}/actions/{action}", encode(&id));
            crate::api::spawn(async move {
                match api.post::<_, Value>(&path, &body).await {
                    Ok(_) => {
                        outcome.set(Some(Ok(format!(
                            "{} sent. The device receives it the next time it connects.",
                            label_of(&action)
                        ))));
                        open.set(false);
                        reload.update(|n| *n += 1);
                    }
                    Err(e) if e.needs_reauthentication() => reauth.set(true),
                    Err(e) => outcome.set(Some(Err(e))),
                }
            });
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        outcome.set(None);
        send.run(());
    };
    let title = Signal::derive(move || format!("{}?", label_of(&chosen.get())));
    let needs = move |what: &str| {
        let a = chosen.get();
        match what {
            "message" => matches!(a.as_str(), "lock" | "enable_lost_mode"),
            "footnote" => a == "enable_lost_mode",
            "pin" => mac && matches!(a.as_str(), "lock" | "erase"),
            "confirm" => a == "erase",
            _ => false,
        }
    };

    view! {
        <div class="action-buttons">
            {permitted.into_iter().map(|a| {
                let name = field(&a, "action");
                let unavailable = a.get("unavailable").and_then(Value::as_str).map(str::to_owned);
                let destructive = matches!(name.as_str(), "erase" | "retire" | "clear_passcode");
                let class = if destructive { "button danger" } else { "button" };
                let describe = format!("why-{name}");
                let n = name.clone();
                view! {
                    <div class="action">
                        <button type="button" class=class data-action=name.clone()
                            disabled=unavailable.is_some()
                            aria-describedby=unavailable.is_some().then(|| describe.clone())
                            on:click=move |_| {
                                chosen.set(n.clone());
                                for s in [reason, message, phone, footnote, pin, confirm] { s.set(String::new()); }
                                outcome.set(None);
                                reauth.set(false);
                                open.set(true);
                            }>
                            {label_of(&name)}
                        </button>
                        {unavailable.map(|why| view! { <span id=describe class="help">{why}</span> })}
                    </div>
                }
            }).collect_view()}
        </div>
        <OutcomeNotice outcome=outcome />
        <Modal open title id="action-dialog">
            <Show when=move || reauth.get() fallback={
                let serial_text = serial_text.clone();
                move || {
                    let serial_text = serial_text.clone();
                    view! {
                        <form class="stacked" on:submit=submit>
                            <Show when=move || chosen.get() == "erase">
                                <p class="notice error">"Erasing removes everything on the device and cannot be undone."</p>
                            </Show>
                            <label for="action-reason">"Reason (kept in the audit log)"</label>
                            <textarea id="action-reason" required minlength="3" bind:value=reason></textarea>
                            <Show when=move || needs("message")>
                                <label for="action-message">"Message on the screen (optional)"</label>
                                <input id="action-message" maxlength="500" bind:value=message />
                                <label for="action-phone">"Phone number on the screen (optional)"</label>
                                <input id="action-phone" type="tel" maxlength="500" bind:value=phone />
                            </Show>
                            <Show when=move || needs("footnote")>
                                <label for="action-footnote">"Footnote (optional)"</label>
                                <input id="action-footnote" maxlength="500" bind:value=footnote />
                            </Show>
                            <Show when=move || needs("pin")>
                                <label for="action-pin">"Six-digit PIN to unlock the Mac"</label>
                                <input id="action-pin" inputmode="numeric" pattern="[0-9]{6}" bind:value=pin />
                            </Show>
                            <Show when=move || needs("confirm")>
                                <label for="action-confirm">{format!("Type the serial number ({}) to confirm", serial_text)}</label>
                                <input id="action-confirm" required autocomplete="off" bind:value=confirm />
                            </Show>
                            <div class="dialog-buttons">
                                <button type="button" class="button" on:click=move |_| open.set(false)>"Cancel"</button>
                                <button type="submit" class="button danger" data-confirm="action">{move || label_of(&chosen.get())}</button>
                            </div>
                        </form>
                    }
                }
            }>
                <Reauthenticate on_done=move || { reauth.set(false); send.run(()); } />
            </Show>
        </Modal>
    }
    .into_any()
}

/// An API error, or — when the action needs a recent sign-in — the form to give it; after
/// that `on_retry` runs (the form's owner clears the error, the user sends again).
#[component]
pub fn ErrorOrReauth(error: ApiError, on_retry: Callback<()>) -> impl IntoView {
    if error.needs_reauthentication() {
        view! { <Reauthenticate on_done=move || on_retry.run(()) /> }.into_any()
    } else {
        view! { <ErrorNotice error /> }.into_any()
    }
}

/// Destructive actions need a recent sign-in: password (and code) again.
#[component]
pub fn Reauthenticate<F>(on_done: F) -> impl IntoView
where
    F: Fn() + Clone + Send + Sync + 'static,
{
    let api = use_api();
    let session = use_session();
    let password = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    // Two of these can be on a page at once (a dialog and a notice): ids must differ.
    static FORMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FORMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (password_id, code_id) = (format!("reauth-password-{n}"), format!("reauth-code-{n}"));
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = serde_json::json!({
            "password": password.get_untracked(),
            "code": some(code.get_untracked()),
        });
        let on_done = on_done.clone();
        crate::api::spawn(async move {
            match api
                .post::<_, crate::session::SessionInfo>("/api/v1/auth/reauthenticate", &body)
                .await
            {
                Ok(info) => {
                    session.set(api, info);
                    on_done();
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <form class="stacked" on:submit=submit>
            <p>"This action needs you to confirm who you are."</p>
            <label for=password_id.clone()>"Password"</label>
            <input id=password_id type="password" autocomplete="current-password" required bind:value=password />
            <label for=code_id.clone()>"Authentication code"</label>
            <input id=code_id inputmode="numeric" autocomplete="one-time-code" bind:value=code />
            {move || error.get().map(|e| view! { <ErrorNotice error=e /> })}
            <button type="submit" class="button primary">"Confirm and continue"</button>
        </form>
    }
}
