//! The peer's X509-SVID: from the certificate Envoy validated to a [`PeerIdentity`], or a reason there is none.
//!
//! Envoy's TLS stack has already checked the chain against the trust bundle. This module adds the
//! SPIFFE rules Envoy does not check: exactly one URI SAN holding a valid SPIFFE ID with a non-root
//! path, a leaf that is not a CA, an allowed trust domain, and a bounded lifetime. Parsing is split
//! from the clock check so that a parsed certificate can be cached per connection
//! ([`PeerCache`]) and only its dates compared on each request.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::hash::TrustedKeys;
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Issuers backdate notBefore against clock skew (SPIRE by 10 s), so a "1h" SVID spans a little
/// more than an hour; `max_svid_ttl` allows this much on top of the configured lifetime.
pub const NOT_BEFORE_BACKDATE_ALLOWANCE_S: u64 = 60;

/// Why a connection has no validated peer identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The leaf certificate is a CA (basicConstraints CA=true).
    #[error("peer certificate is a ca certificate")]
    CaCertificate,
    /// The leaf has keyCertSign or cRLSign key usage.
    #[error("peer certificate may sign certificates or crls")]
    CertificateSigner,
    /// The certificate's notAfter is in the past.
    #[error("peer certificate expired at {not_after} (unix seconds)")]
    Expired {
        /// notAfter, unix seconds.
        not_after: i64,
    },
    /// The SPIFFE ID belongs to a trust domain that is not allowed.
    #[error("trust domain {0:?} is not allowed")]
    ForeignTrustDomain(String),
    /// The certificate property could not be parsed as a PEM X.509 certificate.
    #[error("peer certificate does not parse: {0}")]
    Malformed(String),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("uri san {uri:?} is not a spiffe id")]
    MalformedSpiffeId {
        /// The offending URI SAN.
        uri: String,
        /// The spec rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// The certificate has several URI SANs; an X509-SVID has exactly one.
    #[error("peer certificate has {0} uri sans, an svid has exactly one")]
    MultipleUriSans(usize),
    /// The connection carries no peer certificate (no TLS, or no client certificate).
    #[error("no peer certificate")]
    NoCertificate,
    /// The certificate has no URI SAN at all.
    #[error("peer certificate has no uri san")]
    NoUriSan,
    /// The certificate's notBefore is in the future.
    #[error("peer certificate is not valid before {not_before} (unix seconds)")]
    NotYetValid {
        /// notBefore, unix seconds.
        not_before: i64,
    },
    /// The SPIFFE ID has no path: it names the trust domain, not a workload.
    #[error("spiffe id {0:?} has no workload path")]
    RootPath(String),
    /// The certificate lives longer than `max_svid_ttl` allows.
    #[error("peer certificate lifetime {lifetime_s}s exceeds max_svid_ttl {max_s}s")]
    TtlTooLong {
        /// notAfter - notBefore, seconds.
        lifetime_s: i64,
        /// The configured maximum, seconds.
        max_s: u64,
    },
    /// Envoy's `connection.uri_san_peer_certificate` disagrees with the certificate.
    #[error("uri san property {property:?} does not match certificate uri san {certificate:?}")]
    UriSanMismatch {
        /// What the property said.
        property: String,
        /// What the certificate holds.
        certificate: String,
    },
}

/// What a peer certificate must satisfy to become a principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidRules {
    /// Allowed trust domains; empty allows none.
    pub trust_domains: Vec<TrustDomain>,
    /// Longest accepted certificate lifetime (notAfter - notBefore).
    pub max_svid_ttl: Option<Duration>,
}

/// A certificate that passed every time-independent rule; [`Svid::check_time`] finishes the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svid {
    id: SpiffeId,
    not_before: i64,
    not_after: i64,
}

/// A validated peer: its SPIFFE ID and validity window, checked against the proxy clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// Seconds until notAfter, at the time of the check.
    pub ttl_remaining_s: i64,
}

/// The peer certificate as the proxy exposes it, fetched only on a cache miss.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// `connection.peer_certificate`: the leaf, PEM.
    pub pem: Option<Vec<u8>>,
    /// `connection.uri_san_peer_certificate`: the first URI SAN.
    pub uri_san: Option<String>,
}

impl SvidRules {
    /// The validated peer of a connection. `digest` is `connection.sha256_peer_certificate_digest`:
    /// a certificate already seen is not fetched or parsed again, only its dates are checked.
    pub fn resolve(
        &self,
        cache: &mut PeerCache,
        digest: Option<&str>,
        certificate: impl FnOnce() -> PeerCertificate,
        now: SystemTime,
    ) -> Result<PeerIdentity, PeerError> {
        let inspect = || {
            let cert = certificate();
            self.inspect(cert.pem.as_deref().unwrap_or_default(), cert.uri_san.as_deref())
        };
        match digest.filter(|d| !d.is_empty()) {
            Some(digest) => cache.get_or_inspect(digest, inspect).as_ref().as_ref().map_err(Clone::clone)?.check_time(now),
            None => inspect()?.check_time(now),
        }
    }

