//! What `api` hands the router: the members a tenant's alias resolves to, already filtered
//! by everything the registry knows (placement, ownership, data zone).

use entra::UpstreamAuth;

/// One deployment the call may go to.
#[derive(Debug, Clone)]
pub struct Member {
    /// `resource/deployment`: the key of this member's health, shared by every tenant that
    /// reaches the same deployment.
    pub key: String,
    /// The resource's base URL (no trailing slash).
    pub endpoint: String,
    pub deployment: String,
    /// The model the deployment serves (`gpt-4o`): what tokens are counted with.
    pub model: String,
    pub region: String,
    pub data_zone: Option<String>,
    /// How to authenticate to the resource (its key, or an Entra ID credential); never the
    /// tenant's own key to the gateway.
    pub credential: UpstreamAuth,
    pub priority: u32,
    pub weight: u32,
}

/// The members of one alias, in priority order.
#[derive(Debug, Clone)]
pub struct Target {
    pub alias: String,
    pub members: Vec<Member>,
}

impl Target {
    pub fn new(alias: impl Into<String>, mut members: Vec<Member>) -> Self {
        // Stable: inside a priority, the registry's order is kept.
        members.sort_by_key(|m| m.priority);
        Self {
            alias: alias.into(),
            members,
        }
    }

    /// Only the members in `zone`; a tenant with a data zone never leaves it, failover
    /// included.
    pub fn in_zone(mut self, zone: Option<&str>) -> Self {
        if let Some(zone) = zone {
            self.members
                .retain(|m| m.data_zone.as_deref() == Some(zone));
        }
        self
    }

    /// Members grouped by priority, lowest (preferred) first.
    pub fn priority_groups(&self) -> impl Iterator<Item = &[Member]> {
        self.members.chunk_by(|a, b| a.priority == b.priority)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn member(resource: &str, priority: u32, weight: u32) -> Member {
        Member {
            key: format!("{resource}/gpt-4o"),
            endpoint: format!("http://127.0.0.1:1/r/{resource}"),
            deployment: "gpt-4o".into(),
            model: "gpt-4o".into(),
            region: "eastus".into(),
            data_zone: Some(
                if resource.starts_with("eu") {
                    "eu"
                } else {
                    "us"
                }
                .into(),
            ),
            credential: UpstreamAuth::ApiKey(format!("key-{resource}").into()),
            priority,
            weight,
        }
    }

    #[test]
    fn members_are_grouped_by_priority_in_order() {
        let t = Target::new(
            "gpt-4o",
            vec![member("c", 1, 1), member("a", 0, 1), member("b", 0, 2)],
        );
        let groups: Vec<Vec<&str>> = t
            .priority_groups()
            .map(|g| g.iter().map(|m| m.key.as_str()).collect())
            .collect();
        assert_eq!(groups, vec![vec!["a/gpt-4o", "b/gpt-4o"], vec!["c/gpt-4o"]]);
    }

    #[test]
    fn a_zone_keeps_only_its_members() {
        let t = Target::new(
            "gpt-4o",
            vec![
                member("eu-1", 0, 1),
                member("us-1", 0, 1),
                member("eu-2", 1, 1),
            ],
        )
        .in_zone(Some("eu"));
        let keys: Vec<&str> = t.members.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["eu-1/gpt-4o", "eu-2/gpt-4o"]);
    }
}
