//! Sign-in: user name, password and the authenticator's code in one form (the appliance
//! answers the same for any wrong part, so the form does not reveal which one was wrong).

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use serde::Serialize;
use serde_json::Value;

use crate::api::use_api;

#[derive(Serialize)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

/// Only same-site paths are followed after sign-in (no open redirect).
pub fn safe_next(next: Option<String>) -> String {
    match next {
        // Browsers drop tabs and newlines from URLs ("/\t/evil" becomes "//evil"): nothing but
        // a plain local path is followed.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '\\') =>
        {
            n
        }
        _ => "/".to_owned(),
    }
}

#[component]
pub fn Login() -> impl IntoView {
    let api = use_api();
    let query = use_query_map();
    let expired = move || query.read().get("expired").is_some();
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        busy.set(true);
        error.set(None);
        let code_text = code.get_untracked().replace(' ', "");
        let body = LoginRequest {
            username: username.get_untracked(),
            password: password.get_untracked(),
            code: (!code_text.is_empty()).then_some(code_text),
        };
        let next = safe_next(query.read_untracked().get("next"));
        crate::api::spawn(async move {
            match api.post::<_, Value>("/api/v1/auth/login", &body).await {
                Ok(_) => {
                    // A full load: the new session's cookie and CSRF token start clean.
                    let _ = window().location().set_href(&next);
                }
                Err(e) => {
                    password.set(String::new());
                    code.set(String::new());
                    busy.set(false);
                    error.set(Some(match e.status {
                        401 => "The user name, password or code is not right.".to_owned(),
                        _ => e.to_string(),
                    }));
                }
            }
        });
    };

    view! {
        <Title text="Sign in" />
        <main id="main" class="signin">
            <div class="signin-card">
                <p class="signin-brand">{crate::PRODUCT_NAME}</p>
                <h1>"Sign in"</h1>
                <Show when=expired>
                    <p class="notice" role="status">
                        "Your session has ended, or you have not signed in yet. Sign in to continue."
                    </p>
                </Show>
                <form on:submit=submit>
                    <label for="username">"User name"</label>
                    <input
                        id="username"
                        name="username"
                        autocomplete="username"
                        required
                        bind:value=username
                    />
                    <label for="password">"Password"</label>
                    <input
                        id="password"
                        name="password"
                        type="password"
                        autocomplete="current-password"
                        required
                        bind:value=password
                    />
                    <label for="code">"Authentication code"</label>
                    <input
                        id="code"
                        name="code"
                        inputmode="numeric"
                        autocomplete="one-time-code"
                        aria-describedby="code-help"
                        bind:value=code
                    />
                    <p id="code-help" class="help">
                        "The six digits from your authenticator app, or a recovery code. Leave empty only if you have not set one up yet."
                    </p>
                    {move || error.get().map(|e| view! { <p class="notice error" role="alert">{e}</p> })}
                    <button type="submit" class="button primary" disabled=move || busy.get()>
                        {move || if busy.get() { "Signing in…" } else { "Sign in" }}
                    </button>
                </form>
                <p class="muted">
                    <a href="/portal/login">"Looking for your own devices? Use the self-service portal."</a>
                </p>
                <p class="muted">
                    <a href="/setup">"First start? Create the first administrator."</a>
                </p>
            </div>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/devices?x=1".into())), "/devices?x=1");
        assert_eq!(safe_next(Some("//evil.example/".into())), "/");
        assert_eq!(safe_next(Some("/\\evil.example".into())), "/");
        assert_eq!(safe_next(Some("https://evil.example/".into())), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/\t/evil.example".into())), "/");
        assert_eq!(safe_next(Some("/\n/evil.example".into())), "/");
        assert_eq!(safe_next(Some("/a\\b".into())), "/");
    }
}

/// First start: the bootstrap secret `citadel serve` printed creates the first Owner (once).
#[component]
pub fn Setup() -> impl IntoView {
    let api = use_api();
    let secret = RwSignal::new(String::new());
    let username = RwSignal::new(String::new());
    let display = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let repeat = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if password.get_untracked() != repeat.get_untracked() {
            error.set(Some("The two passwords differ.".into()));
            return;
        }
        let body = serde_json::json!({
            "bootstrap_secret": secret.get_untracked().trim(),
            "username": username.get_untracked().trim(),
            "display_name": display.get_untracked().trim(),
            "password": password.get_untracked(),
        });
        crate::api::spawn(async move {
            match api.post::<_, Value>("/api/v1/setup", &body).await {
                // Signed in: next, the authenticator (a full load starts the session clean).
                Ok(_) => {
                    let _ = window().location().set_href("/account");
                }
                Err(e) => error.set(Some(match e.status {
                    401 | 403 | 409 => {
                        "The bootstrap secret is not right, or the first administrator already exists."
                            .to_owned()
                    }
                    _ => e.to_string(),
                })),
            }
        });
    };
    view! {
        <Title text="First start" />
        <main id="main" class="signin">
            <div class="signin-card">
                <p class="signin-brand">{crate::PRODUCT_NAME}</p>
                <h1>"Create the first administrator"</h1>
                <p class="help">"Use the one-time bootstrap secret printed when the appliance first started. It works once."</p>
                <form on:submit=submit>
                    <label for="setup-secret">"Bootstrap secret"</label>
                    <input id="setup-secret" required autocomplete="off" bind:value=secret />
                    <label for="setup-username">"User name"</label>
                    <input id="setup-username" required autocomplete="username" bind:value=username />
                    <label for="setup-display">"Full name"</label>
                    <input id="setup-display" autocomplete="name" bind:value=display />
                    <label for="setup-password">"Password"</label>
                    <input id="setup-password" type="password" required minlength="12" autocomplete="new-password" aria-describedby="setup-password-help" bind:value=password />
                    <p id="setup-password-help" class="help">"At least 12 characters and hard to guess: a few unrelated words work well."</p>
                    <label for="setup-repeat">"Password again"</label>
                    <input id="setup-repeat" type="password" required autocomplete="new-password" bind:value=repeat />
                    {move || error.get().map(|e| view! { <p class="notice error" role="alert">{e}</p> })}
                    <button type="submit" class="button primary">"Create and continue"</button>
                </form>
            </div>
        </main>
    }
}