    /// Parses the leaf PEM Envoy exposes as `connection.peer_certificate` and applies every
    /// rule that does not depend on the clock. `uri_san_property` is Envoy's
    /// `connection.uri_san_peer_certificate` (its first URI SAN), cross-checked against the PEM.
    pub fn inspect(&self, pem: &[u8], uri_san_property: Option<&str>) -> Result<Svid, PeerError> {
        if pem.is_empty() {
            return Err(PeerError::NoCertificate);
        }
        let der = crate::pem::first_certificate(pem).map_err(|e| PeerError::Malformed(e.to_owned()))?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| PeerError::Malformed(e.to_string()))?;
        let uri = single_uri_san(&cert)?;
        if let Some(property) = uri_san_property.filter(|p| *p != uri) {
            return Err(PeerError::UriSanMismatch {
                property: property.to_owned(),
                certificate: uri.to_owned(),
            });
        }
        if cert.is_ca() {
            return Err(PeerError::CaCertificate);
        }
        let key_usage = cert.key_usage().map_err(|e| PeerError::Malformed(e.to_string()))?;
        if key_usage.is_some_and(|ku| ku.value.key_cert_sign() || ku.value.crl_sign()) {
            return Err(PeerError::CertificateSigner);
        }
        let id = SpiffeId::parse(uri).map_err(|source| PeerError::MalformedSpiffeId {
            uri: uri.to_owned(),
            source,
        })?;
        if id.path().is_empty() {
            return Err(PeerError::RootPath(id.to_string()));
        }
        if !self.trust_domains.iter().any(|td| id.is_member_of(td)) {
            return Err(PeerError::ForeignTrustDomain(id.trust_domain().to_owned()));
        }
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        if let Some(max) = self.max_svid_ttl {
            let lifetime_s = not_after.saturating_sub(not_before);
            let allowed_s = max.as_secs().saturating_add(NOT_BEFORE_BACKDATE_ALLOWANCE_S);
            if u64::try_from(lifetime_s).map_or(true, |l| l > allowed_s) {
                return Err(PeerError::TtlTooLong { lifetime_s, max_s: max.as_secs() });
            }
        }
        Ok(Svid { id, not_before, not_after })
    }
}

impl Svid {
    /// The SVID's SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// Checks the validity window against `now` (the proxy clock).
    pub fn check_time(&self, now: SystemTime) -> Result<PeerIdentity, PeerError> {
        let now = unix_seconds(now);
        if now < self.not_before {
            return Err(PeerError::NotYetValid { not_before: self.not_before });
        }
        if now > self.not_after {
            return Err(PeerError::Expired { not_after: self.not_after });
        }
        Ok(PeerIdentity {
            spiffe_id: self.id.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            ttl_remaining_s: self.not_after - now,
        })
    }
}

/// Parsed certificates by SHA-256 digest, so a keep-alive connection (or many connections from
/// the same workload) parses its certificate once. Bounded: the oldest entry goes first.
#[derive(Debug)]
pub struct PeerCache {
    capacity: usize,
    entries: HashMap<String, Rc<Result<Svid, PeerError>>, TrustedKeys>,
    order: VecDeque<String>,
}

impl PeerCache {
    /// A cache holding at most `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: HashMap::default(), order: VecDeque::new() }
    }

    /// The cached inspection for `digest`, or the result of `inspect`, stored for next time.
    pub fn get_or_inspect(
        &mut self,
        digest: &str,
        inspect: impl FnOnce() -> Result<Svid, PeerError>,
    ) -> Rc<Result<Svid, PeerError>> {
        if let Some(hit) = self.entries.get(digest) {
            return Rc::clone(hit);
        }
        let result = Rc::new(inspect());
        if self.capacity == 0 {
            return result;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => self.entries.remove(&oldest),
                None => break,
            };
        }
        self.order.push_back(digest.to_owned());
        self.entries.insert(digest.to_owned(), Rc::clone(&result));
        result
    }

    /// How many certificates are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, PeerError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PeerError::Malformed(e.to_string()))?;
    let mut uris = san
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.count()) {
        (None, _) => Err(PeerError::NoUriSan),
        (Some(uri), 0) => Ok(uri),
        (Some(_), more) => Err(PeerError::MultipleUriSans(more + 1)),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
