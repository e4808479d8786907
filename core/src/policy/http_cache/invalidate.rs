//! Which stored resources an answer to an unsafe request makes obsolete (RFC 9111 section 4.4).
//!
//! A non-error answer (2xx, 3xx) to a method that is not known safe (anything but GET, HEAD,
//! OPTIONS and TRACE: methods of unknown safety count as unsafe) invalidates the target URI and
//! the URIs its `Location` and `Content-Location` name, the latter only on the same authority
//! (the RFC forbids crossing hosts, which would let one service flush another's entries).
//! References are resolved against the target URI as RFC 3986 section 5.2 says.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Method, StatusCode, Uri};

use super::key::PrimaryKey;

/// The keys to drop after `method` on `target` was answered with `status` and `headers`; empty
/// when nothing is invalidated.
pub(crate) fn invalidated_keys(
    method: &Method,
    target: Option<PrimaryKey>,
    status: StatusCode,
    headers: &HeaderMap,
) -> Vec<PrimaryKey> {
    let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
    let non_error = status.is_success() || status.is_redirection();
    let Some(target) = target.filter(|_| non_error && !safe.contains(method)) else {
        return Vec::new();
    };
    let mut keys = vec![target.clone()];
    for name in [LOCATION, CONTENT_LOCATION] {
        for value in headers.get_all(name) {
            let Ok(reference) = value.to_str() else {
                continue;
            };
            if let Some(key) = resolve(&target, reference.trim())
                && key.authority() == target.authority()
                && !keys.contains(&key)
            {
                keys.push(key);
            }
        }
    }
    keys
}

/// `reference` resolved against `base` (RFC 3986 section 5.2.2, fragment dropped).
pub(crate) fn resolve(base: &PrimaryKey, reference: &str) -> Option<PrimaryKey> {
    let reference = reference.split_once('#').map_or(reference, |(r, _)| r);
    if has_scheme(reference) {
        let uri: Uri = reference.parse().ok()?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        return PrimaryKey::new(uri.scheme_str()?, uri.authority()?.as_str(), path);
    }
    if reference.starts_with("//") {
        return resolve(base, &format!("{}:{reference}", base.scheme()));
    }
    let (base_path, _) = split_query(base.path_and_query());
    let target = if reference.is_empty() {
        base.path_and_query().to_string()
    } else if reference.starts_with('?') {
        format!("{base_path}{reference}")
    } else if reference.starts_with('/') {
        reference.to_string()
    } else {
        let dir = base_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        format!("{dir}/{reference}")
    };
    let (path, query) = split_query(&target);
    let path = remove_dot_segments(path);
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    PrimaryKey::new(base.scheme(), base.authority(), &path_and_query)
}

/// Whether `reference` starts with `scheme ":"` (RFC 3986 section 3.1).
fn has_scheme(reference: &str) -> bool {
    let Some((scheme, _)) = reference.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !scheme.contains('/')
}

fn split_query(path_and_query: &str) -> (&str, Option<&str>) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    }
}

/// RFC 3986 section 5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn base() -> PrimaryKey {
        PrimaryKey::new("http", "echo", "/a/b/c?q=1").unwrap()
    }

    fn resolved(reference: &str) -> String {
        let k = resolve(&base(), reference).unwrap();
        format!("{}://{}{}", k.scheme(), k.authority(), k.path_and_query())
    }

    #[test]
    fn references_resolve_as_rfc_3986_says() {
        assert_eq!(resolved("d"), "http://echo/a/b/d");
        assert_eq!(resolved("./d?x"), "http://echo/a/b/d?x");
        assert_eq!(resolved("../d"), "http://echo/a/d");
        assert_eq!(resolved("../../../../d"), "http://echo/d");
        assert_eq!(resolved("/x/./y/../z"), "http://echo/x/z");
        assert_eq!(resolved("."), "http://echo/a/b/");
        assert_eq!(resolved("?y=2"), "http://echo/a/b/c?y=2");
        assert_eq!(resolved(""), "http://echo/a/b/c?q=1");
        assert_eq!(resolved("#frag"), "http://echo/a/b/c?q=1");
        assert_eq!(resolved("//other:80/p"), "http://other/p");
        assert_eq!(resolved("HTTPS://Echo/p#f"), "https://echo/p");
        assert!(resolve(&base(), "http://").is_none());
    }

    fn keys(method: Method, status: u16, lines: &[(&'static str, &'static str)]) -> Vec<String> {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, HeaderValue::from_static(value));
        }
        invalidated_keys(
            &method,
            Some(base()),
            StatusCode::from_u16(status).unwrap(),
            &h,
        )
        .iter()
        .map(|k| format!("{}{}", k.authority(), k.path_and_query()))
        .collect()
    }

    #[test]
    fn non_error_answers_to_unsafe_methods_invalidate_target_and_same_authority_locations() {
        let lines = [
            ("location", "/new"),
            ("content-location", "http://echo:80/a/b/c?q=1"),
            ("content-location", "http://elsewhere/x"),
        ];
        assert_eq!(
            keys(Method::POST, 201, &lines),
            ["echo/a/b/c?q=1", "echo/new"]
        );
        for method in ["PUT", "DELETE", "PATCH", "PURGE"] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(keys(m, 204, &[]), ["echo/a/b/c?q=1"], "{method}");
        }
        assert_eq!(keys(Method::POST, 303, &[]).len(), 1, "3xx is not an error");
    }

    #[test]
    fn safe_methods_and_error_answers_invalidate_nothing() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(keys(m, 200, &[("location", "/x")]).is_empty());
        }
        assert!(keys(Method::POST, 404, &[]).is_empty());
        assert!(keys(Method::DELETE, 500, &[]).is_empty());
        assert!(keys(Method::PUT, 100, &[]).is_empty());
    }
}
