//! Where a tenant's search data lives: every index of its current placement's service that
//! may hold its documents (used by offboarding, which removes them). Creating indexes and
//! moving documents are operations (`crate::jobs`).

use search_router::{IndexKind, Target};
use tenant_registry::{Snapshot, TenantEntry};

/// Every index that may hold the tenant's documents, whatever its placement was.
pub fn every_place(tenant: &TenantEntry, snapshot: &Snapshot) -> Vec<Target> {
    let t = &tenant.tenant;
    let mut places = Vec::new();
    let Some(placement) = &t.search else {
        return places;
    };
    let current = snapshot
        .catalog
        .services
        .iter()
        .filter(|(name, _)| *name == placement.service());
    for (service_name, service) in current {
        let Some(credential) = snapshot.service_credential(service_name) else {
            continue;
        };
        let upstream = search_router::Upstream {
            endpoint: service.view.endpoint.to_string(),
            credential: credential.clone(),
        };
        let kinds: &[IndexKind] = match &service.view.owner_tenant {
            None => &[IndexKind::Shared, IndexKind::Dedicated(t.id)],
            Some(owner) if owner == &t.slug => &[IndexKind::OwnService],
            Some(_) => &[],
        };
        for (name, template) in &snapshot.catalog.templates {
            let Some(key_field) = search_router::key_field(&template.definition) else {
                continue;
            };
            for kind in kinds {
                let Ok(index) = search_router::physical_index(*kind, name.as_str()) else {
                    continue;
                };
                let boundary = match kind {
                    IndexKind::Shared => match search_router::Boundary::new(t.id, &key_field) {
                        Ok(b) => Some(b),
                        Err(_) => continue,
                    },
                    _ => None,
                };
                places.push(Target {
                    upstream: upstream.clone(),
                    logical: name.to_string(),
                    index,
                    key_field: key_field.clone(),
                    boundary,
                });
            }
        }
    }
    places
}
