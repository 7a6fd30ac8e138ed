//! Push a verified bundle into a private registry, bytes unchanged, so every manifest keeps its upstream
//! digest: blobs the registry has are skipped (HEAD), blobs pushed to another repository in this run are
//! mounted instead of uploaded again, the rest are uploaded in chunks straight from the bundle file.
//!
//! A delta pushed without its bases finds the blobs it left out in the registry its bases were pushed
//! into: in each image's own repository, or mounted from a repository the base's push filled (CNCF
//! Distribution links blobs per repository and refuses a manifest whose blobs are not linked). Every such
//! blob is placed for every image before any manifest is pushed, so that a missing one pushes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::Mutex;

use super::feed::{Checked, NotAsVerified};
use crate::digest::Digest;
use crate::image::{Index, Manifest};
use crate::progress::{Action, Id, Reporter, Task};
use crate::reference::Reference;
use crate::registry::retry::after_attempts;
use crate::registry::{FetchError, Mount, RegistryClient, RegistryError, RegistryOptions, Target};
use crate::verify::Verified;

/// One image pushed: where it came from, where it went, and its manifest digest.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub source: String,
    pub target: String,
    pub digest: Digest,
}

#[derive(Debug, Default, Serialize)]
pub struct PushSummary {
    pub images: Vec<Pushed>,
    pub uploaded_blobs: usize,
    pub uploaded_bytes: u64,
    pub mounted_blobs: usize,
    pub present_blobs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Mapping(String),
    #[error(
        "{} is gzipped; push reads blobs in place from an uncompressed bundle: gunzip it first",
        .0.display()
    )]
    Compressed(std::path::PathBuf),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot read the bundle")]
    Read(#[source] std::io::Error),
    #[error("{} changed since it was verified; verify it again", .0.display())]
    Changed(std::path::PathBuf),
    #[error("blob {digest} of {image} is expected from base {base}, but {registry} holds it neither in {repository} nor in {}; push that base there first, or give it with --base: no manifest was pushed", tried_text(.tried))]
    FromBase {
        digest: Digest,
        image: String,
        base: String,
        registry: String,
        repository: String,
        tried: Vec<String>,
    },
    #[error(
        "{} no longer reads as it did when verified: {cause}; its upload to {target} was stopped before \
         its last chunk, so the registry does not have it. Verify the bundle again, and push it from local \
         disk if it is on a shared folder or a removable device",
        .bundle.display()
    )]
    Reread {
        bundle: std::path::PathBuf,
        target: String,
        cause: NotAsVerified,
    },
    #[error("cannot push {image} to {target} ({what}{})", after_attempts(*attempts))]
    Push {
        what: String,
        image: String,
        target: String,
        attempts: u32,
        #[source]
        cause: FetchError,
    },
}

/// The base's repositories a blob was looked for in, as a message says it.
fn tried_text(tried: &[String]) -> String {
    match tried {
        [] => "any repository of the base's images the delta names".to_string(),
        _ => format!("the base's repositories {}", tried.join(", ")),
    }
}

/// One tag to push: the image's upstream name, its name in the target registry, and the manifest the tag
/// will name. In a bundle of several platforms that is ferry's index of them, and `platforms` holds each
/// platform's manifest, pushed first by digest.
#[derive(Debug, Clone)]
pub struct Planned {
    pub upstream: Reference,
    pub target: Reference,
    pub digest: Digest,
    pub platforms: Vec<Digest>,
    /// Every blob and manifest the tag reaches, shared ones counted for each tag: its push's total.
    pub bytes: u64,
}

