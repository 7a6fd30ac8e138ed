//! What travels beside and inside a bundle is anyone's: checksum files that are FIFOs, devices or far
//! too large, and annotations too long for a table. Also the files `serve` and `pull` read at start
//! (issue 20, items 6 and 7).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ferry::{command, ferry, mkfifo, run_within, Run};
use crate::seed::{push_image, Format, PLATFORMS};
use crate::services::{require, Registry};

const IMAGE: &str = "registry.k8s.io/sig-storage/csi-resizer:v1.9.0";

/// A real bundle of one image (cut in 100 kB parts with `split`); returns (work dir, bundle path).
fn bundle(split: bool) -> Option<(tempfile::TempDir, PathBuf)> {
    let registry = require(Registry::plain())?;
    push_image(
        registry.addr(),
        "sig-storage/csi-resizer",
        "v1.9.0",
        Format::DockerList,
        &PLATFORMS[..1],
        400_000,
    );
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("b.tar");
    let mut args = vec![
        "bundle".to_string(),
        "--image".into(),
        IMAGE.into(),
        "--mirror".into(),
        format!("registry.k8s.io={}", registry.addr()),
        "--cache-dir".into(),
        work.path().join("cache").to_str().unwrap().into(),
        "-o".into(),
        path.to_str().unwrap().into(),
        "-q".into(),
    ];
    if split {
        args.extend(["--split".into(), "100K".into()]);
    }
    ferry(&args.iter().map(String::as_str).collect::<Vec<_>>()).success();
    Some((work, path))
}

fn verify(path: &Path) -> Run {
    run_within(command().arg("verify").arg(path), Duration::from_secs(60))
}

/// Puts something in a file's place.
type Make = fn(&Path);

fn replace_with(path: &Path, make: impl FnOnce(&Path)) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    make(path);
}

/// A `.sha256` symlinked to /dev/zero took 4 GB of memory before "no .sha256 file", a FIFO blocked
/// verify forever, and any read error passed as absence: each is now a checksum that cannot be read.
#[test]
fn a_checksum_file_that_cannot_be_read_is_reported_not_taken_for_absent() {
    let Some((_work, path)) = bundle(false) else {
        return;
    };
    let sums = PathBuf::from(format!("{}.sha256", path.display()));
    let intact = verify(&path).success();
    assert!(
        intact
            .stdout()
            .starts_with(&format!("checksum: matches {}\n", sums.display())),
        "{}",
        intact.stdout()
    );
    let saved = std::fs::read(&sums).unwrap();
    let cases: [(Make, &str); 4] = [
        (
            |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
            "it is a character device, not a regular file",
        ),
        (
            |p| mkfifo(p),
            "it is a FIFO (named pipe), not a regular file",
        ),
        (
            |p| std::fs::create_dir(p).unwrap(),
            "it is a directory, not a regular file",
        ),
        (
            |p| std::fs::write(p, vec![b'0'; 2 << 20]).unwrap(),
            "it is larger than 1048576 bytes, which no such file is",
        ),
    ];
    for (make, reason) in cases {
        replace_with(&sums, make);
        let refused = verify(&path).fails_with(1);
        assert!(
            refused.stdout().starts_with(&format!(
                "checksum: UNREADABLE {}: {reason}\n",
                sums.display()
            )),
            "{reason}: {}",
            refused.stdout()
        );
        assert_eq!(
            refused.stderr(),
            format!("error: {} is damaged or incomplete\n", path.display())
        );
    }
    replace_with(&sums, |_| {});
    let absent = verify(&path).success();
    assert!(
        absent.stdout().starts_with(
            "checksum: no .sha256 file beside the bundle; every blob and document was checked instead\n"
        ),
        "{}",
        absent.stdout()
    );
    std::fs::write(&sums, saved).unwrap();
    verify(&path).success();
}

#[test]
fn a_parts_checksum_file_is_read_within_a_bound() {
    let Some((_work, path)) = bundle(true) else {
        return;
    };
    let first = PathBuf::from(format!("{}.part-000", path.display()));
    let parts = PathBuf::from(format!("{}.parts.sha256", path.display()));
    verify(&first).success();
    replace_with(&parts, |p| {
        std::os::unix::fs::symlink("/dev/zero", p).unwrap()
    });
    let refused = verify(&first).fails_with(1);
    assert!(
        refused.stdout().starts_with(&format!(
            "checksum: UNREADABLE {}: it is a character device, not a regular file\n",
            parts.display()
        )),
        "{}",
        refused.stdout()
    );
}

/// Rewrites `index.json` in a bundle: its annotations are not covered by any digest ferry checks.
fn rewrite_index(bundle: &Path, mut edit: impl FnMut(&mut serde_json::Value)) {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if entry.path().unwrap().to_str() == Some("index.json") {
            let mut index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            edit(&mut index);
            // As ferry writes it: pretty, one newline at the end.
            bytes = serde_json::to_vec_pretty(&index).unwrap();
            bytes.push(b'\n');
            header.set_size(bytes.len() as u64);
            header.set_cksum();
        }
        builder.append(&header, bytes.as_slice()).unwrap();
    }
    std::fs::write(bundle, builder.into_inner().unwrap()).unwrap();
    let _ = std::fs::remove_file(format!("{}.sha256", bundle.display()));
}

