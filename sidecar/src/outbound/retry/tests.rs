//! The retry layer's tests: scripted tries below it, the answers and skips it produces.
use std::collections::VecDeque;
use std::time::Duration;

use http::{Method, StatusCode};
use std::task::{Context, Poll};

use http_body_util::Full;
use mesh_core::http::text;

use super::*;
use crate::outbound::pool::ConnectError;
use crate::test_state::{echo, snapshot};

/// What the scripted inner service answers a try with.
enum Script {
    Answer(u16, &'static str),
    Fail(&'static str, TryError),
    NoEndpoint,
}

fn at(cluster: &str) -> EndpointRef {
    EndpointRef {
        cluster: cluster.into(),
        addr: ([127, 0, 0, 1], 9).into(),
    }
}

fn refused() -> TryError {
    TryError::Connect(ConnectError::Tcp {
        addr: ([127, 0, 0, 1], 9).into(),
        source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    })
}

/// Runs one request through a retry layer over `script`; gives the result, the endpoints
/// each try was told were tried already, and the retry count.
async fn run<B>(
    layer: &ConcernLayer<Retry>,
    method: Method,
    body: B,
    script: Vec<Script>,
) -> (Result<Response<BoxBody>, Unanswered>, Vec<Vec<EndpointRef>>)
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    run_with(layer, method, body, script, None).await
}

/// [`run`] with a route's retry rules on the request.
async fn run_with<B>(
    layer: &ConcernLayer<Retry>,
    method: Method,
    body: B,
    script: Vec<Script>,
    rules: Option<RetryRules>,
) -> (Result<Response<BoxBody>, Unanswered>, Vec<Vec<EndpointRef>>)
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let inner = tower::service_fn(move |req: Request<TryBody>| {
        record
            .lock()
            .unwrap()
            .push(req.extensions().get::<Tried>().unwrap().0.clone());
        // A try consumes the body, as the connector does.
        let sent = req.body().take().is_some();
        let next = script.lock().unwrap().pop_front().expect("a scripted try");
        async move {
            match next {
                Script::Answer(status, cluster) => {
                    assert!(sent, "a try answered without a body to send");
                    let mut rsp = text(StatusCode::from_u16(status).unwrap(), "x");
                    rsp.extensions_mut().insert(ServedBy(at(cluster)));
                    Ok(rsp)
                }
                Script::Fail(cluster, error) => Err(BalanceError::Try {
                    endpoint: at(cluster),
                    error,
                }),
                Script::NoEndpoint => Err(BalanceError::NoEndpoint),
            }
        }
    });
    let mut req = Request::builder()
        .method(method)
        .uri("http://echo.demo/")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(Resolved {
        dest: Destination {
            service: echo(),
            cluster: None,
        },
        snapshot: Arc::new(snapshot(vec![])),
    });
    if let Some(rules) = rules {
        req.extensions_mut().insert(rules);
    }
    let result = tower::Layer::layer(layer, inner).oneshot(req).await;
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

fn retry_layer(config: RetryBudgetConfig) -> ConcernLayer<Retry> {
    super::layer(Arc::new(RetryBudgets::new(config)), Metrics::unregistered())
}

fn small() -> Full<Bytes> {
    Full::new(Bytes::from_static(b"hello"))
}

#[tokio::test]
async fn a_connect_failure_is_retried_elsewhere_and_the_tries_travel_up() {
    let (result, seen) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::POST,
        small(),
        vec![
            Script::Fail("us-east", refused()),
            Script::Answer(200, "us-west"),
        ],
    )
    .await;
    let rsp = result.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(
        rsp.extensions().get::<Tried>().unwrap().0,
        [at("us-east"), at("us-west")]
    );
    // The second try was told to skip the first's endpoint.
    assert_eq!(seen, [vec![], vec![at("us-east")]]);
}

