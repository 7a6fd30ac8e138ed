//! Round trips through the library: create, damage, check, repair, byte for byte.

use std::path::{Path, PathBuf};

use super::combine::Budget;
use super::*;

fn noise(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Runs of zeros, as tar padding has.
            if (i / 3000) % 4 == 3 {
                0
            } else {
                state as u8
            }
        })
        .collect()
}

struct Bundle {
    _dir: tempfile::TempDir,
    path: PathBuf,
    parts: Vec<(PathBuf, Vec<u8>)>,
}

/// A bundle of `sizes.len()` files (one: `b.tar`; more: `b.tar.part-NNN`) with recovery data.
fn bundle(sizes: &[usize], percent: &str) -> Bundle {
    bundle_in_slices(sizes, percent, 2000)
}

fn bundle_in_slices(sizes: &[usize], percent: &str, slices: usize) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar");
    let parts: Vec<(PathBuf, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let part = match sizes.len() {
                1 => path.clone(),
                _ => dir.path().join(format!("b.tar.part-{i:03}")),
            };
            let bytes = noise(size, i as u64 + 11);
            std::fs::write(&part, &bytes).unwrap();
            (part, bytes)
        })
        .collect();
    let sources: Vec<PathBuf> = parts.iter().map(|(p, _)| p.clone()).collect();
    let mut options = CreateOptions::new(percent.parse().unwrap());
    options.source_slices = slices;
    create(&sources, &index_path(&path), &options).unwrap();
    Bundle {
        _dir: dir,
        path,
        parts,
    }
}

impl Bundle {
    fn check(&self) -> Damage {
        RecoverySet::load(&self.path).unwrap().check().unwrap()
    }

    fn repair(&self) -> Result<Repaired, RecoveryError> {
        let set = RecoverySet::load(&self.path)?;
        let damage = set.check()?;
        repair(&set, &damage)?.commit()
    }

    fn assert_original(&self) {
        for (path, bytes) in &self.parts {
            assert!(
                std::fs::read(path).unwrap() == *bytes,
                "{} differs",
                path.display()
            );
        }
    }

    fn volume(&self) -> PathBuf {
        let set = RecoverySet::load(&self.path).unwrap();
        set.files()[1].clone()
    }
}

