//! The lock: every image of a bundle pinned by digest, in a sorted TOML file meant for review. A build
//! with a lock must resolve the same digests (a retagged upstream, a poisoned mirror or another vendor
//! tarball fail it), and on arrival every image of the bundle must match it.
//!
//! Registry images are pinned by their upstream manifest digest; with `--platform all`, one taken whole
//! from its upstream index by that index's digest (platform `all`), which names every manifest in it.
//! Vendor images are pinned by their config digest, which names the uncompressed content of every layer
//! through its diff_ids (the manifest is ferry's own, as ferry compresses the vendor's layers), and by
//! the sha256 of the vendor tarball.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::TrustError;
use crate::digest::{Digest, Hashing};
use crate::image::{Image, ImageSource};
use crate::reference::Reference;
use crate::tarball::EVERY_PLATFORM;
use crate::verify::Report;

const FORMAT: u32 = 1;
const HEADER: &str = "# ferry lock: the digest every image must have. `ferry bundle --lock` fails when one moved;\n\
                      # `--update-lock` rewrites this file on purpose. `ferry verify --lock` checks a bundle against it.\n";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: u32,
    #[serde(rename = "image", default)]
    pub images: Vec<Locked>,
}

/// The lock as read, each image with where it is in the file.
#[derive(Deserialize)]
struct LockFile {
    version: u32,
    #[serde(rename = "image", default)]
    images: Vec<Spanned<Locked>>,
}

