//! `ferry verify` and `ferry inspect` on good, damaged, truncated and hostile bundles.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::bundle::bundle_quietly;
use crate::ferry::{command, ferry, run};
use crate::seed::{push_image, seed_csi_480, Format, Seeded, PLATFORMS};
use crate::seeded::registry_with_livenessprobe;
use crate::services::{require, Registry};

/// A small real bundle of two images sharing their base layer; returns (work dir, bundle path).
fn small_bundle() -> Option<(tempfile::TempDir, PathBuf)> {
    small_bundle_with(&[], 120_000).map(|(work, bundle, _)| (work, bundle))
}

/// The same, with more `ferry bundle` arguments and layers of `size` bytes; returns ferry's output too.
pub fn small_bundle_with(
    extra: &[&str],
    size: usize,
) -> Option<(tempfile::TempDir, PathBuf, crate::ferry::Run)> {
    let (registry, _, _) = registry_with_two_images(size)?;
    let work = tempfile::tempdir().unwrap();
    let images = [
        "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
        "registry.k8s.io/sig-storage/csi-resizer:v1.9.0",
    ];
    let (bundle, run) = bundle_from(&registry, &images, work.path(), extra);
    Some((work, bundle, run))
}

/// A plain registry holding livenessprobe v2.12.0 (a Docker manifest list) and csi-resizer v1.9.0 (an
/// OCI index), both for linux/amd64 and linux/arm64 with layers of `size` bytes; returns their digests.
fn registry_with_two_images(size: usize) -> Option<(Registry, Seeded, Seeded)> {
    let (registry, livenessprobe) = registry_with_livenessprobe(&PLATFORMS[..2], size)?;
    let resizer = push_image(
        registry.addr(),
        "sig-storage/csi-resizer",
        "v1.9.0",
        Format::OciIndex,
        &PLATFORMS[..2],
        size,
    );
    Some((registry, livenessprobe, resizer))
}

/// `ferry bundle -q` of `images` from `registry` (the mirror of registry.k8s.io) into `work`/b.tar, its
/// cache beside it; returns the bundle's path and ferry's output.
fn bundle_from(
    registry: &Registry,
    images: &[&str],
    work: &Path,
    extra: &[&str],
) -> (PathBuf, crate::ferry::Run) {
    let bundle = work.join("b.tar");
    let mut bundling = command();
    bundling.arg("bundle");
    for image in images {
        bundling.args(["--image", image]);
    }
    bundling
        .arg("--mirror")
        .arg(format!("registry.k8s.io={}", registry.addr()))
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .arg("-o")
        .arg(&bundle)
        .arg("-q")
        .args(extra);
    (bundle, run(&mut bundling).success())
}

/// Asserts that a failed verify says where the damage is: a tar entry or byte offset, a blob digest, or a
/// document by name; an exit code alone tells the user nothing.
fn assert_names_the_damage(run: &crate::ferry::Run, context: &str) {
    let said = format!("{}{}", run.stdout(), run.stderr());
    let named = said.lines().any(|line| {
        let line = line.trim_start();
        let finding = line.starts_with("problem: ")
            || line.starts_with("error: ")
            || line.starts_with("caused by: ")
            || line.starts_with("checksum: MISMATCH")
            || (run.stdout().contains("BAD   ")
                && !line.starts_with("ok ")
                && !line.starts_with("BAD "));
        finding
            && [
                "at byte ",
                "sha256:",
                "index.json",
                "manifest.json",
                "ferry.json",
                "oci-layout",
            ]
            .iter()
            .any(|subject| line.contains(subject))
    });
    assert!(named, "{context}: the damage is not located:\n{said}");
}

