//! Send any command of Apple's schema to a selection of devices. The form is built from the
//! schema the appliance serves (`/api/v1/commands/catalog`: keys, types, required, allowed
//! values, per-OS support), and the command's progress updates live.

use std::collections::BTreeMap;

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{ApiError, Load, encode, load, query_string, use_api};
use crate::components::{ErrorNotice, PageHeader, count, field, plural, show_load};
use crate::session::use_session;

/// Devices a command from this page can name at once (the list API's page size).
const MAX_TARGETS: usize = 1000;

/// The devices chosen on the Devices page (`?devices=id,id,…`), if any.
fn carried_devices(param: Option<String>) -> Option<Vec<String>> {
    let ids: Vec<String> = param?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(MAX_TARGETS)
        .map(str::to_owned)
        .collect();
    (!ids.is_empty()).then_some(ids)
}
const POLL_MS: u64 = 2000;

#[derive(Deserialize, Clone, PartialEq)]
struct Catalog {
    commands: Vec<Value>,
}

/// "iOS 4.0+, macOS 10.7+ (supervised)".
fn support_text(c: &Value) -> String {
    let mut parts = Vec::new();
    for (key, name) in [
        ("ios", "iOS"),
        ("macos", "macOS"),
        ("tvos", "tvOS"),
        ("visionos", "visionOS"),
        ("watchos", "watchOS"),
    ] {
        let Some(p) = c
            .get("platforms")
            .and_then(|p| p.get(key))
            .filter(|p| !p.is_null())
        else {
            continue;
        };
        let mut t = format!("{name} {}+", field(p, "introduced"));
        if p.get("supervised").and_then(Value::as_bool) == Some(true) {
            t.push_str(" (supervised)");
        }
        if p.get("requires_dep").and_then(Value::as_bool) == Some(true) {
            t.push_str(" (Automated Device Enrollment)");
        }
        parts.push(t);
    }
    if parts.is_empty() {
        "No platform".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A form value typed as the schema says, or why it is not one. Empty optional fields are left
/// out (`Ok(None)`).
fn typed(key: &Value, raw: &str) -> Result<Option<Value>, String> {
    let name = field(key, "name");
    let raw = raw.trim();
    if raw.is_empty() {
        return if key.get("required").and_then(Value::as_bool) == Some(true) {
            Err(format!("{name} is required"))
        } else {
            Ok(None)
        };
    }
    let ty = field(key, "type");
    let value = match ty.as_str() {
        "string" | "date" | "data" => Value::String(raw.to_owned()),
        "integer" => raw
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{name} must be a whole number"))?,
        "real" => raw
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| format!("{name} must be a number"))?,
        "boolean" => Value::Bool(raw == "true"),
        "array" if key.get("item").map(|i| field(i, "type")).as_deref() == Some("string") => Value::Array(
            raw.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| Value::String(l.to_owned()))
                .collect(),
        ),
        _ => serde_json::from_str(raw).map_err(|e| format!("{name} must be JSON: {e}"))?,
    };
    Ok(Some(value))
}

