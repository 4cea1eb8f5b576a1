//! A large checkpoint's records as table files: the key range cut into
//! parts at sampled keys, each part's runs merged into its own file, the
//! parts on threads of their own (see [`parts`]); tables built ahead of
//! the cut and the one after it joined in order (see [`Table::join`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use rocksdb::SstFileWriter;

use super::{Encoded, next_record, prefix, tables_dir};

/// The table files built for a checkpoint, one per part of its key range
/// in key order: removed when dropped unless a checkpoint record names them.
pub(super) struct Table {
    pub(super) files: Vec<PathBuf>,
    pub(super) keep: bool,
}

impl Table {
    /// The records of `encoded`'s runs from `first_run` on as a table of
    /// `parts` files (fewer if its keys do not split that far) in `store`'s
    /// tables directory.
    pub(super) fn build(encoded: &Encoded, first_run: usize, store: &Path, parts: usize) -> Result<Table, String> {
        let dir = tables_dir(store);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let bounds = encoded.split(first_run, parts);
        let files = bounds.iter().map(|_| dir.join(format!("{}.sst", TABLES.fetch_add(1, AtomicOrdering::Relaxed))));
        let table = Table { files: files.collect(), keep: false };
        encoded.write_tables(&bounds, &table.files)?;
        Ok(table)
    }

    /// One table of `tables`' files, in order: ingested together, a later
    /// file's record of a key wins over an earlier one's.
    pub(super) fn join(tables: Vec<Table>) -> Table {
        let files = tables.into_iter().flat_map(|mut t| std::mem::take(&mut t.files)).collect();
        Table { files, keep: false }
    }

