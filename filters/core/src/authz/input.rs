//! The OPA Envoy plugin's v3 input, built only as far as the policy can read it.
//!
//! OPA's Envoy plugin receives Envoy's ext_authz `CheckRequest` and hands policies
//! `input.attributes...`, `input.parsed_path`, `input.parsed_query` and `input.version`. svidgate
//! builds the same shape straight from the proxy's data. The expensive parts (the header map,
//! query parsing, extra host property reads, the request body) are built only when a static
//! scan of the policy shows some reference that could reach them; the scan over-approximates,
//! never under. It follows the import OPA-Envoy policies are written with
//! (`import input.attributes.request.http as http_request`), so that `http_request.headers`
//! does not make the policy wait for the request body.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regorus::Value;
use regorus::unstable::{Lexer, Source, TokenKind};

use super::body::BodyInput;
use super::cache::{KeyPlan, NOT_CACHEABLE_CALLS};
use crate::headers::HeaderList;
use crate::identity::{IdentityOutcome, StrippedHeaders};
use crate::jwt_svid::JwtSvid;
use crate::peer::{PeerError, PeerIdentity};

/// What the proxy knows about one request, as plain data.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The request headers, identity headers already stripped.
    pub headers: &'a StrippedHeaders,
    /// The validated peer, or why there is none.
    pub peer: Result<&'a PeerIdentity, &'a PeerError>,
    /// The request's valid JWT-SVID, when the connection has no client certificate.
    pub jwt_svid: Option<&'a JwtSvid>,
    /// Envoy's `source.address` (`ip:port`), if the plan asks for it.
    pub source_address: Option<&'a str>,
    /// Envoy's `destination.address` (`ip:port`), if the plan asks for it.
    pub destination_address: Option<&'a str>,
    /// Envoy's `connection.uri_san_local_certificate`, if the plan asks for it.
    pub destination_principal: Option<&'a str>,
    /// Envoy's `request.protocol` (`HTTP/1.1`, `HTTP/2`), if the plan asks for it.
    pub protocol: Option<&'a str>,
    /// Envoy's `connection.requested_server_name` (the TLS SNI), if the plan asks for it.
    pub tls_sni: Option<&'a str>,
    /// Envoy's `connection.peer_certificate` (the validated peer's leaf PEM), if the plan asks
    /// for it.
    pub peer_certificate: Option<&'a str>,
    /// Other filters' dynamic metadata of the configured namespaces, if the plan asks for it.
    pub metadata_context: &'a [(String, Value)],
    /// The request body, read and parsed, if the plan asks for it.
    pub body: Option<&'a BodyInput>,
    /// The proxy clock (decision-log timestamps).
    pub now: std::time::SystemTime,
}

impl RequestFacts<'_> {
    /// `attributes.source.principal`: the validated peer's SPIFFE ID, or where the connection
    /// has no client certificate, the request's valid JWT-SVID's.
    pub fn principal(&self) -> Option<&str> {
        match self.peer {
            Ok(peer) => Some(peer.spiffe_id.as_str()),
            Err(_) => self.jwt_svid.map(|svid| svid.spiffe_id.as_str()),
        }
    }
}

/// The optional parts of the input a policy can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputPlan {
    /// `attributes.request.http.headers`.
    pub headers: bool,
    /// `parsed_path`.
    pub parsed_path: bool,
    /// `parsed_query`.
    pub parsed_query: bool,
    /// `attributes.source.address`.
    pub source_address: bool,
    /// `attributes.destination.address`.
    pub destination_address: bool,
    /// `attributes.destination.principal`.
    pub destination_principal: bool,
    /// `attributes.request.http.protocol`.
    pub protocol: bool,
    /// `svidgate` (peer certificate details).
    pub svidgate: bool,
    /// `attributes.request.time`.
    pub request_time: bool,
    /// `attributes.tlsSession`.
    pub tls_session: bool,
    /// `attributes.source.certificate`.
    pub source_certificate: bool,
    /// `attributes.metadataContext`.
    pub metadata_context: bool,
    /// The request body: `parsed_body`, `truncated_body`, `attributes.request.http.body` and
    /// `size`. Only such a policy holds a request until its body is read.
    pub body: bool,
}

