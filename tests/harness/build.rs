//! Generates one test per corpus file and family (native, wasm): `tests/cases/foo.yaml` becomes
//! `foo_native` and `foo_wasm` in the `corpus` test binary.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cases");
    println!("cargo:rerun-if-changed={}", cases.display());
    let mut files: Vec<_> = std::fs::read_dir(&cases)
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut out = String::new();
    for path in files {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let ident = stem.replace(['-', '.'], "_");
        for (family, suffix) in [("Native", "native"), ("Wasm", "wasm")] {
            let _ = writeln!(
                out,
                "#[test]\nfn {ident}_{suffix}() -> Result<()> {{\n    run({:?}, Family::{family})\n}}\n",
                path.display().to_string()
            );
        }
    }
    let Some(out_dir) = std::env::var_os("OUT_DIR") else { return };
    if let Err(e) = std::fs::write(Path::new(&out_dir).join("corpus_tests.rs"), out) {
        println!("cargo:warning=cannot write corpus tests: {e}");
    }
}
