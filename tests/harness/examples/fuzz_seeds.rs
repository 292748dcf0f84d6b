//! Writes the fuzz targets' seed corpus into `fuzz/seeds/<target>/`: valid and broken inputs
//! of every parser, so that each fuzz run starts from inputs that reach deep into it.
//! `cargo run -p svidgate-harness --example fuzz_seeds`; the output is committed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a one-off generator: a failure stops it loudly")]

use anyhow::Result;
use svidgate_testpki::{KeyUsage, ORCHESTRATOR, ROGUE, SvidSpec, TRUST_DOMAIN, TrustDomainCa};

fn main() -> Result<()> {
    let seeds = svidgate_harness::cases::workspace_root().join("fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    };
    // `peer_certificate`: first byte even = PEM, odd = DER.
    let ca = TrustDomainCa::new(TRUST_DOMAIN)?;
    let orchestrator = ca.svid(ORCHESTRATOR)?;
    let pem = |svid: &svidgate_testpki::Issued| [&[0u8][..], svid.cert_pem.as_bytes()].concat();
    write("peer_certificate", "svid.pem", &pem(&orchestrator))?;
    write("peer_certificate", "svid.der", &[&[1u8][..], &orchestrator.der].concat())?;
    let mut two = SvidSpec::for_workload(ROGUE);
    two.uri_sans.push("spiffe://ai.internal/ns/admin/sa/root".to_owned());
    write("peer_certificate", "two-uri-sans.pem", &pem(&ca.issue(&two)?))?;
    write("peer_certificate", "ca.pem", &pem(&ca.issue(&SvidSpec::for_workload(ROGUE).as_ca())?))?;
    let signer = SvidSpec::for_workload(ROGUE).with_key_usages(vec![KeyUsage::KeyCertSign]);
    write("peer_certificate", "signer.pem", &pem(&ca.issue(&signer)?))?;
    write("peer_certificate", "foreign.pem", &pem(&ca.issue(&SvidSpec::for_id("spiffe://partner.example/ns/a/sa/b"))?))?;

    // `plugin_configuration`.
    for (name, json) in [
        ("sidecar.json", r#"{"mode": "sidecar", "trust_domains": ["ai.internal"], "require_peer": true, "max_svid_ttl": "1h", "trusted_forwarders": ["spiffe://ai.internal/ns/edge/sa/gateway"]}"#),
        ("perimeter.json", r#"{"mode": "perimeter", "identity_headers": ["x-forwarded-spiffe-id", "x_peer"], "path_guard": {"asterisk_form": true}}"#),
        ("authz.json", r#"{"trust_domains": ["ai.internal"], "policy": {"rego": {"a.rego": "package envoy.authz\ndefault allow := false"}, "data": {"x": [1]}, "entrypoint": "envoy/authz/allow", "eval_timeout": "5ms", "dry_run": true}}"#),
        ("bundle.json", r#"{"trust_domains": ["ai.internal"], "policy": {"bundle": {"cluster": "b", "min_delay": "1s", "max_delay": "2s", "max_bytes": 1024}, "max_policy_age": "10m", "decision_logs": {"console": true, "mask": ["/input/x"], "sample_allowed": 0.5, "service": {"cluster": "logs", "upload_bytes": 10}}}}"#),
        ("bad-key.json", r#"{"trust_domains": ["ai.internal", 7], "policy": {"bundle": {"min_delay": "soon"}}}"#),
    ] {
        write("plugin_configuration", name, json.as_bytes())?;
    }

    // `bundle`: first byte even = .tar.gz, odd = the bare tar stream.
    let policy = b"package envoy.authz\nimport rego.v1\ndefault allow := false\n".to_vec();
    let manifest = br#"{"revision": "r1", "roots": ["envoy", "svidgate"]}"#.to_vec();
    let long = format!("envoy/{}/policy.rego", "a-long-directory-name".repeat(6));
    let plain = svidgate_cli::write_bundle(&[
        (".manifest".into(), manifest.clone()),
        ("envoy/authz/policy.rego".into(), policy.clone()),
        ("svidgate/data.json".into(), br#"{"allowed": ["a"]}"#.to_vec()),
    ])?;
    write("bundle", "bundle.tar.gz", &[&[0u8][..], &plain].concat())?;
    let gnu = svidgate_cli::write_bundle(&[(".manifest".into(), manifest.clone()), (long.clone(), policy.clone())])?;
    write("bundle", "gnu-long-name.tar.gz", &[&[0u8][..], &gnu].concat())?;
    write("bundle", "gnu-long-name.tar", &[&[1u8][..], &gunzip(&gnu)?].concat())?;
    write("bundle", "pax-path.tar", &[&[1u8][..], &pax_tar(&long, &policy)?].concat())?;

    // `policy_result`: every shape the OPA Envoy plugin reads.
    for (name, json) in [
        ("true.json", "true"),
        ("object.json", r#"{"allowed": true, "headers": {"x-a": ["1", "2"]}, "request_headers_to_remove": ["cookie"], "response_headers_to_add": {"x-b": "c"}}"#),
        ("deny.json", r#"{"allowed": false, "http_status": 401, "body": "no", "headers": {"www-authenticate": "Bearer"}}"#),
        // The lowest status Envoy's StatusCode enum has, which the fuzzer found the invariant refusing.
        ("status-100.json", r#"{"allowed": false, "http_status": 100, "body": "no", "headers": {"www-authenticate": "Bearer"}}"#),
        ("identity.json", r#"{"allowed": true, "headers": {"x-forwarded-spiffe-id": "spiffe://ai.internal/ns/admin/sa/root"}}"#),
        ("crlf.json", r#"{"allowed": true, "headers": {"x-a": "1\r\nx-forwarded-spiffe-id: forged"}}"#),
    ] {
        write("policy_result", name, json.as_bytes())?;
    }

    // `path`: the hostile-traffic report's paths and their normal forms.
    for (name, path) in [
        ("plain", "/v1/agent/plan?model=a&q=b+c"),
        ("dot-dot", "/v1/agent/../admin"),
        ("encoded", "/v1/agent/%2e%2E/admin%2f%5c%00"),
        ("merged", "//v1/agent/./x/"),
        ("query", "/v1?a=1;b=%zz&&=v"),
    ] {
        write("path", name, path.as_bytes())?;
    }

    // `identity_headers`: name:value lines.
    write("identity_headers", "variants", b"x_forwarded_spiffe_id:a\nX-Peer_Identity:b\nx-forwarded-spiffe-idx:c\naccept:d\nx-FORWARDED-spiffe_ID:e\n")?;

    // `spiffe_id`.
    for (name, id) in [("valid", "spiffe://ai.internal/ns/agents/sa/orchestrator"), ("dot", "spiffe://td/a/./b"), ("upper", "SPIFFE://TD/a")] {
        write("spiffe_id", name, id.as_bytes())?;
    }
    println!("seeds written under {}", seeds.display());

    // `request_body`: the first byte picks the content type (`fuzzing::BODY_TYPES`), its high bit
    // cuts the body short.
    for (name, kind, body) in [
        ("mcp-call.json", 0u8, &br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "/srv/reports/q3.md"}}}"#[..]),
        ("chat.json", 1, br#"{"model": "llama-3.1-8b-instruct", "max_tokens": 256, "messages": [{"role": "user", "content": "Summarize \u00e9 the Q3 report."}]}"#),
        ("form", 2, b"tool=read_file&path=%2Fsrv%2Freports+q3&tool=x&empty"),
        ("multipart-crlf", 3, b"preamble\r\n--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--b\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"model\": \"m\"}\r\n--b--\r\n"),
        ("multipart-lf-quoted", 4, b"--a b\nContent-Disposition: form-data; name=k\n\nv\n--a b--\n"),
        ("truncated-json", 0x80, br#"{"jsonrpc": "2.0", "meth"#),
    ] {
        write("request_body", name, &[&[kind][..], body].concat())?;
    }
    Ok(())
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out)?;
    Ok(out)
}

/// A tar stream whose one module's path is given by a pax `path` record (ustar name truncated).
fn pax_tar(path: &str, contents: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_pax_extensions([("path", path.as_bytes())])?;
    let mut header = tar::Header::new_ustar();
    header.set_path("truncated.rego")?;
    header.set_size(contents.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, contents)?;
    Ok(builder.into_inner()?)
}
