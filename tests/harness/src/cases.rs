//! The scenario corpus: `tests/cases/*.yaml`, one specification run on four runtimes.
//!
//! Each file holds a plugin configuration and a list of cases: a peer certificate, a request, and
//! what must happen (decision, status, the exact identity header the upstream receives, reply,
//! counters). [`run_file`] runs every case natively against the core and through the wasmtime
//! host against both built modules, so the modules cannot drift from the core or each other.
//! Files without a policy run on the authz module too, with a policy that allows everything:
//! the identity behaviour must be the same in both modules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use svidgate_core::authz::testing::PolicyDir;
use svidgate_core::authz::{AuthzConfig, Authorizer, RequestFacts};
use svidgate_core::config::{IdentityConfig, parse_duration};
use svidgate_core::decision::{Decision, HeaderEdit};
use svidgate_core::identity::StrippedHeaders;
use svidgate_core::metrics::Counter;
use svidgate_core::peer::{PeerCache, PeerCertificate};
use svidgate_testpki::{Issued, KeyUsage, SvidSpec, TrustDomainCa, Workload};

use crate::host::{Action, LogLevel, Module, PluginOptions};

/// Where the modules, the policies and the corpus live.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory of built modules: `$SVIDGATE_WASM_DIR`, or where `cargo xtask build` puts them.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("SVIDGATE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/modules"))
}

/// Which of the two modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// `svidgate_identity.wasm`.
    Identity,
    /// `svidgate_authz.wasm`.
    Authz,
}

impl ModuleKind {
    /// The module's file name.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Identity => "svidgate_identity.wasm",
            Self::Authz => "svidgate_authz.wasm",
        }
    }

    /// The built module, compiled once per test process.
    pub fn module(self) -> Result<&'static Module> {
        static IDENTITY: OnceLock<std::result::Result<Module, String>> = OnceLock::new();
        static AUTHZ: OnceLock<std::result::Result<Module, String>> = OnceLock::new();
        let cell = match self {
            Self::Identity => &IDENTITY,
            Self::Authz => &AUTHZ,
        };
        cell.get_or_init(|| {
            let path = wasm_dir().join(self.file_name());
            Module::load(&path).map_err(|e| format!("{e:#} (build the modules first: `cargo xtask build`)"))
        })
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
    }
}

/// Where a case runs: natively on the core, or through the host on a built module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `svidgate-core` called directly, as the filters call it.
    Native,
    /// The built `.wasm` modules in the wasmtime host.
    Wasm,
}

/// One YAML file of the corpus.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// What the file specifies.
    pub description: String,
    /// Plugin configuration shared by the cases.
    #[serde(default)]
    pub config: Json,
    /// A directory under `policies/` loaded as the `policy` block (its `*_test.rego` left out).
    pub policy: Option<String>,
    /// The cases.
    pub cases: Vec<Case>,
}

/// One scenario.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// A name that reads as a specification (`denies_rogue_caller`).
    pub name: String,
    /// Keys replacing the file's configuration for this case; a string is the raw configuration.
    pub config: Option<Json>,
    /// Restricts the modules the case runs on.
    pub modules: Option<Vec<ModuleKind>>,
    /// The peer certificate; none when absent.
    #[serde(default)]
    pub peer: PeerSpec,
    /// The request.
    #[serde(default)]
    pub request: RequestSpec,
    /// What must happen.
    pub expect: Expect,
}

/// The client certificate of the connection.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum PeerSpec {
    /// `none`, or the name of a workload whose well-formed SVID is presented.
    Named(String),
    /// A certificate that breaks some rule.
    Custom(CertSpec),
    /// No client certificate.
    #[default]
    Absent,
}

/// A certificate described field by field; unset fields are those of a well-formed SVID.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    /// Base workload (its SPIFFE ID is the URI SAN).
    pub workload: Option<String>,
    /// URI SANs replacing the workload's.
    pub uri_sans: Option<Vec<String>>,
    /// Makes it a CA certificate.
    #[serde(default)]
    pub ca: bool,
    /// Key usages (`digital_signature`, `key_cert_sign`, `crl_sign`, ...).
    pub key_usages: Option<Vec<String>>,
    /// notBefore relative to now (`-5m`).
    pub not_before: Option<String>,
    /// notAfter relative to now (`55m`, `-1h`).
    pub not_after: Option<String>,
    /// What Envoy reports as `connection.uri_san_peer_certificate` (default: the first URI SAN).
    pub uri_san_property: Option<String>,
}

