//! Recovery data (PAR2): ferry's files against Debian's par2 (par2cmdline) both ways, for one file and
//! for the parts of a split bundle.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry::recovery::{self, CreateOptions, RecoverySet};

use crate::services;

/// par2cmdline must be there: the tests compare ferry with it.
fn par2() -> Option<()> {
    services::require(services::have("par2"))
}

fn run_par2(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new("par2")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("par2 runs");
    assert!(
        output.status.success(),
        "par2 {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Bytes that look like a bundle: runs of noise and of zeros (tar padding, sparse layers).
fn bundle_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut bytes = Vec::with_capacity(length);
    while bytes.len() < length {
        let run = (next() % 40_000) as usize + 1;
        let noise = next() % 5 != 0;
        for _ in 0..run.min(length - bytes.len()) {
            bytes.push(if noise { next() as u8 } else { 0 });
        }
    }
    bytes
}

fn flip_bytes(path: &Path, offsets: &[u64]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    for &offset in offsets {
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, offset).unwrap();
        byte[0] ^= 0x5A;
        file.write_all_at(&byte, offset).unwrap();
    }
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn repair_with_ferry(bundle: &Path) -> recovery::Repaired {
    let set = RecoverySet::load(bundle).unwrap();
    let damage = set.check().unwrap();
    recovery::repair(&set, &damage).unwrap().commit().unwrap()
}

#[test]
fn par2cmdline_verifies_and_repairs_with_ferrys_recovery_files() {
    let Some(()) = par2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.tar");
    let original = bundle_bytes(2_000_000, 1);
    std::fs::write(&bundle, &original).unwrap();
    let options = CreateOptions::new("5%".parse().unwrap());
    let created = recovery::create(
        std::slice::from_ref(&bundle),
        &recovery::index_path(&bundle),
        &options,
    )
    .unwrap();
    // As par2cmdline cuts it: 2000 slices of 1000 bytes.
    assert_eq!(
        (
            created.source_slices,
            created.slice_size,
            created.recovery_slices
        ),
        (2000, 1000, 100)
    );
    assert_eq!(
        names(&created.files),
        ["b.tar.par2", "b.tar.vol000+100.par2"]
    );

    run_par2(dir.path(), &["verify", "-q", "b.tar.par2"]);
    flip_bytes(&bundle, &[0, 1_000_000, 1_999_999]);
    run_par2(dir.path(), &["repair", "-q", "b.tar.par2"]);
    assert!(std::fs::read(&bundle).unwrap() == original);
}

#[test]
fn ferry_repairs_with_recovery_files_par2cmdline_made() {
    let Some(()) = par2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.tar");
    let original = bundle_bytes(2_000_002, 2);
    std::fs::write(&bundle, &original).unwrap();
    run_par2(dir.path(), &["create", "-q", "-r5", "b.tar"]);
    flip_bytes(&bundle, &[5, 77_777, 1_500_000, 2_000_001]);
    let set = RecoverySet::load(&bundle).unwrap();
    // par2cmdline 0.8.1 cuts 2 000 002 bytes into 1993 slices of 1004 bytes.
    assert_eq!(
        (set.source_slices(), set.slice_size(), set.recovery_slices()),
        (1993, 1004, 100)
    );
    let repaired = repair_with_ferry(&bundle);
    assert_eq!(repaired.slices, 4);
    assert!(std::fs::read(&bundle).unwrap() == original);
}

/// The parts of a split bundle are one PAR2 set of several files, numbered in file-ID order: a lost part
/// is rebuilt by either tool from the other's files.
#[test]
fn a_lost_part_is_rebuilt_by_par2cmdline_and_by_ferry_from_each_others_files() {
    let Some(()) = par2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.tar");
    let parts: Vec<(PathBuf, Vec<u8>)> = (0..4)
        .map(|i| {
            let path = dir.path().join(format!("b.tar.part-{i:03}"));
            let bytes = bundle_bytes(if i == 3 { 123_456 } else { 400_000 }, 10 + i);
            std::fs::write(&path, &bytes).unwrap();
            (path, bytes)
        })
        .collect();
    let paths: Vec<PathBuf> = parts.iter().map(|(p, _)| p.clone()).collect();
    let intact = || {
        parts
            .iter()
            .all(|(path, bytes)| std::fs::read(path).ok().as_ref() == Some(bytes))
    };

    // 200 slices (tests run unoptimized; the default 2000 would take minutes): a part is 61 of 202
    // slices, and 35% (71 recovery slices) covers the loss of one.
    let mut options = CreateOptions::new("35%".parse().unwrap());
    options.source_slices = 200;
    recovery::create(&paths, &recovery::index_path(&bundle), &options).unwrap();
    run_par2(dir.path(), &["verify", "-q", "b.tar.par2"]);
    std::fs::remove_file(&paths[1]).unwrap();
    run_par2(dir.path(), &["repair", "-q", "b.tar.par2"]);
    assert!(intact());

    for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if file.file_name().to_string_lossy().ends_with(".par2") {
            std::fs::remove_file(file.path()).unwrap();
        }
    }
    let mut args = vec!["create", "-q", "-b200", "-r35", "b.tar.par2"];
    let part_names = names(&paths);
    args.extend(part_names.iter().map(String::as_str));
    run_par2(dir.path(), &args);
    std::fs::remove_file(&paths[2]).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[0])
        .unwrap()
        .set_len(390_000)
        .unwrap();
    let repaired = repair_with_ferry(&bundle);
    let mut rewritten = names(&repaired.files);
    rewritten.sort();
    assert_eq!(rewritten, [part_names[0].clone(), part_names[2].clone()]);
    assert!(intact());
}

