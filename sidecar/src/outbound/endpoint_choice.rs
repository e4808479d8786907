//! The endpoint of one try inside the locality the balancer already chose, under the service's
//! backend policy: which endpoints may take the try at all (eligible, and under
//! `limits.maxRequestsPerEndpoint`), then the service's algorithm among those: P2C over peak
//! EWMA (the default), least request, round robin, or consistent hashing on the request's key.
//! It owns the per-locality state the algorithms keep (the round-robin position, the cached
//! hash ring); the balancer owns everything else (health, spill, ejection, breakers). Pure: the
//! per-endpoint numbers and the randomness are passed in.
//!
//! - **Rings are cached per endpoint set.** A ring is built over every endpoint the locality
//!   lists (healthy or not), named `<cluster>/<address>` so that every sidecar builds the same
//!   one, and rebuilt only when that list changes. Endpoints that cannot take this try
//!   (unhealthy, ejected, tried, at their limit) are skipped on the ring (`pick_where`), which
//!   sends their keys exactly where removing them would: the ring need not follow health.
//! - **No key, no affinity.** A request without the hash key (no header, no cookie, no
//!   identity) falls back to P2C: it has no session to keep, and it must not fail for it.

use std::net::SocketAddr;

use mesh_core::api::RouteEndpoint;
use mesh_core::balance::p2c_pick;
use mesh_core::policy::backend_policy::{LimitExceeded, LimitsSpec, LoadBalancerSpec};
use mesh_core::policy::hash_ring::HashRing;
use mesh_core::policy::pick::{CandidateState, RoundRobin, least_request};
use rand::Rng;

/// What the chooser knows of one endpoint of the locality for this try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointView {
    /// Whether it may take this try apart from limits: listed healthy, not ejected (outside
    /// panic routing) and not tried by this request.
    pub eligible: bool,
    /// Requests this sidecar has in flight to it.
    pub in_flight: usize,
    /// Its P2C cost: EWMA latency times (in flight + 1).
    pub cost: f64,
}

/// The endpoints of a locality as the chooser sees them for one try: their views, and which
/// may take it after the concurrency limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Per endpoint of the locality, in its listed order.
    views: Vec<EndpointView>,
    /// Per endpoint: whether it may take the try.
    usable: Vec<bool>,
    /// The limit that turned an eligible endpoint away, if one did.
    limited: Option<LimitExceeded>,
}

impl Candidates {
    /// Which of `views` may take the try under `limits`: an eligible endpoint with
    /// `maxRequestsPerEndpoint` requests in flight is passed over like an ejected one.
    pub fn new(views: Vec<EndpointView>, limits: &LimitsSpec) -> Self {
        let mut limited = None;
        let usable = views
            .iter()
            .map(|view| {
                if !view.eligible {
                    return false;
                }
                let in_flight = u32::try_from(view.in_flight).unwrap_or(u32::MAX);
                match limits.may_send(in_flight) {
                    Ok(()) => true,
                    Err(limit) => {
                        limited = Some(limit);
                        false
                    }
                }
            })
            .collect();
        Self {
            views,
            usable,
            limited,
        }
    }

    /// Whether any endpoint may take the try.
    pub fn any(&self) -> bool {
        self.usable.iter().any(|u| *u)
    }

    /// The limit that turned an eligible endpoint away, if one did: with no usable endpoint,
    /// the reason the locality could not take the try.
    pub fn limited(&self) -> Option<LimitExceeded> {
        self.limited
    }

    /// Whether the endpoint at `index` may take the try.
    pub fn is_usable(&self, index: usize) -> bool {
        self.usable.get(index).copied().unwrap_or(false)
    }
}

/// The per-locality state of the algorithms: created on first use, kept while the locality is.
#[derive(Debug, Default)]
pub struct LevelChooser {
    /// The round-robin position; started at random on first use.
    rotation: Option<RoundRobin>,
    /// The ring over the locality's endpoints, with the addresses it was built from.
    ring: Option<(Vec<SocketAddr>, HashRing)>,
    /// Rings built so far: a request must not build one, a new endpoint set must.
    rings_built: usize,
}

