// Added to regorus by svidgate (vendor/regorus/PATCHES.md #8); MIT License, as the crate.

//! Go's `fmt.Sprintf`, for the argument kinds OPA's `sprintf` hands it. svidgate patch.
//!
//! OPA converts each element of the argument array before calling `fmt.Sprintf`: an integer
//! to `int64` (or `*big.Int` beyond its range), a number with a fraction or an exponent to
//! `float64`, a string to `string`, and anything else to the `string` of its Rego text. This
//! module follows Go's `fmt` (flags, width, precision, verbs, `%!v(MISSING)`, `%!d(string=x)`,
//! `%!(EXTRA ...)`) and `strconv`'s number formatting for exactly those four kinds. What it does
//! not reproduce (argument indexes `%[1]d`, `*` widths, the `#` flag on floats and `%q`/`%U`
//! forms that quote a rune) is refused as [`Unsupported`], never approximated.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use num_bigint::BigInt;
use num_traits::Signed;

use super::go_is_print;

/// One argument as Go's `fmt` sees it after OPA's conversion.
pub(super) enum Arg {
    /// `int64`
    Int(i64),
    /// `*big.Int`
    Big(BigInt),
    /// `float64`
    Float(f64),
    /// `string`
    Str(String),
}

/// A format this implementation does not answer as Go would; the caller refuses the call.
#[derive(Debug)]
pub(super) struct Unsupported(pub &'static str);

/// Go's `fmt.fmtFlags` plus width and precision.
#[derive(Clone, Copy, Default)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    plus_v: bool,
    sharp_v: bool,
    wid: Option<usize>,
    prec: Option<usize>,
}

impl Flags {
    /// Zero padding applies only to the left.
    const fn zero_pad(&self) -> bool {
        self.zero && !self.minus
    }
}

/// Go's `tooLarge`: widths and precisions above this are "crazy long numbers".
const TOO_LARGE: usize = 1_000_000;

/// `fmt.Sprintf(format, args...)`.
pub(super) fn sprintf(format: &str, args: &[Arg]) -> Result<String, Unsupported> {
    let mut p = Printer { out: String::new(), f: Flags::default() };
    let bytes = format.as_bytes();
    let end = bytes.len();
    let mut arg_num = 0usize;
    let mut i = 0usize;
    while i < end {
        let last = i;
        while bytes.get(i).is_some_and(|&b| b != b'%') {
            i += 1;
        }
        // `%` is ASCII, so `last` and `i` are on character boundaries.
        p.out.push_str(format.get(last..i).unwrap_or_default());
        if i >= end {
            break;
        }
        i += 1;
        p.f = Flags::default();
        while let Some(&c) = bytes.get(i) {
            match c {
                b'#' => p.f.sharp = true,
                b'0' => p.f.zero = true,
                b'+' => p.f.plus = true,
                b'-' => p.f.minus = true,
                b' ' => p.f.space = true,
                _ => break,
            }
            i += 1;
        }
        match bytes.get(i) {
            Some(b'[') => return Err(Unsupported("explicit argument indexes")),
            Some(b'*') => return Err(Unsupported("`*` widths")),
            _ => {}
        }
        let (wid, next) = parse_num(bytes, i)?;
        p.f.wid = wid;
        i = next;
        if i + 1 < end && bytes.get(i) == Some(&b'.') {
            i += 1;
            match bytes.get(i) {
                Some(b'[') => return Err(Unsupported("explicit argument indexes")),
                Some(b'*') => return Err(Unsupported("`*` precisions")),
                _ => {}
            }
            let (prec, next) = parse_num(bytes, i)?;
            p.f.prec = Some(prec.unwrap_or(0));
            i = next;
        }
        if bytes.get(i) == Some(&b'[') {
            return Err(Unsupported("explicit argument indexes"));
        }
        let Some(verb) = format.get(i..).and_then(|rest| rest.chars().next()) else {
            p.out.push_str("%!(NOVERB)");
            break;
        };
        i += verb.len_utf8();
        if verb == '%' {
            p.out.push('%');
            continue;
        }
        let Some(arg) = args.get(arg_num) else {
            p.out.push_str("%!");
            p.out.push(verb);
            p.out.push_str("(MISSING)");
            continue;
        };
        if verb == 'v' {
            p.f.sharp_v = p.f.sharp;
            p.f.sharp = false;
            p.f.plus_v = p.f.plus;
            p.f.plus = false;
        }
        p.print_arg(arg, verb)?;
        arg_num += 1;
    }
    if let Some(extra) = args.get(arg_num..).filter(|extra| !extra.is_empty()) {
        p.f = Flags::default();
        p.out.push_str("%!(EXTRA ");
        for (n, arg) in extra.iter().enumerate() {
            if n > 0 {
                p.out.push_str(", ");
            }
            p.out.push_str(type_name(arg));
            p.out.push('=');
            p.print_arg(arg, 'v')?;
        }
        p.out.push(')');
    }
    Ok(p.out)
}

