//! The dashboard: banners for certificates about to lapse, the fleet in numbers and charts
//! (drawn by the appliance as SVG), devices gone quiet, and recent activity.

use leptos::prelude::*;
use serde_json::Value;

use crate::api::{Load, load};
use crate::components::{PageHeader, count, field, show_load, when_field};
use crate::session::use_session;

/// Days before expiry from which a certificate is flagged.
const WARN_DAYS: i64 = 30;

fn num(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = match cur.get(p) {
            Some(next) => next,
            None => return 0,
        };
    }
    cur.as_u64().unwrap_or(0)
}

/// One banner per certificate that lapses within [`WARN_DAYS`] (or has).
fn banners(status: &Value) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut check = |what: &str, cert: Option<&Value>, consequence: &str| {
        let Some(days) = cert.and_then(|c| c.get("days_left")).and_then(Value::as_i64) else {
            return;
        };
        let until = cert.map(|c| when_field(c, "not_after")).unwrap_or_default();
        if days < 0 {
            out.push((true, format!("The {what} expired on {until}. {consequence}")));
        } else if days <= WARN_DAYS {
            out.push((
                days <= 7,
                format!("The {what} expires in {days} days ({until}). {consequence}"),
            ));
        }
    };
    check(
        "APNs push certificate",
        status.get("push"),
        "Renew it with the same Apple ID, or devices stop receiving commands.",
    );
    check(
        "certificate authority",
        status.get("ca"),
        "Devices cannot renew their identities after it lapses.",
    );
    check(
        "server TLS certificate",
        status.get("tls"),
        "Devices and browsers will refuse the appliance.",
    );
    if status
        .get("push")
        .and_then(|p| p.get("configured"))
        .and_then(Value::as_bool)
        == Some(false)
    {
        out.push((
            true,
            "No APNs push certificate is configured: devices are not woken for commands.".into(),
        ));
    }
    out
}

#[component]
pub fn Dashboard() -> impl IntoView {
    let session = use_session();
    let reload = RwSignal::new(0u64);
    let status = load::<Value>(|| Some("/api/v1/status".to_owned()), reload);
    let report = load::<Value>(|| Some("/api/v1/reports/fleet?stale_days=7".to_owned()), reload);
    let can_audit = move || session.can("audit.read");
    let activity = load::<Value>(
        move || can_audit().then(|| "/api/v1/audit?order=newest&limit=8".to_owned()),
        reload,
    );

    view! {
        <PageHeader title="Dashboard" lead="The fleet at a glance." />
        {move || match &*status.read() {
            Load::Ready(s) => banners(s).into_iter().map(|(urgent, text)| view! {
                <div class=if urgent { "banner urgent" } else { "banner" } role="alert">{text}</div>
            }).collect_view().into_any(),
            _ => ().into_any(),
        }}
        {show_load(report, "the fleet report", |r: &Value| {
            let total = num(r, &["devices"]);
            let compliant = num(r, &["by_compliance", "compliant"]);
            let noncompliant = num(r, &["by_compliance", "noncompliant"]);
            let stale = num(r, &["not_seen", "count"]);
            let expiring = num(r, &["identity_expiring", "count"]);
            let no_passcode = num(r, &["without_passcode", "count"]);
            let unencrypted = num(r, &["without_encryption", "count"]);
            if total == 0 {
                return view! {
                    <div class="empty-state">
                        <h2>"No devices yet"</h2>
                        <p>"Create an enrollment link on the " <a href="/enrollment">"Enrollment"</a> " page and open it on a device."</p>
                    </div>
                }.into_any();
            }
            view! {
                {(expiring > 0).then(|| view! {
                    <div class="banner" role="alert">
                        {format!("{} device identity certificates expire within 30 days: ", count(expiring))}
                        "those devices must re-enrol before then."
                    </div>
                })}
                <div class="cards">
                    <a class="card stat" href="/devices">
                        <span class="card-title">"Enrolled devices"</span>
                        <span class="card-value">{count(total)}</span>
                    </a>
                    <a class="card stat" href="/devices?compliance=compliant">
                        <span class="card-title">"Compliant"</span>
                        <span class="card-value">{count(compliant)}</span>
                        <span class="card-note">{format!("{} %", (compliant * 100).checked_div(total).unwrap_or(0))}</span>
                    </a>
                    <a class="card stat" href="/devices?compliance=noncompliant">
                        <span class="card-title">"Not compliant"</span>
                        <span class="card-value">{count(noncompliant)}</span>
                        <span class="card-note">{format!("{} without passcode, {} unencrypted", count(no_passcode), count(unencrypted))}</span>
                    </a>
                    <a class="card stat" href="/devices?not_seen_days=7">
                        <span class="card-title">"Not seen for 7 days"</span>
                        <span class="card-value">{count(stale)}</span>
                    </a>
                </div>
                <div class="charts">
                    <figure class="card chart">
                        <img src="/api/v1/reports/fleet/platforms.svg" alt="Devices by platform (chart; the device list filters by platform)" width="560" />
                        <figcaption>"By platform"</figcaption>
                    </figure>
                    <figure class="card chart">
                        <img src="/api/v1/reports/fleet/os_versions.svg" alt="Devices by OS version (chart)" width="560" />
                        <figcaption>"By OS version"</figcaption>
                    </figure>
                    <figure class="card chart">
                        <img src="/api/v1/reports/fleet/compliance.svg" alt="Devices by compliance (chart)" width="560" />
                        <figcaption>"Compliance"</figcaption>
                    </figure>
                </div>
            }.into_any()
        })}
        <Show when=can_audit>
            <section class="card" aria-labelledby="activity-title">
                <h2 id="activity-title">"Recent activity"</h2>
                {show_load(activity, "recent activity", |a: &Value| {
                    let items: Vec<Value> = a.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                    view! {
                        <ul class="activity">
                            {items.iter().map(|r| view! {
                                <li>
                                    <span class="muted">{when_field(r, "at")}</span>" "
                                    <code>{field(r, "action")}</code>" "
                                    {field(r, "target")}" "
                                    <span class="muted">{format!("({})", field(r, "outcome"))}</span>
                                </li>
                            }).collect_view()}
                        </ul>
                        <a href="/audit">"Whole audit log"</a>
                    }
                })}
            </section>
        </Show>
    }
}
