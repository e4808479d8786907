//! How `mesh ca rotate` shows a rotation's status.

use std::fmt::Write as _;

use mesh_core::identity::rotation::{RotationPhase, RotationStatus, short};

/// The phase as the step that led to it.
pub(super) fn phase_word(phase: Option<RotationPhase>) -> &'static str {
    match phase {
        None => "none",
        Some(RotationPhase::Added) => "add",
        Some(RotationPhase::Switched) => "switch",
        Some(RotationPhase::Retired) => "retire",
    }
}

/// What a fingerprint is in this rotation.
fn role(status: &RotationStatus, fingerprint: &str) -> &'static str {
    if status.new_root.as_deref() == Some(fingerprint) {
        "new"
    } else if status.old_root.as_deref() == Some(fingerprint) {
        "old"
    } else {
        "current"
    }
}

/// The trusted roots in one line: `old abcd... , new ef01... (signing)`.
pub(super) fn roots_line(status: &RotationStatus) -> String {
    status
        .roots
        .iter()
        .map(|r| {
            format!(
                "{} root {}{}",
                role(status, &r.fingerprint),
                short(&r.fingerprint),
                if r.signing { " (signing)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole status as text.
pub(super) fn render(status: &RotationStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {} ({}): rotation phase {}{}",
        status.cluster,
        status.trust_domain,
        phase_word(status.phase),
        match (status.phase, status.complete()) {
            (None, _) => String::new(),
            (_, true) => ", complete".into(),
            (_, false) => ", in progress".into(),
        }
    );
    let _ = writeln!(out, "trusted roots: {}", roots_line(status));
    if status.peers.is_empty() {
        let _ = writeln!(out, "linked clusters: none");
    } else {
        let _ = writeln!(
            out,
            "linked clusters (the roots each holds for {}):",
            status.trust_domain
        );
        for peer in &status.peers {
            let held = match &peer.held {
                None => "not reported (link down, or an older release)".to_string(),
                Some(held) => held
                    .iter()
                    .map(|f| format!("{} {}", role(status, f), short(f)))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let _ = writeln!(out, "  {:<16} {held}", peer.cluster);
        }
    }
    if !status.issued.is_empty() {
        let _ = writeln!(out, "valid certificates by root (old / new):");
        for c in &status.issued {
            let _ = writeln!(out, "  {:<50} {} / {}", c.identity, c.old_root, c.new_root);
        }
    }
    for wait in &status.waiting_for {
        let _ = writeln!(out, "waiting for: {wait}");
    }
    if let Some(step) = status.next_step {
        let _ = writeln!(
            out,
            "next step: {} (`mesh ca rotate --cluster {}` takes every step left)",
            step.as_str(),
            status.cluster
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use mesh_core::identity::rotation::{IssuedCounts, PeerRoots, RootView, RotationStep};

    use super::*;

    fn fp(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn a_status_in_progress_names_roots_peers_certificates_and_waits() {
        let status = RotationStatus {
            cluster: "us-east".into(),
            trust_domain: "us-east.mesh".into(),
            phase: Some(RotationPhase::Switched),
            phase_since_unix_ms: Some(1),
            roots: vec![
                RootView {
                    fingerprint: fp('a'),
                    signing: false,
                },
                RootView {
                    fingerprint: fp('b'),
                    signing: true,
                },
            ],
            old_root: Some(fp('a')),
            new_root: Some(fp('b')),
            peers: vec![
                PeerRoots {
                    cluster: "us-west".into(),
                    held: Some(vec![fp('a'), fp('b')]),
                },
                PeerRoots {
                    cluster: "eu-central".into(),
                    held: None,
                },
            ],
            issued: vec![IssuedCounts {
                identity: "spiffe://us-east.mesh/gateway".into(),
                old_root: 1,
                new_root: 0,
            }],
            waiting_for: vec!["spiffe://us-east.mesh/gateway to be reissued".into()],
            next_step: None,
        };
        let text = render(&status);
        assert!(
            text.contains("rotation phase switch, in progress"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "old root {}, new root {} (signing)",
                &fp('a')[..16],
                &fp('b')[..16]
            )),
            "{text}"
        );
        assert!(
            text.contains("eu-central") && text.contains("not reported"),
            "{text}"
        );
        assert!(
            text.contains("spiffe://us-east.mesh/gateway") && text.contains("1 / 0"),
            "{text}"
        );
        assert!(
            text.contains("waiting for: spiffe://us-east.mesh/gateway"),
            "{text}"
        );
        let done = RotationStatus {
            waiting_for: Vec::new(),
            next_step: Some(RotationStep::Retire),
            ..status
        };
        assert!(
            render(&done).contains("next step: retire"),
            "{}",
            render(&done)
        );
    }
}
