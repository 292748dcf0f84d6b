//! What the `svidgate` binary shares with the tests: writing OPA bundles exactly as
//! `svidgate bundle build` does, so tests serve the bytes a user would.

use anyhow::Result;
use flate2::Compression;
use flate2::write::GzEncoder;

/// An OPA bundle (`.tar.gz`) of `entries` (path inside the bundle, contents), byte-for-byte
/// reproducible: sorted entries, zero timestamps and owners.
pub fn write_bundle(entries: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Vec<u8>)> = entries.iter().collect();
    sorted.sort();
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    for (path, bytes) in sorted {
        let mut header = tar::Header::new_gnu();
        header.set_size(u64::try_from(bytes.len())?);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path.trim_start_matches('/'), bytes.as_slice())?;
    }
    Ok(tar.into_inner()?.finish()?)
}
