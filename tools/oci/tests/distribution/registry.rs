//! A real registry round trip: `svidgate-oci push` to Debian's `docker-registry`, then pulls by
//! two clients that share no code with ours (skopeo, Go; oras, Python): bytes and digests equal.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::Deserialize;
use svidgate_oci::registry::{Credentials, Options, Registry as Client, RegistryError};
use svidgate_oci::{Kind, gate, layout};

use crate::layout_gate::{ARTIFACTS, package};
use crate::support::{Registry, Scratch, Secured, cli, module_bytes, oras_python, run, workspace_root};

/// What `tests/distribution/oras_pull.py` reports per tag.
#[derive(Deserialize)]
struct OrasPull {
    manifest_digest: String,
    blobs: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
}

#[test]
fn pushed_artifacts_pull_back_identical_with_skopeo_and_oras() -> Result<()> {
    let scratch = Scratch::new("registry-plain")?;
    let registry = Registry::start(&scratch, None)?;
    let out = scratch.join("oci");
    let (_, pins) = package(&out)?;
    let target = format!("{}/svidgate", registry.host);
    let pushed = run(cli().arg("push").args(["--registry", &target, "--plain-http"]).arg("--out").arg(&out))?;
    // A second push finds every blob there and must land on the same digests.
    run(cli().arg("push").args(["--registry", &target, "--plain-http"]).arg("--out").arg(&out))?;

    for pin in &pins.artifacts {
        let reference = format!("{target}/{}:{}", pin.name, pin.tag);
        assert!(
            pushed.contains(&format!("pushed {reference}@{}", pin.manifest_digest)),
            "{reference} not reported:\n{pushed}"
        );
        let ours = layout::read(&out.join(&pin.name).join(pin.kind.as_str()))?;

        // skopeo copies into an OCI layout of its own; our reader checks every blob it wrote.
        let pulled = scratch.join(&format!("skopeo/{}-{}", pin.name, pin.kind.as_str()));
        std::fs::create_dir_all(&pulled)?;
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:{}", pulled.display(), pin.tag)))?;
        let theirs = layout::read(&pulled)?;
        assert!(theirs.manifest == ours.manifest, "{reference}: skopeo pulled another manifest");
        assert_eq!(theirs.manifest_digest, pin.manifest_digest, "{reference}");
        assert!(theirs.blobs == ours.blobs, "{reference}: skopeo pulled other blobs");
        let raw = run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")))?;
        assert_eq!(
            svidgate_oci::Digest::of(raw.as_bytes()),
            pin.manifest_digest,
            "{reference}: skopeo inspect --raw"
        );
        if pin.kind == Kind::Compat {
            let module = gate::istio_module(&theirs.manifest, |d| theirs.blob(d))?.wasm;
            assert!(module == module_bytes(&format!("{}.wasm", pin.name.replace('-', "_")))?, "{reference}");
        }
    }

    let python = oras_python()?;
    let script = workspace_root().join("tools/oci/tests/distribution/oras_pull.py");
    let mut names: Vec<&str> = ARTIFACTS.iter().map(|(name, _, _)| *name).collect();
    names.dedup();
    for name in names {
        let tags: Vec<&str> = pins.artifacts.iter().filter(|p| p.name == name).map(|p| p.tag.as_str()).collect();
        let report = run(Command::new(&python).arg(&script).arg(format!("{target}/{name}")).args(&tags))?;
        let report: BTreeMap<String, OrasPull> =
            serde_json::from_str(&report).with_context(|| format!("oras said {report}"))?;
        let file = format!("{}.wasm", name.replace('-', "_"));
        for pin in pins.artifacts.iter().filter(|p| p.name == name) {
            let pulled = report.get(&pin.tag).with_context(|| format!("oras did not pull {name}:{}", pin.tag))?;
            assert_eq!(pulled.manifest_digest, pin.manifest_digest.as_str(), "{name}:{}", pin.tag);
            let ours = layout::read(&out.join(&pin.name).join(pin.kind.as_str()))?;
            assert_eq!(pulled.blobs.len(), ours.blobs.len(), "{name}:{}", pin.tag);
            for (digest, content_digest) in &pulled.blobs {
                assert_eq!(
                    digest, content_digest,
                    "{name}:{}: oras downloaded a blob that does not match its digest",
                    pin.tag
                );
                assert!(ours.blobs.keys().any(|d| d.as_str() == digest), "{name}:{}: unknown blob {digest}", pin.tag);
            }
            // oras unpacks a tar+gzip layer (its directory convention) and names a raw layer by
            // its title: either way the module must come out byte for byte.
            let module_file = if pin.kind == Kind::Compat { "plugin.wasm" } else { file.as_str() };
            assert_eq!(pulled.files.get(module_file), Some(&pin.wasm_sha256), "{name}:{}: {:?}", pin.tag, pulled.files);
        }
    }
    Ok(())
}

