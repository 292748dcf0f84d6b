//! The decision cache: a policy whose decision is a function of a few request facts (the
//! principal, the method, the path, chosen headers) is evaluated once per distinct set of
//! those facts and answered from memory after that.
//!
//! The key of an entrypoint is derived at compile time from every `input` reference of the
//! modules it can reach (the scan behind its [`InputPlan`](super::InputPlan)): each reference is
//! mapped to the request facts the input builds that part from. An entrypoint gets no cache when
//! a reference can see a value that differs per request (`attributes.request.http.id`, the
//! request time, the whole header map, `svidgate` with its certificate lifetime,
//! other filters' metadata), reads the input whole, or when its modules call a builtin whose
//! result is not a function of its arguments (`time.now_ns`, `rand.intn`, `uuid.rfc4122`,
//! `opa.runtime`, `http.send`, `print`, ...). A policy that reads the body is cached for requests
//! without one (their body parts are all the same) and evaluates every request with one. The data is part of the compiled policy, and the
//! cache lives with it: a new bundle starts with an empty one. Only results are remembered, never
//! errors; a cached result is turned into a decision per request like any other (identity header,
//! dry run, decision id, decision log).

use std::cell::RefCell;
use std::borrow::Cow;
use std::collections::HashMap;

use regorus::Value;

use super::RequestFacts;

/// A key longer than this is looked up but not remembered: the cache's memory stays bounded by
/// `entries * (MAX_KEY_BYTES + result)` whatever the requests carry.
pub const MAX_KEY_BYTES: usize = 2048;

/// Where one part of the input the policy can read comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    /// One request fact.
    Is(Fact),
    /// The header map: one value per header named in the reference, the whole map otherwise.
    Headers,
    /// The same for every request.
    Constant,
    /// Differs per request (or per second): an entrypoint reading it gets no cache.
    PerRequest,
}

/// Every part [`build_input`](super::build_input) can build, and where it comes from. A test
/// builds an input with every part and checks each of its leaves is covered here.
const SOURCES: [(&[&str], Origin); 25] = [
    (&["attributes", "source", "principal"], Origin::Is(Fact::Principal)),
    (&["attributes", "source", "address"], Origin::Is(Fact::SourceAddress)),
    (&["attributes", "source", "certificate"], Origin::PerRequest),
    (&["attributes", "destination", "principal"], Origin::Is(Fact::DestinationPrincipal)),
    (&["attributes", "destination", "address"], Origin::Is(Fact::DestinationAddress)),
    (&["attributes", "request", "http", "id"], Origin::PerRequest),
    (&["attributes", "request", "http", "method"], Origin::Is(Fact::Header(Cow::Borrowed(":method")))),
    (&["attributes", "request", "http", "path"], Origin::Is(Fact::Header(Cow::Borrowed(":path")))),
    (&["attributes", "request", "http", "host"], Origin::Is(Fact::Header(Cow::Borrowed(":authority")))),
    (&["attributes", "request", "http", "scheme"], Origin::Is(Fact::Header(Cow::Borrowed(":scheme")))),
    (&["attributes", "request", "http", "protocol"], Origin::Is(Fact::Protocol)),
    (&["attributes", "request", "http", "headers"], Origin::Headers),
    (&["attributes", "request", "http", "body"], Origin::Is(Fact::Body)),
    (&["attributes", "request", "http", "size"], Origin::Is(Fact::Body)),
    (&["attributes", "request", "time"], Origin::PerRequest),
    (&["attributes", "metadataContext"], Origin::PerRequest),
    (&["attributes", "tlsSession"], Origin::Is(Fact::Sni)),
    (&["truncated_body"], Origin::Is(Fact::Body)),
    (&["parsed_body"], Origin::Is(Fact::Body)),
    (&["version"], Origin::Constant),
    (&["source_principal"], Origin::Is(Fact::Principal)),
    (&["parsed_path"], Origin::Is(Fact::Header(Cow::Borrowed(":path")))),
    (&["parsed_query"], Origin::Is(Fact::Header(Cow::Borrowed(":path")))),
    (&["svidgate"], Origin::PerRequest),
    // Not built (the body is `body`), but a reference must not make the key forget the body.
    (&["attributes", "request", "http", "raw_body"], Origin::Is(Fact::Body)),
];

/// Builtins whose result is not a function of their arguments (regorus's `must_cache` list, and
/// what OPA has beyond it), or that act outside the evaluation: a policy calling one is never cached.
pub const NOT_CACHEABLE_CALLS: [&str; 10] = [
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "opa.runtime",
    "http.send",
    "net.lookup_ip_addr",
    "io.jwt.decode_verify",
    "crypto.x509.parse_and_verify_certificates",
    "print",
    "trace",
];

