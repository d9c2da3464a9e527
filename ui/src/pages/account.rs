//! One's own account: the steps a new session must finish (a new password, the second factor),
//! recovery codes shown once, and the sessions one has open.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{ApiError, Load, load, use_api};
use crate::components::{ErrorNotice, PageHeader, field, show_load, when_field};
use crate::session::{SessionInfo, use_session};

#[derive(Serialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

#[derive(Deserialize, Clone)]
struct TotpEnrolment {
    secret: String,
    qr_svg: String,
}

#[derive(Deserialize)]
struct TotpConfirmed {
    recovery_codes: Vec<String>,
    #[serde(flatten)]
    session: SessionInfo,
}

#[component]
pub fn Account() -> impl IntoView {
    let session = use_session();
    let pending = move |step: &str| {
        session
            .info
            .with(|s| matches!(s, Load::Ready(i) if i.pending.iter().any(|p| p == step)))
    };
    let shown_codes = RwSignal::new(Vec::<String>::new());

    view! {
        <PageHeader title="Your account" lead="Your password, second factor and sessions." />
        <Show when=move || session.info.with(|s| matches!(s, Load::Ready(i) if !i.pending.is_empty()))>
            <div class="notice" role="status">
                <p>"Finish setting up your account before you continue."</p>
            </div>
        </Show>
        <Show when=move || !shown_codes.read().is_empty()>
            <section class="card" aria-labelledby="codes-title">
                <h2 id="codes-title">"Recovery codes"</h2>
                <p>
                    "Each code signs you in once in place of the authenticator. Keep them somewhere safe: they are shown only now."
                </p>
                <ul class="codes">
                    {move || shown_codes.get().into_iter().map(|c| view! { <li><code>{c}</code></li> }).collect_view()}
                </ul>
                <a class="button primary" href="/">"Continue to the dashboard"</a>
            </section>
        </Show>
        <Show when=move || pending("password_change")>
            <PasswordForm required=true />
        </Show>
        <Show when=move || pending("mfa_enrolment") && !pending("password_change")>
            <TotpSetup shown_codes />
        </Show>
        <Show when=move || session.info.with(|s| matches!(s, Load::Ready(i) if i.pending.is_empty()))>
            <section class="card" aria-labelledby="factor-title">
                <h2 id="factor-title">"Second factor"</h2>
                {move || session.info.with(|s| match s {
                    Load::Ready(i) if i.mfa_enrolled => format!(
                        "An authenticator app is set up. {} recovery codes left.",
                        i.recovery_codes_left
                    ),
                    _ => "No authenticator app is set up.".to_owned(),
                })}
            </section>
            <PasswordForm required=false />
            <Sessions />
        </Show>
    }
}

#[component]
fn PasswordForm(required: bool) -> impl IntoView {
    let api = use_api();
    let session = use_session();
    let current = RwSignal::new(String::new());
    let new = RwSignal::new(String::new());
    let repeat = RwSignal::new(String::new());
    let result = RwSignal::new(None::<Result<(), ApiError>>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if new.get_untracked() != repeat.get_untracked() {
            result.set(Some(Err(ApiError::local("The two new passwords differ."))));
            return;
        }
        let body = PasswordChange {
            current_password: current.get_untracked(),
            new_password: new.get_untracked(),
        };
        crate::api::spawn(async move {
            match api.post::<_, SessionInfo>("/api/v1/auth/password", &body).await {
                Ok(info) => {
                    for s in [current, new, repeat] {
                        s.set(String::new());
                    }
                    session.set(api, info);
                    result.set(Some(Ok(())));
                }
                Err(e) => result.set(Some(Err(e))),
            }
        });
    };
    view! {
        <section class="card" aria-labelledby="password-title">
            <h2 id="password-title">{if required { "Choose your password" } else { "Change your password" }}</h2>
            {required.then(|| view! { <p>"An administrator set your password; replace it with one only you know."</p> })}
            <form class="stacked" on:submit=submit>
                <label for="current-password">"Current password"</label>
                <input id="current-password" type="password" autocomplete="current-password" required bind:value=current />
                <label for="new-password">"New password"</label>
                <input id="new-password" type="password" autocomplete="new-password" required minlength="12" aria-describedby="password-help" bind:value=new />
                <p id="password-help" class="help">"At least 12 characters and hard to guess: a few unrelated words work well."</p>
                <label for="repeat-password">"New password again"</label>
                <input id="repeat-password" type="password" autocomplete="new-password" required bind:value=repeat />
                {move || match result.get() {
                    Some(Ok(())) => view! { <p class="notice success" role="status">"Password changed. Your other sessions were signed out."</p> }.into_any(),
                    Some(Err(e)) => view! { <ErrorNotice error=e /> }.into_any(),
                    None => ().into_any(),
                }}
                <button type="submit" class="button primary">"Change password"</button>
            </form>
        </section>
    }
}

