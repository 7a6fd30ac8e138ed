//! PAR2 packets: how ferry writes them, and how it reads them back from files it does not trust.
//!
//! Every packet is a 64-byte header (magic, length, MD5 of the rest, recovery set ID, type) and a body
//! whose length is a multiple of 4. The MD5 covers everything from the set ID on, so a packet either
//! checks or is skipped whole; the length field is the one thing it does not cover, so it is never used
//! to allocate: critical packets are read only up to [`CRITICAL_LIMIT`], and recovery packets only at the
//! length the set's slice size gives them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use md5::{Digest as _, Md5};

use crate::interrupt;

pub(super) type Id = [u8; 16];

pub(super) const MAGIC: &[u8; 8] = b"PAR2\0PKT";
pub(super) const HEADER: u64 = 64;
pub(super) const MAIN: &Id = b"PAR 2.0\0Main\0\0\0\0";
pub(super) const FILE_DESCRIPTION: &Id = b"PAR 2.0\0FileDesc";
pub(super) const SLICE_CHECKSUMS: &Id = b"PAR 2.0\0IFSC\0\0\0\0";
pub(super) const RECOVERY: &Id = b"PAR 2.0\0RecvSlic";
pub(super) const CREATOR: &Id = b"PAR 2.0\0Creator\0";
/// A recovery packet's header and exponent, before its data.
pub(super) const RECOVERY_PREFIX: u64 = HEADER + 4;
/// The largest critical packet read: a file's slice checksums for all 32768 slices take 655 KiB.
const CRITICAL_LIMIT: u64 = 1 << 20;
/// Bytes of the first part of a file that its PAR2 file ID hashes.
pub(super) const HASH_16K: u64 = 16 * 1024;

pub(super) fn md5_of(parts: &[&[u8]]) -> Id {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// A whole packet: header and body.
pub(super) fn packet(set: &Id, kind: &Id, body: &[u8]) -> Vec<u8> {
    debug_assert_eq!(body.len() % 4, 0);
    let length = HEADER + body.len() as u64;
    let mut bytes = Vec::with_capacity(length as usize);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&md5_of(&[set, kind, body]));
    bytes.extend_from_slice(set);
    bytes.extend_from_slice(kind);
    bytes.extend_from_slice(body);
    bytes
}

/// A recovery packet's header and exponent; `hash` is the MD5 of `set`, the type, the exponent and the
/// data, gathered as the data was written.
pub(super) fn recovery_prefix(set: &Id, exponent: u32, slice_size: u64, hash: &Id) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(RECOVERY_PREFIX as usize);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(RECOVERY_PREFIX + slice_size).to_le_bytes());
    bytes.extend_from_slice(hash);
    bytes.extend_from_slice(set);
    bytes.extend_from_slice(RECOVERY);
    bytes.extend_from_slice(&exponent.to_le_bytes());
    bytes
}

/// What a recovery packet's MD5 starts with, before the data.
pub(super) fn recovery_hasher(set: &Id, exponent: u32) -> Md5 {
    let mut hasher = Md5::new();
    hasher.update(set);
    hasher.update(RECOVERY);
    hasher.update(exponent.to_le_bytes());
    hasher
}

/// `bytes` padded with zeros to a multiple of 4, as PAR2 stores names and text.
fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len().next_multiple_of(4), 0);
    padded
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn id_at(bytes: &[u8], at: usize) -> Option<Id> {
    bytes.get(at..at + 16)?.try_into().ok()
}

/// The set's slice size and the IDs of the files it can repair, in the order their slices are numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Main {
    pub slice_size: u64,
    pub files: Vec<Id>,
}

