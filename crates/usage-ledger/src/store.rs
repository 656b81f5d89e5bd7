//! The ledger's tables on Postgres or SQLite: writing a batch (events and their rollups in one
//! transaction, idempotent) and reading a tenant's usage from the rollups. Each method body
//! is written once and compiled for both backends by `on_pool!`, like the registry's store.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Database, FromRow, Pool, QueryBuilder};
use uuid::Uuid;

use crate::{LedgerError, UsageEvent, UsageKind};

/// Rows per statement. Building a statement's arguments runs on the request threads, without
/// a yield: at 500 rows it held requests up for long enough to show in the gateway's p99 at
/// 1000 req/s. Small statements hand the thread back between them; 20 parameters each stays
/// far below both backends' limits (SQLite 32766, Postgres 65535).
const ROWS_PER_STATEMENT: usize = 64;

/// How long an SQLite connection waits for another writer (the registry shares the file).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const INSERT_EVENTS: &str = "INSERT INTO usage_events (id, tenant_id, key_id, kind, alias, \
    operation, member, deployment, region, prompt_tokens, completion_tokens, cached_tokens, \
    documents, status, latency_ms, streamed, cut, cache_hit, finished_at, cost, unpriced) ";

const UPSERT_HOURLY: &str = "INSERT INTO usage_hourly (tenant_id, hour, kind, alias, \
    deployment, key_id, requests, prompt_tokens, completion_tokens, cached_tokens, documents, \
    errors, cost, unpriced, cache_hits) ";

const ADD_TO_HOURLY: &str = " ON CONFLICT (tenant_id, hour, kind, alias, deployment, key_id) \
    DO UPDATE SET requests = usage_hourly.requests + excluded.requests, \
    prompt_tokens = usage_hourly.prompt_tokens + excluded.prompt_tokens, \
    completion_tokens = usage_hourly.completion_tokens + excluded.completion_tokens, \
    cached_tokens = usage_hourly.cached_tokens + excluded.cached_tokens, \
    documents = usage_hourly.documents + excluded.documents, \
    errors = usage_hourly.errors + excluded.errors, \
    cost = usage_hourly.cost + excluded.cost, \
    unpriced = usage_hourly.unpriced + excluded.unpriced, \
    cache_hits = usage_hourly.cache_hits + excluded.cache_hits";

/// One usage query per grouping: `$group_columns` name the group, `$group_by` extends the
/// GROUP BY. Static strings (the grouping is an enum), so only values are bound.
macro_rules! usage_sql {
    ($group_columns:literal, $group_by:literal) => {
        concat!(
            "SELECT hour, ",
            $group_columns,
            ", CAST(SUM(requests) AS bigint) AS requests, \
             CAST(SUM(prompt_tokens) AS bigint) AS prompt_tokens, \
             CAST(SUM(completion_tokens) AS bigint) AS completion_tokens, \
             CAST(SUM(cached_tokens) AS bigint) AS cached_tokens, \
             CAST(SUM(documents) AS bigint) AS documents, \
             CAST(SUM(errors) AS bigint) AS errors, \
             CAST(SUM(cost) AS bigint) AS cost, \
             CAST(SUM(unpriced) AS bigint) AS unpriced, \
             CAST(SUM(cache_hits) AS bigint) AS cache_hits \
             FROM usage_hourly WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
             GROUP BY hour",
            $group_by,
            " ORDER BY hour"
        )
    };
}

const USAGE_TOTAL: &str = usage_sql!(
    "CAST(NULL AS text) AS kind, CAST(NULL AS text) AS grp, CAST(NULL AS uuid) AS grp_key",
    ""
);
const USAGE_BY_MODEL: &str = usage_sql!(
    "kind, alias AS grp, CAST(NULL AS uuid) AS grp_key",
    ", kind, alias"
);
const USAGE_BY_DEPLOYMENT: &str = usage_sql!(
    "CAST(NULL AS text) AS kind, deployment AS grp, CAST(NULL AS uuid) AS grp_key",
    ", deployment"
);
const USAGE_BY_KEY: &str = usage_sql!(
    "CAST(NULL AS text) AS kind, CAST(NULL AS text) AS grp, key_id AS grp_key",
    ", key_id"
);

