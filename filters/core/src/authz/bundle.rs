//! OPA bundles: a `.tar.gz` holding `.manifest` (revision, roots), Rego modules and `data.json`
//! files, read into modules and one data document, or refused with the reason.
//!
//! As in OPA, a `data.json` at `a/b/data.json` is the document `data.a.b`, and every package and
//! every data path must lie under one of the manifest's roots (all of `data` without roots).
//! Signed bundles, `data.yaml`, wasm and plan files are refused rather than half-read: a bundle
//! svidgate activates is exactly the bundle the author built.

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::data;
use super::gzip::{self, GzipError};

const BLOCK: usize = 512;

/// Why a bundle was refused. The last good policy stays active.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The archive is not valid gzip.
    #[error("bundle is not a valid .tar.gz: {0}")]
    Gzip(#[from] GzipError),
    /// The tar stream inside is corrupt.
    #[error("bundle archive is corrupt: {0}")]
    Tar(String),
    /// A file svidgate does not load, refused rather than ignored.
    #[error("bundle file {0:?} is not supported: {1}")]
    Unsupported(String, &'static str),
    /// `.manifest` or a `data.json` is not valid JSON of the right shape.
    #[error("bundle file {0:?} is invalid: {1}")]
    InvalidFile(String, String),
    /// A package or data path lies outside the manifest's roots.
    #[error("{0} is outside the bundle roots {1:?}")]
    OutsideRoots(String, Vec<String>),
    /// Two data files write the same path.
    #[error("bundle data conflict at {0}")]
    DataConflict(String),
    /// No Rego module at all.
    #[error("bundle holds no rego module")]
    NoModules,
    /// The modules do not compile (syntax, unknown builtin, missing entrypoint, ...).
    #[error("bundle policy does not compile: {0}")]
    Compile(String),
}

/// The contents of a bundle, not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct Bundle {
    /// `.manifest` `revision` (empty when absent).
    pub revision: String,
    /// `.manifest` `roots`, `/`-separated (`[""]`, the whole of `data`, when absent).
    pub roots: Vec<String>,
    /// Rego modules as (path in the archive, source).
    pub modules: Vec<(String, String)>,
    /// The data document assembled from every `data.json`.
    pub data: Json,
}

#[derive(Debug, Default, Deserialize)]
struct Manifest {
    #[serde(default)]
    revision: String,
    roots: Option<Vec<String>>,
}

impl Bundle {
    /// Reads a `.tar.gz` bundle that inflates to at most `limit` bytes.
    pub fn from_tar_gz(bytes: &[u8], limit: usize) -> Result<Self, BundleError> {
        Self::from_tar(&gzip::decode(bytes, limit)?)
    }

    /// Reads an uncompressed tar stream of a bundle.
    pub fn from_tar(tar: &[u8]) -> Result<Self, BundleError> {
        let mut manifest = Manifest::default();
        let mut modules = Vec::new();
        let mut data = Json::Object(Map::new());
        let mut data_files = Vec::new();
        for (path, contents) in entries(tar)? {
            let file = path.rsplit('/').next().unwrap_or(&path);
            match file {
                ".manifest" if path == ".manifest" => {
                    manifest = serde_json::from_slice(contents).map_err(|e| invalid(&path, e))?;
                }
                ".signatures.json" => {
                    return Err(BundleError::Unsupported(path, "signed bundles are not verified by svidgate"));
                }
                "data.yaml" | "data.yml" => {
                    return Err(BundleError::Unsupported(path, "use data.json"));
                }
                "policy.wasm" | "plan.json" => {
                    return Err(BundleError::Unsupported(path, "svidgate evaluates rego modules"));
                }
                "data.json" => {
                    let value: Json = serde_json::from_slice(contents).map_err(|e| invalid(&path, e))?;
                    let dir: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
                    data::merge(&mut data, dir.split_last().map_or(&[][..], |(_, d)| d), value)
                        .map_err(|conflict| BundleError::DataConflict(conflict.0))?;
                    data_files.push((path, String::from_utf8_lossy(contents)));
                }
                _ if file.ends_with(".rego") => {
                    let source = String::from_utf8(contents.to_vec()).map_err(|e| invalid(&path, e))?;
                    modules.push((path, source));
                }
                _ => {}
            }
        }
        if modules.is_empty() {
            return Err(BundleError::NoModules);
        }
        let roots = manifest.roots.unwrap_or_else(|| vec![String::new()]);
        let roots: Vec<String> = roots.iter().map(|r| r.trim_matches('/').to_owned()).collect();
        check_data_roots(&data, &mut Vec::new(), &roots)?;
        super::numbers::check(&modules, data_files.iter().map(|(path, text)| (path.as_str(), text.as_ref()))).map_err(BundleError::Compile)?;
        Ok(Self { revision: manifest.revision, roots, modules, data })
    }