fn verify(path: &Path, extra: &[&str]) -> crate::ferry::Run {
    let mut args = vec!["verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    ferry(&args)
}

#[test]
fn a_good_bundle_passes_plain_deep_gzipped_and_split() {
    let Some((work, bundle)) = small_bundle() else {
        return;
    };
    let run = verify(&bundle, &[]).success();
    assert!(
        run.stdout().contains("checksum: matches"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout().contains("intact: 2 images"),
        "{}",
        run.stdout()
    );
    verify(&bundle, &["--deep"]).success();
    let json = verify(&bundle, &["--json"]).success().json();
    assert_eq!(json["intact"], true);
    assert_eq!(json["report"]["images"].as_array().unwrap().len(), 2);

    let gz = work.path().join("b.tar.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    encoder.write_all(&std::fs::read(&bundle).unwrap()).unwrap();
    encoder.finish().unwrap();
    let run = verify(&gz, &[]).success();
    assert!(
        run.stdout().contains("no .sha256 file"),
        "says the checksum is absent: {}",
        run.stdout()
    );

    let split_dir = work.path().join("split");
    std::fs::create_dir(&split_dir).unwrap();
    let bytes = std::fs::read(&bundle).unwrap();
    let mut sums = String::new();
    for (i, chunk) in bytes.chunks(100_000).enumerate() {
        let name = format!("b.tar.part-{i:03}");
        std::fs::write(split_dir.join(&name), chunk).unwrap();
        sums.push_str(&format!(
            "{}  {name}\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(chunk))
        ));
    }
    std::fs::write(split_dir.join("b.tar.parts.sha256"), sums).unwrap();
    std::fs::copy(
        bundle.with_extension("tar.sha256"),
        split_dir.join("b.tar.sha256"),
    )
    .unwrap();
    let run = verify(&split_dir.join("b.tar.part-000"), &[]).success();
    assert!(
        run.stdout().contains("b.tar.parts.sha256"),
        "{}",
        run.stdout()
    );
}

#[test]
fn sixteen_random_flipped_bytes_are_all_caught_without_a_checksum_file() {
    let Some((work, bundle)) = small_bundle() else {
        return;
    };
    let bytes = std::fs::read(&bundle).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    // Half anywhere, half in the first 8 KiB where headers and JSON documents live.
    for round in 0..16 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let span = if round % 2 == 0 {
            bytes.len()
        } else {
            8192.min(bytes.len())
        };
        let offset = (state % span as u64) as usize;
        let mut damaged = bytes.clone();
        damaged[offset] ^= 1 << (state % 8);
        let path = work.path().join(format!("flip-{round}.tar"));
        std::fs::write(&path, &damaged).unwrap();
        let run = verify(&path, &[]);
        assert_eq!(
            run.code(),
            Some(1),
            "flip at byte {offset} not caught:\n{}{}",
            run.stdout(),
            run.stderr()
        );
        assert_names_the_damage(&run, &format!("flip at byte {offset}"));
    }
}

#[test]
fn a_flipped_byte_in_padding_or_end_blocks_is_caught() {
    let Some((work, bundle)) = small_bundle() else {
        return;
    };
    let bytes = std::fs::read(&bundle).unwrap();
    let path = work.path().join("damaged.tar");
    let end = bytes.len() - 512;
    for (what, offset, said) in [
        (
            "end-of-archive block",
            bytes.len() - 10,
            format!("damaged at byte {end}: a damaged end-of-archive marker"),
        ),
        (
            "padding after oci-layout",
            512 + 40,
            "damaged at byte 542: non-zero padding after oci-layout".to_string(),
        ),
    ] {
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x01;
        std::fs::write(&path, &damaged).unwrap();
        let run = verify(&path, &[]).fails_with(1);
        assert_names_the_damage(&run, what);
        assert_eq!(
            run.stderr(),
            format!("error: {} is {said}\n", path.display()),
            "{what}"
        );
    }
}

#[test]
fn a_sha256_mismatch_is_reported() {
    let Some((_work, bundle)) = small_bundle() else {
        return;
    };
    let sums = bundle.with_extension("tar.sha256");
    std::fs::write(&sums, format!("{}  b.tar\n", "0".repeat(64))).unwrap();
    let run = verify(&bundle, &[]).fails_with(1);
    assert!(
        run.stdout().contains("checksum: MISMATCH"),
        "{}",
        run.stdout()
    );
    std::fs::write(&sums, "this is not a checksum line\n").unwrap();
    let run = verify(&bundle, &[]).fails_with(1);
    assert!(
        run.stdout().contains("an unreadable line"),
        "a garbled checksum file is not a pass: {}",
        run.stdout()
    );
    // One that names nothing, or names another file only, vouches for nothing.
    for text in ["", &format!("{}  other.tar\n", "0".repeat(64))] {
        std::fs::write(&sums, text).unwrap();
        let run = verify(&bundle, &[]).fails_with(1);
        assert!(
            run.stdout().starts_with(&format!(
                "checksum: MISMATCH for b.tar in {}: expected a line for it, read none\n",
                sums.display()
            )),
            "{}",
            run.stdout()
        );
    }
}

#[test]
fn truncated_bundles_fail() {
    let Some((work, bundle)) = small_bundle() else {
        return;
    };
    let bytes = std::fs::read(&bundle).unwrap();
    for cut in [
        100,
        512,
        3000,
        bytes.len() / 2,
        bytes.len() - 1024,
        bytes.len() - 1,
    ] {
        let path = work.path().join("cut.tar");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let run = verify(&path, &[]).fails_with(1);
        assert!(
            run.stderr().starts_with(&format!(
                "error: {} is truncated: it ends inside ",
                path.display()
            )),
            "cut at {cut}: {}{}",
            run.stdout(),
            run.stderr()
        );
        assert_names_the_damage(&run, &format!("cut at {cut}"));
    }
}

/// A tar entry with a raw name (the tar crate refuses `..` and absolute paths when asked nicely).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::new(kind));
    if kind == b'2' {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[test]
fn hostile_archives_are_refused_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let blob = format!("blobs/sha256/{}", "a".repeat(64));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", tar_of(&[("../../evil", b'0', b"x")]), "outside"),
        ("absolute", tar_of(&[("/tmp/evil", b'0', b"x")]), "outside"),
        ("symlink", tar_of(&[(blob.as_str(), b'2', b"")]), "links"),
        ("device", tar_of(&[(blob.as_str(), b'3', b"")]), "device"),
        (
            "duplicate",
            tar_of(&[("oci-layout", b'0', b"{}"), ("oci-layout", b'0', b"{}")]),
            "same name",
        ),
        (
            "stranger",
            tar_of(&[("etc/passwd", b'0', b"root")]),
            "no such entry",
        ),
        (
            "not-a-tar",
            b"this is not a tar archive at all, just text padded out to a block".repeat(10),
            "not a ferry bundle, or is damaged at its start: a header checksum that is not a number at byte 0",
        ),
        ("empty", Vec::new(), "truncated"),
    ];
    for (name, bytes, expected) in cases {
        let path = work.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let run = crate::ferry::run(
            crate::ferry::command()
                .args(["verify", path.to_str().unwrap()])
                .current_dir(work.path()),
        );
        let run = run.fails_with(1);
        assert!(run.stderr().contains(expected), "{name}: {}", run.stderr());
    }
    assert!(!Path::new("/tmp/evil").exists() && !work.path().join("../../evil").exists());
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| n.ends_with(".tar")),
        "verify wrote nothing: {left:?}"
    );

    // A gzip bomb: a few hundred kilobytes that inflate to gigabytes of zeros.
    let bomb = work.path().join("bomb.tar.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let mut header = tar::Header::new_ustar();
    header.set_path(&blob).unwrap();
    header.set_size(1 << 40);
    header.set_cksum();
    encoder.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap();
    let run = verify(&bomb, &[]).fails_with(1);
    assert!(run.stderr().contains("gzip bomb"), "{}", run.stderr());
}

