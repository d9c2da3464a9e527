//! Who is signed in to the console, what they may do, and what happens when the session ends.

use leptos::prelude::*;
use leptos_router::NavigateOptions;
use leptos_router::hooks::{use_location, use_navigate};
use serde::Deserialize;

use crate::api::{Api, ApiError, Load};

/// `GET /api/v1/auth/session`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionInfo {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub permissions: Vec<String>,
    pub csrf_token: String,
    pub expires_at: String,
    pub fresh_until: String,
    /// `mfa_enrolment`, `password_change`: steps before the session grants anything.
    pub pending: Vec<String>,
    pub mfa_enrolled: bool,
    pub recovery_codes_left: usize,
}

impl SessionInfo {
    pub fn can(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }
}

/// The session as the app knows it.
#[derive(Clone, Copy)]
pub struct Session {
    pub info: RwSignal<Load<SessionInfo>>,
}

impl Session {
    /// Whether the signed-in user holds `permission` (false while loading).
    pub fn can(&self, permission: &str) -> bool {
        self.info
            .with(|s| matches!(s, Load::Ready(i) if i.can(permission)))
    }

    /// The signed-in user's name (None while loading).
    pub fn username(&self) -> Option<String> {
        self.info.with(|s| match s {
            Load::Ready(i) => Some(i.username.clone()),
            _ => None,
        })
    }

    pub fn set(&self, api: Api, info: SessionInfo) {
        api.set_csrf(Some(info.csrf_token.clone()));
        self.info.set(Load::Ready(info));
    }

    /// Asks the appliance again (after sign-in, a password change, MFA set-up).
    pub fn refresh(&self, api: Api) {
        let info = self.info;
        crate::api::spawn(async move {
            match api.get::<SessionInfo>("/api/v1/auth/session").await {
                Ok(s) => {
                    api.set_csrf(Some(s.csrf_token.clone()));
                    info.set(Load::Ready(s));
                }
                Err(e) => info.set(Load::Failed(e)),
            }
        });
    }
}

pub fn use_session() -> Session {
    use_context::<Session>().unwrap_or(Session {
        info: RwSignal::new(Load::Loading),
    })
}

/// Provides the session and, in the browser, loads it; sends the user to `/login` when the
/// appliance says the session is gone (never signed in, expired, revoked).
pub fn provide_session(api: Api) -> Session {
    let session = Session {
        info: RwSignal::new(Load::Loading),
    };
    provide_context(session);
    Effect::new(move |_| session.refresh(api));
    // A 401 on any call: the session ended under us.
    Effect::new(move |_| {
        if api.session_ended.get() {
            session.info.set(Load::Failed(ApiError {
                status: 401,
                code: "unauthorized".into(),
                message: "session ended".into(),
            }));
        }
    });
    session
}

/// In admin pages: to `/login?next=…` once the session is known to be gone, to `/account`
/// while set-up steps are pending.
#[component]
pub fn RequireSession(children: ChildrenFn) -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let location = use_location();
    // Tracks the session only: a navigation re-running this would chain redirects.
    Effect::new(move |_| {
        let here = location.pathname.get_untracked();
        let query = location.search.get_untracked();
        if here == "/login" {
            return;
        }
        let target = match &*session.info.read() {
            Load::Failed(e) if e.status == 401 => {
                let next = if query.is_empty() {
                    here.clone()
                } else {
                    format!("{here}?{query}")
                };
                Some(format!("/login?expired=1&next={}", crate::api::encode(&next)))
            }
            Load::Ready(info) if !info.pending.is_empty() && here != "/account" => {
                Some("/account".to_owned())
            }
            _ => None,
        };
        if let Some(target) = target {
            navigate(
                &target,
                NavigateOptions {
                    replace: true,
                    ..NavigateOptions::default()
                },
            );
        }
    });
    // Only a change of kind re-renders the page: a refreshed session (new CSRF token, a
    // re-authentication) must not rebuild it and lose what is on screen.
    let ready = Memo::new(move |_| match &*session.info.read() {
        Load::Ready(_) => Some(None),
        Load::Failed(e) if e.status != 401 => Some(Some(e.to_string())),
        _ => None,
    });
    move || match ready.get() {
        Some(None) => children().into_any(),
        Some(Some(problem)) => view! {
            <div class="notice error" role="alert">
                <p>"The console could not reach the appliance: " {problem}</p>
            </div>
        }
        .into_any(),
        None => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
    }
}