/// The request as the client sends it.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestSpec {
    /// `:method`.
    pub method: String,
    /// `:path`, with query.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Further headers, in order, repeats allowed, any case.
    pub headers: Vec<(String, String)>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            authority: "model-server.ai.internal".into(),
            headers: Vec::new(),
        }
    }
}

/// Whether the request went upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// It did.
    Allow,
    /// It got a local reply.
    Deny,
}

/// What must happen.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The configuration is refused with an error containing this text.
    pub config_error: Option<String>,
    /// Allow or deny (required unless `config_error`).
    pub decision: Option<DecisionKind>,
    /// Status of the local reply.
    pub status: Option<u16>,
    /// The deny reason code without its `svidgate_` prefix (`policy_denied`).
    pub reason: Option<String>,
    /// The single identity header value the upstream receives; absent when unset.
    pub upstream_identity: Option<String>,
    /// Headers the upstream must receive (all values joined with ",").
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, String>,
    /// Headers the upstream must not receive.
    #[serde(default)]
    pub upstream_absent: Vec<String>,
    /// Exact body of the local reply.
    pub reply_body: Option<String>,
    /// Headers of the local reply.
    #[serde(default)]
    pub reply_headers: BTreeMap<String, String>,
    /// Headers added to the response on its way to the client.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    /// Counter values after the request (those of the module run).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// What a runtime did with a case, in the same terms for all four.
#[derive(Debug, Default)]
pub struct Observation {
    /// The configuration error, if it was refused.
    pub config_error: Option<String>,
    /// Whether the request went upstream.
    pub allowed: bool,
    /// The local reply's status.
    pub status: Option<u16>,
    /// The deny reason code.
    pub reason: Option<String>,
    /// The headers the upstream receives.
    pub upstream_headers: Vec<(String, String)>,
    /// The local reply's headers.
    pub reply_headers: Vec<(String, String)>,
    /// The local reply's body.
    pub reply_body: Option<String>,
    /// Headers added to the response.
    pub response_headers: Vec<(String, String)>,
    /// Counters by name.
    pub counters: BTreeMap<String, u64>,
}

