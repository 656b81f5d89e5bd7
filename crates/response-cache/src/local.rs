//! The in-process layer: recent entries in this replica's memory, bounded by bytes overall
//! and per tenant, the oldest evicted first.
//!
//! With Redis it is a short-lived copy (`local_ttl`, and never past the entry's own expiry):
//! a hit on a hot key costs no round trip, and another replica's write is seen once the copy
//! is gone. Without Redis it is the cache, and entries live for their tenant's TTL.
//!
//! Insertion order is kept in queues of `(key, generation)`: replacing or removing an entry
//! leaves a stale item in them, skipped when it comes up (its generation no longer matches)
//! and compacted away when the stale items outnumber the live ones. Live entries are counted
//! (per tenant and overall) as they come and go, so deciding whether to compact is O(1) and
//! a put touches only its own tenant's queue: the lock is never held for a walk of the whole
//! layer (a per-put walk of every tenant's queue, found by bench/cache, made a miss cost
//! ~0.5 ms of CPU with a 64 MiB layer).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::entry::Entry;
use crate::key::CacheKey;

pub(crate) struct LocalLayer {
    inner: Mutex<Inner>,
    max_bytes: usize,
    /// How long a copy is kept (`None`: until the entry expires).
    ttl: Option<Duration>,
}

struct Slot {
    entry: Entry,
    generation: u64,
    until: Instant,
}

#[derive(Default)]
struct Shelf {
    order: VecDeque<(CacheKey, u64)>,
    bytes: usize,
    /// Live entries of the tenant (`order` also holds stale items).
    live: usize,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<CacheKey, Slot>,
    order: VecDeque<(CacheKey, u64)>,
    tenants: HashMap<Uuid, Shelf>,
    bytes: usize,
    generation: u64,
}

/// What a put did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalPut {
    pub stored: bool,
    /// Entries evicted to make room (the tenant's bound or the layer's).
    pub evicted: u64,
}

impl LocalLayer {
    pub(crate) fn new(max_bytes: usize, ttl: Option<Duration>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            ttl,
        }
    }

    /// The entry of `key`, if held, not expired (`now_ms`: the wall clock) and for `key`.
    pub(crate) fn get(&self, key: &CacheKey, now_ms: u64) -> Option<Entry> {
        let mut inner = self.inner.lock();
        let slot = inner.slots.get(key)?;
        if slot.until <= Instant::now() || slot.entry.expires_ms <= now_ms {
            inner.remove(key);
            return None;
        }
        slot.entry.is_for(key).then(|| slot.entry.clone())
    }

    /// Keeps `entry` within the layer's bound and `tenant_max` bytes for its tenant.
    pub(crate) fn put(&self, entry: Entry, tenant_max: usize, now_ms: u64) -> LocalPut {
        let size = entry.size();
        if size > self.max_bytes || size > tenant_max || entry.expires_ms <= now_ms {
            return LocalPut::default();
        }
        let left = Duration::from_millis(entry.expires_ms - now_ms);
        let until = Instant::now() + self.ttl.map_or(left, |ttl| ttl.min(left));
        let key = entry.key();
        let tenant = key.tenant();
        let mut inner = self.inner.lock();
        inner.remove(&key);
        let mut evicted = 0;
        while inner.tenants.get(&tenant).map_or(0, |s| s.bytes) + size > tenant_max {
            if !inner.evict_oldest_of(tenant) {
                break;
            }
            evicted += 1;
        }
        while inner.bytes + size > self.max_bytes {
            if !inner.evict_oldest() {
                break;
            }
            evicted += 1;
        }
        inner.generation += 1;
        let generation = inner.generation;
        inner.order.push_back((key, generation));
        let shelf = inner.tenants.entry(tenant).or_default();
        shelf.order.push_back((key, generation));
        shelf.bytes += size;
        shelf.live += 1;
        inner.bytes += size;
        inner.slots.insert(
            key,
            Slot {
                entry,
                generation,
                until,
            },
        );
        inner.compact(tenant);
        LocalPut {
            stored: true,
            evicted,
        }
    }

    /// Bytes held (entries' stored sizes).
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

