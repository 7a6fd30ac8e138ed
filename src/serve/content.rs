//! What `ferry serve` serves: the images of verified bundles under the names clients ask for, and where
//! each manifest and blob lies in the bundle files. Built once at start, read-only afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ServeError;
use crate::digest::Digest;
use crate::image::{limits, media, Descriptor};
use crate::reference::{Reference, DOCKER_HUB};
use crate::registry::Target;
use crate::tarball::read::Source;
use crate::verify::Verified;

/// The names Docker Hub also goes by, as clients may send them in `ns=`.
const DOCKER_HUB_ALIASES: &[&str] = &[DOCKER_HUB, "index.docker.io", "registry-1.docker.io"];

/// One tagged (or digest-pinned) image of a bundle.
#[derive(Debug)]
pub struct ServedImage {
    pub upstream: Reference,
    /// The repository `ferry push` gives it, without a host: `sig-storage/csi-provisioner`, `huawei-csi`.
    pub name: String,
    pub manifest: Digest,
    /// Every digest the image's manifest reaches: itself, the manifests of an index, configs, layers.
    reaches: HashSet<Digest>,
}

/// A manifest or index, with the bytes and media type it had upstream.
#[derive(Debug, Clone)]
pub struct Document {
    pub media_type: String,
    pub bytes: Bytes,
    /// The manifest this one refers to (a signature's or an SBOM's image), and how it says what it is.
    subject: Option<Digest>,
    artifact_type: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Document {
    /// A manifest or index as served, and the fields that say what it points to.
    fn parse(bytes: Bytes) -> Result<(Document, Parsed), serde_json::Error> {
        let parsed: Parsed = serde_json::from_slice(&bytes)?;
        let media_type = parsed.media_type.clone().unwrap_or_else(|| {
            if parsed.manifests.is_some() {
                media::OCI_INDEX.to_string()
            } else {
                media::OCI_MANIFEST.to_string()
            }
        });
        // A manifest without its own artifactType is named by its config's media type; an index is not.
        let artifact_type = parsed.artifact_type.clone().or_else(|| {
            parsed
                .manifests
                .is_none()
                .then(|| parsed.config.as_ref().map(|c| c.media_type.clone()))
                .flatten()
        });
        let document = Document {
            media_type,
            bytes,
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            artifact_type,
            annotations: parsed.annotations.clone(),
        };
        Ok((document, parsed))
    }
}

/// One entry of a referrers list, as the distribution spec (1.1) describes them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Referrer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Where a blob's bytes are: which bundle, and where in its tar stream.
#[derive(Debug, Clone, Copy)]
pub struct BlobAt {
    pub bundle: usize,
    pub offset: u64,
    pub size: u64,
}

/// The files of one bundle, held open for positional reads: no descriptor per request, and the files
/// read are the ones verified even if a path is replaced later.
#[derive(Debug)]
pub struct BundleFiles {
    pub path: PathBuf,
    /// Each part with the offset of its first byte in the joined stream.
    parts: Vec<(u64, u64, File)>,
}

impl BundleFiles {
    fn open(path: PathBuf, source: &Source) -> Result<BundleFiles, ServeError> {
        let mut parts = Vec::with_capacity(source.files.len());
        let mut start = 0u64;
        for file in &source.files {
            let read_error = |source| ServeError::Read {
                path: file.clone(),
                source,
            };
            let opened = File::open(file).map_err(read_error)?;
            let length = opened.metadata().map_err(read_error)?.len();
            parts.push((start, length, opened));
            start = start.checked_add(length).ok_or_else(|| ServeError::Read {
                path: file.clone(),
                source: io::Error::other("the parts are longer than any file can be"),
            })?;
        }
        Ok(BundleFiles { path, parts })
    }

