//! Usage for chargeback, read from the ledger's hourly rollups:
//! `GET /admin/v1/tenants/{slug}/usage` for admins and `GET /v1/usage` for a tenant's own.
//!
//! Query: `from` and `to` (RFC 3339; default the current UTC month up to now; `to` is
//! exclusive), `granularity=hour|day` (default `day`), `group_by=model|deployment|key`
//! (default none). `Accept: text/csv` gives the rows as CSV. Ranges are bounded (31 days by
//! the hour, 366 by the day) so one query cannot ask the store for millions of rows.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use usage_ledger::{Granularity, GroupBy, UsageRow};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{AdminError, ApiError};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    group_by: Option<String>,
}

/// A validated query.
struct Window {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
    group_by: GroupBy,
}

/// What is wrong with a query: the parameter and a sentence.
type Invalid = (&'static str, String);

impl UsageQuery {
    fn validate(&self, now: DateTime<Utc>) -> Result<Window, Invalid> {
        let time = |name: &'static str, value: &Option<String>| -> Result<_, Invalid> {
            value
                .as_deref()
                .map(|v| {
                    DateTime::parse_from_rfc3339(v)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| (name, format!("'{name}' must be an RFC 3339 time")))
                })
                .transpose()
        };
        let month_start = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .unwrap_or(now);
        let from = time("from", &self.from)?.unwrap_or(month_start);
        let to = time("to", &self.to)?.unwrap_or(now);
        if to <= from {
            return Err(("to", "'to' must be after 'from'".into()));
        }
        let granularity = match self.granularity.as_deref() {
            None | Some("day") => Granularity::Day,
            Some("hour") => Granularity::Hour,
            Some(_) => {
                return Err((
                    "granularity",
                    "'granularity' must be 'hour' or 'day'".into(),
                ))
            }
        };
        let group_by = match self.group_by.as_deref() {
            None | Some("") => GroupBy::None,
            Some("model") => GroupBy::Model,
            Some("deployment") => GroupBy::Deployment,
            Some("key") => GroupBy::Key,
            Some(_) => {
                return Err((
                    "group_by",
                    "'group_by' must be 'model', 'deployment' or 'key'".into(),
                ))
            }
        };
        let max_days = match granularity {
            Granularity::Hour => 31,
            Granularity::Day => 366,
        };
        if to - from > chrono::Duration::days(max_days) {
            return Err((
                "to",
                format!(
                    "a range by the {} may span at most {max_days} days",
                    granularity_name(granularity)
                ),
            ));
        }
        Ok(Window {
            from,
            to,
            granularity,
            group_by,
        })
    }
}

fn granularity_name(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Hour => "hour",
        Granularity::Day => "day",
    }
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

fn row_json(row: &UsageRow) -> Value {
    json!({
        "period_start": row.period_start,
        "kind": row.kind.map(|k| k.as_str()),
        "group": row.group,
        "requests": row.requests,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cached_tokens": row.cached_tokens,
        "total_tokens": row.total_tokens,
        "documents": row.documents,
        "errors": row.errors,
        "cost": usage_ledger::pico_decimal(row.cost),
        "unpriced": row.unpriced,
        "cache_hits": row.cache_hits,
    })
}

/// The rows of `tenant` in `window`, as JSON or CSV; `Err` when the ledger's store failed.
async fn answer(
    state: &AppState,
    tenant: Uuid,
    slug: &str,
    window: &Window,
    headers: &HeaderMap,
) -> Result<Response, usage_ledger::LedgerError> {
    let rows = state
        .ledger
        .usage(
            tenant,
            window.from,
            window.to,
            window.granularity,
            window.group_by,
        )
        .await?;
    if wants_csv(headers) {
        let mut response = usage_ledger::usage_csv(&rows, window.group_by).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        if let Ok(disposition) = HeaderValue::from_str(&format!(
            "attachment; filename=\"usage-{slug}-{}.csv\"",
            window.from.format("%Y%m%d")
        )) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, disposition);
        }
        return Ok(response);
    }
    Ok(Json(json!({
        "tenant": slug,
        "from": window.from,
        "to": window.to,
        "granularity": granularity_name(window.granularity),
        "group_by": window.group_by.column(),
        // Costs are in the price table's one currency (null while it holds no price).
        "currency": state.registry.snapshot().catalog.prices.currency(),
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /admin/v1/tenants/{slug}/usage`
pub async fn admin_usage(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let Query(query) = query?;
    let window = query
        .validate(Utc::now())
        .map_err(|(field, message)| AdminError::Invalid {
            field: Some(field.to_owned()),
            message,
        })?;
    let tenant = state.registry.tenant(&slug).await?;
    answer(&state, tenant.id, &slug, &window, &headers)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "usage query failed");
            AdminError::Unavailable("the usage store is unavailable; retry shortly".into())
        })
}

/// `GET /v1/usage`: the calling tenant's own usage, never another's.
pub async fn tenant_usage(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<UsageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return ApiError::bad_request(rejection.body_text()).into_response(),
    };
    let window = match query.validate(Utc::now()) {
        Ok(window) => window,
        Err((param, message)) => {
            return ApiError::BadRequest {
                message,
                param: Some(param.to_owned()),
            }
            .into_response()
        }
    };
    let tenant = &caller.tenant.tenant;
    match answer(&state, tenant.id, tenant.slug.as_str(), &window, &headers).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "usage query failed");
            ApiError::unavailable(
                "Usage cannot be read right now. Please retry shortly.",
                None,
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(
        from: Option<&str>,
        to: Option<&str>,
        g: Option<&str>,
        by: Option<&str>,
    ) -> UsageQuery {
        UsageQuery {
            from: from.map(Into::into),
            to: to.map(Into::into),
            granularity: g.map(Into::into),
            group_by: by.map(Into::into),
        }
    }

    #[test]
    fn the_default_window_is_this_month_by_the_day() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let w = query(None, None, None, None).validate(now).unwrap();
        assert_eq!(w.from, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        assert_eq!(w.to, now);
        assert_eq!(
            (w.granularity, w.group_by),
            (Granularity::Day, GroupBy::None)
        );
    }

    #[test]
    fn bad_queries_name_their_parameter() {
        let now = Utc::now();
        for (q, param) in [
            (query(Some("yesterday"), None, None, None), "from"),
            (query(None, Some("2020-01-01"), None, None), "to"),
            (
                query(
                    Some("2026-01-02T00:00:00Z"),
                    Some("2026-01-01T00:00:00Z"),
                    None,
                    None,
                ),
                "to",
            ),
            (query(None, None, Some("minute"), None), "granularity"),
            (query(None, None, None, Some("tenant")), "group_by"),
            (
                query(
                    Some("2025-01-01T00:00:00Z"),
                    Some("2025-03-01T00:00:00Z"),
                    Some("hour"),
                    None,
                ),
                "to",
            ),
        ] {
            assert_eq!(q.validate(now).err().map(|e| e.0), Some(param));
        }
    }
}
