// Copyright (c) Microsoft Corporation.
// Licensed under the MIT License.

#![allow(clippy::pattern_type_mismatch)]

//! `glob.match` and `glob.quote_meta` as Go OPA v1.20.2 has them (topdown/glob.go), on a port of
//! the glob library OPA uses, gobwas/glob v0.2.3 (`glob/gobwas.rs`). svidgate patch: regorus
//! translated patterns to globset, whose `**`, classes and delimiters mean other things.

mod gobwas;

use crate::ast::{Expr, Ref};
use crate::builtins;
use crate::builtins::utils::{ensure_args_count, ensure_string};
use crate::lexer::Span;
use crate::utils::limits::LimitError;
use crate::value::Value;
use crate::*;

use alloc::sync::Arc;
use anyhow::{bail, Result};

pub use gobwas::Glob;

pub fn register(m: &mut builtins::BuiltinsMap<&'static str, builtins::BuiltinFcn>) {
    m.insert("glob.match", (glob_match, 3));
    m.insert("glob.quote_meta", (quote_meta, 1));
}

/// The compiled pattern, from the cache when there is one. An invalid pattern is a builtin
/// error, as in OPA; one past the port's nesting or length bounds an error that propagates.
fn make_glob(pattern: &str, delimiters: &[gobwas::Rune], span: &Span) -> Result<Arc<Glob>> {
    // Unambiguous: the number of delimiters, then the delimiters, then the pattern.
    #[cfg(feature = "cache")]
    let key = {
        let mut key = alloc::format!("{}:", delimiters.len());
        key.extend(delimiters.iter().filter_map(|&d| char::from_u32(d)));
        key.push_str(pattern);
        key
    };
    #[cfg(feature = "cache")]
    {
        let mut cache = crate::cache::GLOB_CACHE.lock();
        if let Some(glob) = cache.get(&key) {
            return Ok(glob.clone());
        }
    }
    let glob = match Glob::compile(pattern, delimiters) {
        Ok(glob) => Arc::new(glob),
        Err(gobwas::CompileError::Invalid(message)) => {
            bail!(span.error(format!("glob.match: {message}").as_str()))
        }
        Err(gobwas::CompileError::TooComplex(reason)) => {
            return Err(anyhow::Error::new(LimitError::NotAsOpa(reason)))
        }
    };
    #[cfg(feature = "cache")]
    {
        crate::cache::GLOB_CACHE.lock().put(key, glob.clone());
    }
    Ok(glob)
}

fn glob_match(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "glob.match";
    ensure_args_count(span, name, params, args, 3)?;
    let ([pattern_param, delimiters_param, match_param], [pattern, delimiters, value]) = (params, args) else {
        bail!(span.error(format!("`{name}` expects 3 arguments").as_str()));
    };

    let pattern = ensure_string(name, pattern_param, pattern)?;

    // OPA: null is no delimiter at all; an array holds one-rune strings, and [] means ["."].
    let delimiters: Vec<gobwas::Rune> = match delimiters {
        Value::Null => Vec::new(),
        Value::Array(items) => {
            let mut runes = Vec::with_capacity(items.len());
            for item in items.iter() {
                let mut chars = match item {
                    Value::String(s) => s.chars(),
                    _ => bail!(delimiters_param
                        .span()
                        .error(format!("`{name}` expects an array of strings").as_str())),
                };
                match (chars.next(), chars.next()) {
                    (Some(c), None) => runes.push(gobwas::Rune::from(c)),
                    _ => bail!(delimiters_param
                        .span()
                        .error("delimiters must be single characters")),
                }
            }
            if runes.is_empty() {
                runes.push(gobwas::Rune::from('.'));
            }
            runes
        }
        _ => bail!(delimiters_param
            .span()
            .error(format!("`{name}` expects an array or null as delimiters").as_str())),
    };

    let value = ensure_string(name, match_param, value)?;

    let glob = make_glob(&pattern, &delimiters, pattern_param.span())?;
    match glob.matches(&value) {
        Ok(matched) => Ok(Value::Bool(matched)),
        // gobwas/glob panics here (a slice out of range), which stops OPA's evaluation.
        Err(gobwas::GoPanic) => Err(anyhow::Error::new(LimitError::NotAsOpa(
            "glob.match: OPA's glob library (gobwas/glob v0.2.3) panics on this pattern and string",
        ))),
    }
}

/// gobwas/glob's `QuoteMeta`: a `\` before each of `*?\[]{}`; the pattern is not checked.
fn quote_meta(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "glob.quote_meta";
    ensure_args_count(span, name, params, args, 1)?;
    let ([param], [arg]) = (params, args) else {
        bail!(span.error(format!("`{name}` expects 1 argument").as_str()));
    };
    let pattern = ensure_string(name, param, arg)?;
    Ok(Value::String(gobwas::quote_meta(&pattern).into()))
}
