//! Prices: what a million tokens cost on a model's deployments, from a date on.
//!
//! # Money
//! Amounts are integers: prices in micro-units of the table's currency per million tokens
//! (2.50 USD = `2_500_000`), so a call's cost, tokens × price, is an exact integer in
//! pico-units ([`Cost`]), and sums of costs are exact. No float ever holds money; amounts
//! are read and written as decimal strings (`"2.50"`), never JSON numbers, so no client's
//! float parsing changes a price.
//!
//! # Which price applies
//! A price names a model (and optionally a version), a deployment type, and optionally one
//! deployment. For a call served by deployment `d` at instant `t`, the candidates are, most
//! specific first: prices for `d` itself; prices for `d`'s model, version and type; prices
//! for `d`'s model and type whatever the version. In the first group that has one, the price
//! in force at `t` is the one with the latest `effective_from` not after `t`. Rows are never
//! changed, so a price change is a new row, and the price of any past instant stays what it
//! was: a cost recorded is never rewritten, and a cost recorded late (a call finishing while
//! the store was down) is still priced at its own instant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Deployment, DeploymentRef, DeploymentType};
use crate::RegistryError;

/// The largest price or monthly cost accepted, in micro-units: a million currency units per
/// million tokens. Keeps a call's cost (at most ~10^7 tokens × this) far inside an `i64` of
/// pico-units.
pub const MAX_MICROS: u64 = 1_000_000_000_000;

/// An amount of money in micro-units, written as a decimal string with at most 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub u64);

impl Micros {
    /// Reads `"2.50"`, `"0.000001"`, `"3"`: digits, at most one point, at most 6 decimals, not
    /// above [`MAX_MICROS`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
            return Err(format!(
                "'{text}' is not an amount: write a decimal string such as \"2.50\""
            ));
        }
        if fraction.len() > 6 {
            return Err(format!("'{text}' has more than 6 decimals"));
        }
        let too_large = || format!("'{text}' is larger than {}", Micros(MAX_MICROS));
        let whole: u64 = whole.parse().map_err(|_| too_large())?;
        let fraction: u64 = format!("{fraction:0<6}").parse().unwrap_or(0);
        let micros = whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(fraction))
            .filter(|m| *m <= MAX_MICROS)
            .ok_or_else(too_large)?;
        Ok(Self(micros))
    }
}

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        decimal(f, u128::from(self.0), 6)
    }
}

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The cost of calls in pico-units of the price table's currency (10^-12): exact for any
/// number of tokens at any price of at most 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cost(pub u128);

impl Cost {
    /// Rounded up to micro-units (what a currency budget counts: never less than the cost).
    pub fn micros_ceil(self) -> u64 {
        u64::try_from(self.0.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// The pico-units as stored (`None` beyond an `i64`, which no single call reaches).
    pub fn to_i64(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        decimal(f, self.0, 12)
    }
}

impl Serialize for Cost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `value / 10^scale` as a decimal without trailing zeros (`2.5`, `3`, `0.000001`).
fn decimal(f: &mut std::fmt::Formatter<'_>, value: u128, scale: u32) -> std::fmt::Result {
    let unit = 10u128.pow(scale);
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return write!(f, "{whole}");
    }
    let digits = format!("{fraction:0width$}", width = scale as usize);
    write!(f, "{whole}.{}", digits.trim_end_matches('0'))
}

/// A currency: three upper-case letters (ISO 4217 style: `USD`, `EUR`).
pub fn check_currency(text: &str) -> Result<(), String> {
    if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "'{text}' is not a currency code: three upper-case letters such as USD"
        ))
    }
}

/// A price as an admin writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    /// The model as deployments name it (`gpt-4o`).
    pub model: String,
    /// Only deployments of this version; absent: any version.
    #[serde(default)]
    pub model_version: Option<String>,
    pub deployment_type: DeploymentType,
    /// Only this deployment (`resource/deployment`); absent: every deployment of the model
    /// and type.
    #[serde(default)]
    pub deployment: Option<DeploymentRef>,
    pub currency: String,
    pub input_per_million: Micros,
    /// Prompt tokens served from Azure's prompt cache; absent: the input price.
    #[serde(default)]
    pub cached_input_per_million: Option<Micros>,
    /// Absent for models that produce no output tokens (embeddings): 0.
    #[serde(default)]
    pub output_per_million: Option<Micros>,
    /// A provisioned deployment's cost per month, shared among the tenants that used it by
    /// their token share (see the chargeback).
    #[serde(default)]
    pub monthly_cost: Option<Micros>,
    /// When the price takes effect; absent: now. Never in the past.
    #[serde(default)]
    pub effective_from: Option<DateTime<Utc>>,
}

/// A price in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Price {
    pub id: Uuid,
    pub model: String,
    pub model_version: Option<String>,
    pub deployment_type: DeploymentType,
    pub deployment: Option<DeploymentRef>,
    pub currency: String,
    pub input_per_million: Micros,
    pub cached_input_per_million: Micros,
    pub output_per_million: Micros,
    pub monthly_cost: Option<Micros>,
    pub effective_from: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Tokens one call consumed, as the ledger records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// Every prompt token, cached ones included.
    pub prompt: u64,
    /// The part of `prompt` served from Azure's prompt cache.
    pub cached: u64,
    pub completion: u64,
}

impl Price {
    /// What `tokens` cost at this price, exactly.
    pub fn cost(&self, tokens: Tokens) -> Cost {
        let cached = tokens.cached.min(tokens.prompt);
        let fresh = tokens.prompt - cached;
        let times = |n: u64, price: Micros| u128::from(n) * u128::from(price.0);
        Cost(
            times(fresh, self.input_per_million)
                + times(cached, self.cached_input_per_million)
                + times(tokens.completion, self.output_per_million),
        )
    }
}

