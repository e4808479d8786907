//! An address to dial given as `host:port`, where the host is an IP address or a DNS name
//! (`mesh-controller.mesh-system.svc:15012` in Kubernetes, `127.0.0.1:7443` locally). Names are
//! resolved at every connect, so a Service whose address changes is followed; [`HostPort::resolve`]
//! gives every address a name stands for (the gateway reaches each controller replica behind a
//! headless Service).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// `host:port`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

/// Why a `host:port` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not host:port ({reason})")]
pub struct HostPortError {
    input: String,
    reason: &'static str,
}

impl HostPort {
    /// The host: an IP address or a DNS name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The address to hand to `TcpStream::connect` (which resolves names).
    pub fn connect_target(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Every address the host stands for now, with the port, sorted and without duplicates:
    /// an IP address is itself; a name is looked up with the system's resolver.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(ip) = self.ip() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.connect_target())
            .await?
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let fail = |reason| HostPortError {
            input: s.to_string(),
            reason,
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(|| fail("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| fail("the port is not a number up to 65535"))?;
        let valid_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid_name {
            return Err(fail("the host is neither an IP address nor a DNS name"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(ip) => SocketAddr::new(ip, self.port).fmt(f),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// One or more `host:port`, comma-separated: every replica of one service
/// (`10.0.0.5:15012,10.0.0.6:15012`, or one name that resolves to all of them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPorts(Vec<HostPort>);

impl HostPorts {
    /// The entries, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &HostPort> {
        self.0.iter()
    }

    /// The entries as a slice.
    pub fn as_slice(&self) -> &[HostPort] {
        &self.0
    }

    /// Every address the entries stand for now ([`HostPort::resolve`] of each), sorted and
    /// without duplicates; an error only when no entry resolves.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let mut results = Vec::new();
        for entry in &self.0 {
            results.push(entry.resolve().await);
        }
        Self::union(results)
    }

    /// The addresses of the entries' resolutions (one result per entry, by whatever resolver),
    /// sorted and without duplicates; an error only when every entry failed.
    pub fn union(
        results: impl IntoIterator<Item = std::io::Result<Vec<SocketAddr>>>,
    ) -> std::io::Result<Vec<SocketAddr>> {
        let mut addrs = Vec::new();
        let mut last_error = None;
        for result in results {
            match result {
                Ok(found) => addrs.extend(found),
                Err(e) => last_error = Some(e),
            }
        }
        if addrs.is_empty()
            && let Some(e) = last_error
        {
            return Err(e);
        }
        addrs.sort_unstable();
        addrs.dedup();
        Ok(addrs)
    }
}

impl From<HostPort> for HostPorts {
    fn from(one: HostPort) -> Self {
        Self(vec![one])
    }
}

impl From<SocketAddr> for HostPorts {
    fn from(addr: SocketAddr) -> Self {
        Self(vec![addr.into()])
    }
}

impl FromStr for HostPorts {
    type Err = HostPortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entries = s
            .split(',')
            .map(|e| e.trim().parse())
            .collect::<Result<Vec<HostPort>, _>>()?;
        Ok(Self(entries))
    }
}

impl fmt::Display for HostPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            entry.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let ip: HostPort = "127.0.0.1:7443".parse().unwrap();
        assert_eq!(ip.ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ip.to_string(), "127.0.0.1:7443");
        let v6: HostPort = "[::1]:7443".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:7443");
        let name: HostPort = "Mesh-Controller.mesh-system.svc:15012".parse().unwrap();
        assert_eq!(name.host(), "mesh-controller.mesh-system.svc");
        assert_eq!(name.ip(), None);
        assert_eq!(name.to_string().parse::<HostPort>().unwrap(), name);
    }

    #[tokio::test]
    async fn resolves_an_address_to_itself_and_a_name_to_its_addresses() {
        let ip: HostPort = "127.0.0.2:7443".parse().unwrap();
        assert_eq!(
            ip.resolve().await.unwrap(),
            vec!["127.0.0.2:7443".parse::<SocketAddr>().unwrap()]
        );
        let name: HostPort = "localhost:7443".parse().unwrap();
        let addrs = name.resolve().await.unwrap();
        assert!(!addrs.is_empty(), "localhost resolves");
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7443),
            "{addrs:?}"
        );
        assert!(
            addrs.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
    }

    #[test]
    fn lists_name_every_replica() {
        let list: HostPorts = "127.0.0.1:1, [::1]:2,controller.mesh-system.svc:15012"
            .parse()
            .unwrap();
        assert_eq!(list.as_slice().len(), 3);
        assert_eq!(
            list.to_string(),
            "127.0.0.1:1,[::1]:2,controller.mesh-system.svc:15012"
        );
        assert_eq!(list.to_string().parse::<HostPorts>().unwrap(), list);
        assert!("127.0.0.1:1,".parse::<HostPorts>().is_err());
    }

    #[test]
    fn refuses_what_cannot_be_dialled() {
        for bad in [
            "controller",
            "controller:http",
            "a..b:1",
            "-a:1",
            ":80",
            "x:70000",
            "a_b:1",
        ] {
            let err = bad.parse::<HostPort>().unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