/// The mapping from each image in the bundle to its name in the target registry.
pub fn plan(report: &Verified, target: &Target) -> Result<Vec<Planned>, PushError> {
    report
        .images()
        .chunk_by(|a, b| {
            a.reference() == b.reference() && a.index().is_some() && a.index() == b.index()
        })
        .map(|group| {
            let image = &group[0];
            let upstream = image.reference().clone();
            let (manifest, platforms) = match image.index() {
                Some(index) => (
                    index.clone(),
                    group.iter().map(|i| i.manifest().clone()).collect(),
                ),
                None => (image.manifest().clone(), Vec::new()),
            };
            let mapped = target.map(&upstream).map_err(PushError::Mapping)?;
            // An image pulled by digest alone is pushed by the digest of what is pushed: the upstream pin
            // may be that of a multi-platform index the bundle does not carry.
            let mapped = if mapped.digest().is_some() {
                mapped.with_digest(manifest.clone())
            } else {
                mapped
            };
            let bytes = group
                .iter()
                .flat_map(|image| {
                    [image.manifest(), image.config()]
                        .into_iter()
                        .chain(image.layers())
                })
                .chain(image.index())
                .map(|digest| report.size(digest).unwrap_or(0))
                .fold(0u64, u64::saturating_add);
            Ok(Planned {
                upstream,
                target: mapped,
                digest: manifest,
                platforms,
                bytes,
            })
        })
        .collect()
}

struct Pusher<'a> {
    client: RegistryClient,
    report: &'a Verified,
    target: &'a Target,
    options: &'a RegistryOptions,
    reporter: &'a dyn Reporter,
    /// Which target reference already holds each blob pushed in this run, for mounting; the lock makes two
    /// images sharing a blob wait for one upload instead of racing two.
    holders: Mutex<HashMap<Digest, std::sync::Arc<Mutex<Option<Reference>>>>>,
    uploaded_bytes: AtomicU64,
    uploaded: AtomicUsize,
    mounted: AtomicUsize,
    present: AtomicUsize,
    /// Blobs of a delta's bases mounted before the push, in (repository, digest): counted as mounted,
    /// not again as present.
    mounted_from_bases: std::sync::Mutex<HashSet<(String, Digest)>>,
}

pub async fn push(
    report: &Verified,
    target: &Target,
    options: &RegistryOptions,
    jobs: usize,
    reporter: &dyn Reporter,
) -> Result<PushSummary, PushError> {
    if report.source().is_gzipped().unwrap_or(false) {
        return Err(PushError::Compressed(report.bundle().to_path_buf()));
    }
    let mapping = plan(report, target)?;
    let hosts = std::iter::once(target.host.clone()).collect();
    let pusher = Pusher {
        client: RegistryClient::connect(options, &hosts).await?,
        report,
        target,
        options,
        reporter,
        holders: Mutex::new(HashMap::new()),
        uploaded_bytes: AtomicU64::new(0),
        uploaded: AtomicUsize::new(0),
        mounted: AtomicUsize::new(0),
        present: AtomicUsize::new(0),
        mounted_from_bases: std::sync::Mutex::new(HashSet::new()),
    };
    pusher.place_base_blobs(&mapping, jobs).await?;
    let images: Vec<Pushed> = stream::iter(&mapping)
        .map(|planned| pusher.push_image(planned))
        .buffered(jobs.max(1))
        .try_collect()
        .await?;
    Ok(PushSummary {
        images,
        uploaded_blobs: pusher.uploaded.load(Ordering::Relaxed),
        uploaded_bytes: pusher.uploaded_bytes.load(Ordering::Relaxed),
        mounted_blobs: pusher.mounted.load(Ordering::Relaxed),
        present_blobs: pusher.present.load(Ordering::Relaxed),
    })
}