/// Which prices apply to what: [`Price`]s grouped by what they name, each group ordered by
/// `effective_from`. Part of the catalog, so every replica reloads it on a change.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    /// Prices of one deployment.
    by_deployment: BTreeMap<(DeploymentRef, DeploymentType), Vec<Price>>,
    /// Prices of a model (version `""`: any version) and type.
    by_model: BTreeMap<(String, String, DeploymentType), Vec<Price>>,
    currency: Option<String>,
    count: usize,
}

impl PriceBook {
    pub fn new(prices: Vec<Price>) -> Self {
        let mut book = Self::default();
        for price in prices {
            book.currency.get_or_insert_with(|| price.currency.clone());
            book.count += 1;
            match &price.deployment {
                Some(reference) => book
                    .by_deployment
                    .entry((reference.clone(), price.deployment_type))
                    .or_default()
                    .push(price),
                None => book
                    .by_model
                    .entry((
                        price.model.clone(),
                        price.model_version.clone().unwrap_or_default(),
                        price.deployment_type,
                    ))
                    .or_default()
                    .push(price),
            }
        }
        for group in book
            .by_deployment
            .values_mut()
            .chain(book.by_model.values_mut())
        {
            group.sort_by_key(|p| p.effective_from);
        }
        book
    }

    /// The table's currency (`None` while it holds no price).
    pub fn currency(&self) -> Option<&str> {
        self.currency.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every price, ordered by what it names, then `effective_from`.
    pub fn all(&self) -> impl Iterator<Item = &Price> {
        self.by_deployment
            .values()
            .chain(self.by_model.values())
            .flatten()
    }

    /// The price in force at `at` for calls served by `deployment` (see the module doc).
    pub fn price_at(&self, deployment: &Deployment, at: DateTime<Utc>) -> Option<&Price> {
        let reference = DeploymentRef {
            resource: deployment.resource.clone(),
            deployment: deployment.name.clone(),
        };
        let kind = deployment.deployment_type;
        fn in_force(group: Option<&Vec<Price>>, at: DateTime<Utc>) -> Option<&Price> {
            group.and_then(|prices| prices.iter().rev().find(|p| p.effective_from <= at))
        }
        in_force(self.by_deployment.get(&(reference, kind)), at)
            .or_else(|| {
                let version = deployment.model_version.clone()?;
                in_force(
                    self.by_model
                        .get(&(deployment.model.clone(), version, kind)),
                    at,
                )
            })
            .or_else(|| {
                in_force(
                    self.by_model
                        .get(&(deployment.model.clone(), String::new(), kind)),
                    at,
                )
            })
    }
}

/// The checks a price must pass before it is written (the table's one currency is checked
/// by the registry, which sees the table).
pub(crate) fn check(new: &NewPrice, now: DateTime<Utc>) -> Result<(), RegistryError> {
    if new.model.is_empty() || new.model.len() > 64 {
        return Err(RegistryError::invalid(
            "model",
            "must be 1 to 64 characters",
        ));
    }
    if let Some(version) = &new.model_version {
        if version.is_empty() || version.len() > 32 {
            return Err(RegistryError::invalid(
                "model_version",
                "must be 1 to 32 characters",
            ));
        }
    }
    check_currency(&new.currency).map_err(|m| RegistryError::invalid("currency", m))?;
    match (new.deployment_type, new.monthly_cost) {
        (DeploymentType::Provisioned, _) | (_, None) => {}
        (_, Some(_)) => {
            return Err(RegistryError::invalid(
                "monthly_cost",
                "only provisioned deployments have a monthly cost",
            ))
        }
    }
    if let Some(from) = new.effective_from {
        if from < now {
            return Err(RegistryError::invalid(
                "effective_from",
                "a price cannot take effect in the past (costs already recorded are never \
                 rewritten); give a later instant or none for now",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_decimal_strings() {
        assert_eq!(Micros::parse("2.50"), Ok(Micros(2_500_000)));
        assert_eq!(Micros::parse("0.000001"), Ok(Micros(1)));
        assert_eq!(Micros::parse("3"), Ok(Micros(3_000_000)));
        for bad in [
            "",
            ".5",
            "5.",
            "1.0000001",
            "-1",
            "1e3",
            "1,5",
            "2.5.1",
            "1000001",
        ] {
            assert!(Micros::parse(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(Micros(2_500_000).to_string(), "2.5");
        assert_eq!(Micros(1).to_string(), "0.000001");
        assert_eq!(Cost(1).to_string(), "0.000000000001");
        assert_eq!(Cost(3_000_000_000_000).to_string(), "3");
        assert_eq!(Cost(1).micros_ceil(), 1);
        assert_eq!(Cost(2_000_000).micros_ceil(), 2);
    }

    #[test]
    fn a_cost_is_tokens_times_price_with_cached_tokens_at_their_own_price() {
        let price = Price {
            id: Uuid::nil(),
            model: "gpt-4o".into(),
            model_version: None,
            deployment_type: DeploymentType::GlobalStandard,
            deployment: None,
            currency: "USD".into(),
            input_per_million: Micros(2_500_000),
            cached_input_per_million: Micros(1_250_000),
            output_per_million: Micros(10_000_000),
            monthly_cost: None,
            effective_from: DateTime::UNIX_EPOCH,
            created_at: DateTime::UNIX_EPOCH,
        };
        let cost = price.cost(Tokens {
            prompt: 1000,
            cached: 200,
            completion: 50,
        });
        // 800 × 2.5 + 200 × 1.25 + 50 × 10 per million = 0.00275 USD
        assert_eq!(cost.to_string(), "0.00275");
    }
}
