//! What `ferry bundle` writes and where: output paths are checked before anything is fetched, files that
//! are not regular are never replaced, `--split` into many parts keeps one file open at a time, and a
//! blob damaged in the cache never ships.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

use crate::bundle::sha256sum_check;
use crate::ferry::{command, ferry, run};
use crate::seed::{push_image, Format, PLATFORMS};
use crate::seeded::registry_with_livenessprobe;
use crate::services::{require, Registry};

/// `ferry bundle --image` from `mirror` into `out`, quiet; returns the command to run.
pub fn bundle(mirror: &str, cache: &Path, out: &OsStr, extra: &[&str]) -> Command {
    let mut command = bundle_with_progress(mirror, cache, Path::new(out));
    command.args(extra).arg("-q");
    command
}

/// `ferry bundle --image` from `mirror` into `out`, its progress on stderr.
fn bundle_with_progress(mirror: &str, cache: &Path, out: &Path) -> Command {
    let mut command = command();
    command
        .args([
            "bundle",
            "--image",
            "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
            "--mirror",
        ])
        .arg(format!("registry.k8s.io={mirror}"))
        .arg("--cache-dir")
        .arg(cache)
        .arg("-o")
        .arg(out);
    command
}

#[test]
fn output_paths_are_refused_before_anything_is_fetched() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let fifo = dir.join("fifo.tar");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let elsewhere = dir.join("elsewhere");
    std::fs::write(&elsewhere, b"keep me").unwrap();
    let link = dir.join("link.tar");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let missing = dir.join("missing/x.tar");
    let newline = dir.join("two\nlines.tar");
    let latin1 = dir.join(OsStr::from_bytes(b"caf\xe9.tar"));
    let not_a_file = |path: &Path| {
        format!(
            "{}: exists and is not a regular file; ferry does not replace it with a bundle's file",
            path.display()
        )
    };
    let bad_name = |shown: &str| {
        format!(
            "-o \"{}/{shown}\": a file name with control characters or bytes that are not UTF-8 cannot \
             be written into the .sha256 file as sha256sum -c and ferry verify read it; choose another name",
            dir.display()
        )
    };
    let cases = [
        (fifo.as_os_str(), not_a_file(&fifo)),
        (link.as_os_str(), not_a_file(&link)),
        (
            missing.as_os_str(),
            format!(
                "-o {}: directory {} does not exist (end -o with / to have it created)",
                missing.display(),
                dir.join("missing").display()
            ),
        ),
        (newline.as_os_str(), bad_name("two\\nlines.tar")),
        (latin1.as_os_str(), bad_name("caf\u{fffd}.tar")),
    ];
    let cache = dir.join("cache");
    for (out, message) in cases {
        // Port 9 (discard) refuses connections: any fetch would fail with a network error, exit 1.
        let refused = run(&mut bundle("127.0.0.1:9", &cache, out, &[])).fails_with(2);
        assert_eq!(refused.stderr(), format!("error: {message}\n"));
        assert!(!cache.exists(), "nothing fetched, no cache opened");
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(link.is_symlink());
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep me");
}

/// A registry holding the livenessprobe image the tests bundle, of `size` uncompressed bytes, and a place
/// for the cache and bundles: (the registry, the work directory, the cache in it).
fn seeded(size: usize) -> Option<(Registry, tempfile::TempDir, PathBuf)> {
    let (registry, _) = registry_with_livenessprobe(&PLATFORMS[..1], size)?;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    Some((registry, work, cache))
}

#[test]
fn o_with_a_trailing_slash_creates_the_directory_and_split_keeps_one_part_open() {
    let Some((registry, work, cache)) = seeded(4_000_000) else {
        return;
    };
    let new_dir = work.path().join("new/bundles/");
    run(&mut bundle(
        registry.addr(),
        &cache,
        new_dir.as_os_str(),
        &[],
    ))
    .success();
    let bundle_path = new_dir.join("images-linux-amd64.tar");
    let size = std::fs::metadata(&bundle_path).unwrap().len();
    sha256sum_check(&new_dir, "images-linux-amd64.tar.sha256");

    // Parts of 4 KiB: several hundred, written under a limit of 64 open files.
    let split = work.path().join("split.tar");
    let part = 4096;
    let parts = size.div_ceil(part);
    assert!(parts > 300, "{parts} parts");
    let script = format!("ulimit -n 64 && exec \"$@\" --split {part}");
    let mut limited = Command::new("sh");
    let inner = bundle(registry.addr(), &cache, split.as_os_str(), &[]);
    limited
        .args(["-c", &script, "sh", inner.get_program().to_str().unwrap()])
        .args(inner.get_args());
    let limited = run(&mut limited).success();
    assert!(
        limited.stdout().contains(&format!(", {parts} parts")),
        "{}",
        limited.stdout()
    );
    sha256sum_check(work.path(), "split.tar.parts.sha256");

    // A part size that would make more than 1000 parts is refused, naming the smallest that works.
    let tiny = work.path().join("tiny.tar");
    let refused = run(&mut bundle(
        registry.addr(),
        &cache,
        tiny.as_os_str(),
        &["--split", "100"],
    ))
    .fails_with(2);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: --split 100: a bundle of {size} bytes would be cut into {} parts; at most 1000 \
             are numbered so that they rejoin in order, so use --split {} or more\n",
            size.div_ceil(100),
            size.div_ceil(1000)
        )
    );
    assert!(!work.path().join("tiny.tar.part-000").exists());
}