/// A cell over 65,535 characters (Rust's format width limit) made every table panic, exit 101.
#[test]
fn a_table_cell_too_long_to_show_is_cut() {
    let Some((_work, path)) = bundle(false) else {
        return;
    };
    let long = format!("registry.k8s.io/{}:v1", "x".repeat(70_000));
    rewrite_index(&path, |index| {
        index["manifests"][0]["annotations"]["io.containerd.image.name"] = long.clone().into();
    });
    let shown = run_within(command().arg("inspect").arg(&path), Duration::from_secs(60)).success();
    // verify names the image as well, cut the same way, and no line of its is longer than a problem.
    let verified = run_within(command().arg("verify").arg(&path), Duration::from_secs(60));
    assert!(
        verified
            .stdout()
            .lines()
            .all(|line| line.chars().count() < 1100),
        "{}",
        verified.stdout()
    );
    assert!(
        verified.stdout().contains(&format!(
            "BAD   registry.k8s.io/{}…(69819 characters cut)…{}:v1  sha256:",
            "x".repeat(84),
            "x".repeat(97)
        )),
        "{}",
        verified.stdout()
    );
    let first_row = shown.stdout().lines().nth(1).unwrap().to_string();
    assert!(
        first_row.starts_with(&format!(
            "registry.k8s.io/{}…(69819 characters cut)…{}:v1  linux/amd64  sha256:",
            "x".repeat(84),
            "x".repeat(97)
        )),
        "{}",
        shown.stdout()
    );
}

/// `serve` read --htpasswd and its TLS files whole, following a FIFO into a wait that never ended.
#[test]
fn serve_and_pull_refuse_fifos_in_place_of_their_files() {
    let Some((work, path)) = bundle(false) else {
        return;
    };
    let fifo = work.path().join("fifo");
    mkfifo(&fifo);
    let fifo_arg = fifo.to_str().unwrap();
    let key = work.path().join("key.pem");
    std::fs::write(&key, "").unwrap();
    let serve = |extra: &[&str]| {
        run_within(
            command()
                .arg("serve")
                .arg(&path)
                .args(["--listen", "127.0.0.1:0"])
                .args(extra),
            Duration::from_secs(60),
        )
        .fails_with(2)
    };
    let htpasswd = serve(&["--htpasswd", fifo_arg]);
    assert!(
        htpasswd.stderr().ends_with(&format!(
            "error: --htpasswd {fifo_arg}: it is a FIFO (named pipe), not a regular file\n"
        )),
        "{}",
        htpasswd.stderr()
    );
    let tls = serve(&["--tls-cert", fifo_arg, "--tls-key", key.to_str().unwrap()]);
    assert!(
        tls.stderr().ends_with(&format!(
            "error: --tls-cert {fifo_arg} / --tls-key {}: not a usable certificate and key\n  \
             caused by: cannot read {fifo_arg}: it is a FIFO (named pipe), not a regular file\n",
            key.display()
        )),
        "{}",
        tls.stderr()
    );
    let pull = run_within(
        command().args(["pull", "--image", "127.0.0.1:1/x:1", "--ca-cert", fifo_arg]),
        Duration::from_secs(60),
    );
    assert_ne!(pull.code(), Some(0));
    assert_eq!(
        pull.stderr(),
        format!(
            "error: cannot read CA certificate {fifo_arg}\n  caused by: it is a FIFO (named pipe), \
             not a regular file\n"
        )
    );
}

/// A bundle given as a FIFO held verify, inspect and merge on their open until a second signal; whatever a
/// bundle is read from must be a regular file, and anything else is refused naming it and what it is.
#[test]
fn a_bundle_that_is_not_a_regular_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("b.tar");
    mkfifo(&fifo);
    let device = dir.path().join("z.tar");
    std::os::unix::fs::symlink("/dev/zero", &device).unwrap();
    let base = dir.path().join("base.tar");
    std::fs::write(&base, b"").unwrap();
    let merged = dir.path().join("merged.tar");
    for (path, what) in [
        (&fifo, "a FIFO (named pipe)"),
        (&device, "a character device"),
    ] {
        for args in [
            vec!["verify".as_ref(), path.as_os_str()],
            vec!["inspect".as_ref(), path.as_os_str()],
            vec!["load".as_ref(), path.as_os_str()],
            vec![
                "merge".as_ref(),
                base.as_os_str(),
                path.as_os_str(),
                "-o".as_ref(),
                merged.as_os_str(),
            ],
        ] {
            let refused = run_within(command().args(&args), Duration::from_secs(20)).fails_with(2);
            assert!(
                refused.stderr().ends_with(&format!(
                    "error: cannot read {}\n  caused by: it is {what}, not a regular file\n",
                    path.display()
                )),
                "{args:?}: {}",
                refused.stderr()
            );
        }
    }
    assert!(!merged.exists());
}