/// Go's `parsenum`: the decimal number at `start`, if any, and the index after it.
fn parse_num(bytes: &[u8], start: usize) -> Result<(Option<usize>, usize), Unsupported> {
    let mut num: Option<usize> = None;
    let mut i = start;
    while let Some(&c) = bytes.get(i).filter(|c| c.is_ascii_digit()) {
        let n = num.unwrap_or(0);
        if n > TOO_LARGE {
            return Err(Unsupported("widths or precisions above 1e6"));
        }
        num = Some(n * 10 + usize::from(c - b'0'));
        i += 1;
    }
    Ok((num, i))
}

const fn type_name(arg: &Arg) -> &'static str {
    match arg {
        Arg::Int(_) => "int64",
        Arg::Big(_) => "*big.Int",
        Arg::Float(_) => "float64",
        Arg::Str(_) => "string",
    }
}

struct Printer {
    out: String,
    f: Flags,
}

impl Printer {
    fn print_arg(&mut self, arg: &Arg, verb: char) -> Result<(), Unsupported> {
        if verb == 'T' {
            self.fmt_s(type_name(arg));
            return Ok(());
        }
        if verb == 'p' || verb == 'w' {
            if matches!(arg, Arg::Big(_)) {
                return Err(Unsupported("`%p` and `%w` of a big integer (Go prints its address or internals)"));
            }
            return self.bad_verb(arg, verb);
        }
        match arg {
            Arg::Float(v) => self.fmt_float(*v, verb, arg),
            Arg::Int(v) => self.fmt_int(*v, verb, arg),
            Arg::Str(s) => self.fmt_string(s, verb, arg),
            Arg::Big(b) => {
                self.fmt_big(b, verb);
                Ok(())
            }
        }
    }

    /// `%!verb(type=value)`, the value printed with `%v` under the same flags.
    fn bad_verb(&mut self, arg: &Arg, verb: char) -> Result<(), Unsupported> {
        self.out.push_str("%!");
        self.out.push(verb);
        self.out.push('(');
        self.out.push_str(type_name(arg));
        self.out.push('=');
        self.print_arg(arg, 'v')?;
        self.out.push(')');
        Ok(())
    }

    fn write_padding(&mut self, n: usize) {
        let pad = if self.f.zero_pad() { '0' } else { ' ' };
        self.out.extend(core::iter::repeat_n(pad, n));
    }

    /// Go's `fmt.pad`/`padString`: width counted in code points.
    fn pad(&mut self, s: &str) {
        let width = match self.f.wid {
            Some(w) if w > 0 => w.saturating_sub(s.chars().count()),
            _ => {
                self.out.push_str(s);
                return;
            }
        };
        if self.f.minus {
            self.out.push_str(s);
            self.write_padding(width);
        } else {
            self.write_padding(width);
            self.out.push_str(s);
        }
    }

    /// `pad` with zero padding switched off (Go does so for integers and runes).
    fn pad_spaces(&mut self, s: &str) {
        let zero = self.f.zero;
        self.f.zero = false;
        self.pad(s);
        self.f.zero = zero;
    }

