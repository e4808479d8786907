//! The bearer token that guards an admin API's mutating routes: created once (random, mode
//! 0600) in the controller's state directory, read by `mesh link`, `mesh up` and the launcher,
//! and checked in constant time by [`AdminAuth`] in front of every admin route whose method is
//! not `GET` or `HEAD`.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use rand::RngCore;
use serde::Serialize;

use crate::http::{BoxBody, json};

/// File name of the admin token inside a cluster's state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Random bytes in a generated token (hex-encoded: 64 characters).
const TOKEN_BYTES: usize = 32;
/// Shortest token accepted from a file a person or a chart wrote: guessing must stay out of
/// reach even at many attempts a second.
const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted (it travels in a header).
const MAX_TOKEN_LEN: usize = 4096;

/// Why a token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// Reading, creating or writing the file failed.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file holds something that is not a usable token.
    #[error("admin token file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A bearer token; never printed (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token in `text` (surrounding whitespace ignored), checked to be usable in a header.
    pub fn parse(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "a token is {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters, this one {}",
                token.len()
            ));
        }
        if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "a token is printable ASCII without spaces; found {c:?}"
            ));
        }
        Ok(Self(token.to_string()))
    }

    /// Reads the token of the file at `path`.
    pub fn read(path: &Path) -> Result<Self, AdminTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| AdminTokenError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Reads the token at `path`, creating the file (mode 0600, a fresh token) when it does not
    /// exist; true when it was created. Two processes starting at once end with the same token:
    /// the file appears whole (written aside, then hard-linked into place, which fails when
    /// another was first).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AdminTokenError> {
        let io = |source| AdminTokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Ok((Self::read(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let token = Self::generate();
        let aside = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut f| {
                f.write_all(token.0.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()
            });
        let linked = written.and_then(|()| std::fs::hard_link(&aside, path));
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => Ok((token, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::read(path)?, false))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The `Authorization` header value carrying this token.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("a parsed token is printable ASCII");
        value.set_sensitive(true);
        value
    }

    /// Whether `value` is `Bearer <this token>`, compared in constant time (the time taken
    /// does not depend on how much of a guess was right).
    pub fn matches(&self, value: Option<&HeaderValue>) -> bool {
        let Some(presented) = value.and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(presented, self.0.as_bytes())
    }
}

/// Compares two byte strings in time that depends only on their lengths (a token's length is
/// not secret: generated ones are all 64 characters).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// Whether a token file is readable by others than its owner (a person may have created it
/// with a loose umask); the controller warns about it.
pub fn readable_by_others(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

/// Whether a call with `method` changes something, so needs the token: everything but `GET`
/// and `HEAD`. By method, not by route, so a route added later is guarded without a list to
/// keep up to date.
pub fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// The admin API's guard of mutating calls.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    token: Option<AdminToken>,
    /// Where the token is (or how to configure one), for the refusal's message.
    source: String,
}

/// The body of a refused admin call.
#[derive(Debug, Serialize)]
struct Refusal<'a> {
    error: String,
    header: &'static str,
    token_file: &'a str,
}

impl AdminAuth {
    /// Mutating calls need `Bearer <token>`, the token of `file`.
    pub fn token(token: AdminToken, file: &Path) -> Self {
        Self {
            token: Some(token),
            source: file.display().to_string(),
        }
    }

    /// No token is configured: every mutating call is refused, the answer saying `hint` (what
    /// to configure, or how else to make the change).
    pub fn refuse_all(hint: impl Into<String>) -> Self {
        Self {
            token: None,
            source: hint.into(),
        }
    }

