//! The store: answers kept in memory under a byte budget, least recently used evicted first.
//!
//! One store may serve many routes (the key holds the authority), so a write through one route
//! invalidates what another cached; each call takes the rule of the request's route. Entries are
//! found by primary key, then among that key's variants by `Vary` values; a HEAD is answered
//! from a stored GET or HEAD, a GET only from a GET. Of several matching variants the most
//! recent (by `Date`, then arrival) answers (RFC 9111 section 4.1).
//!
//! Storing an answer replaces the variants the same request would have selected: a GET
//! replaces GET and HEAD ones; a HEAD replaces HEAD ones, and a HEAD 200 also drops the GET
//! ones (section 4.3.5 lets a cache "update or invalidate" them; this one invalidates, as it
//! does not freshen).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bytes::Bytes;
use http::Method;

use super::directives::RequestDirectives;
use super::entry::{CachedResponse, Entry, entry_size, stored_headers};
use super::freshness::ExchangeTimes;
use super::invalidate::invalidated_keys;
use super::key::{PrimaryKey, SecondaryKey};
use super::request::{BypassReason, RequestHead, ResponseHead, request_bypass};
use super::reuse::{Reuse, judge};
use super::rule::CacheRule;
use super::storable::{NotStored, plan};

/// A store's default byte budget, 64 MiB: room for 64 entries at the default 1 MiB bound and
/// thousands of typical API answers, while keeping a sidecar's footprint in the tens of MiB.
pub const DEFAULT_CAPACITY_BYTES: usize = 64 * 1024 * 1024;
/// Most variants kept per primary key; storing one more evicts that key's least recently used.
/// 16: content negotiation rarely yields more, and a `Vary: User-Agent` would otherwise fill the
/// store with copies of one resource and make every lookup of it scan them all.
pub const MAX_VARIANTS_PER_KEY: usize = 16;

/// What the cache does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Answer with this fresh stored answer (`x-mesh-cache: hit`).
    Fresh(CachedResponse),
    /// Answer with this stale stored answer, which the request allowed (`x-mesh-cache: stale`).
    Stale(CachedResponse),
    /// Forward; the answer may be stored (`x-mesh-cache: miss`).
    Miss,
    /// Forward; the cache does not handle this request.
    Bypass(BypassReason),
    /// The request said `only-if-cached` and nothing stored may answer it: answer 504 Gateway
    /// Timeout without forwarding (RFC 9111 section 5.2.1.7).
    OnlyIfCachedMiss,
}

/// Counters and gauges the layer exports as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered fresh from the store.
    pub hits: u64,
    /// Requests answered stale from the store.
    pub stale: u64,
    /// Requests the store could not answer (forwarded, or 504 under `only-if-cached`).
    pub misses: u64,
    /// Requests the cache does not handle.
    pub bypasses: u64,
    /// Answers stored.
    pub stores: u64,
    /// Entries evicted to make room (budget or variant bound).
    pub evictions: u64,
    /// Entries dropped by writes (unsafe methods) or superseded by a newer answer.
    pub invalidations: u64,
    /// Bytes held now.
    pub bytes_in_use: usize,
    /// Entries held now.
    pub entries: usize,
}

/// A stored entry and its place in the recency order.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    tick: u64,
}

/// Answers in memory under a byte budget.
#[derive(Debug)]
pub struct CacheStore {
    capacity: usize,
    slots: HashMap<u64, Slot>,
    by_key: HashMap<PrimaryKey, Vec<u64>>,
    /// Entry ids by last use, oldest first.
    recency: BTreeMap<u64, u64>,
    next_id: u64,
    next_tick: u64,
    stats: CacheStats,
}

impl Default for CacheStore {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY_BYTES)
    }
}

