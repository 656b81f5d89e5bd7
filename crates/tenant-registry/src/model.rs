//! What the registry holds, in two shapes: the `New*` and `*Patch` inputs that admins send
//! (with write-only secrets), and the public views that any admin response may show (no
//! secret ever; credentials are write-only).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use entra::CredentialSpec;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::names::{
    DataZone, DeploymentName, Endpoint, IndexName, ModelAlias, Region, ResourceName, TenantSlug,
};

/// Fields of an index template that are the gateway's own: a template may not define them.
pub const RESERVED_FIELD_PREFIX: &str = "bulkhead";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
    /// Set by DELETE; the tenant is refused everywhere while its data is removed.
    Offboarding,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Offboarding => "offboarding",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "offboarding" => Some(Self::Offboarding),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyScope {
    Read,
    #[default]
    ReadWrite,
}

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::ReadWrite => "read-write",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "read" => Some(Self::Read),
            "read-write" => Some(Self::ReadWrite),
            _ => None,
        }
    }

    /// Whether a credential of this scope may call a route that needs `needed`.
    pub fn allows(self, needed: KeyScope) -> bool {
        self == Self::ReadWrite || needed == Self::Read
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    #[default]
    Standard,
    /// Provisioned throughput (PTU): tried before pay-as-you-go members.
    Provisioned,
}

impl DeploymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Provisioned => "provisioned",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "standard" => Some(Self::Standard),
            "provisioned" => Some(Self::Provisioned),
            _ => None,
        }
    }
}

/// How Azure bills a deployment: its deployment type (SKU). Prices apply per type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentType {
    GlobalStandard,
    DataZoneStandard,
    /// Standard in one region.
    RegionalStandard,
    /// Provisioned throughput (PTU), global, data zone or regional.
    Provisioned,
    Batch,
}

impl DeploymentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlobalStandard => "global_standard",
            Self::DataZoneStandard => "data_zone_standard",
            Self::RegionalStandard => "regional_standard",
            Self::Provisioned => "provisioned",
            Self::Batch => "batch",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        [
            Self::GlobalStandard,
            Self::DataZoneStandard,
            Self::RegionalStandard,
            Self::Provisioned,
            Self::Batch,
        ]
        .into_iter()
        .find(|t| t.as_str() == value)
    }

    /// The type of a deployment that names none: provisioned for a provisioned one, else
    /// global standard (Azure's default for new deployments).
    pub fn default_for(kind: DeploymentKind) -> Self {
        match kind {
            DeploymentKind::Provisioned => Self::Provisioned,
            DeploymentKind::Standard => Self::GlobalStandard,
        }
    }
}

/// What the gateway does with a chat request that does not fit the model's context window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContextOverflow {
    /// Refuse it, as Azure would.
    #[default]
    Reject,
    /// Drop the oldest messages until it fits; system and developer messages and the last
    /// user message are kept.
    TruncateOldest,
}

impl ContextOverflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::TruncateOldest => "truncate_oldest",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "reject" => Some(Self::Reject),
            "truncate_oldest" => Some(Self::TruncateOldest),
            _ => None,
        }
    }
}

/// A tenant's or an API key's limits; `None` is unlimited. A key's limits apply on top of
/// its tenant's (a call must fit both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub monthly_tokens: Option<u64>,
    /// Spending a month, in the price table's currency (a decimal string): calls are
    /// reserved at their estimate priced at the output cap, settled to their cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget: Option<crate::prices::Micros>,
}

/// A tenant's response cache, set by the admin (`null`: the cache is off, the default).
/// Answers are kept `ttl_seconds` and the tenant's entries take at most `max_bytes` (in Redis,
/// and in each replica's memory); past it, the entries that expire first are evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheSettings {
    pub ttl_seconds: u32,
    pub max_bytes: u64,
}

impl ResponseCacheSettings {
    /// The longest TTL: a month (a cached answer is a model's answer of that day).
    pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;
    /// The smallest bound: one small answer.
    pub const MIN_BYTES: u64 = 1024;
    /// The largest bound: 1 TiB (a bound, not an allocation).
    pub const MAX_BYTES: u64 = 1 << 40;
}

