//! Which stored answers a request may be given (RFC 9111 sections 2 and 4.1).
//!
//! - The primary key is the target URI: scheme, authority and path with query. The authority is
//!   the URI's (HTTP/2 `:authority`, absolute-form) or else `Host`; scheme and host compare
//!   without case and a default port is dropped (RFC 9110 section 4.2.3), so `Example.com:80`
//!   and `example.com` share entries. The path and query are compared as sent: two spellings
//!   of one resource miss each other, which costs a fetch and is never wrong. The method is not
//!   in the key: the store keeps GET and HEAD answers apart and answers a HEAD from a GET.
//! - The secondary key is the request header values an answer's `Vary` nominates, normalised
//!   so that equivalent spellings match: repeated field lines combined, list elements trimmed
//!   (`gzip,deflate` is `gzip , deflate`), an absent field distinct from an empty one. Values
//!   keep their case: a false miss is cheap, a false hit is not.
//! - `Vary: *` (or a `Vary` naming something that is not a field name) matches no later
//!   request, so such an answer is never stored.

use http::header::{HOST, HeaderName, VARY};
use http::{HeaderMap, Uri};

use super::directives::split_list;

/// The target URI of a request, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrimaryKey {
    scheme: String,
    authority: String,
    path_and_query: String,
}

impl PrimaryKey {
    /// The key of a request to `uri` with `headers`; `None` without an authority (no
    /// `:authority` and no valid `Host`), which is then not cached. A URI without a scheme
    /// (origin-form, what HTTP/1.1 sends) is taken as `http`: plaintext is what the sidecar
    /// receives from its application.
    pub fn from_request(uri: &Uri, headers: &HeaderMap) -> Option<Self> {
        let scheme = uri.scheme_str().unwrap_or("http");
        let authority = match uri.authority() {
            Some(a) => a.as_str().to_string(),
            None => headers.get(HOST)?.to_str().ok()?.trim().to_string(),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Self::new(scheme, &authority, path)
    }

    /// A key from its parts (a `Location` resolved against a request); `None` when the
    /// authority is empty.
    pub fn new(scheme: &str, authority: &str, path_and_query: &str) -> Option<Self> {
        let scheme = scheme.to_ascii_lowercase();
        // Userinfo is not part of the identity of an http(s) resource (RFC 9110 4.2.4).
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let mut authority = host_port.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => Some(":80"),
            "https" => Some(":443"),
            _ => None,
        };
        if let Some(port) = default_port
            && authority.ends_with(port)
        {
            authority.truncate(authority.len() - port.len());
        }
        if authority.is_empty() {
            return None;
        }
        let path_and_query = if path_and_query.is_empty() || path_and_query.starts_with('?') {
            format!("/{path_and_query}")
        } else {
            path_and_query.to_string()
        };
        Some(Self {
            scheme,
            authority,
            path_and_query,
        })
    }

    /// The scheme, lowercase.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The authority, lowercase, without a default port.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path and query.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// Bytes the key takes in the store's budget.
    pub(crate) fn size(&self) -> usize {
        self.scheme.len() + self.authority.len() + self.path_and_query.len()
    }
}

/// What an answer's `Vary` says about the requests it may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// Only requests with the same values of these fields (none: every request).
    Fields(Vec<HeaderName>),
    /// No later request (`Vary: *`, or a name that is not a field name).
    Any,
}

impl Vary {
    /// Reads every `Vary` line of a response.
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut names: Vec<HeaderName> = Vec::new();
        for line in headers.get_all(VARY) {
            for item in split_list(&String::from_utf8_lossy(line.as_bytes())) {
                match HeaderName::from_bytes(item.as_bytes()) {
                    Ok(name) if item != "*" => {
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                    _ => return Self::Any,
                }
            }
        }
        Self::Fields(names)
    }
}

/// The values a request had for the fields its answer's `Vary` nominated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecondaryKey(Vec<(HeaderName, Option<String>)>);

impl SecondaryKey {
    /// Records `request`'s values of `names`.
    pub fn capture(names: &[HeaderName], request: &HeaderMap) -> Self {
        Self(
            names
                .iter()
                .map(|name| (name.clone(), normalised(request, name)))
                .collect(),
        )
    }

