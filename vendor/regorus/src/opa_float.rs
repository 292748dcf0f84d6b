// Added to regorus by svidgate (vendor/regorus/PATCHES.md #13); MIT License, as the crate.

//! Arithmetic on non-integers as OPA computes it. svidgate patch.
//!
//! OPA reads each operand's text into a Go `big.Float` (64-bit mantissa, round half to even),
//! adds, subtracts, multiplies or divides there, and keeps the shortest decimal text that reads
//! back to the same 64-bit value. So `0.1 + 0.2` is `0.3` in OPA, where binary64 gives
//! `0.30000000000000004`. This module does the same with exact integers: an operand's text is
//! its integer digits, or for a float the shortest decimal of its binary64 value (the text a
//! JSON document or a policy literal has); the result is rounded to 64 bits, and the shortest
//! decimal of that is what the caller turns back into a regorus number.

use alloc::format;
use alloc::string::{String, ToString};

use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, Zero};

/// A Go `big.Float` of precision 64: `(-1)^neg * mant * 2^exp`, `mant` below 2^64 (zero, or
/// with bit 63 set).
#[derive(Clone, PartialEq, Eq)]
struct Float64 {
    neg: bool,
    mant: BigUint,
    exp: i64,
}

/// The operations OPA's arithmetic builtins perform on `big.Float`s.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Quo,
}

/// An exact rational `(-1)^neg * num / den`.
struct Ratio {
    neg: bool,
    num: BigUint,
    den: BigUint,
}

impl Ratio {
    /// `digits * 10^exp10`.
    fn decimal(neg: bool, digits: BigUint, exp10: i64) -> Self {
        let ten = BigUint::from(10u32);
        let pow = |e: i64| num_traits::pow(ten.clone(), usize::try_from(e.unsigned_abs()).unwrap_or(0));
        if exp10 >= 0 {
            Self { neg, num: digits * pow(exp10), den: BigUint::one() }
        } else {
            Self { neg, num: digits, den: pow(exp10) }
        }
    }

    /// Numerator (with the sign) and denominator as signed integers.
    fn signed(&self) -> (BigInt, BigInt) {
        let sign = if self.neg { Sign::Minus } else { Sign::Plus };
        (BigInt::from_biguint(sign, self.num.clone()), BigInt::from(self.den.clone()))
    }

    fn of(f: &Float64) -> Self {
        let shift = usize::try_from(f.exp.unsigned_abs()).unwrap_or(0);
        if f.exp >= 0 {
            Self { neg: f.neg, num: &f.mant << shift, den: BigUint::one() }
        } else {
            Self { neg: f.neg, num: f.mant.clone(), den: BigUint::one() << shift }
        }
    }

    /// Rounded to a 64-bit mantissa, half to even.
    fn round(&self) -> Float64 {
        if self.num.is_zero() {
            return Float64 { neg: self.neg, mant: BigUint::zero(), exp: 0 };
        }
        let top = BigUint::one() << 64usize;
        let low = BigUint::one() << 63usize;
        let mut exp = i64::try_from(self.num.bits()).unwrap_or(0) - i64::try_from(self.den.bits()).unwrap_or(0) - 64;
        loop {
            let shift = usize::try_from(exp.unsigned_abs()).unwrap_or(0);
            let (num, den) =
                if exp >= 0 { (self.num.clone(), &self.den << shift) } else { (&self.num << shift, self.den.clone()) };
            let (mut mant, rem) = (&num / &den, &num % &den);
            if mant >= top {
                exp += 1;
                continue;
            }
            if mant < low {
                exp -= 1;
                continue;
            }
            let twice = rem << 1usize;
            if twice > den || twice == den && mant.bit(0) {
                mant += 1u32;
                if mant == top {
                    mant = low.clone();
                    exp += 1;
                }
            }
            return Float64 { neg: self.neg, mant, exp };
        }
    }
}

