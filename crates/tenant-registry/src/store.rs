//! Persistence. [`Store`] is the one trait; [`SqlStore`] implements it on Postgres (production,
//! several replicas) and on SQLite (the embedded default), with one body of SQL that runs on
//! both, each backend with its own migrations in `migrations/`.
//!
//! The store deals in rows with resolved ids; the rules (placement, ownership, validation)
//! live in [`crate::Registry`], which calls it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::FromRow;
use uuid::Uuid;

use crate::error::on_constraint;
use crate::model::{Isolation, TenantFilter};
use crate::RegistryError;

type Result<T, E = RegistryError> = std::result::Result<T, E>;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// The Postgres channel every registry change is announced on (by triggers).
pub const CHANGE_CHANNEL: &str = "bulkhead_registry";

#[derive(Debug, Clone, FromRow)]
pub struct ResourceRow {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub region: String,
    pub data_zone: Option<String>,
    pub credential: Vec<u8>,
    pub owner_tenant: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct ServiceRow {
    pub id: Uuid,
    pub name: String,
    pub endpoint: String,
    pub region: String,
    pub data_zone: Option<String>,
    pub credential: Vec<u8>,
    pub owner_tenant: Option<String>,
    pub index_capacity: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub resource_id: Uuid,
    pub name: String,
    pub model: String,
    pub kind: String,
    pub capacity_tpm: i64,
    pub owner_tenant: Option<String>,
    pub created_at: DateTime<Utc>,
    pub deployment_type: Option<String>,
    pub model_version: Option<String>,
}

#[derive(Debug, Clone, FromRow)]
pub struct PoolRow {
    pub id: Uuid,
    pub alias: String,
    pub created_at: DateTime<Utc>,
}

/// A member of a shared pool (`owner` is the pool id) or of a tenant's alias (`owner` is the
/// tenant id).
#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub owner: Uuid,
    pub alias: String,
    pub deployment_id: Uuid,
    pub priority: i32,
    pub weight: i32,
}

#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    pub id: Uuid,
    pub name: String,
    pub definition: sqlx::types::Json<serde_json::Map<String, serde_json::Value>>,
    pub created_at: DateTime<Utc>,
}

/// A price (see `prices.rs`): amounts in micro-units, `''` for any version / every deployment.
#[derive(Debug, Clone, FromRow)]
pub struct PriceRow {
    pub id: Uuid,
    pub model: String,
    pub model_version: String,
    pub deployment_type: String,
    pub deployment: String,
    pub currency: String,
    pub input_per_million: i64,
    pub cached_input_per_million: Option<i64>,
    pub output_per_million: i64,
    pub monthly_cost: Option<i64>,
    pub effective_from: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct TenantRow {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub status: String,
    pub data_zone: Option<String>,
    pub openai_isolation: Option<String>,
    pub openai_endpoint: Option<String>,
    pub openai_region: Option<String>,
    pub openai_credential: Option<Vec<u8>>,
    pub search_isolation: Option<String>,
    pub search_service_id: Option<Uuid>,
    pub tokens_per_minute: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub monthly_tokens: Option<i64>,
    pub context_overflow: String,
    /// Micro-units of the price table's currency.
    pub monthly_budget: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A search move in progress (JSON of [`crate::model::SearchMove`]).
    pub search_move: Option<String>,
    /// The response cache's TTL and byte bound: both null (off) or both set.
    pub response_cache_ttl_seconds: Option<i32>,
    pub response_cache_max_bytes: Option<i64>,
}

/// A tenant's row with its OpenAI members and resources (in order).
#[derive(Debug, Clone)]
pub struct TenantRecord {
    pub row: TenantRow,
    pub members: Vec<MemberRow>,
    pub resources: Vec<Uuid>,
}

#[derive(Debug, Clone, FromRow)]
pub struct KeyRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub scope: String,
    pub hash: Vec<u8>,
    pub hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub tokens_per_minute: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub monthly_tokens: Option<i64>,
    /// Micro-units of the price table's currency.
    pub monthly_budget: Option<i64>,
}

/// A change to a key's limit columns: `None` keeps a column, `Some(value)` writes `value`
/// (`Some(None)` removes the limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyLimitsChange {
    pub tokens_per_minute: Option<Option<i64>>,
    pub requests_per_minute: Option<Option<i64>>,
    pub monthly_tokens: Option<Option<i64>>,
    pub monthly_budget: Option<Option<i64>>,
}

/// A row holding a sealed credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedRow {
    Resource(Uuid),
    Service(Uuid),
    /// A tenant's own OpenAI endpoint key.
    Tenant(Uuid),
}

#[derive(Debug, Clone, FromRow)]
struct ResourceLinkRow {
    tenant_id: Uuid,
    resource_id: Uuid,
}

/// The upstream side of the registry: resources, deployments, pools, services, templates.
#[derive(Debug, Clone, Default)]
pub struct CatalogRows {
    pub resources: Vec<ResourceRow>,
    pub deployments: Vec<DeploymentRow>,
    pub pools: Vec<PoolRow>,
    pub pool_members: Vec<MemberRow>,
    pub services: Vec<ServiceRow>,
    pub templates: Vec<TemplateRow>,
    pub prices: Vec<PriceRow>,
}

/// Everything the registry holds, read in one consistent pass (one transaction).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub catalog: CatalogRows,
    pub tenants: Vec<TenantRecord>,
    pub keys: Vec<KeyRow>,
    /// The last change-log sequence number, read before the rest: every change up to it is
    /// in these rows (later ones may be too; applying them again changes nothing).
    pub mark: i64,
}

/// An admin console session: hex SHA-256 of its id, its CSRF token, a fingerprint of the admin
/// token that opened it, when it expires (Unix seconds).
#[derive(Debug, Clone)]
pub struct ConsoleSessionRow {
    pub id_hash: String,
    pub csrf: String,
    pub admin: String,
    pub expires_at: i64,
}

