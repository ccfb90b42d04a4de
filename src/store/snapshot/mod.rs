//! The read-only reader of etcd snapshot and data files.
//!
//! # File layout
//!
//! An etcd snapshot (`etcdctl snapshot save`) and a data file (`member/snap/db`) are bbolt
//! databases. Integers are little-endian unless marked BE.
//!
//! ```text
//! file     = page 0 (meta) | page 1 (meta) | pages 2 .. hwm-1 (tree) | [unused tail] | [sha256]
//!            page N starts at N * page_size; etcd always uses 4096-byte pages
//! page     = header (16): id u64 | flags u16 | count u16 | overflow u32 | body
//!            flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist;
//!            a page with overflow k spans k + 1 consecutive pages (large values)
//! meta     = at offset 16 of pages 0 and 1 (64 bytes):
//!            magic u32 = 0xED0CDAED | version u32 = 2 | page_size u32 | flags u32 |
//!            root bucket {root pgid u64, sequence u64} | freelist pgid u64 |
//!            hwm pgid u64 (first page never allocated) | txid u64 |
//!            checksum u64 = FNV-1a-64 over the 56 bytes before it
//!            bbolt alternates writes between the two; the valid one with the higher txid wins.
//!            etcd writes no freelist (NoFreelistSync): freelist = 0xFFFFFFFFFFFFFFFF.
//! branch   = count elements of 16 bytes: pos u32 | ksize u32 | child pgid u64;
//!            the key is at element + pos
//! leaf     = count elements of 16 bytes: flags u32 (1 = bucket) | pos u32 | ksize u32 | vsize u32;
//!            the key is at element + pos, the value follows the key
//! bucket   = a leaf value: root pgid u64 | sequence u64, and when root = 0 (an inline bucket,
//!            at most page_size / 4 bytes) a leaf pseudo-page follows in the value itself
//! trailer  = `etcdctl snapshot save` appends sha256(everything before it); it is there exactly
//!            when len % 512 == 32 (etcd `snapshot/v3_snapshot.go`), as bbolt files are whole pages
//! ```
//!
//! etcd's buckets hang off the root bucket: `alarm auth authRoles authUsers cluster key lease
//! members members_removed meta`. The keyspace lives in `key`, one record per revision (see
//! `mvcc.rs` for the record format): the newest revision of a key is its value, and a tombstone
//! as the newest revision means the key is deleted. Older revisions stay until a compaction, and
//! pages bbolt no longer references keep whatever they held until `etcdctl defrag` rewrites the
//! file: [`Snapshot::history`] and [`Snapshot::free_pages`] expose both for audits.
//!
//! # Reading hostile files
//!
//! The file is untrusted. Every byte goes through [`crate::wire::Reader`]; every page id is
//! checked against the high-water mark; walks are iterative, visit each page at most once and
//! are bounded in depth; protobuf records are capped in field count. The whole tree is walked
//! and checked once by [`Snapshot::open`], which then keeps only an index of the live keys in
//! key order: 32 bytes a key (where its newest record is) and the key's bytes, never a value.
//! The `key` bucket is ordered by revision, not by key (see `mvcc.rs`), so reading the
//! keyspace in key order needs such an index: etcd itself keeps one in memory (its `kvindex`).
//!
//! The file is neither mapped nor read whole: the walk reads one page at a time (`pread`), and
//! a page of entries reads its records when it is asked for, so memory stays flat however large
//! the file is, and a process that truncates the file under atrest (ignoring the lock) makes a
//! read fail ([`SnapshotError::Changed`]) instead of killing atrest with SIGBUS.

mod bbolt;
mod keysort;
mod mvcc;
mod write;

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, TryLockError};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use sha2::{Digest, Sha256};
use thiserror::Error;

use self::bbolt::{Fault, LeafElem, MetaProblem, PageSet, Root, Source, Span, Tree, Walk};
use self::mvcc::{KeyValue, Rev};
use super::{Entry, Page, ReadStore, StoreError};

pub(crate) use self::write::write_snapshot_marked;
pub use self::write::{write_snapshot, WriteStats};

/// Entries per [`ReadStore::page`].
const PAGE_ENTRIES: usize = 1000;
/// Value bytes after which a page is closed early.
const PAGE_BYTES: usize = 8 << 20;
/// Size of the sha256 trailer.
const TRAILER: usize = 32;
/// Records of one page of entries closer than this in the file are read in one `pread`.
const READ_GAP: usize = 16 << 10;

/// Pages read ahead of the one a scan is at, each on a thread of its own: reading a page's
/// records (a `pread` each) costs more than classifying them. Four kept both cores busy at
/// 1,000,000 keys where two left gaps (1.17-1.25 s against 1.28-1.31 s).
const AHEAD_PAGES: usize = 4;
/// A free run is read in pieces of this many bytes (plus [`FREE_OVERLAP`]).
const FREE_PIECE: usize = 16 << 20;
/// How far a free run's piece reaches into the next one: further than any value etcd stores
/// (its requests are capped at 1.5 MiB), so that a value that starts in a piece is whole in it.
const FREE_OVERLAP: usize = 2 << 20;

/// A failure reading (or writing) a snapshot or data file. Every variant names the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be opened, read or written.
    #[error("cannot access {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file's size or modification time changed while it was read: a process that
    /// ignores the lock (a `cp` over it) is writing it.
    #[error("{}: the file changed while it was read", .path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A running etcd holds the data file's lock: its contents are changing.
    #[error(
        "{}: etcd is running on this data file; take a snapshot with `etcdctl snapshot save` instead",
        .path.display()
    )]
    Locked {
        /// The data file.
        path: PathBuf,
    },
    /// The sha256 trailer does not match the file's contents.
    #[error(
        "{}: the sha256 trailer does not match the contents: the snapshot is damaged or truncated",
        .path.display()
    )]
    HashMismatch {
        /// The snapshot.
        path: PathBuf,
    },
    /// The file is not a bbolt database, or not etcd's.
    #[error("{} is not an etcd snapshot or data file: {reason}", .path.display())]
    NotEtcd {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: &'static str,
    },
    /// A bbolt or etcd structure is truncated or inconsistent.
    #[error("{} is corrupt{}: {what}", .path.display(), page_note(*.page))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The page where the damage was found, when it is in a page.
        page: Option<u64>,
        /// The structure that is damaged.
        what: &'static str,
    },
    /// The file cannot be rewritten by [`write_snapshot`] (a layout etcd never writes, or a
    /// replacement value too large for bbolt).
    #[error("{} cannot be rewritten: {what}", .path.display())]
    Unsupported {
        /// The source file.
        path: PathBuf,
        /// What is not supported.
        what: &'static str,
    },
    /// A read asked for a revision other than the one the file holds.
    #[error(
        "{} holds revision {revision} only (revision {requested} was asked for)",
        .path.display()
    )]
    RevisionUnavailable {
        /// The file.
        path: PathBuf,
        /// The revision asked for.
        requested: i64,
        /// The file's revision.
        revision: i64,
    },
}

