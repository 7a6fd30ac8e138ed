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
    recovery::repair(&set, &damage).unwrap()
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
