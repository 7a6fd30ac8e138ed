//! SHA-256 that can hash the same bytes into several hashes at once.
//!
//! ferry hashes most bytes twice: a blob's own digest and the digest of the bundle that carries it (a
//! delta's, three times: the blob, the delta and the full bundle it stands for). With the x86-64 SHA
//! extensions, one SHA-256 stream runs at the latency of its rounds instruction, not at its throughput: a
//! core has room for more independent streams between the steps of the first. Where the hashes are at the
//! same offset within a 64-byte block, [`update_all`] runs their rounds interleaved over one shared
//! message schedule (measured with `examples/speed.rs` on an AMD EPYC: two hashes in the time of one
//! pass of the sha2 crate, three in 1.1 times it). Elsewhere, and on other CPUs, each hash is advanced
//! alone with the sha2 crate's compression function.
//!
//! The unsafe code is the x86-64 rounds (`x86.rs`), each pointer read from a `[u8; 64]`; it runs only
//! where the CPU says it has the instructions.

#[cfg(target_arch = "x86_64")]
mod x86;

const BLOCK: usize = 64;

const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A SHA-256 computation in progress.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// The bytes of an incomplete block, `filled` of them.
    block: [u8; BLOCK],
    filled: usize,
    /// Every byte given so far.
    length: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256 {
            state: INITIAL,
            block: [0; BLOCK],
            filled: 0,
            length: 0,
        }
    }

    /// How many bytes were hashed so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    pub fn update(&mut self, data: &[u8]) {
        let whole = self.top_up(data);
        let (blocks, rest) = whole.as_chunks::<BLOCK>();
        compress(&mut self.state, blocks);
        self.keep(rest);
    }

    /// The digest of everything given.
    pub fn finalize(mut self) -> [u8; 32] {
        let bits = self.length.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.filled].copy_from_slice(&self.block[..self.filled]);
        tail[self.filled] = 0x80;
        // The length takes the last 8 bytes of the last block: one block more when they are taken.
        let end = if self.filled < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        let (blocks, _) = tail[..end].as_chunks::<BLOCK>();
        compress(&mut self.state, blocks);
        let mut digest = [0u8; 32];
        for (bytes, word) in digest.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }

    /// Completes the buffered block with the start of `data` and compresses it; returns the rest of
    /// `data`. Counts all of `data`.
    fn top_up<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        self.length += data.len() as u64;
        if self.filled == 0 {
            return data;
        }
        let taken = data.len().min(BLOCK - self.filled);
        self.block[self.filled..self.filled + taken].copy_from_slice(&data[..taken]);
        self.filled += taken;
        if self.filled == BLOCK {
            compress(&mut self.state, std::slice::from_ref(&self.block));
            self.filled = 0;
        }
        &data[taken..]
    }

    /// Buffers the last bytes of an update, less than a block.
    fn keep(&mut self, rest: &[u8]) {
        self.block[self.filled..self.filled + rest.len()].copy_from_slice(rest);
        self.filled += rest.len();
    }
}

/// Hashes `data` into both `first` and `second`: as one `update` each, but where both are at the same
/// offset within a block (two hashes that began at block-aligned points of the same stream, such as a
/// tar and an entry in it), their full blocks are compressed side by side, as fast as one.
pub fn update_both(first: &mut Sha256, second: &mut Sha256, data: &[u8]) {
    update_all([first, second], data);
}

/// Hashes `data` into every one of `hashes`, side by side where all are at the same offset within a block
/// ([`update_both`] for two; three, such as a blob, the delta that carries it and the full bundle the
/// delta stands for, cost little more than one).
pub fn update_all<const N: usize>(hashes: [&mut Sha256; N], data: &[u8]) {
    const { assert!(N > 0, "at least one hash") };
    let filled = hashes.first().map(|hash| hash.filled);
    if hashes.iter().any(|hash| Some(hash.filled) != filled) {
        for hash in hashes {
            hash.update(data);
        }
        return;
    }
    // The same bytes complete the same amount of every buffered block.
    let mut hashes = hashes;
    let mut whole = data;
    for hash in hashes.iter_mut() {
        whole = hash.top_up(data);
    }
    let (blocks, rest) = whole.as_chunks::<BLOCK>();
    compress_all(hashes.each_mut().map(|hash| &mut hash.state), blocks);
    for hash in hashes {
        hash.keep(rest);
    }
}