impl SnapshotError {
    /// What the user can do about it.
    pub fn advice(&self) -> &'static str {
        match self {
            SnapshotError::Io { .. } => {
                "check the path and permissions; pass a file written by `etcdctl snapshot save`, \
                 or the `member/snap/db` of a stopped etcd"
            }
            SnapshotError::Changed { .. } => {
                "wait for whatever writes the file to finish (or stop it), then run again; read a \
                 copy made with `etcdctl snapshot save`"
            }
            SnapshotError::Locked { .. } => {
                "run `etcdctl snapshot save FILE` against the running etcd and pass FILE"
            }
            SnapshotError::HashMismatch { .. } | SnapshotError::Corrupt { .. } => {
                "take a fresh snapshot with `etcdctl snapshot save`; a copied file may be \
                 incomplete"
            }
            SnapshotError::NotEtcd { .. } => {
                "pass a file written by `etcdctl snapshot save`, or the `member/snap/db` of a \
                 stopped etcd"
            }
            SnapshotError::Unsupported { .. } => {
                "rewrite live instead: restore the snapshot into an etcd (`etcdctl snapshot \
                 restore`), run `atrest rewrite` against it, and save a new snapshot"
            }
            SnapshotError::RevisionUnavailable { .. } => {
                "a snapshot holds one revision; read it without asking for another"
            }
        }
    }
}

fn page_note(page: Option<u64>) -> String {
    page.map(|p| format!(" at page {p}")).unwrap_or_default()
}

/// One bucket of the root bucket, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketInfo {
    /// The bucket's name (`key`, `meta`, `lease`, …).
    pub name: Vec<u8>,
    /// Plain keys directly in the bucket.
    pub entries: u64,
    /// Buckets nested in it (etcd nests none).
    pub nested_buckets: u64,
    /// Pages its tree occupies (overflow pages included; 0 for an inline bucket).
    pub pages: u64,
    /// Whether the bucket is stored inline in its parent's leaf.
    pub inline: bool,
}

/// A record of the `key` bucket in the index: where its `mvccpb.KeyValue` bytes are in the
/// file, where its key is in the index's key arena, and its place among the bucket's records
/// (which is revision order). The index holds one per live key, sorted by key.
#[derive(Debug, Clone, Copy)]
struct Latest {
    /// Where the record starts in the file.
    off: u64,
    /// Where the key starts in the key arena.
    key_at: u64,
    /// The record's length.
    len: u32,
    /// The key's length.
    key_len: u32,
    /// The record's place in the `key` bucket, counted from 0 in revision order.
    ordinal: u32,
}

impl Latest {
    fn record(&self) -> Span {
        Span {
            off: self.off as usize,
            len: self.len as usize,
        }
    }
}

/// The keys of an index, back to back.
#[derive(Debug, Default)]
struct Keys(Vec<u8>);

impl Keys {
    fn of(&self, l: &Latest) -> &[u8] {
        let at = l.key_at as usize;
        self.0.get(at..at + l.key_len as usize).unwrap_or_default()
    }
}

/// One region of unreferenced pages (see [`Snapshot::free_runs`]). `Debug` prints sizes only:
/// free pages can hold old plaintext values.
#[non_exhaustive]
pub struct FreeRun {
    /// The first page of the region.
    pub first: u64,
    /// The region's bytes, followed by up to 2 MiB of the next piece of the same run.
    pub bytes: Vec<u8>,
    /// How many of `bytes` are this piece's own: a value that starts in them is whole in
    /// `bytes`; the rest is the start of the next piece, where it is counted again.
    pub own: usize,
}

impl fmt::Debug for FreeRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreeRun")
            .field("first", &self.first)
            .field("bytes", &self.bytes.len())
            .field("own", &self.own)
            .finish()
    }
}

/// The file's size and modification time, taken when it was opened: a read that finds them
/// changed stops ([`SnapshotError::Changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// A set of record ordinals (bits).
#[derive(Debug, Clone, Default)]
struct Ordinals(Vec<u64>);

impl Ordinals {
    fn insert(&mut self, i: u32) {
        let word = (i / 64) as usize;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (i % 64);
    }

    fn contains(&self, i: u32) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// How many ordinals the set holds.
    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// An opened etcd snapshot or `member/snap/db` file, read-only.
///
/// [`Snapshot::open`] checks the whole file and builds an index of the latest keyspace;
/// [`ReadStore`] then serves it like a live etcd frozen at [`Snapshot::revision`].
pub struct Snapshot {
    path: PathBuf,
    /// The file (holding the shared lock while it is open) or the bytes.
    src: Arc<Source>,
    /// The next pages of entries, in order, each being read on a thread of its own.
    ahead: Mutex<VecDeque<Ahead>>,
    /// The file's size and time when it was opened (`None` for bytes in memory).
    stamp: Option<Stamp>,
    /// Length of the bbolt part (the trailer excluded).
    db_len: usize,
    has_hash: bool,
    page_size: usize,
    hwm: u64,
    txid: u64,
    root: u64,
    root_sequence: u64,
    key_root: Root,
    /// The live keys, sorted by key.
    index: Vec<Latest>,
    /// Their bytes.
    keys: Keys,
    /// The ordinals of the records in `index` (every other record is history or a tombstone).
    newest: Ordinals,
    records: u64,
    /// Records that are neither a key's newest nor a tombstone: older revisions.
    older: u64,
    revision: i64,
    compacted: Option<i64>,
    consistent_index: Option<u64>,
    reachable: PageSet,
    buckets: Vec<BucketInfo>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("bytes", &self.db_len)
            .field("has_hash", &self.has_hash)
            .field("revision", &self.revision)
            .field("keys", &self.index.len())
            .finish_non_exhaustive()
    }
}

/// What [`Snapshot::open`] computed from the bytes.
struct Parsed {
    db_len: usize,
    has_hash: bool,
    page_size: usize,
    hwm: u64,
    txid: u64,
    root: u64,
    root_sequence: u64,
    key_root: Root,
    index: Vec<Latest>,
    keys: Keys,
    newest: Ordinals,
    records: u64,
    older: u64,
    revision: i64,
    compacted: Option<i64>,
    consistent_index: Option<u64>,
    reachable: PageSet,
    buckets: Vec<BucketInfo>,
}