impl Main {
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + 16 * self.files.len());
        body.extend_from_slice(&self.slice_size.to_le_bytes());
        body.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for id in &self.files {
            body.extend_from_slice(id);
        }
        body
    }

    /// Files the set lists without covering (a "non-recovery set") are ignored.
    pub fn parse(body: &[u8]) -> Option<Main> {
        let slice_size = u64_at(body, 0)?;
        let count = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
        if slice_size == 0 || !slice_size.is_multiple_of(4) || !(body.len() - 12).is_multiple_of(16)
        {
            return None;
        }
        let files = (0..count)
            .map(|i| id_at(body, 12 + 16 * i))
            .collect::<Option<Vec<_>>>()?;
        Some(Main { slice_size, files })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileDescription {
    pub id: Id,
    pub md5: Id,
    pub md5_16k: Id,
    pub length: u64,
    pub name: String,
}

impl FileDescription {
    /// PAR2's file ID: the MD5 of the first 16 KiB's MD5, the length and the name.
    pub fn id_of(md5_16k: &Id, length: u64, name: &str) -> Id {
        md5_of(&[md5_16k, &length.to_le_bytes(), name.as_bytes()])
    }

    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.id);
        body.extend_from_slice(&self.md5);
        body.extend_from_slice(&self.md5_16k);
        body.extend_from_slice(&self.length.to_le_bytes());
        body.extend_from_slice(&padded(self.name.as_bytes()));
        body
    }

    /// Refuses a description whose ID is not the one its own fields give: it describes no file.
    pub fn parse(body: &[u8]) -> Option<FileDescription> {
        let name = body.get(56..)?;
        let name = &name[..name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
        let description = FileDescription {
            id: id_at(body, 0)?,
            md5: id_at(body, 16)?,
            md5_16k: id_at(body, 32)?,
            length: u64_at(body, 48)?,
            name: String::from_utf8(name.to_vec()).ok()?,
        };
        (description.id == Self::id_of(&description.md5_16k, description.length, &description.name))
            .then_some(description)
    }
}

/// The MD5 and CRC32 of one source slice, zero-padded to the slice size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SliceChecksum {
    pub md5: Id,
    pub crc32: u32,
}

