//! gzip (RFC 1952) over miniz_oxide's deflate: reading bundles, writing decision-log uploads.
//!
//! Only what those two need: one member, checked against its CRC-32 and length, with a cap on the
//! inflated size so a small archive cannot expand into the worker's whole memory.

use miniz_oxide::inflate::{DecompressError, TINFLStatus, decompress_to_vec_with_limit};

const MAGIC: [u8; 2] = [0x1f, 0x8b];
const DEFLATE: u8 = 8;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
/// Compression level of uploads: fast, and decision logs compress well anyway.
const LEVEL: u8 = 6;

/// Why gzip data was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    /// Not a gzip stream, or a method other than deflate.
    #[error("not gzip data")]
    NotGzip,
    /// The stream ends early or its deflate data is corrupt.
    #[error("corrupt gzip data: {0}")]
    Corrupt(&'static str),
    /// The inflated data would exceed the limit.
    #[error("inflates to more than {0} bytes")]
    TooLarge(usize),
}

/// Inflates one gzip member of at most `limit` bytes, checking its CRC-32 and length.
pub fn decode(bytes: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let header = bytes.get(..10).ok_or(GzipError::NotGzip)?;
    if header.get(..2) != Some(&MAGIC[..]) || header.get(2) != Some(&DEFLATE) {
        return Err(GzipError::NotGzip);
    }
    let flags = header.get(3).copied().unwrap_or(0);
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = bytes.get(at..at + 2).ok_or(GzipError::Corrupt("truncated header"))?;
        at +=
            2 + usize::from(u16::from_le_bytes([len.first().copied().unwrap_or(0), len.get(1).copied().unwrap_or(0)]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0));
            at += end.ok_or(GzipError::Corrupt("truncated header"))? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let trailer_at = bytes.len().checked_sub(8).filter(|&t| t >= at).ok_or(GzipError::Corrupt("truncated"))?;
    let deflated = bytes.get(at..trailer_at).ok_or(GzipError::Corrupt("truncated"))?;
    let inflated = decompress_to_vec_with_limit(deflated, limit).map_err(|DecompressError { status, .. }| {
        if status == TINFLStatus::HasMoreOutput {
            GzipError::TooLarge(limit)
        } else {
            GzipError::Corrupt("bad deflate data")
        }
    })?;
    let word = |offset: usize| {
        bytes.get(trailer_at + offset..trailer_at + offset + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    };
    if word(0) != Some(crc32(&inflated)) {
        return Err(GzipError::Corrupt("crc mismatch"));
    }
    if word(4) != Some(inflated.len() as u32) {
        return Err(GzipError::Corrupt("length mismatch"));
    }
    Ok(inflated)
}

/// Compresses `data` into one gzip member.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, LEVEL);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    // Magic, deflate, no flags, no mtime (reproducible), no extra flags, OS unknown.
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[DEFLATE, 0, 0, 0, 0, 0, 0, 0xff]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected), bitwise: bundles and log batches are small and rare.
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0_u32, |crc, &byte| {
        (0..8).fold(crc ^ u32::from(byte), |c, _| if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_the_reference_crc() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let data = b"{\"decision_id\":\"a\"}".repeat(100);
        let packed = encode(&data);
        assert!(packed.len() < data.len() / 4, "{} bytes", packed.len());
        assert_eq!(decode(&packed, 1 << 20).unwrap(), data);
    }

    #[test]
    fn reads_headers_with_a_file_name() {
        let mut packed = encode(b"hello");
        packed[3] = FNAME;
        packed.splice(10..10, b"bundle.tar\0".iter().copied());
        assert_eq!(decode(&packed, 100).unwrap(), b"hello");
    }

    #[test]
    fn refuses_corrupt_truncated_and_oversized_data() {
        let packed = encode(&b"abc".repeat(1000));
        assert_eq!(decode(b"PK\x03\x04not gzip at all", 1 << 20), Err(GzipError::NotGzip));
        assert!(matches!(decode(&packed[..packed.len() - 3], 1 << 20), Err(GzipError::Corrupt(_))));
        let mut flipped = packed.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0xff;
        assert_eq!(decode(&flipped, 1 << 20), Err(GzipError::Corrupt("length mismatch")));
        let mut body = packed.clone();
        body[12] ^= 0x55;
        assert!(decode(&body, 1 << 20).is_err());
        assert_eq!(decode(&packed, 100), Err(GzipError::TooLarge(100)));
    }
}
