//! The JWT bundles and JWT-SVIDs minted by Python's `cryptography` (testdata/mint.py), for the
//! tests of validation here and of the request pipeline (filter/tests.rs).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The minted cases: `now`, `audience`, `caller`, `bundle`, `cases` (name, token, expect) and `bad_bundles`.
pub(crate) fn cases() -> Value {
    serde_json::from_str(include_str!("testdata/cases.json")).unwrap()
}

/// The clock the minted tokens are decided at.
pub(crate) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(cases()["now"].as_u64().unwrap())
}

/// The `authorization` value carrying the minted token of case `name`.
pub(crate) fn bearer(name: &str) -> String {
    let cases = cases();
    let case = cases["cases"].as_array().unwrap().iter().find(|case| case["name"] == name).unwrap();
    format!("Bearer {}", case["token"].as_str().unwrap())
}

/// A `jwt_svid` block for the minted audience with the minted bundle inline, `overrides` merged over it.
pub(crate) fn block(overrides: Value) -> Value {
    let cases = cases();
    let mut block = json!({"audiences": [cases["audience"]], "bundles": {"ai.internal": cases["bundle"]}});
    for (key, value) in overrides.as_object().unwrap() {
        block[key] = value.clone();
    }
    block
}
