//! Rows turned into validated views, with the id maps that join them. Reading a value the
//! current code would refuse to write is a [`RegistryError::Corrupt`], never a panic.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::model::{
    ContextOverflow, Deployment, DeploymentKind, DeploymentRef, DeploymentType, IndexTemplate,
    Limits, Member, OpenAiPlacement, OpenAiResource, Pool, ResponseCacheSettings, SearchPlacement,
    SearchService, Tenant, TenantStatus,
};
use crate::names::{
    DataZone, DeploymentName, Endpoint, IndexName, ModelAlias, Region, ResourceName, TenantSlug,
};
use crate::prices::{Micros, Price, PriceBook};
use crate::store::{CatalogRows, MemberRow, PriceRow, TenantRecord};
use crate::RegistryError;

type Result<T> = std::result::Result<T, RegistryError>;

pub(crate) fn parse<T, E: std::fmt::Display>(
    what: &str,
    value: impl Into<String>,
    parse: impl FnOnce(String) -> std::result::Result<T, E>,
) -> Result<T> {
    let value = value.into();
    parse(value).map_err(|e| RegistryError::Corrupt(format!("{what}: {e}")))
}

fn opt<T, E: std::fmt::Display>(
    what: &str,
    value: Option<String>,
    f: impl FnOnce(String) -> std::result::Result<T, E>,
) -> Result<Option<T>> {
    value.map(|v| parse(what, v, f)).transpose()
}

fn unsigned(what: &str, value: Option<i64>) -> Result<Option<u64>> {
    value
        .map(|v| u64::try_from(v).map_err(|_| RegistryError::Corrupt(format!("{what}: {v}"))))
        .transpose()
}

/// Limits read from their four columns (a tenant's or a key's).
pub(crate) fn limits(
    tokens_per_minute: Option<i64>,
    requests_per_minute: Option<i64>,
    monthly_tokens: Option<i64>,
    monthly_budget: Option<i64>,
) -> Result<Limits> {
    Ok(Limits {
        tokens_per_minute: unsigned("tokens per minute", tokens_per_minute)?,
        requests_per_minute: unsigned("requests per minute", requests_per_minute)?,
        monthly_tokens: unsigned("monthly tokens", monthly_tokens)?,
        monthly_budget: unsigned("monthly budget", monthly_budget)?.map(Micros),
    })
}

pub(crate) fn to_u32(what: &str, value: i32) -> Result<u32> {
    u32::try_from(value).map_err(|_| RegistryError::Corrupt(format!("{what}: {value}")))
}

fn micros(what: &str, value: i64) -> Result<Micros> {
    Ok(Micros(unsigned(what, Some(value))?.unwrap_or_default()))
}

fn price(row: PriceRow) -> Result<Price> {
    let deployment_type = DeploymentType::from_db(&row.deployment_type).ok_or_else(|| {
        RegistryError::Corrupt(format!("deployment type {}", row.deployment_type))
    })?;
    let input = micros("input price", row.input_per_million)?;
    Ok(Price {
        id: row.id,
        model: row.model,
        model_version: (!row.model_version.is_empty()).then_some(row.model_version),
        deployment_type,
        deployment: match row.deployment.as_str() {
            "" => None,
            _ => Some(parse(
                "price deployment",
                row.deployment,
                DeploymentRef::try_from,
            )?),
        },
        currency: row.currency,
        input_per_million: input,
        cached_input_per_million: match row.cached_input_per_million {
            Some(v) => micros("cached input price", v)?,
            None => input,
        },
        output_per_million: micros("output price", row.output_per_million)?,
        monthly_cost: row
            .monthly_cost
            .map(|v| micros("monthly cost", v))
            .transpose()?,
        effective_from: row.effective_from,
        created_at: row.created_at,
    })
}

#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub view: OpenAiResource,
    pub sealed: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct DeploymentEntry {
    pub view: Deployment,
    pub resource_id: Uuid,
    /// The deployment's own owner, or its resource's.
    pub owner: Option<TenantSlug>,
}

#[derive(Debug, Clone)]
pub struct ServiceEntry {
    pub view: SearchService,
    pub sealed: Vec<u8>,
}