#[test]
fn pushes_over_https_with_basic_auth_and_refuses_without() -> Result<()> {
    let scratch = Scratch::new("registry-https")?;
    let tls = Tls::mint(&scratch)?;
    let htpasswd = scratch.join("htpasswd");
    let hash = bcrypt::hash_with_salt("s3cret-push", 4, [7u8; 16])?.format_for_version(bcrypt::Version::TwoB);
    std::fs::write(&htpasswd, format!("ci:{hash}\n"))?;
    let registry = Registry::start(&scratch, Some(Secured { cert: &tls.cert, key: &tls.key, htpasswd: &htpasswd }))?;
    let out = scratch.join("oci");
    let (_, pins) = package(&out)?;
    let pin = pins
        .artifacts
        .iter()
        .find(|p| p.name == "svidgate-identity" && p.kind == Kind::Compat)
        .context("no identity pin")?;
    let read = layout::read(&out.join(&pin.name).join(pin.kind.as_str()))?;
    let ca = std::fs::read(&tls.ca)?;
    let options = |credentials| Options { credentials, ca_certificates_pem: vec![ca.clone()], ..Options::default() };
    let basic = |password: &str| Credentials::Basic { username: "ci".into(), password: password.into() };

    let pushed = Client::connect(&registry.host, options(basic("s3cret-push")))?.push(
        "svidgate/svidgate-identity",
        &pin.tag,
        &read,
    )?;
    assert_eq!(pushed.manifest_digest, pin.manifest_digest);

    for (what, client) in [
        ("anonymous", Client::connect(&registry.host, options(Credentials::Anonymous))?),
        ("a wrong password", Client::connect(&registry.host, options(basic("guess")))?),
        (
            "an untrusted CA",
            Client::connect(&registry.host, Options { credentials: basic("s3cret-push"), ..Options::default() })?,
        ),
    ] {
        let refused = client.push("svidgate/other", &pin.tag, &read);
        assert!(matches!(refused, Err(RegistryError::Client { .. })), "pushed with {what}");
    }

    // skopeo, with the CA and the credentials, sees the same manifest.
    let certs = scratch.join("skopeo-certs");
    std::fs::create_dir_all(&certs)?;
    std::fs::copy(&tls.ca, certs.join("ca.crt"))?;
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--creds", "ci:s3cret-push"])
        .arg("--cert-dir")
        .arg(&certs)
        .arg(format!("docker://{}/svidgate/svidgate-identity:{}", registry.host, pin.tag)))?;
    assert_eq!(svidgate_oci::Digest::of(raw.as_bytes()), pin.manifest_digest);
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1, as PEM files.
struct Tls {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Tls {
    fn mint(scratch: &Scratch) -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let tls =
            Self { ca: scratch.join("ca.pem"), cert: scratch.join("server.pem"), key: scratch.join("server.key") };
        std::fs::write(&tls.ca, ca_pem)?;
        std::fs::write(&tls.cert, cert.pem())?;
        std::fs::write(&tls.key, key.serialize_pem())?;
        Ok(tls)
    }
}