/// An optional part: its path in the input, and how to switch it on in a plan.
type Part = (&'static [&'static str], fn(&mut InputPlan));

/// The input path behind each optional part.
const PARTS: [Part; 17] = [
    (&["attributes", "request", "http", "headers"], |p| p.headers = true),
    (&["parsed_path"], |p| p.parsed_path = true),
    (&["parsed_query"], |p| p.parsed_query = true),
    (&["attributes", "source", "address"], |p| p.source_address = true),
    (&["attributes", "destination", "address"], |p| p.destination_address = true),
    (&["attributes", "destination", "principal"], |p| p.destination_principal = true),
    (&["attributes", "request", "http", "protocol"], |p| p.protocol = true),
    (&["svidgate"], |p| p.svidgate = true),
    (&["attributes", "request", "time"], |p| p.request_time = true),
    (&["attributes", "tlsSession"], |p| p.tls_session = true),
    (&["attributes", "source", "certificate"], |p| p.source_certificate = true),
    (&["attributes", "metadataContext"], |p| p.metadata_context = true),
    (&["parsed_body"], |p| p.body = true),
    (&["truncated_body"], |p| p.body = true),
    (&["attributes", "request", "http", "body"], |p| p.body = true),
    (&["attributes", "request", "http", "raw_body"], |p| p.body = true),
    (&["attributes", "request", "http", "size"], |p| p.body = true),
];

impl InputPlan {
    /// Every part: for policies the scan cannot read.
    pub const ALL: Self = Self {
        headers: true,
        parsed_path: true,
        parsed_query: true,
        source_address: true,
        destination_address: true,
        destination_principal: true,
        protocol: true,
        svidgate: true,
        request_time: true,
        tls_session: true,
        source_certificate: true,
        metadata_context: true,
        body: true,
    };

    /// Scans every `input` reference of the modules. A reference is a static chain
    /// (`input.a.b["c"]`); where the chain stops (a variable index, `input` used whole) every
    /// part below that point is kept. A name an import binds to a reference
    /// (`import input.x as n`, `import input.x`) is followed: each use of `n` counts as the
    /// reference extended by the chain after `n`, and so does a string `"n"` (`data.pkg["n"]`
    /// style reads). That holds unless a package is read whole or by a variable key
    /// (`data.pkg`, `data.pkg[k]`): then every alias counts whole.
    pub fn for_modules(modules: &[(String, String)]) -> Self {
        Self::for_entrypoints(modules, &["data"]).pop().unwrap_or(Self::ALL)
    }

    /// The plan of each entrypoint, in order: [`Self::for_modules`] over the modules it can
    /// reach (the modules are lexed once for all). Those are the modules of any package a
    /// reference reaches (one is a prefix of the other), from the entrypoint's own and then from
    /// each module reached: `data.a.b.c` and `import data.a` reach packages `a.b` and `a.b.c.d`;
    /// `data[x]` reaches every package. So a route whose policy never reads the body does not
    /// wait for it because another route's policy does.
    pub fn for_entrypoints(modules: &[(String, String)], entrypoints: &[&str]) -> Vec<Self> {
        Self::with_keys(modules, entrypoints).into_iter().map(|(plan, _)| plan).collect()
    }

