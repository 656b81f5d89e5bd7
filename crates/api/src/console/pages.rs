//! The console's HTML. maud escapes every interpolated value, so whatever a tenant or an
//! admin stored (a display name such as `<img src=x onerror=alert(1)>`) renders as text. No
//! inline script or style: behaviour is in `console.js`, found by `data-*` attributes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use tenant_registry::model::{ApiKey, Tenant};

use super::assets;
use super::data::{
    openai_isolation, search_isolation, OverviewView, TenantsView, UpstreamsView, PAGE_SIZE,
};
use super::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Tenants,
    Upstreams,
    None,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // No favicon: the browser would ask /favicon.ico, a tenant route.
            link rel="icon" href="data:,";
            title { (title) " · Bulkhead console" }
            link rel="stylesheet" href=(assets::url("uPlot.min.css"));
            link rel="stylesheet" href=(assets::url("console.css"));
            script src=(assets::url("uPlot.iife.min.js")) defer {}
            script src=(assets::url("console.js")) defer {}
        }
    }
}

/// A page of the signed-in console.
pub fn page(session: &Session, title: &str, nav: Nav, body: Markup) -> Markup {
    let link = |href: &str, label: &str, this: Nav| {
        html! {
            li {
                @if nav == this {
                    a href=(href) aria-current="page" { (label) }
                } @else {
                    a href=(href) { (label) }
                }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "Bulkhead" }
                    nav aria-label="Console" {
                        ul {
                            (link("/console", "Overview", Nav::Overview))
                            (link("/console/tenants", "Tenants", Nav::Tenants))
                            (link("/console/upstreams", "Upstreams", Nav::Upstreams))
                        }
                    }
                    form method="post" action="/console/logout" class="signout" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" data-csrf=(session.csrf) {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main id="main" class="login" {
                    h1 { "Bulkhead console" }
                    form method="post" action="/console/login" {
                        @if let Some(error) = error {
                            p role="alert" class="error" id="login-error" { (error) }
                        }
                        label for="token" { "Admin token" }
                        input id="token" name="token" type="password" autocomplete="current-password" required
                            aria-describedby=[error.map(|_| "login-error")];
                        button type="submit" { "Sign in" }
                    }
                    p class="hint" { "The gateway's admin token (BULKHEAD_ADMIN_TOKEN). Tenant keys and tokens do not open the console." }
                }
            }
        }
    }
}

/// A refusal in HTML (no session, a missing CSRF token).
pub fn refused(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Refused"))
            body { main id="main" { h1 { "Refused" } p role="alert" { (message) } p { a href="/console/login" { "Sign in" } } } }
        }
    };
    (status, body).into_response()
}

pub fn not_found() -> Markup {
    html! { p { "Nothing here. " a href="/console/tenants" { "Back to the tenants" } } }
}

pub fn unavailable() -> Markup {
    html! { p role="alert" { "The store is unavailable; try again shortly." } }
}