#[derive(Debug, Clone)]
enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the backend's own pool type.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            Backend::Postgres($pool) => $body,
            Backend::Sqlite($pool) => $body,
        }
    };
}

/// The ledger's connection to its tables: a small pool of its own (never the registry's), so
/// a slow usage write can never hold a lock the registry needs.
#[derive(Debug, Clone)]
pub struct LedgerStore {
    backend: Backend,
}

/// What writing a batch did: events new to the store, and events it already held (a retry
/// of a batch whose commit was in doubt, or a replayed spill file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    pub inserted: usize,
    pub duplicates: usize,
}

/// The period each usage row covers (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

/// What each usage row is split by, besides its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    None,
    /// The alias (OpenAI) or logical index (Search), with its kind.
    Model,
    /// The Azure deployment that served the calls (none for Search).
    Deployment,
    /// The API key (none for calls made with a token).
    Key,
}

impl GroupBy {
    /// The CSV column the group goes in, when there is one.
    pub fn column(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Model => Some("model"),
            Self::Deployment => Some("deployment"),
            Self::Key => Some("key_id"),
        }
    }
}

/// One period (and group) of a tenant's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub period_start: DateTime<Utc>,
    /// Set when grouping by model: an alias and an index may share a name.
    pub kind: Option<UsageKind>,
    /// The group's value; `None` without grouping, for Search calls grouped by deployment,
    /// and for token calls grouped by key.
    pub group: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// Prompt plus completion tokens (cached tokens are part of the prompt).
    pub total_tokens: u64,
    pub documents: u64,
    /// Calls that finished with a status of 400 or more.
    pub errors: u64,
    /// The calls' cost in pico-units of the price table's currency (unpriced calls add 0).
    pub cost: u64,
    /// Calls no price applied to (their cost is unknown, not 0).
    pub unpriced: u64,
    /// Calls answered from the response cache (a part of `requests`; no tokens).
    pub cache_hits: u64,
}

#[derive(Debug, FromRow)]
struct HourRow {
    hour: DateTime<Utc>,
    kind: Option<String>,
    grp: Option<String>,
    grp_key: Option<Uuid>,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    documents: i64,
    errors: i64,
    cost: i64,
    unpriced: i64,
    cache_hits: i64,
}

/// A rollup row's key. Ordered so a batch upserts rows in one global order, which keeps two
/// replicas writing the same rows from deadlocking on Postgres.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RollupKey<'a> {
    tenant_id: Uuid,
    hour: DateTime<Utc>,
    kind: UsageKind,
    alias: &'a str,
    deployment: &'a str,
    key_id: Uuid,
}

/// A tenant's totals over a period ([`LedgerStore::tenant_totals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantTotal {
    pub tenant_id: Uuid,
    pub requests: i64,
    /// Prompt plus completion tokens.
    pub tokens: i64,
    pub errors: i64,
}

/// A tenant's tokens on one deployment ([`LedgerStore::member_tokens`]).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberTokens {
    pub tenant_id: Uuid,
    /// `resource/deployment`.
    pub member: String,
    pub tokens: i64,
}

/// The fleet's calls in one UTC minute ([`LedgerStore::recent_minutes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct MinuteTotal {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub requests: i64,
    pub tokens: i64,
    pub errors: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    documents: i64,
    errors: i64,
    cost: i64,
    unpriced: i64,
    cache_hits: i64,
}

