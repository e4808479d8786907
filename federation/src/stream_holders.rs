//! The identities holding a discovery stream open now. A sidecar that only calls out (no
//! served service) never registers, yet its breakers are the ones that see a locality fail:
//! its open stream is what makes it a known workload whose breaker reports count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open discovery streams by the caller's SPIFFE ID.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamHolders(Arc<Mutex<HashMap<String, usize>>>);

impl StreamHolders {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a stream opened by `identity`, until the returned guard is dropped.
    pub(crate) fn hold(&self, identity: &str) -> HeldStream {
        *self.lock().entry(identity.to_string()).or_default() += 1;
        HeldStream {
            holders: self.clone(),
            identity: identity.to_string(),
        }
    }

    /// Whether `identity` holds a stream open now.
    pub(crate) fn holds(&self, identity: &str) -> bool {
        self.lock().contains_key(identity)
    }
}

/// One open stream; dropping it (the stream's body ending) forgets it.
#[derive(Debug)]
pub(crate) struct HeldStream {
    holders: StreamHolders,
    identity: String,
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        let mut held = self.holders.lock();
        if let Some(n) = held.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_held_while_any_of_its_streams_is_open() {
        let holders = StreamHolders::default();
        let id = "spiffe://us-east.mesh/ns/demo/sa/client";
        assert!(!holders.holds(id));
        let first = holders.hold(id);
        let second = holders.hold(id);
        assert!(holders.holds(id) && !holders.holds("spiffe://us-east.mesh/ns/x/sa/y"));
        drop(first);
        assert!(holders.holds(id), "one stream is still open");
        drop(second);
        assert!(!holders.holds(id));
    }
}
