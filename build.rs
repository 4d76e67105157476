//! Build information for `coexistd --version` and `coexist_build_info`: the git revision
//! and branch of the source (`unknown` outside a git checkout, e.g. a source package;
//! `COEXISTD_REVISION` / `COEXISTD_BRANCH` override), and the compiler's version.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let revision = std::env::var("COEXISTD_REVISION")
        .ok()
        .or_else(|| run("git", &["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let branch = std::env::var("COEXISTD_BRANCH")
        .ok()
        .or_else(|| run("git", &["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rust = run(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=COEXISTD_REVISION={revision}");
    println!("cargo:rustc-env=COEXISTD_BRANCH={branch}");
    println!("cargo:rustc-env=COEXISTD_RUSTVERSION={rust}");
    println!("cargo:rerun-if-env-changed=COEXISTD_REVISION");
    println!("cargo:rerun-if-env-changed=COEXISTD_BRANCH");
    // Rebuilt when the checkout moves: HEAD, the branch it names, packed refs (found
    // through git, so that worktrees, whose .git is a file, work too).
    let mut watched = Vec::new();
    for what in ["HEAD", "packed-refs"] {
        watched.extend(run("git", &["rev-parse", "--git-path", what]));
    }
    if let Some(r) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(run("git", &["rev-parse", "--git-path", &r]));
    }
    for p in watched {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
