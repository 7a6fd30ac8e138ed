//! Gzip on every core: the input is cut into blocks of [`BLOCK`] bytes, each block is compressed on its own
//! into a whole gzip member (header, deflate stream, CRC-32 and length) by a pool of threads, and the members
//! are written in input order. One gzip stream of several members is one gzip file (RFC 1952, 2.2): Go's
//! gzip reader, which docker, containerd and podman use, reads them all, as do `gzip -d`, pigz and flate2's
//! `MultiGzDecoder`.
//!
//! The bytes depend only on the input and the settings [`COMPRESSION`] names, never on the number of cores:
//! the blocks are cut at fixed offsets and each is compressed alone. One pool serves a whole import: the
//! layers gzipped at the same time share its threads and its blocks, so that while one layer's last
//! members are compressed and written, the next layer's first blocks already keep the other cores busy.
//! Memory is bounded: at most [`in_flight`] blocks are read and not yet written, whatever the number and
//! size of the layers.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Condvar, Mutex, PoisonError};

use libdeflater::{CompressionLvl, Compressor};

use crate::io::read_full;
#[cfg(doc)]
use crate::layer_codec::COMPRESSION;
use crate::layer_codec::{BLOCK, LEVEL};

/// At most this many threads compress, so that the blocks in flight stay within about
/// `(MAX_WORKERS + 2) * 2 * BLOCK` (10 MiB) on a machine of any size.
const MAX_WORKERS: usize = 8;

/// A block of input and the gzip member it becomes; both buffers go back to the pool with the member, to
/// be used again, so that memory is a fixed set of buffers, not a stream of allocations. Each buffer keeps
/// its whole length ([`BLOCK`], the largest member possible), so that it is zeroed once, not before every
/// block, and the input is read straight into it.
struct Block {
    input: Vec<u8>,
    /// How much of `input` this block holds: [`BLOCK`], less for the last.
    filled: usize,
    member: Vec<u8>,
}

/// A block to compress, and where it goes back once compressed, with the member's size or why there is
/// none.
type Job = (Block, SyncSender<(Block, io::Result<usize>)>);

/// The compression threads of one import and its blocks, shared by the layers it gzips at the same time.
pub(super) struct GzipPool {
    jobs: SyncSender<Job>,
    blocks: Mutex<Blocks>,
    /// Signalled when a block goes back.
    returned: Condvar,
    in_flight: usize,
}

/// The blocks not in use, and how many exist.
struct Blocks {
    spare: Vec<Block>,
    made: usize,
}

/// Runs `work` with a gzip pool of one thread per core; the threads end when it returns.
pub(super) fn with_gzip_pool<T>(work: impl FnOnce(&GzipPool) -> T) -> T {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    let in_flight = in_flight(workers);
    // Room for every block in flight: a feeder never waits to hand one over.
    let (jobs, queue) = mpsc::sync_channel::<Job>(in_flight);
    let queue = Mutex::new(queue);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| compress_jobs(&queue));
        }
        // The pool, and with it the only sender of jobs, is dropped when `work` returns, which ends the
        // workers.
        let pool = GzipPool {
            jobs,
            blocks: Mutex::new(Blocks {
                spare: Vec::with_capacity(in_flight),
                made: 0,
            }),
            returned: Condvar::new(),
            in_flight,
        };
        work(&pool)
    })
}

/// How many blocks may be between read and written: one per worker, and two more waiting in the queue, so
/// that a worker that finishes a block finds the next one ready while a feeder waits for an older member
/// to write (blocks do not finish in the order they started).
fn in_flight(workers: usize) -> usize {
    workers + 2
}

impl GzipPool {
    /// Compresses all of `input` into `output` as gzip members of [`BLOCK`] bytes of input each (one
    /// member for an empty input), on the pool's threads. Returns at the first failure to read or write.
    pub(super) fn gzip_members(
        &self,
        input: &mut impl Read,
        output: &mut impl Write,
    ) -> io::Result<()> {
        let mut pending = VecDeque::with_capacity(self.in_flight);
        let fed = self.feed(input, output, &mut pending);
        // After a failure, the blocks still being compressed come back to the pool (unless its threads
        // are gone, and the pool with them).
        for compressed in pending {
            if let Ok((block, _)) = compressed.recv() {
                self.give_back(block);
            }
        }
        fed
    }

