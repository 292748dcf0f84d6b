//! The identity header: stripped before anything reads headers, then set only to a validated ID.

use std::rc::Rc;

use crate::config::{IdentityConfig, Mode};
use crate::jwt_svid::{JwtSvid, JwtSvidError};
use crate::decision::{Decision, DenyReason};
use crate::headers::HeaderList;
use crate::peer::{PeerError, PeerIdentity};
use crate::spiffe::SpiffeId;

/// Request headers with every identity header taken out. Decisions only ever see headers through
/// this type, so no code path can read a header the client could have forged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StrippedHeaders {
    headers: HeaderList,
    removed: HeaderList,
    /// The values of the JWT-SVID token header (also in `headers` with `forward_token`).
    tokens: HeaderList,
    /// The token header is removed from what goes upstream.
    tokens_removed: bool,
}

/// What the identity step concluded for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityOutcome {
    /// The ID the upstream will see in the injected header, if any.
    pub upstream_identity: Option<SpiffeId>,
    /// The upstream identity is the caller named by a trusted forwarder, not the peer itself.
    pub forwarded: bool,
    /// The upstream identity is this JWT-SVID's: the connection has no client certificate.
    pub jwt_svid: Option<Rc<JwtSvid>>,
    /// An identity header arrived from a peer that may not set one.
    pub spoof_attempt: bool,
    /// The request must be denied before any policy runs.
    pub deny: Option<DenyReason>,
}

impl StrippedHeaders {
    /// Splits `headers` (as the proxy gave them) into identity headers and everything else.
    pub fn strip(mut headers: HeaderList, config: &IdentityConfig) -> Self {
        // In place: the usual request has no identity header, and nothing moves.
        let removed = headers.extract(|name| config.is_identity_header(name));
        let (tokens, tokens_removed) = match &config.jwt_svid {
            None => (HeaderList::default(), false),
            Some(jwt) if jwt.forward_token => {
                (HeaderList::from_pairs(headers.iter().filter(|(name, _)| jwt.is_token_header(name))), false)
            }
            Some(jwt) => (headers.extract(|name| jwt.is_token_header(name)), true),
        };
        Self { headers, removed, tokens, tokens_removed }
    }

    /// The values of the JWT-SVID token header (and its variants), in order.
    pub fn tokens(&self) -> Vec<&str> {
        self.tokens.iter().map(|(_, value)| value).collect()
    }

    /// The request headers without identity headers, in the proxy's order.
    pub fn headers(&self) -> &HeaderList {
        &self.headers
    }

    /// The values of the request header `name` (lower-case, as the proxy gives names), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.values(name)
    }

    /// The identity headers that arrived with the request (name, value), in order.
    pub fn removed(&self) -> &HeaderList {
        &self.removed
    }

    /// The distinct names of the identity headers (and of the token header, unless it is
    /// forwarded) that arrived, for removal from the proxy's map.
    pub fn removed_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        let tokens = self.tokens.iter().filter(|_| self.tokens_removed);
        for (name, _) in self.removed.iter().chain(tokens) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name);
            }
        }
        names
    }

    /// The first value of a (non-identity) header, by lower-case name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

impl IdentityConfig {
    /// Decides which identity, if any, the upstream receives, and whether to deny right away.
    ///
    /// `jwt_svid` is the validated token of a connection without a client certificate, or why
    /// it is not valid; `None` when there is no token (or a certificate, which always wins).
    pub fn resolve(
        &self,
        peer: Result<&PeerIdentity, &PeerError>,
        jwt_svid: Option<&Result<Rc<JwtSvid>, JwtSvidError>>,
        stripped: &StrippedHeaders,
    ) -> IdentityOutcome {
        let arrived = !stripped.removed().is_empty();
        let mut outcome = IdentityOutcome {
            upstream_identity: None,
            forwarded: false,
            jwt_svid: None,
            spoof_attempt: arrived,
            deny: None,
        };
        if self.mode == Mode::Perimeter {
            return outcome;
        }
        let peer = match peer {
            Ok(peer) => peer,
            Err(_) if let Some(token) = jwt_svid => {
                match token {
                    Ok(svid) => {
                        outcome.upstream_identity = Some(svid.spiffe_id.clone());
                        outcome.jwt_svid = Some(Rc::clone(svid));
                    }
                    Err(error) => outcome.deny = Some(DenyReason::JwtSvidInvalid(error.clone())),
                }
                return outcome;
            }
            Err(error) => {
                if self.require_peer {
                    outcome.deny = Some(DenyReason::NoPeerIdentity(error.clone()));
                }
                return outcome;
            }
        };
        if self.trusted_forwarders.contains(&peer.spiffe_id) {
            outcome.spoof_attempt = false;
            if arrived {
                match self.forwarded_caller(stripped) {
                    Ok(caller) => {
                        outcome.upstream_identity = Some(caller);
                        outcome.forwarded = true;
                    }
                    Err(reason) => outcome.deny = Some(reason),
                }
                return outcome;
            }
        }
        outcome.upstream_identity = Some(peer.spiffe_id.clone());
        outcome
    }

    /// The caller a trusted forwarder names: exactly one value of the injected header, a valid
    /// SPIFFE ID of an allowed trust domain.
    fn forwarded_caller(&self, stripped: &StrippedHeaders) -> Result<SpiffeId, DenyReason> {
        let injected = self.injected_header();
        let mut values =
            stripped.removed().iter().filter(|(n, _)| n.eq_ignore_ascii_case(injected)).map(|(_, v)| v);
        let value = match (values.next(), values.next()) {
            (Some(value), None) => value,
            (None, _) => return Err(invalid_forward(format!("no {injected} header"))),
            (Some(_), Some(_)) => return Err(invalid_forward(format!("repeated {injected} header"))),
        };
        let caller = SpiffeId::parse(value).map_err(|e| invalid_forward(format!("{value:?}: {e}")))?;
        if !self.svid.trust_domains.iter().any(|td| caller.is_member_of(td)) {
            return Err(invalid_forward(format!("{value:?}: trust domain is not allowed")));
        }
        Ok(caller)
    }
}

impl IdentityOutcome {
    /// The identity module's decision: deny if the identity step says so, else allow (the
    /// identity header is set as the decision is carried out: [`Decision`]).
    pub fn decision(&self, config: &IdentityConfig) -> Decision {
        match &self.deny {
            Some(reason) => Decision::deny(config.deny_status, reason.clone()),
            None => Decision::allow(),
        }
    }
}

fn invalid_forward(detail: String) -> DenyReason {
    DenyReason::ForwardedIdentityInvalid(detail)
}