/// One row of the registry's change log: what a write touched.
#[derive(Debug, Clone, FromRow)]
pub struct ChangeRow {
    pub seq: i64,
    pub tenant_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    pub catalog: bool,
}

/// How many change-log rows are kept; a replica further behind reads everything again.
pub const CHANGES_KEPT: i64 = 100_000;

/// What a tenant can be deleted with: its id, and the owner slug its reserved resources carry.
#[derive(Debug, Clone, Copy)]
pub struct Owned<'a> {
    pub tenant_id: Uuid,
    pub slug: &'a str,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> Result<()>;
    /// Succeeds when the store answers and every migration this build knows is applied.
    async fn ready(&self) -> Result<()>;
    /// A stream of change notifications from other processes, when the backend has one.
    async fn listener(&self) -> Result<Option<PgListener>>;

    async fn load(&self) -> Result<Rows>;
    async fn catalog(&self) -> Result<CatalogRows>;

    /// Change-log rows after `after`, oldest first, at most `limit`; and the oldest sequence
    /// number still kept (`None`: the log is empty).
    async fn changes_since(&self, after: i64, limit: u32) -> Result<(Vec<ChangeRow>, Option<i64>)>;
    /// Forgets change-log rows older than the last [`CHANGES_KEPT`].
    async fn prune_changes(&self) -> Result<u64>;
    /// The tenants with these ids that exist (with their members and resources).
    async fn tenants_by_id(&self, ids: &[Uuid]) -> Result<Vec<TenantRecord>>;
    /// The live (unrevoked) keys with these ids.
    async fn live_keys_by_id(&self, ids: &[Uuid]) -> Result<Vec<KeyRow>>;

    async fn insert_resource(&self, row: &ResourceRow) -> Result<()>;
    async fn delete_resource(&self, name: &str) -> Result<bool>;
    async fn insert_deployment(&self, row: &DeploymentRow) -> Result<()>;
    async fn delete_deployment(&self, resource_id: Uuid, name: &str) -> Result<bool>;
    async fn insert_pool(&self, row: &PoolRow, members: &[MemberRow]) -> Result<()>;
    async fn delete_pool(&self, alias: &str) -> Result<bool>;
    async fn insert_service(&self, row: &ServiceRow) -> Result<()>;
    async fn delete_service(&self, name: &str) -> Result<bool>;
    async fn insert_template(&self, row: &TemplateRow) -> Result<()>;
    async fn delete_template(&self, name: &str) -> Result<bool>;
    /// Adds a price, unless the table holds prices in another currency (checked in the same
    /// transaction, so two admins cannot write two currencies at once on Postgres: the
    /// table is locked for the check).
    async fn insert_price(&self, row: &PriceRow) -> Result<()>;
    /// Deletes price `id` if it takes effect after `now` (a price in force has priced calls
    /// already); `Ok(None)` when there is no such price, `Ok(Some(false))` when it is in force.
    async fn delete_future_price(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<bool>>;

    /// Stores an admin console session (and forgets the expired ones).
    async fn insert_console_session(&self, session: &ConsoleSessionRow) -> Result<()>;
    /// The CSRF token of the session, if it exists, was opened with the admin token `admin`
    /// fingerprints, and has not expired at `now`.
    async fn console_session(&self, id_hash: &str, admin: &str, now: i64)
        -> Result<Option<String>>;
    async fn delete_console_session(&self, id_hash: &str) -> Result<bool>;

    /// Inserts the tenant with its placements and `keys` in one transaction: all or nothing.
    async fn insert_tenant(&self, record: &TenantRecord, keys: &[KeyRow]) -> Result<()>;
    /// Replaces the tenant's row, members and resources.
    async fn update_tenant(&self, record: &TenantRecord) -> Result<()>;
    async fn tenant(&self, slug: &str) -> Result<Option<TenantRecord>>;
    /// Tenants matching `filter` in slug order after `after`, at most `limit`.
    async fn tenants_after(
        &self,
        after: &str,
        limit: u32,
        filter: &TenantFilter,
    ) -> Result<Vec<TenantRecord>>;
    /// Deletes the tenant, its keys and placements, and the resources reserved for it.
    async fn delete_tenant(&self, owned: Owned<'_>) -> Result<()>;

    async fn insert_key(&self, row: &KeyRow) -> Result<()>;
    async fn keys(&self, tenant_id: Uuid) -> Result<Vec<KeyRow>>;
    async fn revoke_key(&self, tenant_id: Uuid, id: Uuid, at: DateTime<Utc>) -> Result<bool>;
    /// Changes the limits of the tenant's key `id` in one statement, so concurrent changes of
    /// different limits all hold. `None` when the tenant has no such key.
    async fn update_key_limits(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        change: &KeyLimitsChange,
    ) -> Result<Option<KeyRow>>;

    /// Replaces a sealed credential by the same secret sealed anew, only if the row still
    /// holds `old` (a credential changed meanwhile is left alone). Whether it was replaced.
    async fn reseal(&self, row: SealedRow, old: &[u8], new: &[u8]) -> Result<bool>;
}

/// A tenant filter as SQL conditions over `tenants`, each starting with ` AND `, and the text
/// values they bind, numbered from `$2` (`$1` is the cursor). The filter's values were checked
/// by [`TenantFilter::parse`]; they are bound, never spliced, all but the prefix's length.
fn filter_sql(filter: &TenantFilter) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    let param = |value: &str, values: &mut Vec<String>| {
        values.push(value.to_owned());
        format!("${}", values.len() + 1)
    };
    if let Some(prefix) = &filter.slug_prefix {
        // `slug >=` lets the slug index start the scan at the prefix; `substr` then keeps the
        // slugs that carry it, whatever the column's collation.
        let start = param(prefix, &mut values);
        let same = param(prefix, &mut values);
        sql += &format!(
            " AND slug >= {start} AND substr(slug, 1, {}) = {same}",
            prefix.len()
        );
    }
    if let Some(status) = filter.status {
        sql += &format!(" AND status = {}", param(status.as_str(), &mut values));
    }
    for (column, isolation) in [
        ("openai_isolation", filter.openai),
        ("search_isolation", filter.search),
    ] {
        match isolation {
            Some(Isolation::Is(name)) => {
                sql += &format!(" AND {column} = {}", param(name, &mut values));
            }
            Some(Isolation::Unplaced) => sql += &format!(" AND {column} IS NULL"),
            None => {}
        }
    }
    (sql, values)
}