#[test]
fn a_blob_damaged_in_the_cache_is_fetched_anew_and_the_bundle_is_right() {
    damaged_blobs_are_fetched_anew(1);
}

/// Two blobs damaged in the cache (the warm rebuild is written ahead, which leaves them for the write
/// after it to find): both are fetched anew, once, and the bundle is right.
#[test]
fn two_blobs_damaged_in_the_cache_are_both_fetched_anew() {
    damaged_blobs_are_fetched_anew(2);
}

/// Flips one bit in each of the `count` largest blobs of a warm cache (layers), as a failing disk or RAM
/// would; the rebuild warns of the first one it writes (blobs go in digest order), fetches them anew and
/// writes the same bundle, and the cache holds the right bytes again.
fn damaged_blobs_are_fetched_anew(count: usize) {
    let Some((registry, work, cache)) = seeded(400_000) else {
        return;
    };
    let out = work.path().join("b.tar");
    let good = run(&mut bundle(registry.addr(), &cache, out.as_os_str(), &[])).success();
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(cache.join("ferry-v1/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let damaged = &mut blobs[..count];
    for blob in damaged.iter() {
        let mut bytes = std::fs::read(blob).unwrap();
        bytes[1000] ^= 0x01;
        std::fs::write(blob, &bytes).unwrap();
    }
    damaged.sort();
    let repaired = run(&mut bundle(registry.addr(), &cache, out.as_os_str(), &[])).success();
    let hex = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(
        repaired.stderr(),
        format!(
            "warning: cache file {} was damaged (not blob sha256:{}); fetching it again\n",
            damaged[0].display(),
            hex(&damaged[0])
        )
    );
    assert_eq!(
        repaired.stdout(),
        good.stdout(),
        "the same bundle, byte for byte"
    );
    for blob in damaged.iter() {
        assert_eq!(
            hex::encode(sha2::Sha256::digest(std::fs::read(blob).unwrap())),
            hex(blob),
            "the cache holds the right bytes again"
        );
    }
}

/// Runs `command` with stdout and stderr on a pipe whose reader is already gone, as
/// `ferry … 2>&1 | head -1` leaves them once head has its line; returns the exit code.
fn with_closed_output(command: &mut Command) -> Option<i32> {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    command
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .status()
        .unwrap()
        .code()
}

/// A closed stdout and stderr stop nothing and panic nowhere: the bundle is written (progress lines
/// and result lines lost), and every exit code is the documented one, a damaged bundle's 1 and bad
/// input's 2 included.
#[test]
fn a_closed_stdout_and_stderr_stop_no_bundle_and_change_no_exit_code() {
    let Some((registry, work, cache)) = seeded(400_000) else {
        return;
    };
    let out = work.path().join("b.tar");
    // Without -q: a progress line per task goes to stderr.
    let mut bundle = bundle_with_progress(registry.addr(), &cache, &out);
    assert_eq!(with_closed_output(&mut bundle), Some(0));
    sha256sum_check(work.path(), "b.tar.sha256");
    let mut verify = command();
    verify.arg("verify").arg(&out);
    assert_eq!(with_closed_output(&mut verify), Some(0));

    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&out, &bytes).unwrap();
    assert_eq!(with_closed_output(&mut verify), Some(1), "damaged");
    let mut refused = command();
    refused
        .args(["bundle", "--image", "quay.io/a/b:1", "-o"])
        .arg(work.path().join("missing/x.tar"));
    assert_eq!(with_closed_output(&mut refused), Some(2), "bad input");
}

/// A file system of `size` mounted at `dir` for one command (a private mount namespace, as root or in a
/// user namespace): the runs that need a small disk. Err says why it cannot be had here.
fn on_small_disk(size: &str, dir: &Path, inner: &Command) -> Result<Command, String> {
    std::fs::create_dir_all(dir).unwrap();
    let script = format!(
        "mount -t tmpfs -o size={size} tmpfs \"$0\" || exit 99; \"$@\"; status=$?; ls -A \"$0\"; exit $status"
    );
    let probe = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .arg(dir)
        .arg("true")
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "cannot mount a tmpfs in a private namespace: {}",
            String::from_utf8_lossy(&probe.stderr)
        ));
    }
    let mut command = Command::new("unshare");
    command
        .args(["-rm", "sh", "-c", &script])
        .arg(dir)
        .arg(inner.get_program())
        .args(inner.get_args());
    Ok(command)
}

