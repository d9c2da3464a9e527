//! The device list: server-side paging, search, filters and sort (all in the URL, so a view
//! can be bookmarked or shared), a column chooser, CSV export of the current filter, and bulk
//! actions on a selection or on everything the filter matches.

use std::collections::BTreeSet;

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{ApiError, Load, encode, load, query_string, use_api};
use crate::components::{
    Badge, Modal, OutcomeNotice, PageHeader, count, field, plural, show_load, show_query, when_field,
};
use crate::session::use_session;

/// Rows per page.
pub const PAGE_SIZE: usize = 50;

/// The filters the list understands (also the export's and bulk actions').
const FILTERS: &[&str] = &[
    "search",
    "platform",
    "compliance",
    "ownership",
    "not_seen_days",
    "status",
];

/// A column: query/field name, heading, sortable by the appliance, shown by default.
struct Column {
    key: &'static str,
    heading: &'static str,
    sortable: bool,
    default: bool,
}

const COLUMNS: &[Column] = &[
    Column {
        key: "device_name",
        heading: "Name",
        sortable: true,
        default: true,
    },
    Column {
        key: "serial_number",
        heading: "Serial number",
        sortable: true,
        default: true,
    },
    Column {
        key: "platform",
        heading: "Platform",
        sortable: true,
        default: true,
    },
    Column {
        key: "model_name",
        heading: "Model",
        sortable: true,
        default: true,
    },
    Column {
        key: "os_version",
        heading: "OS version",
        sortable: true,
        default: true,
    },
    Column {
        key: "compliance",
        heading: "Compliance",
        sortable: false,
        default: true,
    },
    Column {
        key: "ownership",
        heading: "Ownership",
        sortable: false,
        default: false,
    },
    Column {
        key: "status",
        heading: "Status",
        sortable: false,
        default: false,
    },
    Column {
        key: "last_seen_at",
        heading: "Last seen",
        sortable: true,
        default: true,
    },
    Column {
        key: "enrolled_at",
        heading: "Enrolled",
        sortable: true,
        default: false,
    },
    Column {
        key: "battery_level",
        heading: "Battery",
        sortable: false,
        default: false,
    },
    Column {
        key: "user_long_name",
        heading: "User",
        sortable: false,
        default: false,
    },
];

#[derive(Deserialize, Clone, PartialEq)]
pub struct DevicePage {
    pub items: Vec<Value>,
    pub total: u64,
    pub offset: u64,
}

fn cell(device: &Value, key: &str) -> AnyView {
    match key {
        "compliance" | "status" => view! { <Badge text=field(device, key) /> }.into_any(),
        "last_seen_at" | "enrolled_at" => when_field(device, key).into_any(),
        "battery_level" => device
            .get(key)
            .and_then(Value::as_f64)
            .map(|b| format!("{:.0} %", b * 100.0))
            .unwrap_or_default()
            .into_any(),
        "platform" => platform_name(&field(device, key)).into_any(),
        _ => field(device, key).into_any(),
    }
}

pub fn platform_name(p: &str) -> String {
    match p {
        "ios" => "iOS",
        "ipados" => "iPadOS",
        "macos" => "macOS",
        "tvos" => "tvOS",
        "visionos" => "visionOS",
        "watchos" => "watchOS",
        _ => "Unknown",
    }
    .to_owned()
}

/// Bulk actions offered on the list, with the permission each needs.
pub const BULK_ACTIONS: &[(&str, &str, &str)] = &[
    ("lock", "Lock", "devices.lock"),
    ("restart", "Restart", "devices.restart"),
    ("play_sound", "Play a sound", "devices.locate"),
    ("locate", "Locate", "devices.locate"),
    ("erase", "Erase", "devices.erase"),
];