const INSERT_KEY: &str = "INSERT INTO api_keys \
     (id, tenant_id, name, scope, hash, hint, expires_at, revoked_at, created_at, \
     tokens_per_minute, requests_per_minute, monthly_tokens, monthly_budget) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Binds every value of `$values` in turn, on either backend.
macro_rules! bind_each {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = query.bind(value);
        }
        query
    }};
}

/// Binds a [`KeyRow`] to [`INSERT_KEY`], on either backend.
macro_rules! bind_key {
    ($query:expr, $row:expr) => {{
        let row: &KeyRow = $row;
        $query
            .bind(row.id)
            .bind(row.tenant_id)
            .bind(&row.name)
            .bind(&row.scope)
            .bind(&row.hash)
            .bind(&row.hint)
            .bind(row.expires_at)
            .bind(row.revoked_at)
            .bind(row.created_at)
            .bind(row.tokens_per_minute)
            .bind(row.requests_per_minute)
            .bind(row.monthly_tokens)
            .bind(row.monthly_budget)
    }};
}

#[derive(Debug, Clone)]
enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The SQL store. Each method body is written once and compiled for both backends by
/// [`on_pool!`], so the two can never drift apart.
#[derive(Debug, Clone)]
pub struct SqlStore {
    backend: Backend,
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

/// Inserts a price row with `$executor` after checking the table's currency.
macro_rules! insert_price_in {
    ($executor:expr, $row:expr) => {{
        let row: &PriceRow = $row;
        let other: Option<String> =
            sqlx::query_scalar("SELECT currency FROM prices WHERE currency <> $1 LIMIT 1")
                .bind(&row.currency)
                .fetch_optional($executor)
                .await?;
        if let Some(other) = other {
            return Err(RegistryError::Conflict(format!(
                "the price table is in {other}: every price must be in the same currency"
            )));
        }
        sqlx::query(
            "INSERT INTO prices (id, model, model_version, deployment_type, deployment, \
             currency, input_per_million, cached_input_per_million, output_per_million, \
             monthly_cost, effective_from, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(row.id)
        .bind(&row.model)
        .bind(&row.model_version)
        .bind(&row.deployment_type)
        .bind(&row.deployment)
        .bind(&row.currency)
        .bind(row.input_per_million)
        .bind(row.cached_input_per_million)
        .bind(row.output_per_million)
        .bind(row.monthly_cost)
        .bind(row.effective_from)
        .bind(row.created_at)
        .execute($executor)
        .await
        .map_err(on_constraint(|| {
            "a price for the same model, version, type and deployment takes effect at that \
             instant already"
                .to_owned()
        }))?;
    }};
}

/// Reads the catalog tables with `$executor` (a transaction, for one consistent view).
macro_rules! catalog_in {
    ($executor:expr) => {
        CatalogRows {
            resources: sqlx::query_as("SELECT * FROM openai_resources ORDER BY name")
                .fetch_all($executor)
                .await?,
            deployments: sqlx::query_as("SELECT * FROM openai_deployments ORDER BY name")
                .fetch_all($executor)
                .await?,
            pools: sqlx::query_as("SELECT * FROM openai_pools ORDER BY alias")
                .fetch_all($executor)
                .await?,
            pool_members: sqlx::query_as(
                "SELECT m.pool_id AS owner, p.alias, m.deployment_id, m.priority, m.weight \
                 FROM openai_pool_members m JOIN openai_pools p ON p.id = m.pool_id \
                 ORDER BY p.alias, m.priority, m.deployment_id",
            )
            .fetch_all($executor)
            .await?,
            services: sqlx::query_as("SELECT * FROM search_services ORDER BY name")
                .fetch_all($executor)
                .await?,
            templates: sqlx::query_as("SELECT * FROM index_templates ORDER BY name")
                .fetch_all($executor)
                .await?,
            prices: sqlx::query_as(
                "SELECT * FROM prices ORDER BY model, model_version, deployment_type, \
                 deployment, effective_from",
            )
            .fetch_all($executor)
            .await?,
        }
    };
}

const TENANT_COLUMNS: &str = "id, slug, display_name, status, data_zone, openai_isolation, \
    openai_endpoint, openai_region, openai_credential, search_isolation, search_service_id, \
    tokens_per_minute, requests_per_minute, monthly_tokens, context_overflow, created_at, \
    updated_at, search_move, monthly_budget, response_cache_ttl_seconds, \
    response_cache_max_bytes";

/// Ids bound in one `IN (...)` list (well under SQLite's 32,766 parameters).
const BY_ID_CHUNK: usize = 500;

/// `$1, $2, ... $n`.
fn id_list(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const TENANT_MEMBERS: &str =
    "SELECT tenant_id AS owner, alias, deployment_id, priority, weight FROM tenant_openai_members";

const TENANT_RESOURCES: &str = "SELECT tenant_id, resource_id FROM tenant_openai_resources";

impl SqlStore {
    /// Connects to Postgres.
    pub async fn postgres(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Self::from_postgres(pool))
    }

    pub fn from_postgres(pool: PgPool) -> Self {
        Self {
            backend: Backend::Postgres(pool),
        }
    }

    /// Opens (creating it if needed) `registry.db` in `dir`, or an SQLite URL.
    pub async fn sqlite(location: SqliteLocation<'_>) -> Result<Self> {
        let options = match location {
            SqliteLocation::Dir(dir) => {
                SqliteConnectOptions::new().filename(dir.join("registry.db"))
            }
            SqliteLocation::Url(url) => SqliteConnectOptions::from_str(url)?,
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self::from_sqlite(pool))
    }

    pub fn from_sqlite(pool: SqlitePool) -> Self {
        Self {
            backend: Backend::Sqlite(pool),
        }
    }

    fn chunk_tenants(
        tenants: Vec<TenantRow>,
        members: Vec<MemberRow>,
        links: Vec<ResourceLinkRow>,
    ) -> Vec<TenantRecord> {
        let mut records: Vec<TenantRecord> = tenants
            .into_iter()
            .map(|row| TenantRecord {
                row,
                members: Vec::new(),
                resources: Vec::new(),
            })
            .collect();
        let index: std::collections::HashMap<Uuid, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.row.id, i))
            .collect();
        for member in members {
            if let Some(&i) = index.get(&member.owner) {
                records[i].members.push(member);
            }
        }
        for link in links {
            if let Some(&i) = index.get(&link.tenant_id) {
                records[i].resources.push(link.resource_id);
            }
        }
        records
    }
}