/// Loads a corpus file.
pub fn load(path: &Path) -> Result<CaseFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Runs every case of a file on every module it applies to; reports all failures at once.
pub fn run_file(path: &Path, family: Family) -> Result<usize> {
    let file = load(path)?;
    let mut failures = String::new();
    let mut runs = 0;
    for case in &file.cases {
        for kind in case_modules(&file, case) {
            let label = match family {
                Family::Native => format!("{} [native {kind:?}]", case.name),
                Family::Wasm => format!("{} [{}]", case.name, kind.file_name()),
            };
            runs += 1;
            let outcome = configuration(&file, case, kind)
                .and_then(|config| run_case(family, kind, &config, case))
                .and_then(|observed| check(&case.expect, kind, &observed));
            if let Err(e) = outcome {
                let _ = writeln!(failures, "{label}: {e:#}");
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}: {}\n{failures}", path.display(), file.description);
    }
    Ok(runs)
}

/// The plugin configuration bytes: a string is passed as written, anything else as JSON.
fn config_bytes(config: &Json) -> Vec<u8> {
    match config {
        Json::String(raw) => raw.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// Runs one case on one runtime.
pub fn run_case(family: Family, kind: ModuleKind, config: &Json, case: &Case) -> Result<Observation> {
    let peer = mint_peer(&case.peer)?;
    let headers = envoy_request_headers(&case.request, &case.name);
    match family {
        Family::Native => Ok(run_native(kind, config, peer.as_ref(), headers)),
        Family::Wasm => run_wasm(kind, config, peer.as_ref(), &headers),
    }
}

/// The plugin configuration of a case for a module: the file's, the case's keys over it, the
/// named policy, and for identity-only files on the authz module, a policy allowing everything.
pub fn configuration(file: &CaseFile, case: &Case, kind: ModuleKind) -> Result<Json> {
    if let Some(raw @ Json::String(_)) = &case.config {
        return Ok(raw.clone());
    }
    let mut config = match &file.config {
        Json::Null => json!({}),
        other => other.clone(),
    };
    let object = config.as_object_mut().ok_or_else(|| anyhow!("config must be a mapping"))?;
    if let Some(Json::Object(overrides)) = &case.config {
        for (k, v) in overrides {
            object.insert(k.clone(), v.clone());
        }
    }
    if let Some(dir) = &file.policy {
        let loaded = PolicyDir::load(&workspace_root().join("policies").join(dir))?;
        let modules: serde_json::Map<String, Json> =
            loaded.policy_modules().map(|(name, source)| (name.clone(), Json::String(source.clone()))).collect();
        let policy = object.entry("policy").or_insert_with(|| json!({}));
        if let Some(policy) = policy.as_object_mut() {
            policy.entry("rego").or_insert(Json::Object(modules));
            policy.entry("data").or_insert(loaded.data);
        }
    }
    if kind == ModuleKind::Authz && !object.contains_key("policy") {
        object.insert(
            "policy".into(),
            json!({"rego": "package corpus\nimport rego.v1\ndefault allow := true", "entrypoint": "corpus/allow"}),
        );
    }
    Ok(config)
}

fn case_modules(file: &CaseFile, case: &Case) -> Vec<ModuleKind> {
    if let Some(modules) = &case.modules {
        return modules.clone();
    }
    let has_policy = file.policy.is_some()
        || file.config.get("policy").is_some()
        || case.config.as_ref().is_some_and(|c| c.get("policy").is_some());
    if has_policy { vec![ModuleKind::Authz] } else { vec![ModuleKind::Identity, ModuleKind::Authz] }
}

/// The request headers as Envoy hands them to filters: pseudo-headers first, names lower-cased,
/// an `x-request-id` added when the client sent none.
fn envoy_request_headers(request: &RequestSpec, case_name: &str) -> Vec<(String, String)> {
    let mut headers = vec![
        (":authority".to_owned(), request.authority.clone()),
        (":path".to_owned(), request.path.clone()),
        (":method".to_owned(), request.method.clone()),
        (":scheme".to_owned(), "https".to_owned()),
    ];
    headers.extend(request.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())));
    if !headers.iter().any(|(n, _)| n == "x-request-id") {
        headers.push(("x-request-id".to_owned(), format!("corpus-{case_name}")));
    }
    headers
}

/// A minted peer certificate and the properties Envoy derives from it.
struct MintedPeer {
    issued: Issued,
    uri_san: Option<String>,
}

fn mint_peer(spec: &PeerSpec) -> Result<Option<MintedPeer>> {
    let custom;
    let spec = match spec {
        PeerSpec::Absent => return Ok(None),
        PeerSpec::Named(name) if name == "none" => return Ok(None),
        PeerSpec::Named(name) => {
            custom = CertSpec { workload: Some(name.clone()), ..CertSpec::default() };
            &custom
        }
        PeerSpec::Custom(spec) => spec,
    };
    let workload = spec.workload.as_deref().map(named_workload).transpose()?;
    let mut svid = workload.map_or_else(|| SvidSpec::for_id("spiffe://ai.internal/unnamed"), SvidSpec::for_workload);
    if let Some(uris) = &spec.uri_sans {
        svid.uri_sans = uris.clone();
    }
    if spec.ca {
        svid = svid.as_ca();
    }
    if let Some(usages) = &spec.key_usages {
        svid = svid.with_key_usages(usages.iter().map(|u| key_usage(u)).collect::<Result<_>>()?);
    }
    if let Some(offset) = &spec.not_before {
        svid.not_before = relative(offset)?;
    }
    if let Some(offset) = &spec.not_after {
        svid.not_after = relative(offset)?;
    }
    let issued = test_ca()?.issue(&svid)?;
    let uri_san = spec.uri_san_property.clone().or_else(|| svid.uri_sans.first().cloned());
    Ok(Some(MintedPeer { issued, uri_san }))
}

fn test_ca() -> Result<&'static TrustDomainCa> {
    static CA: OnceLock<std::result::Result<TrustDomainCa, String>> = OnceLock::new();
    CA.get_or_init(|| TrustDomainCa::new(svidgate_testpki::TRUST_DOMAIN).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn named_workload(name: &str) -> Result<Workload> {
    svidgate_testpki::workload(name).ok_or_else(|| anyhow!("unknown workload {name:?}"))
}

fn key_usage(name: &str) -> Result<KeyUsage> {
    Ok(match name {
        "digital_signature" => KeyUsage::DigitalSignature,
        "key_encipherment" => KeyUsage::KeyEncipherment,
        "key_agreement" => KeyUsage::KeyAgreement,
        "key_cert_sign" => KeyUsage::KeyCertSign,
        "crl_sign" => KeyUsage::CrlSign,
        other => bail!("unknown key usage {other:?}"),
    })
}

/// `-5m`, `55m`, `+1h` as a signed offset.
fn relative(offset: &str) -> Result<time::Duration> {
    let (negative, magnitude) = match offset.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, offset.trim_start_matches('+')),
    };
    let d = parse_duration(magnitude).ok_or_else(|| anyhow!("bad offset {offset:?}"))?;
    let d = time::Duration::try_from(d)?;
    Ok(if negative { -d } else { d })
}