    /// Refuses a package (`data.a.b`) that is not under one of the roots.
    pub fn check_package(&self, package: &str) -> Result<(), BundleError> {
        let path: Vec<&str> = package.trim_start_matches("data").split('.').filter(|s| !s.is_empty()).collect();
        if self.roots.iter().any(|root| under(&path, root)) {
            Ok(())
        } else {
            Err(BundleError::OutsideRoots(format!("package {package}"), self.roots.clone()))
        }
    }
}

fn invalid(path: &str, error: impl std::fmt::Display) -> BundleError {
    BundleError::InvalidFile(path.to_owned(), error.to_string())
}

/// Whether `path` lies under `root` (`a/b` is under `a` and under `""`).
fn under(path: &[&str], root: &str) -> bool {
    let root: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
    path.starts_with(&root)
}

/// Every leaf of the data tree is under a root; objects above a root are walked into.
fn check_data_roots(value: &Json, path: &mut Vec<String>, roots: &[String]) -> Result<(), BundleError> {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    if roots.iter().any(|root| under(&parts, root)) {
        return Ok(());
    }
    let outside = || BundleError::OutsideRoots(format!("data path /{}", parts.join("/")), roots.to_vec());
    let object = value.as_object().ok_or_else(outside)?;
    // An empty object above every root writes nothing.
    for (key, child) in object {
        path.push(key.clone());
        let checked = check_data_roots(child, path, roots);
        path.pop();
        checked?;
    }
    Ok(())
}

/// The regular files of a tar stream (ustar, GNU long names, pax `path`), as (path, contents).
fn entries(tar: &[u8]) -> Result<Vec<(String, &[u8])>, BundleError> {
    let corrupt = |m: &str| BundleError::Tar(m.to_owned());
    let mut files = Vec::new();
    let mut at = 0;
    let mut long_name: Option<String> = None;
    loop {
        let Some(header) = tar.get(at..at + BLOCK) else {
            // Archives end with zero blocks; tolerate their absence after the last entry.
            return if at >= tar.len() { Ok(files) } else { Err(corrupt("truncated header")) };
        };
        if header.iter().all(|&b| b == 0) {
            return Ok(files);
        }
        let field = |from: usize, to: usize| header.get(from..to).unwrap_or_default();
        let stored = octal(field(148, 156)).ok_or_else(|| corrupt("bad checksum field"))?;
        let sum: u64 =
            header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        if stored != sum {
            return Err(corrupt("header checksum mismatch"));
        }
        let size = usize::try_from(octal(field(124, 136)).ok_or_else(|| corrupt("bad size field"))?)
            .map_err(|_| corrupt("entry too large"))?;
        let start = at + BLOCK;
        let contents = tar.get(start..start + size).ok_or_else(|| corrupt("truncated entry"))?;
        at = start + size.div_ceil(BLOCK) * BLOCK;
        let text = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8(bytes.get(..end).unwrap_or_default().to_vec()).map_err(|_| corrupt("path is not utf-8"))
        };
        match field(156, 157).first().copied().unwrap_or(0) {
            b'L' => long_name = Some(text(contents)?),
            b'x' => long_name = pax_path(contents).or(long_name),
            b'g' | b'5' => {}
            b'0' | 0 => {
                let name = match long_name.take() {
                    Some(name) => name,
                    None => {
                        let (prefix, name) = (text(field(345, 500))?, text(field(0, 100))?);
                        // POSIX ustar has a name prefix; GNU tar (magic "ustar ") uses those bytes for times.
                        let ustar = field(257, 263) == b"ustar\0";
                        if ustar && !prefix.is_empty() { format!("{prefix}/{name}") } else { name }
                    }
                };
                files.push((clean_path(&name)?, contents));
            }
            _ => {
                return Err(BundleError::Unsupported(text(field(0, 100))?, "links and special files"));
            }
        }
    }
}

/// A tar path without `./` or leading `/`; `..` is refused.
fn clean_path(name: &str) -> Result<String, BundleError> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(BundleError::Tar(format!("path {name:?} leaves the bundle")));
    }
    Ok(parts.join("/"))
}

/// The `path` record of a pax extended header (`"<len> path=<value>\n"`).
fn pax_path(records: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(records).ok()?;
    text.lines().find_map(|line| line.split_once(' ').and_then(|(_, kv)| kv.strip_prefix("path=")).map(str::to_owned))
}

