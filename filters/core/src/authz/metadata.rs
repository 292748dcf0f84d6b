//! `attributes.metadataContext`: other filters' dynamic metadata, as ext_authz sends the
//! namespaces it is configured with (`metadata_context_namespaces`).
//!
//! Envoy gives a Wasm filter the stream's dynamic metadata only whole, as the bytes of an
//! `envoy.config.core.v3.Metadata` message (the `metadata` property; a map inside it fails to
//! serialize). This decodes the `filter_metadata` entries of the wanted namespaces, each a
//! `google.protobuf.Struct`, into the plain JSON OPA's Envoy plugin makes of them.

use regorus::Value;

/// Why the metadata bytes could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedMetadata(&'static str);

impl std::fmt::Display for MalformedMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dynamic metadata is not a valid protobuf: {}", self.0)
    }
}

/// Nesting deeper than this is refused (a Struct in a Struct in ...).
const MAX_DEPTH: usize = 32;

/// One protobuf field: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, MalformedMetadata> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or(MalformedMetadata("truncated varint"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(MalformedMetadata("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedMetadata> {
        if n > self.0.len() {
            return Err(MalformedMetadata("truncated field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, MalformedMetadata> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| MalformedMetadata("fixed64"))?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| MalformedMetadata("length"))?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return Err(MalformedMetadata("unknown wire type")),
        };
        Ok(Some((tag >> 3, field)))
    }
}

/// A map entry (`key = 1`, a string; `value = 2`, a message), either part possibly absent.
fn map_entry(entry: &[u8]) -> Result<(&str, &[u8]), MalformedMetadata> {
    let (mut key, mut value): (&str, &[u8]) = ("", &[]);
    let mut entry = Reader(entry);
    while let Some((number, field)) = entry.field()? {
        match (number, field) {
            (1, Field::Bytes(k)) => key = std::str::from_utf8(k).map_err(|_| MalformedMetadata("key"))?,
            (2, Field::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

/// `filter_metadata[namespace]` for each wanted namespace present, as `(namespace, object)`.
pub fn filter_metadata(bytes: &[u8], namespaces: &[String]) -> Result<Vec<(String, Value)>, MalformedMetadata> {
    let mut found = Vec::new();
    let mut metadata = Reader(bytes);
    while let Some((number, field)) = metadata.field()? {
        // Field 1: map<string, Struct> filter_metadata; 2 (typed_filter_metadata) is not sent.
        let (1, Field::Bytes(entry)) = (number, field) else { continue };
        let (key, value) = map_entry(entry)?;
        if !namespaces.iter().any(|n| n == key) {
            continue;
        }
        let object = structure(value, 0)?;
        found.retain(|(k, _): &(String, Value)| k != key);
        found.push((key.to_owned(), object));
    }
    Ok(found)
}

/// A `google.protobuf.Struct` as a JSON object.
fn structure(bytes: &[u8], depth: usize) -> Result<Value, MalformedMetadata> {
    if depth > MAX_DEPTH {
        return Err(MalformedMetadata("nested too deep"));
    }
    let mut object = Value::new_object();
    let mut fields = Reader(bytes);
    while let Some((number, field)) = fields.field()? {
        let (1, Field::Bytes(entry)) = (number, field) else { continue };
        let (key, value) = map_entry(entry)?;
        let value = json_value(value, depth + 1)?;
        object.as_object_mut().map_err(|_| MalformedMetadata("object"))?.insert(Value::from(key), value);
    }
    Ok(object)
}

/// A `google.protobuf.Value`: null, number (a float64, as `AsMap` gives it), string, bool,
/// Struct or ListValue.
fn json_value(bytes: &[u8], depth: usize) -> Result<Value, MalformedMetadata> {
    let mut value = Value::Null;
    let mut fields = Reader(bytes);
    while let Some((number, field)) = fields.field()? {
        value = match (number, field) {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(bits)) => Value::from(f64::from_bits(bits)),
            (3, Field::Bytes(s)) => Value::from(std::str::from_utf8(s).map_err(|_| MalformedMetadata("string"))?),
            (4, Field::Varint(b)) => Value::from(b != 0),
            (5, Field::Bytes(s)) => structure(s, depth)?,
            (6, Field::Bytes(list)) => {
                if depth > MAX_DEPTH {
                    return Err(MalformedMetadata("nested too deep"));
                }
                let mut items = Vec::new();
                let mut list = Reader(list);
                while let Some((number, field)) = list.field()? {
                    if let (1, Field::Bytes(item)) = (number, field) {
                        items.push(json_value(item, depth + 1)?);
                    }
                }
                Value::from(items)
            }
            _ => return Err(MalformedMetadata("unexpected field in a Value")),
        };
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `metadata` as real Envoy 1.40 gave it (tests/fixtures/envoy-1.40.0-properties.json) for a
    /// set_metadata filter writing a jwt_authn-shaped payload.
    const RECORDED: &str = "0ac0010a1c656e766f792e66696c746572732e687474702e6a77745f617574686e129f010a9c010a077061796c6f61641290012a8d010a280a0573636f7065121f321d0a0d1a0b6d6f64656c732e726561640a0c1a0a746f6f6c732e63616c6c0a150a036f7267120e2a0c0a0a0a02696412041a0234320a0b0a0561646d696e120220000a100a03657870120911000000e04eacda410a0e0a0373756212071a05616c6963650a0a0a046e6f6e65120208000a0f0a05726174696f12061a04302e3235";

    fn recorded() -> Vec<u8> {
        (0..RECORDED.len()).step_by(2).filter_map(|i| RECORDED.get(i..i + 2)).filter_map(|h| u8::from_str_radix(h, 16).ok()).collect()
    }

    #[test]
    fn decodes_the_namespaces_asked_for_as_plain_json() {
        let ns = "envoy.filters.http.jwt_authn".to_owned();
        let got = filter_metadata(&recorded(), std::slice::from_ref(&ns)).unwrap();
        let [(name, value)] = got.as_slice() else { panic!("{got:?}") };
        assert_eq!(name, &ns);
        let json: serde_json::Value = serde_json::from_str(&value.to_json_str().unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"payload": {
            "sub": "alice", "scope": ["models.read", "tools.call"], "exp": 1_790_000_000,
            "admin": false, "ratio": "0.25", "none": null, "org": {"id": "42"},
        }}));
        assert!(filter_metadata(&recorded(), &["envoy.filters.http.other".to_owned()]).unwrap().is_empty());
    }

    #[test]
    fn refuses_truncated_bytes() {
        let bytes = recorded();
        for cut in [1, 5, bytes.len() / 2, bytes.len() - 1] {
            let truncated = bytes.get(..cut).unwrap_or_default();
            assert!(filter_metadata(truncated, &["envoy.filters.http.jwt_authn".to_owned()]).is_err(), "{cut}");
        }
    }
}
