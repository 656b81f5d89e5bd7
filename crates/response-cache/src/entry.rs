//! One cached answer and its bytes in Redis.
//!
//! The encoding is a fixed header and the body as it was answered, so a hit reads no JSON:
//! `BKC1`, the kind (1 byte), the tenant (16), the key's digest (32), when it was stored and
//! when it expires (milliseconds since the Unix epoch, 8 each, little-endian), the body.
//! The tenant and the digest are the entry's own claim of whose answer it is: a read
//! compares them with the key it asked for ([`Entry::is_for`]) and ignores an entry that
//! names anything else.

use bytes::Bytes;
use uuid::Uuid;

use crate::key::CacheKey;

const MAGIC: &[u8; 4] = b"BKC1";
const HEADER: usize = 4 + 1 + 16 + 32 + 8 + 8;

/// What the body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A JSON answer (`application/json`).
    Json,
    /// A complete server-sent event stream, `data: [DONE]` included (`text/event-stream`).
    EventStream,
}

impl EntryKind {
    fn code(self) -> u8 {
        match self {
            Self::Json => 1,
            Self::EventStream => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Json),
            2 => Some(Self::EventStream),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::EventStream => "text/event-stream",
        }
    }
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub tenant: Uuid,
    pub digest: [u8; 32],
    pub kind: EntryKind,
    /// When it was stored (ms since the Unix epoch): the answer's age on a hit.
    pub created_ms: u64,
    /// When it expires (ms since the Unix epoch), as Redis has it.
    pub expires_ms: u64,
    pub body: Bytes,
}

impl Entry {
    pub fn new(key: &CacheKey, kind: EntryKind, body: Bytes, now_ms: u64, ttl_ms: u64) -> Self {
        Self {
            tenant: key.tenant(),
            digest: *key.digest(),
            kind,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            body,
        }
    }

    /// Whether this entry is the answer to `key`: same tenant, same digest. A read that
    /// finds anything else (a bug, a hand-written key, a collision of names) is a miss.
    pub fn is_for(&self, key: &CacheKey) -> bool {
        self.tenant == key.tenant() && self.digest == *key.digest()
    }

    /// Bytes it takes, stored: what a tenant's bound counts.
    pub fn size(&self) -> usize {
        HEADER + self.body.len()
    }

    /// The entry's key (its own claim).
    pub fn key(&self) -> CacheKey {
        CacheKey::from_parts(self.tenant, self.digest)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(MAGIC);
        out.push(self.kind.code());
        out.extend_from_slice(self.tenant.as_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_ms.to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// The entry in `bytes`, or `None` when they are not one (another format, cut short).
    /// The body is a slice of `bytes`, not a copy.
    pub fn decode(bytes: Bytes) -> Option<Self> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return None;
        }
        let kind = EntryKind::from_code(bytes[4])?;
        let tenant = Uuid::from_slice(&bytes[5..21]).ok()?;
        let digest: [u8; 32] = bytes[21..53].try_into().ok()?;
        let created_ms = u64::from_le_bytes(bytes[53..61].try_into().ok()?);
        let expires_ms = u64::from_le_bytes(bytes[61..69].try_into().ok()?);
        Some(Self {
            tenant,
            digest,
            kind,
            created_ms,
            expires_ms,
            body: bytes.slice(HEADER..),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use super::*;
    use crate::key::{derive, KeyMaterial};

    fn key(tenant: Uuid) -> CacheKey {
        let material = KeyMaterial {
            tenant,
            alias: "a",
            operation: "embeddings",
            model: "m",
            variant: "",
        };
        derive(&material, br#"{"input":"x"}"#).unwrap()
    }

    #[test]
    fn an_entry_round_trips_and_names_its_key() {
        let k = key(Uuid::new_v4());
        let entry = Entry::new(
            &k,
            EntryKind::EventStream,
            Bytes::from_static(b"data: [DONE]\n\n"),
            1_000,
            60_000,
        );
        let back = Entry::decode(Bytes::from(entry.encode())).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.expires_ms, 61_000);
        assert!(back.is_for(&k));
        assert_eq!(back.key(), k);
        assert_eq!(entry.encode().len(), entry.size());
    }

    #[test]
    fn an_entry_is_not_for_another_tenants_key() {
        let a = key(Uuid::new_v4());
        let b = key(Uuid::new_v4());
        let entry = Entry::new(&a, EntryKind::Json, Bytes::from_static(b"{}"), 0, 1);
        assert!(!entry.is_for(&b));
        // Another tenant's digest under this tenant's id is not it either.
        let forged = Entry {
            digest: *b.digest(),
            ..entry.clone()
        };
        assert!(!forged.is_for(&b) && !forged.is_for(&a));
    }

    #[test]
    fn bytes_that_are_not_an_entry_are_refused() {
        let entry = Entry::new(
            &key(Uuid::nil()),
            EntryKind::Json,
            Bytes::from_static(b"{}"),
            0,
            1,
        );
        let good = entry.encode();
        assert!(Entry::decode(Bytes::from(good[..HEADER - 1].to_vec())).is_none());
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(Entry::decode(Bytes::from(bad_magic)).is_none());
        let mut bad_kind = good;
        bad_kind[4] = 9;
        assert!(Entry::decode(Bytes::from(bad_kind)).is_none());
    }
}