    /// The files' names, one per line, as the checkpoint record keeps them.
    pub(super) fn names(&self) -> Vec<u8> {
        let names = self.files.iter().map(|f| f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        names.collect::<Vec<_>>().join(&b'\n')
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if !self.keep {
            for file in &self.files {
                // Gone already if it was ingested.
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// State entries per part of a checkpoint's table, at least: a table of
/// more is built as several files at once, one per core (see [`parts`]).
pub(super) const PART_ENTRIES: u32 = 250_000;

/// How many files a table of `count` records is built as, in parallel:
/// one per [`PART_ENTRIES`], at most one per core and four. RocksDB's
/// `SstFileWriter` takes ~200 ns per key here whatever its options
/// (BENCHMARKS.md, "sixteenth"), so a 1M-key table took ~240 ms on one core.
pub(super) fn parts(count: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    ((count / PART_ENTRIES) as usize).clamp(1, cores.min(4))
}

/// Table files built by this process, for unique names (a store's
/// directory is cleared of them at open).
static TABLES: AtomicU64 = AtomicU64::new(0);

impl Encoded {
    /// Where each run's records lie in `rep`, in run order.
    fn run_ranges(&self) -> Vec<Range<usize>> {
        let ends = self.runs.iter().skip(1).copied().chain(std::iter::once(self.rep.len()));
        self.runs.iter().zip(ends).map(|(&start, end)| start..end).collect()
    }

    /// The records of the runs from `first_run` on, cut into at most
    /// `parts` parts of the key range, in key order and none empty: each
    /// part as where its records lie in every one of those runs, in run
    /// order (so all records of a key are in one part). The parts start at
    /// sampled keys (see [`super::SAMPLE`]) spread evenly over all the
    /// samples in key order.
    fn split(&self, first_run: usize, parts: usize) -> Vec<Vec<Range<usize>>> {
        let runs = self.run_ranges().split_off(first_run.min(self.runs.len()));
        let key_at = |at: usize| next_record(&mut &self.rep[at..]).map_or(&[][..], |(k, _)| k);
        let from = runs.first().map_or(self.rep.len(), |r| r.start);
        let samples = &self.samples[self.samples.partition_point(|&at| at < from)..];
        let mut sampled: Vec<&[u8]> = samples.iter().map(|&at| key_at(at)).collect();
        sampled.sort_unstable();
        // A part before a pivot no greater than the least key would be empty.
        let least = sampled.first().copied();
        let mut pivots: Vec<&[u8]> = (1..parts)
            .map(|i| sampled[sampled.len() * i / parts])
            .filter(|&p| least.is_some_and(|least| p > least))
            .collect();
        pivots.dedup();
        // Each run's cuts: its start, where its keys reach each pivot, its end.
        let cuts: Vec<Vec<usize>> = runs
            .iter()
            .map(|run| {
                let samples = &samples
                    [samples.partition_point(|&at| at < run.start)..samples.partition_point(|&at| at < run.end)];
                let reach = pivots.iter().map(|&pivot| {
                    // The run's first record is sampled: scan from the last
                    // sample below the pivot to the first record not below it.
                    let below = samples.partition_point(|&at| key_at(at) < pivot);
                    let mut at = below.checked_sub(1).map_or(run.start, |i| samples[i]);
                    let mut rest = &self.rep[at..run.end];
                    while let Some((key, _)) = next_record(&mut rest) {
                        if key >= pivot {
                            break;
                        }
                        at = run.end - rest.len();
                    }
                    at
                });
                std::iter::once(run.start).chain(reach).chain(std::iter::once(run.end)).collect()
            })
            .collect();
        (0..=pivots.len()).map(|part| cuts.iter().map(|c| c[part]..c[part + 1]).collect()).collect()
    }

    /// Writes the records as table files, part `i` of `parts` (see
    /// [`Encoded::split`]) at `files[i]`, each on a thread of its own.
    fn write_tables(&self, parts: &[Vec<Range<usize>>], files: &[PathBuf]) -> Result<(), String> {
        let write = |runs, file: &PathBuf| self.write_table(runs, file).map_err(|e| format!("{}: {e}", file.display()));
        std::thread::scope(|s| {
            let helpers: Vec<_> = (parts.iter().zip(files).skip(1))
                .map(|(runs, file)| {
                    s.spawn(move || {
                        crate::sched::background_helper();
                        write(runs, file)
                    })
                })
                .collect();
            let first = write(&parts[0], &files[0]);
            let joined = helpers.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            joined.fold(first, Result::and)
        })
    }

    /// Writes the records in `runs` (where they lie in each run, in run
    /// order) as one table file at `file`: each key once, in key order,
    /// from the last run that has it (a delete as a tombstone), as the
    /// batch would leave them. The runs are merged through a heap.
    fn write_table(&self, runs: &[Range<usize>], file: &Path) -> Result<(), rocksdb::Error> {
        let mut opts = crate::state::state_cf_options()?;
        // Uncompressed: compaction compresses it later, off the checkpoint's
        // path (measured on 1M 16-byte keys: 89 ms to write, 113 with the
        // column family's LZ4).
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        // Without the column family's data-block hash index: building it
        // made a 1M-key checkpoint's table ~20-40 ms slower (BENCHMARKS.md,
        // "eleventh"); compaction rewrites the table with it. Its restart
        // points are the column family's (see `state_cf_options`).
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_restart_interval(crate::state::BLOCK_RESTART_INTERVAL);
        opts.set_block_based_table_factory(&table);
        let writer = SstFileWriter::create(&opts);
        writer.open(file)?;
        let mut writer = writer;
        let mut heads: BinaryHeap<Head<'_>> =
            runs.iter().enumerate().filter_map(|(run, r)| Head::first(run, &self.rep[r.clone()])).collect();
        let mut last: Option<&[u8]> = None;
        while let Some(mut head) = heads.peek_mut() {
            let (key, value) = head.record;
            // Equal keys come latest run first: that one wins.
            if last != Some(key) {
                match value {
                    Some(v) => writer.put(key, v)?,
                    None => writer.delete(key)?,
                }
                last = Some(key);
            }
            if !head.advance() {
                std::collections::binary_heap::PeekMut::pop(head);
            }
        }
        writer.finish()
    }
}

/// A run's next record in a merge, and the records after it.
struct Head<'a> {
    record: (&'a [u8], Option<&'a [u8]>),
    /// The record's key prefix (see [`prefix`]).
    prefix: u128,
    run: usize,
    rest: &'a [u8],
}

impl<'a> Head<'a> {
    fn first(run: usize, mut records: &'a [u8]) -> Option<Head<'a>> {
        let record = next_record(&mut records)?;
        Some(Head { record, prefix: prefix(record.0), run, rest: records })
    }

    /// Moves on to the run's next record; false at its end.
    fn advance(&mut self) -> bool {
        let Some(record) = next_record(&mut self.rest) else { return false };
        self.record = record;
        self.prefix = prefix(record.0);
        true
    }
}

/// The heap is a max-heap: the greatest head is the smallest key, and of
/// equal keys the latest run. Keys compare by prefix first (measured on 1M
/// 16-byte keys in 30 runs: the merge took 64 ms comparing slices).
impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.prefix.cmp(&self.prefix)).then_with(|| other.record.0.cmp(self.record.0)).then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head<'_> {}