/// The operand as OPA reads its text: integers exactly, a float by its shortest decimal.
fn operand(n: &crate::number::Number) -> Option<Ratio> {
    use crate::number::Number;
    match n {
        Number::Float(f) if f.is_finite() => {
            let text = format!("{:e}", f.abs());
            let (mantissa, exp) = text.split_once('e')?;
            let exp: i64 = exp.parse().ok()?;
            let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
            let digits: BigUint = format!("{int}{frac}").parse().ok()?;
            let frac_len = i64::try_from(frac.len()).ok()?;
            Some(Ratio::decimal(f.is_sign_negative(), digits, exp - frac_len))
        }
        Number::Float(_) => None,
        other => {
            let i = other.as_big()?;
            Some(Ratio { neg: i.sign() == Sign::Minus, num: i.magnitude().clone(), den: BigUint::one() })
        }
    }
}

/// The result of an operation: an integer (OPA's text has no fraction), or a float.
pub(crate) enum Outcome {
    Integer(BigInt),
    /// OPA's value, exactly.
    Float(f64),
    /// Next to OPA's value, which has a text of its own ([`opa_text`]); never an integer.
    Inexact(f64),
}

/// `a op b` as OPA computes it, or None where OPA would fail (division by zero, a non-finite
/// operand).
///
/// A result that is not an integer is kept as a binary64 value, which cannot hold OPA's 64-bit
/// one: `1.1 + 2.2` is 3.3000000000000000002 in OPA, which is not the literal 3.3. The float
/// nearest that value is 3.3, so it is moved one step toward OPA's value (3.3000000000000003):
/// every comparison with a number of up to 16 significant digits then decides as OPA's does,
/// and OPA's text is kept aside for `sprintf` and `json.marshal` ([`opa_text`]).
pub(crate) fn arith(a: &crate::number::Number, b: &crate::number::Number, op: Op) -> Option<Outcome> {
    let x = Ratio::of(&operand(a)?.round());
    let y = Ratio::of(&operand(b)?.round());
    let ((xn, xd), (yn, yd)) = (x.signed(), y.signed());
    let (num, den) = match op {
        Op::Add => (&xn * &yd + &yn * &xd, &xd * &yd),
        Op::Sub => (&xn * &yd - &yn * &xd, &xd * &yd),
        Op::Mul => (&xn * &yn, &xd * &yd),
        Op::Quo if yn.is_zero() => return None,
        Op::Quo => (&xn * &yd, &xd * &yn),
    };
    let neg = (num.sign() == Sign::Minus) != (den.sign() == Sign::Minus);
    let result = Ratio { neg, num: num.magnitude().clone(), den: den.magnitude().clone() }.round();
    let (neg, digits, exp) = shortest(&result);
    if exp >= 0 {
        let magnitude = digits * num_traits::pow(BigUint::from(10u32), usize::try_from(exp).ok()?);
        return Some(Outcome::Integer(BigInt::from_biguint(if neg { Sign::Minus } else { Sign::Plus }, magnitude)));
    }
    let nearest: f64 = format!("{}{digits}e{exp}", if neg { "-" } else { "" }).parse().ok()?;
    let as_literal = operand(&crate::number::Number::Float(nearest))?.round();
    let kept = match compare(&result, &as_literal) {
        core::cmp::Ordering::Equal => return Some(Outcome::Float(nearest)),
        core::cmp::Ordering::Greater => nearest.next_up(),
        core::cmp::Ordering::Less => nearest.next_down(),
    };
    remember(kept, go_text(neg, &digits, exp));
    Some(Outcome::Inexact(kept))
}

/// big.Float's `Text('g', -1)` of `digits * 10^exp` (shortest digits, no trailing zeros):
/// `%e` form (`e+15`, two exponent digits at least) when the exponent is below -4 or from 6
/// on, else plain.
fn go_text(neg: bool, digits: &BigUint, exp: i64) -> String {
    let d = digits.to_string();
    let nd = i64::try_from(d.len()).unwrap_or(0);
    let e = nd - 1 + exp;
    let sign = if neg { "-" } else { "" };
    if e < -4 || e >= 6 {
        let (first, rest) = d.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        format!("{sign}{first}{point}{rest}e{}{:02}", if e < 0 { '-' } else { '+' }, e.unsigned_abs())
    } else if exp >= 0 {
        format!("{sign}{d}{}", "0".repeat(usize::try_from(exp).unwrap_or(0)))
    } else if e >= 0 {
        let (int, frac) = d.split_at(usize::try_from(e + 1).unwrap_or(0));
        format!("{sign}{int}.{frac}")
    } else {
        format!("{sign}0.{}{d}", "0".repeat(usize::try_from(-e - 1).unwrap_or(0)))
    }
}