#[component]
pub fn Devices() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let session = use_session();
    let reload = RwSignal::new(0u64);

    let param = move |name: &str| query.read().get(name).unwrap_or_default();
    let filters = move || -> Vec<(&'static str, String)> {
        FILTERS
            .iter()
            .map(|f| (*f, param(f)))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    };
    let filter_query = move || query_string(filters());
    let list_path = move || {
        let mut q = filter_query();
        for (k, v) in [("sort", param("sort")), ("offset", param("offset"))] {
            if !v.is_empty() {
                q = format!("{q}&{k}={}", encode(&v));
            }
        }
        Some(format!("/api/v1/devices?limit={PAGE_SIZE}&{q}"))
    };
    let page = load::<DevicePage>(list_path, reload);
    // Effects run after the view updated: the rows are in the document.
    Effect::new(move |_| {
        if page.with(|p| matches!(p, Load::Ready(_))) {
            crate::components::mark("citadel-devices-ready");
        }
    });

    // Columns shown: `cols=` in the URL, or the defaults.
    let columns = move || -> Vec<&'static Column> {
        let chosen = param("cols");
        if chosen.is_empty() {
            COLUMNS.iter().filter(|c| c.default).collect()
        } else {
            let keys: Vec<&str> = chosen.split(',').collect();
            COLUMNS.iter().filter(|c| keys.contains(&c.key)).collect()
        }
    };

    // Changes the URL (and so the list): `changes` set or clear parameters; any change but
    // paging starts again at the first page.
    let set_params = {
        let navigate = navigate.clone();
        move |changes: Vec<(&'static str, String)>| {
            let mut map: Vec<(String, String)> = query
                .read_untracked()
                .clone()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let paging = changes.iter().all(|(k, _)| *k == "offset");
            if !paging {
                map.retain(|(k, _)| k != "offset");
            }
            for (k, v) in changes {
                map.retain(|(existing, _)| existing != k);
                if !v.is_empty() {
                    map.push((k.to_owned(), v));
                }
            }
            let q = map
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            show_query(&navigate, "/devices", &q);
        }
    };

    let search = RwSignal::new(String::new());
    Effect::new(move |_| search.set(param("search")));
    let apply_search = {
        let set_params = set_params.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            set_params(vec![("search", search.get_untracked().trim().to_owned())]);
        }
    };

    let selected = RwSignal::new(BTreeSet::<String>::new());
    // Selection is per view: a new filter or page starts empty.
    Effect::new(move |_| {
        query.track();
        selected.set(BTreeSet::new());
    });

    let select_filter = {
        let set_params = set_params.clone();
        move |name: &'static str, label: &'static str, options: &'static [(&'static str, &'static str)]| {
            let set_params = set_params.clone();
            let id = format!("filter-{name}");
            view! {
                <div class="field">
                    <label for=id.clone()>{label}</label>
                    <select
                        id=id
                        prop:value=move || param(name)
                        on:change=move |ev| set_params(vec![(name, event_target_value(&ev))])
                    >
                        <option value="">"Any"</option>
                        // `selected` on each option: a select's value set before its options exist is lost.
                        {options.iter().map(|(v, l)| view! { <option value=*v prop:selected=move || param(name) == *v>{*l}</option> }).collect_view()}
                    </select>
                </div>
            }
        }
    };

    let sort_button = {
        let set_params = set_params.clone();
        move |c: &'static Column| {
            let set_params = set_params.clone();
            let state = move || {
                let sort = param("sort");
                if sort == c.key {
                    "ascending"
                } else if sort.strip_prefix('-') == Some(c.key) {
                    "descending"
                } else {
                    "none"
                }
            };
            if !c.sortable {
                return view! { <th scope="col">{c.heading}</th> }.into_any();
            }
            view! {
                <th scope="col" aria-sort=state>
                    <button
                        type="button"
                        class="sort"
                        on:click=move |_| {
                            let next = if state() == "ascending" { format!("-{}", c.key) } else { c.key.to_owned() };
                            set_params(vec![("sort", next)]);
                        }
                    >
                        {c.heading}
                        <span aria-hidden="true">{move || match state() { "ascending" => " ▲", "descending" => " ▼", _ => "" }}</span>
                    </button>
                </th>
            }
            .into_any()
        }
    };

    let toggle_column = {
        let set_params = set_params.clone();
        move |key: &'static str, on: bool| {
            let mut keys: Vec<&str> = columns().iter().map(|c| c.key).collect();
            keys.retain(|k| *k != key);
            if on {
                keys.push(key);
            }
            let ordered: Vec<&str> = COLUMNS
                .iter()
                .map(|c| c.key)
                .filter(|k| keys.contains(k))
                .collect();
            let mut changes = vec![("cols", ordered.join(","))];
            // Paging stays where it is.
            changes.push(("offset", param("offset")));
            set_params(changes);
        }
    };

    let bulk_open = RwSignal::new(false);
    let bulk_scope = RwSignal::new(BulkScope::Selection);
    let export_href = move || format!("/api/v1/devices/export?format=csv&{}", filter_query());

    view! {
        <PageHeader title="Devices" lead="Every enrolled device, searchable and filterable.">
            <a class="button" href=export_href download="devices.csv">"Export CSV"</a>
        </PageHeader>
        <form class="filters" role="search" on:submit=apply_search>
            <div class="field grow">
                <label for="device-search">"Search"</label>
                <input id="device-search" type="search" placeholder="Name, serial number, model, user…" bind:value=search />
            </div>
            {select_filter("platform", "Platform", &[("ios", "iOS"), ("ipados", "iPadOS"), ("macos", "macOS"), ("tvos", "tvOS")])}
            {select_filter("compliance", "Compliance", &[("compliant", "Compliant"), ("noncompliant", "Not compliant"), ("unknown", "Unknown")])}
            {select_filter("ownership", "Ownership", &[("corporate", "Corporate"), ("personal", "Personal"), ("unknown", "Unknown")])}
            {select_filter("not_seen_days", "Not seen for", &[("7", "7 days"), ("30", "30 days"), ("90", "90 days")])}
            {select_filter("status", "Status", &[("active", "Active"), ("authenticated", "Enrolling"), ("unenrolled", "Unenrolled")])}
            <button type="submit" class="button primary">"Search"</button>
        </form>
        <div class="toolbar">
            <details class="column-chooser">
                <summary>"Columns"</summary>
                <fieldset>
                    <legend class="visually-hidden">"Columns to show"</legend>
                    {COLUMNS.iter().map(|c| {
                        let toggle = toggle_column.clone();
                        let id = format!("col-{}", c.key);
                        let for_id = id.clone();
                        view! {
                            <label for=for_id>
                                <input
                                    type="checkbox"
                                    id=id
                                    prop:checked=move || columns().iter().any(|x| x.key == c.key)
                                    on:change=move |ev| toggle(c.key, event_target_checked(&ev))
                                />
                                {c.heading}
                            </label>
                        }
                    }).collect_view()}
                </fieldset>
            </details>
            <Show when=move || session.can("commands.send")>
                // Any command of the schema, to exactly these devices (the Commands page's form).
                <a class="button" href=move || selected.with(commands_link)>
                    {move || if selected.read().is_empty() { "Send a command…" } else { "Send a command to the selection…" }}
                </a>
            </Show>
            <Show when=move || BULK_ACTIONS.iter().any(|(_, _, p)| session.can(p))>
                <div class="bulk" role="group" aria-label="Bulk actions">
                    <span aria-live="polite">{move || plural(selected.read().len() as u64, "device selected", "devices selected")}</span>
                    <button type="button" class="button" disabled=move || selected.read().is_empty()
                        on:click=move |_| { bulk_scope.set(BulkScope::Selection); bulk_open.set(true); }>
                        "Act on selection…"
                    </button>
                    <button type="button" class="button"
                        on:click=move |_| { bulk_scope.set(BulkScope::Filter); bulk_open.set(true); }>
                        {move || match &*page.read() {
                            Load::Ready(p) => format!("Act on all {} matching…", count(p.total)),
                            _ => "Act on all matching…".to_owned(),
                        }}
                    </button>
                </div>
            </Show>
        </div>
        {show_load(page, "devices", move |p: &DevicePage| {
            let p = p.clone();
            if p.items.is_empty() {
                let filtered = !filter_query().is_empty();
                return view! {
                    <div class="empty-state">
                        <h2>{if filtered { "No devices match" } else { "No devices yet" }}</h2>
                        <p>{if filtered {
                            "Change or clear the filters to see more."
                        } else {
                            "Devices are listed here after they enrol. Create an enrollment link on the Enrollment page."
                        }}</p>
                    </div>
                }.into_any();
            }
            let cols = columns();
            let ids: Vec<String> = p.items.iter().map(|d| field(d, "enrollment_id")).collect();
            let all_ids = ids.clone();
            let first = p.offset + 1;
            let last = p.offset + p.items.len() as u64;
            view! {
                <p class="muted" role="status">{format!("Showing {}–{} of {}", count(first), count(last), plural(p.total, "device", "devices"))}</p>
                <div class="table-wrap">
                <table class="table devices">
                    <thead>
                        <tr>
                            <th scope="col" class="select">
                                <input type="checkbox" aria-label="Select all devices on this page"
                                    prop:checked=move || { let s = selected.read(); !all_ids.is_empty() && all_ids.iter().all(|i| s.contains(i)) }
                                    on:change={
                                        let ids = ids.clone();
                                        move |ev| {
                                            let on = event_target_checked(&ev);
                                            selected.update(|s| for i in &ids { if on { s.insert(i.clone()); } else { s.remove(i); } });
                                        }
                                    } />
                            </th>
                            {cols.iter().map(|c| sort_button(c)).collect_view()}
                        </tr>
                    </thead>
                    <tbody>
                        {p.items.iter().map(|d| {
                            let id = field(d, "enrollment_id");
                            let name = {
                                let n = field(d, "device_name");
                                if n.is_empty() { id.clone() } else { n }
                            };
                            let href = format!("/devices/{}", encode(&id));
                            let (id_check, id_change) = (id.clone(), id.clone());
                            view! {
                                <tr>
                                    <td class="select">
                                        <input type="checkbox" aria-label=format!("Select {name}")
                                            prop:checked=move || selected.read().contains(&id_check)
                                            on:change=move |ev| {
                                                let on = event_target_checked(&ev);
                                                selected.update(|s| { if on { s.insert(id_change.clone()); } else { s.remove(&id_change); } });
                                            } />
                                    </td>
                                    {cols.iter().map(|c| {
                                        if c.key == "device_name" {
                                            view! { <td><a href=href.clone()>{name.clone()}</a></td> }.into_any()
                                        } else {
                                            view! { <td>{cell(d, c.key)}</td> }.into_any()
                                        }
                                    }).collect_view()}
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                </div>
                <Pager total=p.total offset=p.offset on_page=set_params.clone() />
            }.into_any()
        })}
        <BulkDialog open=bulk_open scope=bulk_scope selected filters=Signal::derive(filters) />
    }
}

#[component]
fn Pager<F>(total: u64, offset: u64, on_page: F) -> impl IntoView
where
    F: Fn(Vec<(&'static str, String)>) + Clone + 'static,
{
    let size = PAGE_SIZE as u64;
    let pages = total.div_ceil(size).max(1);
    let current = offset / size + 1;
    let (prev, next, last_page) = (on_page.clone(), on_page.clone(), on_page.clone());
    let first_page = on_page;
    view! {
        <nav class="pager" aria-label="Pages">
            <button type="button" class="button" disabled={current == 1} on:click=move |_| first_page(vec![("offset", String::new())])>"First"</button>
            <button type="button" class="button" disabled={current == 1}
                on:click=move |_| prev(vec![("offset", (offset.saturating_sub(size)).to_string())])>"Previous"</button>
            <span>{format!("Page {} of {}", count(current), count(pages))}</span>
            <button type="button" class="button" disabled={current >= pages}
                on:click=move |_| next(vec![("offset", (offset + size).to_string())])>"Next"</button>
            <button type="button" class="button" disabled={current >= pages}
                on:click=move |_| last_page(vec![("offset", ((pages - 1) * size).to_string())])>"Last"</button>
        </nav>
    }
}

#[derive(Clone, Copy, PartialEq)]
enum BulkScope {
    Selection,
    Filter,
}

/// What a dry run says the action would do.
#[derive(Deserialize, Clone, PartialEq)]
struct BulkPlan {
    matched: u64,
    eligible: u64,
    skipped: std::collections::BTreeMap<String, u64>,
}

/// The Commands page with the selected devices as its targets (a page's selection: at most
/// one page of devices, so the link stays short).
fn commands_link(selected: &BTreeSet<String>) -> String {
    if selected.is_empty() {
        return "/commands".to_owned();
    }
    let ids: Vec<&str> = selected.iter().map(String::as_str).collect();
    format!("/commands?devices={}", encode(&ids.join(",")))
}

/// Choose the action and reason, see exactly how many devices it reaches (the appliance's dry
/// run, with the ones it would skip and why), then confirm.

#[component]
fn BulkDialog(
    open: RwSignal<bool>,
    scope: RwSignal<BulkScope>,
    selected: RwSignal<BTreeSet<String>>,
    filters: Signal<Vec<(&'static str, String)>>,
) -> impl IntoView {
    let api = use_api();
    let session = use_session();
    // The first action this role may take (a custom role may not lock).
    let first = BULK_ACTIONS
        .iter()
        .find(|(_, _, p)| session.can(p))
        .map_or("lock", |(a, _, _)| *a);
    let action = RwSignal::new(first.to_owned());
    let reason = RwSignal::new(String::new());
    let typed = RwSignal::new(String::new());
    let pin = RwSignal::new(String::new());
    let plan = RwSignal::new(None::<Result<BulkPlan, ApiError>>);
    let done = RwSignal::new(None::<Result<String, ApiError>>);

    // The request body: the selection, or the list's filters as the API's filter object.
    let body = move |dry_run: bool| {
        let targets = (scope.get_untracked() == BulkScope::Selection)
            .then(|| selected.get_untracked().into_iter().collect::<Vec<_>>());
        let mut filter = serde_json::Map::new();
        for (k, v) in filters.get_untracked() {
            let value = if k == "not_seen_days" {
                v.parse::<u64>().map(Value::from).unwrap_or(Value::Null)
            } else {
                Value::String(v)
            };
            filter.insert(k.to_owned(), value);
        }
        let mut params = json!({ "reason": reason.get_untracked() });
        let pin = pin.get_untracked();
        if !pin.trim().is_empty() {
            params["pin"] = Value::String(pin.trim().to_owned());
        }
        if action.get_untracked() == "erase" {
            params["confirm"] = Value::String(typed.get_untracked());
        }
        let mut b = json!({ "params": params, "dry_run": dry_run });
        match targets {
            Some(t) => b["targets"] = json!(t),
            None => b["filter"] = Value::Object(filter),
        }
        b
    };

    // A fresh dry run whenever the dialog opens or the action changes.
    Effect::new(move |_| {
        // Again when the PIN changes: locking or erasing Macs needs one.
        let (is_open, act) = (open.get(), action.get());
        pin.track();
        if !is_open {
            return;
        }
        plan.set(None);
        done.set(None);
        let mut b = body(true);
        b["params"]["reason"] = Value::String("dry run".into());
        crate::api::spawn(async move {
            let r = api
                .post::<_, BulkPlan>(&format!("/api/v1/devices/actions/{act}"), &b)
                .await;
            plan.set(Some(r));
        });
    });

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let act = action.get_untracked();
        let b = body(false);
        crate::api::spawn(async move {
            let r = api
                .post::<_, Value>(&format!("/api/v1/devices/actions/{act}"), &b)
                .await;
            done.set(Some(r.map(|v| {
                format!(
                    "Queued for {}. They receive it over the next minutes.",
                    plural(
                        v.get("eligible").and_then(Value::as_u64).unwrap_or(0),
                        "device",
                        "devices"
                    )
                )
            })));
        });
    };

    let eligible = move || match plan.get() {
        Some(Ok(p)) => Some(p.eligible),
        _ => None,
    };
    let title = Signal::derive(move || {
        let label = BULK_ACTIONS
            .iter()
            .find(|(a, _, _)| *a == action.get())
            .map(|(_, l, _)| *l)
            .unwrap_or("Act");
        format!("{label}: bulk action")
    });
    view! {
        <Modal open title id="bulk-dialog">
            <form class="stacked" on:submit=submit>
                <label for="bulk-action">"Action"</label>
                <select id="bulk-action" prop:value=move || action.get() on:change=move |ev| action.set(event_target_value(&ev))>
                    {BULK_ACTIONS.iter().filter(|(_, _, p)| session.can(p)).map(|(a, l, _)| view! { <option value=*a>{*l}</option> }).collect_view()}
                </select>
                <div class="notice" role="status" aria-live="polite">
                    {move || match plan.get() {
                        None => view! { <p>"Counting the devices this reaches…"</p> }.into_any(),
                        // Erasing needs a recent sign-in: the form, then the count again.
                        Some(Err(e)) => view! {
                            <crate::pages::device::ErrorOrReauth error=e on_retry=Callback::new(move |()| action.update(|_| {})) />
                        }.into_any(),
                        Some(Ok(p)) => view! {
                            <p class="bulk-count"><strong>{format!("This affects {}.", plural(p.eligible, "device", "devices"))}</strong></p>
                            {(p.matched != p.eligible).then(|| view! {
                                <p>{format!("{} of the {} chosen will be left out:", count(p.matched - p.eligible), count(p.matched))}</p>
                                <ul>{p.skipped.iter().map(|(why, n)| view! { <li>{format!("{}: {why}", count(*n))}</li> }).collect_view()}</ul>
                            })}
                        }.into_any(),
                    }}
                </div>
                <Show when=move || matches!(action.get().as_str(), "lock" | "erase")>
                    <label for="bulk-pin">"Six-digit PIN to unlock Macs (needed when Macs are included)"</label>
                    <input id="bulk-pin" inputmode="numeric" pattern="[0-9]{6}" autocomplete="off"
                        prop:value=move || pin.get() on:change=move |ev| pin.set(event_target_value(&ev)) />
                </Show>
                <label for="bulk-reason">"Reason (kept in the audit log)"</label>
                <textarea id="bulk-reason" required minlength="3" bind:value=reason></textarea>
                <Show when=move || action.get() == "erase">
                    <label for="bulk-confirm">{move || format!("Type ERASE {} DEVICES to confirm", eligible().unwrap_or(0))}</label>
                    <input id="bulk-confirm" required bind:value=typed autocomplete="off" />
                </Show>
                <OutcomeNotice outcome=done />
                <div class="dialog-buttons">
                    <button type="button" class="button" on:click=move |_| open.set(false)>"Close"</button>
                    <button type="submit" class="button danger"
                        disabled=move || eligible().unwrap_or(0) == 0 || matches!(done.get(), Some(Ok(_)))>
                        {move || format!("Confirm for {}", plural(eligible().unwrap_or(0), "device", "devices"))}
                    </button>
                </div>
            </form>
        </Modal>
    }
}