fn run_native(kind: ModuleKind, config: &Json, peer: Option<&MintedPeer>, headers: Vec<(String, String)>) -> Observation {
    let bytes = config_bytes(config);
    let certificate = || PeerCertificate {
        pem: peer.map(|p| p.issued.cert_pem.clone().into_bytes()),
        uri_san: peer.and_then(|p| p.uri_san.clone()),
    };
    let digest = peer.map(|p| p.issued.sha256_hex());
    let now = SystemTime::now();
    let mut cache = PeerCache::new(4);
    let (decision, identity, events) = match kind {
        ModuleKind::Identity => {
            let config = match IdentityConfig::parse(&bytes) {
                Ok(c) => c,
                Err(e) => return Observation { config_error: Some(e.to_string()), ..Observation::default() },
            };
            let stripped = StrippedHeaders::strip(headers, &config);
            let peer = config.svid.resolve(&mut cache, digest.as_deref(), certificate, now);
            let outcome = config.resolve(peer.as_ref(), &stripped);
            let decision = outcome.decision(&config);
            let events = Counter::identity_events(&outcome, &decision);
            (decision, stripped, events)
        }
        ModuleKind::Authz => {
            let authorizer = match AuthzConfig::parse(&bytes).and_then(Authorizer::new) {
                Ok(a) => a,
                Err(e) => return Observation { config_error: Some(e.to_string()), ..Observation::default() },
            };
            let stripped = StrippedHeaders::strip(headers, authorizer.identity());
            let peer = authorizer.identity().svid.resolve(&mut cache, digest.as_deref(), certificate, now);
            let facts = RequestFacts {
                headers: &stripped,
                peer: peer.as_ref(),
                source_address: Some(SOURCE_ADDRESS),
                destination_address: Some(DESTINATION_ADDRESS),
                destination_principal: Some(svidgate_testpki::MODEL_SERVER.spiffe_id),
                protocol: Some(PROTOCOL),
                now,
            };
            let verdict = authorizer.decide(&facts);
            let events = verdict.events();
            (verdict.decision, stripped, events)
        }
    };
    let mut counters = BTreeMap::new();
    for event in events {
        *counters.entry(event.name().to_owned()).or_insert(0) += 1;
    }
    let mut observed = Observation { counters, ..Observation::default() };
    match decision {
        Decision::Allow { request_edits, response_headers } => {
            observed.allowed = true;
            observed.upstream_headers = apply_edits(identity.headers().to_vec(), &request_edits);
            observed.response_headers = response_headers;
        }
        Decision::Deny { status, reason, headers, body } => {
            observed.status = Some(status);
            observed.reason = Some(reason.code().to_owned());
            observed.reply_headers = headers;
            observed.reply_body = Some(body);
        }
    }
    observed
}