    /// `Ok` when the call may proceed: read-only, or carrying the token; else the 401 answer.
    pub fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), Box<Response<BoxBody>>> {
        if !is_mutating(method) {
            return Ok(());
        }
        let presented = headers.get(header::AUTHORIZATION);
        let error = match &self.token {
            Some(token) if token.matches(presented) => return Ok(()),
            Some(_) if presented.is_none() => format!(
                "{method} needs the header `Authorization: Bearer <token>` with the admin token \
                 in {} (`mesh link` and `mesh up` read it from the state directory; elsewhere \
                 pass --admin-token-file)",
                self.source
            ),
            Some(_) => format!(
                "the `Authorization` header does not carry the admin token in {}: expected \
                 `Bearer <token>` with that file's content",
                self.source
            ),
            None => format!(
                "{method} is refused: this admin API has no token configured ({})",
                self.source
            ),
        };
        let mut rsp = json(
            StatusCode::UNAUTHORIZED,
            &Refusal {
                error,
                header: "Authorization",
                token_file: &self.source,
            },
        );
        rsp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mesh-admin\""),
        );
        Err(Box::new(rsp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mesh-admin-token-{name}-{}-{}",
            std::process::id(),
            rand::rng().next_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn only_get_and_head_are_read_only() {
        assert!(!is_mutating(&Method::GET) && !is_mutating(&Method::HEAD));
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
            Method::from_bytes(b"ROTATE").unwrap(),
        ] {
            assert!(is_mutating(&m), "{m}");
        }
    }

    #[test]
    fn the_token_must_be_presented_exactly() {
        let token = AdminToken::parse("0123456789abcdef0123").unwrap();
        let auth = AdminAuth::token(token.clone(), Path::new("/state/us-east/admin-token"));
        assert!(auth.check(&Method::GET, &headers(None)).is_ok());
        let good = headers(Some("Bearer 0123456789abcdef0123"));
        assert!(auth.check(&Method::POST, &good).is_ok());
        assert_eq!(
            token.header_value().to_str().unwrap(),
            "Bearer 0123456789abcdef0123"
        );
        for bad in [
            None,
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer 0123456789abcdef01234"),
            Some("Bearer 0123456789abcdef0124"),
            Some("bearer 0123456789abcdef0123"),
            Some("0123456789abcdef0123"),
            Some("Basic 0123456789abcdef0123"),
        ] {
            let rsp = auth.check(&Method::DELETE, &headers(bad)).unwrap_err();
            assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
            assert!(rsp.headers().contains_key(header::WWW_AUTHENTICATE));
        }
    }

    #[test]
    fn a_refusal_names_the_header_and_the_file() {
        let auth = AdminAuth::token(
            AdminToken::generate(),
            Path::new("/state/us-east/admin-token"),
        );
        let rsp = auth.check(&Method::POST, &headers(None)).unwrap_err();
        let body = futures_body(*rsp);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["header"], "Authorization");
        assert_eq!(v["token_file"], "/state/us-east/admin-token");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("Authorization: Bearer") && error.contains("/state/us-east/admin-token")
        );

        let none = AdminAuth::refuse_all("Kubernetes mode: manage links with Link objects");
        let rsp = none
            .check(&Method::POST, &headers(Some("Bearer whatever-it-is-long")))
            .unwrap_err();
        let v: serde_json::Value = serde_json::from_slice(&futures_body(*rsp)).unwrap();
        assert!(v["error"].as_str().unwrap().contains("Link objects"));
    }

    fn futures_body(rsp: Response<BoxBody>) -> bytes::Bytes {
        use http_body_util::BodyExt;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(rsp.into_body().collect())
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn bad_token_text_is_refused_with_the_reason() {
        assert!(AdminToken::parse("short").unwrap_err().contains("16 to"));
        assert!(
            AdminToken::parse("has a space inside it")
                .unwrap_err()
                .contains("printable ASCII")
        );
        assert_eq!(
            AdminToken::parse("  0123456789abcdef\n").unwrap(),
            AdminToken("0123456789abcdef".into())
        );
        assert_eq!(
            format!("{:?}", AdminToken::generate()),
            "AdminToken(<redacted>)"
        );
    }

    #[test]
    fn the_file_is_created_once_private_and_then_kept() {
        let dir = temp_dir("create");
        let path = dir.join(ADMIN_TOKEN_FILE);
        let (first, created) = AdminToken::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!readable_by_others(&path));
        let (again, created) = AdminToken::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first, again);
        assert_eq!(AdminToken::read(&path).unwrap(), first);
        // Nothing is left aside.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        std::fs::write(&path, "short\n").unwrap();
        let err = AdminToken::load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.contains("admin-token") && err.contains("16 to"),
            "{err}"
        );
        let missing = AdminToken::read(&dir.join("nope")).unwrap_err().to_string();
        assert!(missing.contains("nope"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn constant_time_comparison_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