/// A failure found while parsing, before the path is attached.
#[derive(Debug)]
enum ParseError {
    HashMismatch,
    NotEtcd(&'static str),
    Corrupt(Fault),
}

impl From<Fault> for ParseError {
    fn from(f: Fault) -> Self {
        ParseError::Corrupt(f)
    }
}

impl Snapshot {
    /// Opens a snapshot (`etcdctl snapshot save`) or an etcd data file (`member/snap/db`).
    ///
    /// Never blocks: a data file locked by a running etcd is [`SnapshotError::Locked`]. A
    /// sha256 trailer, when present, must match ([`SnapshotError::HashMismatch`]). The whole
    /// bbolt tree is checked; the keyspace index is built from the `key` bucket.
    pub fn open(path: &Path) -> Result<Snapshot, SnapshotError> {
        let io_err = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(SnapshotError::NotEtcd {
                path: path.to_path_buf(),
                reason: "not a regular file",
            });
        }
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(SnapshotError::Locked {
                    path: path.to_path_buf(),
                })
            }
            // File systems without locks: nothing can be learnt, read on.
            Err(TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {}
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        if meta.len() == 0 {
            return Err(SnapshotError::NotEtcd {
                path: path.to_path_buf(),
                reason: "the file is empty",
            });
        }
        let stamp = Stamp::of(&meta);
        let len = usize::try_from(meta.len()).map_err(|_| SnapshotError::NotEtcd {
            path: path.to_path_buf(),
            reason: "the file is larger than this machine can address",
        })?;
        let src = Arc::new(Source::File(file));
        let parsed = parse(&src, len).map_err(|e| attach(path, e))?;
        let snap = Snapshot::assemble(path.to_path_buf(), src, Some(stamp), parsed);
        // A process that ignores the lock (a `cp` over the file) changes its size or time.
        snap.check_unchanged()?;
        Ok(snap)
    }