    /// [`Self::for_entrypoints`], with each entrypoint's decision-cache key: `None` when its
    /// decision is not a function of a few request facts (see [`super::cache`]).
    pub fn with_keys(modules: &[(String, String)], entrypoints: &[&str]) -> Vec<(Self, Option<KeyPlan>)> {
        let mut scanned = Vec::with_capacity(modules.len());
        for (name, source) in modules {
            let Some(tokens) = tokens(name, source) else { return vec![(Self::ALL, None); entrypoints.len()] };
            scanned.push(tokens);
        }
        let packages: Vec<Option<Vec<String>>> = scanned.iter().map(|tokens| package(tokens)).collect();
        let reaches = |chain: &[String], package: &Option<Vec<String>>| {
            // A module without a package does not compile; if it is here, keep it.
            package.as_ref().is_none_or(|package| chain.iter().zip(package).all(|(a, b)| a == b))
        };
        let plan = |entrypoint: &str| {
            let root: Vec<String> = entrypoint.split('.').skip(1).map(str::to_owned).collect();
            let mut reached = vec![false; scanned.len()];
            let mut chains = vec![root];
            while let Some(chain) = chains.pop() {
                for (m, package) in packages.iter().enumerate() {
                    if reached.get(m) == Some(&false) && reaches(&chain, package) {
                        if let Some(flag) = reached.get_mut(m) {
                            *flag = true;
                        }
                        chains.extend(data_references(scanned.get(m).map(Vec::as_slice).unwrap_or_default()));
                    }
                }
            }
            let reached: Vec<&[(TokenKind, String)]> =
                scanned.iter().zip(reached).filter_map(|(tokens, reached)| reached.then_some(tokens.as_slice())).collect();
            let (plan, chains) = Self::scan(&reached);
            let key = if reached.iter().any(|tokens| first_call(tokens, &NOT_CACHEABLE_CALLS).is_some()) { None } else { KeyPlan::new(&chains) };
            (plan, key)
        };
        entrypoints.iter().map(|entrypoint| plan(entrypoint)).collect()
    }

    /// The plan, and every input reference as a static chain (read whole below its end).
    fn scan(scanned: &[&[(TokenKind, String)]]) -> (Self, Vec<Vec<String>>) {
        let mut plan = Self::default();
        let mut chains = Vec::new();
        // (name, the reference it is bound to); a few per policy, so plain lists.
        let mut aliases: Vec<(&str, Vec<String>)> = Vec::new();
        // Where each alias is bound (module, token): not a use.
        let mut bindings = Vec::new();
        for (m, tokens) in scanned.iter().enumerate() {
            for (i, (kind, text)) in tokens.iter().enumerate() {
                if *kind != TokenKind::Ident || text != "input" || follows_dot(tokens, i) {
                    continue;
                }
                let (chain, used) = reference_chain(tokens.get(i + 1..).unwrap_or_default());
                match alias(tokens, i, i + 1 + used).filter(|_| !chain.is_empty()) {
                    Some((at, name)) => {
                        bindings.push((m, at));
                        aliases.push((name, chain));
                    }
                    None => plan.include(&mut chains, chain),
                }
            }
        }
        if aliases.is_empty() {
            return (plan, chains);
        }
        if reads_a_package_whole(scanned) {
            for (_, chain) in aliases {
                plan.include(&mut chains, chain);
            }
            return (plan, chains);
        }
        for (m, tokens) in scanned.iter().enumerate() {
            for (i, (kind, text)) in tokens.iter().enumerate() {
                let name = match kind {
                    TokenKind::Ident => text.as_str(),
                    TokenKind::String | TokenKind::RawString => text.trim_matches(|c| c == '"' || c == '`'),
                    _ => continue,
                };
                if bindings.contains(&(m, i)) {
                    continue;
                }
                let (tail, _) = reference_chain(tokens.get(i + 1..).unwrap_or_default());
                for (_, chain) in aliases.iter().filter(|(alias, _)| *alias == name) {
                    plan.include(&mut chains, [chain.as_slice(), tail.as_slice()].concat());
                }
            }
        }
        (plan, chains)
    }

    fn include(&mut self, chains: &mut Vec<Vec<String>>, chain: Vec<String>) {
        for (path, set) in PARTS {
            // One is a prefix of the other: the reference can reach the part.
            if chain.iter().zip(path).all(|(a, b)| a == b) {
                set(self);
            }
        }
        chains.push(chain);
    }
}

/// Declares [`KEYS`]: every object key of the input, allocated once instead of per request.
macro_rules! keys {
    ($($field:ident = $name:literal),* $(,)?) => {
        /// The input's object keys as ready-made regorus strings (cloning one is a reference count).
        struct Keys { $($field: Value),* }
        static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys { $($field: Value::from($name)),* });
    };
}

