//! Routed pages. All of them are placeholders until the server exposes data.

use leptos::prelude::*;
use leptos_meta::Title;

/// One dashboard tile.
#[component]
fn Card(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <section class="card">
            <h2 class="card-title">{title}</h2>
            {children()}
        </section>
    }
}

/// Text shown where a value will appear once the appliance has data.
#[component]
fn Pending(#[prop(into)] detail: String) -> impl IntoView {
    view! {
        <p class="card-value" aria-hidden="true">
            "—"
        </p>
        <p class="card-note">{detail}</p>
    }
}

#[component]
fn PageHeader(title: &'static str, lead: &'static str) -> impl IntoView {
    view! {
        <Title text=title />
        <header class="page-header">
            <h1>{title}</h1>
            <p class="lead">{lead}</p>
        </header>
    }
}

#[component]
fn EmptyState(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <div class="empty-state">
            <h2>{title}</h2>
            {children()}
        </div>
    }
}

#[component]
pub fn Dashboard() -> impl IntoView {
    view! {
        <PageHeader title="Dashboard" lead="Overview of this Citadel appliance." />
        <div class="cards">
            <Card title="Enrolled devices">
                <Pending detail="Device counts appear once devices enrol." />
            </Card>
            <Card title="Compliance">
                <Pending detail="Compliance status appears once devices enrol and report." />
            </Card>
            <Card title="Push certificate">
                <Pending detail="Certificate details appear once a push certificate is configured." />
            </Card>
            <Card title="Recent activity">
                <Pending detail="Check-ins and commands appear here once devices enrol." />
            </Card>
        </div>
    }
}

#[component]
pub fn Devices() -> impl IntoView {
    view! {
        <PageHeader title="Devices" lead="Managed devices and their state." />
        <EmptyState title="No devices yet">
            <p>"Devices are listed here after they enrol with this appliance."</p>
        </EmptyState>
    }
}

#[component]
pub fn Enrollment() -> impl IntoView {
    view! {
        <PageHeader title="Enrollment" lead="Enrollment profiles and invitations." />
        <EmptyState title="Nothing to show yet">
            <p>"Enrollment profiles will be managed from this page."</p>
        </EmptyState>
    }
}

#[component]
pub fn Settings() -> impl IntoView {
    view! {
        <PageHeader title="Settings" lead="Appliance configuration." />
        <EmptyState title="No settings available yet">
            <p>"Appliance settings will be editable from this page."</p>
        </EmptyState>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <PageHeader title="Page not found" lead="There is no page at this address." />
        <p>
            <a href="/">"Go to the dashboard"</a>
        </p>
    }
}