#[tokio::test]
async fn a_503_is_retried_for_get_but_passed_on_for_post() {
    let (result, seen) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::GET,
        small(),
        vec![
            Script::Answer(503, "us-east"),
            Script::Answer(200, "us-west"),
        ],
    )
    .await;
    assert_eq!(result.unwrap().status(), StatusCode::OK);
    assert_eq!(seen.len(), 2);

    let (result, seen) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::POST,
        small(),
        vec![Script::Answer(503, "us-east")],
    )
    .await;
    let rsp = result.unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rsp.extensions().get::<Tried>().unwrap().0, [at("us-east")]);
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn a_route_retries_its_codes_and_returns_to_tried_endpoints_when_none_is_left() {
    let (result, seen) = run_with(
        &retry_layer(RetryBudgetConfig::default()),
        Method::POST,
        small(),
        vec![
            Script::Answer(500, "us-east"),
            Script::Answer(500, "us-west"),
            // Both endpoints tried: the next try starts over.
            Script::NoEndpoint,
            Script::Answer(200, "us-east"),
        ],
        Some(RetryRules::for_route(3, &[500], None)),
    )
    .await;
    assert_eq!(result.unwrap().status(), StatusCode::OK);
    assert_eq!(
        seen,
        [
            vec![],
            vec![at("us-east")],
            vec![at("us-east"), at("us-west")],
            vec![]
        ]
    );
    // The default rules neither retry a 500 nor return to a tried endpoint.
    let (result, seen) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::GET,
        small(),
        vec![Script::Answer(500, "us-east")],
    )
    .await;
    assert_eq!(result.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn tries_stop_at_the_cap_with_the_last_failure() {
    let (result, seen) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::GET,
        small(),
        vec![
            Script::Fail("us-east", TryError::Timeout(Duration::from_secs(1))),
            Script::Fail("us-east", TryError::Timeout(Duration::from_secs(1))),
            Script::Fail("us-west", TryError::Timeout(Duration::from_secs(1))),
        ],
    )
    .await;
    let Unanswered { error, tried } = result.unwrap_err();
    assert!(
        matches!(error, ProxyError::Timeout { tries: 3, .. }),
        "{error}"
    );
    assert_eq!(tried.len(), 3);
    assert_eq!(seen.len(), super::super::retry_policy::MAX_TRIES);
}

#[tokio::test]
async fn no_endpoint_at_all_is_answered_as_such() {
    let (result, _) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::GET,
        small(),
        vec![Script::NoEndpoint],
    )
    .await;
    let Unanswered { error, tried } = result.unwrap_err();
    assert!(matches!(error, ProxyError::NoEndpoint { .. }), "{error}");
    assert!(tried.is_empty());
}

#[tokio::test]
async fn a_streamed_body_that_was_sent_is_not_sent_again() {
    // Unknown length: streamed, so a broken exchange after sending cannot be retried.
    let chunks = Chunked(VecDeque::from([
        Bytes::from_static(b"a"),
        Bytes::from_static(b"b"),
    ]));
    let (result, seen) = run(
        &retry_layer(RetryBudgetConfig::default()),
        Method::PUT,
        chunks,
        vec![Script::Fail(
            "us-east",
            TryError::Timeout(Duration::from_secs(1)),
        )],
    )
    .await;
    let Unanswered { error, .. } = result.unwrap_err();
    assert!(
        matches!(error, ProxyError::Timeout { tries: 1, .. }),
        "{error}"
    );
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn the_budget_bounds_retries_per_service() {
    // No floor: 10 requests buy 2 retries at the 20% ratio; the other failures stay failed.
    let layer = retry_layer(RetryBudgetConfig {
        min_retries_per_second: 0,
        ..RetryBudgetConfig::default()
    });
    let mut retried = 0;
    for _ in 0..10 {
        let (_, seen) = run(
            &layer,
            Method::GET,
            small(),
            vec![
                Script::Fail("us-east", refused()),
                Script::Answer(200, "us-west"),
            ],
        )
        .await;
        retried += seen.len() - 1;
    }
    assert_eq!(retried, 2);
}

#[tokio::test(start_paused = true)]
async fn a_try_that_times_out_is_retried_at_the_bound() {
    // retry -> timeout -> an endpoint that never answers the first try and answers the
    // second at once: the request is answered exactly one timeout after it started.
    let calls = Arc::new(Mutex::new(0));
    let count = calls.clone();
    let endpoint = tower::service_fn(move |_: Request<TryBody>| {
        let call = {
            let mut calls = count.lock().unwrap();
            *calls += 1;
            *calls
        };
        async move {
            if call == 1 {
                std::future::pending::<()>().await;
            }
            let mut rsp = text(StatusCode::OK, "late but fine");
            rsp.extensions_mut().insert(ServedBy(at("us-west")));
            Ok::<_, BalanceError>(rsp)
        }
    });
    let timeout = crate::timeout::layer(Duration::from_secs(3), |after| BalanceError::Try {
        endpoint: at("us-east"),
        error: TryError::Timeout(after),
    });
    let svc = tower::Layer::layer(
        &retry_layer(RetryBudgetConfig::default()),
        tower::Layer::layer(&timeout, endpoint),
    );
    let mut req = Request::builder()
        .uri("http://echo.demo/")
        .body(small())
        .unwrap();
    req.extensions_mut().insert(Resolved {
        dest: Destination {
            service: echo(),
            cluster: None,
        },
        snapshot: Arc::new(snapshot(vec![])),
    });
    let started = tokio::time::Instant::now();
    let rsp = svc.oneshot(req).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(
        rsp.extensions().get::<Tried>().unwrap().0,
        [at("us-east"), at("us-west")]
    );
    assert_eq!(*calls.lock().unwrap(), 2);
}

/// A body of unknown length (no size hint), as a chunked upload is.
struct Chunked(VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}