keys! {
    address = "address", alg = "alg", attributes = "attributes", audience = "audience", body = "body", caller = "caller", certificate = "certificate", destination = "destination",
    encoding = "encoding", expires_at = "expires_at", ext_authz = "ext_authz", filter_metadata = "filterMetadata", forwarded = "forwarded", headers = "headers",
    host = "host", http = "http", id = "id", issued_at = "issued_at", jwt_svid = "jwt_svid", key_id = "key_id", metadata_context = "metadataContext", method = "method", nanos = "nanos", not_after = "not_after",
    not_before = "not_before", parsed_body = "parsed_body", parsed_path = "parsed_path", parsed_query = "parsed_query",
    path = "path", peer = "peer", peer_error = "peer_error", port_value = "portValue",
    principal = "principal", protocol = "protocol", request = "request",
    scheme = "scheme", seconds = "seconds", size = "size", sni = "sni", socket_address = "socketAddress", source = "source",
    source_principal = "source_principal", spiffe_id = "spiffe_id", svidgate = "svidgate",
    time = "time", tls_session = "tlsSession", truncated_body = "truncated_body", trust_domain = "trust_domain",
    ttl_remaining_s = "ttl_remaining_s", version = "version",
}

/// `{"encoding": "protojson", "ext_authz": "v3"}`, the same for every request.
static VERSION: LazyLock<Value> = LazyLock::new(|| {
    object(vec![(&KEYS.encoding, "protojson".into()), (&KEYS.ext_authz, "v3".into())])
});

/// Builds the input document for one request.
pub fn build_input(plan: &InputPlan, facts: &RequestFacts<'_>, identity: &IdentityOutcome) -> Value {
    let headers = facts.headers;
    let path = headers.get(":path").unwrap_or_default();
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let principal = facts.principal().map(Value::from);

    let mut http = vec![
        (&KEYS.id, opt_str(headers.get("x-request-id"))),
        (&KEYS.method, opt_str(headers.get(":method"))),
        (&KEYS.path, Value::from(path)),
        (&KEYS.host, opt_str(headers.get(":authority"))),
        (&KEYS.scheme, opt_str(headers.get(":scheme"))),
    ];
    // No `query`: Envoy's ext_authz request leaves it empty (the query stays in `path`), so OPA's
    // Envoy plugin has none. `body` and `size` only for a policy that reads the body (below).
    if plan.protocol {
        http.push((&KEYS.protocol, opt_str(facts.protocol)));
    }
    let none = BodyInput::none();
    let body = facts.body.filter(|_| plan.body).unwrap_or(&none);
    if plan.headers {
        // ext_authz adds whether the body it sends is cut short to a request whose body it buffered.
        let partial = body.buffered.then_some(("x-envoy-auth-partial-body", if body.truncated { "true" } else { "false" }));
        http.push((&KEYS.headers, header_map(headers.headers(), partial)));
    }
    // Left out when empty, as the plugin's protomap leaves out an empty field.
    if let Some(text) = &body.text {
        http.push((&KEYS.body, text.clone()));
    }
    if body.size > 0 {
        http.push((&KEYS.size, Value::from(body.size)));
    }

    let mut source = Vec::new();
    if let Some(principal) = &principal {
        source.push((&KEYS.principal, principal.clone()));
    }
    if plan.source_address {
        source.push((&KEYS.address, socket_address(facts.source_address)));
    }
    // Only a validated peer's certificate, as the rest of the input only has its SPIFFE ID.
    if let Some(pem) = facts.peer_certificate.filter(|_| plan.source_certificate && facts.peer.is_ok()) {
        source.push((&KEYS.certificate, Value::from(url_encoded_pem(pem))));
    }
    let mut destination = Vec::new();
    if plan.destination_principal {
        destination.push((&KEYS.principal, opt_str(facts.destination_principal)));
    }
    if plan.destination_address {
        destination.push((&KEYS.address, socket_address(facts.destination_address)));
    }

    let mut request = vec![(&KEYS.http, object(http))];
    if plan.request_time {
        request.push((&KEYS.time, request_time(facts.now)));
    }
    let mut attributes = vec![
        (&KEYS.source, object(source)),
        (&KEYS.destination, object(destination)),
        (&KEYS.request, object(request)),
    ];
    if plan.metadata_context && !facts.metadata_context.is_empty() {
        let namespaces = facts.metadata_context.iter().map(|(ns, v)| (Value::from(ns.as_str()), v.clone()));
        let filter_metadata = Value::from(namespaces.collect::<std::collections::BTreeMap<Value, Value>>());
        attributes.push((&KEYS.metadata_context, object(vec![(&KEYS.filter_metadata, filter_metadata)])));
    }
    // As the plugin's protomap leaves out an empty field: no SNI, no `tlsSession`.
    if let Some(sni) = facts.tls_sni.filter(|sni| plan.tls_session && !sni.is_empty()) {
        attributes.push((&KEYS.tls_session, object(vec![(&KEYS.sni, Value::from(sni))])));
    }
    let mut root = vec![
        (&KEYS.attributes, object(attributes)),
        (&KEYS.truncated_body, Value::from(body.truncated)),
        (&KEYS.version, VERSION.clone()),
    ];
    if plan.body {
        root.push((&KEYS.parsed_body, body.parsed.clone()));
    }
    if let Some(principal) = principal {
        root.push((&KEYS.source_principal, principal));
    }
    if plan.parsed_path {
        root.push((&KEYS.parsed_path, parsed_path(path_only)));
    }
    if plan.parsed_query {
        root.push((&KEYS.parsed_query, parsed_query(query.unwrap_or_default())));
    }
    if plan.svidgate {
        root.push((&KEYS.svidgate, svidgate(facts.peer, identity)));
    }
    object(root)
}