    /// Reads a snapshot held in memory (fuzzing, tests, a snapshot streamed from elsewhere).
    /// Errors and [`ReadStore::source`] name it `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Snapshot, SnapshotError> {
        let path = PathBuf::from("<memory>");
        if bytes.is_empty() {
            return Err(SnapshotError::NotEtcd {
                path,
                reason: "the file is empty",
            });
        }
        let len = bytes.len();
        let src = Arc::new(Source::Memory(bytes));
        let parsed = parse(&src, len).map_err(|e| attach(&path, e))?;
        Ok(Snapshot::assemble(path, src, None, parsed))
    }

    fn assemble(path: PathBuf, src: Arc<Source>, stamp: Option<Stamp>, p: Parsed) -> Snapshot {
        Snapshot {
            path,
            src,
            ahead: Mutex::new(VecDeque::new()),
            stamp,
            db_len: p.db_len,
            has_hash: p.has_hash,
            page_size: p.page_size,
            hwm: p.hwm,
            txid: p.txid,
            root: p.root,
            root_sequence: p.root_sequence,
            key_root: p.key_root,
            index: p.index,
            keys: p.keys,
            newest: p.newest,
            records: p.records,
            older: p.older,
            revision: p.revision,
            compacted: p.compacted,
            consistent_index: p.consistent_index,
            reachable: p.reachable,
            buckets: p.buckets,
        }
    }

    /// The file this snapshot was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file ended with a sha256 trailer (it did match: a mismatch fails
    /// [`Snapshot::open`]). `etcdctl snapshot save` writes one; a `member/snap/db` has none.
    pub fn has_hash(&self) -> bool {
        self.has_hash
    }

    /// The store revision: the highest main revision in the file, or the compaction revision
    /// when that is higher (etcd's own rule when it restores a data file).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last finished compaction (`meta/finishedCompactRev`), if any.
    pub fn compacted_revision(&self) -> Option<i64> {
        self.compacted
    }

    /// The raft index the data file has applied (`meta/consistent_index`), if recorded.
    pub fn consistent_index(&self) -> Option<u64> {
        self.consistent_index
    }

    /// The bbolt page size (4096 for every etcd file).
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The bbolt file's high-water mark: pages `0..hwm` are allocated.
    pub fn high_water_mark(&self) -> u64 {
        self.hwm
    }

    /// The bbolt transaction id of the meta page in use.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// How many keys exist at [`Snapshot::revision`].
    pub fn key_count(&self) -> usize {
        self.index.len()
    }

    /// How many records (revisions and tombstones) the `key` bucket holds.
    pub fn record_count(&self) -> u64 {
        self.records
    }

    /// The buckets of the root bucket, in name order.
    pub fn buckets(&self) -> &[BucketInfo] {
        &self.buckets
    }

    fn tree(&self) -> Tree<'_> {
        Tree {
            src: &self.src,
            db_len: self.db_len,
            page_size: self.page_size,
            hwm: self.hwm,
        }
    }

    fn corrupt(&self, f: Fault) -> SnapshotError {
        fault_error(&self.path, f)
    }

    /// Fails with [`SnapshotError::Changed`] when the file's size or time is not what it was
    /// when it was opened.
    pub(crate) fn check_unchanged(&self) -> Result<(), SnapshotError> {
        let (Some(stamp), Source::File(file)) = (self.stamp, &*self.src) else {
            return Ok(());
        };
        let now = file.metadata().map_err(|source| SnapshotError::Io {
            path: self.path.clone(),
            source,
        })?;
        if Stamp::of(&now) == stamp {
            Ok(())
        } else {
            Err(SnapshotError::Changed {
                path: self.path.clone(),
            })
        }
    }

    /// Builds an [`Entry`] from a `key` bucket record's bytes.
    fn entry(&self, bytes: &[u8]) -> Result<Entry, SnapshotError> {
        let kv = KeyValue::decode(bytes).map_err(|e| self.corrupt(Fault::wire(None, &e)))?;
        Ok(entry_from(&kv))
    }

    /// The key of an index entry.
    fn key_of(&self, latest: &Latest) -> &[u8] {
        self.keys.of(latest)
    }

    /// Reads one key at [`Snapshot::revision`] (`None`: it does not exist).
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>, SnapshotError> {
        let Ok(i) = self.index.binary_search_by(|l| self.key_of(l).cmp(key)) else {
            return Ok(None);
        };
        let record = self
            .tree()
            .read(self.index[i].record(), None)
            .map_err(|f| self.corrupt(f))?;
        self.check_unchanged()?;
        self.entry(&record).map(Some)
    }

    /// Where in the index the keys under `prefix` that sort after `after` (all of them
    /// without `after`) start and end.
    fn under(&self, prefix: &[u8], after: Option<&[u8]>) -> Range<usize> {
        let first = match after {
            Some(a) if a >= prefix => self.index.partition_point(|l| self.key_of(l) <= a),
            _ => self.index.partition_point(|l| self.key_of(l) < prefix),
        };
        let rest = self.index.get(first..).unwrap_or_default();
        // Keys under the prefix come first: every later key sorts after all of them.
        let len = rest.partition_point(|l| self.key_of(l).starts_with(prefix));
        first..first + len
    }

    /// Keys under `prefix`.
    fn count_prefix(&self, prefix: &[u8]) -> u64 {
        self.under(prefix, None).len() as u64
    }

    fn read_page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        revision: Option<i64>,
    ) -> Result<Page, SnapshotError> {
        if let Some(requested) = revision.filter(|r| *r != self.revision) {
            return Err(SnapshotError::RevisionUnavailable {
                path: self.path.clone(),
                requested,
                revision: self.revision,
            });
        }
        let under = self.under(prefix, after);
        let page = under.start..under.start + page_len(&self.index[under.clone()]);
        // The page read ahead for exactly this request, if any; pages queued for another
        // request are dropped (their threads find nobody to hand them to).
        let ahead = self.ahead.lock().ok().and_then(|mut queue| {
            let hit = queue
                .front()
                .is_some_and(|a| a.prefix == prefix && a.pages == page);
            if hit {
                queue.pop_front()
            } else {
                queue.clear();
                None
            }
        });
        let records = &self.index[page.clone()];
        let entries = match ahead.and_then(|a| a.rx.recv().ok()) {
            Some(read) => read,
            None => read_records(&self.tree(), records),
        }
        .map_err(|f| self.corrupt(f))?;
        let more = page.end < under.end;
        if more {
            self.read_ahead(prefix, page.end..under.end);
        }
        if !records.is_empty() {
            // Checked after the reads: whatever was read was read before any change.
            self.check_unchanged()?;
        }
        Ok(Page {
            entries,
            revision: self.revision,
            more,
        })
    }

    /// Keeps the next [`AHEAD_PAGES`] pages of `rest` (index positions, in key order) being
    /// read, each on a thread of its own, so that their reads overlap one another and the
    /// caller's work on the page it has.
    fn read_ahead(&self, prefix: &[u8], rest: Range<usize>) {
        let Ok(mut queue) = self.ahead.lock() else {
            return;
        };
        let mut next = queue.back().map_or(rest.start, |a| a.pages.end);
        while queue.len() < AHEAD_PAGES && next < rest.end {
            let page = next..next + page_len(&self.index[next..rest.end]);
            let records = self.index[page.clone()].to_vec();
            let (tx, rx) = mpsc::sync_channel(1);
            let src = Arc::clone(&self.src);
            let (db_len, page_size, hwm) = (self.db_len, self.page_size, self.hwm);
            let spawned = std::thread::Builder::new()
                .name("atrest-read-ahead".into())
                .spawn(move || {
                    let tree = Tree {
                        src: &src,
                        db_len,
                        page_size,
                        hwm,
                    };
                    // The reader may have stopped: then nobody waits for this page.
                    let _ = tx.send(read_records(&tree, &records));
                });
            if spawned.is_err() {
                return;
            }
            next = page.end;
            queue.push_back(Ahead {
                prefix: prefix.to_vec(),
                pages: page,
                rx,
            });
        }
    }

    /// Visits every older revision still stored for keys under `prefix`: revisions that are
    /// neither a key's newest one nor a tombstone, including those of keys deleted since, in
    /// revision order. Each comes as an [`Entry`] holding that revision's value. Returns how
    /// many were visited. A compaction removes them; a snapshot taken before it keeps them.
    pub fn history(
        &self,
        prefix: &[u8],
        mut visit: impl FnMut(Entry),
    ) -> Result<u64, SnapshotError> {
        if self.older == 0 {
            // Every record is a key's newest or a tombstone (as after a compaction): the walk
            // would find nothing.
            return Ok(0);
        }
        let mut visited = 0u64;
        self.for_each_record(|ordinal, rev, record| {
            // Only the records that are no key's newest are decoded (after a compaction: none).
            if rev.tombstone || self.newest.contains(ordinal) {
                return Ok(());
            }
            let kv = KeyValue::decode(record)?;
            if kv.key.starts_with(prefix) {
                visited += 1;
                visit(entry_from(&kv));
            }
            Ok(())
        })?;
        Ok(visited)
    }

    /// Walks every record of the `key` bucket in file order (revision order), with its ordinal,
    /// its revision and its `mvccpb.KeyValue` bytes (not yet decoded).
    fn for_each_record(
        &self,
        mut f: impl FnMut(u32, mvcc::RevKey, &[u8]) -> Result<(), crate::wire::WireError>,
    ) -> Result<(), SnapshotError> {
        let tree = self.tree();
        let mut seen = PageSet::new(self.hwm);
        let mut budget = element_budget(self.db_len);
        let mut walk = Walk::new(&tree, &mut seen, &mut budget);
        let mut ordinal = 0u32;
        walk.leaves(self.key_root, |e| {
            if e.is_bucket() {
                return Ok(());
            }
            let rev = mvcc::parse_rev_key(e.key).map_err(|err| Fault::wire(e.page, &err))?;
            f(ordinal, rev, e.value).map_err(|err| Fault::wire(e.page, &err))?;
            ordinal = ordinal.wrapping_add(1);
            Ok(())
        })
        .map_err(|f| self.corrupt(f))?;
        self.check_unchanged()
    }

    /// Every page-sized region of the file that the current tree does not reference: not a
    /// meta page, not reachable from the root (inline buckets and overflow runs included), not
    /// the freelist — including pages at or beyond the high-water mark. Yields `(page id,
    /// bytes)` in page order; the last region is shorter if the file does not end on a page
    /// boundary. bbolt leaves old data in such pages until `etcdctl defrag` rewrites the file.
    pub fn free_pages(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), SnapshotError>> + '_ {
        (2..self.page_total())
            .filter(|id| !self.reachable.contains(*id))
            .map(|id| Ok((id, self.region(id, 1)?)))
    }

    /// Like [`Snapshot::free_pages`], with adjacent free pages merged into one region, so that
    /// a value that spanned several pages (an overflow run) is found whole. A region longer
    /// than 16 MiB comes in pieces (see [`FreeRun::own`]), so that memory stays bounded.
    pub fn free_runs(&self) -> impl Iterator<Item = Result<FreeRun, SnapshotError>> + '_ {
        let total = self.page_total();
        let piece_pages = (FREE_PIECE / self.page_size) as u64;
        let overlap_pages = (FREE_OVERLAP / self.page_size) as u64;
        let mut id = 2u64;
        let mut run_end = 2u64;
        std::iter::from_fn(move || {
            if id >= run_end {
                // The next run.
                while id < total && self.reachable.contains(id) {
                    id += 1;
                }
                if id >= total {
                    return None;
                }
                run_end = id;
                while run_end < total && !self.reachable.contains(run_end) {
                    run_end += 1;
                }
            }
            let first = id;
            let own = piece_pages.min(run_end - first);
            let with_overlap = (own + overlap_pages).min(run_end - first);
            id = first + own;
            Some(self.region(first, with_overlap).map(|bytes| {
                FreeRun {
                    first,
                    own: bytes
                        .len()
                        .min((own as usize).saturating_mul(self.page_size)),
                    bytes,
                }
            }))
        })
    }

    /// Pages in the bbolt part of the file, a last partial page counted.
    fn page_total(&self) -> u64 {
        self.db_len.div_ceil(self.page_size) as u64
    }

    /// Reads `pages` pages from `first`, clipped to the bbolt part of the file.
    fn region(&self, first: u64, pages: u64) -> Result<Vec<u8>, SnapshotError> {
        let off = (first as usize).saturating_mul(self.page_size);
        let len = (pages as usize)
            .saturating_mul(self.page_size)
            .min(self.db_len.saturating_sub(off));
        self.tree()
            .read(Span { off, len }, Some(first))
            .map_err(|f| self.corrupt(f))
    }
}