impl LevelChooser {
    /// The endpoint (an index into `endpoints`, the locality's listed endpoints, to which
    /// `candidates` are parallel) for this try among the usable candidates, by `algorithm`;
    /// `hash_key` is the request's consistent-hash key, when it has one. `None` only when no
    /// candidate is usable.
    pub fn choose(
        &mut self,
        algorithm: &LoadBalancerSpec,
        cluster: &str,
        endpoints: &[RouteEndpoint],
        candidates: &Candidates,
        hash_key: Option<u64>,
        rng: &mut impl Rng,
    ) -> Option<usize> {
        match (algorithm, hash_key) {
            (LoadBalancerSpec::ConsistentHash(_), Some(key)) => self
                .ring(cluster, endpoints)
                .pick_where(key, |index| candidates.is_usable(index)),
            (LoadBalancerSpec::LeastRequest, _) => least_request(&candidates.states(), rng),
            (LoadBalancerSpec::RoundRobin, _) => self
                .rotation
                .get_or_insert_with(|| RoundRobin::random_start(rng))
                .pick(&candidates.states()),
            (LoadBalancerSpec::P2cEwma | LoadBalancerSpec::ConsistentHash(_), _) => {
                candidates.p2c(rng)
            }
        }
    }

    /// The cached ring of `endpoints`, rebuilt only when the list differs from the one it was
    /// built from: building hashes and sorts 256 points per endpoint.
    fn ring(&mut self, cluster: &str, endpoints: &[RouteEndpoint]) -> &HashRing {
        let cached = match self.ring.take() {
            Some((addrs, ring))
                if addrs.len() == endpoints.len()
                    && addrs.iter().zip(endpoints).all(|(a, e)| *a == e.address) =>
            {
                (addrs, ring)
            }
            _ => {
                let names: Vec<String> = endpoints
                    .iter()
                    .map(|e| ring_name(cluster, e.address))
                    .collect();
                let addrs = endpoints.iter().map(|e| e.address).collect();
                self.rings_built += 1;
                (addrs, HashRing::new(&names))
            }
        };
        &self.ring.insert(cached).1
    }

    /// How many endpoints the cached ring has, if one is cached.
    pub fn cached_ring_len(&self) -> Option<usize> {
        self.ring.as_ref().map(|(_, ring)| ring.len())
    }

    /// How many rings this locality has built: one per endpoint set it hashed over.
    pub fn rings_built(&self) -> usize {
        self.rings_built
    }
}

/// An endpoint's name on the ring: `<cluster>/<address>`, the same in every sidecar.
pub fn ring_name(cluster: &str, addr: SocketAddr) -> String {
    format!("{cluster}/{addr}")
}

impl Candidates {
    /// The candidates as the simple choosers of `policy::pick` take them.
    fn states(&self) -> Vec<CandidateState> {
        self.views
            .iter()
            .zip(&self.usable)
            .map(|(view, usable)| CandidateState {
                usable: *usable,
                in_flight: view.in_flight,
            })
            .collect()
    }