impl CacheStore {
    /// An empty store holding at most `capacity` bytes (`entry.rs` says what is counted).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: HashMap::new(),
            by_key: HashMap::new(),
            recency: BTreeMap::new(),
            next_id: 0,
            next_tick: 0,
            stats: CacheStats::default(),
        }
    }

    /// The byte budget.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters so far and the current size.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// What to do with `request` on a route with `rule` at `now`.
    pub fn lookup(
        &mut self,
        rule: &CacheRule,
        request: RequestHead<'_>,
        now: SystemTime,
    ) -> Lookup {
        let directives = RequestDirectives::parse(request.headers);
        if let Some(reason) = request_bypass(rule, request) {
            // `only-if-cached` forbids forwarding whatever the cache makes of the request;
            // methods the rule does not cover are not the cache's to refuse.
            if directives.only_if_cached && reason != BypassReason::Method {
                self.stats.misses += 1;
                return Lookup::OnlyIfCachedMiss;
            }
            self.stats.bypasses += 1;
            return Lookup::Bypass(reason);
        }
        let head = request.method == Method::HEAD;
        let Some(key) = PrimaryKey::from_request(request.uri, request.headers) else {
            // request_bypass refused requests without a key; nothing to find either way.
            self.stats.bypasses += 1;
            return Lookup::Bypass(BypassReason::NoAuthority);
        };
        let chosen = self
            .variants(&key)
            .map(|(id, slot)| (id, &slot.entry))
            .filter(|(_, e)| (head || !e.from_head) && e.secondary.matches(request.headers))
            .max_by_key(|(_, e)| (e.date, e.response_time))
            .map(|(id, e)| {
                let age = e.current_age(now);
                (
                    id,
                    judge(e.freshness_lifetime, age, &e.directives, &directives),
                )
            });
        let answer = match chosen {
            Some((id, reuse @ (Reuse::Fresh | Reuse::Stale))) => {
                self.serve(id, now, head).map(|answer| (reuse, answer))
            }
            _ => None,
        };
        match answer {
            Some((Reuse::Fresh, answer)) => {
                self.stats.hits += 1;
                Lookup::Fresh(answer)
            }
            Some((_, answer)) => {
                self.stats.stale += 1;
                Lookup::Stale(answer)
            }
            None => {
                self.stats.misses += 1;
                if directives.only_if_cached {
                    Lookup::OnlyIfCachedMiss
                } else {
                    Lookup::Miss
                }
            }
        }
    }

    /// Stores the answer to `request` if the storage rules (`storable.rs`) allow; `body` is the
    /// whole body (empty for a HEAD).
    pub fn store(
        &mut self,
        rule: &CacheRule,
        request: RequestHead<'_>,
        response: ResponseHead<'_>,
        body: Bytes,
        times: ExchangeTimes,
    ) -> Result<(), NotStored> {
        let plan = plan(rule, request, response, times)?;
        let from_head = request.method == Method::HEAD;
        let headers = stored_headers(response.headers, body.len(), from_head, times.response_time);
        let secondary = SecondaryKey::capture(&plan.vary, request.headers);
        let size = entry_size(&plan.key, &secondary, &headers, &body);
        if size as u64 > rule.max_entry_bytes || size > self.capacity {
            return Err(NotStored::TooLarge);
        }
        let drops_get = !from_head || response.status == http::StatusCode::OK;
        let superseded: Vec<u64> = self
            .variants(&plan.key)
            .filter(|(_, slot)| {
                let e = &slot.entry;
                (e.from_head || drops_get) && e.secondary.matches(request.headers)
            })
            .map(|(id, _)| id)
            .collect();
        for id in superseded {
            self.remove(id);
            self.stats.invalidations += 1;
        }
        while self.by_key.get(&plan.key).map_or(0, Vec::len) >= MAX_VARIANTS_PER_KEY {
            let oldest = self.variants(&plan.key).min_by_key(|(_, slot)| slot.tick);
            let Some((id, _)) = oldest else { break };
            self.remove(id);
            self.stats.evictions += 1;
        }
        while self.stats.bytes_in_use + size > self.capacity {
            let Some((_, &id)) = self.recency.iter().next() else {
                break;
            };
            self.remove(id);
            self.stats.evictions += 1;
        }
        let entry = Entry {
            key: plan.key,
            secondary,
            from_head,
            status: response.status,
            headers,
            body,
            directives: plan.directives,
            freshness_lifetime: plan.freshness.lifetime(),
            corrected_initial_age: plan.corrected_initial_age,
            response_time: times.response_time,
            date: plan.date,
            size,
        };
        self.insert(entry);
        self.stats.stores += 1;
        Ok(())
    }

    /// Drops what an answer to an unsafe request makes obsolete (`invalidate.rs`); call it for
    /// every answer, whatever the route's rule. Returns the number of entries dropped.
    pub fn invalidate(&mut self, request: RequestHead<'_>, response: ResponseHead<'_>) -> usize {
        let target = PrimaryKey::from_request(request.uri, request.headers);
        let mut dropped = 0;
        for key in invalidated_keys(request.method, target, response.status, response.headers) {
            for id in self.by_key.get(&key).cloned().unwrap_or_default() {
                self.remove(id);
                dropped += 1;
            }
        }
        self.stats.invalidations += dropped as u64;
        dropped
    }

    /// Drops every entry (the counters stay).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.by_key.clear();
        self.recency.clear();
        self.stats.bytes_in_use = 0;
        self.stats.entries = 0;
    }

    /// The entries stored under `key`, with their ids.
    fn variants<'a>(&'a self, key: &PrimaryKey) -> impl Iterator<Item = (u64, &'a Slot)> + 'a {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.slots.get(id).map(|slot| (*id, slot)))
    }

    fn insert(&mut self, entry: Entry) {
        let (id, tick) = (self.next_id, self.next_tick);
        self.next_id += 1;
        self.next_tick += 1;
        self.stats.bytes_in_use += entry.size;
        self.stats.entries += 1;
        self.by_key.entry(entry.key.clone()).or_default().push(id);
        self.recency.insert(tick, id);
        self.slots.insert(id, Slot { entry, tick });
    }

    /// Answers from entry `id`, making it the most recently used.
    fn serve(&mut self, id: u64, now: SystemTime, head: bool) -> Option<CachedResponse> {
        let slot = self.slots.get_mut(&id)?;
        self.recency.remove(&slot.tick);
        slot.tick = self.next_tick;
        self.next_tick += 1;
        self.recency.insert(slot.tick, id);
        Some(slot.entry.serve(now, head))
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.recency.remove(&slot.tick);
        if let Some(ids) = self.by_key.get_mut(&slot.entry.key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(&slot.entry.key);
            }
        }
        self.stats.bytes_in_use -= slot.entry.size;
        self.stats.entries -= 1;
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