impl ReadStore for Snapshot {
    fn offline(&self) -> Option<&dyn crate::store::offline::Offline> {
        Some(self)
    }

    fn source(&self) -> String {
        format!("snapshot {}", self.path.display())
    }

    fn count(&self, prefix: &[u8]) -> impl Future<Output = Result<u64, StoreError>> + Send {
        std::future::ready(Ok(self.count_prefix(prefix)))
    }

    /// Pages of up to 1000 entries (fewer past 8 MiB of records). A snapshot holds a single
    /// revision: asking for another is [`SnapshotError::RevisionUnavailable`].
    fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        revision: Option<i64>,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send {
        std::future::ready(
            self.read_page(prefix, after, revision)
                .map_err(StoreError::from),
        )
    }
}

/// How many of `records` (in key order) the next page takes: up to [`PAGE_ENTRIES`], closed
/// early past [`PAGE_BYTES`] of records.
fn page_len(records: &[Latest]) -> usize {
    let mut bytes = 0usize;
    let mut take = 0;
    for l in records.iter().take(PAGE_ENTRIES) {
        if bytes >= PAGE_BYTES {
            break;
        }
        bytes += l.len as usize;
        take += 1;
    }
    take
}

/// Reads and decodes `records`, in their order. In key order the records are scattered over
/// the file (the `key` bucket is in revision order): they are read in file order, records
/// closer than [`READ_GAP`] to one another in one read.
fn read_records(tree: &Tree<'_>, records: &[Latest]) -> Result<Vec<Entry>, Fault> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_unstable_by_key(|&i| records[i].off);
    let mut entries: Vec<Option<Entry>> = vec![None; records.len()];
    let mut buf = Vec::new();
    let mut at = 0;
    while at < order.len() {
        // One read: records while the next starts within READ_GAP of the read's end.
        let first = records[order[at]].record();
        let mut end = first.off + first.len;
        let mut last = at + 1;
        while let Some(&next) = order.get(last) {
            let span = records[next].record();
            if span.off > end + READ_GAP {
                break;
            }
            end = end.max(span.off + span.len);
            last += 1;
        }
        let run = Span {
            off: first.off,
            len: end - first.off,
        };
        tree.read_into(run, None, &mut buf)?;
        for &i in order.get(at..last).unwrap_or_default() {
            let span = records[i].record();
            let kv = bbolt::slice_at(&buf, span.off - run.off, span.len, "record")
                .and_then(KeyValue::decode)
                .map_err(|e| Fault::wire(None, &e))?;
            entries[i] = Some(entry_from(&kv));
        }
        at = last;
    }
    Ok(entries.into_iter().flatten().collect())
}

/// A page of entries read ahead: the index entries `pages` of a scan of `prefix`.
struct Ahead {
    prefix: Vec<u8>,
    pages: Range<usize>,
    rx: mpsc::Receiver<Result<Vec<Entry>, Fault>>,
}

fn entry_from(kv: &KeyValue<'_>) -> Entry {
    Entry {
        key: kv.key.to_vec(),
        value: kv.value.to_vec(),
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

/// Parses one `key` bucket element.
fn key_record<'p>(e: &LeafElem<'p>) -> Result<(mvcc::RevKey, KeyValue<'p>), Fault> {
    let rev = mvcc::parse_rev_key(e.key).map_err(|err| Fault::wire(e.page, &err))?;
    let kv = KeyValue::decode(e.value).map_err(|err| Fault::wire(e.page, &err))?;
    Ok((rev, kv))
}

/// A real file holds at most one 16-byte element header per 16 bytes.
fn element_budget(db_len: usize) -> u64 {
    (db_len / bbolt::ELEMENT) as u64 + 16
}

fn attach(path: &Path, e: ParseError) -> SnapshotError {
    match e {
        ParseError::HashMismatch => SnapshotError::HashMismatch {
            path: path.to_path_buf(),
        },
        ParseError::NotEtcd(reason) => SnapshotError::NotEtcd {
            path: path.to_path_buf(),
            reason,
        },
        ParseError::Corrupt(f) => fault_error(path, f),
    }
}

/// The error of a fault: a read that failed, or damaged contents. A file that ends before the
/// pages its meta page counts (checked when it was opened) was shortened since.
fn fault_error(path: &Path, f: Fault) -> SnapshotError {
    let path = path.to_path_buf();
    match f.io {
        Some(io::ErrorKind::UnexpectedEof) => SnapshotError::Changed { path },
        Some(kind) => SnapshotError::Io {
            path,
            source: io::Error::from(kind),
        },
        None => SnapshotError::Corrupt {
            path,
            page: f.page,
            what: f.what,
        },
    }
}

/// Checks the trailer and parses the tree ([`parse_tree`]) of the `len` bytes of `src`.
fn parse(src: &Source, len: usize) -> Result<Parsed, ParseError> {
    let has_hash = len % 512 == TRAILER && len > TRAILER;
    let db_len = if has_hash { len - TRAILER } else { len };
    let trailer = if has_hash {
        let mut t = [0u8; TRAILER];
        src.read_at(db_len, &mut t)
            .map_err(|e| ParseError::Corrupt(Fault::io(None, e.kind())))?;
        Some(t)
    } else {
        None
    };
    // The hash and the walk both read the whole file: the hash runs on a thread of its own
    // beside the walk. A mismatch still wins over whatever the walk found.
    let (hash_ok, parsed) = std::thread::scope(|scope| {
        let hash = trailer.map(|_| {
            std::thread::Builder::new()
                .name("atrest-sha256".into())
                .spawn_scoped(scope, || sha256_of(src, db_len))
        });
        let parsed = parse_tree(src, db_len, has_hash);
        let digest = match hash {
            None => None,
            Some(Ok(thread)) => Some(
                thread
                    .join()
                    .unwrap_or_else(|_| Err(io::ErrorKind::Other.into())),
            ),
            // No thread to be had: hash here.
            Some(Err(_)) => Some(sha256_of(src, db_len)),
        };
        let hash_ok = match (trailer, digest) {
            (None, _) => Ok(true),
            (Some(trailer), Some(Ok(digest))) => Ok(digest == trailer),
            (Some(_), Some(Err(e))) => Err(ParseError::Corrupt(Fault::io(None, e.kind()))),
            (Some(_), None) => Ok(false),
        };
        (hash_ok, parsed)
    });
    if !hash_ok? {
        return Err(ParseError::HashMismatch);
    }
    parsed
}

/// The sha256 of the first `len` bytes of `src`, read in 1 MiB pieces.
fn sha256_of(src: &Source, len: usize) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let piece = buf.get_mut(..(len - at).min(1 << 20)).unwrap_or_default();
        src.read_at(at, piece)?;
        hasher.update(&*piece);
        at += piece.len();
    }
    Ok(hasher.finalize().into())
}

