//! What `ferry bundle --since BASE` needs to know of a base bundle, read from its tar headers and
//! documents alone: every blob it holds (the headers, each under its own checksum), the images that
//! reference them (the index, which pins `ferry.json` and `manifest.json`, and every manifest and config,
//! each hashed against its name), and its sha256 as the `BASE.sha256` written with it names it.
//!
//! No layer is read: a delta never takes a byte from its base, only which blobs it holds and the sha256
//! that the far side's copy is checked against. Damage where the description comes from (a header, a
//! document, a manifest or config) makes the description decline, and the base is then verified whole
//! (see [`super::verify`]), which names it; damage inside a layer of the connected side's copy changes
//! nothing the delta says. A base without a `.sha256`, or a delta, is verified whole too.

use std::path::Path;

use super::checksum;
use super::stream::{Contents, SeenBlob};
use super::{Checksum, Report};
use crate::digest::Digest;
use crate::tarball::delta::BundleDescription;
use crate::tarball::headers::{self, Parts};
use crate::tarball::layout::DELTA_JSON;
use crate::tarball::read::Source;

/// Describes the bundle at `path` for a delta built against it; `None` when it is to be verified whole:
/// it has no `.sha256`, is a delta, is not laid out as ferry writes a bundle, or what the description
/// reads does not check out (the whole verification then says what is wrong).
pub fn describe_from_headers(path: &Path) -> Option<BundleDescription> {
    let source = Source::locate(path).ok()?;
    let sha256 = checksum::claimed(&source)?;
    if source.is_gzipped().ok()? {
        return None;
    }
    let parts = Parts::open(&source).ok()?;
    let found = headers::contents_of(&parts, true).ok()??;
    if found.documents.contains_key(DELTA_JSON) {
        return None;
    }
    let mut contents = Contents {
        documents: found
            .documents
            .into_iter()
            .map(|(name, bytes)| (name.to_string(), bytes))
            .collect(),
        ..Contents::default()
    };
    // Manifests and configs are read and hashed, as the graph check needs them; no other blob is read.
    for (digest, &(offset, size)) in &found.blobs {
        let mut head = [0u8; 1];
        let mut kept = None;
        if size > 0 {
            parts.read_exact_at(&mut head, offset).ok()?;
        }
        if contents.keeps(&head, size) {
            let mut bytes = vec![0; usize::try_from(size).ok()?];
            parts.read_exact_at(&mut bytes, offset).ok()?;
            if Digest::of(&bytes) != *digest {
                return None;
            }
            contents.kept_total += size;
            kept = Some(bytes);
        }
        contents.locations.insert(digest.clone(), (offset, size));
        contents
            .blobs
            .insert(digest.clone(), SeenBlob::vouched(digest, size, kept));
    }
    let mut report = Report {
        bundle: path.to_path_buf(),
        bytes: parts.length(),
        sha256,
        checksum: Checksum::Absent,
        damaged_recovery_files: Vec::new(),
        recovery: None,
        images: Vec::new(),
        problems: Vec::new(),
        missing: Vec::new(),
        blobs: contents.blobs.len(),
        metadata: None,
        delta: None,
        locations: std::mem::take(&mut contents.locations),
        documents: Default::default(),
        source,
    };
    contents.cross_check(&mut report, false);
    if !report.intact() {
        return None;
    }
    Some(report.describe())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::catalog::Catalogs;
    use crate::progress::Silent;
    use crate::testutil::intact_bundle;

    fn verified_whole(path: &Path) -> BundleDescription {
        let catalogs = Catalogs::load(&[]).unwrap();
        super::super::verify(path, &Default::default(), &catalogs)
            .unwrap()
            .describe()
    }

    /// From its headers and documents, a base is described exactly as verifying it whole describes it.
    #[test]
    fn a_base_is_described_from_its_headers_as_verify_describes_it() {
        let dir = tempfile::tempdir().unwrap();
        let platforms = ["linux/amd64", "linux/arm64"];
        let (_, path) = intact_bundle(
            dir.path(),
            &["quay.io/a/b:1", "huawei-csi:4.8.0"],
            &platforms,
        );
        assert_eq!(describe_from_headers(&path).unwrap(), verified_whole(&path));
    }

    /// Without the `.sha256` that names it, a base is left to be verified whole.
    #[test]
    fn without_its_sha256_a_base_is_verified_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        std::fs::remove_file(dir.path().join("b.tar.sha256")).unwrap();
        assert!(describe_from_headers(&path).is_none());
    }

    /// A layer changed in place is not read, and changes nothing a delta says of the base: its sha256 is
    /// still the one its `.sha256` names, the one the far side's copy is checked against. Damage where the
    /// description comes from (a tar header, a manifest or config) makes it decline.
    #[test]
    fn only_what_the_description_reads_can_make_it_decline() {
        let dir = tempfile::tempdir().unwrap();
        let (images, path) = intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        let intact = describe_from_headers(&path).unwrap();
        let verified = crate::testutil::verified(&path);
        let original = std::fs::read(&path).unwrap();
        let changed_at = |at: u64| {
            let mut bytes = original.clone();
            bytes[at as usize] ^= 1;
            std::fs::write(&path, &bytes).unwrap();
            describe_from_headers(&path)
        };
        let (layer, _) = verified.location(&images[0].layers[0].digest).unwrap();
        assert_eq!(changed_at(layer), Some(intact));
        assert_eq!(changed_at(layer - 512), None);
        let (config, _) = verified.location(&images[0].config.digest).unwrap();
        assert_eq!(changed_at(config + 2), None);
    }

    /// A bundle of two images on two platforms cut in 1000-byte parts (with `.parts.sha256`), and with
    /// recovery data listed in its `.sha256`: the path of its first part.
    fn split_bundle(dir: &Path, recovery: bool) -> PathBuf {
        use crate::tarball::{write_bundle, WriteOptions};
        let store = crate::cache::BlobStore::open(&dir.join("cache")).unwrap();
        let platforms = ["linux/amd64", "linux/arm64"];
        let images = crate::testutil::intact_images(
            &store,
            &["quay.io/a/b:1", "huawei-csi:4.8.0"],
            &platforms,
        );
        let carried: Vec<crate::image::Platform> =
            platforms.iter().map(|p| p.parse().unwrap()).collect();
        let options = WriteOptions {
            split: Some(1000),
            recovery: recovery.then(|| "5%".parse().unwrap()),
            ..WriteOptions::default()
        };
        let metadata = crate::testutil::metadata(&images, &carried);
        let path = dir.join("b.tar");
        write_bundle(&store, &images, &metadata, &path, &options, &Silent).unwrap();
        dir.join("b.tar.part-000")
    }

    /// Given as its first part, a split base (with or without recovery data) is described as verifying
    /// it whole describes it.
    #[test]
    fn a_split_base_is_described_across_its_parts() {
        for recovery in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let first = split_bundle(dir.path(), recovery);
            assert_eq!(
                describe_from_headers(&first).unwrap(),
                verified_whole(&first)
            );
        }
    }
}
