//! Records the git commit ferry is built from, for `ferry --version`. A build outside a git checkout (a
//! source tarball) still succeeds and says it does not know its commit.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let commit = match commit_of(Path::new(&root)) {
        Some((commit, watched)) => {
            // A new commit changes HEAD or the branch it names; nothing else changes the answer.
            for path in watched {
                println!("cargo:rerun-if-changed={path}");
            }
            commit
        }
        None => {
            println!("cargo:rerun-if-changed=build.rs");
            "commit unknown: built outside a git checkout".to_string()
        }
    };
    println!("cargo:rustc-env=FERRY_BUILD_COMMIT={commit}");
}

/// `abbreviated-hash date` of HEAD, and the files whose change means a new HEAD; `None` unless `root`
/// is the top of a git work tree (a tarball unpacked inside another repository must not take its commit).
fn commit_of(root: &Path) -> Option<(String, Vec<String>)> {
    let top = git(root, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != root.canonicalize().ok()? {
        return None;
    }
    let commit = git(root, &["log", "-1", "--format=%h %cs", "--abbrev=12"])?;
    let mut watched = vec![git(
        root,
        &["rev-parse", "--path-format=absolute", "--git-path", "HEAD"],
    )?];
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(
            root,
            &["rev-parse", "--path-format=absolute", "--git-path", &branch],
        )?);
    }
    watched.push(git(
        root,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "packed-refs",
        ],
    )?);
    // Cargo reruns on every build for a watched path that does not exist (a branch only in packed-refs).
    watched.retain(|path| Path::new(path).exists());
    Some((commit, watched))
}

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}
