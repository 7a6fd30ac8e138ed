//! Several SHA-256 states advanced over the same blocks with the x86-64 SHA extensions, their rounds
//! interleaved: `sha256rnds2` waits for the result of the one before it in the same stream, so the other
//! streams' rounds fill that wait. The message schedule (`sha256msg1`/`sha256msg2`) depends on the block
//! alone and is computed once for all. The structure is the one of the sha2 crate's one-stream backend.

use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
    _mm_setzero_si128, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32,
    _mm_shuffle_epi32, _mm_shuffle_epi8, _mm_storeu_si128,
};

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Whether this CPU has the instructions [`compress_all`] uses (std caches the answer).
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("sha")
        && std::is_x86_feature_detected!("sse2")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("sse4.1")
}

/// Each of `states` advanced over the same `blocks`. Only where [`available`] said yes.
pub(crate) fn compress_all<const N: usize>(states: [&mut [u32; 8]; N], blocks: &[[u8; 64]]) {
    assert!(available(), "the caller checked the CPU");
    // SAFETY: the CPU has every feature the function is compiled for (checked just above).
    unsafe { rounds(states, blocks) }
}

/// The state as the rounds instruction wants it: (A, B, E, F) and (C, D, G, H).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn load(state: &[u32; 8]) -> [__m128i; 2] {
    // SAFETY: two unaligned 16-byte reads within the 32 bytes of `state`.
    let (dcba, efgh) = unsafe {
        let words = state.as_ptr().cast::<__m128i>();
        (_mm_loadu_si128(words), _mm_loadu_si128(words.add(1)))
    };
    let cdab = _mm_shuffle_epi32(dcba, 0xB1);
    let efgh = _mm_shuffle_epi32(efgh, 0x1B);
    [
        _mm_alignr_epi8(cdab, efgh, 8),
        _mm_blend_epi16(efgh, cdab, 0xF0),
    ]
}

#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn store(state: &mut [u32; 8], [abef, cdgh]: [__m128i; 2]) {
    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    // SAFETY: two unaligned 16-byte writes within the 32 bytes of `state`.
    unsafe {
        let words = state.as_mut_ptr().cast::<__m128i>();
        _mm_storeu_si128(words, _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(words.add(1), _mm_alignr_epi8(dchg, feba, 8));
    }
}

/// The next four words of the schedule from the four before.
macro_rules! schedule {
    ($w0:expr, $w1:expr, $w2:expr, $w3:expr) => {
        _mm_sha256msg2_epu32(
            _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4)),
            $w3,
        )
    };
}

#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn rounds<const N: usize>(mut states: [&mut [u32; 8]; N], blocks: &[[u8; 64]]) {
    // Big-endian words: each 32-bit lane's bytes reversed.
    let byte_swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
    let mut lanes: [[__m128i; 2]; N] = std::array::from_fn(|_| [_mm_setzero_si128(); 2]);
    for (lane, state) in lanes.iter_mut().zip(states.iter()) {
        *lane = load(state);
    }
    // Four rounds of every stream with the schedule's words `w` and the constants of `group` (read where
    // used: sixteen registers of constants would leave too few for the rest, as SSE has 16). Each
    // stream's step waits for its previous one; the other streams' steps fill that wait.
    macro_rules! rounds4 {
        ($w:expr, $group:expr) => {{
            const { assert!($group < 16) };
            // SAFETY: a 16-byte read within the 256 bytes of `K`.
            let k = unsafe { _mm_loadu_si128(K.as_ptr().cast::<__m128i>().add($group)) };
            let low = _mm_add_epi32($w, k);
            let high = _mm_shuffle_epi32(low, 0x0E);
            for [abef, cdgh] in lanes.iter_mut() {
                *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, low);
            }
            for [abef, cdgh] in lanes.iter_mut() {
                *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, high);
            }
        }};
    }
    for block in blocks {
        let saved = lanes;
        // SAFETY: four unaligned 16-byte reads within the 64 bytes of `block`.
        let (mut w0, mut w1, mut w2, mut w3) = unsafe {
            let bytes = block.as_ptr().cast::<__m128i>();
            (
                _mm_shuffle_epi8(_mm_loadu_si128(bytes), byte_swap),
                _mm_shuffle_epi8(_mm_loadu_si128(bytes.add(1)), byte_swap),
                _mm_shuffle_epi8(_mm_loadu_si128(bytes.add(2)), byte_swap),
                _mm_shuffle_epi8(_mm_loadu_si128(bytes.add(3)), byte_swap),
            )
        };
        let mut w4;
        // The schedule's words 16 and on, four at a time from the sixteen before, in five registers.
        macro_rules! next {
            ($a:ident, $b:ident, $c:ident, $d:ident, $into:ident, $group:expr) => {{
                $into = schedule!($a, $b, $c, $d);
                rounds4!($into, $group);
            }};
        }
        rounds4!(w0, 0);
        rounds4!(w1, 1);
        rounds4!(w2, 2);
        rounds4!(w3, 3);
        next!(w0, w1, w2, w3, w4, 4);
        next!(w1, w2, w3, w4, w0, 5);
        next!(w2, w3, w4, w0, w1, 6);
        next!(w3, w4, w0, w1, w2, 7);
        next!(w4, w0, w1, w2, w3, 8);
        next!(w0, w1, w2, w3, w4, 9);
        next!(w1, w2, w3, w4, w0, 10);
        next!(w2, w3, w4, w0, w1, 11);
        next!(w3, w4, w0, w1, w2, 12);
        next!(w4, w0, w1, w2, w3, 13);
        next!(w0, w1, w2, w3, w4, 14);
        next!(w1, w2, w3, w4, w0, 15);
        for ([abef, cdgh], [saved_abef, saved_cdgh]) in lanes.iter_mut().zip(saved) {
            *abef = _mm_add_epi32(*abef, saved_abef);
            *cdgh = _mm_add_epi32(*cdgh, saved_cdgh);
        }
    }
    for (lane, state) in lanes.into_iter().zip(states.iter_mut()) {
        store(state, lane);
    }
}