    /// `truncateString`: the first `prec` code points, with a precision.
    fn truncate<'s>(&self, s: &'s str) -> &'s str {
        match self.f.prec {
            Some(prec) => s.char_indices().nth(prec).map_or(s, |(at, _)| s.get(..at).unwrap_or(s)),
            None => s,
        }
    }

    /// `fmtS`: truncated to the precision in code points, then padded.
    fn fmt_s(&mut self, s: &str) {
        let s = self.truncate(s);
        self.pad(s);
    }

    fn fmt_string(&mut self, s: &str, verb: char, arg: &Arg) -> Result<(), Unsupported> {
        match verb {
            'v' if self.f.sharp_v => self.fmt_q(s),
            'v' | 's' => {
                self.fmt_s(s);
                Ok(())
            }
            'x' => {
                self.fmt_sx(s, b"0123456789abcdefx");
                Ok(())
            }
            'X' => {
                self.fmt_sx(s, b"0123456789ABCDEFX");
                Ok(())
            }
            'q' => self.fmt_q(s),
            _ => self.bad_verb(arg, verb),
        }
    }

    /// `fmtQ` without `+` and `#`: `strconv.Quote`, padded.
    fn fmt_q(&mut self, s: &str) -> Result<(), Unsupported> {
        if self.f.plus || self.f.sharp {
            return Err(Unsupported("`%+q` and `%#q`"));
        }
        let quoted = go_quote(self.truncate(s));
        self.pad(&quoted);
        Ok(())
    }

    /// `fmtSbx`: the string's bytes in hex.
    fn fmt_sx(&mut self, s: &str, digits: &[u8; 17]) {
        let bytes = s.as_bytes();
        let length = self.f.prec.map_or(bytes.len(), |p| p.min(bytes.len()));
        let mut width = 2 * length;
        if width == 0 {
            if let Some(w) = self.f.wid {
                self.write_padding(w);
            }
            return;
        }
        if self.f.space {
            if self.f.sharp {
                width *= 2;
            }
            width += length - 1;
        } else if self.f.sharp {
            width += 2;
        }
        let pad = self.f.wid.filter(|&w| w > width).map(|w| w - width);
        if let Some(n) = pad.filter(|_| !self.f.minus) {
            self.write_padding(n);
        }
        let hex = |b: u8| char::from(digits.get(usize::from(b & 0xf)).copied().unwrap_or(b'?'));
        let x = char::from(digits.get(16).copied().unwrap_or(b'x'));
        if self.f.sharp {
            self.out.push('0');
            self.out.push(x);
        }
        for (n, &b) in bytes.iter().take(length).enumerate() {
            if self.f.space && n > 0 {
                self.out.push(' ');
                if self.f.sharp {
                    self.out.push('0');
                    self.out.push(x);
                }
            }
            self.out.push(hex(b >> 4));
            self.out.push(hex(b));
        }
        if let Some(n) = pad.filter(|_| self.f.minus) {
            self.write_padding(n);
        }
    }

    fn fmt_int(&mut self, v: i64, verb: char, arg: &Arg) -> Result<(), Unsupported> {
        let (base, upper) = match verb {
            'v' | 'd' => (10, false),
            'b' => (2, false),
            'o' | 'O' => (8, false),
            'x' => (16, false),
            'X' => (16, true),
            'c' => {
                let c = u32::try_from(v).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
                self.pad_spaces(c.encode_utf8(&mut [0; 4]));
                return Ok(());
            }
            'U' => return self.fmt_unicode(v),
            'q' => {
                if self.f.plus {
                    return Err(Unsupported("`%+q`"));
                }
                let c = u32::try_from(v).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
                let quoted = go_quote_with(c.encode_utf8(&mut [0; 4]), '\'');
                self.pad(&quoted);
                return Ok(());
            }
            _ => return self.bad_verb(arg, verb),
        };
        let negative = v < 0;
        let digits = unsigned_digits(v.unsigned_abs(), base, upper);
        let mut prec = 0;
        if let Some(p) = self.f.prec {
            prec = p;
            if p == 0 && v == 0 {
                // Precision 0 and value 0 print nothing, but the padding.
                self.pad_spaces("");
                return Ok(());
            }
        } else if let Some(w) = self.f.wid.filter(|_| self.f.zero_pad()) {
            prec = w;
            if negative || self.f.plus || self.f.space {
                prec = prec.saturating_sub(1);
            }
        }
        let mut s = String::new();
        if negative {
            s.push('-');
        } else if self.f.plus {
            s.push('+');
        } else if self.f.space {
            s.push(' ');
        }
        if verb == 'O' {
            s.push_str("0o");
        }
        if self.f.sharp {
            match base {
                2 => s.push_str("0b"),
                16 => s.push_str(if upper { "0X" } else { "0x" }),
                // An octal `#` adds a leading 0 unless there already is one.
                8 if prec <= digits.len() && !digits.starts_with('0') => s.push('0'),
                _ => {}
            }
        }
        s.extend(core::iter::repeat_n('0', prec.saturating_sub(digits.len())));
        s.push_str(&digits);
        self.pad_spaces(&s);
        Ok(())
    }

    /// `fmtUnicode` without `#`: `U+` and at least four upper-case hex digits.
    fn fmt_unicode(&mut self, v: i64) -> Result<(), Unsupported> {
        if self.f.sharp {
            return Err(Unsupported("`%#U`"));
        }
        let digits = unsigned_digits(u64::from_ne_bytes(v.to_ne_bytes()), 16, true);
        let prec = self.f.prec.filter(|&p| p > 4).unwrap_or(4);
        let mut s = String::from("U+");
        s.extend(core::iter::repeat_n('0', prec.saturating_sub(digits.len())));
        s.push_str(&digits);
        self.pad_spaces(&s);
        Ok(())
    }

    /// `(*big.Int).Format`.
    fn fmt_big(&mut self, x: &BigInt, verb: char) {
        let (base, prefix) = match verb {
            'b' => (2, if self.sharp() { "0b" } else { "" }),
            'o' => (8, if self.sharp() { "0" } else { "" }),
            'O' => (8, "0o"),
            'd' | 's' | 'v' => (10, ""),
            'x' => (16, if self.sharp() { "0x" } else { "" }),
            'X' => (16, if self.sharp() { "0X" } else { "" }),
            _ => {
                self.out.push_str(&format!("%!{verb}(big.Int={x})"));
                return;
            }
        };
        let sign = if x.is_negative() {
            "-"
        } else if self.f.plus || self.f.plus_v {
            "+"
        } else if self.f.space {
            " "
        } else {
            ""
        };
        let mut digits = x.abs().to_str_radix(base);
        if verb == 'X' {
            digits = digits.to_uppercase();
        }
        let mut zeros = 0;
        if let Some(p) = self.f.prec {
            if digits.len() < p {
                zeros = p - digits.len();
            } else if digits == "0" && p == 0 {
                return;
            }
        }
        let length = sign.len() + prefix.len() + zeros + digits.len();
        let (mut left, mut right) = (0, 0);
        if let Some(d) = self.f.wid.filter(|&w| length < w).map(|w| w - length) {
            if self.f.minus {
                right = d;
            } else if self.f.zero && self.f.prec.is_none() {
                zeros = d;
            } else {
                left = d;
            }
        }
        self.out.extend(core::iter::repeat_n(' ', left));
        self.out.push_str(sign);
        self.out.push_str(prefix);
        self.out.extend(core::iter::repeat_n('0', zeros));
        self.out.push_str(&digits);
        self.out.extend(core::iter::repeat_n(' ', right));
    }

    const fn sharp(&self) -> bool {
        self.f.sharp || self.f.sharp_v
    }

    fn fmt_float(&mut self, v: f64, verb: char, arg: &Arg) -> Result<(), Unsupported> {
        let (verb, default_prec) = match verb {
            'v' => ('g', None),
            'b' | 'g' | 'G' | 'x' | 'X' => (verb, None),
            'f' | 'F' | 'e' | 'E' => (verb, Some(6)),
            _ => return self.bad_verb(arg, verb),
        };
        let prec = self.f.prec.or(default_prec);
        let mut num = strconv_format_float(v, verb, prec)?;
        if self.f.sharp && verb != 'b' {
            num = sharp_float(num, verb, prec);
        }
        // `num` carries its sign; Go writes "+" in front of a positive number first.
        if !num.starts_with('-') {
            num.insert(0, if self.f.space && !self.f.plus { ' ' } else { '+' });
        }
        if self.f.plus || !num.starts_with('+') {
            let chars = num.chars().count();
            if let Some(w) = self.f.wid.filter(|&w| self.f.zero_pad() && w > chars) {
                let (sign, digits) = num.split_at(1);
                self.out.push_str(sign);
                self.write_padding(w - chars);
                self.out.push_str(digits);
                return Ok(());
            }
            self.pad(&num);
            return Ok(());
        }
        self.pad(num.get(1..).unwrap_or_default());
        Ok(())
    }
}