impl LedgerStore {
    /// A pool that connects on first use, so a ledger starts (and records, spilling) while
    /// the store is unreachable. `postgres://...` or `sqlite:...` (WAL, busy timeout).
    pub fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, LedgerError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options =
                PgConnectOptions::from_str(url)?.application_name("bulkhead-usage-ledger");
            Backend::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy_with(options),
            )
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT);
            Backend::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy_with(options),
            )
        } else {
            return Err(LedgerError::UnsupportedUrl);
        };
        Ok(Self { backend })
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Writes `events` and adds the newly inserted ones to their hourly rollups, in one
    /// transaction. Events already stored (same id) are skipped and not counted again, so a
    /// batch can be retried after any failure, including one after the commit went through.
    pub async fn write(&self, events: &[UsageEvent]) -> Result<WriteOutcome, sqlx::Error> {
        if events.is_empty() {
            return Ok(WriteOutcome::default());
        }
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // The ids already stored (a retried batch, a replayed spill file): normally none,
            // so this answers no rows. `RETURNING id` on the insert would tell the same, but
            // SQLite's driver hands every returned row from its thread to ours one at a time,
            // which cost more than the insert itself.
            let mut stored: HashSet<Uuid> = HashSet::new();
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut select = builder(pool, "SELECT id FROM usage_events WHERE id IN (");
                let mut ids = select.separated(", ");
                for e in chunk {
                    ids.push_bind(e.id);
                }
                select.push(")");
                let found: Vec<Uuid> = select.build_query_scalar().fetch_all(&mut *tx).await?;
                stored.extend(found);
            }
            // Each new id once, even if the batch carried it twice.
            let mut fresh_ids: HashSet<Uuid> = HashSet::with_capacity(events.len());
            let fresh: Vec<&UsageEvent> = events
                .iter()
                .filter(|e| !stored.contains(&e.id) && fresh_ids.insert(e.id))
                .collect();
            for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
                let mut insert = builder(pool, INSERT_EVENTS);
                insert.push_values(chunk, |mut row, e| {
                    row.push_bind(e.id)
                        .push_bind(e.tenant_id)
                        .push_bind(e.key_id)
                        .push_bind(e.kind.as_str())
                        .push_bind(e.alias.as_str())
                        .push_bind(e.operation.as_str())
                        .push_bind(e.member.as_deref())
                        .push_bind(e.deployment.as_deref())
                        .push_bind(e.region.as_deref())
                        .push_bind(clamp(e.prompt_tokens))
                        .push_bind(clamp(e.completion_tokens))
                        .push_bind(clamp(e.cached_tokens))
                        .push_bind(clamp(e.documents))
                        .push_bind(i32::from(e.status))
                        .push_bind(clamp(e.latency_ms))
                        .push_bind(e.streamed)
                        .push_bind(e.cut)
                        .push_bind(e.cache_hit)
                        .push_bind(to_micros(e.finished_at))
                        .push_bind(e.cost.map(clamp))
                        .push_bind(e.unpriced);
                });
                insert.push(" ON CONFLICT (id) DO NOTHING");
                let written = insert.build().execute(&mut *tx).await?.rows_affected();
                if written != chunk.len() as u64 {
                    // Another writer stored some of these ids since the SELECT (a retry racing
                    // a write that was still running). Roll back; the retry sees them.
                    return Err(sqlx::Error::Protocol(
                        "usage events were stored concurrently; the batch will be retried".into(),
                    ));
                }
            }
            let inserted = fresh.len();
            let rollups = rollups(fresh.into_iter());
            for chunk in rollups.chunks(ROWS_PER_STATEMENT) {
                let mut upsert = builder(pool, UPSERT_HOURLY);
                upsert.push_values(chunk, |mut row, (key, sums)| {
                    row.push_bind(key.tenant_id)
                        .push_bind(key.hour)
                        .push_bind(key.kind.as_str())
                        .push_bind(key.alias)
                        .push_bind(key.deployment)
                        .push_bind(key.key_id)
                        .push_bind(sums.requests)
                        .push_bind(sums.prompt_tokens)
                        .push_bind(sums.completion_tokens)
                        .push_bind(sums.cached_tokens)
                        .push_bind(sums.documents)
                        .push_bind(sums.errors)
                        .push_bind(sums.cost)
                        .push_bind(sums.unpriced)
                        .push_bind(sums.cache_hits);
                });
                upsert.push(ADD_TO_HOURLY);
                upsert.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(WriteOutcome {
                inserted,
                duplicates: events.len() - inserted,
            })
        })
    }

    /// A tenant's usage over the hours that start in `[from, to)`, from the rollups, one row
    /// per period (UTC hour or day) and group, ordered by period then group. Only this
    /// tenant's rollups are read (`tenant_id` is the first column of their key).
    pub async fn usage(
        &self,
        tenant_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: Granularity,
        group_by: GroupBy,
    ) -> Result<Vec<UsageRow>, LedgerError> {
        let sql = match group_by {
            GroupBy::None => USAGE_TOTAL,
            GroupBy::Model => USAGE_BY_MODEL,
            GroupBy::Deployment => USAGE_BY_DEPLOYMENT,
            GroupBy::Key => USAGE_BY_KEY,
        };
        let hours: Vec<HourRow> = on_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(tenant_id)
                .bind(to_micros(from))
                .bind(to_micros(to))
                .fetch_all(pool)
                .await?
        });
        Ok(fold(hours, granularity, group_by))
    }

    /// Each tenant's totals over the hours that start in `[from, to)`: of the tenants in
    /// `tenants` (read by their rollups' key prefix), or with `tenants` empty the `top`
    /// tenants by tokens (a scan of the period's rollups: for an overview, cached by callers).
    pub async fn tenant_totals(
        &self,
        tenants: &[Uuid],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        top: u32,
    ) -> Result<Vec<TenantTotal>, LedgerError> {
        const SUMS: &str = "SELECT tenant_id, CAST(SUM(requests) AS bigint) AS requests, \
             CAST(SUM(prompt_tokens + completion_tokens) AS bigint) AS tokens, \
             CAST(SUM(errors) AS bigint) AS errors FROM usage_hourly WHERE hour >= ";
        let mut out = Vec::new();
        on_pool!(self, |pool| {
            if tenants.is_empty() {
                let mut query = builder(pool, SUMS);
                query
                    .push_bind(to_micros(from))
                    .push(" AND hour < ")
                    .push_bind(to_micros(to))
                    .push(" GROUP BY tenant_id ORDER BY tokens DESC, tenant_id LIMIT ")
                    .push_bind(i64::from(top));
                out = query.build_query_as().fetch_all(pool).await?;
            }
            for chunk in tenants.chunks(ROWS_PER_STATEMENT) {
                let mut query = builder(pool, SUMS);
                query
                    .push_bind(to_micros(from))
                    .push(" AND hour < ")
                    .push_bind(to_micros(to))
                    .push(" AND tenant_id IN (");
                let mut ids = query.separated(", ");
                for id in chunk {
                    ids.push_bind(*id);
                }
                query.push(") GROUP BY tenant_id");
                let rows: Vec<TenantTotal> = query.build_query_as().fetch_all(pool).await?;
                out.extend(rows);
            }
            Ok::<_, LedgerError>(())
        })?;
        Ok(out)
    }

    /// Tokens per tenant on each of `members` (`resource/deployment`) over `[from, to)`, from
    /// the events (the rollups name deployments without their resource): what a provisioned
    /// deployment's monthly cost is shared by. Reads the `finished_at` index; an admin report.
    pub async fn member_tokens(
        &self,
        members: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<MemberTokens>, LedgerError> {
        let mut out = Vec::new();
        on_pool!(self, |pool| {
            for chunk in members.chunks(ROWS_PER_STATEMENT) {
                let mut query = builder(
                    pool,
                    "SELECT tenant_id, member, \
                     CAST(SUM(prompt_tokens + completion_tokens) AS bigint) AS tokens \
                     FROM usage_events WHERE finished_at >= ",
                );
                query
                    .push_bind(to_micros(from))
                    .push(" AND finished_at < ")
                    .push_bind(to_micros(to))
                    .push(" AND member IN (");
                let mut names = query.separated(", ");
                for member in chunk {
                    names.push_bind(member.as_str());
                }
                query.push(") GROUP BY tenant_id, member ORDER BY member, tenant_id");
                let rows: Vec<MemberTokens> = query.build_query_as().fetch_all(pool).await?;
                out.extend(rows);
            }
            Ok::<_, LedgerError>(())
        })?;
        Ok(out)
    }

    /// Every tenant's calls, tokens and errors per UTC minute since `since` (the fleet's
    /// recent traffic; reads the `finished_at` index).
    pub async fn recent_minutes(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<MinuteTotal>, LedgerError> {
        let minute = match self.backend {
            Backend::Postgres(_) => "CAST(floor(extract(epoch FROM finished_at) / 60) AS bigint)",
            Backend::Sqlite(_) => "CAST(strftime('%s', finished_at) AS integer) / 60",
        };
        let sql = format!(
            "SELECT {minute} AS minute, CAST(COUNT(*) AS bigint) AS requests, \
             CAST(SUM(prompt_tokens + completion_tokens) AS bigint) AS tokens, \
             CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS bigint) AS errors \
             FROM usage_events WHERE finished_at >= $1 GROUP BY 1 ORDER BY 1"
        );
        Ok(on_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(to_micros(since))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

/// A query builder typed for `pool`'s backend.
fn builder<'a, DB: Database>(_pool: &Pool<DB>, init: &str) -> QueryBuilder<'a, DB>
where
    DB::Arguments<'a>: Default,
{
    QueryBuilder::new(init)
}

/// Adds events into their hourly rollup rows, sorted by key.
fn rollups<'a>(events: impl Iterator<Item = &'a UsageEvent>) -> Vec<(RollupKey<'a>, Sums)> {
    let mut rows: BTreeMap<RollupKey<'a>, Sums> = BTreeMap::new();
    for e in events {
        let key = RollupKey {
            tenant_id: e.tenant_id,
            hour: floor_hour(e.finished_at),
            kind: e.kind,
            alias: &e.alias,
            deployment: e.deployment.as_deref().unwrap_or(""),
            key_id: e.key_id.unwrap_or(Uuid::nil()),
        };
        let sums = rows.entry(key).or_default();
        sums.requests = sums.requests.saturating_add(1);
        sums.prompt_tokens = sums.prompt_tokens.saturating_add(clamp(e.prompt_tokens));
        sums.completion_tokens = sums
            .completion_tokens
            .saturating_add(clamp(e.completion_tokens));
        sums.cached_tokens = sums.cached_tokens.saturating_add(clamp(e.cached_tokens));
        sums.documents = sums.documents.saturating_add(clamp(e.documents));
        sums.errors = sums.errors.saturating_add(i64::from(e.is_error()));
        sums.cost = sums.cost.saturating_add(e.cost.map_or(0, clamp));
        sums.unpriced = sums.unpriced.saturating_add(i64::from(e.unpriced));
        sums.cache_hits = sums.cache_hits.saturating_add(i64::from(e.cache_hit));
    }
    rows.into_iter().collect()
}

/// Turns per-hour sums into rows of the asked granularity.
fn fold(hours: Vec<HourRow>, granularity: Granularity, group_by: GroupBy) -> Vec<UsageRow> {
    type Group = (DateTime<Utc>, Option<UsageKind>, Option<String>);
    let mut periods: BTreeMap<Group, UsageRow> = BTreeMap::new();
    for h in hours {
        let period_start = match granularity {
            Granularity::Hour => h.hour,
            Granularity::Day => floor_day(h.hour),
        };
        let kind = h.kind.as_deref().and_then(UsageKind::parse);
        let group = match group_by {
            GroupBy::None => None,
            GroupBy::Model | GroupBy::Deployment => h.grp.filter(|g| !g.is_empty()),
            GroupBy::Key => h.grp_key.filter(|k| !k.is_nil()).map(|k| k.to_string()),
        };
        let row = periods
            .entry((period_start, kind, group.clone()))
            .or_insert_with(|| UsageRow {
                period_start,
                kind,
                group,
                requests: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
                total_tokens: 0,
                documents: 0,
                errors: 0,
                cost: 0,
                unpriced: 0,
                cache_hits: 0,
            });
        let add = |total: &mut u64, value: i64| {
            *total = total.saturating_add(u64::try_from(value).unwrap_or(0));
        };
        add(&mut row.requests, h.requests);
        add(&mut row.prompt_tokens, h.prompt_tokens);
        add(&mut row.completion_tokens, h.completion_tokens);
        add(&mut row.cached_tokens, h.cached_tokens);
        add(&mut row.total_tokens, h.prompt_tokens);
        add(&mut row.total_tokens, h.completion_tokens);
        add(&mut row.documents, h.documents);
        add(&mut row.errors, h.errors);
        add(&mut row.cost, h.cost);
        add(&mut row.unpriced, h.unpriced);
        add(&mut row.cache_hits, h.cache_hits);
    }
    periods.into_values().collect()
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Both stores keep microseconds (see CONTRIBUTING.md).
pub(crate) fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

pub(crate) fn floor_hour(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(at)
}

pub(crate) fn floor_day(at: DateTime<Utc>) -> DateTime<Utc> {
    floor_hour(at).with_hour(0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn periods_start_on_the_utc_hour_and_day() {
        let cases = [
            (
                "2024-03-10T13:45:12.123456789Z",
                "2024-03-10T13:00:00Z",
                "2024-03-10T00:00:00Z",
            ),
            (
                "2024-03-10T00:00:00Z",
                "2024-03-10T00:00:00Z",
                "2024-03-10T00:00:00Z",
            ),
            (
                "2024-03-10T23:59:59.999Z",
                "2024-03-10T23:00:00Z",
                "2024-03-10T00:00:00Z",
            ),
            // an offset is converted, not ignored
            (
                "2024-03-10T01:30:00+02:00",
                "2024-03-09T23:00:00Z",
                "2024-03-09T00:00:00Z",
            ),
        ];
        for (input, hour, day) in cases {
            assert_eq!(floor_hour(at(input)), at(hour), "{input}");
            assert_eq!(floor_day(at(input)), at(day), "{input}");
        }
    }

    #[test]
    fn timestamps_keep_microseconds() {
        assert_eq!(
            to_micros(at("2024-03-10T13:45:12.123456789Z")),
            at("2024-03-10T13:45:12.123456Z")
        );
    }

    #[test]
    fn rollups_add_events_of_the_same_hour_model_deployment_and_key() {
        let tenant = Uuid::new_v4();
        let key = Uuid::new_v4();
        let mut a = UsageEvent::openai(tenant, "gpt", "chat", at("2024-03-10T13:05:00Z"));
        a.key_id = Some(key);
        a.deployment = Some("d1".into());
        a.prompt_tokens = 10;
        a.completion_tokens = 5;
        let mut b = a.clone();
        b.id = Uuid::now_v7();
        b.finished_at = at("2024-03-10T13:59:59Z");
        b.status = 429;
        let mut other_hour = a.clone();
        other_hour.finished_at = at("2024-03-10T14:00:00Z");
        let mut search = UsageEvent::search(tenant, "docs", "search", a.finished_at);
        search.documents = 7;
        b.cache_hit = true;
        let events = [a, b, other_hour, search];
        let rows = rollups(events.iter());
        assert_eq!(rows.len(), 3);
        let (first, sums) = &rows[0];
        assert_eq!(
            (first.hour, first.kind, first.key_id, first.deployment),
            (at("2024-03-10T13:00:00Z"), UsageKind::OpenAi, key, "d1")
        );
        assert_eq!((sums.requests, sums.prompt_tokens, sums.errors), (2, 20, 1));
        assert_eq!(sums.cache_hits, 1);
        let (search_key, search_sums) = &rows[1];
        assert_eq!(
            (search_key.kind, search_key.deployment, search_key.key_id),
            (UsageKind::Search, "", Uuid::nil())
        );
        assert_eq!(search_sums.documents, 7);
    }
}
