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
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n,
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
    }
}
