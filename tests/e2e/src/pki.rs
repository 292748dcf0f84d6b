//! The demo trust domain in files: what a SPIRE agent would hand Envoy, minted by `svidgate-testpki`.
//!
//! Every workload's SVID also carries the DNS SAN `localhost`: each of them serves TLS on loopback,
//! and curl (and rustls) check a DNS name. svidgate only reads URI SANs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use svidgate_testpki::{
    GATEWAY, MODEL_SERVER, ORCHESTRATOR, ROGUE, SvidSpec, TOOL_RUNTIME, TRUST_DOMAIN, TrustDomainCa, VECTOR_STORE,
    Workload,
};

/// The workloads that get an SVID in the demo trust domain.
pub const DEMO_WORKLOADS: [Workload; 6] = [GATEWAY, ORCHESTRATOR, MODEL_SERVER, VECTOR_STORE, TOOL_RUNTIME, ROGUE];

/// The DNS SAN every demo SVID carries.
pub const SERVER_NAME: &str = "localhost";

/// A certificate and its key on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The leaf certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8).
    pub key: PathBuf,
    /// The certificate, PEM, as written.
    pub cert_pem: String,
}

/// A trust domain minted into a directory: `bundle.pem`, and `<workload>.pem` / `<workload>.key`.
pub struct MintedDomain {
    dir: PathBuf,
    ca: TrustDomainCa,
}

impl MintedDomain {
    /// Mints the `ai.internal` root and an SVID for each of [`DEMO_WORKLOADS`] into `dir`.
    pub fn mint(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = TrustDomainCa::new(TRUST_DOMAIN)?;
        write(&dir.join("bundle.pem"), ca.bundle_pem())?;
        let domain = Self { dir: dir.to_owned(), ca };
        for workload in DEMO_WORKLOADS {
            domain.issue(workload.name, &SvidSpec::for_workload(workload))?;
        }
        Ok(domain)
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The trust bundle (the root certificate), PEM file.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.pem")
    }

    /// The files of a certificate issued earlier under `name`.
    pub fn cert(&self, name: &str) -> Result<CertFiles> {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        let cert_pem = std::fs::read_to_string(&cert).with_context(|| format!("reading {}", cert.display()))?;
        Ok(CertFiles { cert, key, cert_pem })
    }

    /// Issues a certificate described by `spec` (plus the DNS SAN `localhost`) as `name`.
    pub fn issue(&self, name: &str, spec: &SvidSpec) -> Result<CertFiles> {
        issue_into(&self.ca, &self.dir, name, spec)
    }
}

/// Issues an SVID for `workload` from a root that no demo Envoy trusts, into `dir` as `name`.
pub fn issue_untrusted(dir: &Path, name: &str, workload: Workload) -> Result<CertFiles> {
    let other = TrustDomainCa::new(TRUST_DOMAIN)?;
    issue_into(&other, dir, name, &SvidSpec::for_workload(workload))
}

fn issue_into(ca: &TrustDomainCa, dir: &Path, name: &str, spec: &SvidSpec) -> Result<CertFiles> {
    let issued = ca.issue(&spec.clone().with_dns_san(SERVER_NAME))?;
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    write(&cert, &issued.cert_pem)?;
    write(&key, &issued.key_pem)?;
    Ok(CertFiles { cert, key, cert_pem: issued.cert_pem })
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}