/// A change to some of a tenant's or a key's limits: a field absent keeps its value, `null`
/// removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    #[serde(default, deserialize_with = "present")]
    pub tokens_per_minute: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub requests_per_minute: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub monthly_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    pub monthly_budget: Option<Option<crate::prices::Micros>>,
}

impl LimitsPatch {
    pub fn apply(self, limits: &mut Limits) {
        if let Some(v) = self.tokens_per_minute {
            limits.tokens_per_minute = v;
        }
        if let Some(v) = self.requests_per_minute {
            limits.requests_per_minute = v;
        }
        if let Some(v) = self.monthly_tokens {
            limits.monthly_tokens = v;
        }
        if let Some(v) = self.monthly_budget {
            limits.monthly_budget = v;
        }
    }
}

/// Distinguishes a field that is present with `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Serde builds a struct from a JSON array as readily as from an object (`{"limits": []}`
/// would read as empty limits, `{"members": [["a/b"]]}` as a member). These read values that
/// must be objects, without losing the path of an error inside them.
mod objects {
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    /// A deserializer that reads a struct (or an internally tagged enum) only from a map.
    struct MapOnly<D>(D);

    macro_rules! forward {
        ($($method:ident),*) => {
            $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method(visitor)
            })*
        };
    }

    impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
        type Error = D::Error;

        // An internally tagged enum asks for "any": it gets a map or an error.
        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.deserialize_map(visitor)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_map(visitor)
        }

        forward!(
            deserialize_bool,
            deserialize_i8,
            deserialize_i16,
            deserialize_i32,
            deserialize_i64,
            deserialize_u8,
            deserialize_u16,
            deserialize_u32,
            deserialize_u64,
            deserialize_f32,
            deserialize_f64,
            deserialize_char,
            deserialize_str,
            deserialize_string,
            deserialize_bytes,
            deserialize_byte_buf,
            deserialize_option,
            deserialize_unit,
            deserialize_seq,
            deserialize_map,
            deserialize_identifier,
            deserialize_ignored_any
        );

        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_unit_struct(name, visitor)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_newtype_struct(name, visitor)
        }

        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple(len, visitor)
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_tuple_struct(name, len, visitor)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, D::Error> {
            self.0.deserialize_enum(name, variants, visitor)
        }
    }

    /// A `T` read from an object.
    struct Object<T>(T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            T::deserialize(MapOnly(d)).map(Object)
        }
    }

    /// An object.
    pub fn required<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
        Object::<T>::deserialize(d).map(|o| o.0)
    }

    /// An object, or `null`.
    pub fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<Object<T>>::deserialize(d).map(|o| o.map(|o| o.0))
    }

    /// An object, never `null` (absent is `None` through `#[serde(default)]`).
    pub fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        required(d).map(Some)
    }

    /// Present (`Some`), as an object or `null`; absent is `None`.
    pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        optional(d).map(Some)
    }

    /// An array of objects.
    pub fn each<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        struct Each<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Each<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(Object(item)) = seq.next_element::<Object<T>>()? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Each(std::marker::PhantomData))
    }
}

/// A field that may be absent (`None`, with `#[serde(default)]`) but never `null`: for
/// fields whose `null` would mean nothing (a tenant's name, its status).
pub fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `resource/deployment`: how admins name a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentRef {
    pub resource: ResourceName,
    pub deployment: DeploymentName,
}

impl TryFrom<String> for DeploymentRef {
    type Error = crate::names::InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let Some((resource, deployment)) = value.split_once('/') else {
            return Err(crate::names::InvalidName(
                "deployment must be written as resource/deployment".into(),
            ));
        };
        Ok(Self {
            resource: ResourceName::parse(resource)?,
            deployment: DeploymentName::parse(deployment)?,
        })
    }
}

impl From<DeploymentRef> for String {
    fn from(value: DeploymentRef) -> String {
        format!("{}/{}", value.resource, value.deployment)
    }
}

impl std::fmt::Display for DeploymentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.resource, self.deployment)
    }
}

