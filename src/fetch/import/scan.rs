//! The vendor's directories: which archives they hold, which images each archive holds under which
//! names and platforms, and which image a name means.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::archive;
use super::error::{PassedOver, VendorError};
use crate::digest::Digest;
use crate::image::{ImageConfig, Platform};
use crate::reference::Reference;

/// The image archives of a vendor directory, indexed by the names of the images they hold.
#[derive(Debug, Default)]
pub struct VendorDir {
    /// The directories scanned, as given.
    pub(super) dirs: Vec<PathBuf>,
    /// Every image claiming each name, in path order.
    pub(super) images: BTreeMap<Reference, Vec<Found>>,
    pub(super) passed_over: Vec<PassedOver>,
}

/// One image an archive holds under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub archive: PathBuf,
    /// Its place among the archive's images.
    pub(super) at: usize,
    /// The digest of its config, docker's image ID: the same ID is the same content, as the config
    /// records every layer's diff_id, which the import checks.
    pub id: Digest,
    /// What its config says; `None` when it names none, and the image could be for any platform.
    pub(super) platform: Option<Platform>,
    /// The bytes of its archive's tar, uncompressed, that the scan listed: a gzipped archive is
    /// gunzipped no further.
    pub(super) tar_bytes: u64,
}

impl Found {
    /// Whether its config names `platform`.
    fn is_for(&self, platform: &Platform) -> bool {
        self.platform.as_ref().is_some_and(|p| platform.matches(p))
    }
}

impl VendorDir {
    /// Lists the images of every `.tar`, `.tar.gz` or `.tgz` under `dir`, at any depth. Tarballs that are
    /// no image archive (a Helm chart beside the images, a damaged file) are passed over.
    pub fn scan(dir: &Path) -> Result<VendorDir, VendorError> {
        let mut archives = Vec::new();
        find_archives(dir, &mut archives)?;
        archives.sort();
        let mut vendor = VendorDir {
            dirs: vec![dir.to_path_buf()],
            ..VendorDir::default()
        };
        for path in archives {
            vendor.add(&path)?;
        }
        Ok(vendor)
    }

    pub(super) fn add(&mut self, path: &Path) -> Result<(), VendorError> {
        let scanned = match archive::scan_archive(path) {
            Err(VendorError::NotAnArchive { archive, why }) => {
                self.passed_over.push(PassedOver { file: archive, why });
                return Ok(());
            }
            scanned => scanned?,
        };
        for (at, (image, config)) in scanned.images.iter().enumerate() {
            let platform = ImageConfig::parse(config)
                .ok()
                .map(|config| config.platform())
                .filter(|p| !p.os.is_empty() && !p.architecture.is_empty());
            for reference in archive::references(image, path)? {
                self.images.entry(reference).or_default().push(Found {
                    archive: path.to_path_buf(),
                    at,
                    id: Digest::of(config),
                    platform: platform.clone(),
                    tar_bytes: scanned.tar_bytes,
                });
            }
        }
        Ok(())
    }

    /// Lists the images of several directories (one per architecture package, say) as one.
    pub fn scan_all(dirs: &[PathBuf]) -> Result<VendorDir, VendorError> {
        let mut all = VendorDir::default();
        for dir in dirs {
            let one = VendorDir::scan(dir)?;
            all.dirs.extend(one.dirs);
            for (reference, found) in one.images {
                all.images.entry(reference).or_default().extend(found);
            }
            all.passed_over.extend(one.passed_over);
        }
        Ok(all)
    }

    /// The image named `reference` for each of `platforms`, by its config's platform: refused when one
    /// is missing (unless `partial_ok` and another is there) or when two for one platform differ.
    pub(super) fn choose_each(
        &self,
        reference: &Reference,
        platforms: &[Platform],
        partial_ok: bool,
    ) -> Result<Vec<&Found>, VendorError> {
        let mut chosen = Vec::new();
        let mut lacking = None;
        for platform in platforms {
            let for_platform: Vec<&Found> = self
                .images
                .get(reference)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .filter(|found| found.is_for(platform))
                .collect();
            match for_platform.as_slice() {
                [] => lacking = lacking.or(Some(platform)),
                [first, ..] => {
                    self.choose(reference, platform)?; // refuses two different images for one platform
                    chosen.push(*first);
                }
            }
        }
        match lacking {
            _ if chosen.is_empty() && !self.images.contains_key(reference) => {
                Err(self.missing(vec![reference.clone()]))
            }
            Some(wanted) if !partial_ok || chosen.is_empty() => Err(VendorError::PlatformMissing {
                reference: reference.clone(),
                wanted: wanted.clone(),
                has: self.images[reference]
                    .iter()
                    .filter_map(|f| Some((f.platform.clone()?, f.archive.clone())))
                    .collect(),
            }),
            _ => Ok(chosen),
        }
    }

    /// The platforms the images named `reference` are for, each once, in path order; one platform
    /// (any: the image is refused by name) when none is.
    pub(super) fn platforms_of(&self, reference: &Reference) -> Vec<Platform> {
        let mut platforms: Vec<Platform> = Vec::new();
        let found = self.images.get(reference).map_or(&[][..], Vec::as_slice);
        for platform in found.iter().filter_map(|f| f.platform.as_ref()) {
            if !platforms.iter().any(|p| p == platform) {
                platforms.push(platform.clone());
            }
        }
        if platforms.is_empty() {
            platforms.push(Platform::linux_amd64());
        }
        platforms
    }

    /// Every image the directory holds, sorted: what to tell a user who asked for another.
    pub fn available(&self) -> Vec<Reference> {
        self.images.keys().cloned().collect()
    }

    /// The image named `reference`, preferring those whose config names `platform`. Every image of the
    /// name that could be the one is compared, those whose config names no platform included (a real
    /// image without one must not let an impostor for `platform` through): two that differ are refused.
    pub fn choose(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<&Found, VendorError> {
        let all = self.images.get(reference).map_or(&[][..], Vec::as_slice);
        let pool: Vec<&Found> = if all.iter().any(|found| found.is_for(platform)) {
            all.iter()
                .filter(|found| found.is_for(platform) || found.platform.is_none())
                .collect()
        } else {
            all.iter().collect()
        };
        let Some(&first) = pool.first() else {
            return Err(self.missing(vec![reference.clone()]));
        };
        if let Some(other) = pool.iter().find(|found| found.id != first.id) {
            return Err(VendorError::Conflict {
                reference: reference.clone(),
                first: (first.archive.clone(), first.id.clone()),
                second: (other.archive.clone(), other.id.clone()),
            });
        }
        Ok(first)
    }

    /// The refusal for images the directories do not hold, with what they do hold.
    pub(super) fn missing(&self, references: Vec<Reference>) -> VendorError {
        VendorError::Missing {
            dirs: self.dirs.clone(),
            references,
            available: self.available(),
            passed_over: self.passed_over.clone(),
        }
    }
}

/// Collects archive files by name; symlinked directories are not followed, so a loop cannot trap the walk.
fn find_archives(dir: &Path, into: &mut Vec<PathBuf>) -> Result<(), VendorError> {
    let dir_error = |source| VendorError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if entry.file_type().map_err(dir_error)?.is_dir() {
            find_archives(&path, into)?;
        } else if [".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
            && path.is_file()
        {
            into.push(path);
        }
    }
    Ok(())
}
