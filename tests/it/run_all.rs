//! tests/run-all.sh itself: the skipped tests are listed at the end however the run ends.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The script in a copy of the repository's layout, with a `cargo` that passes the checks and whose
/// tests record one skip and end with `status`; returns the script's exit code and stderr, and what it
/// left in its temporary directory.
fn run_all_with_tests_ending(status: i32) -> (Option<i32>, String, Vec<String>) {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path();
    for dir in ["tests", ".ci", "bin", "tmp"] {
        std::fs::create_dir(repo.join(dir)).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run-all.sh");
    std::fs::copy(script, repo.join("tests/run-all.sh")).unwrap();
    std::fs::write(repo.join(".ci/install-deps.sh"), "").unwrap();
    let cargo = repo.join("bin/cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\n[ \"$1\" = test ] || exit 0\n\
             echo 'it::serve::x: no registry' >> \"$FERRY_SKIP_LOG\"\nexit {status}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        repo.join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let output = Command::new("bash")
        .arg(repo.join("tests/run-all.sh"))
        .env("PATH", path)
        // This test is about the banner; the static build has its own tests.
        .env("FERRY_STATIC_BUILD", "never")
        .env("TMPDIR", repo.join("tmp"))
        .output()
        .unwrap();
    let left = std::fs::read_dir(repo.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        left,
    )
}

#[test]
fn the_skipped_banner_ends_the_run_whether_the_tests_pass_or_fail() {
    let banner = "==================== SKIPPED: these tests did not run ====================\n\
                  it::serve::x: no registry\n";
    for status in [0, 101] {
        let (code, stderr, left) = run_all_with_tests_ending(status);
        assert_eq!(code, Some(status), "the tests' status is the script's");
        assert_eq!(stderr, banner);
        assert!(left.is_empty(), "the skip log is removed: {left:?}");
    }
}
