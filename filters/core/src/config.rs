//! Plugin configuration, in one place: the JSON is read once into raw structs, then turned into
//! typed values, or refused with one error naming the key and what is wrong with its value.
//!
//! Both modules read the same JSON object, so a sidecar needs one filter, not two: the identity
//! keys are shared, and `policy` is read only by the authz module. Unknown keys are refused, so a
//! typo cannot silently turn a check off.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::jwt_svid::{self, JwtSvidConfig};
use crate::path::PathGuard;
use crate::peer::SvidRules;
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// The identity header svidgate strips and injects unless configured otherwise.
pub const DEFAULT_IDENTITY_HEADER: &str = "x-forwarded-spiffe-id";
/// The status of a denial unless configured otherwise (as OPA's Envoy plugin).
pub const DEFAULT_DENY_STATUS: u16 = 403;
/// The OPA Envoy plugin's default decision path.
pub const DEFAULT_ENTRYPOINT: &str = "data.envoy.authz.allow";
/// Wall-clock budget of one evaluation unless configured otherwise.
pub const DEFAULT_EVAL_TIMEOUT: Duration = Duration::from_millis(10);
/// Instruction budget of one evaluation unless configured otherwise.
pub const DEFAULT_MAX_INSTRUCTIONS: usize = 1_000_000;
/// Decisions remembered per entrypoint and VM unless configured otherwise (`policy.decision_cache_entries`).
pub const DEFAULT_DECISION_CACHE_ENTRIES: usize = 1024;
/// The largest `policy.decision_cache_entries` accepted.
pub const MAX_DECISION_CACHE_ENTRIES: usize = 1 << 16;
/// Default bundle polling delays (OPA's are 60 s and 120 s).
pub const BUNDLE_DELAYS: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(120));
/// Default decision-log upload delays (OPA's are 300 s and 600 s; a SIEM wants them sooner).
pub const LOG_DELAYS: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(10));
/// Timeout of one call to a service unless configured otherwise.
pub const DEFAULT_SERVICE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default size limit of an inflated bundle.
pub const DEFAULT_MAX_BUNDLE_BYTES: usize = 16 << 20;
/// Default bound of buffered decision logs, per worker.
pub const DEFAULT_LOG_BUFFER_BYTES: usize = 4 << 20;
/// Default size of one decision-log upload, before compression.
pub const DEFAULT_LOG_UPLOAD_BYTES: usize = 256 << 10;
/// How much of a request body a policy that reads it gets unless configured otherwise: an
/// OpenAI-style chat request with a long conversation, an MCP `tools/call` with large arguments.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 << 10;
/// The largest `with_request_body.max_request_bytes` accepted: Envoy holds that much per stream,
/// and the policy's input holds it parsed.
pub const MAX_REQUEST_BYTES_LIMIT: usize = 8 << 20;
/// Input paths masked in decision logs unless configured otherwise: credentials must not reach the SIEM.
pub const DEFAULT_MASK: [&str; 2] =
    ["/input/attributes/request/http/headers/authorization", "/input/attributes/request/http/headers/cookie"];

/// Which module reads the configuration: the identity module refuses a `policy`, the authz
/// module requires one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModuleKind {
    /// `svidgate_authz.wasm` (feature `rego`: a build without it has no policy code at all).
    #[cfg(feature = "rego")]
    Authz,
    /// `svidgate_identity.wasm`.
    Identity,
}

impl ModuleKind {
    /// The module's name in logs (`svidgate_authz`).
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "rego")]
            Self::Authz => "svidgate_authz",
            Self::Identity => "svidgate_identity",
        }
    }
}