// ferry's commands: bundle --recovery, verify, repair, and push/load/serve's refusal.

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A real bundle of about 2.3 MB, built with `extra` arguments; returns ferry's output too.
fn recovered_bundle(extra: &[&str]) -> Option<(tempfile::TempDir, PathBuf, String)> {
    recovered_bundle_of(extra, 2_400_000)
}

fn recovered_bundle_of(
    extra: &[&str],
    layers: usize,
) -> Option<(tempfile::TempDir, PathBuf, String)> {
    let (work, bundle, run) = crate::verify::small_bundle_with(extra, layers)?;
    Some((work, bundle, run.stdout()))
}

/// How ferry cuts `size` bytes at `percent`: (slice size, source slices, recovery slices).
fn blocks(size: u64, percent: u64) -> (u64, u64, u64) {
    let slice = size.div_ceil(2000).next_multiple_of(4);
    let slices = size.div_ceil(slice);
    (slice, slices, (slices * percent).div_ceil(100))
}

/// The one volume of `recovery` slices, named as ferry (and par2cmdline) name it.
fn volume_name(recovery: u64) -> String {
    let width = recovery.to_string().len().max(2);
    format!("b.tar.vol{:0width$}+{recovery:0width$}.par2", 0)
}

fn ferry(args: &[&str]) -> crate::ferry::Run {
    crate::ferry::ferry(args)
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_bundle_with_recovery_data_is_repaired_after_flipped_bytes_and_a_truncation() {
    let Some((work, bundle, said)) = recovered_bundle(&["--recovery", "5%"]) else {
        return;
    };
    let size = std::fs::metadata(&bundle).unwrap().len();
    let original = sha256(&bundle);
    // About 2000 blocks, 5% more of them recovery blocks; the .sha256 covers the recovery files.
    let (slice, slices, recovery) = blocks(size, 5);
    let volume = volume_name(recovery);
    let line = said
        .lines()
        .find(|l| l.trim_start().starts_with("recovery:"))
        .unwrap();
    assert!(
        line.starts_with(&format!("  recovery: {recovery} blocks of {slice} bytes for {slices} (repairs up to {recovery} damaged blocks), "))
            && line.ends_with(&format!(": b.tar.par2, {volume}")),
        "{said}"
    );
    let sums = std::fs::read_to_string(bundle.with_file_name("b.tar.sha256")).unwrap();
    let names: Vec<&str> = sums
        .lines()
        .map(|l| l.split("  ").nth(1).unwrap())
        .collect();
    assert_eq!(names, ["b.tar", "b.tar.par2", &volume]);
    let checked = Command::new("sha256sum")
        .args(["-c", "b.tar.sha256"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(checked.status.success());

    // Flipped bytes in three blocks.
    flip_bytes(&bundle, &[slice * 3 + 1, size / 2, size - 2000]);
    let verified = ferry(&["verify", text(&bundle)]).fails_with(1);
    let said = format!(
        "3 damaged blocks; {recovery} recovery blocks available: run `ferry repair {}`",
        bundle.display()
    );
    // Byte 3 blocks in is in a tar header: verify cannot read on, and says so with what repair can do.
    assert_eq!(
        verified.stderr().lines().next().unwrap(),
        format!("error: {} is damaged: {said}", bundle.display())
    );
    let repaired = ferry(&["repair", text(&bundle)]).success();
    let lines: Vec<String> = repaired.stdout().lines().map(String::from).collect();
    assert_eq!(
        lines[..2],
        [
            format!("repaired: {} (3 damaged blocks rebuilt; {recovery} recovery blocks were available)", bundle.display()),
            format!("the repaired bundle matches {}", bundle.with_file_name("b.tar.sha256").display()),
        ]
    );
    assert!(
        lines.last().unwrap().starts_with("intact: "),
        "{}",
        repaired.stdout()
    );
    assert_eq!(sha256(&bundle), original);

    // A truncation: the last 40 blocks lost.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bundle)
        .unwrap()
        .set_len(size - 40 * slice)
        .unwrap();
    let verified = ferry(&["verify", text(&bundle)]).fails_with(1);
    assert_eq!(
        verified.stderr().lines().next().unwrap(),
        format!("error: {} is damaged: 40 damaged blocks; {recovery} recovery blocks available: run `ferry repair {}`", bundle.display(), bundle.display())
    );
    // From the bundle's directory, by a relative name.
    crate::ferry::run(
        crate::ferry::command()
            .args(["repair", "b.tar"])
            .current_dir(work.path()),
    )
    .success();
    assert_eq!(sha256(&bundle), original);
    assert_eq!(
        ferry(&["repair", text(&bundle)])
            .success()
            .stdout()
            .lines()
            .next()
            .unwrap(),
        format!("nothing to repair: all {slices} blocks match the recovery data")
    );
    // par2cmdline agrees that the files ferry wrote describe the bundle.
    if par2().is_some() {
        run_par2(work.path(), &["verify", "-q", "b.tar.par2"]);
    }
}

#[test]
fn a_zeroed_mebibyte_beyond_the_recovery_data_is_refused_naming_what_is_missing_and_what_is_intact()
{
    let Some((_work, bundle, _)) = recovered_bundle(&["--recovery", "5%"]) else {
        return;
    };
    let original = std::fs::read(&bundle).unwrap();
    let size = original.len() as u64;
    let (slice, slices, recovery) = blocks(size, 5);
    let start = size - (1 << 20) - 5000;
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&bundle)
            .unwrap();
        file.write_all_at(&vec![0u8; 1 << 20], start).unwrap();
    }
    let damaged = std::fs::read(&bundle).unwrap();
    let blocks = (0..slices)
        .filter(|k| {
            let range = (k * slice) as usize..(((k + 1) * slice).min(size)) as usize;
            original[range.clone()] != damaged[range]
        })
        .count();
    let recovery = recovery as usize;
    assert!(blocks > recovery, "{blocks}");
    let refused = ferry(&["repair", text(&bundle)]).fails_with(1);
    assert_eq!(
        refused.stderr().lines().next().unwrap(),
        format!(
            "error: {}: {blocks} damaged blocks, but only {recovery} recovery blocks are usable: {} more would be needed",
            bundle.display(),
            blocks - recovery
        )
    );
    // The tar cannot be read past a zeroed mebibyte: which images are intact cannot be told.
    let intact = refused.stdout();
    assert!(
        intact.starts_with(
            "intact images: cannot be told, the bundle cannot be read past its damage ("
        ),
        "{intact}"
    );
    assert!(
        std::fs::read(&bundle).unwrap() == damaged,
        "nothing was written"
    );
    let verified = ferry(&["verify", text(&bundle)]).fails_with(1);
    assert_eq!(
        verified.stderr().lines().next().unwrap(),
        format!(
            "error: {} is damaged: {blocks} damaged blocks, only {recovery} recovery blocks available: {} more would be needed to repair it",
            bundle.display(),
            blocks - recovery
        )
    );
}

/// Two blocks damaged inside csi-resizer's own layer (the shared base is in the middle), one recovery
/// block: livenessprobe stays intact, and the bundle is beyond repair.
fn damaged_beyond_repair() -> Option<(tempfile::TempDir, PathBuf)> {
    let (work, bundle, _) = recovered_bundle(&["--recovery", "0.05%"])?;
    let size = std::fs::metadata(&bundle).unwrap().len();
    flip_bytes(&bundle, &[size * 20 / 100, size * 22 / 100]);
    Some((work, bundle))
}

#[test]
fn damage_beyond_repair_inside_blobs_names_the_intact_images() {
    let Some((_work, bundle)) = damaged_beyond_repair() else {
        return;
    };
    let verified = ferry(&["verify", text(&bundle)]).fails_with(1);
    let mut ok: Vec<String> = verified
        .stdout()
        .lines()
        .filter_map(|l| l.strip_prefix("ok    "))
        .map(|l| l.split("  ").next().unwrap().to_string())
        .collect();
    ok.dedup();
    let images = verified
        .stdout()
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("BAD "))
        .count();
    let refused = ferry(&["repair", text(&bundle)]).fails_with(1);
    assert_eq!(
        refused.stderr().lines().next().unwrap(),
        format!("error: {}: 2 damaged blocks, but only 1 recovery blocks are usable: 1 more would be needed", bundle.display())
    );
    assert_eq!(ok, ["registry.k8s.io/sig-storage/livenessprobe:v2.12.0"]);
    let listed = match ok.is_empty() {
        true => "none".to_string(),
        false => format!(
            "{} (push them alone: ferry push {} --intact-only)",
            ok.join(", "),
            bundle.display()
        ),
    };
    assert_eq!(
        refused.stdout(),
        format!("intact images ({} of {images}): {listed}\n", ok.len())
    );
    // Those images alone, and only with the flag.
    let push = [
        "push",
        text(&bundle),
        "--to",
        "registry.invalid",
        "--dry-run",
    ];
    ferry(&push).fails_with(1);
    let pushed = ferry(&[&push[..], &["--intact-only"]].concat()).success();
    let mapped: Vec<String> = pushed
        .stdout()
        .lines()
        .map(|l| l.split(" -> ").next().unwrap().to_string())
        .collect();
    assert_eq!(mapped, ok);
    // Then the note on index pins (tests/it/upstream_index.rs checks it).
    assert_eq!(
        pushed.stderr().split("note: a pod pinned").next().unwrap(),
        "left out (damaged): registry.k8s.io/sig-storage/csi-resizer:v1.9.0\n"
    );
}