#[component]
pub fn Commands() -> impl IntoView {
    let api = use_api();
    let session = use_session();
    let reload = RwSignal::new(0u64);
    let catalog = load::<Catalog>(|| Some("/api/v1/commands/catalog".to_owned()), reload);
    let platform = RwSignal::new(String::new());
    let chosen = RwSignal::new(String::new());
    let values = RwSignal::new(BTreeMap::<String, String>::new());
    let query = leptos_router::hooks::use_query_map();
    let carried = Memo::new(move |_| carried_devices(query.read().get("devices")));
    let search = RwSignal::new(String::new());
    let target_platform = RwSignal::new(String::new());
    let targets_query = Memo::new(move |_| {
        query_string([
            ("search", search.get().trim().to_owned()),
            ("platform", target_platform.get()),
            ("status", "active".to_owned()),
        ])
    });
    let targets = load::<Value>(
        move || {
            carried
                .with(Option::is_none)
                .then(|| format!("/api/v1/devices?limit={MAX_TARGETS}&{}", targets_query.get()))
        },
        reload,
    );
    let sent = RwSignal::new(None::<Result<String, ApiError>>);
    let problem = RwSignal::new(None::<String>);

    let spec = move || -> Option<Value> {
        match &*catalog.read() {
            Load::Ready(c) => c
                .commands
                .iter()
                .find(|x| field(x, "request_type") == chosen.get())
                .cloned(),
            _ => None,
        }
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        problem.set(None);
        let Some(spec) = spec() else { return };
        let mut command = Map::new();
        command.insert("RequestType".into(), Value::String(field(&spec, "request_type")));
        let filled = values.get_untracked();
        for key in spec
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = field(&key, "name");
            match typed(&key, filled.get(&name).map(String::as_str).unwrap_or_default()) {
                Ok(Some(v)) => {
                    command.insert(name, v);
                }
                Ok(None) => {}
                Err(why) => {
                    problem.set(Some(why));
                    return;
                }
            }
        }
        let ids: Vec<String> = match (carried.get_untracked(), &*targets.read_untracked()) {
            (Some(ids), _) => ids,
            (None, Load::Ready(page)) => page
                .get("items")
                .and_then(Value::as_array)
                .map(|i| i.iter().map(|d| field(d, "enrollment_id")).collect())
                .unwrap_or_default(),
            (None, _) => Vec::new(),
        };
        if ids.is_empty() {
            problem.set(Some("No devices match the selection.".into()));
            return;
        }
        let body = json!({ "targets": ids, "command": Value::Object(command) });
        crate::api::spawn(async move {
            sent.set(Some(
                api.post::<_, Value>("/api/v1/commands", &body)
                    .await
                    .map(|v| field(&v, "command_uuid")),
            ));
        });
    };

    view! {
        <PageHeader title="Commands" lead="Send any MDM command to a selection of devices and follow it." />
        {show_load(catalog, "Apple's command schema", move |c: &Catalog| {
            let commands = c.commands.clone();
            let visible = move || -> Vec<Value> {
                let p = platform.get();
                commands
                    .iter()
                    .filter(|x| p.is_empty() || x.get("platforms").and_then(|ps| ps.get(&p)).is_some_and(|v| !v.is_null()))
                    .filter(|x| session.can(&field(x, "permission")))
                    .cloned()
                    .collect()
            };
            view! {
                <form class="command-form" on:submit=submit>
                    <section class="card" aria-labelledby="which-title">
                        <h2 id="which-title">"1. Command"</h2>
                        <div class="filters">
                            <div class="field">
                                <label for="command-platform">"Platform"</label>
                                <select id="command-platform" prop:value=move || platform.get() on:change=move |ev| platform.set(event_target_value(&ev))>
                                    <option value="">"Any"</option>
                                    <option value="ios">"iOS and iPadOS"</option>
                                    <option value="macos">"macOS"</option>
                                    <option value="tvos">"tvOS"</option>
                                </select>
                            </div>
                            <div class="field grow">
                                <label for="command-type">"Command"</label>
                                <select id="command-type" required prop:value=move || chosen.get()
                                    on:change=move |ev| { chosen.set(event_target_value(&ev)); values.set(BTreeMap::new()); sent.set(None); }>
                                    <option value="">"Choose…"</option>
                                    // `selected` on each option: the list changes with the platform, and
                                    // the select must keep showing the command that will be sent.
                                    {move || visible().into_iter().map(|x| {
                                        let rt = field(&x, "request_type");
                                        let this = rt.clone();
                                        view! { <option value=rt.clone() prop:selected=move || chosen.get() == this>{format!("{rt} — {}", field(&x, "title"))}</option> }
                                    }).collect_view()}
                                </select>
                            </div>
                        </div>
                        {move || spec().map(|s| view! {
                            <p class="help">{format!("Supported on {}.", support_text(&s))}</p>
                            <KeyFields keys=s.get("keys").and_then(Value::as_array).cloned().unwrap_or_default() values />
                        })}
                    </section>
                    <section class="card" aria-labelledby="targets-title">
                        <h2 id="targets-title">"2. Devices"</h2>
                        <Show when=move || carried.with(Option::is_some)>
                            <p role="status">
                                {move || format!("{} chosen on the Devices page will receive the command.",
                                    plural(carried.with(|c| c.as_ref().map_or(0, Vec::len)) as u64, "device", "devices"))}
                            </p>
                            // The names come from the page's address: show them (the appliance
                            // refuses a command naming a device it does not manage).
                            <details>
                                <summary>"Which devices"</summary>
                                <ul class="id-list">
                                    {move || carried.get().unwrap_or_default().into_iter().map(|id| {
                                        let href = format!("/devices/{}", encode(&id));
                                        view! { <li><a href=href>{id}</a></li> }
                                    }).collect_view()}
                                </ul>
                            </details>
                            <a class="button subtle" href="/commands">"Choose devices by search instead"</a>
                        </Show>
                        <Show when=move || carried.with(Option::is_none)>
                        <div class="filters">
                            <div class="field grow">
                                <label for="target-search">"Devices matching"</label>
                                <input id="target-search" type="search" placeholder="Name, serial number, model… (empty: all)"
                                    prop:value=move || search.get() on:change=move |ev| search.set(event_target_value(&ev)) />
                            </div>
                            <div class="field">
                                <label for="target-platform">"Platform"</label>
                                <select id="target-platform" prop:value=move || target_platform.get() on:change=move |ev| target_platform.set(event_target_value(&ev))>
                                    <option value="">"Any"</option>
                                    <option value="ios">"iOS"</option>
                                    <option value="ipados">"iPadOS"</option>
                                    <option value="macos">"macOS"</option>
                                </select>
                            </div>
                        </div>
                        <p role="status" aria-live="polite">
                            {move || match &*targets.read() {
                                Load::Ready(p) => {
                                    let total = p.get("total").and_then(Value::as_u64).unwrap_or(0);
                                    let named = p.get("items").and_then(Value::as_array).map_or(0, Vec::len) as u64;
                                    if total > named {
                                        format!("{} active devices match; the first {} will receive the command (narrow the selection, or use a bulk action on the Devices page).", count(total), count(named))
                                    } else {
                                        format!("{} will receive the command.", plural(total, "active device", "active devices"))
                                    }
                                }
                                Load::Failed(e) => e.to_string(),
                                Load::Loading => "Counting devices…".to_owned(),
                            }}
                        </p>
                        </Show>
                    </section>
                    {move || problem.get().map(|p| view! { <p class="notice error" role="alert">{p}</p> })}
                    <button type="submit" class="button primary" disabled=move || chosen.get().is_empty()>"Send command"</button>
                </form>
            }
        })}
        {move || sent.get().map(|r| match r {
            Err(e) => view! { <ErrorNotice error=e /> }.into_any(),
            Ok(uuid) => view! { <Progress uuid /> }.into_any(),
        })}
    }
}

