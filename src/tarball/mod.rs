//! The bundle on disk: a plain tar that is both a docker-archive and an OCI image layout.

pub mod delta;
pub mod headers;
pub mod layout;
mod metadata;
mod output;
pub mod read;
mod write;

pub use metadata::{
    platforms_met, BundleMetadata, ImageRecord, KubernetesSpan, PlatformPin, Producer,
    ProductRecord, RecordSource, UncarriedIndex, EVERY_PLATFORM,
};
pub use output::{checksum_text, file_name, sibling, TargetError};
pub use write::{
    append, check_output, stage_bundle, stage_delta, tar_size, write_entries, BlobSource,
    Documents, Staged, WriteOptions, Written,
};
#[cfg(test)]
pub use write::{write_bundle, write_delta};

use std::path::PathBuf;

use crate::cache::CacheError;
use crate::digest::Digest;
use crate::progress::DecimalBytes;

/// Signs a bundle's checksum file into the signature file beside it. The writer takes any signer, so
/// that the bundle's format knows nothing of keys (trust's SSH keys implement it).
pub trait Signer: Send + Sync + std::fmt::Debug {
    /// The text of `PATH.sig` over `checksum_file`, the exact bytes of `PATH.sha256`.
    fn signature(&self, checksum_file: &[u8]) -> std::io::Result<String>;
    /// The key's fingerprint, to tell the user who signed.
    fn fingerprint(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("{image}: blob {digest} is not in the cache; pull again")]
    MissingBlob { image: String, digest: Digest },
    #[error("cannot write bundle {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk full while writing {path}; nothing was left at that path")]
    DiskFull { path: PathBuf },
    #[error(
        "not enough space for {path}: the bundle needs {}, and {dir} has {} free; make room there, or \
         write the bundle where there is room with -o DIR/",
        DecimalBytes(*.needed), DecimalBytes(*.free)
    )]
    NoRoom {
        path: PathBuf,
        dir: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{}: blob {digest} is not what verify read there: the file changed since; verify it again", .path.display())]
    Changed { digest: Digest, path: PathBuf },
    #[error(transparent)]
    Recovery(#[from] crate::recovery::RecoveryError),
    #[error("cache file {} is damaged: {read} bytes hashing to {actual}, not blob {digest}; it was removed from the cache, so running ferry again fetches it anew", .path.display())]
    DamagedBlob {
        digest: Digest,
        path: PathBuf,
        actual: Digest,
        read: u64,
    },
}

/// Parses `--split` sizes: `4G`, `700M`, `512K`, `1T` (powers of 1024) or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => {
            return Err(format!(
                "'{text}' is not a size (expected e.g. 4G, 700M, 512K)"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (expected e.g. 4G, 700M, 512K)"))?;
    match number.checked_mul(scale) {
        Some(0) | None => Err(format!("'{text}' is not a usable part size")),
        Some(bytes) => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("700M"), Ok(700 << 20));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "G", "4X", "0", "-1G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
