//! Citadel web console: a Leptos 0.8 application that the server renders
//! (feature `ssr`) and the browser hydrates (feature `hydrate`, built for
//! `wasm32-unknown-unknown` by `installer/build-ui.sh`).
//!
//! The server mounts [`App`] inside [`shell`]; the browser entry point is
//! [`hydrate`]. After hydration the client marks `<body data-hydrated="true">`,
//! which end-to-end tests wait for. The server never renders that attribute.

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::{
    components::{A, Route, Router, Routes},
    path,
};

mod icons;
mod pages;

use pages::{Dashboard, Devices, Enrollment, NotFound, Settings};

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

/// The console application: top bar, main navigation and routed pages.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Navigation is expanded by default; the toggle in the top bar collapses it.
    let (nav_open, set_nav_open) = signal(true);

    view! {
        <Title formatter=|page: String| format!("{page} · {PRODUCT_NAME}") />
        <Router>
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
                        title=move || {
                            if nav_open.get() { "Hide navigation" } else { "Show navigation" }
                        }
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
                            <li>
                                <A href="/enrollment">
                                    <icons::Enroll />
                                    <span>"Enrollment"</span>
                                </A>
                            </li>
                            <li>
                                <A href="/settings">
                                    <icons::Settings />
                                    <span>"Settings"</span>
                                </A>
                            </li>
                        </ul>
                    </nav>
                    <main id="main" class="content" tabindex="-1">
                        <Routes fallback=NotFound>
                            <Route path=path!("/") view=Dashboard />
                            <Route path=path!("/devices") view=Devices />
                            <Route path=path!("/enrollment") view=Enrollment />
                            <Route path=path!("/settings") view=Settings />
                        </Routes>
                    </main>
                </div>
            </div>
        </Router>
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
    fn dashboard_renders_shell_and_navigation() {
        let html = render("/");
        assert!(html.contains(r#"<nav id="main-nav" aria-label="Main""#), "{html}");
        assert!(html.contains("Enrolled devices"));
        assert!(html.contains("/pkg/citadel.css"));
        assert!(html.contains("/pkg/citadel.js"));
        assert!(html.contains("/pkg/citadel_bg.wasm"));
        assert!(html.contains(r#"aria-expanded="true""#));
        assert!(html.contains(r#"href="/" aria-current="page""#), "{html}");
        assert!(!html.contains(HYDRATED_ATTR));
    }

    #[test]
    fn placeholder_pages_and_fallback_render() {
        let html = render("/devices");
        assert!(html.contains("No devices yet"));
        assert!(html.contains(r#"href="/devices" aria-current="page""#));
        assert!(!html.contains(r#"href="/" aria-current="page""#));
        assert!(render("/enrollment").contains("<h1"));
        assert!(render("/settings").contains("<h1"));
        assert!(render("/no/such/page").contains("Page not found"));
    }
}