/// Why a configuration is refused at load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A trusted forwarder belongs to a trust domain that is not allowed, so it could never match.
    #[error("trusted_forwarders: {0:?} is not in any of trust_domains")]
    ForwarderOutsideTrustDomains(String),
    /// A key's value is wrong (type, range, shape); `key` is its dotted path.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted path of the key (`policy.bundle.min_delay`).
        key: String,
        /// What is wrong with its value.
        message: String,
    },
    /// A trusted forwarder is not a valid SPIFFE ID.
    #[error("trusted_forwarders: {value:?} is not a spiffe id: {source}")]
    InvalidForwarder {
        /// The offending value.
        value: String,
        /// The spec rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// The configuration is not JSON.
    #[error("configuration does not parse: {0}")]
    InvalidJson(String),
    /// A trust domain does not parse.
    #[error("trust_domains: {value:?} is not a trust domain: {source}")]
    InvalidTrustDomain {
        /// The offending value.
        value: String,
        /// The spec rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// The authz module was given no policy.
    #[error("policy with rego or a bundle is required by the authz module")]
    MissingPolicy,
    /// Sidecar mode needs at least one trust domain to validate peers against.
    #[error("trust_domains must list at least one trust domain in sidecar mode")]
    MissingTrustDomains,
    /// An option that only makes sense in sidecar mode was set in perimeter mode.
    #[error("{0} is a sidecar option; perimeter mode never injects an identity")]
    NotInPerimeterMode(&'static str),
    /// The identity module was given a policy it cannot evaluate.
    #[error("policy is not supported by the identity module: load svidgate_authz.wasm to evaluate rego")]
    PolicyNotSupported,
    /// The policy does not compile (syntax, unknown builtin, conflict, missing entrypoint).
    #[error("policy does not compile for entrypoint {entrypoint:?}: {message}")]
    PolicyCompile {
        /// The entrypoint being compiled.
        entrypoint: String,
        /// regorus's message.
        message: String,
    },
}

/// A module's whole configuration, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Identity behaviour, the same in both modules.
    pub identity: IdentityConfig,
    /// Which request paths are refused before anything reads them, the same in both modules.
    pub path_guard: PathGuard,
    /// The Rego policy: always set for the authz module, never for the identity module.
    pub policy: Option<PolicyConfig>,
}

/// Where svidgate sits, which decides whether it may inject an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// At the edge: remove identity headers, never inject one.
    Perimeter,
    /// In front of a workload: remove identity headers, then set the validated peer's ID.
    Sidecar,
}

/// The identity behaviour shared by both modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Perimeter or sidecar.
    pub mode: Mode,
    /// Identity headers to strip, lower-case; the first one is the one injected.
    pub headers: Vec<String>,
    /// Deny requests without a validated peer identity.
    pub require_peer: bool,
    /// Peers whose incoming identity header names the original caller and is kept.
    pub trusted_forwarders: Vec<SpiffeId>,
    /// What a peer certificate must satisfy.
    pub svid: SvidRules,
    /// Status of svidgate's denials and of policy denials that set no `http_status`.
    pub deny_status: u16,
    /// JWT-SVIDs as the identity of requests on connections without a client certificate.
    pub jwt_svid: Option<JwtSvidConfig>,
}

/// The `policy` block.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Rego modules as (file name, source); with a bundle, the bootstrap policy (may be empty).
    pub modules: Vec<(String, String)>,
    /// The base document `data` (a JSON object).
    pub data: serde_json::Value,
    /// The rule evaluated per request, as `data.pkg.rule`; with `routes`, for the routes it
    /// does not list (unless those are denied).
    pub entrypoint: String,
    /// Entrypoints per route, if configured.
    pub routes: Option<RoutesConfig>,
    /// Status of a denial caused by an evaluation failure.
    pub error_status: u16,
    /// Wall-clock budget of one evaluation.
    pub eval_timeout: Duration,
    /// Instruction budget of one evaluation.
    pub max_instructions: usize,
    /// How many decisions each entrypoint remembers for requests whose facts it reads repeat (0: none).
    pub decision_cache_entries: usize,
    /// Evaluate and log, but let policy denials through (for rolling out a policy).
    pub dry_run: bool,
    /// Decision logs, if enabled.
    pub decision_logs: Option<DecisionLogConfig>,
    /// An OPA bundle service polled for new policy, if configured.
    pub bundle: Option<BundleConfig>,
    /// Deny once the bundle service has not confirmed the active policy for this long.
    pub max_policy_age: Option<Duration>,
    /// The dynamic-metadata namespaces of other filters given to the policy as
    /// `attributes.metadataContext.filterMetadata`, as ext_authz's `metadata_context_namespaces`.
    pub metadata_context_namespaces: Vec<String>,
    /// How much of the request body a policy that reads it gets, as ext_authz's `with_request_body`.
    pub with_request_body: RequestBodyConfig,
}

