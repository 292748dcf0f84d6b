// Copyright (c) Microsoft Corporation.
// Licensed under the MIT License.
#![allow(clippy::as_conversions)]

use crate::ast::{Expr, Ref};
use crate::builtins;
use crate::builtins::utils::{enforce_limit, ensure_args_count, ensure_numeric, ensure_string};
use crate::lexer::Span;
use crate::value::Value;
use crate::*;

use anyhow::{bail, Result};
use regex::{Regex, RegexBuilder};

// ---------------------------------------------------------------------------
// Compiled-regex cache (feature = "cache")
//
// When enabled, compiled Regex objects are stored in a bounded LRU cache
// protected by a Mutex (parking_lot when std, spin when no_std).
// The capacity is configurable at runtime
// via regorus::cache::configure().
// ---------------------------------------------------------------------------

/// Maximum compiled NFA size (in bytes) for a regex pattern.
/// This bounds both compilation time and match-time cost by limiting the
/// automaton's structural complexity. At 100 KiB, every real-world policy
/// pattern (IPv4, hostname, semver, UUID, image-digest, CIDR, etc.) compiles
/// comfortably, while adversarial patterns that would otherwise cause
/// expensive DFA construction are rejected at compile time.
const REGEX_SIZE_LIMIT: usize = 100 * 1024;

/// Compile a regex pattern with a size limit to bound resource consumption.
fn compile_regex(pattern: &str) -> core::result::Result<Regex, regex::Error> {
    let pattern = re2_syntax(pattern);
    if !re2_repeats_valid(&pattern) {
        return Err(regex::Error::Syntax("invalid repeat count (RE2 allows 1000)".into()));
    }
    RegexBuilder::new(&pattern).size_limit(REGEX_SIZE_LIMIT).build()
}

/// RE2's (Go's `regexp/syntax`) repeat-size rule, which the regex crate does not have: a counted
/// repeat (`x{n}`, `x{n,}`, `x{n,m}`) may not exceed 1000, nor may counted repeats nested in it
/// multiply past 1000 (`(a{100}){100}`), as Go's `repeatIsValid` computes. svidgate patch.
fn re2_repeats_valid(pattern: &str) -> bool {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};

    fn counted(kind: &RepetitionKind) -> Option<(u32, Option<u32>)> {
        match kind {
            RepetitionKind::Range(RepetitionRange::Exactly(m)) => Some((*m, Some(*m))),
            RepetitionKind::Range(RepetitionRange::AtLeast(m)) => Some((*m, None)),
            RepetitionKind::Range(RepetitionRange::Bounded(a, b)) => Some((*a, Some(*b))),
            _ => None,
        }
    }
    // Go's repeatIsValid(re, n).
    fn within(ast: &Ast, mut n: u32) -> bool {
        match ast {
            Ast::Repetition(rep) => {
                if let Some((min, max)) = counted(&rep.op.kind) {
                    let m = max.unwrap_or(min);
                    if max == Some(0) {
                        return true;
                    }
                    if m > n {
                        return false;
                    }
                    if m > 0 {
                        n /= m;
                    }
                }
                within(&rep.ast, n)
            }
            Ast::Group(group) => within(&group.ast, n),
            Ast::Concat(concat) => concat.asts.iter().all(|a| within(a, n)),
            Ast::Alternation(alt) => alt.asts.iter().all(|a| within(a, n)),
            _ => true,
        }
    }
    // Go checks from every counted repeat of at least 2, with n = 1000.
    fn every_repeat(ast: &Ast) -> bool {
        match ast {
            Ast::Repetition(rep) => {
                let checked = match counted(&rep.op.kind) {
                    Some((min, max)) if min > 1000 || max.is_some_and(|m| m > 1000) => false,
                    Some((min, max)) if min >= 2 || max.is_some_and(|m| m >= 2) => within(ast, 1000),
                    _ => true,
                };
                checked && every_repeat(&rep.ast)
            }
            Ast::Group(group) => every_repeat(&group.ast),
            Ast::Concat(concat) => concat.asts.iter().all(every_repeat),
            Ast::Alternation(alt) => alt.asts.iter().all(every_repeat),
            _ => true,
        }
    }
    // A pattern the parser refuses is reported by the compile that follows.
    regex_syntax::ast::parse::Parser::new().parse(pattern).map_or(true, |ast| every_repeat(&ast))
}

