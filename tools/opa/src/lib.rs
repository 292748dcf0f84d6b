//! Real Go OPA, v1.20.2, through the C ABI of `libopabridge.so` (PyPI
//! `opa-golib-python-bindings` 0.4.4, the library its ctypes wrapper loads): a fresh engine per
//! policy, its modules and data added as OPA adds them, documents evaluated as OPA's Envoy plugin
//! evaluates its `path`. The differential suite (tests/differential) and `svidgate test --opa`
//! use it.

#![allow(unsafe_code, reason = "the only way to call a C library; each call is a documented C ABI function")]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use libloading::{Library, Symbol};
use serde_json::Value as Json;

/// What one evaluation gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The document's value.
    Value(Json),
    /// The document is undefined.
    Undefined,
    /// Evaluation failed (a conflict, a builtin error in strict places).
    Error(String),
}

impl Outcome {
    /// A builtin function failed (or refused an operand's type): the library evaluates with `StrictBuiltinErrors`, where OPA's
    /// default (and the Envoy plugin's) leaves the failing expression undefined instead.
    pub fn is_builtin_error(&self) -> bool {
        matches!(self, Self::Error(message) if message.contains("eval_builtin_error") || message.contains("eval_type_error"))
    }
}

/// Where `cargo xtask test` puts the library; `SVIDGATE_OPA_LIB` overrides it.
pub fn library_path() -> PathBuf {
    std::env::var_os("SVIDGATE_OPA_LIB").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/opa/opa_bindings/libopabridge.so"),
        PathBuf::from,
    )
}

/// Loads the library from `path` instead of [`library_path`], before the first engine is made.
///
/// # Errors
/// If an engine was made already, from another path.
pub fn use_library(path: &Path) -> Result<()> {
    let chosen = LIBRARY_PATH.get_or_init(|| path.to_owned());
    if chosen != path {
        bail!("Go OPA is loaded from {} already", chosen.display());
    }
    Ok(())
}

static LIBRARY_PATH: OnceLock<PathBuf> = OnceLock::new();

fn library() -> Result<&'static Library> {
    static LIBRARY: OnceLock<std::result::Result<Library, String>> = OnceLock::new();
    let loaded = LIBRARY.get_or_init(|| {
        let path = LIBRARY_PATH.get_or_init(library_path);
        // SAFETY: loading runs the Go runtime's initialisers, which have no preconditions.
        unsafe { Library::new(path) }
            .map_err(|e| format!("{}: {e} (`cargo xtask test` installs it; or set SVIDGATE_OPA_LIB)", path.display()))
    });
    loaded.as_ref().map_err(|e| anyhow::anyhow!("loading Go OPA: {e}"))
}

type New = unsafe extern "C" fn() -> u64;
type Destroy = unsafe extern "C" fn(u64);
type Free = unsafe extern "C" fn(*mut c_void);
type Add = unsafe extern "C" fn(u64, *const c_char, *const c_char) -> *mut c_char;
type Eval = unsafe extern "C" fn(u64, *const c_char, *const c_char, c_int, c_int) -> *mut c_char;

/// One OPA engine: policies and data, then evaluations.
pub struct Opa {
    lib: &'static Library,
    handle: u64,
}

impl Opa {
    /// A fresh engine.
    pub fn new() -> Result<Self> {
        let lib = library()?;
        // SAFETY: `OpaNew` takes nothing and returns an engine handle.
        let handle = unsafe { symbol::<New>(lib, b"OpaNew\0")?() };
        Ok(Self { lib, handle })
    }

    /// Adds one Rego module under `name`; a parse or compile error is returned as OPA words it.
    pub fn add_policy(&mut self, name: &str, source: &str) -> Result<()> {
        self.call_add(b"OpaAddPolicy\0", name, source).map(|_| ())
    }

    /// Deep-merges `data` at the root of OPA's data document.
    pub fn add_data(&mut self, data: &Json) -> Result<()> {
        self.call_add(b"OpaAddData\0", "", &data.to_string()).map(|_| ())
    }