impl Inner {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.slots.remove(key) {
            let size = slot.entry.size();
            self.bytes -= size;
            if let Some(shelf) = self.tenants.get_mut(&key.tenant()) {
                shelf.bytes -= size;
                shelf.live -= 1;
                if shelf.live == 0 {
                    self.tenants.remove(&key.tenant());
                }
            }
        }
    }

    fn live(&self, key: &CacheKey, generation: u64) -> bool {
        self.slots
            .get(key)
            .is_some_and(|s| s.generation == generation)
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            if self.live(&key, generation) {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    fn evict_oldest_of(&mut self, tenant: Uuid) -> bool {
        loop {
            let Some(shelf) = self.tenants.get_mut(&tenant) else {
                return false;
            };
            let Some((key, generation)) = shelf.order.pop_front() else {
                return false;
            };
            if self.live(&key, generation) {
                self.remove(&key);
                return true;
            }
        }
    }

    /// Drops stale queue items once they outnumber the live entries: the layer's queue, and
    /// `tenant`'s (the only one a put adds to). Amortized O(1) per put.
    fn compact(&mut self, tenant: Uuid) {
        let slots = &self.slots;
        let current = |(k, g): &(CacheKey, u64)| slots.get(k).is_some_and(|s| s.generation == *g);
        if self.order.len() > 2 * slots.len() + 64 {
            self.order.retain(current);
        }
        if let Some(shelf) = self.tenants.get_mut(&tenant) {
            if shelf.order.len() > 2 * shelf.live + 64 {
                shelf.order.retain(current);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly")]

    use bytes::Bytes;

    use super::*;
    use crate::entry::EntryKind;
    use crate::key::{derive, KeyMaterial};

    fn key(tenant: Uuid, n: u32) -> CacheKey {
        let material = KeyMaterial {
            tenant,
            alias: "a",
            operation: "embeddings",
            model: "m",
            variant: "",
        };
        derive(&material, format!(r#"{{"input":"{n}"}}"#).as_bytes()).unwrap()
    }

    fn entry(key: &CacheKey, body: usize) -> Entry {
        Entry::new(
            key,
            EntryKind::Json,
            Bytes::from(vec![b'x'; body]),
            1_000,
            60_000,
        )
    }

    #[test]
    fn a_tenant_over_its_bound_loses_its_own_oldest_entries_only() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let layer = LocalLayer::new(1 << 20, None);
        let size = entry(&key(a, 0), 100).size();
        layer.put(entry(&key(b, 0), 100), 10 * size, 1_000);
        for n in 0..3 {
            layer.put(entry(&key(a, n), 100), 2 * size, 1_000);
        }
        assert!(layer.get(&key(a, 0), 1_000).is_none(), "oldest evicted");
        assert!(layer.get(&key(a, 1), 1_000).is_some());
        assert!(layer.get(&key(a, 2), 1_000).is_some());
        assert!(
            layer.get(&key(b, 0), 1_000).is_some(),
            "another tenant kept"
        );
        assert_eq!(layer.bytes(), 3 * size);
    }

    #[test]
    fn the_layer_bound_evicts_the_oldest_entry_of_anyone() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let size = entry(&key(a, 0), 100).size();
        let layer = LocalLayer::new(2 * size, None);
        layer.put(entry(&key(a, 0), 100), usize::MAX, 1_000);
        layer.put(entry(&key(b, 0), 100), usize::MAX, 1_000);
        let put = layer.put(entry(&key(b, 1), 100), usize::MAX, 1_000);
        assert_eq!(put.evicted, 1);
        assert!(layer.get(&key(a, 0), 1_000).is_none());
        assert!(layer.get(&key(b, 1), 1_000).is_some());
    }

    #[test]
    fn an_expired_entry_is_gone_and_a_replaced_one_counts_once() {
        let a = Uuid::new_v4();
        let layer = LocalLayer::new(1 << 20, None);
        layer.put(entry(&key(a, 0), 100), usize::MAX, 1_000);
        layer.put(entry(&key(a, 0), 100), usize::MAX, 1_000);
        assert_eq!(layer.bytes(), entry(&key(a, 0), 100).size());
        assert!(layer.get(&key(a, 0), 61_000).is_none(), "past its expiry");
        assert_eq!(layer.bytes(), 0);
        for n in 0..1000 {
            layer.put(entry(&key(a, n % 3), 10), usize::MAX, 1_000);
        }
        let inner = layer.inner.lock();
        assert!(inner.order.len() <= 2 * 3 + 64 + 1);
        let shelf = &inner.tenants[&a];
        assert_eq!(shelf.live, 3);
        assert!(
            shelf.order.len() <= 2 * 3 + 64 + 1,
            "the tenant's queue is compacted too"
        );
    }

    #[test]
    fn live_counts_follow_puts_removals_and_evictions_across_tenants() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let layer = LocalLayer::new(1 << 20, None);
        let one = entry(&key(a, 0), 100).size();
        for n in 0..10 {
            layer.put(entry(&key(a, n), 100), 4 * one, 1_000);
            layer.put(entry(&key(b, n), 100), usize::MAX, 1_000);
        }
        {
            let inner = layer.inner.lock();
            assert_eq!(inner.tenants[&a].live, 4, "a's bound keeps four");
            assert_eq!(inner.tenants[&b].live, 10);
            assert_eq!(inner.slots.len(), 14);
        }
        for n in 6..10 {
            assert!(layer.get(&key(a, n), 61_000).is_none(), "expired");
        }
        let inner = layer.inner.lock();
        assert!(
            !inner.tenants.contains_key(&a),
            "a tenant with no entry has no shelf"
        );
        assert_eq!(inner.tenants[&b].live, 10);
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_not_kept() {
        let a = Uuid::new_v4();
        let layer = LocalLayer::new(100, None);
        assert!(!layer.put(entry(&key(a, 0), 200), usize::MAX, 1_000).stored);
        let layer = LocalLayer::new(1 << 20, None);
        assert!(!layer.put(entry(&key(a, 0), 200), 100, 1_000).stored);
    }
}