/// `attributes.source.certificate` as Envoy's ext_authz fills it
/// (`urlEncodedPemEncodedPeerCertificate`): the PEM with newline, space, `+`, `/` and `=`
/// percent-encoded, nothing else.
fn url_encoded_pem(pem: &str) -> String {
    let mut out = String::with_capacity(pem.len() + pem.len() / 8);
    for c in pem.chars() {
        match c {
            '\n' => out.push_str("%0A"),
            ' ' => out.push_str("%20"),
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
    out
}

/// `attributes.request.time` as the plugin builds it from the protobuf `Timestamp` (protomap, not
/// protojson): `{"seconds": s, "nanos": n}`, `nanos` left out when zero.
fn request_time(now: std::time::SystemTime) -> Value {
    let since_epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut fields = vec![(&KEYS.seconds, Value::from(since_epoch.as_secs()))];
    if since_epoch.subsec_nanos() != 0 {
        fields.push((&KEYS.nanos, Value::from(u64::from(since_epoch.subsec_nanos()))));
    }
    object(fields)
}

/// Tokens of a module as (kind, text), or `None` if it does not lex (the plan then keeps all).
pub(super) fn tokens(name: &str, source: &str) -> Option<Vec<(TokenKind, String)>> {
    let source = Source::from_contents(name.to_owned(), source.to_owned()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut out = Vec::new();
    loop {
        let token = lexer.next_token().ok()?;
        if token.0 == TokenKind::Eof {
            return Some(out);
        }
        out.push((token.0, token.1.text().to_owned()));
    }
}

/// The static keys following a name: `.name` and `["name"]`, until anything else; and how many
/// tokens they took.
fn reference_chain(tokens: &[(TokenKind, String)]) -> (Vec<String>, usize) {
    let mut chain = Vec::new();
    let mut rest = tokens;
    loop {
        match rest {
            [(TokenKind::Symbol, dot), (TokenKind::Ident, key), tail @ ..] if dot == "." => {
                chain.push(key.clone());
                rest = tail;
            }
            [(TokenKind::Symbol, open), (TokenKind::String | TokenKind::RawString, key), (TokenKind::Symbol, close), tail @ ..]
                if open == "[" && close == "]" =>
            {
                chain.push(key.trim_matches(|c| c == '"' || c == '`').to_owned());
                rest = tail;
            }
            _ => return (chain, tokens.len() - rest.len()),
        }
    }
}

/// The first of the builtins `names` a module calls: a dotted name followed by `(`.
pub(super) fn first_call<'n>(tokens: &[(TokenKind, String)], names: &[&'n str]) -> Option<&'n str> {
    tokens.iter().enumerate().find_map(|(i, (kind, text))| {
        if *kind != TokenKind::Ident || follows_dot(tokens, i) {
            return None;
        }
        let (rest, used) = reference_chain(tokens.get(i + 1..).unwrap_or_default());
        let called = tokens.get(i + 1 + used).is_some_and(|(kind, text)| *kind == TokenKind::Symbol && text == "(");
        let name = [std::slice::from_ref(text), rest.as_slice()].concat().join(".");
        names.iter().copied().find(|n| called && *n == name)
    })
}