/// One input per key of the command, typed from the schema.
#[component]
fn KeyFields(keys: Vec<Value>, values: RwSignal<BTreeMap<String, String>>) -> impl IntoView {
    if keys.is_empty() {
        return view! { <p class="muted">"This command takes no parameters."</p> }.into_any();
    }
    view! {
        <div class="stacked">
            {keys.into_iter().map(|k| {
                let name = field(&k, "name");
                let id = format!("key-{name}");
                let required = k.get("required").and_then(Value::as_bool) == Some(true);
                let ty = field(&k, "type");
                let allowed: Vec<String> = k.get("allowed").and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default();
                let default = field(&k, "default");
                let hint = match ty.as_str() {
                    "date" => "A date and time, e.g. 2026-12-31T18:00:00Z.".to_owned(),
                    "data" => "Base64.".to_owned(),
                    "array" if k.get("item").map(|i| field(i, "type")).as_deref() == Some("string") => "One value per line.".to_owned(),
                    "array" | "dictionary" | "one_of" | "any_dictionary" | "any" => "JSON, with Apple's key names.".to_owned(),
                    _ => String::new(),
                };
                let hint = if default.is_empty() { hint } else { format!("{hint} Default: {default}.").trim().to_owned() };
                let label = format!("{name}{}", if required { " (required)" } else { "" });
                let key = name.clone();
                let get = { let key = key.clone(); move || values.read().get(&key).cloned().unwrap_or_default() };
                let set = move |v: String| values.update(|m| { m.insert(key.clone(), v); });
                let help_id = format!("{id}-help");
                let described = (!hint.is_empty()).then(|| help_id.clone());
                let input = if !allowed.is_empty() || ty == "boolean" {
                    let options = if ty == "boolean" { vec!["true".to_owned(), "false".to_owned()] } else { allowed };
                    view! {
                        <select id=id.clone() required=required aria-describedby=described.clone() prop:value=get on:change=move |ev| set(event_target_value(&ev))>
                            <option value="">{if required { "Choose…" } else { "(not set)" }}</option>
                            {options.into_iter().map(|o| {
                                let is_chosen = { let get = get.clone(); let o = o.clone(); move || get() == o };
                                view! { <option value=o.clone() prop:selected=is_chosen>{o.clone()}</option> }
                            }).collect_view()}
                        </select>
                    }.into_any()
                } else if matches!(ty.as_str(), "array" | "dictionary" | "one_of" | "any_dictionary" | "any" | "data") {
                    view! { <textarea id=id.clone() required=required aria-describedby=described.clone() prop:value=get on:input=move |ev| set(event_target_value(&ev))></textarea> }.into_any()
                } else {
                    let input_type = if matches!(ty.as_str(), "integer" | "real") { "number" } else { "text" };
                    view! { <input id=id.clone() type=input_type step="any" required=required aria-describedby=described.clone() prop:value=get on:input=move |ev| set(event_target_value(&ev)) /> }.into_any()
                };
                view! {
                    <label for=id>{label}</label>
                    {input}
                    {(!hint.is_empty()).then(|| view! { <p id=help_id class="help">{hint}</p> })}
                }
            }).collect_view()}
        </div>
    }
    .into_any()
}