/// Far more than any lock: an image's pin is about 200 bytes.
const MAX_FILE: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Locked {
    pub name: String,
    pub platform: String,
    #[serde(flatten)]
    pub pin: Pin,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Pin {
    Registry {
        manifest: Digest,
    },
    Vendor {
        config: Digest,
        /// The tarball's file name, for the reviewer; its content is what is pinned.
        tarball: String,
        tarball_sha256: Digest,
    },
}

/// The name an image goes by in a bundle: its tagged name, or the full reference when it has no tag.
pub fn image_name(reference: &Reference) -> String {
    reference
        .tagged_name()
        .unwrap_or_else(|| reference.to_string())
}

impl Lock {
    /// Pins `images`, hashing each vendor tarball once, streaming; with `every` platform, an image
    /// taken whole from its upstream index by that index.
    pub fn of(images: &[Image], every: bool) -> Result<Lock, TrustError> {
        let mut tarballs: BTreeMap<&Path, Digest> = BTreeMap::new();
        let mut locked = Vec::new();
        for image in images {
            let mut platform = image.platform.to_string();
            let pin = match &image.source {
                ImageSource::Registry { .. } => match &image.index_digest {
                    Some(index) if every => {
                        platform = EVERY_PLATFORM.to_string();
                        Pin::Registry {
                            manifest: index.clone(),
                        }
                    }
                    _ => Pin::Registry {
                        manifest: image.manifest.digest.clone(),
                    },
                },
                ImageSource::Vendor { file } => {
                    let sha256 = match tarballs.get(file.as_path()) {
                        Some(digest) => digest.clone(),
                        None => {
                            let digest = hash_file(file)?;
                            tarballs.insert(file, digest.clone());
                            digest
                        }
                    };
                    Pin::Vendor {
                        config: image.config.digest.clone(),
                        tarball: crate::tarball::file_name(file),
                        tarball_sha256: sha256,
                    }
                }
            };
            locked.push(Locked {
                name: image_name(&image.reference),
                platform,
                pin,
            });
        }
        locked.sort();
        locked.dedup();
        Ok(Lock {
            version: FORMAT,
            images: locked,
        })
    }

    pub fn load(path: &Path) -> Result<Lock, TrustError> {
        let text =
            crate::io::read_side_text(path, MAX_FILE).map_err(|source| TrustError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let bad = |reason: String| TrustError::LockFile {
            path: path.to_path_buf(),
            reason,
        };
        let file: LockFile =
            toml::from_str(&text).map_err(|e| bad(crate::io::toml_error(&text, &e)))?;
        if file.version != FORMAT {
            return Err(bad(format!(
                "version {} is not one this ferry reads ({FORMAT})",
                file.version
            )));
        }
        // Two pins for one image would leave which one counts to the order of the file.
        let line = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
        let mut first: BTreeMap<Key<'_>, usize> = BTreeMap::new();
        for entry in &file.images {
            let image = entry.get_ref();
            let key = (image.name.as_str(), image.platform.as_str());
            let here = line(entry.span().start);
            if let Some(earlier) = first.insert(key, here) {
                return Err(bad(format!(
                    "{} is pinned twice, on lines {earlier} and {here}: keep one",
                    crate::io::shown(&show(&key), 200)
                )));
            }
        }
        Ok(Lock {
            version: file.version,
            images: file.images.into_iter().map(Spanned::into_inner).collect(),
        })
    }

    /// Writes the lock atomically: a reader never sees half of it.
    pub fn save(&self, path: &Path) -> Result<(), TrustError> {
        let error = |source| TrustError::WriteLock {
            path: path.to_path_buf(),
            source,
        };
        let text = toml::to_string(self).map_err(|e| error(std::io::Error::other(e)))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::Builder::new()
            .prefix(".ferry-lock-")
            .tempfile_in(dir)
            .map_err(error)?;
        temp.write_all(HEADER.as_bytes())
            .and_then(|()| temp.write_all(text.as_bytes()))
            .and_then(|()| temp.as_file().sync_all())
            .map_err(error)?;
        temp.persist(path).map_err(|e| error(e.error))?;
        Ok(())
    }

    pub fn has_vendor_images(&self) -> bool {
        self.images
            .iter()
            .any(|i| matches!(i.pin, Pin::Vendor { .. }))
    }

    /// What differs between this lock and a new build's: one line per image, empty when they agree.
    pub fn changes(&self, built: &Lock) -> Vec<String> {
        let mut changes = Vec::new();
        let locked = by_key(&self.images);
        let now = by_key(&built.images);
        for (key, pin) in &locked {
            match now.get(key) {
                None => changes.push(format!("{}: in the lock, not in this build", show(key))),
                Some(new) if new != pin => changes.push(format!(
                    "{}: {} in the lock, {} now",
                    show(key),
                    describe(pin),
                    describe(new)
                )),
                Some(_) => {}
            }
        }
        for key in now.keys().filter(|k| !locked.contains_key(*k)) {
            changes.push(format!("{}: not in the lock", show(key)));
        }
        changes
    }

    /// Checks a verified bundle's images against the lock: each must be pinned with its digest, and each
    /// pinned image must be there.
    pub fn check(&self, report: &Report) -> Vec<String> {
        let mut problems = Vec::new();
        let locked = by_key(&self.images);
        let platforms: Vec<String> = report
            .images
            .iter()
            .map(|image| match image.upstream_index {
                true => EVERY_PLATFORM.into(),
                false => image
                    .platform
                    .as_ref()
                    .map_or("?".into(), ToString::to_string),
            })
            .collect();
        let mut seen = Vec::new();
        for (image, platform) in report.images.iter().zip(&platforms) {
            let key = (image.name.as_str(), platform.as_str());
            if image.upstream_index && seen.contains(&key) {
                continue; // the manifests of one upstream index, pinned by it once
            }
            seen.push(key);
            let pinned = match image.upstream_index {
                true => image.index.as_ref(),
                false => image.manifest.as_ref(),
            };
            let (wanted, actual) = match locked.get(&key) {
                None => {
                    problems.push(format!("{}: in the bundle, not in the lock", show(&key)));
                    continue;
                }
                Some(Pin::Registry { manifest }) => (manifest, pinned),
                Some(Pin::Vendor { config, .. }) => (config, image.config.as_ref()),
            };
            if Some(wanted) != actual {
                problems.push(format!(
                    "{}: the lock pins {}, the bundle holds {}",
                    show(&key),
                    describe(locked[&key]),
                    actual.map_or("nothing readable".into(), ToString::to_string)
                ));
            }
        }
        for key in locked.keys().filter(|k| !seen.contains(k)) {
            problems.push(format!("{}: in the lock, not in the bundle", show(key)));
        }
        problems
    }
}

type Key<'a> = (&'a str, &'a str);

fn by_key(images: &[Locked]) -> BTreeMap<Key<'_>, &Pin> {
    images
        .iter()
        .map(|i| ((i.name.as_str(), i.platform.as_str()), &i.pin))
        .collect()
}

fn show((name, platform): &Key) -> String {
    format!("{name} ({platform})")
}

fn describe(pin: &Pin) -> String {
    match pin {
        Pin::Registry { manifest } => format!("manifest {manifest}"),
        Pin::Vendor {
            config,
            tarball,
            tarball_sha256,
        } => format!("config {config} from {tarball} ({tarball_sha256})"),
    }
}

fn hash_file(path: &PathBuf) -> Result<Digest, TrustError> {
    let error = |source| TrustError::Read {
        path: path.clone(),
        source,
    };
    let mut reader = Hashing::new(std::fs::File::open(path).map_err(error)?);
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(error)?;
    Ok(reader.finish().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn lock(images: Vec<Locked>) -> Lock {
        Lock { version: 1, images }
    }

    fn registry(name: &str, n: u8) -> Locked {
        Locked {
            name: name.into(),
            platform: "linux/amd64".into(),
            pin: Pin::Registry {
                manifest: digest(n),
            },
        }
    }

    #[test]
    fn the_file_is_sorted_toml_that_reads_back() {
        let mut vendor = registry("docker.io/library/huawei-csi:4.8.0", 0);
        vendor.pin = Pin::Vendor {
            config: digest(1),
            tarball: "huawei-csi.tar".into(),
            tarball_sha256: digest(2),
        };
        let original = lock(vec![registry("a.io/x:1", 3), vendor]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.lock");
        original.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# ferry lock"), "{text}");
        assert!(
            text.contains(&format!(
                "[[image]]\nname = \"docker.io/library/huawei-csi:4.8.0\"\nplatform = \"linux/amd64\"\nsource = \"vendor\"\nconfig = \"{}\"\ntarball = \"huawei-csi.tar\"\ntarball_sha256 = \"{}\"\n",
                digest(1),
                digest(2)
            )),
            "{text}"
        );
        assert_eq!(Lock::load(&path).unwrap(), original);
        std::fs::write(&path, text.replace("version = 1", "version = 7")).unwrap();
        assert!(Lock::load(&path)
            .unwrap_err()
            .to_string()
            .contains("version 7 is not one this ferry reads"));
    }

    #[test]
    fn an_image_pinned_twice_is_refused_naming_both_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.lock");
        lock(vec![registry("a.io/x:1", 1), registry("b.io/y:1", 2)])
            .save(&path)
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let again = format!(
            "{text}\n[[image]]\nname = \"a.io/x:1\"\nplatform = \"linux/amd64\"\nsource = \"registry\"\nmanifest = \"{}\"\n",
            digest(9)
        );
        std::fs::write(&path, again).unwrap();
        assert_eq!(
            Lock::load(&path).unwrap_err().to_string(),
            format!(
                "lock {}: a.io/x:1 (linux/amd64) is pinned twice, on lines 5 and 17: keep one",
                path.display()
            )
        );
    }

    #[test]
    fn a_toml_error_is_cut_to_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.lock");
        std::fs::write(&path, "x".repeat(800_000)).unwrap();
        assert_eq!(
            Lock::load(&path).unwrap_err().to_string(),
            format!(
                "lock {}: line 1, column 800001: key with no value, expected `=` (at the end of the line)",
                path.display()
            )
        );
    }

    #[test]
    fn changes_name_each_moved_missing_and_new_image() {
        let old = lock(vec![
            registry("a:1", 1),
            registry("b:1", 2),
            registry("c:1", 3),
        ]);
        let new = lock(vec![
            registry("a:1", 1),
            registry("b:1", 9),
            registry("d:1", 4),
        ]);
        assert_eq!(
            old.changes(&new),
            [
                format!(
                    "b:1 (linux/amd64): manifest {} in the lock, manifest {} now",
                    digest(2),
                    digest(9)
                ),
                "c:1 (linux/amd64): in the lock, not in this build".to_string(),
                "d:1 (linux/amd64): not in the lock".to_string(),
            ]
        );
        assert!(old.changes(&old.clone()).is_empty());
    }
}
