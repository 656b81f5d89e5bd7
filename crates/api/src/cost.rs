//! What a call cost: the price in force when it finished (the registry's price table, see
//! `tenant_registry::prices`) times the tokens it consumed. Computed once per call, when it
//! ends, from the registry's current view; the ledger stores the result and never prices a
//! call again, so a price added later never changes a recorded cost.

use chrono::{DateTime, Utc};
use tenant_registry::model::DeploymentRef;
use tenant_registry::prices::{Cost, Tokens};
use tenant_registry::Catalog;

/// A call's cost, or why it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priced {
    /// Tokens × the price in force (0 for a call that consumed no token).
    Cost(Cost),
    /// The call consumed tokens but no price applies to the deployment that served it (none
    /// for its model and type, a deployment the registry does not know such as a tenant's
    /// own resource): its cost is unknown, and recorded as such, never as 0.
    Unpriced,
}

impl Priced {
    pub fn cost(self) -> Option<Cost> {
        match self {
            Self::Cost(cost) => Some(cost),
            Self::Unpriced => None,
        }
    }
}

/// The cost of `tokens` consumed on `member` (`resource/deployment`) at `at`.
pub fn price_call(
    catalog: &Catalog,
    member: Option<&str>,
    tokens: Tokens,
    at: DateTime<Utc>,
) -> Priced {
    if tokens.prompt == 0 && tokens.completion == 0 {
        return Priced::Cost(Cost::default());
    }
    if catalog.prices.is_empty() {
        // No price at all (a gateway that does not do chargeback): nothing to look up.
        return Priced::Unpriced;
    }
    let Some(deployment) = member
        .and_then(|m| DeploymentRef::try_from(m.to_owned()).ok())
        .and_then(|reference| catalog.deployments.get(&reference))
    else {
        return Priced::Unpriced;
    };
    match catalog.prices.price_at(&deployment.view, at) {
        Some(price) => Priced::Cost(price.cost(tokens)),
        None => Priced::Unpriced,
    }
}

/// The most `tokens` can cost on any of `members` at `at`: what a spending budget reserves
/// before the call (the member that serves it is not known yet). `None` when no member has a
/// price: the call cannot be held to a budget (it is recorded as unpriced).
pub fn most_on<'a>(
    catalog: &Catalog,
    members: impl Iterator<Item = &'a str>,
    tokens: Tokens,
    at: DateTime<Utc>,
) -> Option<Cost> {
    members
        .filter_map(|m| price_call(catalog, Some(m), tokens, at).cost())
        .max()
}
