//! Running scenarios: per scenario, namespaces (when available), the cluster-set, relays, the
//! load and the timeline of faults and heals; then teardown (always), the leftover check and
//! the SLO verdicts.

mod env;
mod faults;
mod summary;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use mesh_launcher::cluster_set::ClusterSet;

use crate::error::ChaosError;
use crate::load::{Entry, LoadDriver, LoadResult};
use crate::netns::{self, NetTopology, NetworkMode};
use crate::relay::UdpRelay;
use crate::report::{Mark, ScenarioReport, Status, SuiteReport, Totals, scenario_table};
use crate::scenario::{Action, ProcessRef, Scenario};
use crate::slo::{self, RunFacts, SloResult, Verdict};
use env::RunEnv;

/// How long the cluster-set may take to converge again after its links are moved onto relays.
const RELINK_TIMEOUT: Duration = Duration::from_secs(30);

/// How a suite is run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the report, the component logs and state go.
    pub out_dir: PathBuf,
    /// The `mesh` binary the components run from.
    pub mesh_bin: PathBuf,
    /// Fail instead of falling back to loopback when namespaces cannot be used.
    pub require_namespaces: bool,
}

/// A future that resolves on Ctrl-C or SIGTERM.
pub type Interrupt = Pin<Box<dyn Future<Output = ()>>>;

/// Runs `scenarios` one after the other, printing each table as it finishes; stops early when
/// `interrupt` resolves (after tearing the current scenario down).
pub async fn run_suite(
    scenarios: &[Scenario],
    opts: &RunOptions,
    mut interrupt: Interrupt,
) -> Result<SuiteReport, ChaosError> {
    let mode = netns::detect();
    let network = match &mode {
        NetworkMode::Namespaces => {
            for ns in netns::remove_stale() {
                eprintln!(
                    "mesh chaos: removed namespace {ns} left by an earlier run that was killed"
                );
            }
            "namespaces".to_string()
        }
        NetworkMode::Loopback { reason } if opts.require_namespaces => {
            return Err(ChaosError::NamespacesRequired(reason.clone()));
        }
        NetworkMode::Loopback { reason } => {
            eprintln!(
                "mesh chaos: NOT USING NETWORK NAMESPACES: {reason}.\n  Clusters run on loopback; scenarios with partitions or WAN loss are reported as NOT RUN (never as passed)."
            );
            format!("loopback ({reason})")
        }
    };
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut reports = Vec::new();
    for s in scenarios {
        eprintln!(
            "mesh chaos: running {} ({} s of load) ...",
            s.name,
            s.duration.as_secs()
        );
        let r = run_scenario(s, opts, &mode, &mut interrupt).await;
        println!("{}", scenario_table(&r));
        let stop = r.status == Status::Interrupted;
        reports.push(r);
        if stop {
            break;
        }
    }
    Ok(SuiteReport {
        started_unix_s,
        network,
        scenarios: reports,
    })
}

/// Every SLO failed with `why`, except `leftovers`, which is still checked: teardown ran.
fn failed_slos(s: &Scenario, why: &str, leftovers: u64) -> Vec<SloResult> {
    let checked = slo::evaluate(s, &LoadResult::default(), RunFacts { leftovers });
    let mut r = slo::not_run(s, why);
    for (x, c) in r.iter_mut().zip(checked) {
        if x.kind == "leftovers" {
            *x = c;
        } else {
            x.verdict = Verdict::Fail;
        }
    }
    r
}

