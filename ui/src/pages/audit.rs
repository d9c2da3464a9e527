//! The audit log, newest first, with the API's filters (kept in the URL) and export of the
//! same selection as JSON lines.

use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{encode, load, query_string};
use crate::components::{Badge, PageHeader, field, show_load, show_query, when_field};

const FILTERS: &[(&str, &str)] = &[
    ("action", "Action (or prefix ending in “.”)"),
    ("actor", "Actor"),
    ("target", "Target"),
];

#[derive(Deserialize, Clone, PartialEq)]
struct AuditPage {
    items: Vec<Value>,
    next: Option<u64>,
}

fn actor_text(r: &Value) -> String {
    let a = r.get("actor").cloned().unwrap_or_default();
    let kind = field(&a, "kind").replace('_', " ");
    let id = field(&a, "id");
    if id.is_empty() {
        kind
    } else {
        format!("{kind}: {id}")
    }
}

#[component]
pub fn Audit() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let param = move |name: &str| query.read().get(name).unwrap_or_default();
    let filter_query = move || {
        query_string(
            FILTERS
                .iter()
                .map(|(k, _)| *k)
                .chain(["outcome"])
                .map(|k| (k, param(k))),
        )
    };
    let reload = RwSignal::new(0u64);
    let page = load::<AuditPage>(
        move || {
            let before = param("before");
            let before = if before.is_empty() {
                String::new()
            } else {
                format!("&before={}", encode(&before))
            };
            Some(format!(
                "/api/v1/audit?order=newest&limit=50{before}&{}",
                filter_query()
            ))
        },
        reload,
    );

    let values: Vec<(&'static str, RwSignal<String>)> = FILTERS
        .iter()
        .map(|(k, _)| *k)
        .chain(["outcome"])
        .map(|k| (k, RwSignal::new(String::new())))
        .collect();
    {
        let values = values.clone();
        Effect::new(move |_| {
            for (k, s) in &values {
                s.set(param(k));
            }
        });
    }
    let go = {
        let navigate = navigate.clone();
        move |q: String| show_query(&navigate, "/audit", &q)
    };
    let submit = {
        let values = values.clone();
        let go = go.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            go(query_string(
                values
                    .iter()
                    .map(|(k, s)| (*k, s.get_untracked().trim().to_owned())),
            ));
        }
    };
    let outcome = values
        .iter()
        .find(|(k, _)| *k == "outcome")
        .map(|(_, s)| *s)
        .unwrap_or_else(|| RwSignal::new(String::new()));
    let export_href = move || format!("/api/v1/audit/export?{}", filter_query());

    view! {
        <PageHeader title="Audit log" lead="Who did what, when and from where. Records are chained and cannot be changed.">
            <a class="button" href=export_href download="audit.jsonl">"Export (JSON lines)"</a>
        </PageHeader>
        <form class="filters" role="search" on:submit=submit>
            {values.iter().filter(|(k, _)| *k != "outcome").map(|(k, s)| {
                let label = FILTERS.iter().find(|(f, _)| f == k).map(|(_, l)| *l).unwrap_or("");
                let id = format!("audit-{k}");
                let s = *s;
                view! {
                    <div class="field">
                        <label for=id.clone()>{label}</label>
                        <input id=id bind:value=s />
                    </div>
                }
            }).collect_view()}
            <div class="field">
                <label for="audit-outcome">"Outcome"</label>
                <select id="audit-outcome" prop:value=move || outcome.get() on:change=move |ev| outcome.set(event_target_value(&ev))>
                    // `selected` on each option: a select's value set before its options exist is lost.
                    {[("", "Any"), ("success", "Success"), ("denied", "Denied"), ("failure", "Failure")].map(|(v, l)| view! {
                        <option value=v prop:selected=move || outcome.get() == v>{l}</option>
                    }).into_iter().collect_view()}
                </select>
            </div>
            <button type="submit" class="button primary">"Filter"</button>
        </form>
        {show_load(page, "the audit log", move |p: &AuditPage| {
            if p.items.is_empty() {
                return view! { <div class="empty-state"><h2>"No records match"</h2><p>"Change or clear the filters."</p></div> }.into_any();
            }
            let next = p.next;
            let go = go.clone();
            view! {
                <div class="table-wrap">
                    <table class="table audit">
                        <thead>
                            <tr>
                                <th scope="col">"#"</th>
                                <th scope="col">"When"</th>
                                <th scope="col">"Actor"</th>
                                <th scope="col">"Action"</th>
                                <th scope="col">"Target"</th>
                                <th scope="col">"Outcome"</th>
                                <th scope="col">"Reason"</th>
                                <th scope="col">"From"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {p.items.iter().map(|r| view! {
                                <tr>
                                    <td>{field(r, "seq")}</td>
                                    <td>{when_field(r, "at")}</td>
                                    <td>{actor_text(r)}</td>
                                    <td><code>{field(r, "action")}</code></td>
                                    <td>{field(r, "target")}</td>
                                    <td><Badge text=field(r, "outcome") /></td>
                                    <td>{field(r, "reason")}</td>
                                    <td>{field(r, "source")}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
                <nav class="pager" aria-label="Pages">
                    <button type="button" class="button" disabled=param("before").is_empty()
                        on:click={ let go = go.clone(); move |_| go(filter_query()) }>"Newest"</button>
                    <button type="button" class="button" disabled=next.is_none()
                        on:click=move |_| {
                            let q = filter_query();
                            let before = next.map(|n| n.to_string()).unwrap_or_default();
                            go(if q.is_empty() { format!("before={before}") } else { format!("{q}&before={before}") });
                        }>"Older"</button>
                </nav>
            }.into_any()
        })}
    }
}