    /// Reads blocks ahead, hands them to the workers, and writes their members in order.
    fn feed(
        &self,
        input: &mut impl Read,
        output: &mut impl Write,
        pending: &mut VecDeque<Receiver<(Block, io::Result<usize>)>>,
    ) -> io::Result<()> {
        let mut blocks = 0u64;
        let mut ended = false;
        loop {
            while !ended {
                // With members to write, a feeder never waits for a block: the one it waits for might
                // be held by another feeder waiting for this one's members to be written.
                let block = match pending.is_empty() {
                    true => Some(self.take()),
                    false => self.try_take(),
                };
                let Some(mut block) = block else { break };
                block.filled = match read_full(input, &mut block.input) {
                    Ok(filled) => filled,
                    Err(e) => {
                        self.give_back(block);
                        return Err(e);
                    }
                };
                ended = block.filled < BLOCK;
                if block.filled == 0 && blocks > 0 {
                    self.give_back(block);
                    break;
                }
                blocks += 1;
                let (done, compressed) = mpsc::sync_channel(1);
                self.jobs.send((block, done)).map_err(|_| workers_gone())?;
                pending.push_back(compressed);
            }
            let Some(oldest) = pending.pop_front() else {
                return Ok(());
            };
            let (block, size) = oldest.recv().map_err(|_| workers_gone())?;
            let written = size.and_then(|size| output.write_all(&block.member[..size]));
            self.give_back(block);
            written?;
        }
    }

    /// A block to read into, waiting for one to come back when all are in flight.
    fn take(&self) -> Block {
        let mut blocks = self.blocks.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(block) = self.free_block(&mut blocks) {
                return block;
            }
            blocks = self
                .returned
                .wait(blocks)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A block to read into, if one is free now.
    fn try_take(&self) -> Option<Block> {
        self.free_block(&mut self.blocks.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A spare block, or a new one while fewer than [`in_flight`] exist.
    fn free_block(&self, blocks: &mut Blocks) -> Option<Block> {
        if let Some(block) = blocks.spare.pop() {
            return Some(block);
        }
        (blocks.made < self.in_flight).then(|| {
            blocks.made += 1;
            Block {
                input: vec![0; BLOCK],
                filled: 0,
                member: Vec::new(),
            }
        })
    }

    fn give_back(&self, block: Block) {
        self.blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spare
            .push(block);
        self.returned.notify_one();
    }
}

/// Compresses blocks until no more come.
fn compress_jobs(queue: &Mutex<Receiver<Job>>) {
    let mut compressor =
        Compressor::new(CompressionLvl::new(LEVEL).expect("a level libdeflate has"));
    let bound = compressor.gzip_compress_bound(BLOCK);
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((mut block, done)) = job else {
            return;
        };
        block.member.resize(bound, 0);
        let size = compressor
            .gzip_compress(&block.input[..block.filled], &mut block.member)
            .map_err(io::Error::other);
        // The feeder is gone only when it panicked.
        let _ = done.send((block, size));
    }
}

fn workers_gone() -> io::Error {
    io::Error::other("a compression thread stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    fn gzip_members(input: &mut impl Read, output: &mut impl Write) -> io::Result<()> {
        with_gzip_pool(|pool| pool.gzip_members(input, output))
    }

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
    fn layers_gzipped_at_once_share_the_pool_and_each_gets_its_own_bytes() {
        // More layers than blocks: some feeders wait for a block while others hold them all.
        let layers = in_flight(MAX_WORKERS) as u64 + 1;
        let inputs: Vec<Vec<u8>> = (0..layers)
            .map(|seed| {
                let mut rng = fastrand::Rng::with_seed(seed);
                (0..BLOCK * 2 + seed as usize * 1000)
                    .map(|_| b"ferry layer "[rng.usize(..12)])
                    .collect()
            })
            .collect();
        let alone: Vec<Vec<u8>> = inputs.iter().map(|input| members(input)).collect();
        let together = with_gzip_pool(|pool| {
            std::thread::scope(|scope| {
                let layers: Vec<_> = inputs
                    .iter()
                    .map(|input| {
                        scope.spawn(move || {
                            let mut output = Vec::new();
                            pool.gzip_members(&mut &input[..], &mut output).unwrap();
                            output
                        })
                    })
                    .collect();
                layers
                    .into_iter()
                    .map(|layer| layer.join().unwrap())
                    .collect::<Vec<_>>()
            })
        });
        assert_eq!(together, alone);
    }

    #[test]
    fn a_failed_read_or_write_is_returned_and_its_blocks_go_back() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        with_gzip_pool(|pool| {
            let err = pool
                .gzip_members(&mut Failing, &mut Vec::new())
                .unwrap_err();
            assert_eq!(err.to_string(), "disk gone");
            let input = vec![1u8; BLOCK * 20];
            let err = pool
                .gzip_members(&mut &input[..], &mut &mut [0u8; 100][..])
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WriteZero);
            let blocks = pool.blocks.lock().unwrap();
            assert_eq!(blocks.spare.len(), blocks.made, "no block is lost");
            assert_eq!(blocks.made, pool.in_flight);
        });
    }
}