/// A bundle that cannot fit is refused before a byte is written, saying what it needs against what is
/// free and where to write it instead; nothing is left on the full disk.
#[test]
fn a_bundle_the_disk_cannot_hold_is_refused_before_it_is_written() {
    let Some((registry, work, cache)) = seeded(400_000) else {
        return;
    };
    let fits = work.path().join("b.tar");
    run(&mut bundle(registry.addr(), &cache, fits.as_os_str(), &[])).success();
    let needed = std::fs::metadata(&fits).unwrap().len();
    let small = work.path().join("stick");
    let out = small.join("b.tar");
    let Some(mut full) = require(on_small_disk(
        "128k",
        &small,
        &bundle(registry.addr(), &cache, out.as_os_str(), &[]),
    )) else {
        return;
    };
    assert!(needed > 128 << 10, "{needed}");
    let refused = run(&mut full).fails_with(1);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: not enough space for {}: the bundle needs {}, and {} has {} free; make room there, \
             or write the bundle where there is room with -o DIR/\n",
            out.display(),
            ::ferry::progress::DecimalBytes(needed),
            small.display(),
            ::ferry::progress::DecimalBytes(128 << 10),
        )
    );
    assert_eq!(refused.stdout(), "", "nothing left on the small disk");
}

/// A warm re-run of `bundle` says, as `pull` does, that nothing was downloaded.
#[test]
fn a_warm_bundle_says_that_nothing_was_downloaded() {
    let Some((registry, work, cache)) = seeded(100_000) else {
        return;
    };
    let mut bundle = bundle_with_progress(registry.addr(), &cache, &work.path().join("b.tar"));
    let cold = run(&mut bundle).success();
    assert!(
        cold.stderr()
            .lines()
            .last()
            .unwrap()
            .starts_with("1 image(s): downloaded "),
        "{}",
        cold.stderr()
    );
    let warm = run(&mut bundle).success();
    assert_eq!(
        warm.stderr().lines().last(),
        Some("1 image(s): nothing downloaded, every registry blob was already in the cache"),
        "{}",
        warm.stderr()
    );
}

/// A warm rebuild writes the bundle from what the cache noted each image resolved to while it asks the
/// registry what the tags name, and keeps that bundle only if they name the same images: a moved tag
/// gets the image it names now, and a registry that cannot be asked leaves nothing behind.
#[test]
fn a_bundle_written_ahead_is_kept_only_if_the_tags_name_what_the_cache_noted() {
    let Some((registry, work, cache)) = seeded(400_000) else {
        return;
    };
    let out = work.path().join("b.tar");
    let mut bundle = bundle_with_progress(registry.addr(), &cache, &out);
    let note = format!(
        "note: the registry's tags name what the cache noted: writing {} began while they were asked",
        out.display()
    );
    let cold = run(&mut bundle).success();
    assert!(!cold.stderr().contains("began while"), "{}", cold.stderr());
    let warm = run(&mut bundle).success();
    assert!(
        warm.stderr().lines().any(|line| line == note),
        "{}",
        warm.stderr()
    );
    assert_eq!(
        warm.stdout(),
        cold.stdout(),
        "the same bundle, byte for byte"
    );
    let first = std::fs::read(&out).unwrap();

    let moved = push_image(
        registry.addr(),
        "sig-storage/livenessprobe",
        "v2.12.0",
        Format::DockerList,
        &PLATFORMS[..1],
        300_000,
    );
    let rebuilt = run(&mut bundle).success();
    assert!(
        !rebuilt.stderr().contains("began while"),
        "{}",
        rebuilt.stderr()
    );
    let inspected = ferry(&["inspect", out.to_str().unwrap(), "--json"]).success();
    let manifest = &moved.manifests[0].1;
    assert!(
        inspected.stdout().contains(manifest.as_str()),
        "the bundle holds the image the tag names now, {manifest}: {}",
        inspected.stdout()
    );
    ferry(&["verify", out.to_str().unwrap()]).success();
    assert_ne!(std::fs::read(&out).unwrap(), first);

    let kept = std::fs::read(&out).unwrap();
    drop(registry);
    run(&mut bundle).fails_with(1);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        kept,
        "the bundle in place is left as it was"
    );
    let mut left: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["b.tar", "b.tar.sha256", "cache"],
        "nothing written ahead is left"
    );
}
