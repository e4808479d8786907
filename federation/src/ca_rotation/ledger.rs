//! What the CA signed: per identity, each certificate's root and validity, so a root rotation
//! can tell when no certificate of the old root is left in use. Pure: times are passed in
//! (Unix milliseconds, since certificates expire on the wall clock).

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::identity::rotation::IssuedCounts;

/// Most certificates remembered per identity (replicas share an identity; each renews a few
/// times per lifetime). The oldest are forgotten first.
const MAX_PER_IDENTITY: usize = 256;
/// Most identities remembered.
const MAX_IDENTITIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Issue {
    root: String,
    issued_ms: u64,
    expires_ms: u64,
}

/// Certificates issued since this controller started, by identity.
#[derive(Debug, Clone)]
pub(crate) struct IssueLedger {
    started_ms: u64,
    by_identity: BTreeMap<String, Vec<Issue>>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl IssueLedger {
    /// An empty ledger of a controller started at `started_ms`.
    pub(crate) fn new(started_ms: u64) -> Self {
        Self {
            started_ms,
            by_identity: BTreeMap::new(),
        }
    }

    /// Records a certificate for `identity` signed by `root` at `now_ms`, valid for `validity`;
    /// forgets expired ones.
    pub(crate) fn record(&mut self, identity: &str, root: &str, now_ms: u64, validity: Duration) {
        self.prune(now_ms);
        if !self.by_identity.contains_key(identity) && self.by_identity.len() >= MAX_IDENTITIES {
            return;
        }
        let issues = self.by_identity.entry(identity.to_string()).or_default();
        if issues.len() >= MAX_PER_IDENTITY {
            issues.remove(0);
        }
        issues.push(Issue {
            root: root.to_string(),
            issued_ms: now_ms,
            expires_ms: now_ms.saturating_add(ms(validity)),
        });
    }

    fn prune(&mut self, now_ms: u64) {
        self.by_identity.retain(|_, issues| {
            issues.retain(|i| i.expires_ms > now_ms);
            !issues.is_empty()
        });
    }

    /// Per identity: certificates of `old_root` still valid at `now_ms`, and certificates of
    /// `new_root` issued since `since_ms` (the switch). Identities with neither are left out.
    pub(crate) fn counts(
        &self,
        old_root: &str,
        new_root: &str,
        since_ms: u64,
        now_ms: u64,
    ) -> Vec<IssuedCounts> {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.by_identity
            .iter()
            .map(|(identity, issues)| IssuedCounts {
                identity: identity.clone(),
                old_root: count(
                    issues
                        .iter()
                        .filter(|i| i.root == old_root && i.expires_ms > now_ms)
                        .count(),
                ),
                new_root: count(
                    issues
                        .iter()
                        .filter(|i| i.root == new_root && i.issued_ms >= since_ms)
                        .count(),
                ),
            })
            .filter(|c| c.old_root > 0 || c.new_root > 0)
            .collect()
    }

    /// Whether every certificate that may still be valid at `now_ms` was recorded here: those
    /// issued before this controller started have expired when it has run for `cert_ttl`.
    pub(crate) fn complete(&self, now_ms: u64, cert_ttl: Duration) -> bool {
        now_ms >= self.started_ms.saturating_add(ms(cert_ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn counts_valid_old_certificates_against_reissues_since_the_switch() {
        let mut l = IssueLedger::new(0);
        l.record("gw", "old", 1_000, MIN);
        l.record("echo", "old", 2_000, MIN);
        l.record("echo", "old", 3_000, MIN);
        // Signed by the new root before the switch (not possible, but not counted either).
        l.record("gw", "new", 4_000, MIN);
        let switch = 5_000;
        assert_eq!(
            l.counts("old", "new", switch, switch),
            vec![
                IssuedCounts {
                    identity: "echo".into(),
                    old_root: 2,
                    new_root: 0
                },
                IssuedCounts {
                    identity: "gw".into(),
                    old_root: 1,
                    new_root: 0
                },
            ]
        );
        l.record("echo", "new", 6_000, MIN);
        l.record("gw", "new", 6_000, MIN);
        // The first echo certificate expires at 62 s: one old left against one new.
        let counts = l.counts("old", "new", switch, 62_500);
        assert_eq!(counts[0].old_root, 1);
        assert_eq!(counts[0].new_root, 1);
        // Recording prunes what expired.
        l.record("other", "new", 70_000, MIN);
        assert!(
            l.counts("old", "new", switch, 70_000)
                .iter()
                .all(|c| c.old_root == 0)
        );
    }

    #[test]
    fn the_ledger_vouches_only_after_a_lifetime_since_start() {
        let l = IssueLedger::new(10_000);
        assert!(!l.complete(69_999, MIN));
        assert!(l.complete(70_000, MIN));
    }

    #[test]
    fn a_busy_identity_keeps_its_latest_certificates() {
        let mut l = IssueLedger::new(0);
        for n in 0..(MAX_PER_IDENTITY as u64 + 10) {
            l.record("echo", "old", n, MIN);
        }
        assert_eq!(l.by_identity["echo"].len(), MAX_PER_IDENTITY);
        assert_eq!(l.by_identity["echo"][0].issued_ms, 10);
    }
}