/// The upstream side of the registry, keyed by name, with id maps.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub resources: BTreeMap<ResourceName, ResourceEntry>,
    pub deployments: BTreeMap<DeploymentRef, DeploymentEntry>,
    pub pools: BTreeMap<ModelAlias, Pool>,
    pub services: BTreeMap<ResourceName, ServiceEntry>,
    pub templates: BTreeMap<IndexName, IndexTemplate>,
    pub prices: PriceBook,
    resource_names: HashMap<Uuid, ResourceName>,
    deployment_refs: HashMap<Uuid, DeploymentRef>,
    service_names: HashMap<Uuid, ResourceName>,
}

impl Catalog {
    pub fn from_rows(rows: CatalogRows) -> Result<Self> {
        let mut catalog = Catalog::default();
        for row in rows.resources {
            let name = parse("resource name", row.name, ResourceName::parse)?;
            let view = OpenAiResource {
                id: row.id,
                name: name.clone(),
                endpoint: parse("endpoint", row.endpoint, Endpoint::parse)?,
                region: parse("region", row.region, Region::parse)?,
                data_zone: opt("data zone", row.data_zone, DataZone::parse)?,
                owner_tenant: opt("owner", row.owner_tenant, TenantSlug::parse)?,
                created_at: row.created_at,
                auth: None,
            };
            catalog.resource_names.insert(row.id, name.clone());
            catalog.resources.insert(
                name,
                ResourceEntry {
                    view,
                    sealed: row.credential,
                },
            );
        }
        for row in rows.deployments {
            let resource = catalog.resource_name(row.resource_id)?.clone();
            let resource_owner = catalog
                .resources
                .get(&resource)
                .and_then(|r| r.view.owner_tenant.clone());
            let name = parse("deployment name", row.name, DeploymentName::parse)?;
            let owner_tenant = opt("owner", row.owner_tenant, TenantSlug::parse)?;
            let reference = DeploymentRef {
                resource: resource.clone(),
                deployment: name.clone(),
            };
            let kind = DeploymentKind::from_db(&row.kind)
                .ok_or_else(|| RegistryError::Corrupt(format!("kind {}", row.kind)))?;
            let deployment_type = match row.deployment_type.as_deref() {
                None => DeploymentType::default_for(kind),
                Some(t) => DeploymentType::from_db(t)
                    .ok_or_else(|| RegistryError::Corrupt(format!("deployment type {t}")))?,
            };
            let view = Deployment {
                id: row.id,
                resource,
                name,
                model: row.model,
                model_version: row.model_version,
                kind,
                deployment_type,
                capacity_tpm: unsigned("capacity", Some(row.capacity_tpm))?.unwrap_or(0),
                owner_tenant: owner_tenant.clone(),
                created_at: row.created_at,
            };
            catalog.deployment_refs.insert(row.id, reference.clone());
            catalog.deployments.insert(
                reference,
                DeploymentEntry {
                    view,
                    resource_id: row.resource_id,
                    owner: owner_tenant.or(resource_owner),
                },
            );
        }
        let mut members: HashMap<Uuid, Vec<Member>> = HashMap::new();
        for row in &rows.pool_members {
            members
                .entry(row.owner)
                .or_default()
                .push(catalog.member(row)?);
        }
        for row in rows.pools {
            let alias = parse("alias", row.alias, ModelAlias::parse)?;
            catalog.pools.insert(
                alias.clone(),
                Pool {
                    id: row.id,
                    alias,
                    members: members.remove(&row.id).unwrap_or_default(),
                    created_at: row.created_at,
                },
            );
        }
        for row in rows.services {
            let name = parse("service name", row.name, ResourceName::parse)?;
            let view = SearchService {
                id: row.id,
                name: name.clone(),
                endpoint: parse("endpoint", row.endpoint, Endpoint::parse)?,
                region: parse("region", row.region, Region::parse)?,
                data_zone: opt("data zone", row.data_zone, DataZone::parse)?,
                owner_tenant: opt("owner", row.owner_tenant, TenantSlug::parse)?,
                index_capacity: to_u32("index capacity", row.index_capacity)?,
                created_at: row.created_at,
                auth: None,
            };
            catalog.service_names.insert(row.id, name.clone());
            catalog.services.insert(
                name,
                ServiceEntry {
                    view,
                    sealed: row.credential,
                },
            );
        }
        for row in rows.templates {
            let name = parse("template name", row.name, IndexName::parse)?;
            catalog.templates.insert(
                name.clone(),
                IndexTemplate {
                    id: row.id,
                    name,
                    definition: row.definition.0,
                    created_at: row.created_at,
                },
            );
        }
        let prices = rows
            .prices
            .into_iter()
            .map(price)
            .collect::<Result<Vec<_>>>()?;
        catalog.prices = PriceBook::new(prices);
        Ok(catalog)
    }