fn tar_of(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data) in entries {
        raw_entry(&mut out, name, *kind, data);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

#[test]
fn verify_k8s_reports_images_the_bundle_lacks_and_inspect_shows_sharing() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    seed_csi_480(registry.addr(), 100_000);
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("csi.tar");
    let mirror = format!("registry.k8s.io={}", registry.addr());
    bundle_quietly(
        work.path(),
        &bundle,
        &[
            "huawei-csi@4.8.0",
            "--k8s",
            "1.28",
            "--skip-vendor",
            "--mirror",
            &mirror,
        ],
    )
    .success();
    verify(&bundle, &[]).success();
    let run = verify(&bundle, &["--k8s", "1.28"]).fails_with(1);
    for vendor in ["storage-backend-controller:4.8.0", "huawei-csi:4.8.0"] {
        assert!(
            run.stdout()
                .contains(&format!("MISSING  docker.io/library/{vendor}")),
            "{}",
            run.stdout()
        );
    }
    let run = verify(&bundle, &["--k8s", "1.18"]).fails_with(1);
    assert!(
        run.stdout()
            .contains("MISSING  registry.k8s.io/sig-storage/csi-provisioner:v3.0.0"),
        "{}",
        run.stdout()
    );
    // A version the release does not support is the user's mistake, not damage.
    let run = verify(&bundle, &["--k8s", "1.10"]).fails_with(2);
    assert_eq!(
        run.stderr(),
        "error: --k8s: huawei-csi 4.8.0 does not support Kubernetes 1.10: it supports Kubernetes 1.16 and later \
         (the vendor validated 1.16-1.32)\n"
    );
    assert_eq!(run.stdout(), "", "no DAMAGED verdict for an intact bundle");

    let inspect = ferry(&["inspect", bundle.to_str().unwrap()])
        .success()
        .stdout();
    assert!(
        inspect.contains("registry.k8s.io/sig-storage/csi-attacher:v4.4.0"),
        "{inspect}"
    );
    assert!(
        inspect.contains("release:    huawei-csi 4.8.0")
            && inspect.contains("kubernetes: 1.20 and later"),
        "{inspect}"
    );
    assert!(
        inspect.contains("skipped:    docker.io/library/storage-backend-controller:4.8.0"),
        "{inspect}"
    );
    let json = ferry(&["inspect", bundle.to_str().unwrap(), "--json"])
        .success()
        .json();
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 7);
    assert!(
        images.iter().all(|i| i["shared_layers"] == 1),
        "each image shares its base layer: {images:?}"
    );
    assert!(
        json["referenced_bytes"].as_u64().unwrap() > json["bytes"].as_u64().unwrap(),
        "sharing saves bytes"
    );
}