/// The `#` flag on a float (Go's `fmtFloat`): always a decimal point, and `%g`/`%x` keep their
/// trailing zeros up to the precision (6 when none is given).
fn sharp_float(num: String, verb: char, prec: Option<usize>) -> String {
    let mut digits: i64 = match verb {
        'g' | 'G' | 'x' => prec.map_or(6, |p| i64::try_from(p).unwrap_or(i64::MAX)),
        _ => 0,
    };
    let (sign, body) = num.split_at(usize::from(num.starts_with('-')));
    let mut mantissa = String::new();
    let mut tail = "";
    let mut has_point = false;
    let mut saw_nonzero = false;
    for (at, c) in body.char_indices() {
        match c {
            '.' => has_point = true,
            'p' | 'P' => {
                tail = body.get(at..).unwrap_or_default();
                break;
            }
            'e' | 'E' if verb != 'x' && verb != 'X' => {
                tail = body.get(at..).unwrap_or_default();
                break;
            }
            _ => {
                saw_nonzero |= c != '0';
                if saw_nonzero {
                    digits -= 1;
                }
            }
        }
        mantissa.push(c);
    }
    if !has_point {
        if mantissa == "0" {
            digits -= 1;
        }
        mantissa.push('.');
    }
    while digits > 0 {
        mantissa.push('0');
        digits -= 1;
    }
    format!("{sign}{mantissa}{tail}")
}