/// The `policy.routes` block: one filter deciding each route with its own entrypoint, the way
/// ext_authz and RBAC take per-route settings (a Wasm filter has no per-route configuration,
/// so the route is looked up per request). Every entrypoint is compiled at load, from the
/// inline policy or each bundle: a policy missing one is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesConfig {
    /// What names a request's route.
    pub key: RouteKey,
    /// (route, entrypoint as `data.pkg.rule`), sorted by route.
    pub entrypoints: Vec<(String, String)>,
    /// Requests on routes not listed (or on no route) are denied, rather than decided by
    /// `policy.entrypoint`.
    pub deny_unlisted: bool,
}

/// What names a request's route in `policy.routes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKey {
    /// Envoy's route `name` (the `xds.route_name` attribute).
    RouteName,
    /// The string at `metadata.filter_metadata.svidgate.policy` on the route, so that many
    /// routes can share one entry.
    Metadata,
}

impl PolicyConfig {
    /// Every entrypoint the policy must define, each once: `entrypoint` first (unless routes
    /// not listed are denied), then the routes' in order.
    pub fn entrypoints(&self) -> Vec<&str> {
        let default = match &self.routes {
            Some(routes) if routes.deny_unlisted => None,
            _ => Some(self.entrypoint.as_str()),
        };
        let routed = self.routes.iter().flat_map(|routes| routes.entrypoints.iter().map(|(_, e)| e.as_str()));
        let mut all: Vec<&str> = Vec::new();
        for entrypoint in default.into_iter().chain(routed) {
            if !all.contains(&entrypoint) {
                all.push(entrypoint);
            }
        }
        all
    }
}

/// The `policy.with_request_body` block, as ext_authz's `BufferSettings`. It only matters to a
/// policy that reads the body (`parsed_body`, `truncated_body`, `attributes.request.http.body`
/// or `size`): other policies decide at the request headers and never hold a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestBodyConfig {
    /// The bytes of body the policy gets at most.
    pub max_request_bytes: usize,
    /// A longer body is decided on its first `max_request_bytes` with `truncated_body: true`;
    /// without this, it is answered 413 and never reaches the upstream.
    pub allow_partial_message: bool,
}

impl Default for RequestBodyConfig {
    fn default() -> Self {
        Self { max_request_bytes: DEFAULT_MAX_REQUEST_BYTES, allow_partial_message: false }
    }
}

/// The `policy.decision_logs` block.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionLogConfig {
    /// Write each record to Envoy's log (info level), as OPA's `decision_logs.console`.
    pub console: bool,
    /// JSON pointers erased from each record (`/input/...`), as OPA's mask policy `erased`.
    pub mask: Vec<String>,
    /// Fraction of allowed decisions logged (denials are always logged).
    pub sample_allowed: f64,
    /// Labels added to every record, beside `type` and `version`.
    pub labels: BTreeMap<String, String>,
    /// Upload records to an OPA-compatible decision-log receiver, as OPA's `decision_logs.service`.
    pub service: Option<LogServiceConfig>,
    /// Send the decision id to the client in this response header.
    pub decision_id_header: Option<String>,
}

/// Where an HTTP service is and how often to call it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The Envoy cluster the calls go to.
    pub cluster: String,
    /// The request path (`resource` in OPA's configuration).
    pub resource: String,
    /// The `:authority` of the calls (the cluster name unless set).
    pub authority: String,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Shortest delay between two calls.
    pub min_delay: Duration,
    /// Longest delay between two calls; each delay is drawn between the two, as OPA does.
    pub max_delay: Duration,
}

/// `policy.bundle`: where the bundle is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleConfig {
    /// The bundle service.
    pub service: ServiceConfig,
    /// The bundle's name in decision logs (`bundles.<name>.revision`).
    pub name: String,
    /// Largest inflated bundle accepted.
    pub max_bytes: usize,
}

/// `policy.decision_logs.service`: where decision logs are uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogServiceConfig {
    /// The log receiver.
    pub service: ServiceConfig,
    /// Bound of the buffer; records beyond it are dropped and counted.
    pub buffer_bytes: usize,
    /// Size of one upload before compression; a full batch is sent without waiting for the delay.
    pub upload_bytes: usize,
}

