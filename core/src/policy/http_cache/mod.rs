//! The response cache's rules (issue 11, feature 5): RFC 9111's shared-cache subset for GET
//! and HEAD, pure (no I/O, time passed in as `now: SystemTime`, exchange times recorded by the
//! caller). The sidecar layer that uses it owns the async parts: buffering bodies, collapsing
//! concurrent misses for one key, the `x-mesh-cache` field and the metrics.
//!
//! - `rule.rs`: [`CacheRule`], what a user writes per route, validated at load.
//! - `directives.rs`: `Cache-Control` (and request `Pragma`) parsed, conflicts resolved to the
//!   most restrictive reading.
//! - `request.rs`: the request and response heads read, and which requests bypass the cache.
//! - `storable.rs`: which answers may be stored.
//! - `freshness.rs`: freshness lifetime (explicit or heuristic) and age arithmetic.
//! - `key.rs`: the primary key (target URI) and the `Vary` secondary key.
//! - `reuse.rs`: whether a matching stored answer may answer a request, fresh or stale.
//! - `entry.rs`: what is kept of an answer, its size, the answer built at a hit.
//! - `invalidate.rs`: what an unsafe method's answer invalidates.
//! - `store.rs`: [`CacheStore`], the byte-bounded LRU store with `lookup`, `store`,
//!   `invalidate` and its counters.
//!
//! How the layer drives it, per request on a route with a rule:
//! 1. `lookup`: `Fresh`/`Stale` are answered from the store (with `Age` set), `OnlyIfCachedMiss`
//!    with 504, `Miss` and `Bypass` forwarded;
//! 2. on a `Miss`, [`check_storable`] on the response head says whether to buffer the body
//!    (up to `maxEntryBytes`), then `store` keeps it;
//! 3. for every answer, on any route, `invalidate` drops what an unsafe method made obsolete.
//!
//! Not done: revalidation (conditional requests sent upstream for stale entries, freshening
//! on 304), so `no-cache` answers are not stored and stale entries are served only to requests
//! with `max-stale`; `stale-while-revalidate` / `stale-if-error`; partial content (206) and
//! range requests; caching POST answers.

mod directives;
mod entry;
mod freshness;
mod invalidate;
mod key;
mod request;
mod reuse;
mod rule;
mod storable;
mod store;

pub use directives::{MAX_DELTA_SECONDS, MaxStale, RequestDirectives, ResponseDirectives};
pub use entry::{CachedResponse, HEADER_OVERHEAD_BYTES};
pub use freshness::{
    ExchangeTimes, Freshness, HEURISTICALLY_CACHEABLE, Heuristic, age_value, corrected_initial_age,
    current_age, date_value, freshness_lifetime, is_heuristically_cacheable,
};
pub use key::{PrimaryKey, SecondaryKey, Vary};
pub use request::{BypassReason, RequestHead, ResponseHead, request_bypass};
pub use rule::{
    CACHEABLE_METHODS, CacheRule, CacheRuleError, DEFAULT_HEURISTIC_CAP,
    DEFAULT_HEURISTIC_FRACTION, DEFAULT_MAX_ENTRY_BYTES, MAX_ENTRY_BYTES_LIMIT,
};
pub use storable::{NotStored, check_storable};
pub use store::{CacheStats, CacheStore, DEFAULT_CAPACITY_BYTES, Lookup, MAX_VARIANTS_PER_KEY};
