//! The scenario corpus: `tests/cases/*.yaml`, one specification run on every runtime.
//!
//! Each file holds a plugin configuration and a list of cases: a peer certificate, a request, and
//! what must happen (decision, status, the exact identity header the upstream receives, reply,
//! counters). [`run_file`] runs every case on one [`Family`] of runtimes: natively, the core's
//! pipeline (`svidgate_core::filter`) on its map-backed host, or the built modules in the
//! wasmtime host, which run that same pipeline behind the Proxy-Wasm ABI. Both runtimes go
//! through one test body ([`Runtime`]), so what a case checks cannot differ between them.
//! Files without a policy run on the authz module too, with a policy that allows everything:
//! the identity behaviour must be the same in both modules.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use svidgate_core::authz::testing::PolicyDir;
use svidgate_core::config::parse_duration;
use svidgate_core::filter::Root;
use svidgate_core::host::memory::{HeaderMap, LocalReply, MemoryHost};
use svidgate_core::host::{self as core_host, MetricKind};
use svidgate_core::metrics::Counter;
use svidgate_testpki::{Issued, KeyUsage, SvidSpec, TrustDomainCa, Workload};

use crate::host::{Action, LogLevel, Module, Plugin, PluginOptions};

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
    /// The core's name for the module.
    pub fn core(self) -> svidgate_core::config::ModuleKind {
        match self {
            Self::Identity => svidgate_core::config::ModuleKind::Identity,
            Self::Authz => svidgate_core::config::ModuleKind::Authz,
        }
    }

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

/// Where a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// The core's pipeline on its map-backed host (`svidgate_core::host::memory`), compiled natively.
    Native,
    /// The built `.wasm` modules in the wasmtime host: the same pipeline behind the Proxy-Wasm ABI.
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
    /// The body, in one piece at the end of the stream: text as written, anything else as
    /// JSON. None: the request ends with its headers.
    pub body: Option<Json>,
    /// The name of the route Envoy matched (`xds.route_name`), for `policy.routes`. None: the
    /// request matched no route.
    pub route: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            authority: "model-server.ai.internal".into(),
            headers: Vec::new(),
            body: None,
            route: None,
        }
    }
}