/// Whether token `i` is a field (`x.input`), not a root.
fn follows_dot(tokens: &[(TokenKind, String)], i: usize) -> bool {
    i.checked_sub(1).and_then(|p| tokens.get(p)).is_some_and(|(kind, text)| *kind == TokenKind::Symbol && text == ".")
}

/// The name an import binds the reference at `start..end` (`input` and its chain) to:
/// `import input.x as n`, or `import input.x` (binds `x`). Only imports: a rule bound to a
/// reference (`n := input.x`) is read wherever rules are, by the entrypoint and in the result.
fn alias(tokens: &[(TokenKind, String)], start: usize, end: usize) -> Option<(usize, &str)> {
    let at = |i: usize| tokens.get(i).map(|(kind, text)| (kind, text.as_str()));
    if !matches!(start.checked_sub(1).and_then(at), Some((TokenKind::Ident, "import"))) {
        return None;
    }
    match (at(end), at(end + 1)) {
        (Some((TokenKind::Ident, "as")), Some((TokenKind::Ident, name))) => Some((end + 1, name)),
        _ => match at(end - 1)? {
            (TokenKind::Ident, name) => Some((end - 1, name)),
            _ => None,
        },
    }
}

/// Whether some `data` reference stops at a package or above it (`data.pkg`, `data.pkg[k]`,
/// `data`): its rules could be read there without their names appearing.
fn reads_a_package_whole(modules: &[&[(TokenKind, String)]]) -> bool {
    let packages: Vec<Vec<String>> = modules.iter().filter_map(|tokens| package(tokens)).collect();
    modules.iter().any(|tokens| {
        data_references(tokens)
            .any(|chain| packages.iter().any(|package| chain.len() <= package.len() && package.starts_with(&chain)))
    })
}

/// A module's package as its path (`package a.b` is `["a", "b"]`).
fn package(tokens: &[(TokenKind, String)]) -> Option<Vec<String>> {
    let at = tokens.iter().position(|(kind, text)| *kind == TokenKind::Ident && text == "package")?;
    let (first_kind, first) = tokens.get(at + 1)?;
    let (rest, _) = reference_chain(tokens.get(at + 2..).unwrap_or_default());
    (*first_kind == TokenKind::Ident).then(|| [vec![first.clone()], rest].concat())
}

/// The static chain of every `data` reference of a module (`data.a.b` is `["a", "b"]`, `data[x]`
/// is empty).
fn data_references(tokens: &[(TokenKind, String)]) -> impl Iterator<Item = Vec<String>> + '_ {
    tokens
        .iter()
        .enumerate()
        .filter(|(i, (kind, text))| *kind == TokenKind::Ident && text == "data" && !follows_dot(tokens, *i))
        .map(|(i, _)| reference_chain(tokens.get(i + 1..).unwrap_or_default()).0)
}

