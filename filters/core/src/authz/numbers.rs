//! Numbers OPA writes as the policy wrote them.
//!
//! OPA keeps a number's text (a `json.Number`) from the Rego literal or the JSON it was read
//! from, and writes that text when a builtin turns the number into a string: `json.marshal([1e2,
//! 1.50, -0])` is `[1e2,1.50,-0]` there. regorus keeps the value and writes `[100,1.5,0]`, so a
//! policy comparing such a string with a constant could decide otherwise. Such a policy is refused
//! at load, naming the number to rewrite: a literal or data number regorus does not write back as
//! it is written, in a policy that calls one of [`WRITERS`]. (Request input is not checked: a
//! caller who writes `1e3` for `1000` gets what `1000` gets, never more.)

use regorus::unstable::TokenKind;

use super::input::{first_call, tokens};

/// The builtins that write a number into a string: where OPA writes the number's text.
pub const WRITERS: [&str; 6] =
    ["json.marshal", "json.marshal_with_options", "yaml.marshal", "sprintf", "strings.render_template", "io.jwt.encode_sign"];

/// Refuses `modules` and the data files `data` (JSON texts) when a module calls one of
/// [`WRITERS`] and a number literal in a module or a number in the data is written back
/// otherwise than it is written.
///
/// # Errors
/// The message names the number and where it is.
pub fn check<'a>(
    modules: impl IntoIterator<Item = &'a (String, String)>,
    data: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    let scanned: Vec<(&str, Vec<_>)> =
        modules.into_iter().filter_map(|(name, source)| Some((name.as_str(), tokens(name, source)?))).collect();
    let Some(writer) = scanned.iter().find_map(|(_, tokens)| first_call(tokens, &WRITERS)) else { return Ok(()) };
    let literal = scanned.iter().find_map(|(name, tokens)| {
        let number = tokens.iter().find(|(kind, text)| *kind == TokenKind::Number && !written_back(text))?;
        Some((*name, number.1.as_str()))
    });
    let Some((place, number)) = literal.or_else(|| data.into_iter().find_map(|(name, json)| Some((name, first_not_written_back(json)?))))
    else {
        return Ok(());
    };
    let value = value_text(number);
    Err(format!("{place}: the number {number} would be written {value} by {writer} (OPA writes {number}); write it as {value}"))
}

/// Whether regorus writes the number `text` back as `text`, or refuses to write it: what OPA and
/// regorus cannot disagree on silently. Integers are written in full and decimals in their
/// shortest form (`1.0`, `0.25`); a float below 1e-4 or from 1e16 on is refused when written
/// (`LimitError::NotAsOpa`). Not written back: exponents (`1e2` is written `100`), `-0`, and
/// decimals with more digits than they need (`1.50`).
pub fn written_back(text: &str) -> bool {
    let Ok(value) = text.parse::<f64>() else { return true };
    let in_range = value == 0.0 || (1e-4..1e16).contains(&value.abs());
    if text == "-0" {
        false
    } else if text.contains(['e', 'E']) {
        // An integral one is an integer to regorus (written in full), another a float.
        value.fract() != 0.0 && !in_range
    } else if text.contains('.') {
        !in_range || serde_json::to_string(&value).is_ok_and(|t| t == text)
    } else {
        true
    }
}

/// The value of a number as regorus writes it, for the message.
fn value_text(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(0.0) => "0".to_owned(),
        Ok(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Ok(f) => serde_json::to_string(&f).unwrap_or_else(|_| text.to_owned()),
        Err(_) => text.to_owned(),
    }
}

/// The first number in the JSON text `json` that regorus does not write back as written.
pub fn first_not_written_back(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b'"' {
                        break;
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while bytes.get(i).is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                    i += 1;
                }
                let number = json.get(start..i).unwrap_or_default();
                if !written_back(number) {
                    return Some(number);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(source: &str) -> Vec<(String, String)> {
        vec![("p.rego".to_owned(), source.to_owned())]
    }

    #[test]
    fn numbers_regorus_writes_back_and_numbers_it_does_not() {
        // Refused when written, as `0.000001` is: no silent difference either.
        for text in ["0", "100", "-7", "12345678901234567890", "1.0", "100.0", "-0.0", "0.5", "0.25", "3.14159", "0.0001", "0.000001", "1e-5", "1.5e-5", "12345678901234567.5"] {
            assert!(written_back(text), "{text}");
        }
        for text in ["1e2", "1E2", "1.5e1", "2e-1", "-0", "1.50", "0.10", "1.000", "1e20"] {
            assert!(!written_back(text), "{text}");
        }
    }

    #[test]
    fn the_json_scan_skips_strings_and_finds_the_number() {
        assert_eq!(first_not_written_back(r#"{"a": [1, 2.5, "1e2", "x\"1e2"], "b": {"c": 1e3}}"#), Some("1e3"));
        assert_eq!(first_not_written_back(r#"{"a": -0, "b": 1}"#), Some("-0"));
        assert_eq!(first_not_written_back(r#"{"a": [1, 2.5, -3, 1.0], "1.50": "1.50"}"#), None);
    }

    #[test]
    fn a_policy_writing_numbers_into_strings_is_refused_with_a_literal_or_data_number_not_written_back() {
        let writes = "package p\nx := json.marshal([1e2, 100])\n";
        let error = check(&module(writes), []).unwrap_err();
        assert_eq!(error, "p.rego: the number 1e2 would be written 100 by json.marshal (OPA writes 1e2); write it as 100");
        assert!(check(&module("package p\nx := sprintf(\"%v\", [1.50])\n"), []).is_err());
        let with_data = check(&module("package p\nx := sprintf(\"%v\", [data.max])\n"), [("data.json", r#"{"max": 1e3}"#)]);
        assert!(with_data.unwrap_err().starts_with("data.json: the number 1e3 would be written 1000 by sprintf"));
        // The same numbers without a writer, or a writer with numbers written back: loaded.
        assert_eq!(check(&module("package p\nallow if input.size < 1e6\n"), [("data.json", r#"{"max": 1e3}"#)]), Ok(()));
        assert_eq!(check(&module("package p\nx := json.marshal([100, 1.0, 0.5, -1])\n"), [("data.json", r#"{"max": 1000}"#)]), Ok(()));
        // The policy tool refuses what the module refuses.
        let single = super::super::testing::PolicyDir::single("p.rego".into(), writes.into());
        assert!(matches!(single, Err(super::super::testing::LoadError::Numbers(message)) if message == error));
        // `json` as a variable or field is not the builtin.
        assert_eq!(check(&module("package p\nx := input.json.marshal\ny := 1e2\n"), []), Ok(()));
    }
}
