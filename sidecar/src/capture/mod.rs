//! `mesh init`: sets up transparent capture in the current network namespace (the Kubernetes
//! init container runs the same command), so that a workload's TCP connections reach its
//! sidecar without any proxy setting. The rules are data (`rules.rs`); this module parses the
//! flags and hands the rules to iptables: idempotent (the mesh's chains are rebuilt whole, the
//! jumps into them added once), `--dry-run` prints them, `--cleanup` removes them. What the
//! sidecar does with the connections these rules send it is `crate::transparent`'s.

mod rules;

use std::io::Write as _;
use std::process::{Command, Stdio};

pub use rules::{CapturePlan, Cidr, INBOUND_CHAIN, OUTPUT_CHAIN};

/// `mesh init`: capture rules for a workload's network namespace.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The sidecar's outbound listener port (plain HTTP from the app).
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// The sidecar's inbound listener port (mTLS from other sidecars and gateways).
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// The uid the sidecar runs as: its own connections are never redirected.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The app's ports whose inbound connections go to the sidecar, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub app_ports: Vec<u16>,
    /// Destination ports never redirected, comma-separated (e.g. the API server's 443).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination networks never redirected, comma-separated (e.g. 10.96.0.1/32).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Also capture IPv6 (with ip6tables).
    #[arg(long)]
    pub ipv6: bool,
    /// Print the rules instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the mesh's rules and chains instead.
    #[arg(long, conflicts_with = "dry_run")]
    pub cleanup: bool,
}

/// Why capture could not be set up; names the tool and what it said.
#[derive(Debug, thiserror::Error)]
#[error("{tool}: {reason}")]
pub struct InitError {
    tool: String,
    reason: String,
}

impl InitArgs {
    /// The plan the flags describe.
    pub fn plan(&self) -> CapturePlan {
        CapturePlan {
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            proxy_uid: self.proxy_uid,
            app_ports: self.app_ports.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: self.exclude_outbound_cidrs.clone(),
        }
    }

    fn families(&self) -> Vec<(&'static str, &'static str, bool)> {
        let mut families = vec![("iptables", "iptables-restore", false)];
        if self.ipv6 {
            families.push(("ip6tables", "ip6tables-restore", true));
        }
        families
    }
}

/// Runs `mesh init`: prints, applies or removes the rules.
pub fn run(args: &InitArgs) -> Result<(), InitError> {
    let plan = args.plan();
    for (iptables, restore, v6) in args.families() {
        if args.dry_run {
            print!("# {restore} --noflush\n{}", plan.restore_input(v6));
            for jump in rules::jumps() {
                println!("# {iptables} -t nat -A {}", jump.join(" "));
            }
        } else if args.cleanup {
            cleanup(iptables)?;
        } else {
            apply(iptables, restore, &plan.restore_input(v6))?;
        }
    }
    Ok(())
}

fn apply(iptables: &str, restore: &str, input: &str) -> Result<(), InitError> {
    let fail = |tool: &str, reason: String| InitError {
        tool: tool.to_string(),
        reason,
    };
    let mut child = Command::new(restore)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(restore, format!("cannot run it ({e}); install iptables")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .map_err(|e| fail(restore, e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(restore, e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            restore,
            format!(
                "refused the rules ({}): {}; capture needs root or CAP_NET_ADMIN in the workload's \
                 network namespace",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    for jump in rules::jumps() {
        if !iptables_ok(iptables, "-C", &jump)? {
            iptables_run(iptables, "-A", &jump)?;
        }
    }
    Ok(())
}

fn cleanup(iptables: &str) -> Result<(), InitError> {
    for jump in rules::jumps() {
        while iptables_ok(iptables, "-C", &jump)? {
            iptables_run(iptables, "-D", &jump)?;
        }
    }
    for chain in [OUTPUT_CHAIN, INBOUND_CHAIN] {
        // Absent chains are fine: cleanup is idempotent too.
        let _ = iptables_ok(iptables, "-F", &[chain])?;
        let _ = iptables_ok(iptables, "-X", &[chain])?;
    }
    Ok(())
}

/// Runs `iptables -t nat <op> <args>`; true when it succeeded.
fn iptables_ok(iptables: &str, op: &str, args: &[&str]) -> Result<bool, InitError> {
    let status = Command::new(iptables)
        .args(["-w", "-t", "nat", op])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| InitError {
            tool: iptables.to_string(),
            reason: format!("cannot run it ({e}); install iptables"),
        })?;
    Ok(status.success())
}

fn iptables_run(iptables: &str, op: &str, args: &[&str]) -> Result<(), InitError> {
    if iptables_ok(iptables, op, args)? {
        Ok(())
    } else {
        Err(InitError {
            tool: iptables.to_string(),
            reason: format!("`-t nat {op} {}` failed", args.join(" ")),
        })
    }
}