impl Config {
    /// Parses the configuration of `kind`'s module (an empty configuration is `{}`).
    pub fn parse(kind: ModuleKind, bytes: &[u8]) -> Result<Self, ConfigError> {
        match kind {
            ModuleKind::Identity => {
                let raw: RawConfig<IgnoredAny> = raw(bytes)?;
                if raw.policy.is_some() {
                    return Err(ConfigError::PolicyNotSupported);
                }
                Ok(Self { identity: raw.identity()?, path_guard: raw.path_guard(), policy: None })
            }
            #[cfg(feature = "rego")]
            ModuleKind::Authz => {
                let raw: RawConfig<policy::RawPolicy> = raw(bytes)?;
                let (identity, path_guard) = (raw.identity()?, raw.path_guard());
                let policy = raw.policy.ok_or(ConfigError::MissingPolicy)?.typed()?;
                Ok(Self { identity, path_guard, policy: Some(policy) })
            }
        }
    }
}

impl IdentityConfig {
    /// Parses the identity module's configuration, which must not carry a policy.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Config::parse(ModuleKind::Identity, bytes).map(|config| config.identity)
    }

    /// The header the validated identity is injected into.
    pub fn injected_header(&self) -> &str {
        self.headers.first().map_or(DEFAULT_IDENTITY_HEADER, String::as_str)
    }

    /// Whether `name` is one of the identity headers or a variant of one: names compare ignoring
    /// ASCII case and with `_` and `-` as the same character, because CGI-style stacks (WSGI,
    /// Rack, PHP) read `x_forwarded_spiffe_id` and `X-Forwarded-SPIFFE-ID` as the same key.
    pub fn is_identity_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| same_header_key(h, name))
    }
}

impl PolicyConfig {
    /// An inline policy with every other setting at its default, for tools and tests.
    pub fn inline(modules: Vec<(String, String)>, data: serde_json::Value, entrypoint: &str) -> Self {
        Self {
            modules,
            data,
            entrypoint: normalize_entrypoint(entrypoint),
            routes: None,
            error_status: DEFAULT_DENY_STATUS,
            eval_timeout: DEFAULT_EVAL_TIMEOUT,
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
            decision_cache_entries: DEFAULT_DECISION_CACHE_ENTRIES,
            dry_run: false,
            decision_logs: None,
            bundle: None,
            max_policy_age: None,
            metadata_context_namespaces: Vec::new(),
            with_request_body: RequestBodyConfig::default(),
        }
    }
}

/// Accepts `envoy/authz/allow` (OPA Envoy plugin `path`), `envoy.authz.allow` and `data.envoy.authz.allow`.
pub fn normalize_entrypoint(entrypoint: &str) -> String {
    let dotted = entrypoint.trim_matches('/').replace('/', ".");
    if dotted == "data" || dotted.starts_with("data.") { dotted } else { format!("data.{dotted}") }
}

/// Parses durations written as a number and a unit: `250ms`, `30s`, `15m`, `1h`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Whether two header names reach a CGI-style application as the same key: equal ignoring ASCII
/// case, with `_` and `-` as the same character.
pub fn same_header_key(a: &str, b: &str) -> bool {
    let key = |c: u8| if c == b'_' { b'-' } else { c.to_ascii_lowercase() };
    // The same bytes first, compared a word at a time: Envoy hands names over lower-case, so a
    // forged header is most often the configured name itself, and mapping each byte costs about
    // fifty Wasm instructions.
    a == b || a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(a, b)| key(a) == key(b))
}

/// Lower-cases `name` if it is a valid, non-pseudo HTTP header name (RFC 9110 token).
pub fn header_name(name: &str) -> Option<String> {
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid.then(|| name.to_ascii_lowercase())
}

/// The JSON as written, before validation. `P` is what `policy` holds: [`RawPolicy`] for the
/// authz module, anything at all (refused) for the identity module.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, bound = "P: Deserialize<'de>", expecting = "a json object of svidgate settings")]
struct RawConfig<P> {
    mode: Option<Mode>,
    identity_headers: Option<Vec<String>>,
    trust_domains: Option<Vec<String>>,
    #[serde(default)]
    trusted_forwarders: Vec<String>,
    #[serde(default)]
    require_peer: bool,
    max_svid_ttl: Option<String>,
    deny_status: Option<u16>,
    path_guard: Option<RawPathGuard>,
    jwt_svid: Option<RawJwtSvid>,
    policy: Option<P>,
}