    fn resource_name(&self, id: Uuid) -> Result<&ResourceName> {
        self.resource_names
            .get(&id)
            .ok_or_else(|| RegistryError::Corrupt(format!("unknown resource id {id}")))
    }

    fn member(&self, row: &MemberRow) -> Result<Member> {
        Ok(Member {
            deployment: self
                .deployment_refs
                .get(&row.deployment_id)
                .cloned()
                .ok_or_else(|| {
                    RegistryError::Corrupt(format!("unknown deployment id {}", row.deployment_id))
                })?,
            priority: to_u32("priority", row.priority)?,
            weight: to_u32("weight", row.weight)?,
        })
    }

    /// The public view of a tenant record.
    pub fn tenant(&self, record: &TenantRecord) -> Result<Tenant> {
        let row = &record.row;
        let openai = match row.openai_isolation.as_deref() {
            None => None,
            Some("shared") => Some(OpenAiPlacement::Shared),
            Some("dedicated_deployment") => {
                let mut models: BTreeMap<ModelAlias, Vec<Member>> = BTreeMap::new();
                for member in &record.members {
                    let alias = parse("alias", member.alias.clone(), ModelAlias::parse)?;
                    models.entry(alias).or_default().push(self.member(member)?);
                }
                Some(OpenAiPlacement::DedicatedDeployment { models })
            }
            Some("dedicated_resource") => Some(OpenAiPlacement::DedicatedResource {
                resources: record
                    .resources
                    .iter()
                    .map(|id| self.resource_name(*id).cloned())
                    .collect::<Result<_>>()?,
            }),
            Some("tenant_provided") => Some(OpenAiPlacement::TenantProvided {
                endpoint: parse(
                    "endpoint",
                    row.openai_endpoint.clone().unwrap_or_default(),
                    Endpoint::parse,
                )?,
                region: parse(
                    "region",
                    row.openai_region.clone().unwrap_or_default(),
                    Region::parse,
                )?,
            }),
            Some(other) => return Err(RegistryError::Corrupt(format!("isolation {other}"))),
        };
        let search = match (row.search_isolation.as_deref(), row.search_service_id) {
            (None, _) => None,
            (Some(isolation), Some(id)) => {
                let service =
                    self.service_names.get(&id).cloned().ok_or_else(|| {
                        RegistryError::Corrupt(format!("unknown service id {id}"))
                    })?;
                Some(match isolation {
                    "shared_index" => SearchPlacement::SharedIndex { service },
                    "dedicated_index" => SearchPlacement::DedicatedIndex { service },
                    "dedicated_service" => SearchPlacement::DedicatedService { service },
                    other => return Err(RegistryError::Corrupt(format!("isolation {other}"))),
                })
            }
            (Some(_), None) => {
                return Err(RegistryError::Corrupt(
                    "search placement without service".into(),
                ))
            }
        };
        Ok(Tenant {
            id: row.id,
            slug: parse("slug", row.slug.clone(), TenantSlug::parse)?,
            display_name: row.display_name.clone(),
            status: TenantStatus::from_db(&row.status)
                .ok_or_else(|| RegistryError::Corrupt(format!("status {}", row.status)))?,
            data_zone: opt("data zone", row.data_zone.clone(), DataZone::parse)?,
            openai,
            search,
            limits: limits(
                row.tokens_per_minute,
                row.requests_per_minute,
                row.monthly_tokens,
                row.monthly_budget,
            )?,
            context_overflow: ContextOverflow::from_db(&row.context_overflow).ok_or_else(|| {
                RegistryError::Corrupt(format!("context overflow {}", row.context_overflow))
            })?,
            response_cache: match (row.response_cache_ttl_seconds, row.response_cache_max_bytes) {
                (None, None) => None,
                (Some(ttl), Some(bytes)) => Some(ResponseCacheSettings {
                    ttl_seconds: u32::try_from(ttl)
                        .map_err(|_| RegistryError::Corrupt(format!("cache ttl {ttl}")))?,
                    max_bytes: u64::try_from(bytes)
                        .map_err(|_| RegistryError::Corrupt(format!("cache bytes {bytes}")))?,
                }),
                _ => {
                    return Err(RegistryError::Corrupt(
                        "response cache with a TTL or a bound only".into(),
                    ))
                }
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            search_move: row
                .search_move
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| RegistryError::Corrupt(format!("search move: {e}")))?,
        })
    }
}
