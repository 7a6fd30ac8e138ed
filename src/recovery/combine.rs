//! The one computation behind both creating and repairing: outputs that are linear combinations of
//! slices, `output[o] = Σ coefficient(o, i) · input[i]` over GF(2^16), streamed.
//!
//! Memory is bounded whatever the bundle's size: the slices are processed in *windows* (bytes
//! `a..b` of every slice at once), so the outputs held are `outputs × window` bytes, at most
//! [`OUTPUT_BUDGET`]; the inputs are read in batches of at most [`BATCH_BUDGET`]. Each window reads its
//! part of every input once, so all windows together read each input once. A reader thread reads,
//! hashes and transposes the next batch while the other threads multiply the current one, each over its
//! own range of the window.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

use super::bitslice::{self, Chunk, Tables, CHUNK, ZERO};
use crate::interrupt;

/// The memory a run may take, besides the per-input hash states and the multiplication rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    /// The outputs' window.
    pub outputs: usize,
    /// One batch of inputs, in plane form; two are in flight.
    pub batch: usize,
}

impl Budget {
    /// 32 MiB of outputs hold 100 recovery slices of 320 KiB (a 650 MB bundle at 5%) at once.
    pub const DEFAULT: Budget = Budget {
        outputs: 32 << 20,
        batch: 8 << 20,
    };
}
/// The multiplication rows of one batch (32 bytes per input and output).
const ROWS_BUDGET: usize = 4 << 20;
const MAX_BATCH: usize = 64;

/// Where one input slice's bytes are: `length` bytes at `offset` of source `source`; past them, and
/// past the end of the source, the slice is zeros.
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece {
    pub source: usize,
    pub offset: u64,
    pub length: u64,
}

pub(super) struct Job<'a> {
    pub plan: Plan,
    pub sources: &'a [File],
    pub inputs: &'a [Piece],
    pub slice_size: u64,
    pub outputs: usize,
    /// Fills every output's coefficient for one input.
    pub coefficients: &'a (dyn Fn(usize, &mut [u16]) + Sync),
    /// A square matrix (row-major) the outputs go through before they are emitted: a repair's inverse,
    /// which costs outputs² per window this way, not outputs² per input as folded into the coefficients.
    pub mix: Option<&'a [u16]>,
}

/// Why a run stopped: a source that could not be read (its index), or what `emit` returned.
#[derive(Debug)]
pub(super) enum Failure<E> {
    Read(usize, io::Error),
    Emit(E),
}

/// How the slices are cut into windows and the inputs into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    pub windows: usize,
    /// Chunks per window.
    window: usize,
    batch: usize,
}

impl Plan {
    pub fn new(slice_size: u64, outputs: usize, budget: Budget) -> Plan {
        let chunks = usize::try_from(slice_size.div_ceil(CHUNK as u64)).unwrap_or(usize::MAX);
        let fit = (budget.outputs / (outputs.max(1) * CHUNK)).clamp(1, chunks.max(1));
        let windows = chunks.div_ceil(fit).max(1);
        let window = chunks.div_ceil(windows).max(1);
        let batch = (budget.batch / (window * CHUNK))
            .min(ROWS_BUDGET / (32 * outputs.max(1)))
            .clamp(1, MAX_BATCH);
        Plan {
            windows,
            window,
            batch,
        }
    }
}

/// One batch of inputs for one window, in plane form, with each input's multiplication rows.
struct Batch {
    window: usize,
    /// Input g's chunk k is `planes[g * plan.window + k]`.
    planes: Vec<Chunk>,
    /// Input g's rows for output o are `rows[g * outputs + o]`.
    rows: Vec<[u16; 16]>,
    /// Inputs that have no bytes in this window (or are missing from the batch's end).
    empty: Vec<bool>,
    /// The last batch of its window.
    last: bool,
}

/// Where an output's bytes go: `(output, offset, bytes)`.
pub(super) type Emit<'a, E> = dyn FnMut(usize, u64, &[u8]) -> Result<(), E> + 'a;

