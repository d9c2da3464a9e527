//! Citadel web console: a Leptos 0.8 application that the server renders
//! (feature `ssr`) and the browser hydrates (feature `hydrate`, built for
//! `wasm32-unknown-unknown` by `installer/build-ui.sh`).
//!
//! The server mounts [`App`] inside [`shell`]; the browser entry point is
//! [`hydrate`]. After hydration the client marks `<body data-hydrated="true">`,
//! which end-to-end tests wait for. The server never renders that attribute.
//!
//! Data comes only from the public JSON API (`api`), after hydration: the server renders
//! every page in its loading state, so nothing an administrator may not see is ever in the
//! HTML, and the console can do nothing a script with the same rights could not.

// Leptos views are deeply nested types; the default limit is too low for the admin frame.
#![recursion_limit = "256"]

// The server's render and the browser's hydration walk the same view tree only if both are
// built with (or both without) Leptos's component erasure; `.cargo/config.toml` sets it.
#[cfg(not(erase_components))]
compile_error!(
    "build with `--cfg erase_components` (set in .cargo/config.toml; a RUSTFLAGS or \
     RUSTDOCFLAGS variable replaces it, so add `--cfg erase_components` there too)"
);

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::{
    components::{A, Outlet, ParentRoute, Route, Router, Routes},
    path,
};

pub mod api;
mod components;
mod icons;
mod pages;
mod session;

use api::{Api, Load};
use session::{RequireSession, provide_session, use_session};

/// HTTP method type of `leptos_router`, re-exported for the server integration
/// (so the server needs no direct `leptos_router` dependency).
#[cfg(feature = "ssr")]
pub use leptos_router::Method as RouteMethod;

/// Product name shown in the top bar and in page titles.
pub const PRODUCT_NAME: &str = "Citadel";

/// Attribute the client sets on `<body>` once hydration has finished.
pub const HYDRATED_ATTR: &str = "data-hydrated";

/// The HTML document the server renders around [`App`].
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light" />
                <link rel="icon" type="image/svg+xml" href="/pkg/favicon.svg" />
                <link rel="stylesheet" href="/pkg/citadel.css" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The console application: the sign-in page, the administrators' pages inside their frame,
/// and the end-user portal.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let api = Api::new();
    provide_context(api);

    view! {
        <Title formatter=|page: String| format!("{page} · {PRODUCT_NAME}") />
        <Router>
            <Routes fallback=pages::NotFound>
                <Route path=path!("/login") view=pages::login::Login />
                <Route path=path!("/setup") view=pages::login::Setup />
                <ParentRoute path=path!("/portal") view=pages::portal::PortalFrame>
                    <Route path=path!("") view=pages::portal::PortalHome />
                    <Route path=path!("/login") view=pages::portal::PortalLogin />
                    <Route path=path!("/privacy") view=pages::portal::PortalPrivacy />
                </ParentRoute>
                <ParentRoute path=path!("") view=AdminOutlet>
                    <Route path=path!("") view=pages::dashboard::Dashboard />
                    <Route path=path!("/account") view=pages::account::Account />
                    <Route path=path!("/devices") view=pages::devices::Devices />
                    <Route path=path!("/devices/:id") view=pages::device::DeviceDetail />
                    <Route path=path!("/commands") view=pages::commands::Commands />
                    <Route path=path!("/enrollment") view=pages::enrollment::Enrollment />
                    <Route path=path!("/settings") view=pages::settings::Settings />
                    <Route path=path!("/settings/administrators") view=pages::settings::Administrators />
                    <Route path=path!("/settings/tokens") view=pages::settings::Tokens />
                    <Route path=path!("/settings/portal-users") view=pages::settings::PortalUsers />
                    <Route path=path!("/audit") view=pages::audit::Audit />
                </ParentRoute>
            </Routes>
        </Router>
    }
}

#[component]
fn AdminOutlet() -> impl IntoView {
    view! {
        <AdminFrame>
            <Outlet />
        </AdminFrame>
    }
}

