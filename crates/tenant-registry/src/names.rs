//! Newtypes that parse: a value of one of these types has already been validated, so code
//! that holds one never checks it again.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

fn check(
    kind: &str,
    value: &str,
    min: usize,
    max: usize,
    first: fn(char) -> bool,
    rest: fn(char) -> bool,
) -> Result<(), InvalidName> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(InvalidName(format!(
            "{kind} must be {min} to {max} characters long"
        )));
    }
    let mut chars = value.chars();
    if !chars.next().is_some_and(first) || !chars.all(rest) {
        return Err(InvalidName(format!(
            "{kind} has a character that is not allowed"
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $min:expr, $max:expr, $first:expr, $rest:expr, $last:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value`; the error names the rule it broke.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                check($kind, &value, $min, $max, $first, $rest)?;
                if !value.chars().last().is_some_and($last) {
                    return Err(InvalidName(format!("{} has a character that is not allowed at its end", $kind)));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(value: String) -> Result<Self, InvalidName> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Eq, Ord and Hash are the inner string's, so maps keyed by the name can be
        // searched with a plain `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn lower_alnum_hyphen(c: char) -> bool {
    lower_alnum(c) || c == '-'
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn alnum_hyphen(c: char) -> bool {
    alnum(c) || c == '-'
}

fn deployment_char(c: char) -> bool {
    alnum(c) || matches!(c, '-' | '_' | '.')
}

name_type!(
    /// A tenant's URL-safe identifier: 2-40 characters, lowercase letters, digits and
    /// hyphens, starting with a letter and not ending with a hyphen. Immutable once created.
    TenantSlug,
    "slug",
    2,
    40,
    |c: char| c.is_ascii_lowercase(),
    lower_alnum_hyphen,
    lower_alnum
);

name_type!(
    /// The registry name of an Azure OpenAI resource or an Azure AI Search service, following
    /// Azure's resource naming rules (2-64 letters, digits and hyphens).
    ResourceName,
    "name",
    2,
    64,
    alnum,
    alnum_hyphen,
    alnum
);

name_type!(
    /// A deployment name as Azure OpenAI accepts it (letters, digits, `-`, `_`, `.`).
    DeploymentName,
    "deployment name",
    1,
    64,
    alnum,
    deployment_char,
    deployment_char
);

name_type!(
    /// The tenant-facing model name (`gpt-4o`, `text-embedding-3-small`): what callers put in
    /// the deployment segment of the path or in `model`.
    ModelAlias,
    "model alias",
    1,
    64,
    alnum,
    deployment_char,
    deployment_char
);

name_type!(
    /// A data-residency zone (`eu`, `us`): a tenant with one never reaches a resource outside it.
    DataZone,
    "data zone",
    2,
    16,
    |c: char| c.is_ascii_lowercase(),
    lower_alnum,
    lower_alnum
);

name_type!(
    /// An Azure region name such as `westeurope` or `eastus2`.
    Region,
    "region",
    2,
    40,
    |c: char| c.is_ascii_lowercase(),
    lower_alnum,
    lower_alnum
);

name_type!(
    /// The logical index name tenants use; Azure AI Search's index naming rules (lowercase
    /// letters, digits, dashes; 2-128 characters).
    IndexName,
    "index name",
    2,
    128,
    lower_alnum,
    lower_alnum_hyphen,
    lower_alnum
);

/// A base URL of an Azure endpoint: `http` or `https`, a host, an optional port and path,
/// no credentials, query or fragment. Stored without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidName> {
        let value: String = value.into();
        let bad = |why: &str| Err(InvalidName(format!("endpoint {why}")));
        if value.len() > 2048 {
            return bad("is too long");
        }
        let rest = if let Some(rest) = value.strip_prefix("https://") {
            rest
        } else if let Some(rest) = value.strip_prefix("http://") {
            rest
        } else {
            return bad("must start with https:// or http://");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return bad("has no host");
        }
        if value.contains(['?', '#', '@', ' ', '\\']) || value.chars().any(|c| c.is_control()) {
            return bad("must not contain credentials, a query, a fragment or spaces");
        }
        if !authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        {
            return bad("has an invalid host");
        }
        Ok(Self(value.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Endpoint {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, InvalidName> {
        Self::parse(value)
    }
}

impl From<Endpoint> for String {
    fn from(value: Endpoint) -> String {
        value.0
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_validated() {
        for ok in ["acme", "a1", "acme-corp-2", "ab"] {
            assert!(TenantSlug::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Acme",
            "1acme",
            "acme-",
            "-acme",
            "ac me",
            "acme_x",
            "acmé",
            "a/b",
            "abcdefghijabcdefghijabcdefghijabcdefghijx",
        ] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_refuse_credentials_queries_and_other_schemes() {
        assert_eq!(
            Endpoint::parse("https://x.openai.azure.com/").map(|e| e.0),
            Ok("https://x.openai.azure.com".to_owned())
        );
        assert!(Endpoint::parse("http://127.0.0.1:8090/r/aoai-1").is_ok());
        for bad in [
            "ftp://x",
            "https://",
            "https://u:p@x.com",
            "https://x.com/?a=1",
            "https://x.com/#f",
            "x.com",
            "https://x .com",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deployment_names_and_aliases_accept_azure_characters() {
        assert!(DeploymentName::parse("gpt-4o_2024.08").is_ok());
        assert!(ModelAlias::parse("gpt-4.1-mini").is_ok());
        assert!(ModelAlias::parse("../etc").is_err());
        assert!(ModelAlias::parse("gpt 4").is_err());
    }
}