fn rewrite(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

/// The slices whose bytes differ between `original` and the file now (zeros past its end).
fn differing_slices(original: &[u8], path: &Path, slice_size: usize) -> Vec<usize> {
    let mut now = std::fs::read(path).unwrap_or_default();
    now.resize(original.len(), 0);
    (0..original.len().div_ceil(slice_size))
        .filter(|k| {
            let range = k * slice_size..((k + 1) * slice_size).min(original.len());
            original[range.clone()] != now[range]
        })
        .collect()
}

// Sizes are 2000 slices of a multiple of 4 bytes: 96 000 bytes make slices of 48.

#[test]
fn an_intact_bundle_checks_intact() {
    let bundle = bundle(&[96_000], "5%");
    let damage = bundle.check();
    assert!(damage.is_intact());
    assert_eq!(damage.recovery_slices, 100);
    assert_eq!(bundle.repair().unwrap().files, Vec::<PathBuf>::new());
}

#[test]
fn flipped_bytes_zeroed_runs_and_a_truncation_are_repaired() {
    let bundle = bundle(&[304_000], "10%");
    let path = &bundle.path;
    rewrite(path, 7, &[0xFF]);
    rewrite(path, 150_001, &[1, 2, 3]);
    rewrite(path, 200_000, &[0u8; 10_000]);
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(290_000).unwrap();
    let expected = differing_slices(&bundle.parts[0].1, path, 152);
    // Where the bundle had zeros, zeroing it damaged nothing.
    assert!(
        expected.len() > 100 && expected.len() < 1 + 1 + 67 + 93,
        "{}",
        expected.len()
    );
    let damage = bundle.check();
    let file = &damage.files[0];
    assert_eq!(file.found, Some(290_000));
    assert_eq!(file.damaged, expected);
    assert_eq!(
        (damage.recovery_slices, damage.is_repairable()),
        (200, true)
    );
    let repaired = bundle.repair().unwrap();
    assert_eq!(repaired.files, std::slice::from_ref(path));
    assert_eq!(repaired.slices, expected.len());
    bundle.assert_original();
    assert!(bundle.check().is_intact());
}

#[test]
fn a_missing_part_and_a_longer_part_of_a_split_bundle_are_repaired() {
    // 200 slices of 480 bytes.
    let bundle = bundle_in_slices(&[40_000, 40_000, 16_000], "45%", 200);
    std::fs::remove_file(&bundle.parts[1].0).unwrap();
    let mut longer = std::fs::OpenOptions::new()
        .append(true)
        .open(&bundle.parts[2].0)
        .unwrap();
    std::io::Write::write_all(&mut longer, b"trailing bytes").unwrap();
    let damage = bundle.check();
    let missing = damage
        .files
        .iter()
        .find(|f| f.path == bundle.parts[1].0)
        .unwrap();
    assert_eq!((missing.found, missing.damaged.len()), (None, 84));
    let longer = damage
        .files
        .iter()
        .find(|f| f.path == bundle.parts[2].0)
        .unwrap();
    assert_eq!((longer.found, longer.damaged.len()), (Some(16_014), 0));
    assert_eq!(damage.recovery_slices, 91);
    let repaired = bundle.repair().unwrap();
    assert_eq!(repaired.files.len(), 2);
    bundle.assert_original();
}

#[test]
fn damage_beyond_the_recovery_data_is_refused_and_nothing_changes() {
    let bundle = bundle(&[96_000], "1%");
    rewrite(&bundle.path, 0, &[0xAA; 3_000]);
    let damage = bundle.check();
    assert_eq!((damage.damaged_slices(), damage.recovery_slices), (63, 20));
    assert_eq!(damage.shortfall(), 43);
    let error = bundle.repair().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: 63 damaged blocks, but only 20 recovery blocks are usable: 43 more would be needed", bundle.path.display())
    );
    assert_eq!(std::fs::read(&bundle.path).unwrap()[..3], [0xAA; 3]);
}

#[test]
fn a_damaged_volume_loses_only_the_slices_it_damages() {
    let bundle = bundle(&[96_000], "5%");
    let volume = bundle.volume();
    let length = std::fs::metadata(&volume).unwrap().len();
    // Each recovery packet is 68 + 48 bytes, the last ones at the volume's end: damage three.
    rewrite(&volume, length - 300, &[0x55; 3]);
    rewrite(&volume, length - 10, &[0x55; 3]);
    rewrite(&volume, length - 1000, &[0x55]);
    rewrite(&bundle.path, 5_000, &[0x11; 48 * 10]);
    let damage = bundle.check();
    assert_eq!(damage.recovery_slices, 97);
    bundle.repair().unwrap();
    bundle.assert_original();
}

#[test]
fn a_forged_recovery_slice_cannot_repair_a_bundle_into_something_else() {
    let bundle = bundle(&[96_000], "5%");
    let set = RecoverySet::load(&bundle.path).unwrap();
    // A volume holding slice 0 with other data, whose packet MD5 checks: anyone can compute one.
    let slice_size = set.slice_size();
    let data = vec![0x42u8; slice_size as usize];
    let set_id = packet_set(&bundle.path);
    let mut hasher = packet::recovery_hasher(&set_id, 0);
    md5::Digest::update(&mut hasher, &data);
    let mut forged = packet::recovery_prefix(
        &set_id,
        0,
        slice_size,
        &md5::Digest::finalize(hasher).into(),
    );
    forged.extend_from_slice(&data);
    std::fs::remove_file(bundle.volume()).unwrap();
    let volume = bundle.path.with_file_name("b.tar.vol00+01.par2");
    std::fs::write(&volume, &forged).unwrap();
    rewrite(&bundle.path, 10, &[0x99]);
    let damaged = std::fs::read(&bundle.path).unwrap();
    let error = bundle.repair().unwrap_err();
    assert!(
        matches!(error, RecoveryError::Mismatch(ref path) if *path == bundle.path),
        "{error}"
    );
    assert!(std::fs::read(&bundle.path).unwrap() == damaged);
    assert_eq!(leftovers(&bundle.path), Vec::<String>::new());
}