/// Picks the meta page, walks the whole tree and indexes the keyspace of `db` (the file
/// without its trailer).
/// The page size of `meta`, once its high-water mark and the file's length agree with it.
fn check_extent(meta: &bbolt::Meta, db_len: usize) -> Result<usize, ParseError> {
    let page_size = meta.page_size as usize;
    let hwm_end = usize::try_from(meta.hwm)
        .ok()
        .and_then(|h| h.checked_mul(page_size));
    if meta.hwm < 3 || hwm_end.is_none_or(|end| end > db_len) {
        return Err(Fault::at(
            None,
            "the high-water mark is past the end of the file (truncated?)",
        )
        .into());
    }
    if !db_len.is_multiple_of(page_size) {
        return Err(Fault::at(
            None,
            "the file is not a whole number of pages (a truncated snapshot?)",
        )
        .into());
    }
    Ok(page_size)
}

/// The index of every record of the `key` bucket, reduced to the newest record of each live
/// key (a key whose last record is a tombstone is deleted), sorted by key; its keys; and those
/// records' ordinals.
fn newest_of_each_key(
    mut index: Vec<Latest>,
    mut keys: Keys,
    tombstones: &Ordinals,
) -> (Vec<Latest>, Keys, Ordinals) {
    keysort::sort_by_key(&mut index, |l| keys.of(l), |l| l.ordinal);
    // Keep the last record of each key, unless it is a tombstone (the key is deleted).
    let mut kept = 0;
    for i in 0..index.len() {
        let last_of_key = index
            .get(i + 1)
            .is_none_or(|next| keys.of(next).cmp(keys.of(&index[i])) != Ordering::Equal);
        if last_of_key && !tombstones.contains(index[i].ordinal) {
            index[kept] = index[i];
            kept += 1;
        }
    }
    index.truncate(kept);
    index.shrink_to_fit();
    compact(&mut index, &mut keys);
    let mut newest = Ordinals::default();
    for l in &index {
        newest.insert(l.ordinal);
    }
    (index, keys, newest)
}

/// Drops the keys no entry of `index` refers to from the arena, in place: the kept keys move
/// towards the start, in the order they were stored.
fn compact(index: &mut [Latest], keys: &mut Keys) {
    let used: usize = index.iter().map(|l| l.key_len as usize).sum();
    if used == keys.0.len() {
        return;
    }
    let mut by_place: Vec<u32> = (0..index.len() as u32).collect();
    by_place.sort_unstable_by_key(|&i| index[i as usize].key_at);
    let mut to = 0usize;
    for i in by_place {
        let l = &mut index[i as usize];
        let from = l.key_at as usize;
        let len = l.key_len as usize;
        // `to <= from`: each key moves towards the start, over keys already moved or dropped.
        keys.0.copy_within(from..from + len, to);
        l.key_at = to as u64;
        to += len;
    }
    keys.0.truncate(to);
    keys.0.shrink_to_fit();
}

/// The index entry of `key` bucket element `e`, whose record holds `key`, which is appended to
/// `keys`.
fn index_entry(
    e: &LeafElem<'_>,
    key: &[u8],
    ordinal: u32,
    keys: &mut Keys,
    db_len: usize,
) -> Result<Latest, Fault> {
    let too_large = Fault::at(e.page, "record too large to index");
    // The records of a real file never overlap, so its keys add up to less than the file:
    // elements that share their bytes (a hostile file) cannot make the arena larger.
    if keys.0.len().saturating_add(key.len()) > db_len {
        return Err(Fault::at(
            e.page,
            "records overlap: more key bytes than the file holds",
        ));
    }
    let entry = Latest {
        off: e.value_off as u64,
        key_at: keys.0.len() as u64,
        len: u32::try_from(e.value.len()).map_err(|_| too_large)?,
        key_len: u32::try_from(key.len()).map_err(|_| too_large)?,
        ordinal,
    };
    keys.0.extend_from_slice(key);
    Ok(entry)
}

/// The bytes of the root bucket's names so far, with `e`'s: at most the file's size (names
/// that share their bytes in a hostile file cannot be copied without bound).
pub(crate) fn bucket_names(so_far: usize, e: &LeafElem<'_>, db_len: usize) -> Result<usize, Fault> {
    Some(so_far.saturating_add(e.key.len()))
        .filter(|n| *n <= db_len)
        .ok_or(Fault::at(
            e.page,
            "bucket names overlap: more bytes than the file holds",
        ))
}

/// The largest page size is 64 KiB: both meta pages lie in the file's first 64 KiB + 80 bytes.
const META_HEAD: usize = 65536 + bbolt::PAGE_HEADER + bbolt::META_SIZE;

