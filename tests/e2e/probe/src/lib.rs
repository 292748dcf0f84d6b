//! Answers every request with the properties Envoy exposes to a wasm filter, as JSON.
//!
//! Each property is reported as raw bytes: `{"hex": "...", "utf8": "..." | null}`, or `null` when
//! the host has none. The e2e test decodes them; nothing is interpreted here, so the recording
//! shows exactly what a filter reads.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// The properties recorded, as paths.
const PROPERTIES: &[&[&str]] = &[
    &["connection", "peer_certificate"],
    &["connection", "uri_san_peer_certificate"],
    &["connection", "sha256_peer_certificate_digest"],
    &["connection", "mtls"],
    &["connection", "uri_san_local_certificate"],
    &["connection", "subject_peer_certificate"],
    &["connection", "tls_version"],
    &["connection", "id"],
    &["source", "address"],
    &["source", "port"],
    &["destination", "address"],
    &["request", "protocol"],
    &["metadata"],
    &["metadata", "filter_metadata", "envoy.filters.http.jwt_authn"],
    &["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "sub"],
    &["xds", "route_name"],
    &["xds", "route_metadata"],
    &["xds", "route_metadata", "filter_metadata", "svidgate", "policy"],
];

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot) });
}}

struct ProbeRoot;

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }
}

struct Probe;

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let mut body = String::from("{");
        for (i, path) in PROPERTIES.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!("\n  \"{}\": ", path.join(".")));
            match proxy_wasm::hostcalls::get_property(path.to_vec()) {
                Err(status) => body.push_str(&format!("{{\"status\": \"{status:?}\"}}")),
                Ok(None) => body.push_str("null"),
                Ok(Some(bytes)) => {
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    let utf8 = match std::str::from_utf8(&bytes) {
                        Ok(text) => json_string(text),
                        Err(_) => "null".to_owned(),
                    };
                    body.push_str(&format!("{{\"hex\": \"{hex}\", \"utf8\": {utf8}}}"));
                }
            }
        }
        body.push_str("\n}\n");
        self.send_http_response(200, vec![("content-type", "application/json")], Some(body.as_bytes()));
        Action::Pause
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