    /// Fills `buf` from `offset` of the joined parts; an error if the files end first.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let (start, length, file) = self
                .parts
                .iter()
                .find(|(start, length, _)| offset >= *start && offset - start < *length)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            let within = offset - start;
            let n = usize::try_from(length - within).map_or(buf.len(), |left| left.min(buf.len()));
            file.read_exact_at(&mut buf[..n], within)?;
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// Everything served, from one or more verified bundles.
#[derive(Debug)]
pub struct Content {
    pub bundles: Vec<BundleFiles>,
    pub images: Vec<ServedImage>,
    manifests: HashMap<Digest, Document>,
    blobs: HashMap<Digest, BlobAt>,
}

/// Why a manifest cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum Unknown {
    Manifest,
    /// Two registries hold the same path and tag with different images; `ns=` or a registry-prefixed
    /// path tells them apart.
    Ambiguous(Vec<String>),
}

/// The fields of a manifest or index that say what it is and what it points to.
#[derive(Deserialize)]
struct Parsed {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl Content {
    /// Indexes the bundles, which must be intact (verified), uncompressed, and agree on every tag.
    pub fn load(bundles: Vec<Verified>) -> Result<Content, ServeError> {
        let mut content = Content {
            bundles: Vec::new(),
            images: Vec::new(),
            manifests: HashMap::new(),
            blobs: HashMap::new(),
        };
        for (index, bundle) in bundles.into_iter().enumerate() {
            if bundle.source().is_gzipped().unwrap_or(false) {
                return Err(ServeError::Compressed(bundle.bundle().to_path_buf()));
            }
            content.bundles.push(BundleFiles::open(
                bundle.bundle().to_path_buf(),
                bundle.source(),
            )?);
            for (digest, &(offset, size)) in bundle.locations() {
                content.blobs.entry(digest.clone()).or_insert(BlobAt {
                    bundle: index,
                    offset,
                    size,
                });
            }
            for image in bundle.images() {
                // In a bundle of several platforms the tag names ferry's index of them (once per name).
                let top = image.index().unwrap_or(image.manifest());
                content.add_image(&bundle, image.reference(), top)?;
            }
        }
        Ok(content)
    }

    fn add_image(
        &mut self,
        bundle: &Verified,
        upstream: &Reference,
        manifest: &Digest,
    ) -> Result<(), ServeError> {
        let name = upstream.to_string();
        let pushed = Target {
            host: "localhost".into(),
            prefix: None,
        }
        .map(upstream)
        .map_err(|reason| ServeError::Mapping {
            image: name.clone(),
            reason,
        })?;
        if let Some(other) = self
            .images
            .iter()
            .find(|i| i.upstream.by_tag_if_tagged() == upstream.by_tag_if_tagged())
        {
            if other.manifest == *manifest {
                return Ok(());
            }
            return Err(ServeError::Conflict {
                image: name,
                first: other.manifest.clone(),
                second: manifest.clone(),
                bundle: bundle.bundle().to_path_buf(),
            });
        }
        let mut reaches = HashSet::new();
        self.walk(bundle, manifest, &mut reaches)?;
        self.images.push(ServedImage {
            upstream: upstream.clone(),
            name: pushed.repository().to_string(),
            manifest: manifest.clone(),
            reaches,
        });
        Ok(())
    }

    /// Reads a manifest or index and what it reaches; the one place that knows what such a document is, so
    /// that an index (of a multi-platform bundle) is served as itself, with its own media type. Manifests
    /// of an index that the bundle does not carry are left out: a client asking for them gets a 404.
    fn walk(
        &mut self,
        bundle: &Verified,
        digest: &Digest,
        reaches: &mut HashSet<Digest>,
    ) -> Result<(), ServeError> {
        if !reaches.insert(digest.clone()) {
            return Ok(());
        }
        let bytes = match self.manifests.get(digest) {
            Some(document) => document.bytes.clone(),
            None => self.read_document(bundle, digest)?,
        };
        let (document, parsed) = Document::parse(bytes)
            .map_err(|_| ServeError::Changed(bundle.bundle().to_path_buf()))?;
        self.manifests.insert(digest.clone(), document);
        for child in parsed.manifests.iter().flatten() {
            if bundle.location(&child.digest).is_some() {
                self.walk(bundle, &child.digest, reaches)?;
            }
        }
        reaches.extend(
            parsed
                .config
                .iter()
                .chain(&parsed.layers)
                .map(|d| d.digest.clone()),
        );
        Ok(())
    }

    /// A manifest's bytes from the bundle, checked again: the file may have changed since verify.
    fn read_document(&self, bundle: &Verified, digest: &Digest) -> Result<Bytes, ServeError> {
        let changed = || ServeError::Changed(bundle.bundle().to_path_buf());
        let at = self.blobs.get(digest).ok_or_else(changed)?;
        if at.size > limits::MAX_MANIFEST {
            return Err(changed());
        }
        let mut bytes = vec![0u8; at.size as usize];
        self.bundles[at.bundle]
            .read_exact_at(&mut bytes, at.offset)
            .map_err(|source| ServeError::Read {
                path: bundle.bundle().to_path_buf(),
                source,
            })?;
        if Digest::of(&bytes) != *digest {
            return Err(changed());
        }
        Ok(Bytes::from(bytes))
    }

