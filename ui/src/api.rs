//! The console's only way to the appliance: the public JSON API under `/api/v1`, called from
//! the browser with the session cookie and, on every state-changing request, the session's
//! CSRF token. The server renders pages without data (their loading state); the browser
//! fetches after hydration. A 401 from any call means the session ended: the app is told, and
//! sends the user to the sign-in page.

use leptos::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a call failed, in words an administrator can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status, or 0 when the request never got an answer.
    pub status: u16,
    /// The API's error code (`reauthentication_required`, …), empty when there was none.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn local(message: impl Into<String>) -> Self {
        Self {
            status: 0,
            code: String::new(),
            message: message.into(),
        }
    }

    /// Destructive actions need a sign-in younger than a few minutes.
    pub fn needs_reauthentication(&self) -> bool {
        self.code == "reauthentication_required"
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            0 => write!(f, "{}", self.message),
            401 => f.write_str("Your session has ended. Sign in again."),
            403 => write!(f, "Not allowed: {}", self.message),
            404 => f.write_str("Not found."),
            429 => write!(f, "Too many attempts: {}", self.message),
            _ => write!(f, "{} (HTTP {})", self.message, self.status),
        }
    }
}

/// What a page shows while its data is on the way.
#[derive(Debug, Clone, PartialEq)]
pub enum Load<T> {
    Loading,
    Ready(T),
    Failed(ApiError),
}

/// The handle components use to call the API: carries the CSRF token and reports a session
/// that ended. Cheap to copy into event handlers and tasks.
#[derive(Clone, Copy)]
pub struct Api {
    csrf: RwSignal<Option<String>>,
    /// Set when a call answered 401.
    pub session_ended: RwSignal<bool>,
}

impl Api {
    pub fn new() -> Self {
        Self {
            csrf: RwSignal::new(None),
            session_ended: RwSignal::new(false),
        }
    }

    pub fn set_csrf(&self, token: Option<String>) {
        self.csrf.set(token);
        if self.csrf.with_untracked(Option::is_some) {
            self.session_ended.set(false);
        }
    }

    pub async fn get<T: DeserializeOwned>(self, path: &str) -> Result<T, ApiError> {
        self.call("GET", path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(self, path: &str, body: &B) -> Result<T, ApiError> {
        self.call("POST", path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(self, path: &str, body: &B) -> Result<T, ApiError> {
        self.call("PUT", path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(self, path: &str, body: &B) -> Result<T, ApiError> {
        self.call("PATCH", path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(self, path: &str) -> Result<T, ApiError> {
        self.call("DELETE", path, None::<&()>).await
    }

    /// A POST whose answer is not JSON (a certificate request): the body as text.
    pub async fn post_for_text<B: Serialize>(self, path: &str, body: &B) -> Result<String, ApiError> {
        self.send("POST", path, Some(body)).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let text = self.send(method, path, body).await?;
        // 204 and empty bodies read as JSON null.
        let text = if text.trim().is_empty() { "null" } else { &text };
        serde_json::from_str(text)
            .map_err(|e| ApiError::local(format!("unexpected answer from the appliance: {e}")))
    }

    /// The request with the CSRF token; the answer's body as text. Notices an ended session.
    async fn send<B: Serialize>(
        self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<String, ApiError> {
        let csrf = self.csrf.get_untracked();
        let result = transport::send(method, path, csrf.as_deref(), body).await;
        // A wrong password (re-authentication, password change) is not an ended session.
        if let Err(e) = &result
            && e.status == 401
            && e.code != "invalid_credentials"
            && !path.ends_with("/login")
        {
            self.session_ended.set(true);
        }
        result
    }
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

/// The app's [`Api`] handle.
pub fn use_api() -> Api {
    use_context::<Api>().unwrap_or_default()
}

/// Loads `path` whenever it changes (`None`: nothing to load) and again when `reload` is
/// bumped. Only in the browser: the server renders the loading state. Answers to superseded
/// requests are dropped.
pub fn load<T>(
    path: impl Fn() -> Option<String> + Send + Sync + 'static,
    reload: RwSignal<u64>,
) -> RwSignal<Load<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let api = use_api();
    let state = RwSignal::new(Load::Loading);
    let generation = StoredValue::new(0u64);
    Effect::new(move |_| {
        reload.track();
        let Some(path) = path() else {
            return;
        };
        let mine = generation.get_value() + 1;
        generation.set_value(mine);
        let refreshing = state.with_untracked(|s| matches!(s, Load::Ready(_)));
        if !refreshing {
            state.set(Load::Loading);
        }
        crate::api::spawn(async move {
            let result = api.get::<T>(&path).await;
            // The page may have been left meanwhile: then there is nothing to update.
            if generation.try_get_value() == Some(mine) {
                let _ = state.try_set(match result {
                    Ok(v) => Load::Ready(v),
                    Err(e) => Load::Failed(e),
                });
            }
        });
    });
    state
}

/// Runs a request in the browser under the current owner, cancelled when that owner (the
/// component, the effect) goes away: an answer must not land in a page already left.
pub fn spawn(task: impl std::future::Future<Output = ()> + 'static) {
    leptos::task::spawn_local_scoped_with_cancellation(task);
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `key=value&…` of the non-empty pairs.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    pairs
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(feature = "hydrate")]
mod transport {
    use super::ApiError;
    use gloo_net::http::{Method, RequestBuilder};
    use serde::Serialize;

    pub async fn send<B: Serialize>(
        method: &str,
        path: &str,
        csrf: Option<&str>,
        body: Option<&B>,
    ) -> Result<String, ApiError> {
        let method = match method {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            _ => Method::GET,
        };
        let mut builder = RequestBuilder::new(path)
            .method(method.clone())
            .header("Accept", "application/json");
        if method != Method::GET
            && let Some(token) = csrf
        {
            builder = builder.header("X-CSRF-Token", token);
        }
        let request = match body {
            Some(body) => builder.json(body),
            None => builder.build(),
        }
        .map_err(|e| ApiError::local(e.to_string()))?;
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::local(format!("the appliance did not answer: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            let body = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
            let field = |name: &str| body.get(name).and_then(|e| e.as_str()).map(str::to_owned);
            Err(ApiError {
                status,
                code: field("error").unwrap_or_default(),
                message: field("message").unwrap_or_else(|| text.chars().take(300).collect()),
            })
        }
    }
}

#[cfg(not(feature = "hydrate"))]
mod transport {
    use super::ApiError;
    use serde::Serialize;

    /// The server never calls the API while rendering: pages render their loading state.
    pub async fn send<B: Serialize>(
        _method: &str,
        _path: &str,
        _csrf: Option<&str>,
        _body: Option<&B>,
    ) -> Result<String, ApiError> {
        Err(ApiError::local("not available while rendering on the server"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_and_empty_ones_dropped() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            query_string([
                ("search", "x y".to_owned()),
                ("platform", String::new()),
                ("limit", "50".into())
            ]),
            "search=x%20y&limit=50"
        );
    }
}