/// Top bar, navigation and the signed-in area around every administrator page.
#[component]
fn AdminFrame(children: ChildrenFn) -> impl IntoView {
    let api = api::use_api();
    let session = provide_session(api);
    // Navigation is expanded by default; the toggle in the top bar collapses it.
    let (nav_open, set_nav_open) = signal(true);
    let can = move |p: &'static str| session.can(p);

    view! {
        <div class="app" class:nav-collapsed=move || !nav_open.get()>
            <a class="skip-link" href="#main">
                "Skip to main content"
            </a>
            <header class="topbar">
                <button
                    type="button"
                    class="nav-toggle"
                    aria-controls="main-nav"
                    aria-expanded=move || if nav_open.get() { "true" } else { "false" }
                    title=move || if nav_open.get() { "Hide navigation" } else { "Show navigation" }
                    on:click=move |_| set_nav_open.update(|open| *open = !*open)
                >
                    <icons::Menu />
                    <span class="visually-hidden">"Navigation"</span>
                </button>
                <a class="brand" href="/">
                    <icons::Logo />
                    <span class="brand-name">{PRODUCT_NAME}</span>
                    <span class="brand-tag">"Device management"</span>
                </a>
                <UserMenu />
            </header>
            <div class="layout">
                <nav id="main-nav" class="sidenav" aria-label="Main">
                    <ul>
                        <li>
                            <A href="/" exact=true>
                                <icons::Home />
                                <span>"Dashboard"</span>
                            </A>
                        </li>
                        <li>
                            <A href="/devices">
                                <icons::Devices />
                                <span>"Devices"</span>
                            </A>
                        </li>
                        <Show when=move || can("commands.send")>
                            <li>
                                <A href="/commands">
                                    <icons::Commands />
                                    <span>"Commands"</span>
                                </A>
                            </li>
                        </Show>
                        <Show when=move || can("enrollment.manage")>
                            <li>
                                <A href="/enrollment">
                                    <icons::Enroll />
                                    <span>"Enrollment"</span>
                                </A>
                            </li>
                        </Show>
                        <Show when=move || can("audit.read")>
                            <li>
                                <A href="/audit">
                                    <icons::Audit />
                                    <span>"Audit log"</span>
                                </A>
                            </li>
                        </Show>
                        <li>
                            <A href="/settings">
                                <icons::Settings />
                                <span>"Settings"</span>
                            </A>
                        </li>
                    </ul>
                </nav>
                <main id="main" class="content" tabindex="-1">
                    <RequireSession>{children()}</RequireSession>
                </main>
            </div>
        </div>
    }
    // Erased: the frame's full type is deep enough to overflow the compiler's query depth.
    .into_any()
}

/// Who is signed in, and the way out.
#[component]
fn UserMenu() -> impl IntoView {
    let session = use_session();
    let api = api::use_api();
    let sign_out = move |_| {
        crate::api::spawn(async move {
            // Whatever the answer, the session is over for this page.
            let _ = api.post::<_, serde_json::Value>("/api/v1/auth/logout", &()).await;
            api.set_csrf(None);
            api.session_ended.set(true);
        });
    };
    move || match &*session.info.read() {
        Load::Ready(info) => view! {
            <div class="user-menu">
                <a href="/account" class="user-name">
                    {info.display_name.clone()}
                    <span class="user-role">{info.role.replace('_', " ")}</span>
                </a>
                <button type="button" class="button subtle" on:click=sign_out>
                    "Sign out"
                </button>
            </div>
        }
        .into_any(),
        _ => ().into_any(),
    }
}

/// Browser entry point, called by the script that `<HydrationScripts>` emits.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
    // Hydration is synchronous: once `hydrate_body` returns, event handlers and
    // reactive bindings are attached. Tests wait for this marker.
    if let Some(body) = document().body() {
        // Failure to set an attribute on <body> is not actionable here.
        let _ = body.set_attribute(HYDRATED_ATTR, "true");
    }
    components::mark("citadel-hydrated");
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::*;

    fn render(path: &str) -> String {
        let owner = Owner::new();
        owner.with(|| {
            provide_context(leptos_router::location::RequestUrl::new(path));
            let options = LeptosOptions::builder().output_name("citadel").build();
            shell(options).to_html()
        })
    }

    #[test]
    fn admin_pages_render_the_frame_and_their_loading_state() {
        let html = render("/");
        assert!(html.contains(r#"<nav id="main-nav" aria-label="Main""#), "{html}");
        assert!(html.contains("/pkg/citadel.css"));
        assert!(html.contains("/pkg/citadel.js"));
        assert!(html.contains("/pkg/citadel_bg.wasm"));
        assert!(html.contains(r#"aria-expanded="true""#));
        assert!(html.contains(r#"href="/" aria-current="page""#), "{html}");
        assert!(html.contains(r#"role="status""#), "{html}");
        assert!(!html.contains(HYDRATED_ATTR));
        for path in [
            "/devices",
            "/devices/ABC",
            "/audit",
            "/settings",
            "/enrollment",
            "/commands",
        ] {
            let html = render(path);
            assert!(html.contains("Loading"), "{path}: {html}");
            assert!(html.contains(r#"aria-label="Main""#), "{path}");
        }
        assert!(render("/no/such/page").contains("Page not found"));
    }

    #[test]
    fn sign_in_and_portal_pages_render_without_the_admin_frame() {
        let html = render("/login");
        assert!(html.contains(r#"autocomplete="one-time-code""#), "{html}");
        assert!(!html.contains(r#"aria-label="Main""#), "{html}");
        let html = render("/portal/login");
        assert!(html.contains("<form"), "{html}");
        assert!(!html.contains(r#"aria-label="Main""#), "{html}");
    }
}