/// One member of a pool: lower `priority` is tried first; `weight` shares load inside a priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub deployment: DeploymentRef,
    #[serde(default)]
    pub priority: u32,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Where a tenant's Azure OpenAI calls go, as an admin writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "isolation", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpenAiPlacementSpec {
    /// The shared pools, by alias. (A struct variant: serde lets unknown fields through on a
    /// unit variant of an internally tagged enum, even with `deny_unknown_fields`.)
    Shared {},
    /// Deployments owned by the tenant (usually in shared resources), by alias.
    DedicatedDeployment {
        models: BTreeMap<ModelAlias, Vec<Member>>,
    },
    /// Resources owned by the tenant; an alias is a deployment name on each of them.
    DedicatedResource { resources: Vec<ResourceName> },
    /// The tenant's own Azure OpenAI resource, reached with its key or its own service
    /// principal (`auth` of kind `client_secret`): exactly one of the two.
    TenantProvided {
        endpoint: Endpoint,
        #[serde(default)]
        api_key: Option<SecretString>,
        #[serde(default)]
        auth: Option<CredentialSpec>,
        region: Region,
    },
}

/// The public view of an OpenAI placement (a tenant-provided key is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "isolation", rename_all = "snake_case")]
pub enum OpenAiPlacement {
    Shared,
    DedicatedDeployment {
        models: BTreeMap<ModelAlias, Vec<Member>>,
    },
    DedicatedResource {
        resources: Vec<ResourceName>,
    },
    TenantProvided {
        endpoint: Endpoint,
        region: Region,
    },
}

impl OpenAiPlacement {
    pub fn isolation(&self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::DedicatedDeployment { .. } => "dedicated_deployment",
            Self::DedicatedResource { .. } => "dedicated_resource",
            Self::TenantProvided { .. } => "tenant_provided",
        }
    }
}

/// Where a tenant's Azure AI Search calls go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "isolation", rename_all = "snake_case", deny_unknown_fields)]
pub enum SearchPlacement {
    /// Shared indexes on a shared service, filtered by a tenant field.
    SharedIndex { service: ResourceName },
    /// An index of the tenant's own on a shared service.
    DedicatedIndex { service: ResourceName },
    /// A service owned by the tenant.
    DedicatedService { service: ResourceName },
}

impl SearchPlacement {
    pub fn isolation(&self) -> &'static str {
        match self {
            Self::SharedIndex { .. } => "shared_index",
            Self::DedicatedIndex { .. } => "dedicated_index",
            Self::DedicatedService { .. } => "dedicated_service",
        }
    }

    pub fn service(&self) -> &ResourceName {
        match self {
            Self::SharedIndex { service }
            | Self::DedicatedIndex { service }
            | Self::DedicatedService { service } => service,
        }
    }

    /// Whether the placement needs a service owned by the tenant (else a shared one).
    pub fn needs_owned_service(&self) -> bool {
        matches!(self, Self::DedicatedService { .. })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub slug: TenantSlug,
    pub display_name: String,
    #[serde(default)]
    pub data_zone: Option<DataZone>,
    #[serde(default, deserialize_with = "objects::optional")]
    pub openai: Option<OpenAiPlacementSpec>,
    #[serde(default, deserialize_with = "objects::optional")]
    pub search: Option<SearchPlacement>,
    #[serde(default, deserialize_with = "objects::required")]
    pub limits: Limits,
    #[serde(default)]
    pub context_overflow: ContextOverflow,
    #[serde(default, deserialize_with = "objects::optional")]
    pub response_cache: Option<ResponseCacheSettings>,
}

/// A change to a tenant: absent fields keep their value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default, deserialize_with = "not_null")]
    pub display_name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    pub status: Option<TenantStatus>,
    #[serde(default, deserialize_with = "present")]
    pub data_zone: Option<Option<DataZone>>,
    #[serde(default, deserialize_with = "objects::present")]
    pub openai: Option<Option<OpenAiPlacementSpec>>,
    #[serde(default, deserialize_with = "objects::present")]
    pub search: Option<Option<SearchPlacement>>,
    #[serde(default, deserialize_with = "objects::not_null")]
    pub limits: Option<LimitsPatch>,
    #[serde(default, deserialize_with = "not_null")]
    pub context_overflow: Option<ContextOverflow>,
    /// Replaces the whole setting; `null` turns the cache off.
    #[serde(default, deserialize_with = "objects::present")]
    pub response_cache: Option<Option<ResponseCacheSettings>>,
}