/// `u` in `base`, without sign or prefix.
fn unsigned_digits(u: u64, base: u32, upper: bool) -> String {
    match base {
        2 => format!("{u:b}"),
        8 => format!("{u:o}"),
        16 if upper => format!("{u:X}"),
        16 => format!("{u:x}"),
        _ => u.to_string(),
    }
}

/// `strconv.Quote`.
pub(super) fn go_quote(s: &str) -> String {
    go_quote_with(s, '"')
}

/// `strconv.Quote` (`quote` '"') or `strconv.QuoteRune` (`quote` '\'').
fn go_quote_with(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '\\' => out.push_str("\\\\"),
            '\u{0007}' => out.push_str("\\a"),
            '\u{0008}' => out.push_str("\\b"),
            '\u{000C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{000B}' => out.push_str("\\v"),
            c if go_is_print::is_print(c) => out.push(c),
            c if u32::from(c) <= 0x7f => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push(quote);
    out
}

/// Decimal digits of a float's magnitude without trailing zeros, and the decimal point's
/// position (`0.d1d2... x 10^dp`), as strconv's `decimalSlice`.
struct Digits {
    d: Vec<u8>,
    dp: i32,
}

impl Digits {
    /// From Rust's `{:e}` rendering of a non-negative finite float ("1.25e-3", "0e0").
    fn from_exp(rendered: &str) -> Result<Self, Unsupported> {
        let (mantissa, exp) = rendered.split_once('e').ok_or(Unsupported("float rendering"))?;
        let exp: i32 = exp.parse().map_err(|_| Unsupported("float rendering"))?;
        let mut d: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
        while d.last() == Some(&b'0') {
            d.pop();
        }
        let dp = if d.is_empty() { 0 } else { exp + 1 };
        Ok(Self { d, dp })
    }

    /// strconv's `fmtE` with `prec` digits after the point.
    fn fmt_e(&self, out: &mut String, prec: usize, e: char) {
        out.push(char::from(self.d.first().copied().unwrap_or(b'0')));
        if prec > 0 {
            out.push('.');
            for i in 1..=prec {
                out.push(char::from(self.d.get(i).copied().unwrap_or(b'0')));
            }
        }
        out.push(e);
        let exp = if self.d.is_empty() { 0 } else { self.dp - 1 };
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }

    /// strconv's `fmtF` with `prec` digits after the point.
    fn fmt_f(&self, out: &mut String, prec: usize) {
        if self.dp > 0 {
            let dp = usize::try_from(self.dp).unwrap_or(0);
            for i in 0..dp {
                out.push(char::from(self.d.get(i).copied().unwrap_or(b'0')));
            }
        } else {
            out.push('0');
        }
        if prec > 0 {
            out.push('.');
            for i in 1..=prec {
                let j = i64::from(self.dp) + i as i64 - 1;
                let c = usize::try_from(j).ok().and_then(|j| self.d.get(j)).copied().unwrap_or(b'0');
                out.push(char::from(c));
            }
        }
    }
}

