//! The PEM armour around Envoy's `connection.peer_certificate`, and the base64url of JWTs and
//! JWKs, decoded without a base64 crate: the modules ship one function instead of a
//! general-purpose encoding library.

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The DER bytes of the first `CERTIFICATE` block, or why there are none.
pub(crate) fn first_certificate(pem: &[u8]) -> Result<Vec<u8>, &'static str> {
    let text = std::str::from_utf8(pem).map_err(|_| "not utf-8")?;
    let start = text.find(BEGIN).ok_or("no BEGIN CERTIFICATE line")? + BEGIN.len();
    let body = text.get(start..).unwrap_or_default();
    let end = body.find(END).ok_or("no END CERTIFICATE line")?;
    decode_base64(body.get(..end).unwrap_or_default())
}

/// Standard base64 (RFC 4648 §4) with padding; ASCII whitespace between characters is ignored.
fn decode_base64(text: &str) -> Result<Vec<u8>, &'static str> {
    decode(text, false)
}

/// base64url without padding (RFC 4648 §5), as JWS (RFC 7515 §2) and JWK write it: no padding,
/// no whitespace, and no bits set beyond the last byte.
pub(crate) fn decode_base64url(text: &str) -> Result<Vec<u8>, &'static str> {
    decode(text, true)
}

fn decode(text: &str, url: bool) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    let mut padding = 0usize;
    for byte in text.bytes().filter(|b| url || !b.is_ascii_whitespace()) {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' if !url => 62,
            b'/' if !url => 63,
            b'-' if url => 62,
            b'_' if url => 63,
            b'=' if !url => {
                padding += 1;
                continue;
            }
            _ => return Err("invalid base64 character"),
        };
        if padding > 0 {
            return Err("base64 data after padding");
        }
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be the zero fill of a final group, matched by its padding.
    let expected_padding = match bits {
        0 => 0,
        4 => 2,
        2 => 1,
        _ => return Err("truncated base64"),
    };
    if (!url && padding != expected_padding) || buffer != 0 {
        return Err("bad base64 padding");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rfc4648_vectors() {
        for (encoded, decoded) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9v\nYmFy", "foobar"),
        ] {
            assert_eq!(decode_base64(encoded).unwrap(), decoded.as_bytes(), "{encoded}");
        }
        assert_eq!(decode_base64("//+/").unwrap(), [0xff, 0xff, 0xbf]);
    }

    #[test]
    fn decodes_base64url_without_padding() {
        for (encoded, decoded) in [("", &b""[..]), ("Zg", b"f"), ("Zm8", b"fo"), ("Zm9v", b"foo"), ("__-_", &[0xff, 0xff, 0xbf])] {
            assert_eq!(decode_base64url(encoded).unwrap(), decoded, "{encoded}");
        }
        for bad in ["Zg==", "Z", "Zh", "//+/", "Zm9v YmFy", "Zm9v\n"] {
            assert!(decode_base64url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_malformed_base64() {
        for bad in ["Zg=", "Zg", "Z", "Zm9v!", "Zg==Zg==", "Zh=="] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn takes_the_first_certificate_block() {
        let pem = format!("junk\n{BEGIN}\nZm9v\n{END}\n{BEGIN}\nYmFy\n{END}\n");
        assert_eq!(first_certificate(pem.as_bytes()).unwrap(), b"foo");
        assert!(first_certificate(b"-----BEGIN PRIVATE KEY-----\nZm9v\n-----END PRIVATE KEY-----").is_err());
        assert!(first_certificate(format!("{BEGIN}\nZm9v").as_bytes()).is_err());
    }
}