fn svidgate(peer: Result<&PeerIdentity, &PeerError>, identity: &IdentityOutcome) -> Value {
    let mut fields = Vec::new();
    match peer {
        Ok(p) => fields.push((
            &KEYS.peer,
            object(vec![
                (&KEYS.spiffe_id, p.spiffe_id.as_str().into()),
                (&KEYS.trust_domain, p.spiffe_id.trust_domain().into()),
                (&KEYS.path, p.spiffe_id.path().into()),
                (&KEYS.not_before, Value::from(p.not_before)),
                (&KEYS.not_after, Value::from(p.not_after)),
                (&KEYS.ttl_remaining_s, Value::from(p.ttl_remaining_s)),
            ]),
        )),
        Err(e) => fields.push((&KEYS.peer_error, Value::from(e.to_string()))),
    }
    if let Some(svid) = &identity.jwt_svid {
        let audience: Vec<Value> = svid.audience.iter().map(|aud| Value::from(aud.as_str())).collect();
        let mut jwt = vec![
            (&KEYS.spiffe_id, svid.spiffe_id.as_str().into()),
            (&KEYS.trust_domain, svid.spiffe_id.trust_domain().into()),
            (&KEYS.path, svid.spiffe_id.path().into()),
            (&KEYS.audience, Value::from(audience)),
            (&KEYS.expires_at, Value::from(svid.expires_at)),
            (&KEYS.key_id, svid.key_id.as_str().into()),
            (&KEYS.alg, svid.algorithm.name().into()),
        ];
        if let Some(iat) = svid.issued_at {
            jwt.push((&KEYS.issued_at, Value::from(iat)));
        }
        fields.push((&KEYS.jwt_svid, object(jwt)));
    }
    if let Some(caller) = &identity.upstream_identity {
        fields.push((&KEYS.caller, caller.as_str().into()));
        let source = match (identity.forwarded, &identity.jwt_svid) {
            (true, _) => "forwarded",
            (false, Some(_)) => "jwt_svid",
            (false, None) => "x509_svid",
        };
        fields.push((&KEYS.source, source.into()));
    }
    fields.push((&KEYS.forwarded, Value::from(identity.forwarded)));
    object(fields)
}

/// Envoy's ext_authz header map: lower-case names, repeated headers joined with ",", and the
/// header ext_authz sets in place of any the client sent.
fn header_map(headers: &HeaderList, set: Option<(&str, &str)>) -> Value {
    let mut map: BTreeMap<Value, Value> = BTreeMap::new();
    for (name, value) in headers.iter() {
        let key = Value::from(name);
        let joined = match map.get(&key).and_then(|v| v.as_string().ok()) {
            Some(prev) => format!("{prev},{value}"),
            None => value.to_owned(),
        };
        map.insert(key, Value::from(joined));
    }
    if let Some((name, value)) = set {
        map.insert(Value::from(name), Value::from(value));
    }
    Value::from(map)
}

/// `{"socketAddress": {"address": ip, "portValue": port}}` from `ip:port` or `[v6]:port`.
fn socket_address(address: Option<&str>) -> Value {
    let Some(address) = address else { return Value::new_object() };
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, port.parse::<u64>().ok()),
        _ => (address, None),
    };
    let mut fields = vec![(&KEYS.address, Value::from(host.trim_start_matches('[').trim_end_matches(']')))];
    if let Some(port) = port {
        fields.push((&KEYS.port_value, Value::from(port)));
    }
    object(vec![(&KEYS.socket_address, object(fields))])
}

/// As OPA's Envoy plugin (`crate::path::parsed_path`); a path it cannot decode was refused
/// before the input is built (`crate::path::check_input`).
fn parsed_path(path: &str) -> Value {
    let segments = crate::path::parsed_path(path).unwrap_or_default();
    Value::from(segments.into_iter().map(Value::from).collect::<Vec<_>>())
}

/// As Go's `url.ParseQuery`: every key maps to the list of its decoded values.
fn parsed_query(query: &str) -> Value {
    let pairs = crate::path::parsed_query(query).unwrap_or_default();
    super::body::lists(pairs.into_iter().map(|(key, value)| (key, Value::from(value))).collect())
}

fn opt_str(value: Option<&str>) -> Value {
    value.map_or_else(|| Value::from(""), Value::from)
}

fn object(fields: Vec<(&Value, Value)>) -> Value {
    Value::from(fields.into_iter().map(|(k, v)| (k.clone(), v)).collect::<BTreeMap<_, _>>())
}
