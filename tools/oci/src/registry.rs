//! Pushing layouts to a registry over the OCI distribution API, with `oci-client` (the ORAS
//! project's client: blob uploads, token and basic authentication).
//!
//! The manifest is pushed as the exact bytes of the layout (`push_manifest_raw`), never
//! re-serialized, so the digest the registry stores is the one [`crate::artifact`] computed; the
//! push is then checked by asking the registry for the tag's digest.
//!
//! TLS is rustls with the ring provider and the system's roots (plus any CA given): oci-client's
//! default TLS feature would pull aws-lc-rs, which needs cmake. Plain HTTP is allowed only for a
//! registry on a loopback address (tests, a local registry): credentials and unpinned pulls never
//! cross a network in clear.

use std::net::IpAddr;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::digest::Digest;
use crate::layout::Layout;

/// How to authenticate to the registry.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials (a local registry, or one that allows anonymous push).
    #[default]
    Anonymous,
    /// A username and password (or access token used as one): sent as HTTP basic, or exchanged
    /// for a bearer token when the registry asks for token authentication.
    Basic {
        /// The username.
        username: String,
        /// The password or token.
        password: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

/// How to reach the registry.
#[derive(Clone, Default)]
pub struct Options {
    /// Speak plain HTTP (loopback registries only).
    pub plain_http: bool,
    /// Extra trusted CA certificates, PEM.
    pub ca_certificates_pem: Vec<Vec<u8>>,
    /// The credentials.
    pub credentials: Credentials,
}

/// A registry to push to: `host[:port]`.
pub struct Registry {
    host: String,
    client: Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

/// A pushed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// `host[:port]/repository:tag`.
    pub reference: String,
    /// The manifest digest the registry reports for the tag.
    pub manifest_digest: Digest,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry answered with an error, or could not be reached.
    #[error("registry {host}: {action}")]
    Client {
        /// The registry.
        host: String,
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The registry stores another manifest than the one pushed.
    #[error("registry {host} reports {found} for {reference}, but the pushed manifest is {expected}")]
    DigestMismatch {
        /// The registry.
        host: String,
        /// The reference.
        reference: String,
        /// Our digest.
        expected: Digest,
        /// Its digest.
        found: String,
    },
    /// Plain HTTP was asked for a registry that is not on a loopback address.
    #[error("plain HTTP is only allowed for a registry on a loopback address, not {0:?}")]
    PlainHttpNotLoopback(String),
    /// The reference is not valid.
    #[error("{reference:?} is not a valid image reference")]
    Reference {
        /// The reference.
        reference: String,
        /// The cause.
        #[source]
        source: oci_client::ParseError,
    },
    /// The async runtime could not be started.
    #[error("cannot start the I/O runtime")]
    Runtime(#[source] std::io::Error),
}

impl Registry {
    /// A client for the registry at `host` (`host[:port]`, no scheme).
    pub fn connect(host: &str, options: Options) -> Result<Self, RegistryError> {
        install_crypto_provider();
        if options.plain_http && !is_loopback(host) {
            return Err(RegistryError::PlainHttpNotLoopback(host.to_owned()));
        }
        let protocol =
            if options.plain_http { ClientProtocol::HttpsExcept(vec![host.to_owned()]) } else { ClientProtocol::Https };
        let config = ClientConfig {
            protocol,
            extra_root_certificates: options
                .ca_certificates_pem
                .into_iter()
                .map(|data| Certificate { encoding: CertificateEncoding::Pem, data })
                .collect(),
            user_agent: concat!("svidgate-oci/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|source| RegistryError::Client {
            host: host.to_owned(),
            action: "configuring the client".to_owned(),
            source,
        })?;
        let auth = match options.credentials {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => RegistryAuth::Basic(username, password),
            Credentials::Bearer(token) => RegistryAuth::Bearer(token),
        };
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RegistryError::Runtime)?;
        Ok(Self { host: host.to_owned(), client, auth, runtime })
    }

    /// Pushes the layout's blobs (those the registry lacks) and then its manifest as
    /// `repository:tag`, and checks the registry reports the manifest's digest for the tag.
    pub fn push(&self, repository: &str, tag: &str, layout: &Layout) -> Result<Pushed, RegistryError> {
        let reference = self.reference(repository, tag)?;
        let shown = reference.whole();
        let fail = |action: String| {
            let host = self.host.clone();
            move |source| RegistryError::Client { host, action, source }
        };
        self.runtime.block_on(async {
            self.client
                .auth(&reference, &self.auth, RegistryOperation::Push)
                .await
                .map_err(fail(format!("authenticating to push {shown}")))?;
            for (digest, bytes) in &layout.blobs {
                let exists = self
                    .client
                    .blob_exists(&reference, digest.as_str())
                    .await
                    .map_err(fail(format!("checking blob {digest}")))?;
                if !exists {
                    self.client
                        .push_blob(&reference, bytes.clone(), digest.as_str())
                        .await
                        .map_err(fail(format!("pushing blob {digest}")))?;
                }
            }
            let content_type = http::HeaderValue::from_static(crate::artifact::MANIFEST_MEDIA_TYPE);
            self.client
                .push_manifest_raw(&reference, layout.manifest.clone(), content_type)
                .await
                .map_err(fail(format!("pushing the manifest of {shown}")))?;
            let found = self
                .client
                .fetch_manifest_digest(&reference, &self.auth)
                .await
                .map_err(fail(format!("reading back the digest of {shown}")))?;
            if found != layout.manifest_digest.as_str() {
                return Err(RegistryError::DigestMismatch {
                    host: self.host.clone(),
                    reference: shown.clone(),
                    expected: layout.manifest_digest.clone(),
                    found,
                });
            }
            Ok(Pushed { reference: shown.clone(), manifest_digest: layout.manifest_digest.clone() })
        })
    }

    fn reference(&self, repository: &str, tag: &str) -> Result<Reference, RegistryError> {
        let text = format!("{}/{repository}:{tag}", self.host);
        text.parse::<Reference>().map_err(|source| RegistryError::Reference { reference: text, source })
    }
}

/// Makes ring rustls's process-wide crypto provider (reqwest is built without one, see above).
/// Installing twice is harmless: the first provider stays.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all this wants.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether `host[:port]` names a loopback address (`localhost`, 127.0.0.0/8, `[::1]`).
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.contains(']') { host } else { name }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_loopback_registries() {
        for host in ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "LOCALHOST", "[::1]:5000"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["ghcr.io", "10.0.0.1:5000", "registry.local:5000", "127.0.0.1.nip.io:5000", "[2001:db8::1]:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn refuses_plain_http_to_a_remote_registry() {
        let options = Options { plain_http: true, ..Options::default() };
        assert!(matches!(Registry::connect("ghcr.io", options), Err(RegistryError::PlainHttpNotLoopback(_))));
    }
}
