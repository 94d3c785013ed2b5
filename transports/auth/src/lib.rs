//! # tributary-auth
//!
//! Bearer tokens, one rule for every front-end (the HTTP API and the gRPC service): with a
//! write token configured, every mutating request needs it; with a read token too, every other
//! request needs one of the two. A missing or wrong token is refused as unauthenticated; the
//! read token on a mutating request as read-only. Comparisons take constant time.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The tokens a server accepts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Needed by mutating requests (and accepted by reads).
    pub write: Option<String>,
    /// Accepted by read requests; when set, reads need a token too.
    pub read: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("write", &self.write.as_ref().map(|_| "***"))
            .field("read", &self.read.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read.
    Read,
    /// Change something.
    Write,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token, or not one of ours (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// The read token on a mutating request (403 / PERMISSION_DENIED).
    ReadOnly,
}

fn same(given: &str, want: &str) -> bool {
    given.as_bytes().ct_eq(want.as_bytes()).into()
}

impl Tokens {
    /// Checks the token given (the part after `Bearer `) for this access.
    pub fn check(&self, given: Option<&str>, access: Access) -> Result<(), Denied> {
        let is_write = |g: &str| self.write.as_deref().is_some_and(|w| same(g, w));
        let is_read = |g: &str| self.read.as_deref().is_some_and(|r| same(g, r));
        match access {
            Access::Write => match (&self.write, given) {
                (None, _) => Ok(()),
                (Some(_), Some(g)) if is_write(g) => Ok(()),
                (Some(_), Some(g)) if is_read(g) => Err(Denied::ReadOnly),
                _ => Err(Denied::Unauthenticated),
            },
            Access::Read => match (&self.read, given) {
                (None, _) => Ok(()),
                (Some(_), Some(g)) if is_read(g) || is_write(g) => Ok(()),
                _ => Err(Denied::Unauthenticated),
            },
        }
    }

    /// Checks the configured tokens: each usable in an `Authorization` header (16 to 4096
    /// visible ASCII characters), and a read token only with a write token (otherwise writes
    /// would be open while reads are not). The error names the field (`auth_token`,
    /// `read_token`) and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, t) in [("auth_token", &self.write), ("read_token", &self.read)] {
            if let Some(t) = t {
                check_token(t).map_err(|e| (field, e))?;
            }
        }
        if self.read.is_some() && self.write.is_none() {
            return Err((
                "read_token",
                "needs auth_token too (otherwise writes would be open while reads are not)".into(),
            ));
        }
        if self.read.is_some() && self.read == self.write {
            return Err(("read_token", "must differ from auth_token".into()));
        }
        Ok(())
    }

    /// Whether any token is configured.
    pub fn enabled(&self) -> bool {
        self.write.is_some() || self.read.is_some()
    }
}

/// A token must be usable in an `Authorization` header: 16 to 4096 visible ASCII characters.
fn check_token(t: &str) -> Result<(), String> {
    if !(16..=4096).contains(&t.len()) {
        return Err(format!("length {} is outside 16..=4096", t.len()));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters (no spaces)".into());
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_by_access() {
        let open = Tokens::default();
        assert_eq!(open.check(None, Access::Write), Ok(()));
        let w = Tokens {
            write: Some("w".into()),
            read: None,
        };
        assert_eq!(w.check(None, Access::Read), Ok(()));
        assert_eq!(w.check(None, Access::Write), Err(Denied::Unauthenticated));
        assert_eq!(
            w.check(Some("x"), Access::Write),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(w.check(Some("w"), Access::Write), Ok(()));
        let rw = Tokens {
            write: Some("w".into()),
            read: Some("r".into()),
        };
        assert_eq!(rw.check(None, Access::Read), Err(Denied::Unauthenticated));
        assert_eq!(rw.check(Some("r"), Access::Read), Ok(()));
        assert_eq!(rw.check(Some("w"), Access::Read), Ok(()));
        assert_eq!(rw.check(Some("r"), Access::Write), Err(Denied::ReadOnly));
    }

    #[test]
    fn tokens_are_checked() {
        let good = "0123456789abcdef".to_string();
        let t = |write: Option<&str>, read: Option<&str>| Tokens {
            write: write.map(str::to_string),
            read: read.map(str::to_string),
        };
        assert_eq!(t(None, None).validate(), Ok(()));
        assert_eq!(
            t(Some("short"), None).validate().map_err(|e| e.0),
            Err("auth_token")
        );
        let spaced = "0123456789 abcdef";
        assert_eq!(
            t(Some(&good), Some(spaced)).validate().map_err(|e| e.0),
            Err("read_token")
        );
        assert_eq!(
            t(None, Some(&good)).validate().map_err(|e| e.0),
            Err("read_token")
        );
        let other = "fedcba9876543210";
        assert_eq!(t(Some(other), Some(&good)).validate(), Ok(()));
        assert_eq!(
            t(Some(&good), Some(&good)).validate().map_err(|e| e.0),
            Err("read_token")
        );
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