    /// Whether `request` has the same values for every recorded field.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, value)| normalised(request, name) == *value)
    }

    /// Bytes the key takes in the store's budget.
    pub(crate) fn size(&self) -> usize {
        self.0
            .iter()
            .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, String::len))
            .sum()
    }
}

/// A field's value with its lines combined and list elements trimmed; `None` when absent.
fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let elements: Vec<String> = lines
        .flat_map(|line| {
            split_list(&String::from_utf8_lossy(line.as_bytes()))
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    Some(elements.join(","))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn key(uri: &str, h: &[(&'static str, &'static str)]) -> Option<PrimaryKey> {
        PrimaryKey::from_request(&uri.parse().unwrap(), &headers(h))
    }

    #[test]
    fn the_primary_key_is_scheme_authority_path_and_query() {
        let origin_form = key("/a?x=1", &[("host", "Echo.Mesh:80")]).unwrap();
        assert_eq!(origin_form.scheme(), "http");
        assert_eq!(origin_form.authority(), "echo.mesh");
        assert_eq!(origin_form.path_and_query(), "/a?x=1");
        let absolute = key("HTTP://echo.mesh/a?x=1", &[("host", "other")]).unwrap();
        assert_eq!(absolute, origin_form, "the URI's authority wins over Host");
        assert_ne!(
            key("/a?x=2", &[("host", "echo.mesh")]),
            Some(origin_form.clone())
        );
        assert_ne!(
            key("/A?x=1", &[("host", "echo.mesh")]),
            Some(origin_form.clone())
        );
        assert_ne!(
            key("https://echo.mesh/a?x=1", &[]),
            Some(origin_form),
            "the scheme is part of it"
        );
        assert_eq!(
            key("https://u@echo.mesh:443", &[]).unwrap(),
            PrimaryKey::new("https", "echo.mesh", "/").unwrap()
        );
        assert_eq!(
            key("/", &[("host", "echo.mesh:8080")]).unwrap().authority(),
            "echo.mesh:8080"
        );
        assert_eq!(key("/a", &[]), None, "no authority: not cached");
    }

    #[test]
    fn vary_lists_names_once_and_star_matches_nothing() {
        let h = headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "accept-encoding"),
        ]);
        assert_eq!(
            Vary::parse(&h),
            Vary::Fields(vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept-language"),
            ])
        );
        assert_eq!(Vary::parse(&HeaderMap::new()), Vary::Fields(vec![]));
        assert_eq!(Vary::parse(&headers(&[("vary", "accept, *")])), Vary::Any);
        assert_eq!(Vary::parse(&headers(&[("vary", "bad name")])), Vary::Any);
    }

    #[test]
    fn secondary_keys_match_normalised_values() {
        let names = [
            HeaderName::from_static("accept-encoding"),
            HeaderName::from_static("x-tenant"),
        ];
        let stored = SecondaryKey::capture(
            &names,
            &headers(&[("accept-encoding", "gzip, br"), ("x-tenant", "a")]),
        );
        let same = headers(&[
            ("accept-encoding", "gzip"),
            ("accept-encoding", " br "),
            ("x-tenant", "a"),
            ("user-agent", "anything"),
        ]);
        assert!(stored.matches(&same), "lines combined, whitespace trimmed");
        let other_tenant = headers(&[("accept-encoding", "gzip,br"), ("x-tenant", "b")]);
        assert!(!stored.matches(&other_tenant));
        let no_tenant = headers(&[("accept-encoding", "gzip,br")]);
        assert!(!stored.matches(&no_tenant), "absent differs from present");
        let case = headers(&[("accept-encoding", "GZIP,br"), ("x-tenant", "a")]);
        assert!(!stored.matches(&case), "values keep their case");
        let empty = SecondaryKey::capture(&names[1..], &headers(&[("x-tenant", "")]));
        assert!(empty.matches(&headers(&[("x-tenant", "")])));
        assert!(
            !empty.matches(&HeaderMap::new()),
            "empty differs from absent"
        );
        assert!(SecondaryKey::default().matches(&other_tenant));
    }
}