/// `load --intact-only` feeds containerd the intact images alone, under their own digests; without the
/// flag nothing is loaded.
#[test]
fn load_intact_only_loads_the_intact_images_of_a_bundle_beyond_repair() {
    let Some((_work, bundle)) = damaged_beyond_repair() else {
        return;
    };
    let Some(containerd) = services::require(services::Containerd::start()) else {
        return;
    };
    let socket = text(containerd.socket());
    let load = [
        "load",
        text(&bundle),
        "--runtime",
        "containerd",
        "--address",
        socket,
        "--platform",
        "linux/amd64",
    ];
    let refused = ferry(&load).fails_with(1);
    assert!(
        refused
            .stdout()
            .contains("BAD   registry.k8s.io/sig-storage/csi-resizer:v1.9.0"),
        "{}",
        refused.stdout()
    );
    // By name: ctr also lists each image under its index digest.
    let listed = |containerd: &services::Containerd| {
        let output = containerd.ctr(&["images", "ls", "-q"]);
        let names = String::from_utf8_lossy(&output.stdout).into_owned();
        let names = names.lines().filter(|l| !l.starts_with("sha256:"));
        names.map(|l| format!("{l}\n")).collect::<String>()
    };
    assert_eq!(
        listed(&containerd),
        "",
        "nothing was loaded without the flag"
    );

    let loaded = ferry(&[&load[..], &["--intact-only"]].concat()).success();
    let intact = "registry.k8s.io/sig-storage/livenessprobe:v2.12.0";
    let (_, _, manifest) = crate::multiarch::inspected(&bundle)
        .into_iter()
        .find(|(name, platform, _)| name == intact && platform == "linux/amd64")
        .unwrap();
    assert_eq!(
        loaded.stdout(),
        format!("loaded {intact}  {manifest}  linux/amd64  into Containerd\n")
    );
    assert_eq!(
        loaded.stderr().lines().next().unwrap(),
        "left out (damaged): registry.k8s.io/sig-storage/csi-resizer:v1.9.0"
    );
    assert_eq!(listed(&containerd), format!("{intact}\n"));
}