/// `strconv.FormatFloat(v, verb, prec, 64)` for a finite `v`; `prec` None is -1 (shortest).
fn strconv_format_float(v: f64, verb: char, prec: Option<usize>) -> Result<String, Unsupported> {
    if !v.is_finite() {
        return Err(Unsupported("non-finite floats"));
    }
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let a = v.abs();
    match verb {
        'f' | 'F' => match prec {
            Some(p) => out.push_str(&format!("{a:.p$}")),
            None => {
                let digits = Digits::from_exp(&format!("{a:e}"))?;
                let after = i64::try_from(digits.d.len()).unwrap_or(0) - i64::from(digits.dp);
                digits.fmt_f(&mut out, usize::try_from(after).unwrap_or(0));
            }
        },
        'e' | 'E' => {
            let e = if verb == 'E' { 'E' } else { 'e' };
            match prec {
                Some(p) => Digits::from_exp(&format!("{a:.p$e}"))?.fmt_e(&mut out, p, e),
                None => {
                    let digits = Digits::from_exp(&format!("{a:e}"))?;
                    let p = digits.d.len().saturating_sub(1);
                    digits.fmt_e(&mut out, p, e);
                }
            }
        }
        'g' | 'G' => {
            let e = if verb == 'G' { 'E' } else { 'e' };
            let (digits, mut prec, shortest) = match prec {
                None => {
                    let digits = Digits::from_exp(&format!("{a:e}"))?;
                    let n = digits.d.len();
                    (digits, n, true)
                }
                Some(p) => {
                    let p = p.max(1);
                    (Digits::from_exp(&format!("{a:.*e}", p - 1))?, p, false)
                }
            };
            let nd = i64::try_from(digits.d.len()).unwrap_or(i64::MAX);
            let dp = i64::from(digits.dp);
            let mut eprec = i64::try_from(prec).unwrap_or(i64::MAX);
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec {
                prec = prec.min(digits.d.len());
                digits.fmt_e(&mut out, prec.saturating_sub(1), e);
            } else {
                if i64::try_from(prec).unwrap_or(i64::MAX) > dp {
                    prec = digits.d.len();
                }
                let after = i64::try_from(prec).unwrap_or(0) - dp;
                digits.fmt_f(&mut out, usize::try_from(after).unwrap_or(0));
            }
        }
        'x' | 'X' => {
            if prec.is_some() {
                return Err(Unsupported("a precision on `%x` of a float"));
            }
            fmt_hex_float(&mut out, a, verb == 'X');
        }
        'b' => {
            let (mant, exp) = mantissa_exponent(a);
            out.push_str(&format!("{mant}p{:+}", exp - 52));
        }
        _ => return Err(Unsupported("float verb")),
    }
    Ok(out)
}

/// The IEEE 754 mantissa (with the implicit bit) and unbiased exponent, as strconv splits them.
fn mantissa_exponent(a: f64) -> (u64, i32) {
    let bits = a.to_bits();
    let mut exp = i32::try_from((bits >> 52) & 0x7ff).unwrap_or(0);
    let mut mant = bits & ((1u64 << 52) - 1);
    if exp == 0 {
        exp += 1;
    } else {
        mant |= 1u64 << 52;
    }
    (mant, exp - 1023)
}

/// strconv's `fmtX` with precision -1.
fn fmt_hex_float(out: &mut String, a: f64, upper: bool) {
    let (mut mant, mut exp) = mantissa_exponent(a);
    if mant == 0 {
        exp = 0;
    }
    mant <<= 60 - 52;
    while mant != 0 && mant & (1u64 << 60) == 0 {
        mant <<= 1;
        exp -= 1;
    }
    let hex: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    out.push('0');
    out.push(if upper { 'X' } else { 'x' });
    out.push(if (mant >> 60) & 1 == 1 { '1' } else { '0' });
    mant <<= 4;
    if mant != 0 {
        out.push('.');
        while mant != 0 {
            out.push(char::from(hex.get(usize::try_from((mant >> 60) & 15).unwrap_or(0)).copied().unwrap_or(b'0')));
            mant <<= 4;
        }
    }
    out.push(if upper { 'P' } else { 'p' });
    out.push(if exp < 0 { '-' } else { '+' });
    out.push_str(&format!("{:02}", exp.unsigned_abs()));
}