/// Reads one record of etcd's `meta` bucket: the compaction revision and the consistent index
/// (the others are not needed).
fn meta_entry(
    e: &LeafElem<'_>,
    compacted: &mut Option<i64>,
    consistent_index: &mut Option<u64>,
) -> Result<(), Fault> {
    if e.key == b"finishedCompactRev" {
        let rev = mvcc::parse_rev(e.value).map_err(|err| Fault::wire(e.page, &err))?;
        *compacted = Some(rev.main);
    } else if e.key == b"consistent_index" {
        let mut r = crate::wire::Reader::new(e.value);
        let ci = r
            .u64_be("meta/consistent_index")
            .and_then(|ci| r.finish("meta/consistent_index").map(|()| ci))
            .map_err(|err| Fault::wire(e.page, &err))?;
        *consistent_index = Some(ci);
    }
    Ok(())
}

/// Walks nested buckets (and theirs) for their pages only: etcd has none.
fn walk_nested(walk: &mut Walk<'_, '_>, mut nested: Vec<(Root, usize)>) -> Result<(), Fault> {
    while let Some((root, depth)) = nested.pop() {
        if depth > bbolt::MAX_NESTING {
            return Err(Fault::at(
                None,
                "buckets nested deeper than any real database",
            ));
        }
        walk.leaves(root, |e| {
            if e.is_bucket() {
                nested.push((bbolt::bucket(&e)?.0, depth + 1));
            }
            Ok::<(), Fault>(())
        })?;
    }
    Ok(())
}

/// Reads both meta pages (in the file's first 64 KiB + 80 bytes) and picks one.
fn read_meta(src: &Source, db_len: usize) -> Result<bbolt::Meta, ParseError> {
    let mut head = vec![0u8; db_len.min(META_HEAD)];
    src.read_at(0, &mut head)
        .map_err(|e| ParseError::Corrupt(Fault::io(None, e.kind())))?;
    select_meta(&head)
}

fn parse_tree(src: &Source, db_len: usize, has_hash: bool) -> Result<Parsed, ParseError> {
    let meta = read_meta(src, db_len)?;
    let page_size = check_extent(&meta, db_len)?;
    let tree = Tree {
        src,
        db_len,
        page_size,
        hwm: meta.hwm,
    };
    let mut seen = PageSet::new(meta.hwm);
    seen.insert_run(0, 1)?;
    let mut budget = element_budget(db_len);
    let mut walk = Walk::new(&tree, &mut seen, &mut budget);
    if meta.freelist != bbolt::NO_FREELIST {
        walk.visit_page(meta.freelist)?;
    }

    // The root bucket holds only buckets.
    let mut top: Vec<(Vec<u8>, Root)> = Vec::new();
    let mut names = 0usize;
    walk.leaves(Root::Page(meta.root), |e| {
        if !e.is_bucket() {
            return Err(Fault::at(e.page, "plain key in the root bucket"));
        }
        names = bucket_names(names, &e, db_len)?;
        top.push((e.key.to_vec(), bbolt::bucket(&e)?.0));
        Ok(())
    })?;

    // Every record of the `key` bucket, then sorted by key: the newest of each key is its
    // last one, since the bucket is in revision order.
    let mut index: Vec<Latest> = Vec::new();
    let mut keys = Keys::default();
    let mut tombstones = Ordinals::default();
    let mut last_rev: Option<Rev> = None;
    let mut records = 0u64;
    let mut max_main = 0i64;
    let mut compacted = None;
    let mut consistent_index = None;
    let mut key_root = None;
    let mut buckets = Vec::with_capacity(top.len());
    for (name, root) in top {
        let is_key = name == b"key";
        let is_meta = name == b"meta";
        if is_key {
            key_root = Some(root);
        }
        let mut info = BucketInfo {
            name: name.clone(),
            entries: 0,
            nested_buckets: 0,
            pages: 0,
            inline: matches!(root, Root::Inline { .. }),
        };
        let pages_before = walk.seen_count();
        let mut nested: Vec<(Root, usize)> = Vec::new();
        walk.leaves(root, |e| {
            if e.is_bucket() {
                info.nested_buckets += 1;
                nested.push((bbolt::bucket(&e)?.0, 2));
                return Ok::<(), Fault>(());
            }
            info.entries += 1;
            if is_key {
                let ordinal = u32::try_from(records)
                    .map_err(|_| Fault::at(e.page, "more records than a snapshot can index"))?;
                records += 1;
                let (rk, kv) = key_record(&e)?;
                // bbolt keeps a bucket's keys sorted and unique, and a revision key sorts as
                // its revision: anything else is a damaged page.
                if last_rev.is_some_and(|last| last >= rk.rev) {
                    return Err(Fault::at(e.page, "key bucket out of revision order"));
                }
                last_rev = Some(rk.rev);
                max_main = max_main.max(rk.rev.main);
                if rk.tombstone {
                    tombstones.insert(ordinal);
                }
                index.push(index_entry(&e, kv.key, ordinal, &mut keys, db_len)?);
            } else if is_meta {
                meta_entry(&e, &mut compacted, &mut consistent_index)?;
            }
            Ok(())
        })?;
        walk_nested(&mut walk, nested)?;
        info.pages = walk.seen_count() - pages_before;
        buckets.push(info);
    }
    let Some(key_root) = key_root else {
        return Err(ParseError::NotEtcd(
            "no `key` bucket: a bbolt database, but not etcd's",
        ));
    };
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    let (index, keys, newest) = newest_of_each_key(index, keys, &tombstones);
    // A key's newest record is never a tombstone (the key is deleted then).
    let older = records - tombstones.len() - index.len() as u64;
    // etcd starts counting at revision 1 and never goes below its compaction revision.
    let revision = max_main.max(compacted.unwrap_or(0)).max(1);
    Ok(Parsed {
        db_len,
        has_hash,
        page_size,
        hwm: meta.hwm,
        txid: meta.txid,
        root: meta.root,
        root_sequence: meta.sequence,
        key_root,
        index,
        keys,
        newest,
        records,
        older,
        revision,
        compacted,
        consistent_index,
        reachable: seen,
        buckets,
    })
}

/// Page sizes tried when meta page 0 is unreadable (4096 first: every etcd file).
const PAGE_SIZES: [u32; 8] = [4096, 512, 1024, 2048, 8192, 16384, 32768, 65536];