impl Pusher<'_> {
    fn size(&self, digest: &Digest) -> u64 {
        self.report.size(digest).unwrap_or(0)
    }

    /// A delta pushed without its bases: each blob it expects from them, for each image that needs it,
    /// present in the image's repository or mounted there, before anything else is pushed.
    async fn place_base_blobs(&self, mapping: &[Planned], jobs: usize) -> Result<(), PushError> {
        let Some(delta) = self.report.delta().filter(|delta| !delta.complete()) else {
            return Ok(());
        };
        let mut seen = HashSet::new();
        let mut needed = Vec::new();
        for planned in mapping {
            let images = self
                .report
                .images()
                .iter()
                .filter(|image| image.reference() == &planned.upstream);
            for image in images {
                for digest in std::iter::once(image.config()).chain(image.layers()) {
                    let repository = planned.target.repository().to_string();
                    if delta.expected.contains_key(digest) && seen.insert((repository, digest)) {
                        needed.push((planned, digest));
                    }
                }
            }
        }
        // In order, so that of several missing blobs the first image's first is the one named.
        stream::iter(needed)
            .map(|(planned, digest)| self.place_base_blob(planned, digest))
            .buffered(jobs.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// One blob a delta expects from a base, in the repository of `planned`: there already, or mounted
    /// from the repository of an image of the base that holds it.
    async fn place_base_blob(&self, planned: &Planned, digest: &Digest) -> Result<(), PushError> {
        let (upstream, target) = (&planned.upstream, &planned.target);
        let what = format!("blob {digest}");
        if self
            .retry(upstream, target, &what, |_| {
                self.client.blob_exists(target, digest)
            })
            .await?
        {
            return Ok(());
        }
        let mut tried = Vec::new();
        for holder in self.holders_in_bases(digest) {
            let Ok(from) = self.target.map(holder) else {
                continue;
            };
            if from.repository() == target.repository() {
                continue;
            }
            tried.push(from.repository().to_string());
            // A declined mount opens an upload session, which the registry lets expire unused.
            if let Ok(Mount::Mounted) = self.client.mount_blob(target, &from, digest).await {
                self.mounted.fetch_add(1, Ordering::Relaxed);
                self.mounted_from_bases
                    .lock()
                    .expect("not poisoned")
                    .insert((target.repository().to_string(), digest.clone()));
                return Ok(());
            }
        }
        Err(self.missing_from_base(upstream, target, digest, tried))
    }

    /// The images of the delta's base that hold `digest`, as the delta names them.
    fn holders_in_bases(&self, digest: &Digest) -> Vec<&Reference> {
        let Some(delta) = self.report.delta() else {
            return Vec::new();
        };
        delta
            .record
            .bases
            .iter()
            .flat_map(|base| &base.blobs)
            .filter(|blob| &blob.digest == digest)
            .flat_map(|blob| &blob.images)
            .collect()
    }

    fn missing_from_base(
        &self,
        upstream: &Reference,
        target: &Reference,
        digest: &Digest,
        tried: Vec<String>,
    ) -> PushError {
        let base = self
            .report
            .delta()
            .and_then(|delta| {
                let (index, _) = delta.expected.get(digest)?;
                Some(delta.record.bases[*index].shown())
            })
            .unwrap_or_default();
        PushError::FromBase {
            digest: digest.clone(),
            image: upstream.to_string(),
            base,
            registry: target.registry().to_string(),
            repository: target.repository().to_string(),
            tried,
        }
    }

    async fn retry<T, F, Fut>(
        &self,
        image: &Reference,
        target: &Reference,
        what: &str,
        operation: F,
    ) -> Result<T, PushError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        self.options
            .retry
            .run(operation, |attempt, error| {
                self.reporter
                    .retry(&image.to_string(), what, attempt, &error.to_string())
            })
            .await
            .map_err(|failure| PushError::Push {
                what: what.to_string(),
                image: image.to_string(),
                target: target.to_string(),
                attempts: failure.attempts,
                cause: failure.last,
            })
    }

    /// One tag: its manifest, or each platform's manifest by digest and then ferry's index of them.
    async fn push_image(&self, planned: &Planned) -> Result<Pushed, PushError> {
        let (upstream, target) = (&planned.upstream, &planned.target);
        let id = self.reporter.on_start(&Task {
            action: Action::Push,
            subject: &target.to_string(),
            total: planned.bytes,
            done: 0,
        });
        if planned.platforms.is_empty() {
            self.push_manifest(upstream, target, &planned.digest, id)
                .await?;
        } else {
            for digest in &planned.platforms {
                self.push_manifest(upstream, &target.by_digest(digest.clone()), digest, id)
                    .await?;
            }
            let index = read_manifest(self.report, &planned.digest)?;
            let size = index.len() as u64;
            // ferry's own, or (`--platform all`) the upstream one, which may be a Docker manifest list.
            let media_type = Index::media_type_of(&index);
            self.retry(upstream, target, "index", |_| {
                self.client
                    .push_manifest(target, index.clone(), &media_type)
            })
            .await?;
            self.reporter.on_progress(id, size);
        }
        self.reporter.on_complete(id);
        Ok(Pushed {
            source: upstream.to_string(),
            target: target.to_string(),
            digest: planned.digest.clone(),
        })
    }

    /// One single-platform manifest, after its config and layers, at `target` (a tag or a digest).
    async fn push_manifest(
        &self,
        upstream: &Reference,
        target: &Reference,
        digest: &Digest,
        id: Id,
    ) -> Result<(), PushError> {
        let manifest_bytes = read_manifest(self.report, digest)?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).expect("verify parsed these very bytes");
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            self.push_blob(upstream, target, &blob.digest, id).await?;
        }
        // An OCI manifest may omit its media type; then it is one.
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| crate::image::media::OCI_MANIFEST.to_string());
        let size = manifest_bytes.len() as u64;
        self.retry(upstream, target, "manifest", |_| {
            self.client
                .push_manifest(target, manifest_bytes.clone(), &media_type)
        })
        .await?;
        self.reporter.on_progress(id, size);
        Ok(())
    }

    /// One blob, unless the target has it; its bytes count for the task `id` whether uploaded, mounted or
    /// found present.
    async fn push_blob(
        &self,
        upstream: &Reference,
        target: &Reference,
        digest: &Digest,
        id: Id,
    ) -> Result<(), PushError> {
        let slot = self
            .holders
            .lock()
            .await
            .entry(digest.clone())
            .or_default()
            .clone();
        let mut holder = slot.lock().await;
        let what = format!("blob {digest}");
        if self
            .retry(upstream, target, &what, |_| {
                self.client.blob_exists(target, digest)
            })
            .await?
        {
            let key = (target.repository().to_string(), digest.clone());
            if !self
                .mounted_from_bases
                .lock()
                .expect("not poisoned")
                .remove(&key)
            {
                self.present.fetch_add(1, Ordering::Relaxed);
            }
            self.reporter.on_progress(id, self.size(digest));
        } else if self.report.location(digest).is_none() {
            return Err(self.missing_from_base(upstream, target, digest, Vec::new()));
        } else if let Some(from) = holder
            .as_ref()
            .filter(|from| from.repository() != target.repository())
        {
            // A refused mount costs nothing but the upload it would have saved.
            match self.client.mount_blob(target, from, digest).await {
                Ok(Mount::Mounted) => {
                    self.mounted.fetch_add(1, Ordering::Relaxed);
                    self.reporter.on_progress(id, self.size(digest));
                }
                Ok(Mount::Declined(session)) => {
                    self.upload(upstream, target, digest, id, Some(session))
                        .await?
                }
                Err(_) => self.upload(upstream, target, digest, id, None).await?,
            }
        } else {
            self.upload(upstream, target, digest, id, None).await?;
        }
        *holder = Some(target.clone());
        Ok(())
    }

    /// Uploads one blob from the bundle; its bytes are counted for the task `id` as they are read to
    /// be sent.
    async fn upload(
        &self,
        upstream: &Reference,
        target: &Reference,
        digest: &Digest,
        id: Id,
        session: Option<reqwest::Url>,
    ) -> Result<(), PushError> {
        let (offset, size) = location(self.report, digest);
        let source = self.report.source();
        // The session a declined mount opened serves the first attempt; a retry opens its own.
        let session = std::sync::Mutex::new(session);
        let (sent, mut counts) = tokio::sync::mpsc::unbounded_channel();
        let high_water = std::sync::Arc::new(AtomicU64::new(0));
        let what = format!("blob {digest}");
        let session = &session;
        let uploading = self.retry(upstream, target, &what, move |_| {
            let session = session.lock().expect("not poisoned").take();
            let (sent, high_water) = (sent.clone(), high_water.clone());
            async move {
                let reader = source
                    .open_range(offset, size)
                    .map_err(FetchError::Bundle)?;
                // Hashed again on its way: the file may have changed since verify read it.
                let reader = Checked::new(reader, source, digest, (offset, size, false));
                let reader = SentBytes {
                    inner: reader,
                    read: 0,
                    high_water,
                    sent,
                };
                self.client
                    .push_blob(target, digest, size, session, reader)
                    .await
            }
        });
        // The sender lives in the retried closure, so the counts end when the upload does.
        let reporting = async {
            while let Some(bytes) = counts.recv().await {
                self.reporter.on_progress(id, bytes);
            }
        };
        tokio::join!(uploading, reporting)
            .0
            .map_err(|error| match error {
                PushError::Push {
                    cause: FetchError::Bundle(read),
                    what,
                    image,
                    target,
                    attempts,
                } => match NotAsVerified::within(read) {
                    Ok(cause) => PushError::Reread {
                        bundle: self.report.bundle().to_path_buf(),
                        target,
                        cause,
                    },
                    Err(read) => PushError::Push {
                        cause: FetchError::Bundle(read),
                        what,
                        image,
                        target,
                        attempts,
                    },
                },
                other => other,
            })?;
        self.uploaded.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }
}