    /// The images a client means by repository `name`, asked with `ns=` (containerd's mirror parameter:
    /// the upstream registry) or without. Without it, `name` is what `ferry push` names the image
    /// (`sig-storage/csi-provisioner`, `huawei-csi`), Docker Hub's own path (`library/huawei-csi`, as
    /// docker asks a mirror), or the upstream registry followed by its path
    /// (`registry.k8s.io/sig-storage/csi-provisioner`, which keeps two registries apart without `ns=`).
    pub fn repository(&self, name: &str, ns: Option<&str>) -> Vec<&ServedImage> {
        let hub = |registry: &str| DOCKER_HUB_ALIASES.contains(&registry);
        self.images
            .iter()
            .filter(|image| {
                let registry = image.upstream.registry();
                let path = image.upstream.repository();
                let own_path = path == name || (registry == DOCKER_HUB && image.name == name);
                match ns {
                    Some(ns) => (ns == registry || (hub(ns) && registry == DOCKER_HUB)) && own_path,
                    None => {
                        image.name == name
                            || (registry == DOCKER_HUB && path == name)
                            || name
                                .strip_prefix(registry)
                                .and_then(|rest| rest.strip_prefix('/'))
                                .is_some_and(|rest| {
                                    rest == path || (registry == DOCKER_HUB && rest == image.name)
                                })
                    }
                }
            })
            .collect()
    }

    /// The manifest `reference` (a tag or a digest) names among `images`.
    pub fn manifest(
        &self,
        images: &[&ServedImage],
        reference: &str,
    ) -> Result<(Digest, &Document), Unknown> {
        let digest = match reference.parse::<Digest>() {
            Ok(digest) if images.iter().any(|i| i.reaches.contains(&digest)) => digest,
            Ok(_) => return Err(Unknown::Manifest),
            Err(_) => {
                let tagged: BTreeSet<(&Digest, String)> = images
                    .iter()
                    .filter(|i| i.upstream.tag() == Some(reference))
                    .map(|i| (&i.manifest, i.upstream.to_string()))
                    .collect();
                let digests: BTreeSet<&Digest> = tagged.iter().map(|(d, _)| *d).collect();
                match digests.len() {
                    0 => return Err(Unknown::Manifest),
                    1 => (*digests.first().expect("one")).clone(),
                    _ => {
                        let names: BTreeSet<String> =
                            tagged.into_iter().map(|(_, name)| name).collect();
                        return Err(Unknown::Ambiguous(names.into_iter().collect()));
                    }
                }
            }
        };
        let document = self.manifests.get(&digest).ok_or(Unknown::Manifest)?;
        Ok((digest, document))
    }

    /// The manifests among `images` whose `subject` is `digest`, of `artifact_type` if one is asked for.
    pub fn referrers(
        &self,
        images: &[&ServedImage],
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Vec<Referrer> {
        let reached: BTreeSet<&Digest> = images.iter().flat_map(|i| &i.reaches).collect();
        reached
            .into_iter()
            .filter_map(|reached| Some((reached, self.manifests.get(reached)?)))
            .filter(|(_, document)| document.subject.as_ref() == Some(digest))
            .filter(|(_, document)| {
                artifact_type.is_none_or(|wanted| document.artifact_type.as_deref() == Some(wanted))
            })
            .map(|(reached, document)| Referrer {
                media_type: document.media_type.clone(),
                digest: reached.clone(),
                size: document.bytes.len() as u64,
                artifact_type: document.artifact_type.clone(),
                annotations: document.annotations.clone(),
            })
            .collect()
    }

    /// Where the blob `digest` is, if one of `images` reaches it.
    pub fn blob(&self, images: &[&ServedImage], digest: &Digest) -> Option<BlobAt> {
        if !images.iter().any(|i| i.reaches.contains(digest)) {
            return None;
        }
        self.blobs.get(digest).copied()
    }

    /// The repositories, as `ferry push` names them, sorted.
    pub fn catalog(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self.images.iter().map(|i| i.name.as_str()).collect();
        names.into_iter().map(str::to_string).collect()
    }

    /// The upstream registries of the images served, sorted.
    pub fn registries(&self) -> Vec<String> {
        let names: BTreeSet<&str> = self.images.iter().map(|i| i.upstream.registry()).collect();
        names.into_iter().map(str::to_string).collect()
    }
}

/// The tags among `images`, sorted.
pub fn tags(images: &[&ServedImage]) -> Vec<String> {
    let tags: BTreeSet<&str> = images.iter().filter_map(|i| i.upstream.tag()).collect();
    tags.into_iter().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text: &str) -> ServedImage {
        let upstream: Reference = text.parse().unwrap();
        let name = Target {
            host: "localhost".into(),
            prefix: None,
        }
        .map(&upstream)
        .unwrap()
        .repository()
        .to_string();
        ServedImage {
            upstream,
            name,
            manifest: Digest::of(text.as_bytes()),
            reaches: HashSet::new(),
        }
    }