fn number(n: impl Into<i128>) -> String {
    let n: i128 = n.into();
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

fn limit(v: Option<u64>) -> String {
    v.map_or("unlimited".to_owned(), number)
}

/// A link to the tenants page with `query` changed.
fn tenants_href(view: &TenantsView, page: usize) -> String {
    let q = &view.query;
    let mut href = format!("/console/tenants?page={page}");
    for (name, value) in [
        ("q", &q.q),
        ("status", &q.status),
        ("placement", &q.placement),
    ] {
        if !value.is_empty() {
            href.push_str(&format!("&{name}={}", urlencode(value)));
        }
    }
    href
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const PLACEMENTS: &[(&str, &str)] = &[
    ("openai:shared", "OpenAI: shared pool"),
    ("openai:dedicated_deployment", "OpenAI: own deployment"),
    ("openai:dedicated_resource", "OpenAI: own resource"),
    ("openai:tenant_provided", "OpenAI: tenant's resource"),
    ("openai:none", "OpenAI: none"),
    ("search:shared_index", "Search: shared index"),
    ("search:dedicated_index", "Search: own index"),
    ("search:dedicated_service", "Search: own service"),
    ("search:none", "Search: none"),
];

pub fn tenants(view: &TenantsView) -> Markup {
    let q = &view.query;
    html! {
        form method="get" action="/console/tenants" class="filters" role="search" aria-label="Filter tenants" {
            label for="q" { "Search slug or name" }
            input id="q" name="q" type="search" value=(q.q);
            label for="status" { "Status" }
            select id="status" name="status" {
                option value="" selected[q.status.is_empty()] { "Any" }
                @for s in ["active", "suspended", "offboarding"] {
                    option value=(s) selected[q.status == s] { (s) }
                }
            }
            label for="placement" { "Placement" }
            select id="placement" name="placement" {
                option value="" selected[q.placement.is_empty()] { "Any" }
                @for (value, label) in PLACEMENTS {
                    option value=(value) selected[q.placement == *value] { (label) }
                }
            }
            button type="submit" { "Filter" }
        }
        p id="tenant-count" aria-live="polite" {
            (number(view.matched as u64)) " tenants"
            @if view.matched > PAGE_SIZE { " · page " (view.page) " of " (view.pages) }
        }
        @if view.usage_unavailable {
            p role="alert" { "The usage store did not answer: this month's figures are missing." }
        }
        div class="scroll" {
            table class="sortable" id="tenants" {
                caption class="visually-hidden" { "Tenants, sorted by slug" }
                thead { tr {
                    th scope="col" { "Slug" } th scope="col" { "Name" } th scope="col" { "Status" }
                    th scope="col" { "OpenAI" } th scope="col" { "Search" }
                    th scope="col" class="num" { "Calls this month" } th scope="col" class="num" { "Tokens this month" }
                    th scope="col" class="num" { "Cost" }
                } }
                tbody {
                    @for row in &view.rows {
                        tr {
                            td { a href={ "/console/tenants/" (row.tenant.slug.as_str()) } { (row.tenant.slug.as_str()) } }
                            td { (row.tenant.display_name) }
                            td { span class={ "status " (row.tenant.status.as_str()) } { (row.tenant.status.as_str()) } }
                            td { (openai_isolation(&row.tenant)) }
                            td { (search_isolation(&row.tenant)) }
                            td class="num" data-value=(row.month.map_or(0, |m| m.requests)) { (number(row.month.map_or(0, |m| m.requests))) }
                            td class="num" data-value=(row.month.map_or(0, |m| m.tokens)) { (number(row.month.map_or(0, |m| m.tokens))) }
                            td class="num" { span title="No price table yet" { "—" } }
                        }
                    }
                }
            }
        }
        nav aria-label="Pages" class="pager" {
            @if view.page > 1 { a href=(tenants_href(view, view.page - 1)) rel="prev" { "Previous" } }
            @if view.page < view.pages { a href=(tenants_href(view, view.page + 1)) rel="next" { "Next" } }
        }
        section aria-labelledby="onboard-h" {
            h2 id="onboard-h" { "Onboard a tenant" }
            form id="onboard" data-form="onboard" {
                label for="n-slug" { "Slug" }
                input id="n-slug" name="slug" required autocomplete="off";
                label for="n-name" { "Display name" }
                input id="n-name" name="display_name" required;
                label for="n-openai" { "OpenAI placement" }
                select id="n-openai" name="openai" {
                    option value="shared" { "Shared pool" }
                    option value="" { "None" }
                }
                label for="n-search" { "Search placement" }
                select id="n-search" name="search" {
                    option value="" { "None" }
                    @for service in &view.services {
                        option value=(service) { "Shared index on " (service) }
                    }
                }
                button type="submit" { "Onboard" }
                p class="result" role="status" aria-live="polite" {}
            }
        }
    }
}

fn json_pre(value: &impl serde::Serialize) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre { (text) } }
}

