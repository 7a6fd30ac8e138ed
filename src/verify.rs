//! Proves a bundle complete and intact on arrival, trusting nothing in it: one streaming pass hashes every
//! blob as it passes (the whole file is hashed on another thread for the `.sha256`), then every reference
//! is checked: index → manifests → configs and layers, `manifest.json` and `ferry.json` against the index,
//! and, with a Kubernetes version, the catalog against the bundle. Every finding is collected.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::catalog::Catalogs;
use crate::digest::{Digest, Hashing};
use crate::image::{media, Descriptor, Manifest};
use crate::k8s::KubeVersion;
use crate::reference::Reference;
use crate::resolve::resolve;
use crate::tarball::read::{read_bundle, Entry, Observer, ReadError, Source};
use crate::tarball::{
    file_name, names, pretty, sibling, DOCKER_MANIFEST_DIGEST, INDEX_JSON, LAYOUT_BYTES,
    LAYOUT_JSON, MANIFEST_JSON, METADATA_DIGEST, METADATA_JSON,
};

/// JSON documents larger than this are refused (containerd's own limit).
const MAX_DOCUMENT: u64 = 20 << 20;
/// Blobs that look like JSON and are at most this large are kept for parsing (manifests and configs).
const MAX_KEPT_BLOB: u64 = 4 << 20;
/// All kept blobs together; a hostile bundle of many small JSON blobs stops here.
const MAX_KEPT_TOTAL: u64 = 256 << 20;
/// The index annotations that name an image, as containerd and OCI layout readers read them.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Manifest and config bytes parsed over all images. Each image parses its own, so an index naming one
/// large manifest a hundred thousand times would otherwise cost hours and gigabytes; a real bundle parses
/// each kept blob about once.
const MAX_PARSED: u64 = MAX_KEPT_TOTAL;

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Also decompress each layer and check it against the config's diff_ids.
    pub deep: bool,
    /// Check the bundle holds every image the catalog lists for this Kubernetes version.
    pub kubernetes: Option<KubeVersion>,
}