    /// Split bundles are read across their parts, and a read past the end is an error, not short data.
    #[test]
    fn reads_cross_the_parts_of_a_split_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let files: Vec<PathBuf> = [0..300, 300..301, 301..1000]
            .into_iter()
            .enumerate()
            .map(|(i, range)| {
                let path = dir.path().join(format!("b.tar.part-{i:03}"));
                std::fs::write(&path, &bytes[range]).unwrap();
                path
            })
            .collect();
        let source = Source {
            files,
            whole: dir.path().join("b.tar"),
        };
        let bundle = BundleFiles::open(source.whole.clone(), &source).unwrap();
        let mut buf = vec![0u8; 500];
        bundle.read_exact_at(&mut buf, 250).unwrap();
        assert_eq!(buf, bytes[250..750]);
        let mut tail = vec![0u8; 2];
        assert!(bundle.read_exact_at(&mut tail, 999).is_err());
    }

    /// The names each client asks by: push's, containerd's (with ns=), docker's mirror path, and the
    /// registry-prefixed path of a CRI-O mirror.
    #[test]
    fn every_client_finds_the_image_it_means_and_no_other() {
        let content = Content {
            bundles: Vec::new(),
            images: vec![
                image("huawei-csi:4.8.0"),
                image("registry.k8s.io/sig-storage/tool:v1"),
                image("quay.io/sig-storage/tool:v1"),
            ],
            manifests: HashMap::new(),
            blobs: HashMap::new(),
        };
        let found = |name: &str, ns: Option<&str>| -> Vec<String> {
            content
                .repository(name, ns)
                .iter()
                .map(|i| i.upstream.to_string())
                .collect()
        };
        let hub = vec!["docker.io/library/huawei-csi:4.8.0".to_string()];
        assert_eq!(found("huawei-csi", None), hub);
        assert_eq!(found("library/huawei-csi", None), hub);
        assert_eq!(found("library/huawei-csi", Some("docker.io")), hub);
        assert_eq!(
            found("library/huawei-csi", Some("registry-1.docker.io")),
            hub
        );
        assert_eq!(found("docker.io/library/huawei-csi", None), hub);
        assert_eq!(found("docker.io/huawei-csi", None), hub);
        assert!(found("huawei-csi", Some("quay.io")).is_empty());
        assert_eq!(
            found("sig-storage/tool", Some("quay.io")),
            ["quay.io/sig-storage/tool:v1"]
        );
        assert_eq!(
            found("registry.k8s.io/sig-storage/tool", None),
            ["registry.k8s.io/sig-storage/tool:v1"]
        );
        assert_eq!(found("sig-storage/tool", None).len(), 2);
        let both = content.repository("sig-storage/tool", None);
        let Err(Unknown::Ambiguous(names)) = content.manifest(&both, "v1") else {
            panic!("two registries' v1 are ambiguous");
        };
        assert_eq!(
            names,
            [
                "quay.io/sig-storage/tool:v1",
                "registry.k8s.io/sig-storage/tool:v1"
            ]
        );
        assert!(found("sig-storage", None).is_empty());
        assert!(found("tool", None).is_empty());
    }

    /// The referrers API lists the manifests whose subject is the digest asked, with their artifactType
    /// (the config's media type when they name none) and annotations; none is an empty list.
    #[test]
    fn referrers_are_the_manifests_whose_subject_is_asked() {
        let image_digest = Digest::of(b"image");
        let signature = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.example.signature","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{image_digest}","size":5}},"annotations":{{"created":"today"}}}}"#,
            Digest::of(b"{}")
        );
        let signature_digest = Digest::of(signature.as_bytes());
        let (document, _) = Document::parse(Bytes::from(signature.clone())).unwrap();
        let mut signed = image("registry.k8s.io/tool:v1");
        signed.reaches.insert(signature_digest.clone());
        let content = Content {
            bundles: Vec::new(),
            images: vec![signed],
            manifests: HashMap::from([(signature_digest.clone(), document)]),
            blobs: HashMap::new(),
        };
        let images: Vec<&ServedImage> = content.images.iter().collect();
        let expected = Referrer {
            media_type: media::OCI_MANIFEST.into(),
            digest: signature_digest,
            size: signature.len() as u64,
            artifact_type: Some("application/vnd.example.signature".into()),
            annotations: Some(BTreeMap::from([("created".into(), "today".into())])),
        };
        assert_eq!(
            content.referrers(&images, &image_digest, None),
            std::slice::from_ref(&expected)
        );
        assert_eq!(
            content.referrers(
                &images,
                &image_digest,
                Some("application/vnd.example.signature")
            ),
            [expected]
        );
        assert_eq!(content.referrers(&images, &image_digest, Some("other")), []);
        assert_eq!(content.referrers(&images, &Digest::of(b"x"), None), []);
    }
}
