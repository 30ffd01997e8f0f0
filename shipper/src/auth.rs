//! Who may call the API: bearer tokens, each known to the shipper only by its sha256 and
//! scoped to stream-name prefixes and to actions ([`Action`]). The middleware in
//! [`crate::api`] resolves the caller once per request; each handler then asks
//! [`Caller::allow`] for the action and the stream it is about to touch.

use std::collections::HashMap;

use logferry_common::StreamId;
pub use logferry_config::shipper::Action;
use logferry_config::shipper::AuthSection;
use sha2::{Digest, Sha256};

use crate::error::{Result, ShipperError};

/// What one accepted token may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token's id, for the audit log.
    pub id: String,
    /// Stream-name prefixes; `*` is every stream.
    streams: Vec<String>,
    actions: Vec<Action>,
    expires_ms: Option<i64>,
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off (`auth.insecure_no_auth`): everything is allowed.
    Anyone,
    /// A valid token.
    Token(Grant),
}

impl Caller {
    /// The token id for the audit log.
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::Token(g) => Some(&g.id),
        }
    }

    /// Whether the caller may do `action` on `stream` (`None`: on the shipper as a whole,
    /// e.g. reading its limits, which any action covers).
    ///
    /// # Errors
    /// [`ShipperError::Forbidden`] naming the token, the action and the stream.
    pub fn allow(&self, action: Action, stream: Option<&StreamId>) -> Result<()> {
        let Caller::Token(g) = self else {
            return Ok(());
        };
        if !g.actions.contains(&action) {
            return Err(ShipperError::Forbidden(format!(
                "token {} may not {}",
                g.id,
                describe(action)
            )));
        }
        match stream {
            Some(s) if !g.covers(s) => Err(ShipperError::Forbidden(format!(
                "token {} does not cover stream {s}",
                g.id
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the caller may see `stream` at all (any action): for listings, which show
    /// only the streams a token covers.
    pub fn sees(&self, stream: &StreamId) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(g) => g.covers(stream),
        }
    }
}

impl Grant {
    fn covers(&self, stream: &StreamId) -> bool {
        self.streams
            .iter()
            .any(|p| p == "*" || stream.as_str().starts_with(p.as_str()))
    }
}

fn describe(action: Action) -> &'static str {
    match action {
        Action::Ship => "ship (upload segments and snapshots)",
        Action::Read => "read stream state",
        Action::Admin => "read the shipper's own state",
    }
}

/// The tokens the shipper accepts, by the sha256 of their secret.
#[derive(Debug, Clone)]
pub struct Auth {
    open: bool,
    by_hash: HashMap<[u8; 32], Grant>,
}

impl Auth {
    /// The tokens of `[auth]`.
    ///
    /// # Errors
    /// [`ShipperError::BadRequest`] never; [`ShipperError::Internal`] for a config that did
    /// not pass validation.
    pub fn from_config(cfg: &AuthSection) -> Result<Self> {
        let mut by_hash = HashMap::new();
        for t in &cfg.tokens {
            let hash: [u8; 32] = hex::decode(&t.sha256)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| {
                    ShipperError::Internal(format!("token {}: sha256 is not 64 hex digits", t.id))
                })?;
            let expires_ms = t
                .expires_ms()
                .map_err(|e| ShipperError::Internal(e.to_string()))?;
            by_hash.insert(
                hash,
                Grant {
                    id: t.id.clone(),
                    streams: t.streams.clone(),
                    actions: t.actions.clone(),
                    expires_ms,
                },
            );
        }
        Ok(Auth {
            open: cfg.insecure_no_auth,
            by_hash,
        })
    }

    /// Whether every request is accepted without a token.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The caller of a request with this `Authorization` header value, at `now_ms`.
    ///
    /// # Errors
    /// [`ShipperError::Unauthorized`] for a missing, malformed, unknown or expired token.
    pub fn caller(&self, authorization: Option<&str>, now_ms: i64) -> Result<Caller> {
        if self.open {
            return Ok(Caller::Anyone);
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ShipperError::Unauthorized(
                    "no bearer token; send Authorization: Bearer <token> (the agent's shipper.token)".into(),
                )
            })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let grant = self.by_hash.get(&hash).ok_or_else(|| {
            ShipperError::Unauthorized("the token is not one this shipper accepts".into())
        })?;
        if grant.expires_ms.is_some_and(|e| now_ms > e) {
            return Err(ShipperError::Unauthorized(format!(
                "token {} has expired",
                grant.id
            )));
        }
        Ok(Caller::Token(grant.clone()))
    }
}