#[test]
fn a_lost_part_of_a_split_bundle_is_rebuilt_and_push_says_repair_would_fix_it() {
    // About 580 kB in 128 KiB parts: 25% of recovery data covers the loss of one.
    let Some((work, bundle, _)) =
        recovered_bundle_of(&["--split", "128K", "--recovery", "25%"], 600_000)
    else {
        return;
    };
    let parts: Vec<PathBuf> = (0..)
        .map(|i| bundle.with_file_name(format!("b.tar.part-{i:03}")))
        .take_while(|p| p.exists())
        .collect();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    let sums: Vec<String> = parts.iter().map(|p| sha256(p)).collect();
    // No recovery volume is larger than a part.
    for file in std::fs::read_dir(work.path()).unwrap().flatten() {
        if file.file_name().to_string_lossy().ends_with(".par2") {
            assert!(
                file.metadata().unwrap().len() <= 128 << 10,
                "{:?}",
                file.file_name()
            );
        }
    }
    std::fs::remove_file(&parts[2]).unwrap();
    let first = text(&parts[0]);
    let pushed = ferry(&["push", first, "--to", "registry.invalid", "--dry-run"]).fails_with(1);
    let error = pushed.stderr();
    assert!(
        error.starts_with(&format!("error: {first} is damaged: "))
            && error.contains(&format!(
                "recovery blocks available: run `ferry repair {first}`"
            )),
        "{error}"
    );
    ferry(&["repair", first]).success();
    let now: Vec<String> = parts.iter().map(|p| sha256(p)).collect();
    assert_eq!(now, sums);
}