/// `jwt_svid`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtSvid {
    header: Option<RawTokenHeader>,
    #[serde(default)]
    audiences: Vec<String>,
    algorithms: Option<Vec<String>>,
    clock_skew: Option<String>,
    #[serde(default)]
    forward_token: bool,
    /// Trust domain to SPIFFE bundle document.
    #[serde(default)]
    bundles: BTreeMap<String, Box<serde_json::value::RawValue>>,
    /// Trust domain to bundle endpoint.
    #[serde(default)]
    bundle_endpoints: BTreeMap<String, RawService>,
}

/// `jwt_svid.header`, as Envoy's `jwt_authn` `from_headers` entries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenHeader {
    name: String,
    value_prefix: Option<String>,
}

/// `path_guard`: `false` to turn it off, or which other request-target forms to let through.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected true, false or an object of asterisk_form and authority_form")]
enum RawPathGuard {
    Enabled(bool),
    Forms(RawPathForms),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathForms {
    #[serde(default)]
    asterisk_form: bool,
    #[serde(default)]
    authority_form: bool,
}

/// Reads the JSON into `T`; a type error names the dotted path of the key it is about.
fn raw<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    serde_json::from_slice(bytes).map_err(|error| {
        let key = if error.is_data() { key_at(bytes, error.line(), error.column()) } else { String::new() };
        if key.is_empty() { ConfigError::InvalidJson(error.to_string()) } else { invalid(&key, error.to_string()) }
    })
}

