//! Each blob's hash, on a thread of its own: the thread that copies blobs into a bundle hands over every
//! chunk it copied and goes on with the next, so that the blobs' hash and the output's (output.rs) run
//! beside the copy on the other cores instead of after it. What a blob hashed to is known once its last
//! chunk is hashed; a blob that is not what its name says is reported when the copy is done, before the
//! bundle is sealed or placed.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// How many chunks may wait for the hasher: the output's hasher lets 4 MiB wait, and hashes the same bytes
/// at the same speed.
const QUEUE: usize = 2;

enum Message {
    Chunk(Vec<u8>),
    /// The chunks since the last end are the bytes read of blob `0`.
    End(Digest),
}

/// A blob whose bytes hashed to something else.
#[derive(Debug)]
pub struct Mismatch {
    pub digest: Digest,
    pub actual: Digest,
    /// The bytes read of it.
    pub read: u64,
}

pub struct BlobChecker {
    sender: Option<SyncSender<Message>>,
    /// Chunks hashed, to be filled again: the same few buffers go round, instead of a fresh MiB (and its
    /// page faults) for every MiB copied.
    spare: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<Vec<Mismatch>>>,
}

impl BlobChecker {
    pub fn start() -> BlobChecker {
        let (sender, receiver) = mpsc::sync_channel::<Message>(QUEUE);
        let (give_back, spare) = mpsc::sync_channel::<Vec<u8>>(QUEUE + 1);
        let worker = std::thread::spawn(move || {
            let (mut hasher, mut read, mut mismatches) = (Sha256::new(), 0u64, Vec::new());
            for message in receiver {
                match message {
                    Message::Chunk(chunk) => {
                        hasher.update(&chunk);
                        read += chunk.len() as u64;
                        // When every buffer is already back, this one is freed.
                        let _ = give_back.try_send(chunk);
                    }
                    Message::End(digest) => {
                        let actual = Digest::from_hasher(std::mem::take(&mut hasher));
                        if actual != digest {
                            mismatches.push(Mismatch {
                                digest,
                                actual,
                                read,
                            });
                        }
                        read = 0;
                    }
                }
            }
            mismatches
        });
        BlobChecker {
            sender: Some(sender),
            spare,
            worker: Some(worker),
        }
    }

    fn send(&self, message: Message) {
        // The worker ends only when the sender is dropped: a send cannot fail before `finish`.
        let _ = self.sender.as_ref().expect("open").send(message);
    }

    /// An empty buffer of at least `capacity` bytes for the next chunk: one that went round, or a new one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        crate::digest::reused(&self.spare, capacity)
    }

    /// Bytes of the blob being copied, in order.
    pub fn chunk(&self, chunk: Vec<u8>) {
        self.send(Message::Chunk(chunk));
    }

    /// The chunks handed over since the last blob's end were all that was read of blob `digest`.
    pub fn end(&self, digest: Digest) {
        self.send(Message::End(digest));
    }

    /// Waits for the last chunk's hash; returns every blob that was not what its name says, in the order
    /// copied.
    pub fn finish(mut self) -> Vec<Mismatch> {
        drop(self.sender.take());
        self.worker
            .take()
            .expect("started")
            .join()
            .expect("the blob hasher does not panic")
    }
}

/// A copy that stopped half way leaves the hasher to finish what it was handed, and end.
impl Drop for BlobChecker {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_blob_is_hashed_from_its_own_chunks_and_mismatches_are_named() {
        let checker = BlobChecker::start();
        checker.chunk(b"first ".to_vec());
        checker.chunk(b"blob".to_vec());
        checker.end(Digest::of(b"first blob"));
        checker.chunk(b"damaged".to_vec());
        checker.end(Digest::of(b"second blob"));
        checker.end(Digest::of(b""));
        let mismatches = checker.finish();
        assert_eq!(mismatches.len(), 1, "{mismatches:?}");
        assert_eq!(mismatches[0].digest, Digest::of(b"second blob"));
        assert_eq!(mismatches[0].actual, Digest::of(b"damaged"));
        assert_eq!(mismatches[0].read, 7);
    }
}