/// The set ID, from the index file's Main packet.
fn packet_set(bundle: &Path) -> packet::Id {
    let index = std::fs::read(index_path(bundle)).unwrap();
    index[32..48].try_into().unwrap()
}

/// Files other than the bundle's and its recovery data's.
fn leftovers(bundle: &Path) -> Vec<String> {
    std::fs::read_dir(bundle.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect()
}

#[test]
fn windows_write_the_same_files_as_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for (name, budget) in [
        ("one", Budget::DEFAULT),
        (
            "many",
            Budget {
                outputs: 40 * 2 * 512,
                batch: 2 * 512,
            },
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, noise(400_000, 3)).unwrap();
        let mut options = CreateOptions::new("2%".parse().unwrap());
        options.budget = budget;
        let created = create(std::slice::from_ref(&path), &index_path(&path), &options).unwrap();
        assert_eq!((created.slice_size, created.recovery_slices), (200, 40));
        outputs.push(
            created
                .files
                .iter()
                .map(|f| std::fs::read(f).unwrap())
                .collect::<Vec<_>>(),
        );
    }
    // The names differ, and so do the IDs: compare what does not depend on them.
    assert_eq!(outputs[0].len(), outputs[1].len());
    assert_eq!(outputs[0][1].len(), outputs[1][1].len());
    let bundle = Bundle {
        parts: vec![(dir.path().join("many"), noise(400_000, 3))],
        path: dir.path().join("many"),
        _dir: dir,
    };
    rewrite(&bundle.path, 1_000, &[0; 4_000]);
    let set = RecoverySet::load(&bundle.path).unwrap();
    let damage = set.check().unwrap();
    repair::repair_within(
        &set,
        &damage,
        Budget {
            outputs: 21 * 512,
            batch: 512,
        },
    )
    .unwrap()
    .commit()
    .unwrap();
    bundle.assert_original();
}

#[test]
fn volumes_keep_within_a_split_bundles_part_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar");
    std::fs::write(&path, noise(200_000, 5)).unwrap();
    let mut options = CreateOptions::new("10%".parse().unwrap());
    // Every file carries the 40 388 bytes of the set's description; 27 slices of 100 bytes fit beside it.
    options.volume_limit = Some(45_000);
    let created = create(std::slice::from_ref(&path), &index_path(&path), &options).unwrap();
    let names: Vec<String> = created
        .files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 9);
    assert_eq!(
        names[..3],
        [
            "b.tar.par2",
            "b.tar.vol000+027.par2",
            "b.tar.vol027+027.par2"
        ]
    );
    assert_eq!(names[8], "b.tar.vol189+011.par2");
    for file in &created.files {
        assert!(
            std::fs::metadata(file).unwrap().len() <= 45_000,
            "{}",
            file.display()
        );
    }
    assert_eq!(RecoverySet::load(&path).unwrap().recovery_slices(), 200);
}

#[test]
fn special_files_and_missing_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.tar");
    std::fs::write(&path, b"bundle").unwrap();
    assert_eq!(
        RecoverySet::load(&path).err().unwrap().to_string(),
        format!(
            "no recovery data for {}: found no b.tar.par2 or b.tar.vol*.par2 beside it",
            path.display()
        )
    );
    // A FIFO where a volume should be is skipped, not waited on.
    let fifo = dir.path().join("b.tar.vol0+1.par2");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let error = RecoverySet::load(&path).err().unwrap();
    assert_eq!(
        error.to_string(),
        format!("the recovery data for {} cannot be used: no intact description of the set (PAR2 Main packet) in any of its files", path.display())
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        create(
            std::slice::from_ref(&empty),
            &index_path(&empty),
            &CreateOptions::new("5%".parse().unwrap())
        )
        .unwrap_err()
        .to_string(),
        format!(
            "{}: empty; recovery data covers no empty file",
            empty.display()
        )
    );
}
