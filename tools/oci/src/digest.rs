//! Content digests as the OCI specs write them: `sha256:` and 64 lowercase hex digits.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A sha256 content digest, `sha256:<64 lowercase hex>`; serialized as that string, and
/// deserialized through [`Digest::parse`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Why a string is not a sha256 digest.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (sha256:<64 lowercase hex digits>)")]
pub struct DigestError(String);

const PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("{PREFIX}{}", hex(&Sha256::digest(bytes))))
    }

    /// Parses `sha256:<hex>`; other algorithms are refused (everything here writes sha256).
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        match text.strip_prefix(PREFIX) {
            Some(hex) if is_sha256_hex(hex) => Ok(Self(text.to_owned())),
            _ => Err(DigestError(text.to_owned())),
        }
    }

    /// The full form, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits alone: what Istio's `WasmPlugin.sha256`, Envoy Gateway's
    /// `image.sha256` and Envoy's `vm_config.code.remote.sha256` expect.
    pub fn hex(&self) -> &str {
        self.0.strip_prefix(PREFIX).unwrap_or(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether `text` is 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_bytes_as_the_specs_write_them() {
        let empty = Digest::of(b"");
        assert_eq!(empty.as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(empty.hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn parses_its_own_form() {
        let digest = Digest::of(b"plugin");
        assert_eq!(Digest::parse(digest.as_str()).unwrap(), digest);
    }

    #[test]
    fn serializes_as_its_string() {
        let digest = Digest::of(b"plugin");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{}\"", digest.as_str()));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>(&format!("\"{}\"", digest.hex())).is_err());
    }

    #[test]
    fn refuses_other_forms() {
        let hex = Digest::of(b"x").hex().to_owned();
        for bad in
            [hex.clone(), format!("sha512:{hex}"), format!("sha256:{}", hex.to_uppercase()), "sha256:abc".to_owned()]
        {
            assert!(Digest::parse(&bad).is_err(), "{bad} was accepted");
        }
    }
}