// The texts OPA holds for the arithmetic results a binary64 value only approximates, keyed by
// the value kept for them, so that `sprintf` and `json.marshal` write what OPA writes.
#[cfg(feature = "std")]
std::thread_local! {
    static TEXTS: core::cell::RefCell<alloc::collections::BTreeMap<u64, String>> =
        const { core::cell::RefCell::new(alloc::collections::BTreeMap::new()) };
}

/// At most this many texts are kept; older ones are dropped all at once.
#[cfg(feature = "std")]
const TEXTS_KEPT: usize = 4096;

#[cfg(feature = "std")]
fn remember(value: f64, text: String) {
    TEXTS.with(|texts| {
        let mut texts = texts.borrow_mut();
        if texts.len() >= TEXTS_KEPT {
            texts.clear();
        }
        texts.insert(value.to_bits(), text);
    });
}

#[cfg(not(feature = "std"))]
fn remember(_value: f64, _text: String) {}

/// OPA's text for a float an arithmetic operation produced and binary64 only approximates.
#[cfg(feature = "std")]
pub(crate) fn opa_text(value: f64) -> Option<String> {
    TEXTS.with(|texts| texts.borrow().get(&value.to_bits()).cloned())
}

#[cfg(not(feature = "std"))]
pub(crate) fn opa_text(_value: f64) -> Option<String> {
    None
}

fn compare(a: &Float64, b: &Float64) -> core::cmp::Ordering {
    let ((xn, xd), (yn, yd)) = (Ratio::of(a).signed(), Ratio::of(b).signed());
    (xn * yd).cmp(&(yn * xd))
}

/// The shortest decimal that reads back (rounded to 64 bits) to `f`: big.Float's `Text('g', -1)`.
fn shortest(f: &Float64) -> (bool, BigUint, i64) {
    if f.mant.is_zero() {
        return (f.neg, BigUint::zero(), 0);
    }
    let exact = Ratio::of(f);
    let ten = BigUint::from(10u32);
    // The decimal exponent of the leading digit.
    let lead = {
        let mut e = ((i64::try_from(exact.num.bits()).unwrap_or(0) - i64::try_from(exact.den.bits()).unwrap_or(0)) * 30103)
            / 100_000;
        let value_ge = |e: i64| {
            let p = Ratio::decimal(false, BigUint::one(), e);
            &exact.num * &p.den >= &p.num * &exact.den
        };
        while !value_ge(e) {
            e -= 1;
        }
        while value_ge(e + 1) {
            e += 1;
        }
        e
    };
    for n in 1..=25i64 {
        // digits = round(value * 10^(n - 1 - lead)), half to even.
        let scale = n - 1 - lead;
        let s = Ratio::decimal(false, BigUint::one(), scale);
        let (num, den) = (&exact.num * &s.num, &exact.den * &s.den);
        let (mut digits, rem) = (&num / &den, &num % &den);
        let twice = rem << 1usize;
        if twice > den || twice == den && digits.bit(0) {
            digits += 1u32;
        }
        let candidate = Ratio::decimal(f.neg, digits.clone(), -scale).round();
        if candidate == *f {
            // Drop trailing zeros.
            let (mut digits, mut exp) = (digits, -scale);
            while !digits.is_zero() && (&digits % &ten).is_zero() {
                digits /= &ten;
                exp += 1;
            }
            return (f.neg, digits, exp);
        }
    }
    // 25 digits always suffice for 64 bits; keep the exact value's 25 digits otherwise.
    let s = Ratio::decimal(false, BigUint::one(), 24 - lead);
    (f.neg, (&exact.num * &s.num) / (&exact.den * &s.den), lead - 24)
}
