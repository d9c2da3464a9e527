//! One module per page (or group of pages) of the console.

use leptos::prelude::*;

use crate::components::PageHeader;

pub mod account;
pub mod audit;
pub mod commands;
pub mod dashboard;
pub mod device;
pub mod devices;
pub mod enrollment;
pub mod login;
pub mod portal;
pub mod settings;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <main id="main" class="content standalone">
            <PageHeader title="Page not found" lead="There is no page at this address." />
            <p>
                <a href="/">"Go to the dashboard"</a>
            </p>
        </main>
    }
}
