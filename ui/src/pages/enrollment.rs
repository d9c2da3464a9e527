//! Enrolling devices: one-time links with their QR codes, the signed profile for hand
//! installation, and what the person holding the device does on iOS, iPadOS and macOS.

use leptos::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, use_api};
use crate::components::{ErrorNotice, PageHeader, when};

#[derive(Deserialize, Clone)]
struct LinkCreated {
    url: String,
    qr_svg: String,
    expires_at: String,
    warnings: Vec<String>,
}

/// Link lifetimes offered, in seconds.
const LIFETIMES: &[(u64, &str)] = &[
    (3600, "1 hour"),
    (86_400, "1 day"),
    (604_800, "7 days"),
    (2_592_000, "30 days"),
];

#[component]
pub fn Enrollment() -> impl IntoView {
    let api = use_api();
    let ttl = RwSignal::new("86400".to_owned());
    let created = RwSignal::new(None::<Result<LinkCreated, ApiError>>);
    let busy = RwSignal::new(false);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        let secs: u64 = ttl.get_untracked().parse().unwrap_or(86_400);
        crate::api::spawn(async move {
            let r = api
                .post::<_, LinkCreated>("/api/v1/enrollment/links", &json!({ "ttl_secs": secs }))
                .await;
            created.set(Some(r));
            busy.set(false);
        });
    };

    view! {
        <PageHeader title="Enrollment" lead="Bring a device under management: a one-time link, its QR code, or the profile itself." />
        <section class="card" aria-labelledby="link-title">
            <h2 id="link-title">"One-time enrollment link"</h2>
            <p>"Each link enrols one device, once, before it expires. Send it to the person who holds the device, or let them scan the QR code."</p>
            <form class="stacked" on:submit=create>
                <label for="link-ttl">"Valid for"</label>
                <select id="link-ttl" prop:value=move || ttl.get() on:change=move |ev| ttl.set(event_target_value(&ev))>
                    // `selected` on each option: a select's value set before its options exist is lost.
                    {LIFETIMES.iter().map(|(s, l)| {
                        let v = s.to_string();
                        let this = v.clone();
                        view! { <option value=v prop:selected=move || ttl.get() == this>{*l}</option> }
                    }).collect_view()}
                </select>
                <button type="submit" class="button primary" disabled=move || busy.get()>"Create link"</button>
            </form>
            {move || created.get().map(|r| match r {
                Err(e) => view! { <ErrorNotice error=e /> }.into_any(),
                Ok(link) => view! {
                    <div class="link-result">
                        <div class="qr" role="img" aria-label="QR code of the enrollment link" inner_html=link.qr_svg.clone()></div>
                        <div>
                            <label for="link-url">"Link"</label>
                            <input id="link-url" class="link-url" readonly prop:value=link.url.clone() />
                            <p class="help">{format!("Works once, until {}.", when(&link.expires_at))}</p>
                            {link.warnings.iter().map(|w| view! { <p class="notice" role="status">{w.clone()}</p> }).collect_view()}
                        </div>
                    </div>
                }.into_any(),
            })}
        </section>
        <section class="card" aria-labelledby="profile-title">
            <h2 id="profile-title">"Enrollment profile"</h2>
            <p>"A signed profile with a one-time SCEP challenge, for installing by hand or with Apple Configurator. Each download works for one device."</p>
            <a class="button" href="/api/v1/enrollment/profile" download="citadel-enrollment.mobileconfig">"Download profile"</a>
        </section>
        <section class="card" aria-labelledby="steps-title">
            <h2 id="steps-title">"What the user does"</h2>
            <div class="columns">
                <div>
                    <h3>"iPhone and iPad"</h3>
                    <ol>
                        <li>"Open the link in Safari, or point the Camera at the QR code and tap the banner."</li>
                        <li>"Tap Allow to download the configuration profile."</li>
                        <li>"Open Settings; tap Profile Downloaded (or General › VPN & Device Management)."</li>
                        <li>"Tap Install, enter the device passcode, and confirm Remote Management by tapping Trust."</li>
                        <li>"The device appears in Devices within a minute."</li>
                    </ol>
                </div>
                <div>
                    <h3>"Mac"</h3>
                    <ol>
                        <li>"Open the link in Safari; the profile downloads."</li>
                        <li>"Open System Settings › Privacy & Security › Profiles (or search for Profiles)."</li>
                        <li>"Double-click the downloaded profile, click Install, and enter an administrator's password."</li>
                        <li>"Approve Device Management when asked."</li>
                        <li>"The Mac appears in Devices within a minute."</li>
                    </ol>
                </div>
            </div>
            <p class="help">"Links and profiles trust this appliance's certificate authority; devices must reach it at the address in the link."</p>
        </section>
    }
}