const SOURCE_ADDRESS: &str = "10.1.2.3:45678";
const DESTINATION_ADDRESS: &str = "10.0.0.5:8443";
const PROTOCOL: &str = "HTTP/1.1";

/// What Envoy's header map does with the edits.
fn apply_edits(mut headers: Vec<(String, String)>, edits: &[HeaderEdit]) -> Vec<(String, String)> {
    for edit in edits {
        match edit {
            HeaderEdit::Append(name, value) => headers.push((name.clone(), value.clone())),
            HeaderEdit::Remove(name) => headers.retain(|(n, _)| n != name),
            HeaderEdit::Set(name, value) => {
                headers.retain(|(n, _)| n != name);
                headers.push((name.clone(), value.clone()));
            }
        }
    }
    headers
}

fn run_wasm(kind: ModuleKind, config: &Json, peer: Option<&MintedPeer>, headers: &[(String, String)]) -> Result<Observation> {
    let module = kind.module()?;
    let mut plugin =
        module.start(PluginOptions { plugin_config: config_bytes(config), ..PluginOptions::default() })?;
    if !plugin.configured() {
        let errors: Vec<&str> =
            plugin.logs().iter().filter(|l| l.level >= LogLevel::Error).map(|l| l.message.as_str()).collect();
        let [error] = errors.as_slice() else {
            bail!("configuration refused with {} error log lines instead of one: {errors:?}", errors.len());
        };
        return Ok(Observation { config_error: Some((*error).to_owned()), ..Observation::default() });
    }
    // The properties Envoy 1.40 gives a filter on an mTLS connection (formats in shared/ENVIRONMENT.md).
    plugin.set_property(&["source", "address"], SOURCE_ADDRESS);
    plugin.set_property(&["destination", "address"], DESTINATION_ADDRESS);
    plugin.set_property(&["request", "protocol"], PROTOCOL);
    plugin.set_property(&["connection", "uri_san_local_certificate"], svidgate_testpki::MODEL_SERVER.spiffe_id);
    plugin.set_property(&["connection", "mtls"], vec![u8::from(peer.is_some())]);
    if let Some(peer) = peer {
        plugin.set_property(&["connection", "peer_certificate"], peer.issued.cert_pem.clone());
        plugin.set_property(&["connection", "sha256_peer_certificate_digest"], peer.issued.sha256_hex());
        if let Some(uri) = &peer.uri_san {
            plugin.set_property(&["connection", "uri_san_peer_certificate"], uri.clone());
        }
    }
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut observed = Observation::default();
    {
        let mut stream = plugin.stream();
        let action = stream.request_headers(&pairs, true)?;
        match (action, stream.local_reply()) {
            (_, Some(reply)) => {
                observed.status = Some(u16::try_from(reply.status)?);
                observed.reply_headers = reply.headers.clone();
                observed.reply_body = Some(String::from_utf8_lossy(&reply.body).into_owned());
            }
            (Action::Continue, None) => {
                observed.allowed = true;
                observed.upstream_headers = stream.request_header_map().to_vec();
                stream.response_headers(&[(":status", "200")], true)?;
                observed.response_headers =
                    stream.response_header_map().iter().filter(|(n, _)| n != ":status").cloned().collect();
            }
            (Action::Pause, None) => bail!("the module paused the request without a local reply"),
        }
        stream.finish()?;
    }
    // The reason code is in the decision's log line.
    observed.reason = plugin.logs().iter().find_map(|l| {
        let start = l.message.find("(svidgate_")? + 1;
        let end = l.message.get(start..)?.find(')')? + start;
        l.message.get(start..end).map(str::to_owned)
    });
    for name in plugin.metric_names() {
        if let Some(value) = plugin.counter(&name) {
            observed.counters.insert(name, value);
        }
    }
    Ok(observed)
}

