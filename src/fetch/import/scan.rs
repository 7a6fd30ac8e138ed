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
    pub(super) dir: PathBuf,
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
    pub(super) platform: Option<Platform>,
}

impl VendorDir {
    /// Lists the images of every `.tar`, `.tar.gz` or `.tgz` under `dir`, at any depth. Tarballs that are
    /// no image archive (a Helm chart beside the images, a damaged file) are passed over.
    pub fn scan(dir: &Path) -> Result<VendorDir, VendorError> {
        let mut archives = Vec::new();
        find_archives(dir, &mut archives)?;
        archives.sort();
        let mut vendor = VendorDir {
            dir: dir.to_path_buf(),
            ..VendorDir::default()
        };
        for path in archives {
            vendor.add(&path)?;
        }
        Ok(vendor)
    }

    pub(super) fn add(&mut self, path: &Path) -> Result<(), VendorError> {
        let saved = match archive::saved_images(path) {
            Err(VendorError::NotAnArchive { archive, why }) => {
                self.passed_over.push(PassedOver { file: archive, why });
                return Ok(());
            }
            saved => saved?,
        };
        for (at, (image, config)) in saved.iter().enumerate() {
            let platform = ImageConfig::parse(config)
                .ok()
                .map(|config| config.platform());
            for reference in archive::references(image, path)? {
                self.images.entry(reference).or_default().push(Found {
                    archive: path.to_path_buf(),
                    at,
                    id: Digest::of(config),
                    platform: platform.clone(),
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
            if all.dir.as_os_str().is_empty() {
                all.dir = one.dir;
            }
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
                .filter(|found| found.platform.as_ref().is_some_and(|p| platform.matches(p)))
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
                Err(self.choose(reference, &platforms[0]).unwrap_err())
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

    /// The image named `reference`, preferring those for `platform`: refused when two of them differ.
    pub fn choose(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<&Found, VendorError> {
        let all = self.images.get(reference).map_or(&[][..], Vec::as_slice);
        let for_platform: Vec<&Found> = all
            .iter()
            .filter(|found| found.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .collect();
        let pool = if for_platform.is_empty() {
            all.iter().collect()
        } else {
            for_platform
        };
        let Some(&first) = pool.first() else {
            return Err(VendorError::Missing {
                dir: self.dir.clone(),
                reference: reference.clone(),
                available: self.available(),
                passed_over: self.passed_over.clone(),
            });
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