async fn run_scenario(
    s: &Scenario,
    opts: &RunOptions,
    mode: &NetworkMode,
    interrupt: &mut Interrupt,
) -> ScenarioReport {
    let wall = Instant::now();
    let state_dir = opts.out_dir.join("state").join(&s.name);
    let mut report = ScenarioReport {
        name: s.name.clone(),
        file: s.file.clone(),
        summary: s.summary.clone(),
        network: if *mode == NetworkMode::Namespaces {
            "namespaces".into()
        } else {
            "loopback".into()
        },
        status: Status::NotRun,
        error: None,
        slos: Vec::new(),
        totals: Totals::default(),
        marks: Vec::new(),
        buckets: Vec::new(),
        relays: Vec::new(),
        leftovers: Vec::new(),
        logs: state_dir.join("logs"),
        wall_s: 0.0,
    };
    if let (true, NetworkMode::Loopback { reason }) = (s.needs_namespaces(), mode) {
        report.slos = slo::not_run(s, &format!("not run: needs network namespaces ({reason})"));
        report.error = Some(format!(
            "needs network namespaces for partitions or WAN loss, which cannot be used here: {reason}"
        ));
        return report;
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    let mut env = RunEnv {
        state_dir,
        mesh_bin: opts.mesh_bin.clone(),
        ..RunEnv::default()
    };
    let mut marks = Vec::new();
    let result = tokio::select! {
        r = drive(&mut env, s, mode, &mut marks) => Some(r),
        _ = interrupt.as_mut() => None,
    };
    report.relays = env
        .relays
        .iter()
        .map(|((a, b), r)| (format!("{a}->{b}"), r.stats()))
        .collect();
    env.teardown().await;
    report.leftovers = env.leftovers();
    report.marks = marks;
    match result {
        None => {
            report.status = Status::Interrupted;
            report.error = Some("interrupted; everything was torn down".into());
            report.slos = failed_slos(s, "interrupted", report.leftovers.len() as u64);
        }
        Some(Err(e)) => {
            report.status = Status::Failed;
            report.error = Some(e.to_string());
            report.slos = failed_slos(s, "the run did not complete", report.leftovers.len() as u64);
        }
        Some(Ok((effective, load))) => {
            report.slos = slo::evaluate(
                &effective,
                &load,
                RunFacts {
                    leftovers: report.leftovers.len() as u64,
                },
            );
            report.status = ScenarioReport::status_from_slos(&report.slos);
            report.totals = summary::totals(&load);
            report.buckets = slo::analysis::buckets(&load.outcomes, effective.duration);
        }
    }
    report.wall_s = wall.elapsed().as_secs_f64();
    report
}

/// Sets everything up, drives the load through the timeline, and returns the scenario with
/// the times at which each action really started, and what the load recorded.
async fn drive(
    env: &mut RunEnv,
    s: &Scenario,
    mode: &NetworkMode,
    marks: &mut Vec<Mark>,
) -> Result<(Scenario, LoadResult), ChaosError> {
    if *mode == NetworkMode::Namespaces {
        let names: Vec<String> = s.topology.clusters.iter().map(|c| c.name.clone()).collect();
        env.net = Some(NetTopology::create(&names)?);
    }
    let mut placements = env.net.as_ref().map(|n| n.placements()).unwrap_or_default();
    if s.load.capture {
        let placement = env
            .net
            .as_ref()
            .and_then(|n| n.placement_capturing(&s.load.client))
            .ok_or_else(|| {
                ChaosError::Setup(
                    "`capture: true` needs network namespaces (run as root with ip and iptables)"
                        .into(),
                )
            })?;
        placements.insert(s.load.client.clone(), placement);
    }
    let mut plan = ClusterSet::plan_placed(&s.topology, &env.state_dir, &env.mesh_bin, &placements);
    if let Some(ttl) = s.cert_ttl {
        plan.set_cert_ttl(ttl);
    }
    let set = plan.launch().await?;
    env.set = Some(set);
    env.note_pids();
    setup_relays(env, s).await?;
    let client = env.set.as_ref().and_then(|set| set.cluster(&s.load.client));
    let proxy = client
        .and_then(|c| c.client_proxy())
        .ok_or_else(|| ChaosError::Setup(format!("{} has no client proxy", s.load.client)))?;
    let entry = if s.load.capture {
        let dns = client
            .and_then(|c| c.controller_dns())
            .ok_or_else(|| ChaosError::Setup(format!("{} has no DNS", s.load.client)))?;
        capture_entry(env, s, proxy.port(), dns)?
    } else {
        Entry::Proxy(proxy)
    };
    let driver = LoadDriver::start_at(entry, s.load.clone());
    let t0 = driver.started();
    env.driver = Some(driver);
    let mut effective = s.clone();
    for (i, ev) in s.timeline.iter().enumerate() {
        tokio::time::sleep_until(t0 + ev.at).await;
        let actual = t0.elapsed();
        effective.timeline[i].at = actual;
        match &ev.action {
            Action::Fault { id, fault } => {
                marks.push(Mark {
                    at_s: actual.as_secs_f64(),
                    kind: "fault",
                    label: format!("{} {id}", fault.name()),
                });
                faults::inject(env, id, fault).await?;
            }
            Action::Heal { fault: id } => {
                marks.push(Mark {
                    at_s: actual.as_secs_f64(),
                    kind: "heal",
                    label: id.clone(),
                });
                let fault = s.faults().find(|(f, _)| f == id).map(|(_, f)| f.clone());
                if let Some(fault) = fault {
                    faults::heal(env, id, &fault).await?;
                }
            }
        }
    }
    tokio::time::sleep_until(t0 + s.duration).await;
    effective.duration = t0.elapsed().max(s.duration);
    let load = env
        .finish_load()
        .await
        .ok_or_else(|| ChaosError::Setup("the load driver is gone".into()))?;
    Ok((effective, load))
}

/// Sets up capture in the client cluster's namespace and returns where its app-like
/// connections go: the service's VIP (from the cluster's mesh DNS), port 80.
fn capture_entry(
    env: &RunEnv,
    s: &Scenario,
    outbound_port: u16,
    dns: SocketAddr,
) -> Result<Entry, ChaosError> {
    let net = env
        .net
        .as_ref()
        .ok_or_else(|| ChaosError::Setup("capture needs network namespaces".into()))?;
    net.capture_in(&s.load.client, &env.mesh_bin, outbound_port)
        .map_err(|e| ChaosError::Setup(format!("capture in {}: {e}", s.load.client)))?;
    let ns = net
        .cluster(&s.load.client)
        .map(|c| c.ns.clone())
        .ok_or_else(|| ChaosError::Setup(format!("no namespace for {}", s.load.client)))?;
    let out = std::process::Command::new("dig")
        .args([
            "+short",
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
        ])
        .arg(&s.load.host)
        .output()
        .map_err(|e| ChaosError::Setup(format!("dig (dnsutils) to find the VIP: {e}")))?;
    let answer = String::from_utf8_lossy(&out.stdout);
    let vip: IpAddr = answer.trim().parse().map_err(|_| {
        ChaosError::Setup(format!(
            "the mesh DNS at {dns} gave no VIP for {}: {answer:?}",
            s.load.host
        ))
    })?;
    Ok(Entry::Captured {
        ns,
        addr: SocketAddr::new(vip, 80),
    })
}

/// Puts an impairment relay on the QUIC path of every pair the timeline impairs, one per
/// direction, links the pair through them and waits until traffic flows through the relays.
async fn setup_relays(env: &mut RunEnv, s: &Scenario) -> Result<(), ChaosError> {
    let pairs = s.relayed_pairs();
    if pairs.is_empty() {
        return Ok(());
    }
    let host: IpAddr = env
        .net
        .as_ref()
        .map(|n| IpAddr::V4(n.host_addr()))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    for (a, b) in &pairs {
        let quic = |c: &str| {
            let p = ProcessRef {
                cluster: c.to_string(),
                process: "gateway".into(),
            };
            env.addr(&p, "quic")
                .ok_or_else(|| ChaosError::Setup(format!("the gateway of {c} has no QUIC address")))
        };
        let (ga, gb) = (quic(a)?, quic(b)?);
        env.relays.insert(
            (a.clone(), b.clone()),
            UdpRelay::start(SocketAddr::new(host, 0), gb).await?,
        );
        env.relays.insert(
            (b.clone(), a.clone()),
            UdpRelay::start(SocketAddr::new(host, 0), ga).await?,
        );
        faults::link_via_relays(env, a, b, "relay-setup").await?;
        let deadline = Instant::now() + RELINK_TIMEOUT;
        loop {
            let through = [(a, b), (b, a)].iter().any(|(x, y)| {
                env.relays
                    .get(&((*x).clone(), (*y).clone()))
                    .is_some_and(|r| r.stats().backward.received > 0)
            });
            if through {
                break;
            }
            if Instant::now() > deadline {
                return Err(ChaosError::Setup(format!(
                    "the link {a}-{b} did not move onto the impairment relays within {RELINK_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Some(set) = &env.set {
        set.wait_converged(RELINK_TIMEOUT).await?;
    }
    Ok(())
}
