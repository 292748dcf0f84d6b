//! Named test workloads and their X509-SVIDs, minted in code (never pasted PEM).
//!
//! A [`TrustDomainCa`] stands in for a SPIRE server: it holds a self-signed root for one trust
//! domain and issues leaf certificates described by an [`SvidSpec`]. The defaults produce a
//! well-formed X509-SVID (one SPIFFE URI SAN, CA=false, digitalSignature, one hour of validity);
//! each builder method breaks exactly one rule so tests can show that svidgate notices.

pub mod jwt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A workload of the seed architecture, with its SPIFFE ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Short name used in test output and file names.
    pub name: &'static str,
    /// The SPIFFE ID SPIRE would issue for it.
    pub spiffe_id: &'static str,
}

/// The demo trust domain.
pub const TRUST_DOMAIN: &str = "ai.internal";
/// A federated partner's trust domain, not allowed by default.
pub const FOREIGN_TRUST_DOMAIN: &str = "partner.example";

/// The perimeter API gateway.
pub const GATEWAY: Workload =
    Workload { name: "gateway", spiffe_id: "spiffe://ai.internal/ns/edge/sa/gateway" };
/// The agent orchestrator: the seed's allowed caller of the model server.
pub const ORCHESTRATOR: Workload =
    Workload { name: "orchestrator", spiffe_id: "spiffe://ai.internal/ns/agents/sa/orchestrator" };
/// The model server.
pub const MODEL_SERVER: Workload =
    Workload { name: "model-server", spiffe_id: "spiffe://ai.internal/ns/inference/sa/model-server" };
/// The vector store.
pub const VECTOR_STORE: Workload =
    Workload { name: "vector-store", spiffe_id: "spiffe://ai.internal/ns/storage/sa/vector-store" };
/// The tool runtime.
pub const TOOL_RUNTIME: Workload =
    Workload { name: "tool-runtime", spiffe_id: "spiffe://ai.internal/ns/tools/sa/tool-runtime" };
/// A workload of the trust domain with a valid SVID that no policy lets in.
pub const ROGUE: Workload =
    Workload { name: "rogue", spiffe_id: "spiffe://ai.internal/ns/sandbox/sa/rogue-agent" };
/// A workload of a foreign trust domain.
pub const PARTNER: Workload = Workload {
    name: "partner",
    spiffe_id: "spiffe://partner.example/ns/agents/sa/orchestrator",
};

/// Every named workload.
pub const WORKLOADS: [Workload; 7] =
    [GATEWAY, ORCHESTRATOR, MODEL_SERVER, VECTOR_STORE, TOOL_RUNTIME, ROGUE, PARTNER];

/// Looks a workload up by its name (`"orchestrator"`), as scenario files refer to them.
pub fn workload(name: &str) -> Option<Workload> {
    WORKLOADS.into_iter().find(|w| w.name == name)
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The leaf certificate.
    pub cert_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Issued {
    /// SHA-256 of the DER certificate in lower-case hex, as Envoy's
    /// `connection.sha256_peer_certificate_digest`.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.der)
    }
}

/// SHA-256 of a DER certificate in lower-case hex, as Envoy's `connection.sha256_peer_certificate_digest`.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A minting error (rcgen's, with the spec that caused it).
pub type Error = rcgen::Error;

/// A root CA for one trust domain: the stand-in for a SPIRE server's signing authority.
pub struct TrustDomainCa {
    trust_domain: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TrustDomainCa {
    /// A fresh self-signed root for `trust_domain`, valid from a day ago for a year.
    pub fn new(trust_domain: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("{trust_domain} test root"));
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://{trust_domain}").try_into()?)];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self { trust_domain: trust_domain.to_owned(), cert_pem, issuer: Issuer::new(params, key) })
    }

    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate, i.e. the trust bundle.
    pub fn bundle_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate described by `spec`.
    pub fn issue(&self, spec: &SvidSpec) -> Result<Issued, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        for uri in &spec.uri_sans {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns_sans {
            params.subject_alt_names.push(SanType::DnsName(dns.as_str().try_into()?));
        }
        params.is_ca = if spec.ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = spec.key_usages.clone();
        let now = OffsetDateTime::now_utc();
        params.not_before = now + spec.not_before;
        params.not_after = now + spec.not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() })
    }

    /// Issues a well-formed X509-SVID for `workload`.
    pub fn svid(&self, workload: Workload) -> Result<Issued, Error> {
        self.issue(&SvidSpec::for_id(workload.spiffe_id))
    }
}

/// What to put in a leaf certificate. Offsets are relative to the moment of issue.
#[derive(Clone, Debug)]
pub struct SvidSpec {
    /// Subject common name.
    pub common_name: String,
    /// URI SANs, in order.
    pub uri_sans: Vec<String>,
    /// DNS SANs (server certificates for curl need one).
    pub dns_sans: Vec<String>,
    /// basicConstraints CA flag.
    pub ca: bool,
    /// keyUsage bits.
    pub key_usages: Vec<KeyUsagePurpose>,
    /// notBefore, relative to now.
    pub not_before: Duration,
    /// notAfter, relative to now.
    pub not_after: Duration,
}

impl SvidSpec {
    /// A well-formed X509-SVID for `spiffe_id`, valid from 5 minutes ago for one hour.
    pub fn for_id(spiffe_id: &str) -> Self {
        Self {
            common_name: spiffe_id.rsplit('/').next().unwrap_or(spiffe_id).to_owned(),
            uri_sans: vec![spiffe_id.to_owned()],
            dns_sans: Vec::new(),
            ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment],
            not_before: Duration::minutes(-5),
            not_after: Duration::minutes(55),
        }
    }

    /// A well-formed X509-SVID for `workload`.
    pub fn for_workload(workload: Workload) -> Self {
        Self::for_id(workload.spiffe_id)
    }

    /// Adds a URI SAN after the existing ones.
    pub fn with_uri_san(mut self, uri: &str) -> Self {
        self.uri_sans.push(uri.to_owned());
        self
    }

    /// Replaces the URI SANs.
    pub fn with_uri_sans(mut self, uris: &[&str]) -> Self {
        self.uri_sans = uris.iter().map(|u| (*u).to_owned()).collect();
        self
    }

    /// Adds a DNS SAN.
    pub fn with_dns_san(mut self, dns: &str) -> Self {
        self.dns_sans.push(dns.to_owned());
        self
    }

    /// Makes the certificate a CA that may sign certificates.
    pub fn as_ca(mut self) -> Self {
        self.ca = true;
        self.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        self
    }

    /// Replaces the key usages.
    pub fn with_key_usages(mut self, usages: Vec<KeyUsagePurpose>) -> Self {
        self.key_usages = usages;
        self
    }

    /// Sets the validity window relative to now.
    pub fn valid_between(mut self, not_before: Duration, not_after: Duration) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

pub use rcgen::KeyUsagePurpose as KeyUsage;

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "svidgate tests");
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_leaf_and_key() {
        let ca = TrustDomainCa::new(TRUST_DOMAIN).unwrap();
        let leaf = ca.svid(ORCHESTRATOR).unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        assert_ne!(leaf.cert_pem, ca.bundle_pem());
        assert_eq!(leaf.sha256_hex().len(), 64);
    }

    #[test]
    fn finds_workloads_by_name() {
        assert_eq!(workload("model-server"), Some(MODEL_SERVER));
        assert_eq!(workload("nobody"), None);
    }
}
