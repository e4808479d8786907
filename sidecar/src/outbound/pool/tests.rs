//! The pending-requests limit of [`ConnectionPool::get`], against an endpoint whose dial is
//! held: a local listener that accepts the TCP connection and never answers the TLS handshake.

use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::SpiffeId;
use mesh_core::policy::backend_policy::LimitExceeded;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;
use crate::test_state::{CLUSTER, echo, endpoint, state};

/// Long enough that a held dial outlasts the test rather than timing out in it.
const HELD: Duration = Duration::from_secs(30);

/// A listener that accepts connections and keeps them open without a byte: each dial to it
/// waits in the TLS handshake until the listener task is aborted (its connections then close).
async fn held_listener() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    (port, task)
}

fn pool() -> Arc<ConnectionPool> {
    let tls = state().identity().client.clone();
    let gateway = SpiffeId::gateway(&format!("{CLUSTER}.mesh"));
    Arc::new(ConnectionPool::new(CLUSTER, gateway, tls, HELD))
}

fn at_most(pending: u32) -> LimitsSpec {
    LimitsSpec {
        max_pending_requests: Some(pending),
        ..LimitsSpec::default()
    }
}

/// One `get` of `service` to the endpoint at `port`, under `limits`.
async fn get(
    pool: &ConnectionPool,
    service: &ServiceKey,
    port: u16,
    limits: &LimitsSpec,
) -> Result<SendRequest<BoxBody>, GetError> {
    let endpoint = endpoint(CLUSTER, port);
    let target = Target {
        cluster: CLUSTER,
        endpoint: &endpoint,
        service,
        gateway: None,
        traceparent: None,
        limits: Some(limits),
    };
    pool.get(target).await
}

/// A `get` running in its own task.
fn spawn_get(
    pool: &Arc<ConnectionPool>,
    service: ServiceKey,
    port: u16,
    limits: LimitsSpec,
) -> JoinHandle<Result<SendRequest<BoxBody>, GetError>> {
    let pool = pool.clone();
    tokio::spawn(async move { get(&pool, &service, port, &limits).await })
}

/// Waits (boundedly) until `count` requests of `service` wait in `pool`.
async fn until_pending(pool: &ConnectionPool, service: &ServiceKey, count: u32) {
    for _ in 0..500 {
        if pool.pending(service) == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!(
        "{} requests of {service} pending, expected {count}",
        pool.pending(service)
    );
}

#[tokio::test]
async fn the_request_past_max_pending_is_refused_at_once_and_the_waiting_ones_go_on() {
    let (port, listener) = held_listener().await;
    let pool = pool();
    let limits = at_most(2);
    // The first dials the endpoint, the second waits on its slot: both pending.
    let dialling = spawn_get(&pool, echo(), port, limits.clone());
    until_pending(&pool, &echo(), 1).await;
    let queued = spawn_get(&pool, echo(), port, limits.clone());
    until_pending(&pool, &echo(), 2).await;

    let refused = tokio::time::timeout(Duration::from_secs(1), get(&pool, &echo(), port, &limits))
        .await
        .expect("refused at once, not queued")
        .unwrap_err();
    let GetError::LimitExceeded(limit) = refused else {
        panic!("not a limit refusal: {refused}");
    };
    assert_eq!(limit, LimitExceeded::PendingRequests { max: 2 });
    assert_eq!(limit.label(), "max-pending-requests");
    assert_eq!(pool.pending(&echo()), 2, "a refusal takes no place");

    // Another service's requests count apart: it may wait for the same endpoint.
    let other: ServiceKey = "other.demo".parse().unwrap();
    let other_get = spawn_get(&pool, other.clone(), port, at_most(1));
    until_pending(&pool, &other, 1).await;
    assert!(!dialling.is_finished() && !queued.is_finished());

    // The held handshakes end: the waiting requests went on to the endpoint and fail there,
    // with connect errors (the endpoint's), and give their places back.
    listener.abort();
    for waiting in [dialling, queued, other_get] {
        let error = waiting.await.unwrap().unwrap_err();
        assert!(matches!(error, GetError::Connect(_)), "{error}");
    }
    assert_eq!(pool.pending(&echo()), 0);
    assert_eq!(pool.pending(&other), 0);
}

#[tokio::test]
async fn a_request_dropped_while_waiting_gives_its_place_back() {
    let (port, listener) = held_listener().await;
    let pool = pool();
    let limits = at_most(1);
    let waiting = spawn_get(&pool, echo(), port, limits.clone());
    until_pending(&pool, &echo(), 1).await;
    assert!(matches!(
        get(&pool, &echo(), port, &limits).await,
        Err(GetError::LimitExceeded(_))
    ));
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert_eq!(pool.pending(&echo()), 0);
    // The freed place admits the next request, which dials the endpoint again.
    let next = spawn_get(&pool, echo(), port, limits);
    until_pending(&pool, &echo(), 1).await;
    listener.abort();
    assert!(matches!(next.await.unwrap(), Err(GetError::Connect(_))));
}

#[tokio::test]
async fn without_limits_every_request_waits() {
    let (port, listener) = held_listener().await;
    let pool = pool();
    let unlimited = LimitsSpec::default();
    let waiting: Vec<_> = (0..5)
        .map(|_| spawn_get(&pool, echo(), port, unlimited.clone()))
        .collect();
    until_pending(&pool, &echo(), 5).await;
    listener.abort();
    for get in waiting {
        assert!(matches!(get.await.unwrap(), Err(GetError::Connect(_))));
    }
    assert_eq!(pool.pending(&echo()), 0);
}