impl RequestSpec {
    /// The body's bytes.
    fn body_bytes(&self) -> Option<Vec<u8>> {
        self.body.as_ref().map(|body| match body {
            Json::String(text) => text.clone().into_bytes(),
            json => json.to_string().into_bytes(),
        })
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

/// What a runtime did with a case, in the same terms for every runtime.
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
    let request = (envoy_request_headers(&case.request, &case.name), case.request.body_bytes());
    let config = config_bytes(config);
    match family {
        Family::Native => observe(&mut Native::start(kind, config), peer.as_ref(), &request, case.request.route.as_deref()),
        Family::Wasm => observe(
            &mut kind.module()?.start(PluginOptions { plugin_config: config, ..PluginOptions::default() })?,
            peer.as_ref(),
            &request,
            case.request.route.as_deref(),
        ),
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
            // Modules a policy block names itself come beside the directory's; one module as a
            // string replaces them.
            if let Json::Object(rego) = policy.entry("rego").or_insert_with(|| json!({})) {
                for (name, source) in modules {
                    rego.entry(name).or_insert(source);
                }
            }
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

/// One plugin of a module on one runtime: what a case needs from it, so that one test body
/// ([`observe`]) drives every runtime.
trait Runtime {
    /// Whether the plugin accepted its configuration.
    fn configured(&self) -> bool;
    /// Sets an Envoy attribute (raw bytes, as Envoy serializes them).
    fn set_property(&mut self, path: &[&str], value: Vec<u8>);
    /// Sends the request headers and body, and the response headers (`:status: 200`) if the
    /// request went upstream.
    fn exchange(&mut self, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Exchange>;
    /// Every log line, as (level, message).
    fn logs(&self) -> Vec<(LogLevel, String)>;
    /// Every counter the plugin defined, by name.
    fn counters(&self) -> BTreeMap<String, u64>;
}

/// What one request did.
struct Exchange {
    /// The local reply, if the request got one.
    reply: Option<LocalReply>,
    /// Whether the last request callback (headers, or body) let the request continue.
    continued: bool,
    /// The request headers as the upstream would receive them.
    upstream_headers: Vec<(String, String)>,
    /// Headers added to the response (without `:status`).
    response_headers: Vec<(String, String)>,
}

/// The case body: configure, present the connection's attributes, send the request, observe.
fn observe(
    runtime: &mut impl Runtime,
    peer: Option<&MintedPeer>,
    (headers, body): &(Vec<(String, String)>, Option<Vec<u8>>),
    route: Option<&str>,
) -> Result<Observation> {
    if !runtime.configured() {
        let errors: Vec<String> =
            runtime.logs().into_iter().filter(|(level, _)| *level >= LogLevel::Error).map(|(_, m)| m).collect();
        let [error] = errors.as_slice() else {
            bail!("configuration refused with {} error log lines instead of one: {errors:?}", errors.len());
        };
        return Ok(Observation { config_error: Some(error.clone()), ..Observation::default() });
    }
    // The properties Envoy 1.40 gives a filter on an mTLS connection (formats in shared/ENVIRONMENT.md).
    runtime.set_property(core_host::property::SOURCE_ADDRESS, SOURCE_ADDRESS.into());
    runtime.set_property(core_host::property::DESTINATION_ADDRESS, DESTINATION_ADDRESS.into());
    runtime.set_property(core_host::property::PROTOCOL, PROTOCOL.into());
    runtime.set_property(core_host::property::LOCAL_URI_SAN, svidgate_testpki::MODEL_SERVER.spiffe_id.into());
    runtime.set_property(&["connection", "mtls"], vec![u8::from(peer.is_some())]);
    if let Some(route) = route {
        runtime.set_property(core_host::property::ROUTE_NAME, route.into());
    }
    if let Some(peer) = peer {
        runtime.set_property(core_host::property::PEER_CERTIFICATE, peer.issued.cert_pem.clone().into_bytes());
        runtime.set_property(core_host::property::PEER_CERTIFICATE_DIGEST, peer.issued.sha256_hex().into_bytes());
        if let Some(uri) = &peer.uri_san {
            runtime.set_property(core_host::property::PEER_URI_SAN, uri.clone().into_bytes());
        }
    }
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let exchange = runtime.exchange(&pairs, body.as_deref())?;
    let mut observed = Observation::default();
    match (exchange.reply, exchange.continued) {
        (Some(reply), _) => {
            observed.status = Some(reply.status);
            observed.reply_headers = reply.headers;
            observed.reply_body = Some(String::from_utf8_lossy(&reply.body).into_owned());
        }
        (None, true) => {
            observed.allowed = true;
            observed.upstream_headers = exchange.upstream_headers;
            observed.response_headers = exchange.response_headers;
        }
        (None, false) => bail!("the module paused the request without a local reply"),
    }
    // The reason code is in the decision's log line.
    observed.reason = runtime.logs().iter().find_map(|(_, message)| {
        let start = message.find("(svidgate_")? + 1;
        let end = message.get(start..)?.find(')')? + start;
        message.get(start..end).map(str::to_owned)
    });
    observed.counters = runtime.counters();
    Ok(observed)
}

const SOURCE_ADDRESS: &str = "10.1.2.3:45678";
const DESTINATION_ADDRESS: &str = "10.0.0.5:8443";
const PROTOCOL: &str = "HTTP/1.1";

/// The core's pipeline on its map-backed host, driven as `svidgate-proxy` drives it in Envoy.
struct Native {
    host: MemoryHost,
    root: Root,
    configured: bool,
}

impl Native {
    fn start(kind: ModuleKind, config: Vec<u8>) -> Self {
        let host = MemoryHost::new(config);
        let mut root = Root::new(kind.core(), "native");
        let configured = root.on_vm_start(&host) && root.on_configure(&host);
        Self { host, root, configured }
    }
}

impl Runtime for Native {
    fn configured(&self) -> bool {
        self.configured
    }

    fn set_property(&mut self, path: &[&str], value: Vec<u8>) {
        self.host.set_property(path, value);
    }

    fn exchange(&mut self, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Exchange> {
        self.host.begin_request(headers.iter().copied());
        let mut stream = self.root.stream(2);
        let mut action = stream.on_request_headers(&self.host, body.is_none());
        if let Some(body) = body
            && self.host.state().local_reply.is_none()
        {
            self.host.with(|s| s.request_body = body.to_vec());
            action = stream.on_request_body(&self.host, body.len(), true);
        }
        let continued = action == core_host::Action::Continue;
        let reply = self.host.state().local_reply.clone();
        let upstream_headers = self.host.state().request_headers.entries().to_vec();
        let mut response_headers = Vec::new();
        if continued && reply.is_none() {
            self.host.with(|s| s.response_headers = HeaderMap::from_pairs([(":status", "200")]));
            stream.on_response_headers(&self.host);
            response_headers = self.host.state().response_headers.entries().to_vec();
        }
        response_headers.retain(|(name, _)| name != ":status");
        Ok(Exchange { reply, continued, upstream_headers, response_headers })
    }

    fn logs(&self) -> Vec<(LogLevel, String)> {
        let level = |level: log::Level| match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        self.host.state().logs.iter().map(|(l, m)| (level(*l), m.clone())).collect()
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        let state = self.host.state();
        state.metrics.iter().filter(|m| m.kind == MetricKind::Counter).map(|m| (m.name.clone(), m.value)).collect()
    }
}

impl Runtime for Plugin {
    fn configured(&self) -> bool {
        Plugin::configured(self)
    }

    fn set_property(&mut self, path: &[&str], value: Vec<u8>) {
        Plugin::set_property(self, path, value);
    }

    fn exchange(&mut self, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Exchange> {
        let mut stream = self.stream();
        let mut action = stream.request_headers(headers, body.is_none())?;
        if let Some(body) = body
            && stream.local_reply().is_none()
        {
            action = stream.request_body(body, true)?;
        }
        let continued = action == Action::Continue;
        let reply = match stream.local_reply() {
            Some(reply) => Some(LocalReply {
                status: u16::try_from(reply.status)?,
                headers: reply.headers.clone(),
                body: reply.body.clone(),
            }),
            None => None,
        };
        let upstream_headers = stream.request_header_map().to_vec();
        let mut response_headers = Vec::new();
        if continued && reply.is_none() {
            stream.response_headers(&[(":status", "200")], true)?;
            response_headers = stream.response_header_map().iter().filter(|(n, _)| n != ":status").cloned().collect();
        }
        stream.finish()?;
        Ok(Exchange { reply, continued, upstream_headers, response_headers })
    }

    fn logs(&self) -> Vec<(LogLevel, String)> {
        Plugin::logs(self).iter().map(|l| (l.level, l.message.clone())).collect()
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        self.metric_names().into_iter().filter_map(|name| Some((name.clone(), self.counter(&name)?))).collect()
    }
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
