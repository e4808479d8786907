//! `mesh chaos`: the command line of the suite.

use std::path::PathBuf;

use crate::error::ChaosError;
use crate::report::Status;
use crate::runner::{RunOptions, run_suite};
use crate::scenario::{self, Scenario};

/// Prove that failover works: start cluster-sets, drive steady load through them, inject the
/// faults of each scenario on its timeline, and check its SLOs.
///
/// Start with `mesh chaos list chaos/scenarios/`, then `mesh chaos run chaos/scenarios/`.
/// Clusters run in network namespaces when run as root (partitions and WAN loss need them);
/// otherwise on loopback, with namespace faults reported as not run.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ChaosCommand,
}

/// The `mesh chaos` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ChaosCommand {
    /// Run scenarios and write the report; the exit code is 0 only if every SLO held.
    Run(RunArgs),
    /// List scenarios, one line each (name, fast subset, needs namespaces, summary).
    List(ListArgs),
}

/// Arguments of `mesh chaos run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A scenario file, or a directory whose `*.yaml` files are run in name order.
    #[arg(default_value = "chaos/scenarios")]
    pub path: PathBuf,
    /// Run only the scenarios with these names (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run only the fast subset (scenarios marked `fast: true`).
    #[arg(long)]
    pub fast: bool,
    /// Directory for the report (`report.json`, one `<scenario>.svg` each) and for each run's
    /// state and component logs (`state/<scenario>/logs/`).
    #[arg(long, default_value = "chaos-report")]
    pub out: PathBuf,
    /// The `mesh` binary to run components from (default: this one).
    #[arg(long)]
    pub mesh_bin: Option<PathBuf>,
    /// Fail instead of falling back to loopback when network namespaces cannot be used (CI).
    #[arg(long, env = "MESH_CHAOS_REQUIRE_NAMESPACES")]
    pub require_namespaces: bool,
}

/// Arguments of `mesh chaos list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// A scenario file or a directory of them.
    #[arg(default_value = "chaos/scenarios")]
    pub path: PathBuf,
}

/// One line describing a scenario.
pub fn list_line(s: &Scenario) -> String {
    let mut tags = Vec::new();
    if s.fast {
        tags.push("fast");
    }
    if s.needs_namespaces() {
        tags.push("namespaces");
    }
    format!(
        "{:<28} {:>4} s  {:<16} {}",
        s.name,
        s.duration.as_secs(),
        tags.join(","),
        s.summary
    )
}

/// The scenarios `args` selects, all validated first.
pub fn select(args: &RunArgs) -> Result<Vec<Scenario>, ChaosError> {
    let all = scenario::load_path(&args.path)?;
    for name in &args.only {
        if !all.iter().any(|s| &s.name == name) {
            let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
            return Err(ChaosError::Setup(format!(
                "--only {name}: no such scenario in {} (scenarios: {})",
                args.path.display(),
                known.join(", ")
            )));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
        .filter(|s| !args.fast || s.fast)
        .collect())
}

/// Runs `mesh chaos`. `run` returns an error when any SLO did not hold, so the exit code tells.
pub async fn run(args: ChaosArgs) -> Result<(), ChaosError> {
    match args.command {
        ChaosCommand::List(a) => {
            for s in scenario::load_path(&a.path)? {
                println!("{}", list_line(&s));
            }
            Ok(())
        }
        ChaosCommand::Run(a) => {
            let scenarios = select(&a)?;
            if scenarios.is_empty() {
                return Err(ChaosError::Setup(format!(
                    "no scenario of {} matches the selection",
                    a.path.display()
                )));
            }
            let mesh_bin = match &a.mesh_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .map_err(|e| ChaosError::Setup(format!("cannot find the mesh binary: {e}")))?,
            };
            let out = std::path::absolute(&a.out).unwrap_or_else(|_| a.out.clone());
            let opts = RunOptions {
                out_dir: out.clone(),
                mesh_bin,
                require_namespaces: a.require_namespaces,
            };
            let report = run_suite(
                &scenarios,
                &opts,
                Box::pin(mesh_core::telemetry::shutdown_signal()),
            )
            .await?;
            let files = report.write(&out).map_err(|source| ChaosError::Report {
                path: out.clone(),
                source,
            })?;
            for f in files {
                println!("wrote {}", f.display());
            }
            let count = |st: Status| report.scenarios.iter().filter(|s| s.status == st).count();
            if report.all_passed() {
                println!("every SLO held in {} scenario(s)", report.scenarios.len());
                Ok(())
            } else {
                Err(ChaosError::SlosBroken {
                    failed: count(Status::Failed) + count(Status::Interrupted),
                    not_run: count(Status::NotRun),
                    passed: count(Status::Passed),
                    report: out,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ChaosArgs,
    }

    #[test]
    fn run_and_list_parse_with_defaults() {
        let c = Cli::try_parse_from(["chaos", "run"]).unwrap();
        let ChaosCommand::Run(r) = c.args.command else {
            panic!()
        };
        assert_eq!(r.path, PathBuf::from("chaos/scenarios"));
        assert_eq!(r.out, PathBuf::from("chaos-report"));
        assert!(!r.fast && r.only.is_empty());
        let c = Cli::try_parse_from([
            "chaos",
            "run",
            "x.yaml",
            "--only",
            "a,b",
            "--fast",
            "--require-namespaces",
        ])
        .unwrap();
        let ChaosCommand::Run(r) = c.args.command else {
            panic!()
        };
        assert_eq!(r.only, ["a", "b"]);
        assert!(r.require_namespaces);
        assert!(matches!(
            Cli::try_parse_from(["chaos", "list"]).unwrap().args.command,
            ChaosCommand::List(_)
        ));
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("run") && help.contains("list"), "{help}");
    }
}
