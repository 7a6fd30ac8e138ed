//! A real `ferry bundle` told to stop the ways systemd, `timeout`, a closed terminal and Ctrl-C tell it,
//! while it fetches and while it writes: it must leave nothing behind and exit 128 + the signal. And
//! what a killed run could not remove, the next run sweeps, leaving a live run's files alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bundle::{sha256sum_check, Csi480};

/// Vendor tarballs big enough that compressing and writing them takes a moment to catch.
const VENDOR_SIZE: usize = 16 << 20;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Names in `dir` that satisfy `keep`.
fn names(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    std::fs::read_dir(dir).map_or(Vec::new(), |entries| {
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| keep(name))
            .collect()
    })
}

/// A vendor layer being compressed into the cache: ferry is fetching.
fn compressing(cache: &Path) -> bool {
    let partial = cache.join("ferry-v1/partial");
    names(&partial, |n| n.starts_with(".new-"))
        .iter()
        .any(|n| std::fs::metadata(partial.join(n)).is_ok_and(|m| m.len() > 0))
}

/// How many staging directories beside the output hold bundle bytes: how many runs are writing.
fn writing(out: &Path) -> usize {
    names(out, |n| n.ends_with(".ferry-partial"))
        .iter()
        .filter(|staging| {
            names(&out.join(staging), |_| true)
                .iter()
                .any(|f| std::fs::metadata(out.join(staging).join(f)).is_ok_and(|m| m.len() > 0))
        })
        .count()
}

/// Starts `command` and freezes it (SIGSTOP) at a moment when `caught` holds, so that a signal sent
/// next lands exactly there. The moment may pass between two looks, so up to 20 runs are tried, each
/// after `reset`. Returns the stopped process.
fn stopped_when(
    mut command: impl FnMut() -> Command,
    reset: impl Fn(),
    caught: impl Fn() -> bool,
) -> Child {
    for _ in 0..20 {
        reset();
        let mut child = command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if caught() {
                signal(&child, "STOP");
                if caught() && child.try_wait().unwrap().is_none() {
                    return child;
                }
                signal(&child, "CONT");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    panic!("in 20 runs, ferry was never caught at the moment the test needs");
}

/// Sends `name` to a stopped process, lets it go on, and returns (exit code, stderr).
fn stop_with(child: Child, name: &str) -> (Option<i32>, String) {
    signal(&child, name);
    signal(&child, "CONT");
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The CSI's images and vendor packages; then an empty directory for the bundles, a cache holding every
/// blob (warm), and where a cache may be made from nothing (cold).
fn setup() -> Option<(Csi480, PathBuf, PathBuf, PathBuf)> {
    let csi = Csi480::with_vendor_size(VENDOR_SIZE)?;
    let work = csi.work.path().to_path_buf();
    let warm = work.join("warm");
    csi.bundle(warm.to_str().unwrap(), "warm-up.tar", &[])
        .success();
    std::fs::create_dir(work.join("out")).unwrap();
    Some((csi, work.join("out"), warm, work.join("cold")))
}

#[test]
fn a_signal_while_fetching_or_writing_leaves_nothing_and_exits_128_plus_its_number() {
    let Some((csi, out, warm, cold)) = setup() else {
        return;
    };
    for (phase, name, code) in [
        ("fetching", "TERM", 143),
        ("fetching", "HUP", 129),
        ("writing", "INT", 130),
        ("writing", "TERM", 143),
    ] {
        let fetching = phase == "fetching";
        let cache = if fetching { &cold } else { &warm };
        let child = stopped_when(
            || csi.bundle_command(cache.to_str().unwrap(), "out/b.tar", &["--split", "8M"]),
            || {
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir(&out).unwrap();
                if fetching {
                    let _ = std::fs::remove_dir_all(&cold);
                }
            },
            || {
                if fetching {
                    compressing(&cold)
                } else {
                    writing(&out) == 1
                }
            },
        );
        let (exit, stderr) = stop_with(child, name);
        assert_eq!(exit, Some(code), "SIG{name} while {phase}: {stderr}");
        assert_eq!(
            stderr,
            format!("error: interrupted by SIG{name}; the files being written were removed\n")
        );
        assert_eq!(
            names(&out, |_| true),
            Vec::<String>::new(),
            "SIG{name} while {phase}: nothing beside the bundle"
        );
        assert_eq!(
            names(&cache.join("ferry-v1/partial"), |n| n.starts_with(".new-")),
            Vec::<String>::new(),
            "SIG{name} while {phase}: no half-compressed layer in the cache"
        );
    }
}

#[test]
fn what_killed_runs_left_is_swept_and_a_live_runs_files_are_kept() {
    let Some((csi, out, warm, cold)) = setup() else {
        return;
    };
    let staging = || names(&out, |n| n.ends_with(".ferry-partial"));
    let csi = &csi;
    let command = |cache: &Path, name: &str| {
        let cache = cache.to_str().unwrap().to_string();
        let name = format!("out/{name}");
        move || csi.bundle_command(&cache, &name, &[])
    };
    // A run that missed its moment finished its bundle; it goes before the next try.
    let remove = |name: &str| {
        let _ = std::fs::remove_file(out.join(name));
        let _ = std::fs::remove_file(out.join(format!("{name}.sha256")));
    };

    // A run killed while compressing a vendor layer: it leaves a temporary in the cache.
    let killed = stopped_when(
        command(&cold, "cold.tar"),
        || {
            remove("cold.tar");
            let _ = std::fs::remove_dir_all(&cold);
        },
        || compressing(&cold),
    );
    signal(&killed, "KILL");
    killed.wait_with_output().unwrap();
    // A live run, frozen while it writes: it holds its staging directory.
    let live = stopped_when(
        command(&warm, "live.tar"),
        || remove("live.tar"),
        || writing(&out) == 1,
    );
    let live_staging = staging();
    assert_eq!(live_staging.len(), 1, "{live_staging:?}");
    // A run killed while writing: it leaves its staging directory.
    let killed = stopped_when(
        command(&warm, "killed.tar"),
        || remove("killed.tar"),
        || writing(&out) == 2,
    );
    signal(&killed, "KILL");
    killed.wait_with_output().unwrap();
    assert_eq!(staging().len(), 2, "the killed writer left its staging");
    assert!(
        !names(&cold.join("ferry-v1/partial"), |n| n.starts_with(".new-")).is_empty(),
        "the killed compression left its temporaries"
    );

    // The next run sweeps both and keeps the live run's.
    csi.bundle(cold.to_str().unwrap(), "out/next.tar", &[])
        .success();
    assert_eq!(
        staging(),
        live_staging,
        "only the live run's staging is left"
    );
    assert_eq!(
        names(&cold.join("ferry-v1/partial"), |n| n.starts_with(".new-")),
        Vec::<String>::new()
    );
    // And the live run finishes its bundle.
    signal(&live, "CONT");
    let output = live.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut left = names(&out, |_| true);
    left.sort();
    assert_eq!(
        left,
        ["live.tar", "live.tar.sha256", "next.tar", "next.tar.sha256"]
    );
    sha256sum_check(&out, "live.tar.sha256");
}