/// Runs `job`: `observe(input, bytes)` sees every input's bytes in order, window by window, on the
/// reader thread (for hashing); `emit(output, offset, bytes)` receives each output's bytes
/// `offset..offset + bytes.len()`, window by window, in order.
pub(super) fn run<E>(
    job: &Job,
    observe: &mut (dyn FnMut(usize, &[u8]) + Send),
    emit: &mut Emit<E>,
) -> Result<(), Failure<E>> {
    let plan = job.plan;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, plan.window);
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Batch, (usize, io::Error)>>(1);
    let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
    for _ in 0..2 {
        let _ = empty_tx.send(Batch {
            window: 0,
            planes: vec![ZERO; plan.batch * plan.window],
            rows: vec![[0; 16]; plan.batch * job.outputs],
            empty: vec![true; plan.batch],
            last: false,
        });
    }
    std::thread::scope(|scope| {
        scope.spawn(move || read(job, plan, observe, empty_rx, full_tx));
        let mut accumulators = vec![ZERO; plan.window * job.outputs];
        let mut bytes = vec![0u8; plan.window * CHUNK];
        while let Ok(batch) = full_rx.recv() {
            let batch = batch.map_err(|(source, error)| Failure::Read(source, error))?;
            multiply(job.outputs, plan, threads, &batch, &mut accumulators);
            if batch.last {
                if let Some(matrix) = job.mix {
                    mix(job.outputs, plan, threads, matrix, &mut accumulators);
                }
                let offset = (batch.window * plan.window * CHUNK) as u64;
                let length = (job.slice_size - offset).min(bytes.len() as u64) as usize;
                for output in 0..job.outputs {
                    for (k, at) in bytes.chunks_exact_mut(CHUNK).enumerate() {
                        bitslice::from_planes(&accumulators[k * job.outputs + output], at);
                    }
                    emit(output, offset, &bytes[..length]).map_err(Failure::Emit)?;
                }
                accumulators.fill(ZERO);
            }
            // The reader may have stopped already; then the run is over anyway.
            let _ = empty_tx.send(batch);
        }
        Ok(())
    })
}

/// The reader thread: fills batches window by window and hands them on; stops at the first error.
fn read(
    job: &Job,
    plan: Plan,
    observe: &mut (dyn FnMut(usize, &[u8]) + Send),
    empty: mpsc::Receiver<Batch>,
    full: mpsc::SyncSender<Result<Batch, (usize, io::Error)>>,
) {
    let mut bytes = vec![0u8; plan.window * CHUNK];
    let mut coefficients = vec![0u16; job.outputs];
    for window in 0..plan.windows {
        let start = (window * plan.window * CHUNK) as u64;
        let end = (start + bytes.len() as u64).min(job.slice_size);
        let batches = job.inputs.chunks(plan.batch);
        let count = batches.len();
        for (index, inputs) in batches.enumerate() {
            let Ok(mut batch) = empty.recv() else { return };
            batch.window = window;
            batch.last = index + 1 == count;
            batch.empty.fill(true);
            let first = index * plan.batch;
            for (g, piece) in inputs.iter().enumerate() {
                let filled = match fill(job, piece, start, end, &mut bytes) {
                    Ok(filled) => filled,
                    Err(error) => {
                        let _ = full.send(Err((piece.source, error)));
                        return;
                    }
                };
                observe(first + g, &bytes[..filled]);
                if filled == 0 {
                    continue;
                }
                bytes[filled..].fill(0);
                batch.empty[g] = false;
                let planes = &mut batch.planes[g * plan.window..(g + 1) * plan.window];
                for (chunk, data) in planes.iter_mut().zip(bytes.chunks_exact(CHUNK)) {
                    bitslice::to_planes(data, chunk);
                }
                (job.coefficients)(first + g, &mut coefficients);
                let rows = &mut batch.rows[g * job.outputs..(g + 1) * job.outputs];
                for (rows, &c) in rows.iter_mut().zip(&coefficients) {
                    *rows = bitslice::rows(c);
                }
            }
            if full.send(Ok(batch)).is_err() {
                return;
            }
        }
    }
}