#[component]
fn TotpSetup(shown_codes: RwSignal<Vec<String>>) -> impl IntoView {
    let api = use_api();
    let session = use_session();
    let enrolment = RwSignal::new(Load::<TotpEnrolment>::Loading);
    let code = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move |_| {
        crate::api::spawn(async move {
            enrolment.set(
                match api.post::<_, TotpEnrolment>("/api/v1/auth/totp", &()).await {
                    Ok(e) => Load::Ready(e),
                    Err(e) => Load::Failed(e),
                },
            );
        });
    });
    let confirm = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body = serde_json::json!({ "code": code.get_untracked().replace(' ', "") });
        crate::api::spawn(async move {
            match api
                .post::<_, TotpConfirmed>("/api/v1/auth/totp/confirm", &body)
                .await
            {
                Ok(done) => {
                    shown_codes.set(done.recovery_codes);
                    session.set(api, done.session);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <section class="card" aria-labelledby="totp-title">
            <h2 id="totp-title">"Set up your authenticator app"</h2>
            <p>"Scan the code with an authenticator app (or type the key), then enter the six digits it shows."</p>
            {show_load(enrolment, "the authenticator key", move |e: &TotpEnrolment| {
                let secret = e.secret.clone();
                view! {
                    <div class="qr" role="img" aria-label="QR code of the authenticator key" inner_html=e.qr_svg.clone()></div>
                    <p>"Key: " <code id="totp-secret">{secret}</code></p>
                }
            })}
            <form class="stacked" on:submit=confirm>
                <label for="totp-code">"Code from the app"</label>
                <input id="totp-code" inputmode="numeric" autocomplete="one-time-code" required bind:value=code />
                {move || error.get().map(|e| view! { <ErrorNotice error=e /> })}
                <button type="submit" class="button primary">"Confirm"</button>
            </form>
        </section>
    }
}

#[component]
fn Sessions() -> impl IntoView {
    let api = use_api();
    let reload = RwSignal::new(0u64);
    let sessions = load::<Vec<Value>>(|| Some("/api/v1/auth/sessions".to_owned()), reload);
    let revoke = move |id: String| {
        crate::api::spawn(async move {
            let _ = api.delete::<Value>(&format!("/api/v1/auth/sessions/{id}")).await;
            reload.update(|n| *n += 1);
        });
    };
    view! {
        <section class="card" aria-labelledby="sessions-title">
            <h2 id="sessions-title">"Your sessions"</h2>
            {show_load(sessions, "sessions", move |list: &Vec<Value>| {
                let rows = list.clone();
                view! {
                    <table class="table">
                        <thead><tr><th scope="col">"Signed in"</th><th scope="col">"From"</th><th scope="col">"Browser"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr></thead>
                        <tbody>
                            {rows.into_iter().map(|s| {
                                let id = field(&s, "id");
                                let current = s.get("current").and_then(Value::as_bool) == Some(true);
                                view! {
                                    <tr>
                                        <td>{when_field(&s, "created_at")}</td>
                                        <td>{field(&s, "source")}</td>
                                        <td>{field(&s, "user_agent")}</td>
                                        <td>
                                            {if current {
                                                view! { <span class="muted">"This session"</span> }.into_any()
                                            } else {
                                                let id = id.clone();
                                                view! { <button type="button" class="button subtle" on:click=move |_| revoke(id.clone())>"Sign out"</button> }.into_any()
                                            }}
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }
            })}
        </section>
    }
}