/// Status counts of a command across its devices, asked again until every device answered.
#[component]
fn Progress(uuid: String) -> impl IntoView {
    let reload = RwSignal::new(0u64);
    let path = format!("/api/v1/commands/{}", encode(&uuid));
    let command = load::<Value>(move || Some(path.clone()), reload);
    Effect::new(move |_| {
        let open = command.with(|c| match c {
            Load::Ready(v) => v.get("targets").and_then(Value::as_array).is_some_and(|t| {
                t.iter().any(|d| {
                    d.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(crate::components::is_pending)
                })
            }),
            _ => false,
        });
        if open {
            // The page may be gone when the timer fires.
            set_timeout(
                move || {
                    let _ = reload.try_update(|n| *n += 1);
                },
                std::time::Duration::from_millis(POLL_MS),
            );
        }
    });
    view! {
        <section class="card" aria-labelledby="progress-title">
            <h2 id="progress-title">"Progress"</h2>
            <p class="help">{format!("Command {uuid}")}</p>
            {show_load(command, "the command", |c: &Value| {
                let mut counts = BTreeMap::<String, u64>::new();
                for d in c.get("targets").and_then(Value::as_array).cloned().unwrap_or_default() {
                    *counts.entry(field(&d, "status")).or_default() += 1;
                }
                view! {
                    <dl class="facts progress" aria-live="polite">
                        {counts.into_iter().map(|(status, n)| view! {
                            <div><dt>{status.replace('_', " ")}</dt><dd data-status=status.clone()>{count(n)}</dd></div>
                        }).collect_view()}
                    </dl>
                }
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_carried_from_the_devices_page() {
        assert_eq!(carried_devices(None), None);
        assert_eq!(carried_devices(Some(" , ".into())), None);
        assert_eq!(
            carried_devices(Some("A,B,,C ".into())),
            Some(vec!["A".to_owned(), "B".to_owned(), "C".to_owned()])
        );
        let many = (0..1500).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(carried_devices(Some(many)).map(|v| v.len()), Some(MAX_TARGETS));
    }

    #[test]
    fn form_values_are_typed_from_the_schema() {
        let key = |ty: &str, required: bool| json!({ "name": "K", "type": ty, "required": required });
        assert_eq!(typed(&key("string", false), "  "), Ok(None));
        assert!(typed(&key("string", true), "").is_err());
        assert_eq!(typed(&key("integer", true), "42"), Ok(Some(json!(42))));
        assert!(typed(&key("integer", true), "4.2").is_err());
        assert_eq!(typed(&key("boolean", true), "false"), Ok(Some(json!(false))));
        assert_eq!(
            typed(&key("dictionary", true), r#"{"a":1}"#),
            Ok(Some(json!({"a": 1})))
        );
        assert!(typed(&key("dictionary", true), "{").is_err());
        let list = json!({ "name": "L", "type": "array", "required": false, "item": { "type": "string" } });
        assert_eq!(typed(&list, "a\n\n b \n"), Ok(Some(json!(["a", "b"]))));
        let c = json!({ "platforms": { "ios": { "introduced": "4.0", "supervised": true }, "macos": null } });
        assert_eq!(support_text(&c), "iOS 4.0+ (supervised)");
    }
}