/// The dotted path of the key whose value the JSON text has reached at `line`:`column` (where
/// serde_json reports an error), e.g. `policy.bundle.min_delay` or `trust_domains[1]`.
///
/// A small scan of the text rather than a path-tracking deserializer: that would wrap every
/// configuration type's deserialization again, about 24 KB of the authz module.
fn key_at(json: &[u8], line: usize, column: usize) -> String {
    enum Frame {
        Object(Option<String>),
        Array(usize),
    }
    let start = json.split(|&b| b == b'\n').take(line.saturating_sub(1)).map(|l| l.len() + 1).sum::<usize>();
    // serde_json's column is one past the last byte it read: stop before it, so that a value's
    // closing bracket does not leave the object the error is about.
    let end = json.len().min(start + column.saturating_sub(1));
    let mut stack: Vec<Frame> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&byte) = json.get(i).filter(|_| i < end) {
        match byte {
            b'{' => {
                stack.push(Frame::Object(None));
                expect_key = true;
            }
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object(_)) => expect_key = true,
                Some(Frame::Array(index)) => *index += 1,
                None => {}
            },
            b'"' => {
                let from = i + 1;
                i = from;
                while let Some(&b) = json.get(i).filter(|&&b| b != b'"') {
                    i += if b == b'\\' { 2 } else { 1 };
                }
                if expect_key && let Some(Frame::Object(key)) = stack.last_mut() {
                    *key = Some(String::from_utf8_lossy(json.get(from..i).unwrap_or_default()).into_owned());
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    if !matches!(stack.first(), Some(Frame::Object(_))) {
        return path;
    }
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) if path.is_empty() => path.push_str(key),
            Frame::Object(Some(key)) => {
                path.push('.');
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

impl<P> RawConfig<P> {
    fn path_guard(&self) -> PathGuard {
        match &self.path_guard {
            None => PathGuard::default(),
            Some(RawPathGuard::Enabled(enabled)) => PathGuard { enabled: *enabled, ..PathGuard::default() },
            Some(RawPathGuard::Forms(forms)) => PathGuard {
                enabled: true,
                asterisk_form: forms.asterisk_form,
                authority_form: forms.authority_form,
            },
        }
    }

    fn identity(&self) -> Result<IdentityConfig, ConfigError> {
        let mode = self.mode.unwrap_or(Mode::Sidecar);
        let headers = match &self.identity_headers {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| header_name(n).ok_or_else(|| invalid("identity_headers", format!("{n:?} is not a valid header name"))))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(invalid("identity_headers", "must name at least one header".into())),
            None => vec![DEFAULT_IDENTITY_HEADER.to_owned()],
        };
        let trust_domains = self
            .trust_domains
            .iter()
            .flatten()
            .map(|td| {
                TrustDomain::parse(td).map_err(|source| ConfigError::InvalidTrustDomain { value: td.clone(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_forwarders = self
            .trusted_forwarders
            .iter()
            .map(|id| {
                let parsed = SpiffeId::parse(id)
                    .map_err(|source| ConfigError::InvalidForwarder { value: id.clone(), source })?;
                if !trust_domains.iter().any(|td| parsed.is_member_of(td)) {
                    return Err(ConfigError::ForwarderOutsideTrustDomains(id.clone()));
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        match mode {
            Mode::Perimeter if self.require_peer => return Err(ConfigError::NotInPerimeterMode("require_peer")),
            Mode::Perimeter if !trusted_forwarders.is_empty() => {
                return Err(ConfigError::NotInPerimeterMode("trusted_forwarders"));
            }
            Mode::Sidecar if trust_domains.is_empty() => return Err(ConfigError::MissingTrustDomains),
            _ => {}
        }
        let max_svid_ttl = self.max_svid_ttl.as_deref().map(|v| duration("max_svid_ttl", v, false)).transpose()?;
        let jwt_svid = match &self.jwt_svid {
            Some(_) if mode == Mode::Perimeter => return Err(ConfigError::NotInPerimeterMode("jwt_svid")),
            Some(raw) => Some(raw.typed(&trust_domains, &headers)?),
            None => None,
        };
        Ok(IdentityConfig {
            mode,
            headers,
            require_peer: self.require_peer,
            trusted_forwarders,
            svid: SvidRules { trust_domains, max_svid_ttl },
            deny_status: error_status("deny_status", self.deny_status)?,
            jwt_svid,
        })
    }
}

impl RawJwtSvid {
    fn typed(&self, trust_domains: &[TrustDomain], identity_headers: &[String]) -> Result<JwtSvidConfig, ConfigError> {
        let (default_name, default_prefix) = jwt_svid::DEFAULT_TOKEN_HEADER;
        let (header, value_prefix) = match &self.header {
            None => (default_name.to_owned(), default_prefix.to_owned()),
            Some(raw) => {
                let name = header_name(&raw.name)
                    .ok_or_else(|| invalid("jwt_svid.header.name", format!("{:?} is not a valid header name", raw.name)))?;
                if identity_headers.iter().any(|h| same_header_key(h, &name)) {
                    return Err(invalid("jwt_svid.header.name", format!("{name:?} is an identity header")));
                }
                let prefix = raw.value_prefix.clone().unwrap_or_else(|| if name == default_name { default_prefix.to_owned() } else { String::new() });
                (name, prefix)
            }
        };
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(invalid("jwt_svid.audiences", "must list the audiences a token may be for (its aud holds one of them)".into()));
        }
        let algorithms = match &self.algorithms {
            None => jwt_svid::Algorithm::ALL.into_iter().filter(|alg| alg.built()).collect(),
            Some(names) if names.is_empty() => return Err(invalid("jwt_svid.algorithms", "must list at least one algorithm".into())),
            Some(names) => names
                .iter()
                .map(|name| match jwt_svid::Algorithm::from_name(name) {
                    Some(alg) if alg.built() => Ok(alg),
                    Some(jwt_svid::Algorithm::Es512) => Err(invalid("jwt_svid.algorithms", format!("{name} is not verified by svidgate (no spiffe issuer signs with P-521)"))),
                    Some(_) => Err(invalid("jwt_svid.algorithms", format!("{name} is verified by svidgate_authz_full.wasm only"))),
                    None => Err(invalid("jwt_svid.algorithms", format!("{name:?} is not a jwt-svid algorithm (RS256-512, PS256-512, ES256-512)"))),
                })
                .collect::<Result<_, _>>()?,
        };
        let clock_skew = match &self.clock_skew {
            None => jwt_svid::DEFAULT_CLOCK_SKEW,
            Some(value) => duration("jwt_svid.clock_skew", value, false)?,
        };
        let trust_domain = |key: &str, name: &str| {
            let td = TrustDomain::parse(name).map_err(|source| invalid(key, format!("{name:?} is not a trust domain: {source}")))?;
            if !trust_domains.contains(&td) {
                return Err(invalid(key, format!("{name:?} is not in trust_domains")));
            }
            Ok(td)
        };
        let bundles = self
            .bundles
            .iter()
            .map(|(name, json)| {
                let key = format!("jwt_svid.bundles.{name}");
                let td = trust_domain(&key, name)?;
                let bundle = jwt_svid::JwtBundle::parse(json.get().as_bytes()).map_err(|e| invalid(&key, e.to_string()))?;
                Ok((td, bundle))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let bundle_endpoints = self
            .bundle_endpoints
            .iter()
            .map(|(name, raw)| {
                let block = format!("jwt_svid.bundle_endpoints.{name}");
                let trust_domain = trust_domain(&block, name)?;
                if raw.upload_bytes.is_some() || raw.name.is_some() {
                    return Err(invalid(&block, "takes cluster, resource, authority, timeout, min_delay, max_delay and max_bytes".into()));
                }
                let service = raw.service(&block, "/", BUNDLE_DELAYS)?;
                Ok(jwt_svid::BundleEndpoint { trust_domain, service, max_bytes: raw.max_bytes.unwrap_or(jwt_svid::DEFAULT_MAX_BUNDLE_BYTES) })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if bundles.is_empty() && bundle_endpoints.is_empty() {
            return Err(invalid("jwt_svid", "needs the jwt bundles to check tokens with: bundles, bundle_endpoints or both".into()));
        }
        Ok(JwtSvidConfig {
            header,
            value_prefix,
            audiences: self.audiences.clone(),
            algorithms,
            clock_skew,
            forward_token: self.forward_token,
            bundles,
            bundle_endpoints,
        })
    }
}

/// The fields every service block shares, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) cluster: String,
    pub(crate) resource: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) min_delay: Option<String>,
    pub(crate) max_delay: Option<String>,
    /// Bundles: the inflated size limit. Logs: the buffer bound.
    pub(crate) max_bytes: Option<usize>,
    /// Logs: the size of one upload.
    pub(crate) upload_bytes: Option<usize>,
    /// Bundles: the name in decision logs (OPA's bundle name).
    pub(crate) name: Option<String>,
}

impl RawService {
    pub(crate) fn service(
        &self,
        block: &str,
        default_resource: &str,
        delays: (Duration, Duration),
    ) -> Result<ServiceConfig, ConfigError> {
        let key = |field: &str| format!("{block}.{field}");
        if self.cluster.is_empty() {
            return Err(invalid(&key("cluster"), "must name an Envoy cluster".into()));
        }
        let resource = self.resource.clone().unwrap_or_else(|| default_resource.to_owned());
        if !resource.starts_with('/') {
            return Err(invalid(&key("resource"), format!("{resource:?} must be a path starting with /")));
        }
        let duration = |field: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(v) => duration(&key(field), v, true),
        };
        let timeout = duration("timeout", &self.timeout, DEFAULT_SERVICE_TIMEOUT)?;
        let min_delay = duration("min_delay", &self.min_delay, delays.0)?;
        let max_delay = duration("max_delay", &self.max_delay, delays.1.max(min_delay))?;
        if max_delay < min_delay {
            return Err(invalid(&key("max_delay"), format!("{max_delay:?} is below min_delay {min_delay:?}")));
        }
        Ok(ServiceConfig {
            authority: self.authority.clone().unwrap_or_else(|| self.cluster.clone()),
            cluster: self.cluster.clone(),
            resource,
            timeout,
            min_delay,
            max_delay,
        })
    }
}

pub(crate) fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), message }
}

/// A duration key's value; timeouts, delays and ages must be above zero.
pub(crate) fn duration(key: &str, value: &str, positive: bool) -> Result<Duration, ConfigError> {
    parse_duration(value)
        .filter(|d| !(positive && d.is_zero()))
        .ok_or_else(|| invalid(key, format!("{value:?} is not a duration (use e.g. \"500ms\", \"15m\", \"1h\")")))
}

/// An optional error status key, defaulting to 403.
pub(crate) fn error_status(key: &str, value: Option<u16>) -> Result<u16, ConfigError> {
    match value {
        None => Ok(DEFAULT_DENY_STATUS),
        Some(status @ 400..=599) => Ok(status),
        Some(status) => Err(invalid(key, format!("{status} is not an http error status (400-599)"))),
    }
}

#[cfg(feature = "rego")]
mod policy;
#[cfg(test)]
mod tests;
