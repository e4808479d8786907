//! The CA service's signing policy: tokens, renewals by client certificate, rate limits.

use mesh_core::identity::WorkloadCsr;

use super::*;

fn service() -> CaService {
    let ca = ClusterCa::generate("us-east.mesh").unwrap();
    CaService::new(ca, "us-east", "s3cret".into(), Duration::from_secs(3600))
}

fn csr(id: &SpiffeId) -> CsrRequest {
    CsrRequest {
        csr_pem: WorkloadCsr::generate(id).unwrap().csr_pem,
    }
}

#[tokio::test]
async fn signs_workloads_and_the_gateway_with_the_token() {
    let svc = service();
    let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let (signed, rsp) = svc
        .sign(Some("Bearer s3cret"), None, &csr(&id))
        .await
        .unwrap();
    assert_eq!(signed, id);
    assert_eq!(rsp.trust_bundle.cluster, "us-east");
    assert!(rsp.cert_chain_pem.contains("BEGIN CERTIFICATE"));
    let gw = SpiffeId::gateway("us-east.mesh");
    assert!(
        svc.sign(Some("Bearer s3cret"), None, &csr(&gw))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn refuses_bad_tokens_the_controller_identity_and_odd_paths() {
    let svc = service();
    let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Bearer s3cre"),
    ] {
        let err = svc.sign(auth, None, &csr(&id)).await.unwrap_err();
        assert_eq!(err.reason, "token", "{auth:?}");
        assert_eq!(err.error.status(), http::StatusCode::UNAUTHORIZED);
    }
    let ctl = SpiffeId::controller("us-east.mesh");
    let err = svc
        .sign(Some("Bearer s3cret"), None, &csr(&ctl))
        .await
        .unwrap_err();
    assert_eq!(err.error.status(), http::StatusCode::FORBIDDEN);
    assert!(
        err.error.to_string().contains("never issued"),
        "{}",
        err.error
    );
    let odd: SpiffeId = "spiffe://us-east.mesh/admin".parse().unwrap();
    assert_eq!(
        svc.sign(Some("Bearer s3cret"), None, &csr(&odd))
            .await
            .unwrap_err()
            .reason,
        "policy"
    );
    let foreign = SpiffeId::gateway("eu-central.mesh");
    assert_eq!(
        svc.sign(Some("Bearer s3cret"), None, &csr(&foreign))
            .await
            .unwrap_err()
            .reason,
        "policy"
    );
    let garbage = CsrRequest {
        csr_pem: "not a csr".into(),
    };
    assert_eq!(
        svc.sign(Some("Bearer s3cret"), None, &garbage)
            .await
            .unwrap_err()
            .reason,
        "malformed"
    );
}

#[derive(Debug)]
struct FixedReviewer(Result<ServiceAccountRef, ReviewError>);

impl TokenReviewer for FixedReviewer {
    fn review<'a>(&'a self, _token: &'a str) -> crate::kubernetes::token_review::ReviewFuture<'a> {
        let answer = self.0.clone();
        Box::pin(async move { answer })
    }
}

fn kubernetes_service(answer: Result<ServiceAccountRef, ReviewError>) -> CaService {
    service().with_kubernetes_auth(KubernetesAuth {
        reviewer: Arc::new(FixedReviewer(answer)),
        gateway: ServiceAccountRef {
            namespace: "mesh-system".into(),
            name: "mesh-gateway".into(),
        },
    })
}

fn account(namespace: &str, name: &str) -> ServiceAccountRef {
    ServiceAccountRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn a_service_account_token_gets_exactly_its_own_identity() {
    let svc = kubernetes_service(Ok(account("demo", "echo")));
    let echo = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let (signed, _) = svc
        .sign(Some("Bearer sa-token"), None, &csr(&echo))
        .await
        .unwrap();
    assert_eq!(signed, echo);
    for other in [
        SpiffeId::workload("us-east.mesh", "demo", "admin"),
        SpiffeId::workload("us-east.mesh", "prod", "echo"),
        SpiffeId::gateway("us-east.mesh"),
    ] {
        let err = svc
            .sign(Some("Bearer sa-token"), None, &csr(&other))
            .await
            .unwrap_err();
        assert_eq!(err.reason, "policy", "{other}");
        assert!(
            err.error.to_string().contains("ServiceAccount demo/echo"),
            "{}",
            err.error
        );
    }
    let gateway = kubernetes_service(Ok(account("mesh-system", "mesh-gateway")));
    let gw = SpiffeId::gateway("us-east.mesh");
    assert_eq!(
        gateway
            .sign(Some("Bearer t"), None, &csr(&gw))
            .await
            .unwrap()
            .0,
        gw
    );
    // The join token still works for workloads outside Kubernetes.
    assert!(
        svc.sign(Some("Bearer s3cret"), None, &csr(&gw))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn rejected_and_unreviewable_tokens_are_refused_with_the_reason() {
    let id = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let rejected = kubernetes_service(Err(ReviewError::Rejected("token expired".into())));
    let err = rejected
        .sign(Some("Bearer t"), None, &csr(&id))
        .await
        .unwrap_err();
    assert_eq!(err.error.status(), http::StatusCode::UNAUTHORIZED);
    assert!(
        err.error.to_string().contains("token expired"),
        "{}",
        err.error
    );
    let down = kubernetes_service(Err(ReviewError::Unavailable("connection refused".into())));
    let err = down
        .sign(Some("Bearer t"), None, &csr(&id))
        .await
        .unwrap_err();
    assert_eq!(err.error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn missing_state_files_name_the_path_and_the_fix() {
    let dir = std::env::temp_dir().join(format!("mesh-fed-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let err = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("ca.crt") && msg.contains("mesh ca"), "{msg}");
    ClusterCa::generate("us-east.mesh")
        .unwrap()
        .write_to(&dir)
        .unwrap();
    let err = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains(JOIN_TOKEN_FILE), "{err}");
    std::fs::write(dir.join(JOIN_TOKEN_FILE), "tok\n").unwrap();
    let svc = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap();
    assert!(
        svc.sign(
            Some("Bearer tok"),
            None,
            &csr(&SpiffeId::gateway("us-east.mesh"))
        )
        .await
        .is_ok()
    );
    std::fs::write(dir.join("ca.key"), "garbage").unwrap();
    let err = CaService::load(&dir, "us-east", Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("mesh ca"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_hint_names_the_command_that_creates_the_files() {
    let hint = ca_hint(Path::new("/srv/mesh/us-east"), "us-east");
    assert!(
        hint.contains("mesh ca --cluster us-east --state-dir /srv/mesh"),
        "{hint}"
    );
    let hint = ca_hint(Path::new("us-east"), "us-east");
    assert!(hint.contains("--state-dir ."), "{hint}");
    let hint = ca_hint(Path::new("/tmp/elsewhere"), "us-east");
    assert!(hint.contains("/tmp/elsewhere is not one"), "{hint}");
}

#[test]
fn constant_time_eq_compares_whole_secrets() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[tokio::test]
async fn a_client_certificate_renews_exactly_its_own_identity() {
    let svc = service();
    let echo = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let (signed, rsp) = svc.sign(None, Some(&echo), &csr(&echo)).await.unwrap();
    assert_eq!(signed, echo);
    assert!(rsp.cert_chain_pem.contains("BEGIN CERTIFICATE"));
    let gw = SpiffeId::gateway("us-east.mesh");
    assert_eq!(svc.sign(None, Some(&gw), &csr(&gw)).await.unwrap().0, gw);

    // Another identity than the certificate's: 403, naming both.
    let admin = SpiffeId::workload("us-east.mesh", "demo", "admin");
    let err = svc.sign(None, Some(&echo), &csr(&admin)).await.unwrap_err();
    assert_eq!(err.error.status(), http::StatusCode::FORBIDDEN);
    let msg = err.error.to_string();
    assert!(
        msg.contains("spiffe://us-east.mesh/ns/demo/sa/echo's")
            && msg.contains("not spiffe://us-east.mesh/ns/demo/sa/admin"),
        "{msg}"
    );
    assert!(svc.sign(None, Some(&echo), &csr(&gw)).await.is_err());

    // A linked domain's certificate, or the controller's own identity: 403.
    let foreign = SpiffeId::gateway("eu-central.mesh");
    let err = svc
        .sign(None, Some(&foreign), &csr(&foreign))
        .await
        .unwrap_err();
    assert_eq!(err.error.status(), http::StatusCode::FORBIDDEN);
    assert!(
        err.error.to_string().contains("another trust domain"),
        "{}",
        err.error
    );
    let ctl = SpiffeId::controller("us-east.mesh");
    let err = svc.sign(None, Some(&ctl), &csr(&ctl)).await.unwrap_err();
    assert!(
        err.error.to_string().contains("never issued"),
        "{}",
        err.error
    );

    // Neither token nor certificate: 401 naming both ways.
    let err = svc.sign(None, None, &csr(&echo)).await.unwrap_err();
    assert_eq!(err.error.status(), http::StatusCode::UNAUTHORIZED);
    assert!(
        err.error.to_string().contains("client certificate"),
        "{}",
        err.error
    );
}

#[tokio::test]
async fn csrs_are_rate_limited_per_identity_with_the_wait() {
    let svc = service();
    let t0 = Instant::now();
    let echo = SpiffeId::workload("us-east.mesh", "demo", "echo");
    let (rate, burst) = CSR_PER_IDENTITY;
    for _ in 0..burst {
        svc.sign_at(None, Some(&echo), &csr(&echo), t0)
            .await
            .unwrap();
    }
    let err = svc
        .sign_at(None, Some(&echo), &csr(&echo), t0)
        .await
        .unwrap_err();
    assert_eq!(err.reason, "rate_limited");
    assert_eq!(err.error.status(), http::StatusCode::TOO_MANY_REQUESTS);
    let rsp = err.error.response();
    assert_eq!(rsp.headers()[http::header::RETRY_AFTER], "1");
    let msg = err.error.to_string();
    assert!(
        msg.contains("of spiffe://us-east.mesh/ns/demo/sa/echo")
            && msg.contains(&format!("{rate} per second")),
        "{msg}"
    );
    // Another identity has its own bucket; the first refills with time.
    let gw = SpiffeId::gateway("us-east.mesh");
    assert!(svc.sign_at(None, Some(&gw), &csr(&gw), t0).await.is_ok());
    let later = t0 + Duration::from_secs(1);
    assert!(
        svc.sign_at(None, Some(&echo), &csr(&echo), later)
            .await
            .is_ok()
    );

    // The join token has one (larger) bucket for everyone bootstrapping.
    let (_, token_burst) = CSR_PER_JOIN_TOKEN;
    for _ in 0..token_burst {
        svc.sign_at(Some("Bearer s3cret"), None, &csr(&echo), t0)
            .await
            .unwrap();
    }
    let err = svc
        .sign_at(Some("Bearer s3cret"), None, &csr(&echo), t0)
        .await
        .unwrap_err();
    assert!(
        err.error.to_string().contains("with the join token"),
        "{}",
        err.error
    );
}