    /// Compiles everything added so far, as OPA does before its first evaluation (adding a
    /// module only parses it): Ok, or OPA's compile errors.
    pub fn compile(&self) -> Result<()> {
        let query = CString::new("true")?;
        // SAFETY: the query is NUL-terminated and lives across the call; an empty input is none.
        let envelope = self.envelope(unsafe {
            symbol::<Eval>(self.lib, b"OpaEvalQuery\0")?(self.handle, query.as_ptr(), c"".as_ptr(), 0, 0)
        })?;
        if let Some(error) = envelope.get("error").filter(|e| !e.is_null()) {
            bail!("{}", error.get("message").and_then(Json::as_str).unwrap_or("OPA refused it"));
        }
        Ok(())
    }

    /// Evaluates `data.<path>` (slash- or dot-separated) for `input`.
    pub fn eval(&self, path: &str, input: &Json) -> Result<Outcome> {
        let path = CString::new(path.replace('/', "."))?;
        let input = CString::new(input.to_string())?;
        // SAFETY: both strings are NUL-terminated and live across the call; coverage and trace off.
        let envelope = match self.envelope(unsafe {
            symbol::<Eval>(self.lib, b"OpaEvalDocument\0")?(self.handle, path.as_ptr(), input.as_ptr(), 0, 0)
        }) {
            Ok(envelope) => envelope,
            // OPA cannot always serialise its own numbers (`to_number("1_000")`).
            Err(error) => return Ok(Outcome::Error(format!("{error:#}"))),
        };
        if let Some(error) = envelope.get("error").filter(|e| !e.is_null()) {
            return Ok(Outcome::Error(error.get("message").and_then(Json::as_str).unwrap_or_default().to_owned()));
        }
        let value = envelope.pointer("/result/0/expressions/0/value");
        Ok(value.map_or(Outcome::Undefined, |value| Outcome::Value(value.clone())))
    }

    fn call_add(&mut self, function: &[u8], path: &str, payload: &str) -> Result<Json> {
        let (path, payload) = (CString::new(path)?, CString::new(payload)?);
        // SAFETY: both strings are NUL-terminated and live across the call.
        let envelope =
            self.envelope(unsafe { symbol::<Add>(self.lib, function)?(self.handle, path.as_ptr(), payload.as_ptr()) })?;
        if let Some(error) = envelope.get("error").filter(|e| !e.is_null()) {
            bail!("{}", error.get("message").and_then(Json::as_str).unwrap_or("OPA refused it"));
        }
        Ok(envelope)
    }

    /// Reads and frees the JSON envelope a call returned.
    fn envelope(&self, raw: *mut c_char) -> Result<Json> {
        if raw.is_null() {
            bail!("OPA returned no envelope");
        }
        // SAFETY: a non-null return is a NUL-terminated string the library allocated; it is read
        // once, then given back to the library's free.
        let text = unsafe { CStr::from_ptr(raw) }.to_string_lossy().into_owned();
        // SAFETY: as above; the pointer is not used after this.
        unsafe { symbol::<Free>(self.lib, b"OpaFreeString\0")?(raw.cast()) };
        serde_json::from_str(&text).with_context(|| format!("OPA's envelope is not JSON: {text}"))
    }
}

impl Drop for Opa {
    fn drop(&mut self) {
        // SAFETY: the handle came from `OpaNew` and is destroyed once.
        if let Ok(destroy) = unsafe { symbol::<Destroy>(self.lib, b"OpaDestroy\0") } {
            unsafe { destroy(self.handle) };
        }
    }
}

/// # Safety
/// `T` must be the function's C signature.
unsafe fn symbol<T: Copy>(lib: &Library, name: &[u8]) -> Result<T> {
    // SAFETY: the caller names the signature.
    let symbol: Symbol<'_, T> = unsafe { lib.get(name) }.with_context(|| String::from_utf8_lossy(name).into_owned())?;
    Ok(*symbol)
}