/// An octal tar number field (NUL or space terminated).
fn octal(field: &[u8]) -> Option<u64> {
    let digits: Vec<u8> =
        field.iter().copied().skip_while(|&b| b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0_u64, |n, d| n.checked_mul(8)?.checked_add(u64::from(d - b'0')))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar archive of `files`, gzipped: what `opa build` and `svidgate bundle build` write.
    pub(crate) fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = Vec::new();
        for (path, contents) in files {
            let mut header = [0_u8; BLOCK];
            header[..path.len()].copy_from_slice(path.as_bytes());
            header[100..108].copy_from_slice(b"0000644\0");
            header[124..136].copy_from_slice(format!("{:011o}\0", contents.len()).as_bytes());
            header[136..148].copy_from_slice(b"00000000000\0");
            header[156] = b'0';
            header[257..263].copy_from_slice(b"ustar\0");
            header[263..265].copy_from_slice(b"00");
            let sum: u32 = header.iter().map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
            header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            tar.extend_from_slice(&header);
            tar.extend_from_slice(contents.as_bytes());
            tar.resize(tar.len().div_ceil(BLOCK) * BLOCK, 0);
        }
        tar.resize(tar.len() + 2 * BLOCK, 0);
        gzip::encode(&tar)
    }

    const POLICY: &str = "package envoy.authz\nimport rego.v1\ndefault allow := false\n";

    #[test]
    fn reads_manifest_modules_and_nested_data() {
        let bundle = Bundle::from_tar_gz(
            &tar_gz(&[
                (".manifest", r#"{"revision": "r7", "roots": ["envoy/authz", "svidgate"]}"#),
                ("envoy/authz/policy.rego", POLICY),
                ("svidgate/data.json", r#"{"callers": ["a"]}"#),
                ("svidgate/models/data.json", r#"{"gpt": 1}"#),
                ("README.md", "ignored"),
            ]),
            1 << 20,
        )
        .unwrap();
        assert_eq!(bundle.revision, "r7");
        assert_eq!(bundle.modules, vec![("envoy/authz/policy.rego".to_owned(), POLICY.to_owned())]);
        assert_eq!(bundle.data, serde_json::json!({"svidgate": {"callers": ["a"], "models": {"gpt": 1}}}));
        assert!(bundle.check_package("data.envoy.authz").is_ok());
        assert!(matches!(bundle.check_package("data.envoy"), Err(BundleError::OutsideRoots(..))));
    }

    #[test]
    fn refuses_wrong_roots_corruption_and_unsupported_files() {
        let outside =
            tar_gz(&[(".manifest", r#"{"roots": ["envoy"]}"#), ("p.rego", POLICY), ("data.json", r#"{"x": 1}"#)]);
        assert!(
            matches!(Bundle::from_tar_gz(&outside, 1 << 20), Err(BundleError::OutsideRoots(p, _)) if p == "data path /x")
        );
        let no_roots = tar_gz(&[("p.rego", POLICY), ("data.json", r#"{"x": 1}"#)]);
        assert_eq!(Bundle::from_tar_gz(&no_roots, 1 << 20).unwrap().roots, vec![String::new()]);
        let mut corrupt = tar_gz(&[("p.rego", POLICY)]);
        corrupt.truncate(corrupt.len() / 2);
        assert!(matches!(Bundle::from_tar_gz(&corrupt, 1 << 20), Err(BundleError::Gzip(_))));
        let mut tar = gzip::decode(&tar_gz(&[("p.rego", POLICY)]), 1 << 20).unwrap();
        tar[0] = b'q';
        assert_eq!(
            Bundle::from_tar_gz(&gzip::encode(&tar), 1 << 20),
            Err(BundleError::Tar("header checksum mismatch".into()))
        );
        let signed = tar_gz(&[("p.rego", POLICY), (".signatures.json", "{}")]);
        assert!(matches!(Bundle::from_tar_gz(&signed, 1 << 20), Err(BundleError::Unsupported(..))));
        assert_eq!(Bundle::from_tar_gz(&tar_gz(&[("data.json", "{}")]), 1 << 20), Err(BundleError::NoModules));
        let escape = tar_gz(&[("../p.rego", POLICY)]);
        assert!(matches!(Bundle::from_tar_gz(&escape, 1 << 20), Err(BundleError::Tar(_))));
        let bad_json = tar_gz(&[("p.rego", POLICY), ("data.json", "{")]);
        assert!(matches!(Bundle::from_tar_gz(&bad_json, 1 << 20), Err(BundleError::InvalidFile(..))));
        let conflict = tar_gz(&[("p.rego", POLICY), ("data.json", r#"{"a": 1}"#), ("a/data.json", r#"{"b": 1}"#)]);
        assert!(matches!(Bundle::from_tar_gz(&conflict, 1 << 20), Err(BundleError::DataConflict(_))));
        // A data number OPA writes as written, in a policy that writes numbers into strings.
        let writes = "package p\nlimit := sprintf(\"%v\", [data.p.max])\n";
        let number_text = tar_gz(&[("p/p.rego", writes), ("p/data.json", r#"{"max": 1.50}"#)]);
        assert_eq!(
            Bundle::from_tar_gz(&number_text, 1 << 20),
            Err(BundleError::Compile("p/data.json: the number 1.50 would be written 1.5 by sprintf (OPA writes 1.50); write it as 1.5".into()))
        );
        assert!(Bundle::from_tar_gz(&tar_gz(&[("p/p.rego", writes), ("p/data.json", r#"{"max": 1.5}"#)]), 1 << 20).is_ok());
    }
}