#[test]
fn a_damaged_recovery_file_is_reported_and_its_intact_blocks_still_repair() {
    let Some((_work, bundle, _)) = recovered_bundle(&["--recovery", "5%"]) else {
        return;
    };
    let original = sha256(&bundle);
    let (_, _, recovery) = blocks(std::fs::metadata(&bundle).unwrap().len(), 5);
    let name = volume_name(recovery);
    let volume = bundle.with_file_name(&name);
    let length = std::fs::metadata(&volume).unwrap().len();
    flip_bytes(&volume, &[length - 10, length / 2]);
    let verified = ferry(&["verify", text(&bundle)]).success();
    assert!(
        verified.stdout().contains(&format!(
        "recovery: {name} does not match its checksum: damaged (its intact blocks are still used)\n"
    )),
        "{}",
        verified.stdout()
    );
    flip_bytes(&bundle, &[1000]);
    ferry(&["repair", text(&bundle)]).success();
    assert_eq!(sha256(&bundle), original);
}

#[test]
fn forged_recovery_data_cannot_repair_a_bundle_into_another() {
    let Some((work, bundle, _)) = recovered_bundle(&["--recovery", "5%"]) else {
        return;
    };
    let original = std::fs::read(&bundle).unwrap();
    // Recovery data made from the bundle with one byte changed, as whoever forged it wants it.
    let forged_dir = tempfile::tempdir().unwrap();
    let forged = forged_dir.path().join("b.tar");
    let mut wanted = original.clone();
    wanted[original.len() / 3] ^= 0xFF;
    std::fs::write(&forged, &wanted).unwrap();
    let created = recovery::create(
        std::slice::from_ref(&forged),
        &recovery::index_path(&forged),
        &CreateOptions::new("5%".parse().unwrap()),
    )
    .unwrap();
    for file in &created.files {
        std::fs::copy(file, work.path().join(file.file_name().unwrap())).unwrap();
    }
    flip_bytes(&bundle, &[100]);
    let damaged = std::fs::read(&bundle).unwrap();
    let refused = ferry(&["repair", text(&bundle)]).fails_with(1);
    let line = refused.stderr().lines().next().unwrap().to_string();
    assert!(
        line.starts_with("error: the repaired b.tar does not match ")
            && line.ends_with("; the recovery data was not made from this bundle, or was forged, and nothing was replaced"),
        "{line}"
    );
    assert!(std::fs::read(&bundle).unwrap() == damaged);
}

#[test]
fn ferry_repair_uses_recovery_files_par2cmdline_made_for_a_bundle() {
    let Some(()) = par2() else { return };
    let Some((work, bundle, _)) = recovered_bundle(&[]) else {
        return;
    };
    let original = sha256(&bundle);
    run_par2(work.path(), &["create", "-q", "-r5", "b.tar"]);
    flip_bytes(&bundle, &[77, 5000]);
    let repaired = ferry(&["repair", text(&bundle)]).success();
    assert!(
        repaired.stdout().starts_with(&format!(
            "repaired: {} (2 damaged blocks rebuilt;",
            bundle.display()
        )),
        "{}",
        repaired.stdout()
    );
    assert_eq!(sha256(&bundle), original);
}
