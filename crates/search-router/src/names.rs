//! Physical index names and the partition code.
//!
//! The partition code is a fixed-width (26 characters) lowercase Crockford base32 encoding of
//! the partition's 128-bit id: injective, usable in index names (lowercase letters and digits)
//! and in document keys (letters, digits, `_`, `-`, `=`).

use uuid::Uuid;

use crate::SearchError;

/// Length of [`partition_code`].
pub const PARTITION_CODE_LEN: usize = 26;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Longest Azure index name.
pub const MAX_INDEX_NAME: usize = 128;

/// The 26-character code of a partition (a tenant, for `api`).
pub fn partition_code(id: Uuid) -> String {
    let value = id.as_u128();
    (0..PARTITION_CODE_LEN)
        .rev()
        .map(|i| {
            // 26 * 5 = 130 bits: the first digit holds the top 3 bits.
            let digit = ((value >> (i * 5)) & 0x1f) as usize;
            char::from(ALPHABET[digit])
        })
        .collect()
}

/// How a logical index is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// One index per template, shared by partitions: `shared-{template}`.
    Shared,
    /// One index per partition and template: `t{code}-{template}`.
    Dedicated(Uuid),
    /// The template's own name, on a service of the partition's own.
    OwnService,
}

/// The physical name of `template` for `kind`. Shared and dedicated names cannot collide
/// (`s...` vs `t...`), and dedicated names are injective in (partition, template) because the
/// code has a fixed width. Fails when the result would break Azure's naming rules.
pub fn physical_index(kind: IndexKind, template: &str) -> Result<String, SearchError> {
    let name = match kind {
        IndexKind::Shared => format!("shared-{template}"),
        IndexKind::Dedicated(id) => format!("t{}-{template}", partition_code(id)),
        IndexKind::OwnService => template.to_owned(),
    };
    if !valid_index_name(&name) {
        return Err(SearchError::Naming(format!(
            "index template '{template}' gives the physical name '{name}', which is not a valid Azure index name (at most {MAX_INDEX_NAME} lowercase letters, digits and single dashes)"
        )));
    }
    Ok(name)
}

/// Azure's rule: 2 to 128 lowercase letters, digits or dashes, no dash first, last or twice
/// in a row.
pub fn valid_index_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=MAX_INDEX_NAME).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(|c| *c != b'-')
        && b.last().is_some_and(|c| *c != b'-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn partition_codes_are_fixed_width_and_distinct() {
        let ids = [
            Uuid::nil(),
            Uuid::max(),
            Uuid::from_u128(1),
            Uuid::from_u128(1 << 127),
            Uuid::from_u128(32),
        ];
        let codes: Vec<String> = ids.iter().map(|id| partition_code(*id)).collect();
        for code in &codes {
            assert_eq!(code.len(), PARTITION_CODE_LEN);
            assert!(code.bytes().all(|c| ALPHABET.contains(&c)));
        }
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert_eq!(codes[0], "0".repeat(26));
        assert_eq!(&codes[2][24..], "01");
        assert_eq!(&codes[4][24..], "10");
    }

    #[test]
    fn physical_names_never_collide_across_kinds_and_partitions() {
        let a = Uuid::from_u128(7);
        let b = Uuid::from_u128(8);
        let names = [
            physical_index(IndexKind::Shared, "hotels").unwrap(),
            physical_index(IndexKind::Dedicated(a), "hotels").unwrap(),
            physical_index(IndexKind::Dedicated(b), "hotels").unwrap(),
            physical_index(IndexKind::Dedicated(a), "hotels-x").unwrap(),
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names[0], "shared-hotels");
        assert!(names[1].starts_with('t') && names[1].ends_with("-hotels"));
        assert_eq!(
            physical_index(IndexKind::OwnService, "hotels").unwrap(),
            "hotels"
        );
        for name in &names {
            assert!(valid_index_name(name), "{name}");
        }
    }

    #[test]
    fn a_template_too_long_for_its_placement_is_refused() {
        let long = "a".repeat(101);
        assert!(physical_index(IndexKind::Dedicated(Uuid::nil()), &long).is_err());
        assert!(physical_index(IndexKind::Dedicated(Uuid::nil()), &long[..100]).is_ok());
        assert!(physical_index(IndexKind::Shared, &"a".repeat(122)).is_err());
        assert!(physical_index(IndexKind::Shared, "ab--c").is_err());
    }
}