/// Whether compiling failed only because this build leaves out a Unicode table (the regex
/// crate's unicode-gencat, unicode-script, ... features), not because the pattern is invalid.
fn unicode_unavailable(error: &regex::Error) -> bool {
    let regex::Error::Syntax(message) = error else { return false };
    [
        "Unicode property not found",
        "Unicode property value not found",
        "Unicode-aware Perl class not found",
        "Unicode-aware case insensitivity matching is not available",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Rewrites an RE2 pattern (OPA's regex dialect, Go's `regexp`) into the regex crate's syntax with
/// the same meaning where the two differ:
///
/// - `\d`, `\w`, `\s` and their negations are ASCII-only in RE2 (`[0-9]`, `[0-9A-Za-z_]`,
///   `[\t\n\f\r ]`), Unicode-aware in the regex crate: `\d` would accept `٣`;
/// - `\b` and `\B` are ASCII word boundaries in RE2;
/// - inside a character class, RE2 reads `[` (other than `[:name:]`), `&` and `~` as literals, where
///   the regex crate reads nested classes and the set operations `&&`, `~~`.
///
/// `\p{..}` and `\P{..}` classes are refused (an evaluation error), in every build alike.
/// Everything else (flags such as `(?i)` with Unicode case folding, repetitions, groups) means
/// the same in both and is kept as written; what RE2 refuses and the regex crate
/// accepts (look-around is refused by both) stays an error or a match as the regex crate decides.
fn re2_syntax(pattern: &str) -> alloc::borrow::Cow<'_, str> {
    if !pattern.contains(['\\', '[']) {
        return alloc::borrow::Cow::Borrowed(pattern);
    }
    let mut out = alloc::string::String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let ascii = match (next, in_class) {
                    ('d', false) => "[0-9]",
                    ('D', false) => "[^0-9]",
                    ('w', false) => "[0-9A-Za-z_]",
                    ('W', false) => "[^0-9A-Za-z_]",
                    ('s', false) => "[\\t\\n\\f\\r ]",
                    ('S', false) => "[^\\t\\n\\f\\r ]",
                    ('b', false) => "(?-u:\\b)",
                    ('B', false) => "(?-u:\\B)",
                    ('d', true) => "0-9",
                    ('w', true) => "0-9A-Za-z_",
                    ('s', true) => "\\t\\n\\f\\r ",
                    ('D', true) => "[^0-9]",
                    ('W', true) => "[^0-9A-Za-z_]",
                    ('S', true) => "[^\\t\\n\\f\\r ]",
                    // Unicode classes need tables a lean build leaves out and a fuller one links
                    // in: refused in every build alike (an error, see `unicode_unavailable`), so
                    // that a policy behaves the same in the module and in tools and tests.
                    ('p' | 'P', _) => {
                        // Skip the class name (`\pL` or `\p{Greek}`).
                        if chars.next() == Some('{') {
                            chars.by_ref().take_while(|&c| c != '}').for_each(drop);
                        }
                        "\\p{svidgate-unicode-classes-unavailable}"
                    }
                    _ => {
                        out.push('\\');
                        out.push(next);
                        continue;
                    }
                };
                out.push_str(ascii);
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                // A `]` right after the opening bracket is a literal in both dialects.
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            '[' if chars.peek() == Some(&':') => {
                // `[:alpha:]` inside a class: ASCII in both dialects; copied up to `:]`.
                out.push('[');
                while let Some(c) = chars.next() {
                    out.push(c);
                    if c == ':' && chars.peek() == Some(&']') {
                        out.push(']');
                        chars.next();
                        break;
                    }
                }
            }
            '[' | '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    alloc::borrow::Cow::Owned(out)
}

/// Compile a regex pattern, using the cache when the `cache` feature
/// is enabled and falling back to direct compilation otherwise.
fn get_or_compile_regex(pattern: &str) -> core::result::Result<Regex, regex::Error> {
    #[cfg(feature = "cache")]
    {
        {
            let mut cache = crate::cache::REGEX_CACHE.lock();
            if let Some(re) = cache.get(pattern) {
                return Ok(re.clone());
            }
        }
        let re = compile_regex(pattern)?;
        {
            let mut cache = crate::cache::REGEX_CACHE.lock();
            cache.put(alloc::string::String::from(pattern), re.clone());
            Ok(re)
        }
    }
    #[cfg(not(feature = "cache"))]
    {
        compile_regex(pattern)
    }
}

/// Compile a regex for use in a builtin function.
///
/// - `CompiledTooBig` is raised as [`LimitError::RegexSizeLimitExceeded`] so
///   that it propagates as a hard error even in non-strict mode.
/// - Syntax errors produce a span-attached "invalid regex" error that the
///   evaluator may swallow to `Undefined` in non-strict mode (OPA-compatible).
fn compile_regex_for_builtin(span: &Span, pattern: &str) -> Result<Regex> {
    get_or_compile_regex(pattern).map_err(|e| match e {
        regex::Error::CompiledTooBig(_) => {
            anyhow::Error::new(crate::utils::limits::LimitError::RegexSizeLimitExceeded {
                limit: REGEX_SIZE_LIMIT,
            })
        }
        e if unicode_unavailable(&e) => {
            anyhow::Error::new(crate::utils::limits::LimitError::RegexUnicodeUnavailable)
        }
        _ => anyhow::anyhow!(span.error("invalid regex")),
    })
}

pub fn register(m: &mut builtins::BuiltinsMap<&'static str, builtins::BuiltinFcn>) {
    m.insert(
        "regex.find_all_string_submatch_n",
        (find_all_string_submatch_n, 3),
    );
    m.insert("regex.find_n", (find_n, 3));
    // TODO: m.insert("regex.globs_match", (globs_match, 2));
    m.insert("regex.is_valid", (is_valid, 1));
    m.insert("regex.match", (regex_match, 2));
    m.insert("regex.replace", (regex_replace, 3));
    m.insert("regex.split", (regex_split, 2));
    m.insert("regex.template_match", (regex_template_match, 4));
}

fn find_all_string_submatch_n(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> Result<Value> {
    let name = "regex.find_all_string_submatch_n";
    ensure_args_count(span, name, params, args, 3)?;

    let pattern = ensure_string(name, &params[0], &args[0])?;
    let value = ensure_string(name, &params[1], &args[1])?;
    let n = ensure_numeric(name, &params[2], &args[2])?;

    let re = compile_regex_for_builtin(params[0].span(), &pattern)?;

    if !n.is_integer() {
        bail!(params[2].span().error("n must be an integer"));
    }

    let n = match n.as_i64() {
        Some(n) if n < 0 => usize::MAX,
        Some(n) => n as usize,
        None => usize::MAX,
    };

    Ok(Value::from_array(
        re.captures_iter(&value)
            .map(|capture| {
                let groups = capture
                    .iter()
                    .map(|group| {
                        let value = Value::String(match group {
                            Some(s) => s.as_str().into(),
                            _ => "".into(),
                        });
                        // Guard match accumulation while adding each capture group.
                        enforce_limit()?;
                        Ok(value)
                    })
                    .collect::<Result<Vec<Value>>>()?;
                let array = Value::from_array(groups);
                // Guard outer match accumulation as nested arrays grow.
                enforce_limit()?;
                Ok(array)
            })
            .take(n)
            .collect::<Result<Vec<Value>>>()?,
    ))
}

fn find_n(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "regex.find_n";
    ensure_args_count(span, name, params, args, 3)?;

    let pattern = ensure_string(name, &params[0], &args[0])?;
    let value = ensure_string(name, &params[1], &args[1])?;
    let n = ensure_numeric(name, &params[2], &args[2])?;

    let re = compile_regex_for_builtin(params[0].span(), &pattern)?;

    if !n.is_integer() {
        bail!(params[2].span().error("n must be an integer"));
    }

    let n = match n.as_i64() {
        Some(n) if n < 0 => usize::MAX,
        Some(n) => n as usize,
        None => usize::MAX,
    };

    Ok(Value::from_array(
        re.find_iter(&value)
            .map(|m| {
                let value = Value::String(m.as_str().into());
                // Guard match accumulation while pushing each substring.
                enforce_limit()?;
                Ok(value)
            })
            .take(n)
            .collect::<Result<Vec<Value>>>()?,
    ))
}

fn is_valid(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "regex.is_valid";
    ensure_args_count(span, name, params, args, 1)?;
    let pattern = match ensure_string(name, &params[0], &args[0]) {
        Ok(p) => p,
        Err(_) => return Ok(Value::Bool(false)),
    };
    match get_or_compile_regex(&pattern) {
        Ok(_) => Ok(Value::Bool(true)),
        // Size-limit exceeded is a resource-limit violation; propagate as hard error.
        Err(regex::Error::CompiledTooBig(_)) => Err(anyhow::Error::new(
            crate::utils::limits::LimitError::RegexSizeLimitExceeded {
                limit: REGEX_SIZE_LIMIT,
            },
        )),
        Err(e) if unicode_unavailable(&e) => Err(anyhow::Error::new(
            crate::utils::limits::LimitError::RegexUnicodeUnavailable,
        )),
        // Syntax errors mean the pattern is genuinely invalid.
        Err(_) => Ok(Value::Bool(false)),
    }
}

pub fn regex_match(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> Result<Value> {
    let name = "regex.match";
    ensure_args_count(span, name, params, args, 2)?;
    let pattern = ensure_string(name, &params[0], &args[0])?;
    let value = ensure_string(name, &params[1], &args[1])?;

    let re = compile_regex_for_builtin(params[0].span(), &pattern)?;
    Ok(Value::Bool(re.is_match(&value)))
}

fn regex_replace(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> Result<Value> {
    let name = "regex.replace";
    ensure_args_count(span, name, params, args, 3)?;

    let s = ensure_string(name, &params[0], &args[0])?;
    let pattern = ensure_string(name, &params[1], &args[1])?;
    let value = ensure_string(name, &params[2], &args[2])?;

    let re = match get_or_compile_regex(&pattern) {
        Ok(p) => p,
        Err(regex::Error::CompiledTooBig(_)) => {
            return Err(anyhow::Error::new(
                crate::utils::limits::LimitError::RegexSizeLimitExceeded {
                    limit: REGEX_SIZE_LIMIT,
                },
            ));
        }
        Err(e) if unicode_unavailable(&e) => {
            return Err(anyhow::Error::new(
                crate::utils::limits::LimitError::RegexUnicodeUnavailable,
            ));
        }
        // TODO: This behavior is due to OPA test not raising error. Should we raise error?
        _ => return Ok(Value::Undefined),
    };

    Ok(Value::String(re.replace_all(&s, value.as_ref()).into()))
}

fn regex_split(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "regex.split";
    ensure_args_count(span, name, params, args, 2)?;
    let pattern = ensure_string(name, &params[0], &args[0])?;
    let value = ensure_string(name, &params[1], &args[1])?;

    let re = compile_regex_for_builtin(params[0].span(), &pattern)?;
    // Go's `(*Regexp).Split(s, -1)`: an empty match at the start yields no piece, and nothing
    // follows a match that ends the string. svidgate patch.
    let mut pieces = Vec::new();
    let (mut beg, mut end) = (0, 0);
    for m in re.find_iter(&value) {
        end = m.start();
        if m.end() != 0 {
            pieces.push(Value::String(value.get(beg..end).unwrap_or_default().into()));
            // Guard output accumulation as each split segment is emitted.
            enforce_limit()?;
        }
        beg = m.end();
    }
    if end != value.len() {
        pieces.push(Value::String(value.get(beg..).unwrap_or_default().into()));
    }
    Ok(Value::from_array(pieces))
}

fn regex_template_match(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> Result<Value> {
    let name = "regex.template_match";
    ensure_args_count(span, name, params, args, 4)?;
    let template = ensure_string(name, &params[0], &args[0])?;
    let value = ensure_string(name, &params[1], &args[1])?;
    let delimiter_start = ensure_string(name, &params[2], &args[2])?;
    let delimiter_end = ensure_string(name, &params[3], &args[3])?;

    let delimiter_start = delimiter_start.as_ref();
    let delimiter_end = delimiter_end.as_ref();
    let mut template = template.as_ref();
    let mut value = value.as_ref();

    while let (Some(start), Some(end)) =
        (template.find(delimiter_start), template.find(delimiter_end))
    {
        if start >= end {
            return Ok(Value::Undefined);
        }
        // Match precesing literal (if any)
        if template[0..start] != value[0..start] {
            return Ok(Value::Bool(false));
        }

        // Fetch pattern, excluding delimiters.
        let re = compile_regex_for_builtin(
            params[0].span(),
            &template[start + delimiter_start.len()..end],
        )?;

        // Skip preceding literal in value.
        value = &value[start..];

        let m = match re.find(value) {
            Some(m) if m.start() == 0 => m,
            _ => return Ok(Value::Bool(false)),
        };
        // Skip match in string.
        value = &value[m.len()..];

        // Skip regex and delimiter in template.
        template = &template[end + delimiter_end.len()..];
    }

    // Ensure that ending literal matches.
    Ok(Value::Bool(template == value))
}