/// Compares an observation with the expectation; the error lists every difference.
pub fn check(expect: &Expect, kind: ModuleKind, observed: &Observation) -> Result<()> {
    let mut problems = Vec::new();
    match (&expect.config_error, &observed.config_error) {
        (Some(want), Some(got)) if got.contains(want.as_str()) => return Ok(()),
        (Some(want), got) => bail!("expected configuration error containing {want:?}, got {got:?}"),
        (None, Some(got)) => bail!("configuration refused: {got}"),
        (None, None) => {}
    }
    let want_allow = match expect.decision {
        Some(d) => d == DecisionKind::Allow,
        None => bail!("the case expects neither a decision nor a configuration error"),
    };
    if observed.allowed != want_allow {
        problems.push(format!(
            "expected {:?}, got {} (status {:?}, reason {:?})",
            expect.decision,
            if observed.allowed { "allow" } else { "deny" },
            observed.status,
            observed.reason
        ));
    }
    if let Some(status) = expect.status
        && observed.status != Some(status)
    {
        problems.push(format!("expected status {status}, got {:?}", observed.status));
    }
    if let Some(reason) = &expect.reason {
        let want = format!("svidgate_{reason}");
        if observed.reason.as_deref() != Some(want.as_str()) {
            problems.push(format!("expected reason {want}, got {:?}", observed.reason));
        }
    }
    if observed.allowed {
        let identities: Vec<&str> = observed
            .upstream_headers
            .iter()
            .filter(|(n, _)| n == svidgate_core::config::DEFAULT_IDENTITY_HEADER)
            .map(|(_, v)| v.as_str())
            .collect();
        let want: Vec<&str> = expect.upstream_identity.iter().map(String::as_str).collect();
        if identities != want {
            problems.push(format!("upstream identity headers: expected {want:?}, got {identities:?}"));
        }
    }
    for (name, value) in &expect.upstream_headers {
        let got = joined(&observed.upstream_headers, name);
        if got.as_deref() != Some(value.as_str()) {
            problems.push(format!("upstream header {name}: expected {value:?}, got {got:?}"));
        }
    }
    for name in &expect.upstream_absent {
        if let Some(got) = joined(&observed.upstream_headers, name) {
            problems.push(format!("upstream header {name} must be absent, got {got:?}"));
        }
    }
    if let Some(body) = &expect.reply_body
        && observed.reply_body.as_ref() != Some(body)
    {
        problems.push(format!("expected reply body {body:?}, got {:?}", observed.reply_body));
    }
    for (name, value) in &expect.reply_headers {
        let got = joined(&observed.reply_headers, name);
        if got.as_deref() != Some(value.as_str()) {
            problems.push(format!("reply header {name}: expected {value:?}, got {got:?}"));
        }
    }
    if expect.response_headers.len() != observed.response_headers.len() {
        problems.push(format!(
            "response headers: expected {:?}, got {:?}",
            expect.response_headers, observed.response_headers
        ));
    }
    for (name, value) in &expect.response_headers {
        let got = joined(&observed.response_headers, name);
        if got.as_deref() != Some(value.as_str()) {
            problems.push(format!("response header {name}: expected {value:?}, got {got:?}"));
        }
    }
    let module_counters: &[Counter] = match kind {
        ModuleKind::Identity => &Counter::IDENTITY,
        ModuleKind::Authz => &Counter::AUTHZ,
    };
    for counter in module_counters {
        let name = counter.name();
        let got = observed.counters.get(name).copied().unwrap_or(0);
        // Identity counters a case does not mention must stay at zero (an unnoticed spoof is a
        // finding); the authz outcome counters are checked where a case names them.
        let want = match expect.counters.get(name) {
            Some(want) => *want,
            None if Counter::IDENTITY.contains(counter) => 0,
            None => continue,
        };
        if got != want {
            problems.push(format!("counter {name}: expected {want}, got {got}"));
        }
    }
    if let Some(unknown) = expect.counters.keys().find(|n| !Counter::AUTHZ.iter().any(|c| c.name() == n.as_str())) {
        problems.push(format!("unknown counter {unknown}"));
    }
    if problems.is_empty() { Ok(()) } else { Err(anyhow!(problems.join("; "))) }
}

fn joined(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
    (!values.is_empty()).then(|| values.join(","))
}