/// A blob's bytes on their way to the registry, counted as the upload reads them: the reader is the
/// upload's own (it moves to a blocking thread), so the counts go back over a channel. A retry reads the
/// blob again from its start; only what goes beyond the bytes an earlier attempt read is counted.
struct SentBytes<R> {
    inner: R,
    read: u64,
    high_water: std::sync::Arc<AtomicU64>,
    sent: tokio::sync::mpsc::UnboundedSender<u64>,
}

impl<R: std::io::Read> std::io::Read for SentBytes<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let before = self.high_water.fetch_max(self.read, Ordering::Relaxed);
        if self.read > before {
            let _ = self.sent.send(self.read - before);
        }
        Ok(n)
    }
}

/// A manifest read from the bundle again, and checked again: a registry takes a manifest pushed by tag
/// as it comes, and the bundle may have changed since it was verified.
fn read_manifest(report: &Verified, digest: &Digest) -> Result<Vec<u8>, PushError> {
    let (offset, size) = location(report, digest);
    let mut bytes = Vec::with_capacity(size as usize);
    let mut reader = report
        .source()
        .open_range(offset, size)
        .map_err(PushError::Read)?;
    std::io::Read::read_to_end(&mut reader, &mut bytes).map_err(PushError::Read)?;
    if Digest::of(&bytes) != *digest {
        return Err(PushError::Changed(report.bundle().to_path_buf()));
    }
    Ok(bytes)
}