/// What `.sha256` files beside the bundle said.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Checksum {
    /// Every checksum file found agrees with the bytes read.
    Verified { files: Vec<PathBuf> },
    /// No checksum file travelled with the bundle.
    Absent,
    Mismatch {
        file: PathBuf,
        name: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageVerdict {
    pub name: String,
    pub manifest: Option<Digest>,
    pub platform: Option<String>,
    pub size: u64,
    pub layers: Vec<Digest>,
    pub problems: Vec<String>,
}

/// Everything verify found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bundle: PathBuf,
    pub bytes: u64,
    pub checksum: Checksum,
    pub images: Vec<ImageVerdict>,
    /// Findings that belong to no single image.
    pub problems: Vec<String>,
    /// Images the catalog lists for `--k8s` that the bundle lacks.
    pub missing: Vec<String>,
    pub blobs: usize,
    pub metadata: Option<Value>,
    /// Where each blob's bytes are in the tar stream (offset, size), for delivery.
    #[serde(skip)]
    pub locations: BTreeMap<Digest, (u64, u64)>,
    #[serde(skip)]
    pub source: Option<Source>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
            && self.missing.is_empty()
            && self.images.iter().all(|i| i.problems.is_empty())
            && !matches!(self.checksum, Checksum::Mismatch { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// A blob as it passed.
#[derive(Default)]
struct SeenBlob {
    size: u64,
    actual: Option<Digest>,
    kept: Option<Vec<u8>>,
    /// The digest of its decompressed content (`--deep`, gzip layers only).
    uncompressed: Option<Digest>,
}

#[derive(Default)]
struct Contents {
    documents: BTreeMap<String, Vec<u8>>,
    blobs: BTreeMap<Digest, SeenBlob>,
    kept_total: u64,
    problems: Vec<String>,
    locations: BTreeMap<Digest, (u64, u64)>,
}

/// Hashes the raw file(s) on a second thread: per part and whole.
struct OuterHasher {
    sender: Option<mpsc::SyncSender<Option<Vec<u8>>>>,
    worker: Option<std::thread::JoinHandle<(Vec<Digest>, Digest)>>,
}

impl OuterHasher {
    fn start() -> OuterHasher {
        let (sender, receiver) = mpsc::sync_channel::<Option<Vec<u8>>>(16);
        let worker = std::thread::spawn(move || {
            let (mut whole, mut parts, mut part) = (Sha256::new(), Vec::new(), None::<Sha256>);
            for message in receiver {
                match message {
                    None => parts.extend(part.replace(Sha256::new()).map(Digest::from_hasher)),
                    Some(chunk) => {
                        whole.update(&chunk);
                        part.get_or_insert_with(Sha256::new).update(&chunk);
                    }
                }
            }
            parts.extend(part.map(Digest::from_hasher));
            (parts, Digest::from_hasher(whole))
        });
        OuterHasher {
            sender: Some(sender),
            worker: Some(worker),
        }
    }

    fn finish(mut self) -> (Vec<Digest>, Digest) {
        drop(self.sender.take());
        self.worker
            .take()
            .expect("started")
            .join()
            .expect("hasher thread does not panic")
    }
}

impl Observer for OuterHasher {
    fn part_started(&mut self, index: usize) {
        if index > 0 {
            let _ = self.sender.as_ref().expect("open").send(None);
        }
    }

    fn bytes(&mut self, chunk: &[u8]) {
        let _ = self
            .sender
            .as_ref()
            .expect("open")
            .send(Some(chunk.to_vec()));
    }
}

pub fn verify(
    path: &Path,
    options: &VerifyOptions,
    catalogs: &Catalogs,
) -> Result<Report, VerifyError> {
    let source = Source::locate(path)?;
    let mut hasher = OuterHasher::start();
    let mut contents = Contents::default();
    let bytes = read_bundle(&source, &mut hasher, |entry| {
        contents.take(entry, options.deep)
    })?;
    let (parts, whole) = hasher.finish();
    let checksum = check_sums(&source, &parts, &whole);
    let mut report = Report {
        bundle: path.to_path_buf(),
        bytes,
        checksum,
        images: Vec::new(),
        problems: std::mem::take(&mut contents.problems),
        missing: Vec::new(),
        blobs: contents.blobs.len(),
        metadata: None,
        locations: std::mem::take(&mut contents.locations),
        source: Some(source),
    };
    contents.cross_check(&mut report, options.deep);
    if let Some(version) = options.kubernetes {
        check_completeness(&mut report, version, catalogs);
    }
    Ok(report)
}

impl Contents {
    fn take(&mut self, entry: Entry<'_>, deep: bool) -> io::Result<()> {
        let Entry {
            name,
            size,
            offset,
            data,
        } = entry;
        let Some(hex) = name.strip_prefix(crate::tarball::BLOBS_DIR) else {
            if size > MAX_DOCUMENT {
                self.problems.push(format!(
                    "{name} is {size} bytes, more than the {MAX_DOCUMENT} allowed"
                ));
                return Ok(());
            }
            let mut bytes = Vec::with_capacity(size as usize);
            data.read_to_end(&mut bytes)?;
            self.documents.insert(name, bytes);
            return Ok(());
        };
        let named = Digest::from_hex(hex).expect("the reader accepts only hex blob names");
        self.locations.insert(named.clone(), (offset, size));
        let mut first = [0u8; 1];
        let got = data.read(&mut first)?;
        let mut data = first[..got].chain(data);
        let keep = got == 1
            && first[0] == b'{'
            && size <= MAX_KEPT_BLOB
            && self.kept_total + size <= MAX_KEPT_TOTAL;
        let gzip_layer = deep && got == 1 && first[0] == 0x1f;
        let mut kept = keep.then(|| Vec::with_capacity(size as usize));
        let mut inflater =
            gzip_layer.then(|| flate2::write::MultiGzDecoder::new(Hashing::new(io::sink())));
        let mut hashing = Hashing::new(io::sink());
        let mut buffer = vec![0u8; 256 * 1024];
        let mut inflate_failed = false;
        loop {
            let n = data.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hashing.write_all(&buffer[..n])?;
            if let Some(kept) = kept.as_mut() {
                kept.extend_from_slice(&buffer[..n]);
            }
            if let Some(inflater) = inflater.as_mut() {
                inflate_failed |= inflater.write_all(&buffer[..n]).is_err();
            }
        }
        let (_, actual, _) = hashing.finish();
        let uncompressed = match inflater.map(|i| i.finish()) {
            Some(Ok(hashing)) if !inflate_failed => Some(hashing.finish().1),
            Some(_) => {
                self.problems
                    .push(format!("blob {named} is not valid gzip"));
                None
            }
            None => None,
        };
        if actual != named {
            self.problems.push(format!(
                "blob {named} is damaged: its content hashes to {actual}"
            ));
        }
        self.kept_total += kept.as_ref().map_or(0, |k| k.len() as u64);
        self.blobs.insert(
            named,
            SeenBlob {
                size,
                actual: Some(actual),
                kept,
                uncompressed,
            },
        );
        Ok(())
    }

    /// A blob that is present, intact and of the size its descriptor says; else why not.
    fn check_blob(&self, digest: &Digest, size: u64, what: &str) -> Result<&SeenBlob, String> {
        let blob = self
            .blobs
            .get(digest)
            .ok_or_else(|| format!("{what} {digest} is missing"))?;
        if blob.actual.as_ref() != Some(digest) {
            return Err(format!("{what} {digest} is damaged"));
        }
        if blob.size != size {
            return Err(format!(
                "{what} {digest} has {} bytes, but its descriptor says {size}",
                blob.size
            ));
        }
        Ok(blob)
    }

    /// A document that must be exactly as ferry writes it; `None` (with a problem recorded) otherwise.
    fn document(&self, name: &str, problems: &mut Vec<String>) -> Option<Value> {
        let Some(bytes) = self.documents.get(name) else {
            problems.push(format!("{name} is missing"));
            return None;
        };
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) if pretty(&value) == *bytes => Some(value),
            Ok(_) => {
                problems.push(format!(
                    "{name} is damaged: it is not byte for byte what ferry writes"
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{name} is damaged: {e}"));
                None
            }
        }
    }

    fn cross_check(&self, report: &mut Report, deep: bool) {
        let problems = &mut report.problems;
        if self.documents.get(LAYOUT_JSON).map(Vec::as_slice) != Some(LAYOUT_BYTES) {
            problems.push(format!("{LAYOUT_JSON} is missing or damaged"));
        }
        let Some(index) = self.document(INDEX_JSON, problems) else {
            return;
        };
        if index["schemaVersion"] != 2 || index["mediaType"] != media::OCI_INDEX {
            problems.push(format!("{INDEX_JSON} is not an OCI image index"));
        }
        let metadata = self.document(METADATA_JSON, problems);
        let docker = self.document(MANIFEST_JSON, problems);
        for (name, key) in [
            (METADATA_JSON, METADATA_DIGEST),
            (MANIFEST_JSON, DOCKER_MANIFEST_DIGEST),
        ] {
            let actual = self.documents.get(name).map(|b| Digest::of(b).to_string());
            if index["annotations"][key].as_str() != actual.as_deref() {
                problems.push(format!(
                    "{name} does not match the digest {INDEX_JSON} records for it"
                ));
            }
        }
        let descriptors = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut referenced = BTreeSet::new();
        let mut budget = Budget(MAX_PARSED);
        for (position, descriptor) in descriptors.iter().enumerate() {
            let verdict =
                self.check_image(position, descriptor, deep, &mut referenced, &mut budget);
            report.images.push(verdict);
        }
        for unreferenced in self.blobs.keys().filter(|d| !referenced.contains(*d)) {
            problems.push(format!("blob {unreferenced} is referenced by no image"));
        }
        if let Some(docker) = docker {
            check_docker_manifest(&docker, &mut report.images);
        }
        if let Some(metadata) = &metadata {
            check_metadata(
                metadata,
                &descriptors,
                &mut report.images,
                &mut report.problems,
            );
        }
        report.metadata = metadata;
    }

    fn check_image(
        &self,
        position: usize,
        descriptor: &Value,
        deep: bool,
        referenced: &mut BTreeSet<Digest>,
        budget: &mut Budget,
    ) -> ImageVerdict {
        let name =
            index_name(descriptor).map_or(format!("image #{}", position + 1), str::to_string);
        let mut verdict = ImageVerdict {
            name,
            manifest: None,
            platform: None,
            size: 0,
            layers: Vec::new(),
            problems: Vec::new(),
        };
        let parsed: Result<crate::image::Descriptor, _> =
            serde_json::from_value(descriptor.clone());
        let Ok(descriptor) = parsed else {
            verdict.problems.push(format!(
                "its entry in {INDEX_JSON} is not a valid descriptor"
            ));
            return verdict;
        };
        referenced.insert(descriptor.digest.clone());
        verdict.manifest = Some(descriptor.digest.clone());
        let manifest_blob = match self
            .check_blob(&descriptor.digest, descriptor.size, "manifest")
            .and_then(|blob| budget.spend(blob))
        {
            Ok(blob) => blob,
            Err(problem) => {
                verdict.problems.push(problem);
                return verdict;
            }
        };
        let manifest: Manifest = match manifest_blob.kept.as_deref().map(serde_json::from_slice) {
            Some(Ok(manifest)) => manifest,
            _ => {
                verdict.problems.push(format!(
                    "manifest {} is not a readable image manifest",
                    descriptor.digest
                ));
                return verdict;
            }
        };
        if let Err(problem) = check_index_entry(&descriptor, &manifest) {
            verdict.problems.push(problem);
        }
        verdict.size = descriptor.size
            + manifest.config.size
            + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        verdict.layers = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        referenced.extend(
            std::iter::once(manifest.config.digest.clone()).chain(verdict.layers.iter().cloned()),
        );
        let config = self
            .check_blob(&manifest.config.digest, manifest.config.size, "config")
            .and_then(|blob| budget.spend(blob))
            .and_then(|blob| {
                blob.kept
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    .ok_or_else(|| format!("config {} is not JSON", manifest.config.digest))
            });
        let config = match config {
            Ok(config) => config,
            Err(problem) => {
                verdict.problems.push(problem);
                Value::Null
            }
        };
        verdict.platform = config["os"].as_str().map(|os| {
            let variant = config["variant"]
                .as_str()
                .map(|v| format!("/{v}"))
                .unwrap_or_default();
            format!(
                "{os}/{}{variant}",
                config["architecture"].as_str().unwrap_or("?")
            )
        });
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !config.is_null() && diff_ids.len() != manifest.layers.len() {
            verdict.problems.push(format!(
                "its config lists {} diff_ids for {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ));
        }
        for (i, layer) in manifest.layers.iter().enumerate() {
            match self.check_blob(&layer.digest, layer.size, "layer") {
                Err(problem) => verdict.problems.push(problem),
                Ok(blob) if deep => {
                    let content = if layer.media_type.ends_with("gzip") {
                        blob.uncompressed.clone()
                    } else {
                        Some(layer.digest.clone())
                    };
                    let expected = diff_ids.get(i).copied();
                    if content.as_ref().map(ToString::to_string).as_deref() != expected {
                        verdict.problems.push(format!(
                            "layer {} does not decompress to the diff_id its config records",
                            layer.digest
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
        verdict
    }
}

/// The fields of an index entry no digest covers must be what ferry writes, as runtimes act on them: the
/// manifest's own media type, no platform, and either no annotations or the image's name and its tag.
fn check_index_entry(descriptor: &Descriptor, manifest: &Manifest) -> Result<(), String> {
    let declared = manifest
        .media_type
        .as_deref()
        .unwrap_or(media::OCI_MANIFEST);
    if descriptor.media_type != declared {
        return Err(format!(
            "its media type in {INDEX_JSON} is {}, but its manifest is {declared}",
            descriptor.media_type
        ));
    }
    if descriptor.platform.is_some() {
        return Err(format!("its entry in {INDEX_JSON} names a platform"));
    }
    let Some(annotations) = &descriptor.annotations else {
        return Ok(());
    };
    let name = annotations.get(NAME_ANNOTATION).map_or("", String::as_str);
    let reference = name
        .parse::<Reference>()
        .ok()
        .filter(|r| r.tagged_name().as_deref() == Some(name));
    let expected = reference.as_ref().and_then(Reference::tag).map(|tag| {
        BTreeMap::from([
            (NAME_ANNOTATION.to_string(), name.to_string()),
            (REF_NAME_ANNOTATION.to_string(), tag.to_string()),
        ])
    });
    if expected.as_ref() != Some(annotations) {
        return Err(format!(
            "its annotations in {INDEX_JSON} are not its name and tag"
        ));
    }
    Ok(())
}

/// What is left of [`MAX_PARSED`].
struct Budget(u64);

impl Budget {
    /// Passes `blob` on for parsing if the budget allows it.
    fn spend<'b>(&mut self, blob: &'b SeenBlob) -> Result<&'b SeenBlob, String> {
        self.0 = self.0.checked_sub(blob.size).ok_or_else(|| {
            format!("not checked: {INDEX_JSON} names manifests and configs of more than {MAX_PARSED} bytes in all")
        })?;
        Ok(blob)
    }
}

/// `manifest.json` must describe exactly the images the index does, with the same blobs.
fn check_docker_manifest(docker: &Value, images: &mut [ImageVerdict]) {
    let entries = docker.as_array().cloned().unwrap_or_default();
    let count = images.len();
    if entries.len() != count {
        for image in images.iter_mut() {
            image.problems.push(format!(
                "{MANIFEST_JSON} lists {} images, the index {count}",
                entries.len()
            ));
        }
        return;
    }
    for (entry, image) in entries.iter().zip(images.iter_mut()) {
        let tags: Vec<&str> = entry["RepoTags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !(tags.is_empty() || tags == [image.name.as_str()]) {
            image
                .problems
                .push(format!("{MANIFEST_JSON} names it {tags:?}"));
        }
        let layers: Vec<String> = image.layers.iter().map(names::blob_path).collect();
        let listed: Vec<&str> = entry["Layers"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if listed != layers.iter().map(String::as_str).collect::<Vec<_>>() {
            image.problems.push(format!(
                "its layers in {MANIFEST_JSON} differ from its manifest's"
            ));
        }
        if !entry["Config"]
            .as_str()
            .is_some_and(|c| c.starts_with(crate::tarball::BLOBS_DIR))
        {
            image.problems.push(format!(
                "its Config in {MANIFEST_JSON} points outside the bundle's blobs"
            ));
        }
    }
}

/// The name the index gives an image; an image pulled by digest alone has none.
fn index_name(descriptor: &Value) -> Option<&str> {
    descriptor["annotations"]["io.containerd.image.name"].as_str()
}

/// `ferry.json` must list exactly the images inside, in the index's order, with their digests and sizes.
/// It names each by the reference it was pulled as, pin included, which the index cannot hold: the index
/// name is that reference's tagged name, and an image with none takes its name from `ferry.json`.
fn check_metadata(
    metadata: &Value,
    descriptors: &[Value],
    images: &mut [ImageVerdict],
    problems: &mut Vec<String>,
) {
    let listed = metadata["images"].as_array().cloned().unwrap_or_default();
    if listed.len() != images.len() {
        problems.push(format!(
            "{METADATA_JSON} lists {} images, but the bundle holds {}",
            listed.len(),
            images.len()
        ));
    }
    for ((entry, descriptor), image) in listed.iter().zip(descriptors).zip(images.iter_mut()) {
        let name = entry["name"].as_str().unwrap_or_default();
        let tagged = name
            .parse::<crate::reference::Reference>()
            .ok()
            .map(|r| r.tagged_name());
        match (tagged, index_name(descriptor)) {
            (Some(Some(tagged)), Some(indexed)) if tagged == indexed => {}
            (Some(None), None) => image.name = name.to_string(),
            _ => {
                problems.push(format!(
                    "{METADATA_JSON} lists {name} where the bundle holds {}",
                    image.name
                ));
                continue;
            }
        }
        if entry["manifest"]["digest"].as_str()
            != image.manifest.as_ref().map(ToString::to_string).as_deref()
        {
            image.problems.push(format!(
                "{METADATA_JSON} records another manifest digest for it"
            ));
        }
        if entry["size"].as_u64() != Some(image.size) {
            image.problems.push(format!(
                "{METADATA_JSON} records {} bytes for it, the bundle holds {}",
                entry["size"], image.size
            ));
        }
        if image.platform.is_some() && entry["platform"].as_str() != image.platform.as_deref() {
            image.problems.push(format!(
                "{METADATA_JSON} records platform {}",
                entry["platform"]
            ));
        }
    }
}

/// With `--k8s`: every image the catalog lists for that version must be inside.
fn check_completeness(report: &mut Report, version: KubeVersion, catalogs: &Catalogs) {
    let Some(metadata) = &report.metadata else {
        return;
    };
    let (Some(catalog), Some(release)) =
        (metadata["catalog"].as_str(), metadata["release"].as_str())
    else {
        report.problems.push(format!(
            "{METADATA_JSON} names no catalog release, so --k8s cannot be checked"
        ));
        return;
    };
    let release = match catalogs.find(&format!("{catalog}@{release}")) {
        Ok(release) => release,
        Err(e) => {
            report.problems.push(e.to_string());
            return;
        }
    };
    let service = metadata["service"]
        .as_str()
        .and_then(|s| release.service(s).ok());
    match resolve(release, version, service) {
        Err(e) => report.problems.push(e.to_string()),
        Ok(rows) => {
            let inside: BTreeSet<&str> = report.images.iter().map(|i| i.name.as_str()).collect();
            report.missing = rows
                .iter()
                .map(|r| r.reference().to_string())
                .filter(|r| !inside.contains(r.as_str()))
                .collect();
        }
    }
}

/// `<hex>  <name>` (or `<hex> *<name>`, binary mode), hex in either case as `sha256sum -c` accepts it.
fn checksum_line(line: &str) -> Option<(String, Digest)> {
    let (hex, name) = line.split_once("  ").or_else(|| line.split_once(" *"))?;
    Some((
        name.trim().to_string(),
        Digest::from_hex(&hex.trim().to_ascii_lowercase()).ok()?,
    ))
}

/// Compares the bytes read with every `sha256sum -c` file beside the bundle.
fn check_sums(source: &Source, parts: &[Digest], whole: &Digest) -> Checksum {
    let mut expected: Vec<(PathBuf, Vec<(String, Digest)>)> = Vec::new();
    let split = source.files.len() > 1 || source.files[0] != source.whole;
    let mut candidates = vec![sibling(&source.whole, ".sha256")];
    if split {
        candidates.push(sibling(&source.whole, ".parts.sha256"));
    }
    let mut files = Vec::new();
    for file in candidates {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let mut lines = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                // A line that does not read as `sha256sum` output must not pass as a checked one.
                let Some(parsed) = checksum_line(line) else {
                    return Checksum::Mismatch {
                        file,
                        name: line.to_string(),
                        expected: "a line '<64 hex digits>  <file name>'".into(),
                        actual: "an unreadable line".into(),
                    };
                };
                lines.push(parsed);
            }
            expected.push((file.clone(), lines));
            files.push(file);
        }
    }
    if files.is_empty() {
        return Checksum::Absent;
    }
    let mut actual: Vec<(String, &Digest)> = vec![(file_name(&source.whole), whole)];
    if split {
        actual.extend(source.files.iter().map(|p| file_name(p)).zip(parts));
    }
    for (file, lines) in &expected {
        for (name, digest) in lines {
            match actual.iter().find(|(n, _)| n == name) {
                Some((_, got)) if *got == digest => {}
                Some((_, got)) => {
                    return Checksum::Mismatch {
                        file: file.clone(),
                        name: name.clone(),
                        expected: digest.to_string(),
                        actual: got.to_string(),
                    }
                }
                None => {
                    return Checksum::Mismatch {
                        file: file.clone(),
                        name: name.clone(),
                        expected: digest.to_string(),
                        actual: "not read".into(),
                    }
                }
            }
        }
    }
    Checksum::Verified { files }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::BlobStore;
    use crate::progress::Silent;
    use crate::tarball::{write_bundle, WriteOptions};

    const BLOCK_SIZE: usize = 512;

    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A small real bundle without its `.sha256`: (its directory, its path, its bytes).
    fn fixture_bundle() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let images = crate::tarball::two_images(&store);
        let path = dir.path().join("b.tar");
        write_bundle(
            &store,
            &images,
            &serde_json::json!({"images": []}),
            &path,
            &WriteOptions::default(),
            &Silent,
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("b.tar.sha256")).unwrap();
        let original = std::fs::read(&path).unwrap();
        (dir, path, original)
    }

    /// Property test standing in for a fuzzer: thousands of random mutations of a real bundle (bit flips,
    /// truncations, inserted and deleted bytes). The reader must never panic, and no mutation may pass.
    #[test]
    fn no_mutation_of_a_bundle_passes_and_none_panics() {
        let (dir, path, original) = fixture_bundle();
        let catalogs = Catalogs::load(&[]).unwrap();
        let deep = VerifyOptions {
            deep: true,
            kubernetes: None,
        };
        let baseline = verify(&path, &deep, &catalogs).unwrap();
        assert!(
            baseline.images.len() == 2
                && baseline
                    .problems
                    .iter()
                    .all(|p| p.contains("ferry.json lists")),
            "{:?}",
            baseline.problems
        );
        // The fixture is not flawless (its ferry.json lists no images, its configs no diff_ids, its layers are not gzip): a mutation
        // passes if it adds no finding to those.
        let findings = |r: &Report| {
            (
                r.problems.clone(),
                r.images
                    .iter()
                    .map(|i| i.problems.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let baseline = findings(&baseline);

        let mutated = dir.path().join("m.tar");
        let mut state = 0x2545_f491_4f6c_dd1d;
        for round in 0..1500 {
            let mut bytes = original.clone();
            let at = (next(&mut state) % bytes.len() as u64) as usize;
            match round % 4 {
                0 | 1 => bytes[at] ^= 1 << (next(&mut state) % 8),
                2 => bytes.truncate(at),
                _ => {
                    bytes.insert(at, (next(&mut state) % 256) as u8);
                }
            }
            if bytes == original {
                continue;
            }
            std::fs::write(&mutated, &bytes).unwrap();
            if let Ok(report) = verify(&mutated, &deep, &catalogs) {
                assert_ne!(
                    findings(&report),
                    baseline,
                    "round {round}: a mutation at byte {at} passed unnoticed"
                );
            }
        }
    }

    /// Every byte of `index.json` matters to some runtime, so none may change unnoticed, even with the tar
    /// header's checksum made to agree (as a hostile or a careless edit would).
    #[test]
    fn no_change_to_any_byte_of_the_index_passes() {
        let (dir, path, original) = fixture_bundle();
        let catalogs = Catalogs::load(&[]).unwrap();
        let findings = |r: &Report| {
            (
                r.problems.clone(),
                r.images
                    .iter()
                    .map(|i| i.problems.clone())
                    .collect::<Vec<_>>(),
            )
        };
        let baseline = findings(&verify(&path, &VerifyOptions::default(), &catalogs).unwrap());
        // index.json is the third entry: header at 2048, data after it (the first two fit in one block each).
        let header = 4 * BLOCK_SIZE;
        assert_eq!(&original[header..header + 10], b"index.json");
        let size = usize::from_str_radix(
            std::str::from_utf8(&original[header + 124..header + 135]).unwrap(),
            8,
        )
        .unwrap();
        let mutated = dir.path().join("m.tar");
        for at in header + BLOCK_SIZE..header + BLOCK_SIZE + size {
            let mut bytes = original.clone();
            bytes[at] ^= 1 << (at % 8);
            let mut block = bytes[header..header + BLOCK_SIZE].to_vec();
            block[148..156].fill(b' ');
            let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
            bytes[header + 148..header + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            std::fs::write(&mutated, &bytes).unwrap();
            let report = verify(&mutated, &VerifyOptions::default(), &catalogs).unwrap();
            let context = String::from_utf8_lossy(&original[at - 30..at + 5]).replace('\n', " ");
            assert_ne!(
                findings(&report),
                baseline,
                "a change at byte {at} passed unnoticed: {context}"
            );
        }
    }
    /// An index that names one large manifest over and over must not make verify parse it every time: the
    /// work stops at a budget, with a finding.
    #[test]
    fn an_index_repeating_a_large_manifest_is_checked_within_a_budget() {
        let dir = tempfile::tempdir().unwrap();
        let layer = b"layer".to_vec();
        let config = br#"{"os":"linux","architecture":"amd64"}"#.to_vec();
        let descriptor = |bytes: &[u8], media_type: &str| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": bytes.len()});
        let layers = vec![descriptor(&layer, media::OCI_LAYER_TAR); 9000];
        let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "config": descriptor(&config, media::OCI_CONFIG), "layers": layers})).unwrap();
        assert!(manifest.len() > 1 << 20);
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": vec![descriptor(&manifest, media::OCI_MANIFEST); 300]});
        let mut tar = tar::Builder::new(Vec::new());
        let mut append = |name: String, bytes: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, bytes).unwrap();
        };
        append(INDEX_JSON.into(), &pretty(&index));
        for blob in [&layer, &config, &manifest] {
            append(names::blob_path(&Digest::of(blob)), blob);
        }
        let path = dir.path().join("b.tar");
        std::fs::write(&path, tar.into_inner().unwrap()).unwrap();
        let report = verify(
            &path,
            &VerifyOptions::default(),
            &Catalogs::load(&[]).unwrap(),
        )
        .unwrap();
        let unchecked = report
            .images
            .iter()
            .filter(|i| i.problems.iter().any(|p| p.starts_with("not checked")))
            .count();
        assert!(
            (1..300).contains(&unchecked),
            "{unchecked} of 300 images not checked"
        );
    }
}