    /// Power of two choices among the usable candidates by their cost.
    fn p2c(&self, rng: &mut impl Rng) -> Option<usize> {
        let indexes: Vec<usize> = (0..self.views.len()).filter(|i| self.usable[*i]).collect();
        let costs: Vec<f64> = indexes.iter().map(|i| self.views[*i].cost).collect();
        p2c_pick(&costs, rng).map(|chosen| indexes[chosen])
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::policy::backend_policy::ConsistentHashSpec;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn endpoints(ports: &[u16]) -> Vec<RouteEndpoint> {
        ports
            .iter()
            .map(|port| RouteEndpoint {
                address: SocketAddr::from(([127, 0, 0, 1], *port)),
                identity: "spiffe://x.mesh/ns/demo/sa/echo".into(),
                healthy: true,
                plaintext: false,
            })
            .collect()
    }

    fn view(in_flight: usize) -> EndpointView {
        EndpointView {
            eligible: true,
            in_flight,
            cost: in_flight as f64 + 1.0,
        }
    }

    fn limit(max: u32) -> LimitsSpec {
        LimitsSpec {
            max_requests_per_endpoint: Some(max),
            ..LimitsSpec::default()
        }
    }

    #[test]
    fn an_endpoint_at_its_limit_is_not_usable_and_names_the_limit() {
        let ineligible = EndpointView {
            eligible: false,
            ..view(0)
        };
        let some = Candidates::new(vec![view(2), view(1), ineligible], &limit(2));
        assert!(!some.is_usable(0) && some.is_usable(1) && !some.is_usable(2));
        assert_eq!(
            some.limited(),
            Some(LimitExceeded::RequestsPerEndpoint { max: 2 })
        );
        let none = Candidates::new(vec![view(5), view(5)], &limit(5));
        assert!(!none.any());
        assert!(none.limited().is_some());
        let busy_but_ineligible = EndpointView {
            eligible: false,
            ..view(9)
        };
        let ineligible = Candidates::new(vec![busy_but_ineligible], &limit(1));
        assert_eq!(ineligible.limited(), None, "only eligible ones count");
        let unlimited = Candidates::new(vec![view(10_000)], &LimitsSpec::default());
        assert!(unlimited.any() && unlimited.limited().is_none());
    }

    #[test]
    fn the_ring_is_cached_until_the_endpoint_list_changes() {
        let mut chooser = LevelChooser::default();
        let hashing = LoadBalancerSpec::ConsistentHash(ConsistentHashSpec {
            header: Some("x-user".into()),
            ..ConsistentHashSpec::default()
        });
        let mut rng = StdRng::seed_from_u64(1);
        let four = endpoints(&[1, 2, 3, 4]);
        let all = Candidates::new(vec![view(0); 4], &LimitsSpec::default());
        let mut choose = |chooser: &mut LevelChooser, list: &[RouteEndpoint], c: &Candidates| {
            chooser.choose(&hashing, "us-east", list, c, Some(7), &mut rng)
        };
        let first = choose(&mut chooser, &four, &all);
        assert_eq!(chooser.cached_ring_len(), Some(4));
        for _ in 0..10 {
            assert_eq!(choose(&mut chooser, &four, &all), first);
        }
        assert_eq!(chooser.rings_built(), 1, "requests reuse the ring");
        let three = endpoints(&[1, 2, 3]);
        let fewer = Candidates::new(vec![view(0); 3], &LimitsSpec::default());
        choose(&mut chooser, &three, &fewer);
        choose(&mut chooser, &three, &fewer);
        assert_eq!(chooser.cached_ring_len(), Some(3));
        assert_eq!(chooser.rings_built(), 2, "rebuilt once for the new list");
    }

    #[test]
    fn without_a_key_consistent_hashing_falls_back_to_p2c() {
        let mut chooser = LevelChooser::default();
        let hashing = LoadBalancerSpec::ConsistentHash(ConsistentHashSpec {
            cookie: Some("sid".into()),
            ..ConsistentHashSpec::default()
        });
        let mut rng = StdRng::seed_from_u64(2);
        let two = endpoints(&[1, 2]);
        // Endpoint 1 is far costlier: P2C over two always takes endpoint 2.
        let costly = EndpointView {
            cost: 100.0,
            ..view(0)
        };
        let candidates = Candidates::new(vec![costly, view(0)], &LimitsSpec::default());
        for _ in 0..20 {
            let chosen = chooser.choose(&hashing, "us-east", &two, &candidates, None, &mut rng);
            assert_eq!(chosen, Some(1));
        }
        assert_eq!(chooser.cached_ring_len(), None, "no ring without a key");
    }
}
