//! Building blocks shared by the pages: headers, loading/empty/error states, dialogs, tables
//! of facts and the small formatters.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::NavigateOptions;
use serde_json::Value;

use crate::api::{ApiError, Load};

#[component]
pub fn PageHeader(
    #[prop(into)] title: Signal<String>,
    #[prop(into, optional)] lead: Option<String>,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    view! {
        <Title text=move || title.get() />
        <header class="page-header">
            <div>
                <h1>{move || title.get()}</h1>
                {lead.map(|lead| view! { <p class="lead">{lead}</p> })}
            </div>
            {children.map(|c| view! { <div class="page-actions">{c()}</div> })}
        </header>
    }
}

#[component]
pub fn LoadingState(#[prop(into, optional)] what: Option<String>) -> impl IntoView {
    view! {
        <p class="loading" role="status">
            {format!("Loading {}…", what.unwrap_or_default()).replace("Loading …", "Loading…")}
        </p>
    }
}

#[component]
pub fn ErrorNotice(#[prop(into)] error: ApiError) -> impl IntoView {
    view! {
        <div class="notice error" role="alert">
            <p>{error.to_string()}</p>
        </div>
    }
}

/// Renders a [`Load`]: the loading state, the error, or `ready` with the data.
pub fn show_load<T, V>(
    state: RwSignal<Load<T>>,
    what: &'static str,
    ready: impl Fn(&T) -> V + Send + Sync + 'static,
) -> impl IntoView
where
    T: Send + Sync + 'static,
    V: IntoView + 'static,
{
    move || match &*state.read() {
        Load::Loading => view! { <LoadingState what=what /> }.into_any(),
        Load::Failed(e) => view! { <ErrorNotice error=e.clone() /> }.into_any(),
        Load::Ready(v) => ready(v).into_any(),
    }
}

/// A modal dialog (the native `<dialog>`: focus stays inside, Escape closes it).
#[component]
pub fn Modal(
    open: RwSignal<bool>,
    #[prop(into)] title: Signal<String>,
    #[prop(into)] id: String,
    children: ChildrenFn,
) -> impl IntoView {
    let dialog: NodeRef<leptos::html::Dialog> = NodeRef::new();
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let want = open.get();
        if let Some(el) = dialog.get() {
            if want && !el.open() {
                // Failing to open (already open elsewhere) leaves it as it is.
                let _ = el.show_modal();
            } else if !want && el.open() {
                el.close();
            }
        }
    });
    let title_id = format!("{id}-title");
    let heading_id = title_id.clone();
    view! {
        <dialog
            node_ref=dialog
            class="modal"
            id=id
            aria-labelledby=title_id
            on:close=move |_| open.set(false)
        >
            <h2 id=heading_id>{move || title.get()}</h2>
            {move || open.get().then(|| children())}
        </dialog>
    }
}

/// A button for a step that loses something: it first asks, in place, and acts only on the
/// second click ("every destructive action confirmed" without a dialog on a dialog).
#[component]
pub fn ConfirmButton(
    #[prop(into)] label: String,
    #[prop(into)] question: String,
    #[prop(into)] confirm: String,
    on_confirm: Callback<()>,
) -> impl IntoView {
    let asking = RwSignal::new(false);
    let cancel: NodeRef<leptos::html::Button> = NodeRef::new();
    let trigger: NodeRef<leptos::html::Button> = NodeRef::new();
    // The question is disposed as soon as it is answered; what the answer starts (an API call)
    // must belong to this button instead, or it would be cancelled with the question.
    let owner = Owner::current();
    let confirmed = move || {
        match &owner {
            Some(owner) => owner.with(|| on_confirm.run(())),
            None => on_confirm.run(()),
        }
        asking.set(false);
    };
    // Focus follows the question and comes back after it, so a keyboard user is never left on
    // a removed button.
    Effect::new(move |was_asking: Option<bool>| {
        let now = asking.get();
        let target = if now {
            cancel.get()
        } else if was_asking == Some(true) {
            trigger.get()
        } else {
            None
        };
        if let Some(button) = target {
            let _ = button.focus();
        }
        now
    });
    view! {
        <Show
            when=move || asking.get()
            fallback={
                let label = label.clone();
                move || view! {
                    <button type="button" class="button" node_ref=trigger on:click=move |_| asking.set(true)>{label.clone()}</button>
                }
            }
        >
            <div class="confirm-inline" role="group" aria-label=confirm.clone()>
                <p>{question.clone()}</p>
                <button type="button" class="button" node_ref=cancel on:click=move |_| asking.set(false)>"Cancel"</button>
                <button type="button" class="button danger" on:click={
                    let confirmed = confirmed.clone();
                    move |_| confirmed()
                }>{confirm.clone()}</button>
            </div>
        </Show>
    }
}