#[test]
fn a_missing_bundle_is_a_usage_error() {
    let run = ferry(&["verify", "/nonexistent/bundle.tar"]).fails_with(2);
    assert!(
        run.stderr().contains("cannot read /nonexistent/bundle.tar"),
        "{}",
        run.stderr()
    );
}

#[test]
fn bundles_of_digest_pinned_images_verify_and_push() {
    let Some((registry, pinned, only)) = registry_with_two_images(50_000) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let tagged = format!(
        "registry.k8s.io/sig-storage/livenessprobe:v2.12.0@{}",
        pinned.top_digest
    );
    let bare = format!(
        "registry.k8s.io/sig-storage/csi-resizer@{}",
        only.top_digest
    );
    let (bundle, _) = bundle_from(&registry, &[&tagged, &bare], work.path(), &[]);
    let run = verify(&bundle, &[]).success();
    assert!(
        run.stdout().contains(&format!("ok    {bare}")),
        "the digest-pinned image is named by its reference: {}",
        run.stdout()
    );
    let to = format!("{}/pinned", registry.addr());
    let pushed = ferry(&["push", bundle.to_str().unwrap(), "--to", &to, "-q"]).success();
    let manifest = only.manifest_for("linux/amd64");
    assert!(
        pushed
            .stdout()
            .contains(&format!("{to}/sig-storage/csi-resizer@{manifest}")),
        "{}",
        pushed.stdout()
    );
}

/// The wrong file given to `verify`, `push` or `load` says what it is and which file to give, the same
/// from each (they verify first), exit 2: the checksum files, the signature, a lock, a later part, an
/// image archive of the kind vendors ship.
#[test]
fn the_wrong_file_says_what_it_is_and_which_to_give() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("key").display().to_string();
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", &key])
        .status()
        .unwrap();
    assert!(made.success());
    let lock = keys.path().join("ferry.lock").display().to_string();
    let extra = ["--split", "64K", "--sign", &key, "--lock", &lock];
    let Some((work, _, _)) = small_bundle_with(&extra, 120_000) else {
        return;
    };
    let at = |name: &str| work.path().join(name).display().to_string();
    std::fs::copy(&lock, at("ferry.lock")).unwrap();
    crate::seed::vendor_tarball(&work.path().join("vendor.tar"), "huawei-csi:4.8.0", 10_000);
    let first = at("b.tar.part-000");
    let cases = [
        (
            "b.tar.sha256",
            format!("the checksum file of a bundle, not a bundle: give its first part, {first}"),
        ),
        (
            "b.tar.parts.sha256",
            format!(
                "the checksum file of a split bundle's parts, not a bundle: give its first part, {first}"
            ),
        ),
        (
            "b.tar.sig",
            format!(
                "the signature of a bundle, not a bundle: give its first part, {first} (its .sig is read \
                 beside it)"
            ),
        ),
        (
            "ferry.lock",
            "a ferry lock file, not a bundle: give the bundle, and this file with --lock".to_string(),
        ),
        (
            "b.tar.part-001",
            format!(
                "the second part of a split bundle, not a bundle: give the first, {first} (the parts after \
                 it are read with it)"
            ),
        ),
        (
            "vendor.tar",
            "an image archive (from docker save, podman save or skopeo), not a bundle: give a ferry bundle; \
             to carry the images in it, run `ferry bundle --vendor-dir DIR` where it came from, DIR holding \
             vendor.tar"
                .to_string(),
        ),
    ];
    for (file, said) in cases {
        let path = at(file);
        for command in [
            vec!["verify", &path],
            vec!["push", &path, "--to", "10.0.0.5:5000/x", "--dry-run"],
            vec![
                "load",
                &path,
                "--runtime",
                "containerd",
                "--address",
                "/nonexistent.sock",
            ],
        ] {
            let run = ferry(&command).fails_with(2);
            assert_eq!(
                run.stderr(),
                format!("error: {path} is {said}\n"),
                "{command:?}"
            );
            assert_eq!(run.stdout(), "", "{command:?}");
        }
    }
}