/// A slice's checksums, its bytes so far hashed, as PAR2 takes them: padded with `padding` zeros to the
/// slice size.
pub(super) fn finish_slice(
    mut md5: Md5,
    mut crc: crc32fast::Hasher,
    padding: u64,
) -> SliceChecksum {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut left = padding;
    while left > 0 {
        let n = left.min(ZEROS.len() as u64) as usize;
        md5.update(&ZEROS[..n]);
        crc.update(&ZEROS[..n]);
        left -= n as u64;
    }
    SliceChecksum {
        md5: md5.finalize().into(),
        crc32: crc.finalize(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SliceChecksums {
    pub id: Id,
    pub slices: Vec<SliceChecksum>,
}

impl SliceChecksums {
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(16 + 20 * self.slices.len());
        body.extend_from_slice(&self.id);
        for slice in &self.slices {
            body.extend_from_slice(&slice.md5);
            body.extend_from_slice(&slice.crc32.to_le_bytes());
        }
        body
    }

    pub fn parse(body: &[u8]) -> Option<SliceChecksums> {
        let id = id_at(body, 0)?;
        let entries = body.get(16..)?;
        if entries.len() % 20 != 0 {
            return None;
        }
        let slices = entries
            .chunks_exact(20)
            .map(|entry| {
                Some(SliceChecksum {
                    md5: id_at(entry, 0)?,
                    crc32: u32::from_le_bytes(entry[16..20].try_into().ok()?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SliceChecksums { id, slices })
    }
}

pub(super) fn creator_body() -> Vec<u8> {
    padded(concat!("Created by ferry ", env!("CARGO_PKG_VERSION"), ".").as_bytes())
}

/// A packet found in a file, its MD5 checked.
pub(super) enum Found {
    Critical {
        set: Id,
        kind: Id,
        body: Vec<u8>,
    },
    /// A recovery slice of the set being read: its exponent and where its data starts.
    Recovery {
        exponent: u32,
        data: u64,
    },
}

/// Reads `file` (`length` bytes, as it was when opened) packet by packet. Before the set is known
/// (`recovery` is None), recovery packets are stepped over unread; once it is (`Some((set, slice
/// size))`), that set's recovery packets are read and checked too. A packet that does not check is
/// skipped whole, and bytes that are no packet are skipped to the next magic number, so damage costs the
/// packets it touches and no more, and no content makes the scan read any byte more than a few times.
pub(super) fn scan(
    file: &File,
    length: u64,
    recovery: Option<(&Id, u64)>,
    found: &mut dyn FnMut(Found),
) -> io::Result<()> {
    let mut position = 0u64;
    let mut header = [0u8; HEADER as usize];
    while position.saturating_add(HEADER) <= length {
        interrupt::check()?;
        file.read_exact_at(&mut header, position)?;
        if &header[..8] != MAGIC {
            position = next_magic(file, length, position + 1)?;
            continue;
        }
        let declared = u64_at(&header, 8).unwrap_or(0);
        let fits = |size: u64| {
            size >= HEADER
                && size.is_multiple_of(4)
                && position.checked_add(size).is_some_and(|end| end <= length)
        };
        let set: Id = header[32..48].try_into().unwrap_or_default();
        let kind: Id = header[48..64].try_into().unwrap_or_default();
        let stored: Id = header[16..32].try_into().unwrap_or_default();
        let step = match recovery {
            // The length field is outside the MD5: the set's slice size says how long the packet is.
            Some((want, slice_size)) if &kind == RECOVERY && set == *want => {
                let size = RECOVERY_PREFIX.saturating_add(slice_size);
                let intact = fits(size) && {
                    let mut hasher = Md5::new();
                    super::hash_file(file, position + 32..position + size, &mut hasher)?;
                    <Id>::from(hasher.finalize()) == stored
                };
                if intact {
                    let mut exponent = [0u8; 4];
                    file.read_exact_at(&mut exponent, position + HEADER)?;
                    found(Found::Recovery {
                        exponent: u32::from_le_bytes(exponent),
                        data: position + RECOVERY_PREFIX,
                    });
                }
                Some(size).filter(|&size| fits(size))
            }
            _ if [MAIN, FILE_DESCRIPTION, SLICE_CHECKSUMS, CREATOR].contains(&&kind)
                && fits(declared)
                && declared <= CRITICAL_LIMIT =>
            {
                let mut body = vec![0u8; (declared - HEADER) as usize];
                file.read_exact_at(&mut body, position + HEADER)?;
                if md5_of(&[&set, &kind, &body]) == stored {
                    found(Found::Critical { set, kind, body });
                }
                Some(declared)
            }
            // Another set's recovery packet, one not read yet, or a type ferry does not use.
            _ => Some(declared).filter(|&size| fits(size)),
        };
        position = match step {
            Some(size) => position + size,
            None => next_magic(file, length, position + 1)?,
        };
    }
    Ok(())
}

/// Where the next magic number starts at or after `from`, or `length` when none does.
fn next_magic(file: &File, length: u64, from: u64) -> io::Result<u64> {
    const BLOCK: usize = 64 * 1024;
    let mut buffer = vec![0u8; BLOCK + MAGIC.len()];
    let mut at = from;
    while at < length {
        let n = (length - at).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..n], at)?;
        if let Some(i) = buffer[..n].windows(MAGIC.len()).position(|w| w == MAGIC) {
            return Ok(at + i as u64);
        }
        if n < buffer.len() {
            break;
        }
        // The last bytes may start a magic number that the next block completes.
        at += (n - (MAGIC.len() - 1)) as u64;
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The critical packets (type, body) and the recovery slices (exponent, data offset) found.
    type Scanned = (Vec<(Id, Vec<u8>)>, Vec<(u32, u64)>);

    fn scan_bytes(bytes: &[u8], recovery: Option<(&Id, u64)>) -> Scanned {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        let (mut critical, mut slices) = (Vec::new(), Vec::new());
        scan(
            &file,
            bytes.len() as u64,
            recovery,
            &mut |found| match found {
                Found::Critical { kind, body, .. } => critical.push((kind, body)),
                Found::Recovery { exponent, data } => slices.push((exponent, data)),
            },
        )
        .unwrap();
        (critical, slices)
    }

    fn recovery_packet(set: &Id, exponent: u32, data: &[u8]) -> Vec<u8> {
        let mut hasher = recovery_hasher(set, exponent);
        hasher.update(data);
        let mut bytes =
            recovery_prefix(set, exponent, data.len() as u64, &hasher.finalize().into());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn bodies_round_trip() {
        let main = Main {
            slice_size: 1024,
            files: vec![[1; 16], [2; 16]],
        };
        assert_eq!(Main::parse(&main.body()), Some(main));
        let md5_16k = [7; 16];
        let description = FileDescription {
            id: FileDescription::id_of(&md5_16k, 5000, "b.tar"),
            md5: [9; 16],
            md5_16k,
            length: 5000,
            name: "b.tar".into(),
        };
        assert_eq!(description.body().len() % 4, 0);
        assert_eq!(
            FileDescription::parse(&description.body()),
            Some(description.clone())
        );
        // A description whose fields do not hash to its ID is refused.
        let mut forged = description.body();
        forged[48] ^= 1;
        assert_eq!(FileDescription::parse(&forged), None);
        let checksums = SliceChecksums {
            id: description.id,
            slices: vec![SliceChecksum {
                md5: [3; 16],
                crc32: 0xDEAD_BEEF,
            }],
        };
        assert_eq!(SliceChecksums::parse(&checksums.body()), Some(checksums));
        assert_eq!(Main::parse(&[0; 11]), None);
        assert_eq!(SliceChecksums::parse(&[0; 17]), None);
    }

    #[test]
    fn damaged_packets_are_skipped_and_the_rest_found() {
        let set = [5u8; 16];
        let main = packet(
            &set,
            MAIN,
            &Main {
                slice_size: 8,
                files: vec![],
            }
            .body(),
        );
        let mut bytes = b"garbage before PAR2".to_vec();
        bytes.extend_from_slice(&main);
        let mut damaged = recovery_packet(&set, 1, b"12345678");
        damaged[70] ^= 0xFF;
        bytes.extend_from_slice(&damaged);
        bytes.extend_from_slice(&recovery_packet(&set, 2, b"abcdefgh"));
        // Another set's recovery packet, and one of this set with a wrong length field.
        bytes.extend_from_slice(&recovery_packet(&[6; 16], 3, b"ABCDEFGH"));
        let mut lying = recovery_packet(&set, 4, b"zzzzzzzz");
        lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let lying_at = bytes.len() as u64;
        bytes.extend_from_slice(&lying);
        let mut bad_main = main.clone();
        bad_main[64] ^= 1;
        bytes.extend_from_slice(&bad_main);
        bytes.extend_from_slice(&main[..70]);

        let (critical, slices) = scan_bytes(&bytes, None);
        assert_eq!(critical.len(), 1);
        assert!(slices.is_empty());
        let (critical, slices) = scan_bytes(&bytes, Some((&set, 8)));
        assert_eq!(critical.len(), 1);
        let exponents: Vec<u32> = slices.iter().map(|s| s.0).collect();
        assert_eq!(exponents, [2, 4]);
        assert_eq!(slices[1].1, lying_at + RECOVERY_PREFIX);
    }

    #[test]
    fn hostile_lengths_and_noise_never_panic() {
        let set = [1u8; 16];
        let mut bytes = Vec::new();
        for declared in [0u64, 3, 64, 65, u64::MAX, u64::MAX - 63, 1 << 40] {
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&declared.to_le_bytes());
            bytes.extend_from_slice(&[0; 16]);
            bytes.extend_from_slice(&set);
            bytes.extend_from_slice(MAIN);
        }
        for cut in 0..bytes.len() {
            scan_bytes(&bytes[..cut], Some((&set, u64::MAX - 10)));
        }
    }
}
