//! The floors examples/bench.sh prints beside ferry's ratios: what the work that cannot be avoided takes on
//! this machine, in the same run.
//!
//! Usage: floors sha256 FILE       seconds of one SHA-256 pass over FILE with the sha2 crate (which uses the
//!                                 CPU's SHA instructions), read from the page cache; best of 3
//!        floors gzip FILE...      seconds to gzip the files' bytes as ferry gzips vendor layers (libdeflate
//!                                 at ferry's level, blocks of ferry's size) on every core, nothing read or
//!                                 written while timed; best of 3

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry::layer_codec::{BLOCK, LEVEL};
use sha2::{Digest, Sha256};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = match args.split_first() {
        Some((mode, [file])) if mode == "sha256" => best_of_3(|| sha256_pass(file)),
        Some((mode, files)) if mode == "gzip" && !files.is_empty() => {
            let contents: Vec<Vec<u8>> = files
                .iter()
                .map(|file| std::fs::read(file).unwrap_or_else(|e| fail(&format!("{file}: {e}"))))
                .collect();
            best_of_3(|| gzip_on_every_core(&contents))
        }
        _ => fail("usage: floors sha256 FILE | floors gzip FILE..."),
    };
    println!("{:.3}", seconds.as_secs_f64());
}

fn best_of_3(mut work: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .min()
        .expect("3 runs")
}

fn sha256_pass(file: &str) {
    let mut file = std::fs::File::open(file).unwrap_or_else(|e| fail(&format!("{file}: {e}")));
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) => fail(&e.to_string()),
        }
    }
    std::hint::black_box(hasher.finalize());
}

fn gzip_on_every_core(contents: &[Vec<u8>]) {
    let blocks: Vec<&[u8]> = contents.iter().flat_map(|c| c.chunks(BLOCK)).collect();
    let next = AtomicUsize::new(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..cores {
            scope.spawn(|| {
                let level = libdeflater::CompressionLvl::new(LEVEL).expect("ferry's level");
                let mut compressor = libdeflater::Compressor::new(level);
                let mut member = vec![0u8; compressor.gzip_compress_bound(BLOCK)];
                while let Some(block) = blocks.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let size = compressor.gzip_compress(block, &mut member).expect("room");
                    std::hint::black_box(size);
                }
            });
        }
    });
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}