/// One request fact in the key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fact {
    /// Every value of one request header, by lower-case name.
    Header(Cow<'static, str>),
    Principal,
    SourceAddress,
    DestinationAddress,
    DestinationPrincipal,
    Protocol,
    Sni,
    /// The body's parts: the same for every request without a body; a request with one is
    /// evaluated, never cached.
    Body,
}

/// The request facts an entrypoint's decision is a function of, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPlan {
    facts: Vec<Fact>,
}

impl KeyPlan {
    /// The key of an entrypoint whose modules reference the input through `chains` (static
    /// chains, each read whole below its end); `None` when one of them can see a value that
    /// differs per request.
    pub fn new(chains: &[Vec<String>]) -> Option<Self> {
        let mut facts = Vec::new();
        for chain in chains {
            for (path, source) in &SOURCES {
                let overlap = chain.iter().zip(path.iter()).all(|(a, b)| a == b);
                if !overlap {
                    continue;
                }
                let fact = match source {
                    Origin::Constant => continue,
                    Origin::PerRequest => return None,
                    // The whole map holds `x-request-id`; a header named in the reference is one fact.
                    Origin::Headers => Fact::Header(Cow::Owned(chain.get(path.len())?.clone())),
                    Origin::Is(fact) => fact.clone(),
                };
                if !facts.contains(&fact) {
                    facts.push(fact);
                }
            }
        }
        Some(Self { facts })
    }

    /// The key of one request: each fact length-prefixed, so that no two sets of facts share one;
    /// `None` for a request with a body when the policy reads the body (it is evaluated).
    pub fn key(&self, request: &RequestFacts<'_>) -> Option<Vec<u8>> {
        let mut key = Vec::with_capacity(64);
        let mut field = |value: Option<&str>| match value {
            None => key.push(0),
            Some(value) => {
                key.push(1);
                key.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
                key.extend_from_slice(value.as_bytes());
            }
        };
        for fact in &self.facts {
            match fact {
                // Every value, in order: the input joins repeated headers.
                Fact::Header(name) => {
                    for value in request.headers.values(name) {
                        field(Some(value));
                    }
                    field(None);
                }
                Fact::Principal => field(request.principal()),
                Fact::SourceAddress => field(request.source_address),
                Fact::DestinationAddress => field(request.destination_address),
                Fact::DestinationPrincipal => field(request.destination_principal),
                Fact::Protocol => field(request.protocol),
                Fact::Sni => field(request.tls_sni),
                // Without a body, the body's parts are those of `BodyInput::none()` whatever
                // the headers say.
                Fact::Body => {
                    if request.body.is_some_and(|body| !body.is_none()) {
                        return None;
                    }
                }
            }
        }
        Some(key)
    }
}

/// The results of one entrypoint by key, bounded: when full, it starts over empty (the hit and
/// miss counters show a working set larger than the bound). `R` is what is kept of a result:
/// the module keeps the decision read from it too (`super::Interpreted`).
#[derive(Debug)]
pub struct DecisionCache<R = Value> {
    plan: KeyPlan,
    capacity: usize,
    results: RefCell<HashMap<Box<[u8]>, R>>,
}

impl<R: Clone> DecisionCache<R> {
    /// A cache of at most `capacity` results keyed by `plan`.
    pub fn new(plan: KeyPlan, capacity: usize) -> Self {
        Self { plan, capacity, results: RefCell::new(HashMap::new()) }
    }

    /// The key of one request (`None`: the request is evaluated, not cached).
    pub fn key(&self, request: &RequestFacts<'_>) -> Option<Vec<u8>> {
        self.plan.key(request)
    }

    /// The result remembered for `key`.
    pub fn get(&self, key: &[u8]) -> Option<R> {
        self.results.try_borrow().ok()?.get(key).cloned()
    }

    /// Remembers `result` for `key` (not a key longer than [`MAX_KEY_BYTES`]).
    pub fn insert(&self, key: Vec<u8>, result: &R) {
        let Ok(mut results) = self.results.try_borrow_mut() else { return };
        if key.len() > MAX_KEY_BYTES {
            return;
        }
        if results.len() >= self.capacity {
            results.clear();
        }
        results.insert(key.into_boxed_slice(), result.clone());
    }

    /// How many results it holds.
    pub fn len(&self) -> usize {
        self.results.try_borrow().map_or(0, |results| results.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
