//! `GET /admin/v1/chargeback?month=YYYY-MM`: what each provisioned (PTU) deployment cost in
//! a month and each tenant's share of it.
//!
//! # The rule
//! A provisioned deployment costs the same whether it is busy or idle, so its cost is not in
//! any call's price (its per-token prices are normally 0): the price table gives it a
//! `monthly_cost`. A month's cost of the deployment is that monthly cost prorated over the
//! month by the time each price was in force (a price from the 16th of a 30-day month counts
//! for 15/30 of it). It is shared among the tenants whose calls it served, by their share of
//! the tokens (prompt plus completion) it served that month, rounded down to the micro-unit;
//! what rounding leaves, and the whole cost of a month nobody used the deployment, is
//! reported as `unallocated` (the platform's own cost). A tenant's bill for the month is its
//! metered cost (the usage API) plus its shares here.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tenant_registry::model::{Deployment, DeploymentType};
use tenant_registry::prices::{Micros, PriceBook};

use crate::error::AdminError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargebackQuery {
    /// `YYYY-MM`; absent: the current month.
    month: Option<String>,
}

/// The first instant of the month `text` names, and of the next.
fn month_bounds(text: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (year, month) = text.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let (year, month): (i32, u32) = (year.parse().ok()?, month.parse().ok()?);
    let start = NaiveDate::from_ymd_opt(year, month, 1)?;
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)?
    };
    Some((
        start.and_hms_opt(0, 0, 0)?.and_utc(),
        next.and_hms_opt(0, 0, 0)?.and_utc(),
    ))
}

/// The month's cost of `deployment`: each monthly cost in force, weighted by the part of
/// `[from, to)` it was in force (micro-units, rounded down).
pub fn prorated(
    prices: &PriceBook,
    deployment: &Deployment,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> u64 {
    let mut edges: Vec<DateTime<Utc>> = prices
        .all()
        .map(|p| p.effective_from)
        .filter(|t| *t > from && *t < to)
        .collect();
    edges.push(from);
    edges.push(to);
    edges.sort();
    edges.dedup();
    let whole = (to - from).num_microseconds().unwrap_or(1).max(1) as u128;
    let mut total: u128 = 0;
    for pair in edges.windows(2) {
        let [start, end] = [pair[0], pair[1]];
        let monthly = prices
            .price_at(deployment, start)
            .and_then(|p| p.monthly_cost)
            .map_or(0, |m| u128::from(m.0));
        let span = (end - start).num_microseconds().unwrap_or(0).max(0) as u128;
        total += monthly * span;
    }
    u64::try_from(total / whole).unwrap_or(u64::MAX)
}

pub async fn chargeback(
    State(state): State<AppState>,
    query: Result<Query<ChargebackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(query) = query?;
    let month = query
        .month
        .unwrap_or_else(|| format!("{:04}-{:02}", Utc::now().year(), Utc::now().month()));
    let Some((from, to)) = month_bounds(&month) else {
        return Err(AdminError::Invalid {
            field: Some("month".into()),
            message: format!("'{month}' is not a month: write YYYY-MM"),
        });
    };
    let snapshot = state.registry.snapshot();
    let catalog = &snapshot.catalog;
    let provisioned: Vec<(String, u64)> = catalog
        .deployments
        .iter()
        .filter(|(_, d)| d.view.deployment_type == DeploymentType::Provisioned)
        .map(|(reference, d)| {
            (
                reference.to_string(),
                prorated(&catalog.prices, &d.view, from, to),
            )
        })
        .filter(|(_, cost)| *cost > 0)
        .collect();
    let members: Vec<String> = provisioned.iter().map(|(m, _)| m.clone()).collect();
    let used = state
        .ledger
        .store()
        .member_tokens(&members, from, to)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "chargeback: the ledger's store failed");
            AdminError::Unavailable("the usage store is unavailable; retry shortly".into())
        })?;
    let mut by_member: BTreeMap<&str, Vec<(uuid::Uuid, u64)>> = BTreeMap::new();
    for row in &used {
        by_member
            .entry(row.member.as_str())
            .or_default()
            .push((row.tenant_id, u64::try_from(row.tokens).unwrap_or(0)));
    }
    let deployments: Vec<Value> = provisioned
        .iter()
        .map(|(member, cost)| {
            let tenants = by_member.get(member.as_str()).cloned().unwrap_or_default();
            let tokens: u128 = tenants.iter().map(|(_, t)| u128::from(*t)).sum();
            let mut allocated: u64 = 0;
            let shares: Vec<Value> = tenants
                .iter()
                .map(|(id, used)| {
                    let share = match tokens {
                        0 => 0,
                        _ => u64::try_from(u128::from(*cost) * u128::from(*used) / tokens)
                            .unwrap_or(0),
                    };
                    allocated += share;
                    let slug = snapshot
                        .tenant(*id)
                        .map_or_else(|| id.to_string(), |t| t.tenant.slug.to_string());
                    json!({"tenant": slug, "tenant_id": id, "tokens": used,
                        "share": Micros(share).to_string()})
                })
                .collect();
            json!({
                "deployment": member,
                "cost": Micros(*cost).to_string(),
                "tokens": tokens as u64,
                "tenants": shares,
                "unallocated": Micros(cost.saturating_sub(allocated)).to_string(),
            })
        })
        .collect();
    Ok(Json(json!({
        "month": month,
        "from": from,
        "to": to,
        "currency": catalog.prices.currency(),
        "deployments": deployments,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_year_dash_month() {
        let (from, to) = month_bounds("2026-12").unwrap_or_default();
        assert_eq!(from.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-01", "2026", "2026-01-01", "x-y"] {
            assert!(month_bounds(bad).is_none(), "{bad}");
        }
    }
}
