//! Hashes of 256 MiB: two and three side by side with `update_all`, and one alone (this crate's, and
//! sha2's).

use std::time::Instant;

use sha2::Digest as _;

fn main() {
    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for _ in 0..3 {
        let started = Instant::now();
        let (mut first, mut second) = (sha256_pair::Sha256::new(), sha256_pair::Sha256::new());
        for chunk in data.chunks(1 << 20) {
            sha256_pair::update_both(&mut first, &mut second, chunk);
        }
        let both = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut three: [sha256_pair::Sha256; 3] = Default::default();
        for chunk in data.chunks(1 << 20) {
            sha256_pair::update_all(three.each_mut(), chunk);
        }
        let all_three = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut one = sha256_pair::Sha256::new();
        one.update(&data);
        let alone = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let reference: [u8; 32] = sha2::Sha256::digest(&data).into();
        let sha2 = started.elapsed().as_secs_f64();
        assert_eq!(first.finalize(), reference);
        assert_eq!(second.finalize(), reference);
        assert_eq!(one.finalize(), reference);
        assert!(three.into_iter().all(|hash| hash.finalize() == reference));
        println!(
            "two side by side {both:.3} s; three {all_three:.3} s; one alone {alone:.3} s; one with sha2 {sha2:.3} s"
        );
    }
}