/// What the last step did: a success notice, or the error (with the sign-in form when a
/// recent sign-in is what is missing; after it, the notice clears for the user to retry).
#[component]
pub fn OutcomeNotice(outcome: RwSignal<Option<Result<String, ApiError>>>) -> impl IntoView {
    move || {
        outcome.get().map(|r| match r {
            Ok(m) => view! { <p class="notice success" role="status">{m}</p> }.into_any(),
            Err(e) => view! {
                <crate::pages::device::ErrorOrReauth error=e on_retry=Callback::new(move |()| outcome.set(None)) />
            }
            .into_any(),
        })
    }
}

/// A definition list of the non-empty facts.
#[component]
pub fn Facts(rows: Vec<(&'static str, String)>) -> impl IntoView {
    let rows: Vec<_> = rows.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    if rows.is_empty() {
        return view! { <p class="muted">"Not reported yet."</p> }.into_any();
    }
    view! {
        <dl class="facts">
            {rows
                .into_iter()
                .map(|(k, v)| view! {
                    <div>
                        <dt>{k}</dt>
                        <dd>{v}</dd>
                    </div>
                })
                .collect_view()}
        </dl>
    }
    .into_any()
}

/// A JSON value as text for a fact: strings bare, booleans as yes/no, nothing as empty.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "Yes".into(),
        Value::Bool(false) => "No".into(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// `v[key]` as text.
pub fn field(v: &Value, key: &str) -> String {
    v.get(key).map(text_of).unwrap_or_default()
}

/// An RFC 3339 time as `2026-12-06 08:12 UTC` (the appliance answers in UTC).
pub fn when(rfc3339: &str) -> String {
    if rfc3339.len() < 16 {
        return rfc3339.to_owned();
    }
    format!("{} {} UTC", &rfc3339[..10], &rfc3339[11..16])
}

/// `v[key]` as a time.
pub fn when_field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).map(when).unwrap_or_default()
}

/// 100000 → `100,000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 device`, `2 devices`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// Shows `path?query` in place of the current URL (a page's filters live in its URL: a view
/// can be bookmarked, and Back does not step through every filter change).
pub fn show_query(navigate: &impl Fn(&str, NavigateOptions), path: &str, query: &str) {
    let url = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    navigate(
        &url,
        NavigateOptions {
            replace: true,
            scroll: false,
            ..NavigateOptions::default()
        },
    );
}

/// A `performance.mark` the benchmarks read (time to hydrated, to data on screen).
pub fn mark(name: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(performance) = leptos::prelude::window().performance() {
        // A mark that cannot be set only loses a measurement.
        let _ = performance.mark(name);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = name;
}

/// A command delivery still on its way (the API's `DeliveryStatus` names).
pub fn is_pending(status: &str) -> bool {
    matches!(status, "Queued" | "Sent" | "NotNow")
}

/// A status as a badge; the class follows the word.
#[component]
pub fn Badge(#[prop(into)] text: String) -> impl IntoView {
    let class = format!("badge badge-{}", text.to_lowercase().replace([' ', '_'], "-"));
    view! { <span class=class>{text.replace('_', " ")}</span> }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(100_000), "100,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(plural(1, "device", "devices"), "1 device");
        assert_eq!(plural(2, "device", "devices"), "2 devices");
        assert_eq!(when("2026-12-06T08:12:44Z"), "2026-12-06 08:12 UTC");
        assert_eq!(when("bad"), "bad");
        assert_eq!(text_of(&Value::Bool(true)), "Yes");
        assert_eq!(field(&serde_json::json!({"a": 2}), "a"), "2");
    }
}