pub fn tenant(t: &Tenant, keys: Option<&[ApiKey]>) -> Markup {
    let slug = t.slug.as_str();
    let api = format!("/admin/v1/tenants/{slug}");
    html! {
        div class="tenant" data-slug=(slug) {
            section aria-labelledby="summary-h" {
                h2 id="summary-h" { "Summary" }
                dl class="summary" {
                    dt { "Display name" } dd id="display-name" { (t.display_name) }
                    dt { "Status" } dd { span class={ "status " (t.status.as_str()) } { (t.status.as_str()) } }
                    dt { "Data zone" } dd { (t.data_zone.as_ref().map_or("none", |z| z.as_str())) }
                    dt { "Created" } dd { (t.created_at.format("%Y-%m-%d %H:%M UTC")) }
                }
                div class="placements" {
                    div { h3 { "OpenAI placement" } (json_pre(&t.openai)) }
                    div { h3 { "Search placement" } (json_pre(&t.search)) }
                }
                div class="actions" {
                    @if t.status.as_str() == "active" {
                        button type="button" data-confirm="suspend" { "Suspend" }
                    } @else if t.status.as_str() == "suspended" {
                        button type="button" data-confirm="reactivate" { "Reactivate" }
                    }
                    button type="button" class="danger" data-confirm="offboard" { "Offboard" }
                }
                dialog id="confirm" aria-labelledby="confirm-h" {
                    form method="dialog" data-form="confirm" {
                        h2 id="confirm-h" { "Confirm" }
                        p id="confirm-text" {}
                        label for="confirm-slug" { "Type the tenant's slug to confirm" }
                        input id="confirm-slug" name="slug" autocomplete="off";
                        div class="row" {
                            button type="submit" value="yes" { "Confirm" }
                            button type="button" data-close { "Cancel" }
                        }
                        p class="result" role="alert" {}
                    }
                }
            }
            section aria-labelledby="limits-h" {
                h2 id="limits-h" { "Limits" }
                form id="limits" data-form="limits" data-api=(api) {
                    (limit_inputs("l", &t.limits))
                    button type="submit" { "Save limits" }
                    p class="result" role="status" aria-live="polite" {}
                }
            }
            section aria-labelledby="keys-h" {
                h2 id="keys-h" { "API keys" }
                @match keys {
                    None => { p role="alert" { "The store did not answer; keys are not shown." } }
                    Some(keys) => {
                        div class="scroll" {
                            table id="keys" class="sortable" {
                                caption class="visually-hidden" { "API keys" }
                                thead { tr {
                                    th scope="col" { "Name" } th scope="col" { "Hint" } th scope="col" { "Scope" }
                                    th scope="col" { "Limits" } th scope="col" { "Created" } th scope="col" { "State" }
                                    th scope="col" { span class="visually-hidden" { "Actions" } }
                                } }
                                tbody {
                                    @for k in keys {
                                        tr data-key=(k.id) {
                                            td { (k.name) }
                                            td { code { (k.hint) } }
                                            td { (k.scope.as_str()) }
                                            td { (limit(k.limits.tokens_per_minute)) " tpm, " (limit(k.limits.requests_per_minute)) " rpm, " (limit(k.limits.monthly_tokens)) " a month" @if let Some(budget) = k.limits.monthly_budget { ", budget " (budget) " a month" } }
                                            td { (k.created_at.format("%Y-%m-%d %H:%M")) }
                                            td { @if k.revoked_at.is_some() { "revoked" } @else { "live" } }
                                            td { @if k.revoked_at.is_none() {
                                                div class="row" {
                                                    button type="button" data-key-limits=(k.id)
                                                        data-tpm=[k.limits.tokens_per_minute] data-rpm=[k.limits.requests_per_minute] data-monthly=[k.limits.monthly_tokens]
                                                        aria-label={ "Limits of key " (k.name) } { "Limits" }
                                                    button type="button" class="danger" data-revoke=(k.id) aria-label={ "Revoke key " (k.name) } { "Revoke" }
                                                }
                                            } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form id="new-key" data-form="key" data-api={ (api) "/keys" } {
                    h3 { "Create a key" }
                    label for="k-name" { "Name" }
                    input id="k-name" name="name" required;
                    label for="k-scope" { "Scope" }
                    select id="k-scope" name="scope" {
                        option value="read-write" { "read-write" }
                        option value="read" { "read" }
                    }
                    (limit_inputs("k", &Default::default()))
                    button type="submit" { "Create key" }
                    p class="result" role="status" aria-live="polite" {}
                }
                dialog id="key-limits" aria-labelledby="key-limits-h" {
                    form data-form="key-limits" {
                        h2 id="key-limits-h" { "Limits of this key" }
                        p class="hint" { "On top of the tenant's. Empty is unlimited." }
                        (limit_inputs("kl", &Default::default()))
                        div class="row" {
                            button type="submit" { "Save key limits" }
                            button type="button" data-close { "Cancel" }
                        }
                        p class="result" role="status" aria-live="polite" {}
                    }
                }
                dialog id="secret" aria-labelledby="secret-h" {
                    h2 id="secret-h" { "The new key" }
                    p { "Copy it now: it is shown once and never again." }
                    input id="secret-value" readonly aria-label="The new key";
                    div class="row" {
                        button type="button" data-copy="secret-value" { "Copy" }
                        button type="button" data-close data-reload { "Done" }
                    }
                    p class="result" role="status" aria-live="polite" {}
                }
            }
            section aria-labelledby="usage-h" data-usage=(api) {
                h2 id="usage-h" { "Usage" }
                div class="filters" {
                    label for="u-range" { "Period" }
                    select id="u-range" {
                        option value="day" { "Last 30 days, by day" }
                        option value="hour" { "Last 30 days, by hour" }
                    }
                    label for="u-group" { "By" }
                    select id="u-group" {
                        option value="" { "Total" }
                        option value="model" { "Model" }
                        option value="key" { "Key" }
                    }
                    label for="u-metric" { "Show" }
                    select id="u-metric" {
                        option value="requests" { "Calls" }
                        option value="total_tokens" { "Tokens" }
                        option value="errors" { "Errors" }
                    }
                    a id="csv" href={ "/console/tenants/" (slug) "/usage.csv?granularity=day" } download { "Download chargeback CSV (this month)" }
                }
                figure {
                    div class="chart" id="usage-chart" role="img" aria-label="Usage chart; the same figures are in the table below" {}
                    figcaption id="usage-caption" {}
                }
                details {
                    summary { "Figures as a table" }
                    div class="scroll" { table id="usage-table" class="sortable" { caption class="visually-hidden" { "Usage figures" } } }
                }
                p class="result" role="status" aria-live="polite" {}
            }
            section aria-labelledby="ops-h" data-operations={ "/admin/v1/operations?tenant=" (slug) "&limit=20" } {
                h2 id="ops-h" { "Operations" }
                div class="scroll" {
                    table id="operations" {
                        caption class="visually-hidden" { "Operations on this tenant, newest first" }
                        thead { tr { th scope="col" { "Kind" } th scope="col" { "Status" } th scope="col" { "Progress" } th scope="col" { "Created" } } }
                        tbody {}
                    }
                }
                p class="result" role="status" aria-live="polite" {}
            }
        }
    }
}

fn limit_inputs(prefix: &str, limits: &tenant_registry::model::Limits) -> Markup {
    let field = |name: &str, label: &str, value: Option<u64>| {
        let id = format!("{prefix}-{name}");
        html! {
            label for=(id) { (label) }
            input id=(id) name=(name) type="number" min="0" step="1" inputmode="numeric"
                placeholder="unlimited" value=[value];
        }
    };
    html! {
        div class="limits" {
            (field("tokens_per_minute", "Tokens per minute", limits.tokens_per_minute))
            (field("requests_per_minute", "Requests per minute", limits.requests_per_minute))
            (field("monthly_tokens", "Monthly tokens", limits.monthly_tokens))
        }
    }
}

pub fn upstreams(view: &UpstreamsView) -> Markup {
    html! {
        p class="hint" { "Breakers, cooldowns and recent outcomes are this replica's view of the members it has called (last 5 minutes)." }
        section aria-labelledby="members-h" {
            h2 id="members-h" { "Deployments" }
            div class="scroll" {
                table id="members" class="sortable" {
                    caption class="visually-hidden" { "Deployments and their health" }
                    thead { tr {
                        th scope="col" { "Deployment" } th scope="col" { "Model" } th scope="col" { "Type" } th scope="col" { "Region" }
                        th scope="col" { "Data zone" } th scope="col" { "Owner" } th scope="col" { "Breaker" }
                        th scope="col" class="num" { "Cooldown (s)" } th scope="col" class="num" { "Remaining tokens" }
                        th scope="col" class="num" { "Recent error rate" }
                    } }
                    tbody {
                        @for m in &view.members {
                            tr {
                                td { (m.key) } td { (m.model) } td { (m.deployment_type) } td { (m.region) } td { (m.data_zone) } td { (m.owner) }
                                td { span class={ "breaker " (m.breaker) } { (m.breaker) } }
                                td class="num" { (m.cooldown.map_or("-".to_owned(), |c| format!("{:.1}", c.as_secs_f64()))) }
                                td class="num" { (m.remaining_tokens.map_or("-".to_owned(), number)) }
                                td class="num" { @match m.recent {
                                    Some((ok, failed)) => { (format!("{:.1}%", 100.0 * failed as f64 / (ok + failed) as f64)) " of " (ok + failed) }
                                    None => { "-" }
                                } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="pools-h" {
            h2 id="pools-h" { "Shared pools" }
            @if view.pools.is_empty() { p { "None." } }
            dl {
                @for (alias, members) in &view.pools {
                    dt { (alias) }
                    dd { ul { @for m in members { li { (m) } } } }
                }
            }
        }
        section aria-labelledby="resources-h" {
            h2 id="resources-h" { "OpenAI resources" }
            (rows_table("resources", &view.resources))
        }
        section aria-labelledby="services-h" {
            h2 id="services-h" { "Search services" }
            (rows_table("services", &view.services))
        }
    }
}

fn rows_table(id: &str, rows: &[super::data::UpstreamRow]) -> Markup {
    html! {
        div class="scroll" {
            table id=(id) class="sortable" {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Region" } th scope="col" { "Data zone" }
                    th scope="col" { "Authentication" } th scope="col" { "Owner" }
                } }
                tbody {
                    @for r in rows {
                        tr { td { (r.name) } td { (r.region) } td { (r.data_zone) } td { (r.auth) } td { (r.owner) } }
                    }
                }
            }
        }
    }
}

pub fn overview(view: &OverviewView) -> Markup {
    let fleet = &view.fleet;
    let xs: Vec<i64> = fleet.minutes.iter().map(|m| m.minute * 60).collect();
    let calls: Vec<i64> = fleet.minutes.iter().map(|m| m.requests).collect();
    let tokens: Vec<i64> = fleet.minutes.iter().map(|m| m.tokens).collect();
    let series =
        serde_json::json!({"x": xs, "series": {"Calls": calls, "Tokens": tokens}}).to_string();
    let q = &view.quota;
    let refusals = q.refused_rate_limited
        + q.refused_budget_exhausted
        + q.refused_exceeds_limit
        + q.refused_unavailable;
    html! {
        section aria-labelledby="health-h" {
            h2 id="health-h" { "Health" }
            dl class="tiles" {
                div { dt { "Store" } dd { (view.store) ": " @if view.store_ok { "ok" } @else { strong { "unreachable" } } } }
                div { dt { "Replica" } dd { @if view.draining { "draining" } @else { "serving" } } }
                div { dt { "Ledger lag" } dd { (view.ledger.lag.map_or("none".to_owned(), |l| format!("{} ms", l.as_millis()))) } }
                div { dt { "Ledger buffered" } dd { (number(view.ledger.buffered())) } }
                div { dt { "Ledger store" } dd { @if view.ledger.store_up { "up" } @else { strong { "down (spilling)" } } } }
                div { dt { "Tenants" } dd { (number(view.tenants as u64)) " (" (number(view.active as u64)) " active)" } }
                div { dt { "API keys" } dd { (number(view.keys as u64)) } }
                div { dt { "Quota refusals" } dd { (number(refusals)) span class="hint" { " since this replica started" } } }
            }
        }
        section aria-labelledby="traffic-h" {
            h2 id="traffic-h" { "Calls and tokens per minute, last " (super::data::RECENT_MINUTES) " minutes, all replicas" }
            @if fleet.unavailable { p role="alert" { "The usage store did not answer." } }
            figure {
                div class="chart" id="fleet-chart" data-series=(series) role="img" aria-label="Calls and tokens per minute; the same figures are in the table below" {}
            }
            details {
                summary { "Figures as a table" }
                table class="sortable" {
                    thead { tr { th scope="col" { "Minute (UTC)" } th scope="col" class="num" { "Calls" } th scope="col" class="num" { "Tokens" } th scope="col" class="num" { "Errors" } } }
                    tbody {
                        @for m in &fleet.minutes {
                            tr {
                                td { (chrono::DateTime::from_timestamp(m.minute * 60, 0).map_or(String::new(), |t| t.format("%H:%M").to_string())) }
                                td class="num" { (number(m.requests)) } td class="num" { (number(m.tokens)) } td class="num" { (number(m.errors)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="top-h" {
            h2 id="top-h" { "Top tenants this month" }
            table class="sortable" id="top" {
                thead { tr { th scope="col" { "Tenant" } th scope="col" class="num" { "Calls" } th scope="col" class="num" { "Tokens" } th scope="col" class="num" { "Errors" } } }
                tbody {
                    @for (slug, t) in &fleet.top {
                        tr {
                            td { @match slug {
                                Some(slug) => { a href={ "/console/tenants/" (slug) } { (slug) } }
                                None => { "(offboarded " (t.tenant_id) ")" }
                            } }
                            td class="num" { (number(t.requests)) } td class="num" { (number(t.tokens)) } td class="num" { (number(t.errors)) }
                        }
                    }
                }
            }
        }
    }
}
