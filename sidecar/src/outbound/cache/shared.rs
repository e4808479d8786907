//! The one response cache of a sidecar, shared by its outbound stacks: the pure store
//! (`mesh_core::policy::http_cache::CacheStore`) behind a lock, the misses in flight that later
//! misses for the same key wait for (request collapsing), the clock, and the gauges.
//!
//! The store and the flights share one lock so that "nothing stored answers this request" and
//! "someone is already fetching it" are judged together: a request that misses while a fetch is
//! in flight always waits for it, and one that arrives after the fetch stored its answer always
//! finds it. The lock is never held across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use mesh_core::policy::http_cache::{
    CacheRule, CacheStats, CacheStore, ExchangeTimes, Lookup, NotStored, PrimaryKey, RequestHead,
    ResponseHead,
};
use tokio::sync::watch;

use crate::metrics::{CacheLabels, Metrics};

/// Where the cache reads the time (`SystemTime::now` outside tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What misses collapse on: the target URI, and whether the request is a HEAD (a stored GET
/// answers a HEAD, not the other way round, so a GET never waits for a HEAD).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    key: PrimaryKey,
    head: bool,
}

/// The store and the misses in flight, under one lock.
#[derive(Debug)]
struct Inner {
    store: CacheStore,
    /// Each key being fetched, with the channel its waiters watch: it never carries a value,
    /// the leader dropping the sender is what wakes them.
    flights: HashMap<FlightKey, watch::Sender<()>>,
}

/// What to do with a request the cache handles, judged with the flights.
#[derive(Debug)]
pub(super) enum Begin {
    /// The store's verdict needs no upstream or is a bypass (`Fresh`, `Stale`,
    /// `OnlyIfCachedMiss`, `Bypass`); never `Miss`.
    Lookup(Lookup),
    /// A miss nobody is fetching: fetch it, holding the flight until the answer is stored or
    /// known not storable.
    Lead(Flight),
    /// A miss someone is fetching: wait for the receiver to close, then look again.
    Wait(watch::Receiver<()>),
}

/// The sidecar's response cache (see the module doc).
pub struct ResponseCache {
    inner: Mutex<Inner>,
    metrics: Metrics,
    clock: Clock,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// An empty cache of at most `capacity` bytes reporting to `metrics`, on the system clock.
    pub fn new(capacity: usize, metrics: Metrics) -> Arc<Self> {
        Self::with_clock(capacity, metrics, Arc::new(SystemTime::now))
    }

    /// The same on `clock` (tests move time by hand).
    pub fn with_clock(capacity: usize, metrics: Metrics, clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                store: CacheStore::new(capacity),
                flights: HashMap::new(),
            }),
            metrics,
            clock,
        })
    }

    /// The time now, by the cache's clock.
    pub(super) fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// The store's counters and size.
    pub fn stats(&self) -> CacheStats {
        self.lock().store.stats()
    }

    /// The byte budget.
    pub fn capacity(&self) -> usize {
        self.lock().store.capacity()
    }

    /// Looks `request` up; on a miss, joins the flight of its key or starts one.
    pub(super) fn begin(self: &Arc<Self>, rule: &CacheRule, request: RequestHead<'_>) -> Begin {
        let now = self.now();
        let mut inner = self.lock();
        let lookup = inner.store.lookup(rule, request, now);
        let key = PrimaryKey::from_request(request.uri, request.headers);
        let begin = match (lookup, key) {
            (Lookup::Miss, Some(key)) => {
                let key = FlightKey {
                    key,
                    head: request.method == http::Method::HEAD,
                };
                match inner.flights.get(&key) {
                    Some(sender) => Begin::Wait(sender.subscribe()),
                    None => {
                        let (sender, _) = watch::channel(());
                        inner.flights.insert(key.clone(), sender);
                        Begin::Lead(Flight {
                            cache: self.clone(),
                            key,
                        })
                    }
                }
            }
            (lookup, _) => Begin::Lookup(lookup),
        };
        self.publish(&inner);
        begin
    }

    /// Looks `request` up without joining a flight (after waiting for one).
    pub(super) fn lookup(&self, rule: &CacheRule, request: RequestHead<'_>) -> Lookup {
        let now = self.now();
        let mut inner = self.lock();
        let lookup = inner.store.lookup(rule, request, now);
        self.publish(&inner);
        lookup
    }

    /// Stores an answer (the store checks every rule again, with the body).
    pub(super) fn store(
        &self,
        rule: &CacheRule,
        request: RequestHead<'_>,
        response: ResponseHead<'_>,
        body: Bytes,
        times: ExchangeTimes,
    ) -> Result<(), NotStored> {
        let mut inner = self.lock();
        let stored = inner.store.store(rule, request, response, body, times);
        self.publish(&inner);
        stored
    }

    /// Drops what the answer to an unsafe request made obsolete.
    pub(super) fn invalidate(&self, request: RequestHead<'_>, response: ResponseHead<'_>) {
        let mut inner = self.lock();
        if inner.store.invalidate(request, response) > 0 {
            self.publish(&inner);
        }
    }

    /// Counts one request the cache handled, by destination service and `x-mesh-cache` value.
    pub(super) fn count(&self, service: &str, result: &'static str) {
        self.metrics
            .cache_lookups
            .get_or_create(&CacheLabels {
                service: service.to_string(),
                result,
            })
            .inc();
    }

    /// Requests waiting for a flight now (tests wait for collapsing to happen by it).
    #[cfg(test)]
    pub(super) fn waiters(&self) -> usize {
        self.lock()
            .flights
            .values()
            .map(watch::Sender::receiver_count)
            .sum()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The store's invariants hold between its calls, so a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the size gauges from the store.
    fn publish(&self, inner: &Inner) {
        let stats = inner.store.stats();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics.cache_bytes.set(gauge(stats.bytes_in_use));
        self.metrics.cache_entries.set(gauge(stats.entries));
    }
}

/// A miss being fetched. Dropping it (answer stored, answer not storable, error, or the
/// leader's client gone and its future dropped) ends the flight and wakes every waiter.
#[derive(Debug)]
pub(super) struct Flight {
    cache: Arc<ResponseCache>,
    key: FlightKey,
}

impl Drop for Flight {
    fn drop(&mut self) {
        // Only this flight inserted under its key and only it removes it, so the entry is ours;
        // dropping its sender closes every waiter's receiver.
        let sender = self.cache.lock().flights.remove(&self.key);
        drop(sender);
    }
}
