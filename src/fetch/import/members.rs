//! Gzip on every core: the input is cut into blocks of [`BLOCK`] bytes, each block is compressed on its own
//! into a whole gzip member (header, deflate stream, CRC-32 and length) by a pool of threads, and the members
//! are written in input order. One gzip stream of several members is one gzip file (RFC 1952, 2.2): Go's
//! gzip reader, which docker, containerd and podman use, reads them all, as do `gzip -d`, pigz and flate2's
//! `MultiGzDecoder`.
//!
//! The bytes depend only on the input and the settings [`COMPRESSION`] names, never on the number of cores:
//! the blocks are cut at fixed offsets and each is compressed alone. Memory is bounded: one layer at a time
//! is compressed in this process, each with every core, and at most [`in_flight`] of its blocks are read and
//! not yet written, whatever the input's size.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Mutex, PoisonError};

use libdeflater::{CompressionLvl, Compressor};

#[cfg(doc)]
use crate::layer_codec::COMPRESSION;
use crate::layer_codec::{BLOCK, LEVEL};

/// At most this many threads compress, so that the blocks in flight stay within about
/// `(MAX_WORKERS + 2) * 2 * BLOCK` (10 MiB) on a machine of any size.
const MAX_WORKERS: usize = 8;

/// A block, the buffer its member is compressed into, and the member's length in it; both buffers go back
/// to the feeder with the member, to be used again, so that memory is a fixed set of buffers, not a stream
/// of allocations. The member's buffer keeps the length of the largest member possible, so that it is
/// zeroed once, not before every block.
type Buffers = (Vec<u8>, Vec<u8>, usize);

/// A block to compress, and where its member goes.
type Job = (Buffers, SyncSender<io::Result<Buffers>>);

/// Compresses all of `input` into `output` as gzip members of [`BLOCK`] bytes of input each (one member
/// for an empty input), on every core. Returns at the first failure to read or write.
///
/// Other callers wait their turn.
pub(super) fn gzip_members(input: &mut impl Read, output: &mut impl Write) -> io::Result<()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    let (jobs, queue) = mpsc::sync_channel::<Job>(0);
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| compress_jobs(&queue));
        }
        // `jobs` is dropped when this returns, which ends the workers.
        feed(input, output, jobs, in_flight(workers))
    })
}

/// How many blocks may be between read and written: one per worker, and one more so that the next block
/// waits for the first worker free while the oldest member is written.
fn in_flight(workers: usize) -> usize {
    workers + 1
}

/// Reads blocks, hands them to the workers, and writes their members in order.
fn feed(
    input: &mut impl Read,
    output: &mut impl Write,
    jobs: SyncSender<Job>,
    in_flight: usize,
) -> io::Result<()> {
    let mut pending: VecDeque<Receiver<io::Result<Buffers>>> = VecDeque::with_capacity(in_flight);
    let mut spare: Vec<Buffers> = Vec::with_capacity(in_flight);
    let mut blocks = 0u64;
    loop {
        if pending.len() == in_flight {
            spare.push(write_oldest(&mut pending, output)?);
        }
        let (mut block, member, _) = spare.pop().unwrap_or_default();
        block.clear();
        input.take(BLOCK as u64).read_to_end(&mut block)?;
        let last = block.len() < BLOCK;
        if block.is_empty() && blocks > 0 {
            break;
        }
        blocks += 1;
        let (done, compressed) = mpsc::sync_channel(1);
        jobs.send(((block, member, 0), done))
            .map_err(|_| workers_gone())?;
        pending.push_back(compressed);
        if last {
            break;
        }
    }
    while !pending.is_empty() {
        write_oldest(&mut pending, output)?;
    }
    Ok(())
}

/// Writes the oldest block's member; returns its buffers.
fn write_oldest(
    pending: &mut VecDeque<Receiver<io::Result<Buffers>>>,
    output: &mut impl Write,
) -> io::Result<Buffers> {
    let compressed = pending.pop_front().expect("a block in flight");
    let (block, member, size) = compressed.recv().map_err(|_| workers_gone())??;
    output.write_all(&member[..size])?;
    Ok((block, member, size))
}

/// Compresses blocks until no more come.
fn compress_jobs(queue: &Mutex<Receiver<Job>>) {
    let mut compressor =
        Compressor::new(CompressionLvl::new(LEVEL).expect("a level libdeflate has"));
    let bound = compressor.gzip_compress_bound(BLOCK);
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(((block, mut member, _), done)) = job else {
            return;
        };
        member.resize(bound, 0);
        let compressed = match compressor.gzip_compress(&block, &mut member) {
            Ok(size) => Ok((block, member, size)),
            Err(e) => Err(io::Error::other(e)),
        };
        // The feeder is gone only when it failed; it says why.
        let _ = done.send(compressed);
    }
}

fn workers_gone() -> io::Error {
    io::Error::other("a compression thread stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    fn members(input: &[u8]) -> Vec<u8> {
        let mut output = Vec::new();
        gzip_members(&mut &input[..], &mut output).unwrap();
        output
    }

    fn gunzip(gzip: &[u8]) -> Vec<u8> {
        let mut content = Vec::new();
        MultiGzDecoder::new(gzip).read_to_end(&mut content).unwrap();
        content
    }

    /// Where each member starts: flate2 reads one member at a time.
    fn member_count(mut gzip: &[u8]) -> usize {
        let mut count = 0;
        while !gzip.is_empty() {
            let mut decoder = flate2::bufread::GzDecoder::new(gzip);
            io::copy(&mut decoder, &mut io::sink()).unwrap();
            gzip = decoder.into_inner();
            count += 1;
        }
        count
    }

    #[test]
    fn blocks_become_members_in_order_each_compressed_alone() {
        let mut rng = fastrand::Rng::with_seed(3);
        let input: Vec<u8> = (0..BLOCK * 5 / 2)
            .map(|_| b"ferry layer "[rng.usize(..12)])
            .collect();
        let gzip = members(&input);
        assert_eq!(gunzip(&gzip), input);
        assert_eq!(member_count(&gzip), 3, "2.5 blocks: 3 members");
        assert_eq!(
            &gzip[..10],
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff],
            "deflate, no name or comment, mtime 0, fastest, OS unknown"
        );
        // Each block alone: the same bytes as one worker would give.
        let mut alone = Vec::new();
        for block in input.chunks(BLOCK) {
            alone.extend(members(block));
        }
        assert_eq!(gzip, alone);
    }

    #[test]
    fn an_empty_input_is_one_empty_member_and_a_whole_block_no_trailing_one() {
        let empty = members(b"");
        assert_eq!((member_count(&empty), gunzip(&empty)), (1, Vec::new()));
        let whole = vec![7u8; BLOCK * 2];
        let gzip = members(&whole);
        assert_eq!((member_count(&gzip), gunzip(&gzip)), (2, whole));
    }

    #[test]
    fn a_failed_read_or_write_is_returned() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let mut output = Vec::new();
        let err = gzip_members(&mut Failing, &mut output).unwrap_err();
        assert_eq!(err.to_string(), "disk gone");
        let input = vec![1u8; BLOCK * 20];
        let err = gzip_members(&mut &input[..], &mut &mut [0u8; 100][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