/// Where a blob of the bundle is: verify proved every blob an image names is there.
fn location(report: &Verified, digest: &Digest) -> (u64, u64) {
    report
        .location(digest)
        .expect("a verified bundle holds every blob")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upload counts its bytes as they are read; a retry, reading the blob again, counts only what
    /// goes beyond the earlier attempt, so the push's total is reached once.
    #[test]
    fn a_retried_upload_counts_each_byte_once() {
        use std::io::Read;
        let (sent, mut counts) = tokio::sync::mpsc::unbounded_channel();
        let high_water = std::sync::Arc::new(AtomicU64::new(0));
        let blob = [7u8; 100];
        let attempt = |upto: usize| {
            let mut reader = SentBytes {
                inner: &blob[..],
                read: 0,
                high_water: high_water.clone(),
                sent: sent.clone(),
            };
            let mut buffer = vec![0u8; upto];
            reader.read_exact(&mut buffer).unwrap();
        };
        attempt(60);
        attempt(30);
        attempt(100);
        drop(sent);
        let mut total = 0;
        while let Ok(n) = counts.try_recv() {
            total += n;
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn a_manifest_that_changed_since_verify_is_not_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let (images, path) =
            crate::testutil::intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        let report = crate::testutil::verified(&path);
        let digest = &images[0].manifest.digest;
        assert!(read_manifest(&report, digest).is_ok());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[report.location(digest).unwrap().0 as usize + 20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read_manifest(&report, digest),
            Err(PushError::Changed(_))
        ));
    }
}