/// Reads the piece's bytes `start..end` (of the slice) into `bytes`; returns how many there are (the
/// piece may end before `end`, and its source before the piece does).
fn fill(job: &Job, piece: &Piece, start: u64, end: u64, bytes: &mut [u8]) -> io::Result<usize> {
    interrupt::check()?;
    let wanted = end.min(piece.length).saturating_sub(start) as usize;
    let file = &job.sources[piece.source];
    let mut filled = 0;
    while filled < wanted {
        match file.read_at(
            &mut bytes[filled..wanted],
            piece.offset + start + filled as u64,
        ) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Adds the batch's contribution to the accumulators, the window's chunks split among the threads.
fn multiply(outputs: usize, plan: Plan, threads: usize, batch: &Batch, accumulators: &mut [Chunk]) {
    let per_thread = plan.window.div_ceil(threads);
    std::thread::scope(|scope| {
        for (part, accumulators) in accumulators.chunks_mut(per_thread * outputs).enumerate() {
            scope.spawn(move || {
                let mut tables = Tables::new();
                for (k, accumulators) in accumulators.chunks_exact_mut(outputs).enumerate() {
                    let chunk = part * per_thread + k;
                    for (g, _) in batch.empty.iter().enumerate().filter(|(_, &e)| !e) {
                        tables.build(&batch.planes[g * plan.window + chunk]);
                        let rows = &batch.rows[g * outputs..(g + 1) * outputs];
                        for (accumulator, rows) in accumulators.iter_mut().zip(rows) {
                            tables.multiply_add(accumulator, rows);
                        }
                    }
                }
            });
        }
    });
}

/// `accumulators = matrix · accumulators`, chunk by chunk, the chunks split among the threads.
fn mix(outputs: usize, plan: Plan, threads: usize, matrix: &[u16], accumulators: &mut [Chunk]) {
    let rows: Vec<[u16; 16]> = matrix.iter().map(|&c| bitslice::rows(c)).collect();
    let per_thread = plan.window.div_ceil(threads);
    std::thread::scope(|scope| {
        for accumulators in accumulators.chunks_mut(per_thread * outputs) {
            let rows = &rows;
            scope.spawn(move || {
                let mut tables = Tables::new();
                let mut mixed = vec![ZERO; outputs];
                for accumulators in accumulators.chunks_exact_mut(outputs) {
                    mixed.fill(ZERO);
                    for (o, accumulator) in accumulators.iter().enumerate() {
                        tables.build(accumulator);
                        for (j, target) in mixed.iter_mut().enumerate() {
                            tables.multiply_add(target, &rows[j * outputs + o]);
                        }
                    }
                    accumulators.copy_from_slice(&mixed);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::field::field;
    use super::*;
    use std::io::Write;

    #[test]
    fn plans_bound_memory_and_cover_every_chunk() {
        // A 390 MB bundle at 5%: 100 outputs of 195 KB fit one window.
        let budget = Budget::DEFAULT;
        let plan = Plan::new(195_000, 100, budget);
        assert_eq!(plan.windows, 1);
        // A 2 GB bundle: 1 MB slices need several windows.
        let plan = Plan::new(1_000_000, 100, budget);
        assert!(plan.windows > 1);
        assert!(plan.window * CHUNK * 100 <= budget.outputs);
        assert!(plan.windows * plan.window * CHUNK >= 1_000_000);
        // Huge slice sizes and output counts stay bounded.
        let plan = Plan::new(1 << 30, 32768, budget);
        assert!(plan.window * CHUNK * 32768 <= budget.outputs);
        assert!(plan.batch * plan.window * CHUNK <= budget.batch);
        assert!(plan.batch * 32768 * 32 <= ROWS_BUDGET);
    }

    /// Every output word must be the sum of the products, computed the slow way; several windows and
    /// batches, pieces shorter than the slice, and a source that ends early.
    #[test]
    fn outputs_are_the_linear_combinations() {
        let field = field();
        let slice_size = 3 * CHUNK as u64 + 12;
        let mut data = Vec::new();
        let mut state = 7u32;
        for _ in 0..20_000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            data.push((state >> 16) as u8);
        }
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let inputs: Vec<Piece> = (0..9)
            .map(|i| Piece {
                source: 0,
                offset: i * slice_size,
                length: if i == 8 { 100 } else { slice_size },
            })
            .chain([Piece {
                source: 0,
                offset: 19_990,
                length: slice_size,
            }])
            .collect();
        let outputs = 3;
        let coefficient = |o: usize, i: usize| ((o as u16 + 1) * 0x1F3) ^ (i as u16 * 77);
        // Two-chunk windows (a 4-chunk slice takes two) and batches of two inputs.
        let budget = Budget {
            outputs: 2 * outputs * CHUNK,
            batch: 2 * 2 * CHUNK,
        };
        let plan = Plan::new(slice_size, outputs, budget);
        assert_eq!((plan.windows, plan.batch), (2, 2));
        let job = Job {
            plan,
            sources: std::slice::from_ref(&file),
            inputs: &inputs,
            slice_size,
            outputs,
            coefficients: &|i, out: &mut [u16]| {
                for (o, c) in out.iter_mut().enumerate() {
                    *c = coefficient(o, i);
                }
            },
            mix: None,
        };
        let mut got = vec![vec![0u8; slice_size as usize]; outputs];
        let mut seen = vec![0usize; inputs.len()];
        run::<()>(
            &job,
            &mut |i, bytes| seen[i] += bytes.len(),
            &mut |o, offset, bytes| {
                got[o][offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen[8], 100);
        assert_eq!(seen[9], 10);
        let word = |i: usize, w: usize| {
            let piece = inputs[i];
            let at = |b: usize| {
                let within = (2 * w + b) as u64;
                if within < piece.length {
                    data.get((piece.offset + within) as usize)
                        .copied()
                        .unwrap_or(0)
                } else {
                    0
                }
            };
            u16::from_le_bytes([at(0), at(1)])
        };
        for (o, got) in got.iter().enumerate() {
            for w in 0..slice_size as usize / 2 {
                let expected = (0..inputs.len())
                    .fold(0, |sum, i| sum ^ field.mul(coefficient(o, i), word(i, w)));
                assert_eq!(
                    u16::from_le_bytes([got[2 * w], got[2 * w + 1]]),
                    expected,
                    "output {o} word {w}"
                );
            }
        }
    }
}