fn compress(state: &mut [u32; 8], blocks: &[[u8; BLOCK]]) {
    // SAFETY: `GenericArray<u8, U64>` is `repr(transparent)` over `[u8; 64]` (sha2 makes the same cast
    // the other way); the slice keeps its length and lifetime.
    let blocks = unsafe {
        std::slice::from_raw_parts(
            blocks
                .as_ptr()
                .cast::<sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>>(),
            blocks.len(),
        )
    };
    sha2::compress256(state, blocks);
}

/// Every state advanced over the same blocks: side by side where the CPU can, else one after another.
fn compress_all<const N: usize>(states: [&mut [u32; 8]; N], blocks: &[[u8; BLOCK]]) {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        x86::compress_all(states, blocks);
        return;
    }
    for state in states {
        compress(state, blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn reference(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    #[test]
    fn one_hash_matches_sha2_at_every_length_around_the_padding() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for length in 0..data.len() {
            let mut hasher = Sha256::new();
            hasher.update(&data[..length]);
            assert_eq!(hasher.finalize(), reference(&data[..length]), "{length}");
        }
        assert_eq!(
            hex(Sha256::new().finalize()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// A stream cut at random points; a second hash over a part of it that starts at a random point
    /// (block-aligned or not) and ends at another; both compared with sha2's.
    #[test]
    fn two_hashes_of_one_stream_match_sha2_wherever_they_start_and_however_it_is_cut() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..400 {
            let length = rng.usize(0..20_000);
            let data: Vec<u8> = (0..length).map(|_| rng.u8(..)).collect();
            let start = match round % 3 {
                0 => rng.usize(0..=length) / BLOCK * BLOCK,
                _ => rng.usize(0..=length),
            };
            let end = rng.usize(start..=length);
            let (mut whole, mut part) = (Sha256::new(), Sha256::new());
            let mut at = 0;
            while at < length {
                let next = (at + rng.usize(1..3000)).min(length);
                // Split where the part starts and ends, as a caller feeding both would.
                let mut cut = vec![at, next];
                cut.extend([start, end].into_iter().filter(|&p| at < p && p < next));
                cut.sort_unstable();
                for pair in cut.windows(2) {
                    let (from, to) = (pair[0], pair[1]);
                    if from >= start && to <= end {
                        update_both(&mut whole, &mut part, &data[from..to]);
                    } else {
                        whole.update(&data[from..to]);
                    }
                }
                at = next;
            }
            assert_eq!(whole.length(), length as u64);
            assert_eq!(whole.finalize(), reference(&data), "round {round}");
            assert_eq!(
                part.finalize(),
                reference(&data[start..end]),
                "round {round}: {start}..{end} of {length}"
            );
        }
    }

    #[test]
    fn the_side_by_side_rounds_match_one_at_a_time() {
        let mut rng = fastrand::Rng::with_seed(11);
        let blocks: Vec<[u8; BLOCK]> = (0..1000)
            .map(|_| std::array::from_fn(|_| rng.u8(..)))
            .collect();
        let starts = [INITIAL, [1, 2, 3, 4, 5, 6, 7, 8], [9; 8]];
        let (mut first, mut second) = (starts[0], starts[1]);
        compress_all([&mut first, &mut second], &blocks);
        let mut three = starts;
        compress_all(three.each_mut(), &blocks);
        let mut alone = starts;
        for state in alone.iter_mut() {
            compress(state, &blocks);
        }
        assert_eq!([first, second], alone[..2]);
        assert_eq!(three, alone);
    }

    /// Three hashes fed the same chunks, one of them joining late (not block-aligned, then aligned).
    #[test]
    fn three_hashes_side_by_side_match_sha2() {
        let mut rng = fastrand::Rng::with_seed(13);
        let data: Vec<u8> = (0..50_000).map(|_| rng.u8(..)).collect();
        for join in [0, 64, 4096, 100, 4097] {
            let (done, rest) = data.split_at(join);
            let mut lanes: [Sha256; 3] = Default::default();
            lanes[0].update(done);
            for chunk in rest.chunks(1000) {
                update_all(lanes.each_mut(), chunk);
            }
            let [whole, second, third] = lanes;
            assert_eq!(whole.finalize(), reference(&data), "{join}");
            assert_eq!(second.finalize(), reference(rest), "{join}");
            assert_eq!(third.finalize(), reference(rest), "{join}");
        }
    }

    fn hex(bytes: [u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