/// Where the SQLite database lives.
#[derive(Debug, Clone, Copy)]
pub enum SqliteLocation<'a> {
    Dir(&'a Path),
    Url(&'a str),
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    async fn ready(&self) -> Result<()> {
        let (applied, known): (i64, usize) = match &self.backend {
            Backend::Postgres(pool) => (
                sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(pool)
                    .await?,
                POSTGRES_MIGRATIONS.iter().count(),
            ),
            Backend::Sqlite(pool) => (
                sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(pool)
                    .await?,
                SQLITE_MIGRATIONS.iter().count(),
            ),
        };
        if usize::try_from(applied).unwrap_or(0) < known {
            return Err(RegistryError::Corrupt(format!(
                "{applied} of {known} migrations applied"
            )));
        }
        Ok(())
    }

    async fn listener(&self) -> Result<Option<PgListener>> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(CHANGE_CHANNEL).await?;
                Ok(Some(listener))
            }
            Backend::Sqlite(_) => Ok(None),
        }
    }

    async fn load(&self) -> Result<Rows> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // First: a change committed after this read is applied again later, never lost.
            let mark: i64 =
                sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM registry_changes")
                    .fetch_one(&mut *tx)
                    .await?;
            let catalog = catalog_in!(&mut *tx);
            let tenants = sqlx::query_as(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY slug"
            ))
            .fetch_all(&mut *tx)
            .await?;
            let members = sqlx::query_as(&format!(
                "{TENANT_MEMBERS} ORDER BY alias, priority, deployment_id"
            ))
            .fetch_all(&mut *tx)
            .await?;
            let links = sqlx::query_as(&format!("{TENANT_RESOURCES} ORDER BY position"))
                .fetch_all(&mut *tx)
                .await?;
            let keys = sqlx::query_as("SELECT * FROM api_keys WHERE revoked_at IS NULL")
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Rows {
                catalog,
                tenants: Self::chunk_tenants(tenants, members, links),
                keys,
                mark,
            })
        })
    }

    async fn catalog(&self) -> Result<CatalogRows> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let catalog = catalog_in!(&mut *tx);
            tx.commit().await?;
            Ok(catalog)
        })
    }

    async fn changes_since(&self, after: i64, limit: u32) -> Result<(Vec<ChangeRow>, Option<i64>)> {
        on_pool!(self, |pool| {
            let rows: Vec<ChangeRow> = sqlx::query_as(
                "SELECT seq, tenant_id, key_id, catalog FROM registry_changes \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM registry_changes")
                .fetch_one(pool)
                .await?;
            Ok((rows, oldest))
        })
    }

    async fn prune_changes(&self) -> Result<u64> {
        on_pool!(self, |pool| {
            let done = sqlx::query(
                "DELETE FROM registry_changes \
                 WHERE seq <= (SELECT MAX(seq) FROM registry_changes) - $1",
            )
            .bind(CHANGES_KEPT)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    async fn tenants_by_id(&self, ids: &[Uuid]) -> Result<Vec<TenantRecord>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut records = Vec::with_capacity(ids.len());
            // A few hundred ids a statement (three statements a chunk, in one transaction):
            // a bulk onboarding of 1,000 tenants is caught up in a dozen round trips.
            for chunk in ids.chunks(BY_ID_CHUNK) {
                let list = id_list(chunk.len());
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id IN ({list})");
                let query = bind_each!(sqlx::query_as(&sql), chunk);
                let rows: Vec<TenantRow> = query.fetch_all(&mut *tx).await?;
                if rows.is_empty() {
                    continue;
                }
                let sql = format!(
                    "{TENANT_MEMBERS} WHERE tenant_id IN ({list}) \
                     ORDER BY alias, priority, deployment_id"
                );
                let query = bind_each!(sqlx::query_as(&sql), chunk);
                let members = query.fetch_all(&mut *tx).await?;
                let sql =
                    format!("{TENANT_RESOURCES} WHERE tenant_id IN ({list}) ORDER BY position");
                let query = bind_each!(sqlx::query_as(&sql), chunk);
                let links = query.fetch_all(&mut *tx).await?;
                records.extend(Self::chunk_tenants(rows, members, links));
            }
            tx.commit().await?;
            Ok(records)
        })
    }

    async fn live_keys_by_id(&self, ids: &[Uuid]) -> Result<Vec<KeyRow>> {
        on_pool!(self, |pool| {
            let mut keys = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(BY_ID_CHUNK) {
                let sql = format!(
                    "SELECT * FROM api_keys WHERE id IN ({}) AND revoked_at IS NULL",
                    id_list(chunk.len())
                );
                let query = bind_each!(sqlx::query_as(&sql), chunk);
                let found: Vec<KeyRow> = query.fetch_all(pool).await?;
                keys.extend(found);
            }
            Ok(keys)
        })
    }

    async fn insert_resource(&self, row: &ResourceRow) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO openai_resources \
                 (id, name, endpoint, region, data_zone, credential, owner_tenant, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(row.id)
            .bind(&row.name)
            .bind(&row.endpoint)
            .bind(&row.region)
            .bind(&row.data_zone)
            .bind(&row.credential)
            .bind(&row.owner_tenant)
            .bind(row.created_at)
            .execute(pool)
            .await
            .map_err(on_constraint(|| {
                format!("an OpenAI resource named '{}' exists", row.name)
            }))?;
            Ok(())
        })
    }

    async fn delete_resource(&self, name: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM openai_resources WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .map_err(on_constraint(|| {
                    format!("resource '{name}' or one of its deployments is still in use by a pool or a tenant")
                }))?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn insert_deployment(&self, row: &DeploymentRow) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO openai_deployments \
                 (id, resource_id, name, model, kind, capacity_tpm, owner_tenant, created_at, \
                 deployment_type, model_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(row.id)
            .bind(row.resource_id)
            .bind(&row.name)
            .bind(&row.model)
            .bind(&row.kind)
            .bind(row.capacity_tpm)
            .bind(&row.owner_tenant)
            .bind(row.created_at)
            .bind(&row.deployment_type)
            .bind(&row.model_version)
            .execute(pool)
            .await
            .map_err(on_constraint(|| {
                format!("the resource already has a deployment named '{}'", row.name)
            }))?;
            Ok(())
        })
    }

    async fn delete_deployment(&self, resource_id: Uuid, name: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let done =
                sqlx::query("DELETE FROM openai_deployments WHERE resource_id = $1 AND name = $2")
                    .bind(resource_id)
                    .bind(name)
                    .execute(pool)
                    .await
                    .map_err(on_constraint(|| {
                        format!("deployment '{name}' is still in use by a pool or a tenant")
                    }))?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn insert_pool(&self, row: &PoolRow, members: &[MemberRow]) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let conflict = || format!("a pool with alias '{}' exists", row.alias);
            sqlx::query("INSERT INTO openai_pools (id, alias, created_at) VALUES ($1, $2, $3)")
                .bind(row.id)
                .bind(&row.alias)
                .bind(row.created_at)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(conflict))?;
            for member in members {
                sqlx::query(
                    "INSERT INTO openai_pool_members (pool_id, deployment_id, priority, weight) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(row.id)
                .bind(member.deployment_id)
                .bind(member.priority)
                .bind(member.weight)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(|| {
                    "a member deployment was deleted meanwhile or is listed twice".to_owned()
                }))?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn delete_pool(&self, alias: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM openai_pools WHERE alias = $1")
                .bind(alias)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn insert_service(&self, row: &ServiceRow) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO search_services (id, name, endpoint, region, data_zone, credential, \
                 owner_tenant, index_capacity, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(row.id)
            .bind(&row.name)
            .bind(&row.endpoint)
            .bind(&row.region)
            .bind(&row.data_zone)
            .bind(&row.credential)
            .bind(&row.owner_tenant)
            .bind(row.index_capacity)
            .bind(row.created_at)
            .execute(pool)
            .await
            .map_err(on_constraint(|| {
                format!("a search service named '{}' exists", row.name)
            }))?;
            Ok(())
        })
    }

    async fn delete_service(&self, name: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM search_services WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .map_err(on_constraint(|| {
                    format!("search service '{name}' is still in use by a tenant")
                }))?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn insert_template(&self, row: &TemplateRow) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO index_templates (id, name, definition, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(row.id)
            .bind(&row.name)
            .bind(&row.definition)
            .bind(row.created_at)
            .execute(pool)
            .await
            .map_err(on_constraint(|| {
                format!("an index template named '{}' exists", row.name)
            }))?;
            Ok(())
        })
    }

    async fn delete_template(&self, name: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM index_templates WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn insert_price(&self, row: &PriceRow) -> Result<()> {
        match &self.backend {
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("LOCK TABLE prices IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                insert_price_in!(&mut *tx, row);
                tx.commit().await?;
            }
            Backend::Sqlite(pool) => {
                // SQLite serializes writers: BEGIN IMMEDIATE takes the write lock first.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                insert_price_in!(&mut *tx, row);
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn delete_future_price(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<bool>> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM prices WHERE id = $1 AND effective_from > $2")
                .bind(id)
                .bind(now)
                .execute(pool)
                .await?;
            if done.rows_affected() > 0 {
                return Ok(Some(true));
            }
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM prices WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(exists.map(|_| false))
        })
    }

    async fn insert_console_session(&self, session: &ConsoleSessionRow) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
                .bind(chrono::Utc::now().timestamp())
                .execute(pool)
                .await?;
            sqlx::query(
                "INSERT INTO console_sessions (id_hash, csrf, admin, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&session.id_hash)
            .bind(&session.csrf)
            .bind(&session.admin)
            .bind(session.expires_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    async fn console_session(
        &self,
        id_hash: &str,
        admin: &str,
        now: i64,
    ) -> Result<Option<String>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT csrf FROM console_sessions \
                 WHERE id_hash = $1 AND admin = $2 AND expires_at > $3",
            )
            .bind(id_hash)
            .bind(admin)
            .bind(now)
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn delete_console_session(&self, id_hash: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
                .bind(id_hash)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn insert_tenant(&self, record: &TenantRecord, keys: &[KeyRow]) -> Result<()> {
        let row = &record.row;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(&format!(
                "INSERT INTO tenants ({TENANT_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                 $19, $20, $21)"
            ))
            .bind(row.id)
            .bind(&row.slug)
            .bind(&row.display_name)
            .bind(&row.status)
            .bind(&row.data_zone)
            .bind(&row.openai_isolation)
            .bind(&row.openai_endpoint)
            .bind(&row.openai_region)
            .bind(&row.openai_credential)
            .bind(&row.search_isolation)
            .bind(row.search_service_id)
            .bind(row.tokens_per_minute)
            .bind(row.requests_per_minute)
            .bind(row.monthly_tokens)
            .bind(&row.context_overflow)
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(&row.search_move)
            .bind(row.monthly_budget)
            .bind(row.response_cache_ttl_seconds)
            .bind(row.response_cache_max_bytes)
            .execute(&mut *tx)
            .await
            .map_err(on_constraint(|| {
                format!("a tenant with slug '{}' exists", row.slug)
            }))?;
            for member in &record.members {
                sqlx::query(
                    "INSERT INTO tenant_openai_members \
                     (tenant_id, alias, deployment_id, priority, weight) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(row.id)
                .bind(&member.alias)
                .bind(member.deployment_id)
                .bind(member.priority)
                .bind(member.weight)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(|| {
                    "a deployment was deleted meanwhile or is listed twice for one model".to_owned()
                }))?;
            }
            for (position, resource) in record.resources.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO tenant_openai_resources (tenant_id, resource_id, position) \
                     VALUES ($1, $2, $3)",
                )
                .bind(row.id)
                .bind(resource)
                .bind(i32::try_from(position).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(|| {
                    "a resource was deleted meanwhile or is listed twice".to_owned()
                }))?;
            }
            for key in keys {
                bind_key!(sqlx::query(INSERT_KEY), key)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn update_tenant(&self, record: &TenantRecord) -> Result<()> {
        let row = &record.row;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE tenants SET display_name = $2, status = $3, data_zone = $4, \
                 openai_isolation = $5, openai_endpoint = $6, openai_region = $7, \
                 openai_credential = $8, search_isolation = $9, search_service_id = $10, \
                 tokens_per_minute = $11, requests_per_minute = $12, monthly_tokens = $13, \
                 context_overflow = $14, updated_at = $15, search_move = $16, \
                 monthly_budget = $17, response_cache_ttl_seconds = $18, \
                 response_cache_max_bytes = $19 WHERE id = $1",
            )
            .bind(row.id)
            .bind(&row.display_name)
            .bind(&row.status)
            .bind(&row.data_zone)
            .bind(&row.openai_isolation)
            .bind(&row.openai_endpoint)
            .bind(&row.openai_region)
            .bind(&row.openai_credential)
            .bind(&row.search_isolation)
            .bind(row.search_service_id)
            .bind(row.tokens_per_minute)
            .bind(row.requests_per_minute)
            .bind(row.monthly_tokens)
            .bind(&row.context_overflow)
            .bind(row.updated_at)
            .bind(&row.search_move)
            .bind(row.monthly_budget)
            .bind(row.response_cache_ttl_seconds)
            .bind(row.response_cache_max_bytes)
            .execute(&mut *tx)
            .await
            .map_err(on_constraint(|| {
                "the search service was deleted meanwhile".to_owned()
            }))?;
            if done.rows_affected() == 0 {
                return Err(RegistryError::not_found("tenant", &row.slug));
            }
            sqlx::query("DELETE FROM tenant_openai_members WHERE tenant_id = $1")
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM tenant_openai_resources WHERE tenant_id = $1")
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
            for member in &record.members {
                sqlx::query(
                    "INSERT INTO tenant_openai_members \
                     (tenant_id, alias, deployment_id, priority, weight) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(row.id)
                .bind(&member.alias)
                .bind(member.deployment_id)
                .bind(member.priority)
                .bind(member.weight)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(|| {
                    "a deployment was deleted meanwhile or is listed twice for one model".to_owned()
                }))?;
            }
            for (position, resource) in record.resources.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO tenant_openai_resources (tenant_id, resource_id, position) \
                     VALUES ($1, $2, $3)",
                )
                .bind(row.id)
                .bind(resource)
                .bind(i32::try_from(position).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(|| {
                    "a resource was deleted meanwhile or is listed twice".to_owned()
                }))?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn tenant(&self, slug: &str) -> Result<Option<TenantRecord>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let Some(row): Option<TenantRow> = sqlx::query_as(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1"
            ))
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(None);
            };
            let members = sqlx::query_as(&format!(
                "{TENANT_MEMBERS} WHERE tenant_id = $1 ORDER BY alias, priority, deployment_id"
            ))
            .bind(row.id)
            .fetch_all(&mut *tx)
            .await?;
            let links = sqlx::query_as(&format!(
                "{TENANT_RESOURCES} WHERE tenant_id = $1 ORDER BY position"
            ))
            .bind(row.id)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Self::chunk_tenants(vec![row], members, links).pop())
        })
    }

    async fn tenants_after(
        &self,
        after: &str,
        limit: u32,
        filter: &TenantFilter,
    ) -> Result<Vec<TenantRecord>> {
        let (conditions, values) = filter_sql(filter);
        let last_param = values.len() + 2;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let sql = format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE slug > $1{conditions} \
                 ORDER BY slug LIMIT ${last_param}"
            );
            let query = bind_each!(sqlx::query_as(&sql).bind(after), &values);
            let rows: Vec<TenantRow> = query.bind(i64::from(limit)).fetch_all(&mut *tx).await?;
            let Some(last) = rows.last().map(|r| r.slug.clone()) else {
                return Ok(Vec::new());
            };
            let in_page = format!(
                "tenant_id IN (SELECT id FROM tenants \
                 WHERE slug > $1{conditions} AND slug <= ${last_param})"
            );
            let sql =
                format!("{TENANT_MEMBERS} WHERE {in_page} ORDER BY alias, priority, deployment_id");
            let query = bind_each!(sqlx::query_as(&sql).bind(after), &values);
            let members = query.bind(&last).fetch_all(&mut *tx).await?;
            let sql = format!("{TENANT_RESOURCES} WHERE {in_page} ORDER BY position");
            let query = bind_each!(sqlx::query_as(&sql).bind(after), &values);
            let links = query.bind(&last).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(Self::chunk_tenants(rows, members, links))
        })
    }

    async fn delete_tenant(&self, owned: Owned<'_>) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let in_use = || {
                "a resource reserved for this tenant is still in a shared pool or another placement"
                    .to_owned()
            };
            // The tenant row first: its members and links go with it, which frees the
            // resources reserved for it.
            sqlx::query("DELETE FROM tenants WHERE id = $1")
                .bind(owned.tenant_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM openai_deployments WHERE owner_tenant = $1")
                .bind(owned.slug)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(in_use))?;
            sqlx::query("DELETE FROM openai_resources WHERE owner_tenant = $1")
                .bind(owned.slug)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(in_use))?;
            sqlx::query("DELETE FROM search_services WHERE owner_tenant = $1")
                .bind(owned.slug)
                .execute(&mut *tx)
                .await
                .map_err(on_constraint(in_use))?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn insert_key(&self, row: &KeyRow) -> Result<()> {
        on_pool!(self, |pool| {
            bind_key!(sqlx::query(INSERT_KEY), row)
                .execute(pool)
                .await
                .map_err(on_constraint(|| {
                    "the tenant was removed meanwhile".to_owned()
                }))?;
            Ok(())
        })
    }

    async fn keys(&self, tenant_id: Uuid) -> Result<Vec<KeyRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id",
            )
            .bind(tenant_id)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn revoke_key(&self, tenant_id: Uuid, id: Uuid, at: DateTime<Utc>) -> Result<bool> {
        on_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) \
                 WHERE tenant_id = $1 AND id = $2",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(at)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }
    async fn update_key_limits(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        change: &KeyLimitsChange,
    ) -> Result<Option<KeyRow>> {
        on_pool!(self, |pool| {
            // A flag per column says whether to write it: an absent limit keeps its value.
            Ok(sqlx::query_as(
                "UPDATE api_keys SET \
                 tokens_per_minute = CASE WHEN $3 THEN $4 ELSE tokens_per_minute END, \
                 requests_per_minute = CASE WHEN $5 THEN $6 ELSE requests_per_minute END, \
                 monthly_tokens = CASE WHEN $7 THEN $8 ELSE monthly_tokens END, \
                 monthly_budget = CASE WHEN $9 THEN $10 ELSE monthly_budget END \
                 WHERE tenant_id = $1 AND id = $2 RETURNING *",
            )
            .bind(tenant_id)
            .bind(id)
            .bind(change.tokens_per_minute.is_some())
            .bind(change.tokens_per_minute.flatten())
            .bind(change.requests_per_minute.is_some())
            .bind(change.requests_per_minute.flatten())
            .bind(change.monthly_tokens.is_some())
            .bind(change.monthly_tokens.flatten())
            .bind(change.monthly_budget.is_some())
            .bind(change.monthly_budget.flatten())
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn reseal(&self, row: SealedRow, old: &[u8], new: &[u8]) -> Result<bool> {
        let (sql, id) = match row {
            SealedRow::Resource(id) => (
                "UPDATE openai_resources SET credential = $3 WHERE id = $1 AND credential = $2",
                id,
            ),
            SealedRow::Service(id) => (
                "UPDATE search_services SET credential = $3 WHERE id = $1 AND credential = $2",
                id,
            ),
            SealedRow::Tenant(id) => (
                "UPDATE tenants SET openai_credential = $3 WHERE id = $1 AND openai_credential = $2",
                id,
            ),
        };
        on_pool!(self, |pool| {
            let done = sqlx::query(sql)
                .bind(id)
                .bind(old)
                .bind(new)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
    }
}

// ---- Operations (crate `operations`) ---------------------------------------------------

#[derive(Debug, Clone, FromRow)]
struct OperationRow {
    id: Uuid,
    tenant_id: Uuid,
    tenant_slug: String,
    kind: String,
    status: String,
    phase: String,
    spec: String,
    progress: String,
    error: Option<String>,
    cancel_requested: bool,
    lease_owner: Option<String>,
    lease_until_ms: Option<i64>,
    attempts: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<OperationRow> for operations::Operation {
    type Error = operations::StoreError;

    fn try_from(row: OperationRow) -> Result<Self, Self::Error> {
        let corrupt =
            |what: &str| operations::StoreError::Store(format!("operation {}: {what}", row.id));
        Ok(Self {
            id: row.id,
            tenant_id: row.tenant_id,
            tenant_slug: row.tenant_slug.clone(),
            kind: operations::Kind::parse(&row.kind).ok_or_else(|| corrupt("unknown kind"))?,
            status: operations::Status::parse(&row.status)
                .ok_or_else(|| corrupt("unknown status"))?,
            phase: row.phase.clone(),
            spec: serde_json::from_str(&row.spec).map_err(|_| corrupt("spec is not JSON"))?,
            progress: serde_json::from_str(&row.progress)
                .map_err(|_| corrupt("progress is not JSON"))?,
            error: row
                .error
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("error is not JSON"))?,
            cancel_requested: row.cancel_requested,
            lease_owner: row.lease_owner.clone(),
            lease_until: row
                .lease_until_ms
                .and_then(DateTime::<Utc>::from_timestamp_millis),
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        })
    }
}

fn op_store_error(error: sqlx::Error) -> operations::StoreError {
    operations::StoreError::Store(error.to_string())
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn op_now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

const RUNNABLE: &str = "status = 'notStarted' OR (status = 'running' AND \
    (lease_until_ms IS NULL OR lease_until_ms <= $4))";

#[async_trait]
impl operations::OperationStore for SqlStore {
    async fn insert_operation(
        &self,
        new: &operations::NewOperation,
    ) -> Result<(), operations::StoreError> {
        let inserted = on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO operations (id, tenant_id, tenant_slug, kind, status, phase, spec, \
                 progress, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'notStarted', $5, $6, '{}', $7, $7)",
            )
            .bind(new.id)
            .bind(new.tenant_id)
            .bind(&new.tenant_slug)
            .bind(new.kind.as_str())
            .bind(&new.phase)
            .bind(new.spec.to_string())
            .bind(chrono::SubsecRound::trunc_subsecs(new.created_at, 6))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                match self.active_operation(new.tenant_id).await? {
                    Some(active) => Err(operations::StoreError::Busy(active.id)),
                    None => Err(operations::StoreError::Store(
                        "the operation could not be stored; retry".into(),
                    )),
                }
            }
            Err(error) => Err(op_store_error(error)),
        }
    }

    async fn operation(
        &self,
        id: Uuid,
    ) -> Result<Option<operations::Operation>, operations::StoreError> {
        let row: Option<OperationRow> = on_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM operations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(op_store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn operations(
        &self,
        whose: operations::Whose<'_>,
        status: Option<operations::Status>,
        limit: u32,
    ) -> Result<Vec<operations::Operation>, operations::StoreError> {
        let (tenant, slug) = match whose {
            operations::Whose::Everyone => (None, None),
            operations::Whose::Tenant(id) => (Some(id), None),
            operations::Whose::Slug(slug) => (None, Some(slug)),
        };
        let rows: Vec<OperationRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM operations WHERE ($1 IS NULL OR tenant_id = $1) \
                 AND ($2 IS NULL OR tenant_slug = $2) \
                 AND ($3 IS NULL OR status = $3) ORDER BY id DESC LIMIT $4",
            )
            .bind(tenant)
            .bind(slug)
            .bind(status.map(operations::Status::as_str))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })
        .map_err(op_store_error)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn active_operation(
        &self,
        tenant: Uuid,
    ) -> Result<Option<operations::Operation>, operations::StoreError> {
        let row: Option<OperationRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM operations WHERE tenant_id = $1 \
                 AND status IN ('notStarted', 'running')",
            )
            .bind(tenant)
            .fetch_optional(pool)
            .await
        })
        .map_err(op_store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn claim_operation(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<operations::Operation>, operations::StoreError> {
        let until = millis(operations::lease::until(now, lease));
        // Postgres: a row locked by another replica's claim is skipped, not waited for.
        // SQLite: one writer at a time, so the single statement is atomic as it is.
        let row: Option<OperationRow> = match &self.backend {
            Backend::Postgres(pool) => {
                sqlx::query_as(&format!(
                    "UPDATE operations SET status = 'running', lease_owner = $1, \
                 lease_until_ms = $2, attempts = attempts + 1, updated_at = $3 \
                 WHERE id = (SELECT id FROM operations WHERE {RUNNABLE} \
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *"
                ))
                .bind(owner)
                .bind(until)
                .bind(op_now())
                .bind(millis(now))
                .fetch_optional(pool)
                .await
            }
            Backend::Sqlite(pool) => {
                sqlx::query_as(&format!(
                    "UPDATE operations SET status = 'running', lease_owner = $1, \
                 lease_until_ms = $2, attempts = attempts + 1, updated_at = $3 \
                 WHERE id = (SELECT id FROM operations WHERE {RUNNABLE} \
                 ORDER BY id LIMIT 1) RETURNING *"
                ))
                .bind(owner)
                .bind(until)
                .bind(op_now())
                .bind(millis(now))
                .fetch_optional(pool)
                .await
            }
        }
        .map_err(op_store_error)?;
        row.map(TryInto::try_into).transpose()
    }

    async fn heartbeat_operation(
        &self,
        id: Uuid,
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<bool>, operations::StoreError> {
        let row: Option<(bool,)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE operations SET lease_until_ms = $3 WHERE id = $1 AND lease_owner = $2 \
                 AND status = 'running' RETURNING cancel_requested",
            )
            .bind(id)
            .bind(owner)
            .bind(millis(lease_until))
            .fetch_optional(pool)
            .await
        })
        .map_err(op_store_error)?;
        Ok(row.map(|(cancel,)| cancel))
    }

    async fn checkpoint_operation(
        &self,
        id: Uuid,
        owner: &str,
        phase: &str,
        progress: &serde_json::Value,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<bool>, operations::StoreError> {
        let row: Option<(bool,)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "UPDATE operations SET phase = $3, progress = $4, lease_until_ms = $5, \
                 updated_at = $6 WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
                 RETURNING cancel_requested",
            )
            .bind(id)
            .bind(owner)
            .bind(phase)
            .bind(progress.to_string())
            .bind(millis(lease_until))
            .bind(op_now())
            .fetch_optional(pool)
            .await
        })
        .map_err(op_store_error)?;
        Ok(row.map(|(cancel,)| cancel))
    }

    async fn finish_operation(
        &self,
        id: Uuid,
        owner: &str,
        status: operations::Status,
        error: Option<&operations::OperationError>,
    ) -> Result<bool, operations::StoreError> {
        let error = error.and_then(|e| serde_json::to_string(e).ok());
        let now = op_now();
        let done = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE operations SET status = $3, error = $4, lease_owner = NULL, \
                 lease_until_ms = NULL, updated_at = $5, finished_at = $5 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
            )
            .bind(id)
            .bind(owner)
            .bind(status.as_str())
            .bind(error)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(op_store_error)?;
        Ok(done > 0)
    }

    async fn request_cancel(
        &self,
        id: Uuid,
    ) -> Result<Option<operations::Operation>, operations::StoreError> {
        let now = op_now();
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE operations SET status = CASE WHEN status = 'notStarted' \
                 THEN 'canceled' ELSE status END, \
                 finished_at = CASE WHEN status = 'notStarted' THEN $2 ELSE finished_at END, \
                 cancel_requested = CASE WHEN status = 'running' THEN true \
                 ELSE cancel_requested END, updated_at = $2 \
                 WHERE id = $1 AND status IN ('notStarted', 'running')",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
        .map_err(op_store_error)?;
        operations::OperationStore::operation(self, id).await
    }
}
