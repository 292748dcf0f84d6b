//! Embeds the git revision the module is built from, logged once at VM start.

fn main() {
    let from_env = std::env::var("SVIDGATE_GIT_SHA").ok().filter(|s| !s.is_empty());
    let sha = from_env.or_else(git_sha).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SVIDGATE_GIT_SHA={sha}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    println!("cargo:rerun-if-env-changed=SVIDGATE_GIT_SHA");
}

fn git_sha() -> Option<String> {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
}