/// Each tar entry of `tar`: its name, where its header and its data start, and its size.
pub fn tar_entries(tar: &[u8]) -> Vec<(String, u64, u64, u64)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            (
                name,
                entry.raw_header_position(),
                entry.raw_file_position(),
                entry.size(),
            )
        })
        .collect()
}

/// A split bundle's damage is named by the part and the offset in that part, not the offset in the
/// parts joined; a part missing between others, or at the end, is named as missing.
#[test]
fn a_split_bundle_names_the_part_and_the_offset_in_it() {
    let Some((work, bundle)) = small_bundle() else {
        return;
    };
    let bytes = std::fs::read(&bundle).unwrap();
    let listed = tar_entries(&bytes);
    let blob = listed
        .iter()
        .position(|(name, ..)| name.starts_with("blobs/"))
        .unwrap();
    let (name, _, data, size) = listed[blob].clone();
    let (next, next_header, ..) = listed[blob + 1].clone();
    // Three parts: cut in the middle of the first blob's data, and a little after.
    let cuts = [(data + size / 2) as usize, (next_header + 1024) as usize];
    let split = work.path().join("split");
    std::fs::create_dir(&split).unwrap();
    let part = |i: usize| split.join(format!("b.tar.part-{i:03}"));
    let pieces = [
        &bytes[..cuts[0]],
        &bytes[cuts[0]..cuts[1]],
        &bytes[cuts[1]..],
    ];
    let write_parts = || {
        let mut sums = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            std::fs::write(part(i), piece).unwrap();
            sums.push_str(&format!(
                "{}  b.tar.part-{i:03}\n",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(piece))
            ));
        }
        std::fs::write(split.join("b.tar.parts.sha256"), sums).unwrap();
    };
    write_parts();
    verify(&part(0), &[]).success();

    // A damaged header in the second part: that part, and the offset in it.
    let mut damaged = pieces[1].to_vec();
    damaged[(next_header - cuts[0] as u64) as usize + 10] ^= 1;
    std::fs::write(part(1), &damaged).unwrap();
    let run = verify(&part(0), &[]).fails_with(1);
    assert_eq!(
        run.stderr(),
        format!(
            "error: {} is damaged at byte {}: a header whose checksum does not match (a damaged header)\n",
            part(1).display(),
            next_header - cuts[0] as u64
        )
    );

    // The second part missing, the third there.
    write_parts();
    std::fs::remove_file(part(1)).unwrap();
    let run = verify(&part(0), &[]).fails_with(1);
    assert_eq!(
        run.stderr(),
        format!(
            "error: {} is missing: {} is there, and a split bundle is read part after part: copy every part\n",
            part(1).display(),
            part(2).display()
        )
    );

    // The last two missing: the bundle ends inside the blob cut in two.
    std::fs::remove_file(part(2)).unwrap();
    let run = verify(&part(0), &[]).fails_with(1);
    assert_eq!(
        run.stderr(),
        format!(
            "error: the bundle ends with {} ({} bytes), inside the data of {name}: the next part, {}, is \
             missing ({} lists it)\n",
            part(0).display(),
            cuts[0],
            part(1).display(),
            split.join("b.tar.parts.sha256").display()
        )
    );
    assert!(next.starts_with("blobs/"), "{next}");
}