/// Validates both meta pages and returns the valid one with the higher txid.
fn select_meta(db: &[u8]) -> Result<bbolt::Meta, ParseError> {
    let m0 = bbolt::read_meta(db, 0, 0);
    let (m1, page_size) = match m0 {
        Ok(m) => (bbolt::read_meta(db, m.page_size as usize, 1), m.page_size),
        Err(_) => {
            // Page 0 is damaged: find page 1 at any plausible page size.
            let found = PAGE_SIZES.iter().find_map(|&ps| {
                bbolt::read_meta(db, ps as usize, 1)
                    .ok()
                    .filter(|m| m.page_size == ps)
                    .map(|m| (m, ps))
            });
            match found {
                Some((m, ps)) => (Ok(m), ps),
                None => (bbolt::read_meta(db, 4096, 1), 4096),
            }
        }
    };
    let m1 = m1.and_then(|m| {
        if m.page_size == page_size {
            Ok(m)
        } else {
            Err(MetaProblem::Header)
        }
    });
    match (m0, m1) {
        (Ok(a), Ok(b)) => Ok(if b.txid > a.txid { b } else { a }),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Ok(b)) => Ok(b),
        (Err(a), Err(b)) => Err(meta_failure(db, a, b)),
    }
}

fn meta_failure(db: &[u8], a: MetaProblem, b: MetaProblem) -> ParseError {
    use MetaProblem::*;
    match (a, b) {
        (Magic | Truncated, Magic | Truncated)
            if db.len() < bbolt::PAGE_HEADER + bbolt::META_SIZE =>
        {
            ParseError::NotEtcd("too short for a bbolt database")
        }
        (Magic, Magic) | (Magic, Truncated) => {
            ParseError::NotEtcd("no bbolt magic number in either meta page")
        }
        (Version, _) | (_, Version) => {
            ParseError::NotEtcd("a bbolt database of an unsupported format version")
        }
        (Truncated, _) | (_, Truncated) => ParseError::Corrupt(Fault::at(
            Some(1),
            "meta page 1 is truncated and meta page 0 is invalid",
        )),
        _ => ParseError::Corrupt(Fault::at(
            Some(0),
            "neither meta page is valid (checksum or header mismatch)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile file: one leaf of `n` elements spread over an overflow run, whose values
    /// all run to the end of the page, so that every record's key is nearly the whole page
    /// (the elements share their bytes). Meta pages 0 and 1, the root bucket on page 2, the
    /// `key` bucket's leaf from page 3.
    fn overlapping_records(n: usize, pad: usize) -> Vec<u8> {
        const PS: usize = 4096;
        let meta = |id: u64, hwm: u64, txid: u64| {
            bbolt::Meta {
                page_size: PS as u32,
                flags: 0,
                root: 2,
                sequence: 0,
                freelist: bbolt::NO_FREELIST,
                hwm,
                txid,
            }
            .to_page(id)
        };
        let data = 16 + 16 * n;
        let len = (data + n * 21 + pad).div_ceil(PS) * PS;
        let pages = len / PS;
        let mut leaf = vec![0u8; len];
        leaf[..16].copy_from_slice(
            &[
                &3u64.to_le_bytes()[..],
                &2u16.to_le_bytes(),
                &(n as u16).to_le_bytes(),
                &(pages as u32 - 1).to_le_bytes(),
            ]
            .concat(),
        );
        for i in 0..n {
            let at = data + i * 21;
            let value_len = len - (at + 17);
            let key_len = value_len - 4; // field 1 of the KeyValue: the rest of the page
            leaf[at..at + 8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            leaf[at + 8] = b'_';
            leaf[at + 9..at + 17].copy_from_slice(&0u64.to_be_bytes());
            leaf[at + 17..at + 21].copy_from_slice(&[
                0x0a,
                (key_len & 0x7f) as u8 | 0x80,
                ((key_len >> 7) & 0x7f) as u8 | 0x80,
                (key_len >> 14) as u8,
            ]);
            let head = 16 + 16 * i;
            for (k, v) in [0u32, (at - head) as u32, 17, value_len as u32]
                .iter()
                .enumerate()
            {
                leaf[head + 4 * k..head + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        let mut root = vec![0u8; PS];
        root[..16].copy_from_slice(
            &[
                &2u64.to_le_bytes()[..],
                &2u16.to_le_bytes(),
                &1u16.to_le_bytes(),
                &0u32.to_le_bytes(),
            ]
            .concat(),
        );
        for (k, v) in [1u32, 16, 3, 16].iter().enumerate() {
            root[16 + 4 * k..20 + 4 * k].copy_from_slice(&v.to_le_bytes());
        }
        root[32..35].copy_from_slice(b"key");
        root[35..43].copy_from_slice(&3u64.to_le_bytes());
        let hwm = 3 + pages as u64;
        let mut file = meta(0, hwm, 1);
        file.extend(meta(1, hwm, 0));
        file.extend(root);
        file.extend(leaf);
        file
    }

    #[test]
    fn records_that_share_their_bytes_cannot_grow_the_key_arena_past_the_file() {
        // 2,000 records of nearly 1 MiB keys each in a file of 1.1 MB: 2 GB of keys if they
        // were copied. The file is refused as corrupt before its keys outgrow it.
        let file = overlapping_records(2000, 1 << 20);
        assert!(file.len() < 1_200_000, "{}", file.len());
        let err = Snapshot::from_bytes(file).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Corrupt { .. })
                && err
                    .to_string()
                    .contains("more key bytes than the file holds"),
            "{err}"
        );
        // The same shape with short keys is a readable file: the generator makes real ones.
        let small = overlapping_records(1, 20_000);
        let snap = Snapshot::from_bytes(small).unwrap();
        assert_eq!(snap.key_count(), 1);
    }

    #[test]
    fn not_bbolt_inputs_are_not_etcd() {
        for bytes in [
            b"x".to_vec(),
            b"apiVersion: v1\nkind: Secret\n".repeat(20),
            vec![0u8; 8192],
        ] {
            let err = Snapshot::from_bytes(bytes).unwrap_err();
            assert!(matches!(err, SnapshotError::NotEtcd { .. }), "{err}");
        }
        assert!(matches!(
            Snapshot::from_bytes(Vec::new()),
            Err(SnapshotError::NotEtcd { .. })
        ));
    }

    #[test]
    fn errors_name_the_file_and_page() {
        let e = SnapshotError::Corrupt {
            path: PathBuf::from("/tmp/s.db"),
            page: Some(7),
            what: "leaf element",
        };
        assert_eq!(
            e.to_string(),
            "/tmp/s.db is corrupt at page 7: leaf element"
        );
        let e = SnapshotError::Locked {
            path: PathBuf::from("/d/member/snap/db"),
        };
        assert!(e.to_string().contains("etcdctl snapshot save"));
    }

    #[test]
    fn a_bad_trailer_is_a_hash_mismatch() {
        let mut bytes = vec![0u8; 4096];
        bytes.extend_from_slice(&[0u8; 32]);
        assert!(matches!(
            Snapshot::from_bytes(bytes),
            Err(SnapshotError::HashMismatch { .. })
        ));
    }
}
