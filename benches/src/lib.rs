//! svidgate's benchmarks (`cargo xtask bench`; the README's Performance section has the figures):
//! criterion on the core and through the wasmtime harness, and the real-Envoy load benchmark
//! ([`envoy`], `cargo xtask bench envoy`). What they share: the seed's policy, the tool runtime's,
//! and typical requests.

pub mod envoy;

/// The seed's model-server policy, as in `policies/seed`.
pub const SEED_POLICY: &str = include_str!("../../policies/seed/authz.rego");
/// The seed policy's data (`allowed_callers`).
pub const SEED_DATA: &str = include_str!("../../policies/seed/data.json");

/// The headers of a typical call between services, a forged identity header among them.
pub const SERVICE_REQUEST: [(&str, &str); 7] = [
    (":method", "POST"),
    (":path", "/v1/generate"),
    (":authority", "model-server.ai.internal"),
    (":scheme", "https"),
    ("x-request-id", "3f1c9a2e-8d4b-4e0f-9a57-0c2d6e4b8f11"),
    ("content-type", "application/json"),
    ("x-forwarded-spiffe-id", "spiffe://ai.internal/ns/edge/sa/forged"),
];

/// The `policy` block of a plugin configuration that enforces the seed policy.
///
/// # Errors
/// If `policies/seed/data.json` is not JSON.
pub fn seed_policy_config() -> serde_json::Result<serde_json::Value> {
    Ok(serde_json::json!({"rego": SEED_POLICY, "data": serde_json::from_str::<serde_json::Value>(SEED_DATA)?}))
}

/// `policy` with the decision cache off (`decision_cache_entries: 0`): every request evaluated.
pub fn without_decision_cache(mut policy: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = policy.as_object_mut() {
        fields.insert("decision_cache_entries".into(), 0.into());
    }
    policy
}

/// The tool runtime's MCP policy, as in `policies/tool-runtime`: it reads the request body.
pub const TOOL_RUNTIME_POLICY: &str = include_str!("../../policies/tool-runtime/authz.rego");
/// Its data (`allowed_tools`).
pub const TOOL_RUNTIME_DATA: &str = include_str!("../../policies/tool-runtime/data.json");

/// An MCP `tools/call` as an agent sends it to the tool runtime (`POST /mcp`, JSON-RPC).
pub const MCP_CALL: &str = r#"{"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "/srv/reports/q3.md"}}}"#;

/// The headers of [`MCP_CALL`], a forged identity header among them.
pub const MCP_REQUEST: [(&str, &str); 7] = [
    (":method", "POST"),
    (":path", "/mcp"),
    (":authority", "tool-runtime.ai.internal"),
    (":scheme", "https"),
    ("x-request-id", "3f1c9a2e-8d4b-4e0f-9a57-0c2d6e4b8f11"),
    ("content-type", "application/json"),
    ("x-forwarded-spiffe-id", "spiffe://ai.internal/ns/edge/sa/forged"),
];

/// The `policy` block of a plugin configuration that enforces the tool runtime's policy.
///
/// # Errors
/// If `policies/tool-runtime/data.json` is not JSON.
pub fn tool_runtime_policy_config() -> serde_json::Result<serde_json::Value> {
    Ok(serde_json::json!({"rego": TOOL_RUNTIME_POLICY, "data": serde_json::from_str::<serde_json::Value>(TOOL_RUNTIME_DATA)?}))
}