/// A new token: `lft_` and 64 hex digits of 32 random bytes, and its sha256 (hex) for the
/// config.
///
/// # Errors
/// [`ShipperError::Internal`] when the system has no randomness to give.
pub fn new_token() -> Result<(String, String)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| ShipperError::Internal(format!("no system randomness: {e}")))?;
    let token = format!("lft_{}", hex::encode(secret));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    Ok((token, hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_config::shipper::TokenConfig;

    /// (id, secret, stream prefixes, actions, expiry) of one test token.
    type Token<'a> = (
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a [Action],
        Option<&'a str>,
    );

    fn auth(tokens: &[Token<'_>]) -> Auth {
        let cfg = AuthSection {
            tokens: tokens
                .iter()
                .map(|(id, secret, streams, actions, expires)| TokenConfig {
                    id: (*id).into(),
                    sha256: hex::encode(Sha256::digest(secret.as_bytes())),
                    streams: streams.iter().map(|s| (*s).to_owned()).collect(),
                    actions: actions.to_vec(),
                    expires: expires.map(str::to_owned),
                })
                .collect(),
            ..AuthSection::default()
        };
        cfg.validate().unwrap();
        Auth::from_config(&cfg).unwrap()
    }

    fn stream(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn a_token_is_held_to_its_streams_and_actions() {
        let a = auth(&[("orders", "s1", &["orders-"], &[Action::Ship], None)]);
        let c = a.caller(Some("Bearer s1"), 0).unwrap();
        assert_eq!(c.id(), Some("orders"));
        c.allow(Action::Ship, Some(&stream("orders-eu"))).unwrap();
        let other = c.allow(Action::Ship, Some(&stream("billing"))).unwrap_err();
        assert!(matches!(other, ShipperError::Forbidden(_)), "{other}");
        let read = c
            .allow(Action::Read, Some(&stream("orders-eu")))
            .unwrap_err();
        assert!(read.to_string().contains("may not read"), "{read}");
        assert!(c.sees(&stream("orders-x")) && !c.sees(&stream("billing")));
    }

    #[test]
    fn missing_unknown_and_expired_tokens_are_refused() {
        let a = auth(&[
            ("all", "s1", &["*"], &[Action::Read], None),
            (
                "old",
                "s2",
                &["*"],
                &[Action::Read],
                Some("2001-01-01T00:00:00Z"),
            ),
        ]);
        for header in [None, Some("s1"), Some("Bearer nope"), Some("Basic s1")] {
            let e = a.caller(header, 0).unwrap_err();
            assert!(
                matches!(e, ShipperError::Unauthorized(_)),
                "{header:?}: {e}"
            );
        }
        let now = 1_800_000_000_000;
        let e = a.caller(Some("Bearer s2"), now).unwrap_err();
        assert!(e.to_string().contains("token old has expired"), "{e}");
        a.caller(Some("Bearer s1"), now)
            .unwrap()
            .allow(Action::Read, Some(&stream("any")))
            .unwrap();
    }

    #[test]
    fn open_auth_lets_everyone_in_and_new_tokens_hash_as_configured() {
        let open = Auth::from_config(&AuthSection {
            insecure_no_auth: true,
            ..AuthSection::default()
        })
        .unwrap();
        assert!(open.caller(None, 0).unwrap().id().is_none());
        let (token, hash) = new_token().unwrap();
        assert!(token.starts_with("lft_") && token.len() == 68, "{token}");
        assert_eq!(hash, hex::encode(Sha256::digest(token.as_bytes())));
        assert_ne!(new_token().unwrap().0, token);
    }
}
