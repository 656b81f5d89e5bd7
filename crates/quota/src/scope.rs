//! What a reservation is checked against: scopes (a tenant, an API key) and their limits.

use std::fmt;
use std::sync::Arc;

/// The largest limit or estimate the arithmetic keeps exact. Buckets count in 1/60000 of a
/// token, and the Redis scripts compute in Lua doubles (exact integers up to 2^53), so a
/// per-minute limit must stay below 2^53 / 60000 ≈ 1.5e11. Larger values are clamped to this,
/// which is unlimited in practice.
pub const MAX_LIMIT: u64 = 100_000_000_000;

/// The largest monthly budget kept exact: monthly counters are plain integers in Redis (no
/// 1/60000 scaling), exact in a Lua double up to 2^53; a quarter of that leaves room for
/// the estimates added to them. Spending budgets count micro-units of a currency, so this
/// is over two billion units a month.
pub const MAX_MONTHLY: u64 = 1 << 51;

/// Who a limit belongs to. The name is part of the Redis key, so two scopes with the same
/// name share one set of counters on every replica.
///
/// Names carry the tenant as a Redis Cluster hash tag (`t:{<tenant>}`, `k:{<tenant>}:<key>`):
/// every scope of one call lives in one hash slot, so one script can touch them all on a
/// cluster. [`Scope::legacy`] gives the name the previous releases used, derived only where a
/// standalone Redis may still hold counters under it (see `redis_store`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Arc<str>);

impl Scope {
    /// The scope of a tenant's own limits (`t:{<tenant>}`).
    pub fn tenant(id: impl fmt::Display) -> Self {
        Self(format!("t:{{{id}}}").into())
    }

    /// The scope of one API key's limits (`k:{<tenant>}:<key>`), checked together with its
    /// tenant's (hence the tenant's hash tag).
    pub fn api_key(tenant: impl fmt::Display, key: impl fmt::Display) -> Self {
        Self(format!("k:{{{tenant}}}:{key}").into())
    }

    /// The scope of a tenant's monthly spending budget (`b:{<tenant>}`), counted in
    /// micro-units of the price table's currency with the same monthly arithmetic.
    pub fn tenant_spending(id: impl fmt::Display) -> Self {
        Self(format!("b:{{{id}}}").into())
    }

    /// The scope of one API key's spending budget (`c:{<tenant>}:<key>`).
    pub fn key_spending(tenant: impl fmt::Display, key: impl fmt::Display) -> Self {
        Self(format!("c:{{{tenant}}}:{key}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of this scope before hash tags: `t:<tenant>`, `k:<key>`.
    pub fn legacy(&self) -> String {
        let name: &str = &self.0;
        let (kind, rest) = name.split_at(2);
        let Some((tenant, key)) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            return name.to_owned();
        };
        match key.strip_prefix(':') {
            Some(key) => format!("{kind}{key}"),
            None => format!("{kind}{tenant}"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The limits of one scope; `None` is unlimited. The same shape as the registry's tenant
/// limits, which `api` converts (this crate knows no tenants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub tokens_per_minute: Option<u64>,
    pub requests_per_minute: Option<u64>,
    pub monthly_tokens: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.tokens_per_minute.is_none()
            && self.requests_per_minute.is_none()
            && self.monthly_tokens.is_none()
    }

    /// Every value clamped to [`MAX_LIMIT`].
    pub(crate) fn clamped(self) -> Self {
        Self {
            tokens_per_minute: self.tokens_per_minute.map(clamp),
            requests_per_minute: self.requests_per_minute.map(clamp),
            monthly_tokens: self.monthly_tokens.map(|v| v.min(MAX_MONTHLY)),
        }
    }
}

pub(crate) fn clamp(v: u64) -> u64 {
    v.min(MAX_LIMIT)
}

/// One scope of an admission with the limits in force for it now (read from the registry
/// snapshot on every call, so a changed limit applies to the next request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLimits {
    pub scope: Scope,
    pub limits: Limits,
}

impl ScopeLimits {
    pub fn new(scope: Scope, limits: Limits) -> Self {
        Self { scope, limits }
    }
}

/// Which limit of a scope refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    TokensPerMinute,
    RequestsPerMinute,
    MonthlyTokens,
}

impl Dimension {
    /// The code the Redis scripts use.
    pub(crate) fn from_code(code: i64) -> Self {
        match code {
            1 => Self::TokensPerMinute,
            2 => Self::RequestsPerMinute,
            _ => Self::MonthlyTokens,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokensPerMinute => "tokens per minute",
            Self::RequestsPerMinute => "requests per minute",
            Self::MonthlyTokens => "monthly tokens",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn the_legacy_names_are_those_of_earlier_releases() {
        assert_eq!(Scope::tenant("acme").as_str(), "t:{acme}");
        assert_eq!(Scope::tenant("acme").legacy(), "t:acme");
        assert_eq!(Scope::api_key("acme", "k1").as_str(), "k:{acme}:k1");
        assert_eq!(Scope::api_key("acme", "k1").legacy(), "k:k1");
    }
}