/// A search move in progress: where the tenant's documents are being copied (index batches
/// also go there), and whether its writes are held while the move switches over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchMove {
    /// The operation moving the tenant.
    pub operation: Uuid,
    pub to: SearchPlacement,
    /// Writes are held (not refused) until the switch.
    #[serde(default)]
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: TenantSlug,
    pub display_name: String,
    pub status: TenantStatus,
    pub data_zone: Option<DataZone>,
    pub openai: Option<OpenAiPlacement>,
    pub search: Option<SearchPlacement>,
    pub limits: Limits,
    pub context_overflow: ContextOverflow,
    /// The response cache; `None`: off.
    pub response_cache: Option<ResponseCacheSettings>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A search move in progress, if any.
    pub search_move: Option<SearchMove>,
}

/// The public side of an upstream credential: its kind and the principal it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthView {
    /// `api_key`, `client_secret`, `workload_identity` or `managed_identity`; `unreadable`
    /// when it does not open under the current master key.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl AuthView {
    pub fn of(auth: &entra::UpstreamAuth) -> Self {
        match auth {
            entra::UpstreamAuth::ApiKey(_) => Self {
                kind: "api_key",
                client_id: None,
            },
            entra::UpstreamAuth::Entra(credential) => Self {
                kind: credential.spec().kind(),
                client_id: credential.spec().client_id().map(str::to_owned),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOpenAiResource {
    pub name: ResourceName,
    pub endpoint: Endpoint,
    pub region: Region,
    #[serde(default)]
    pub data_zone: Option<DataZone>,
    /// The key (sent as `api-key`), or else `auth`: exactly one of the two.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// An Entra ID credential (`client_secret`, `workload_identity`, `managed_identity`).
    #[serde(default)]
    pub auth: Option<CredentialSpec>,
    /// The tenant this resource is reserved for; `None` makes it shared.
    #[serde(default)]
    pub owner_tenant: Option<TenantSlug>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenAiResource {
    pub id: Uuid,
    pub name: ResourceName,
    pub endpoint: Endpoint,
    pub region: Region,
    pub data_zone: Option<DataZone>,
    pub owner_tenant: Option<TenantSlug>,
    pub created_at: DateTime<Utc>,
    /// How the gateway authenticates to it (never the secret); filled in by the admin
    /// reads, absent where the view is built without opening credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthView>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDeployment {
    pub resource: ResourceName,
    pub name: DeploymentName,
    pub model: String,
    /// The model version (`2024-08-06`), when known: prices may name one.
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub kind: DeploymentKind,
    /// How Azure bills it; by default follows `kind` (provisioned, else global standard).
    #[serde(default)]
    pub deployment_type: Option<DeploymentType>,
    pub capacity_tpm: u64,
    /// A deployment of a tenant's own in a shared resource. In an owned resource it must be
    /// the resource's owner (or absent, which means the same).
    #[serde(default)]
    pub owner_tenant: Option<TenantSlug>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub id: Uuid,
    pub resource: ResourceName,
    pub name: DeploymentName,
    pub model: String,
    pub model_version: Option<String>,
    pub kind: DeploymentKind,
    pub deployment_type: DeploymentType,
    pub capacity_tpm: u64,
    pub owner_tenant: Option<TenantSlug>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPool {
    pub alias: ModelAlias,
    #[serde(deserialize_with = "objects::each")]
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    pub id: Uuid,
    pub alias: ModelAlias,
    pub members: Vec<Member>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSearchService {
    pub name: ResourceName,
    pub endpoint: Endpoint,
    pub region: Region,
    #[serde(default)]
    pub data_zone: Option<DataZone>,
    /// The key (sent as `api-key`), or else `auth`: exactly one of the two.
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// An Entra ID credential (`client_secret`, `workload_identity`, `managed_identity`).
    #[serde(default)]
    pub auth: Option<CredentialSpec>,
    #[serde(default)]
    pub owner_tenant: Option<TenantSlug>,
    /// How many indexes the service's tier allows (Basic 15, S1 50, S2/S3 200).
    #[serde(default = "default_index_capacity")]
    pub index_capacity: u32,
}

fn default_index_capacity() -> u32 {
    50
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchService {
    pub id: Uuid,
    pub name: ResourceName,
    pub endpoint: Endpoint,
    pub region: Region,
    pub data_zone: Option<DataZone>,
    pub owner_tenant: Option<TenantSlug>,
    pub index_capacity: u32,
    pub created_at: DateTime<Utc>,
    /// How the gateway authenticates to it (never the secret); filled in by the admin
    /// reads, absent where the view is built without opening credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthView>,
}

/// An index definition in Azure's shape, named by its logical name; `fields` is required,
/// the rest (`suggesters`, `vectorSearch`, `scoringProfiles`, ...) is kept as given.
#[derive(Debug, Clone, Deserialize)]
pub struct NewIndexTemplate {
    pub name: IndexName,
    #[serde(flatten)]
    pub definition: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexTemplate {
    pub id: Uuid,
    pub name: IndexName,
    #[serde(flatten)]
    pub definition: serde_json::Map<String, serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    #[serde(default)]
    pub scope: KeyScope,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own limits, on top of its tenant's.
    #[serde(default, deserialize_with = "objects::required")]
    pub limits: Limits,
}

/// One item of a bulk onboarding: a tenant and the keys to issue it.
#[derive(Debug, Clone)]
pub struct NewTenantWithKeys {
    pub tenant: NewTenant,
    pub keys: Vec<NewApiKey>,
}

/// A tenant onboarded in bulk, with its keys and their secrets (shown once).
#[derive(Debug)]
pub struct Onboarded {
    pub tenant: Tenant,
    pub keys: Vec<(ApiKey, SecretString)>,
}

/// A change to a key: absent fields keep their value. Only its limits can change; its name,
/// scope and expiry are fixed when it is issued.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyPatch {
    #[serde(default, deserialize_with = "objects::not_null")]
    pub limits: Option<LimitsPatch>,
}

/// An API key as admins see it: never the secret, only its last four characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant: TenantSlug,
    pub name: String,
    pub scope: KeyScope,
    pub hint: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub limits: Limits,
    pub created_at: DateTime<Utc>,
}

/// What a tenant listing narrows to; every part is optional and they all hold together.
/// Built from the admin API's query (`slug_prefix`, `status`, `openai`, `search`) by
/// [`TenantFilter::parse`], which checks each value, so the store can trust it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantFilter {
    /// Slugs that start with this (lowercase letters, digits and hyphens).
    pub slug_prefix: Option<String>,
    pub status: Option<TenantStatus>,
    /// An OpenAI isolation (`shared`, ...), or `none` for tenants without an OpenAI placement.
    pub openai: Option<Isolation>,
    /// A search isolation (`shared_index`, ...), or `none` for tenants without one.
    pub search: Option<Isolation>,
}

/// A placement filter: one isolation model, or none placed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    Is(&'static str),
    Unplaced,
}

const OPENAI_ISOLATIONS: [&str; 4] = [
    "shared",
    "dedicated_deployment",
    "dedicated_resource",
    "tenant_provided",
];
const SEARCH_ISOLATIONS: [&str; 3] = ["shared_index", "dedicated_index", "dedicated_service"];

impl TenantFilter {
    /// Checks each part; the error names the query parameter at fault.
    pub fn parse(
        slug_prefix: Option<&str>,
        status: Option<&str>,
        openai: Option<&str>,
        search: Option<&str>,
    ) -> Result<Self, (&'static str, String)> {
        if let Some(prefix) = slug_prefix {
            let fine = !prefix.is_empty()
                && prefix.len() <= 40
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !fine {
                return Err((
                    "slug_prefix",
                    "must be 1 to 40 lowercase letters, digits or hyphens".into(),
                ));
            }
        }
        let status = status
            .map(|s| {
                TenantStatus::from_db(s).ok_or((
                    "status",
                    "must be one of active, suspended, offboarding".to_owned(),
                ))
            })
            .transpose()?;
        let isolation = |field: &'static str, value: Option<&str>, known: &[&'static str]| {
            value
                .map(|v| match known.iter().find(|k| **k == v) {
                    Some(k) => Ok(Isolation::Is(k)),
                    None if v == "none" => Ok(Isolation::Unplaced),
                    None => Err((field, format!("must be one of {}, none", known.join(", ")))),
                })
                .transpose()
        };
        Ok(Self {
            slug_prefix: slug_prefix.map(str::to_owned),
            status,
            openai: isolation("openai", openai, &OPENAI_ISOLATIONS)?,
            search: isolation("search", search, &SEARCH_ISOLATIONS)?,
        })
    }
}

/// A page of a listing and the cursor of the next one.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next: Option<String>,
}
