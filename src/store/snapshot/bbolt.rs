//! bbolt's on-disk format, read side: meta pages, page headers, branch and leaf elements, bucket
//! headers, and an iterative, bounds-checked walk over a bucket's B+ tree.
//!
//! Sources: etcd-io/bbolt `page.go` (page header, elements), `db.go` (`meta`, `validate`,
//! `sum64`), `bucket.go` (bucket header, inline buckets), `node.go` (`read`, `write`). All
//! integers are little-endian. The layout is drawn in the [parent module](super).
//!
//! Pages are read from a [`Source`] one at a time, as a walk reaches them, and every byte of a
//! page is read through [`Reader`]. Every page id is checked against the high-water mark
//! before it is touched, every page is visited at most once per walk (a page reached twice is
//! corruption: it stops cycles and shared subtrees alike), branch descent is bounded by
//! [`MAX_DEPTH`], bucket nesting by [`MAX_NESTING`], and the total number of elements by the
//! number of 16-byte element headers the file can hold (overlapping inline pages cannot blow up
//! the walk).

use std::fs::File;
use std::io;

use crate::wire::{Reader, WireError};

/// Size of a page header: id u64, flags u16, count u16, overflow u32.
pub(crate) const PAGE_HEADER: usize = 16;
/// Size of a branch or leaf element header.
pub(crate) const ELEMENT: usize = 16;
/// Size of a bucket header: root page id u64, sequence u64.
pub(crate) const BUCKET_HEADER: usize = 16;
/// Size of the meta structure inside a meta page.
pub(crate) const META_SIZE: usize = 64;
/// The meta checksum covers the meta structure up to the checksum field.
const META_CHECKSUMMED: usize = 56;

/// bbolt's magic number.
pub(crate) const MAGIC: u32 = 0xED0C_DAED;
/// The only data format version bbolt has.
pub(crate) const VERSION: u32 = 2;

/// Page flag: branch page.
pub(crate) const BRANCH: u16 = 0x01;
/// Page flag: leaf page.
pub(crate) const LEAF: u16 = 0x02;
/// Page flag: meta page.
pub(crate) const META: u16 = 0x04;
/// Leaf element flag: the value is a bucket header.
pub(crate) const BUCKET_ELEMENT: u32 = 0x01;
/// The freelist page id when no freelist is written (etcd's `NoFreelistSync`).
pub(crate) const NO_FREELIST: u64 = u64::MAX;

/// A B+ tree deeper than this is corrupt (a real one of 2^64 keys is far shallower).
pub(crate) const MAX_DEPTH: usize = 64;
/// Buckets nested deeper than this are corrupt (etcd nests none).
pub(crate) const MAX_NESTING: usize = 32;

/// Where a structure failed: a page (when known) and what was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    /// The page being read.
    pub(crate) page: Option<u64>,
    /// The structure that failed.
    pub(crate) what: &'static str,
    /// Set when reading the file failed (rather than its contents being wrong).
    pub(crate) io: Option<io::ErrorKind>,
}

impl Fault {
    pub(crate) fn at(page: Option<u64>, what: &'static str) -> Fault {
        Fault {
            page,
            what,
            io: None,
        }
    }

    /// Reading the file failed.
    pub(crate) fn io(page: Option<u64>, kind: io::ErrorKind) -> Fault {
        Fault {
            page,
            what: "the file could not be read",
            io: Some(kind),
        }
    }

    pub(crate) fn wire(page: Option<u64>, e: &WireError) -> Fault {
        let what = match e {
            WireError::Truncated { what, .. }
            | WireError::Trailing { what, .. }
            | WireError::Invalid { what, .. } => what,
        };
        Fault::at(page, what)
    }
}

/// FNV-1a, 64 bit (Go's `hash/fnv.New64a`), bbolt's meta checksum.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The meta structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The page size every page of the file has.
    pub(crate) page_size: u32,
    /// Unused flags.
    pub(crate) flags: u32,
    /// The root bucket's root page.
    pub(crate) root: u64,
    /// The root bucket's sequence.
    pub(crate) sequence: u64,
    /// The freelist page, or [`NO_FREELIST`].
    pub(crate) freelist: u64,
    /// The high-water mark: the first page id never allocated.
    pub(crate) hwm: u64,
    /// The id of the transaction that wrote this meta.
    pub(crate) txid: u64,
}

impl Meta {
    /// Writes this meta as page `id` (0 or 1) of `page_size` bytes, checksum included.
    pub(crate) fn to_page(self, id: u64) -> Vec<u8> {
        let mut page = Vec::with_capacity(self.page_size as usize);
        page.extend_from_slice(&id.to_le_bytes());
        page.extend_from_slice(&META.to_le_bytes());
        page.extend_from_slice(&0u16.to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes());
        let start = page.len();
        page.extend_from_slice(&MAGIC.to_le_bytes());
        page.extend_from_slice(&VERSION.to_le_bytes());
        page.extend_from_slice(&self.page_size.to_le_bytes());
        page.extend_from_slice(&self.flags.to_le_bytes());
        page.extend_from_slice(&self.root.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&self.freelist.to_le_bytes());
        page.extend_from_slice(&self.hwm.to_le_bytes());
        page.extend_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(page.get(start..).unwrap_or_default());
        page.extend_from_slice(&sum.to_le_bytes());
        page.resize(self.page_size as usize, 0);
        page
    }
}

/// Why a meta page was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaProblem {
    /// The page is too short to hold a meta.
    Truncated,
    /// No bbolt magic number: not a bbolt file at all (or a destroyed page).
    Magic,
    /// The right magic but another format version.
    Version,
    /// The checksum does not match (a torn or damaged write).
    Checksum,
    /// The header is not a meta page's, or the page size is impossible.
    Header,
}

/// Reads the meta page that starts at `offset`; `id` is the page id its header must carry.
pub(crate) fn read_meta(file: &[u8], offset: usize, id: u64) -> Result<Meta, MetaProblem> {
    let mut r = Reader::new(file);
    r.take(offset, "meta page")
        .map_err(|_| MetaProblem::Truncated)?;
    let header = r
        .take(PAGE_HEADER, "meta page header")
        .map_err(|_| MetaProblem::Truncated)?;
    let body = r
        .take(META_SIZE, "meta")
        .map_err(|_| MetaProblem::Truncated)?;
    let mut b = Reader::new(body);
    let (magic, version, page_size, flags, root, sequence, freelist, hwm, txid, checksum) =
        (|| {
            Ok::<_, WireError>((
                b.u32_le("magic")?,
                b.u32_le("version")?,
                b.u32_le("page size")?,
                b.u32_le("flags")?,
                b.u64_le("root")?,
                b.u64_le("sequence")?,
                b.u64_le("freelist")?,
                b.u64_le("high-water mark")?,
                b.u64_le("txid")?,
                b.u64_le("checksum")?,
            ))
        })()
        .map_err(|_| MetaProblem::Truncated)?;
    if magic != MAGIC {
        return Err(MetaProblem::Magic);
    }
    if version != VERSION {
        return Err(MetaProblem::Version);
    }
    let covered = Reader::new(body)
        .take(META_CHECKSUMMED, "meta")
        .map_err(|_| MetaProblem::Truncated)?;
    if fnv1a64(covered) != checksum {
        return Err(MetaProblem::Checksum);
    }
    let mut h = Reader::new(header);
    let hdr_id = h.u64_le("page id").map_err(|_| MetaProblem::Truncated)?;
    let hdr_flags = h.u16_le("page flags").map_err(|_| MetaProblem::Truncated)?;
    if hdr_id != id || hdr_flags != META || !valid_page_size(page_size) {
        return Err(MetaProblem::Header);
    }
    Ok(Meta {
        page_size,
        flags,
        root,
        sequence,
        freelist,
        hwm,
        txid,
    })
}

/// bbolt accepts any page size the OS could have; etcd files always have 4096. We accept powers
/// of two from 512 to 64 KiB.
pub(crate) fn valid_page_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=65536).contains(&size)
}

/// A validated byte range of the file: `off..off + len` is inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) off: usize,
    pub(crate) len: usize,
}

/// Where a bbolt file's bytes come from: the file itself, read at an offset when a page or a
/// record is needed (never mapped, never read whole), or bytes already in memory.
pub(crate) enum Source {
    /// An open file (it also holds the shared lock).
    File(File),
    /// Bytes in memory (fuzzing, tests).
    Memory(Vec<u8>),
}

impl Source {
    /// Fills `buf` from offset `off`. A file that ends before `off + buf.len()` is
    /// [`io::ErrorKind::UnexpectedEof`].
    pub(crate) fn read_at(&self, off: usize, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::File(file) => std::os::unix::fs::FileExt::read_exact_at(file, buf, off as u64),
            Source::Memory(bytes) => {
                let from = off
                    .checked_add(buf.len())
                    .and_then(|end| bytes.get(off..end))
                    .ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(from);
                Ok(())
            }
        }
    }

    /// Reads the bytes of `span` into `buf`, which is reused from read to read.
    pub(crate) fn read_span_into(&self, span: Span, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(span.len, 0);
        self.read_at(span.off, buf)
    }
}

/// A page (or an inline bucket's pseudo-page), read, ready to have its elements read.
pub(crate) struct PageView {
    /// The page id, `None` for an inline page.
    pub(crate) id: Option<u64>,
    /// Page flags ([`BRANCH`], [`LEAF`], …).
    pub(crate) flags: u16,
    /// Number of elements.
    pub(crate) count: u16,
    /// Where `bytes` start in the file.
    pub(crate) off: usize,
    /// The whole page, overflow run included (or the inline page's bytes).
    pub(crate) bytes: Vec<u8>,
}

/// One leaf element: a key and either a value or a bucket header, borrowed from the page read.
/// `Debug` prints sizes only: the value can be a Secret.
#[derive(Clone, Copy)]
pub(crate) struct LeafElem<'p> {
    /// The page the element lives on (the enclosing real page for inline buckets).
    pub(crate) page: Option<u64>,
    /// Element flags ([`BUCKET_ELEMENT`]).
    pub(crate) flags: u32,
    pub(crate) key: &'p [u8],
    pub(crate) value: &'p [u8],
    /// Where `value` starts in the file.
    pub(crate) value_off: usize,
}

impl std::fmt::Debug for LeafElem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafElem")
            .field("page", &self.page)
            .field("flags", &self.flags)
            .field("key_len", &self.key.len())
            .field("value_len", &self.value.len())
            .field("value_off", &self.value_off)
            .finish()
    }
}

impl LeafElem<'_> {
    /// Whether the value is a bucket header.
    pub(crate) fn is_bucket(&self) -> bool {
        self.flags & BUCKET_ELEMENT != 0
    }
}

/// Where a bucket's tree starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// A page of the file.
    Page(u64),
    /// An inline bucket: a pseudo-page stored in the parent's value after the bucket header.
    /// `page` is the real page that holds it (for error messages).
    Inline { span: Span, page: Option<u64> },
}

/// The set of pages a walk has visited.
#[derive(Debug, Clone)]
pub(crate) struct PageSet {
    bits: Vec<u64>,
    len: u64,
    count: u64,
}

impl PageSet {
    pub(crate) fn new(pages: u64) -> PageSet {
        let words = usize::try_from(pages.div_ceil(64)).unwrap_or(usize::MAX);
        PageSet {
            bits: vec![0; words],
            len: pages,
            count: 0,
        }
    }

    /// How many pages are in the set.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Whether page `id` is in the set.
    pub(crate) fn contains(&self, id: u64) -> bool {
        let word = usize::try_from(id / 64).ok().and_then(|w| self.bits.get(w));
        word.is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Adds pages `first..=last`; fails if one was already there or is out of range.
    pub(crate) fn insert_run(&mut self, first: u64, last: u64) -> Result<(), Fault> {
        for id in first..=last {
            if id >= self.len {
                return Err(Fault::at(Some(first), "page run past the high-water mark"));
            }
            let word = usize::try_from(id / 64)
                .ok()
                .and_then(|w| self.bits.get_mut(w))
                .ok_or(Fault::at(Some(first), "page run past the high-water mark"))?;
            let bit = 1 << (id % 64);
            if *word & bit != 0 {
                return Err(Fault::at(
                    Some(id),
                    "page referenced twice (cycle or shared page)",
                ));
            }
            *word |= bit;
            self.count += 1;
        }
        Ok(())
    }
}

/// A read-only view of a bbolt file's pages. `Debug` prints sizes only: the file holds every
/// value of the database.
#[derive(Clone, Copy)]
pub(crate) struct Tree<'a> {
    pub(crate) src: &'a Source,
    /// Length of the database (without a snapshot's sha256 trailer).
    pub(crate) db_len: usize,
    pub(crate) page_size: usize,
    /// The high-water mark from the meta page; `hwm * page_size <= db_len`.
    pub(crate) hwm: u64,
}

impl std::fmt::Debug for Tree<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("db_len", &self.db_len)
            .field("page_size", &self.page_size)
            .field("hwm", &self.hwm)
            .finish()
    }
}

/// Reads `len` bytes at `off` of `bytes`.
pub(crate) fn slice_at<'b>(
    bytes: &'b [u8],
    off: usize,
    len: usize,
    what: &'static str,
) -> Result<&'b [u8], WireError> {
    let mut r = Reader::new(bytes);
    r.take(off, what)?;
    r.take(len, what)
}

impl Tree<'_> {
    /// Reads `span` of the database, which must lie before its end.
    pub(crate) fn read(&self, span: Span, page: Option<u64>) -> Result<Vec<u8>, Fault> {
        let mut buf = Vec::new();
        self.read_into(span, page, &mut buf)?;
        Ok(buf)
    }

    /// Reads `span` of the database, which must lie before its end, into `buf` (reused from
    /// read to read).
    pub(crate) fn read_into(
        &self,
        span: Span,
        page: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(), Fault> {
        if span
            .off
            .checked_add(span.len)
            .is_none_or(|end| end > self.db_len)
        {
            return Err(Fault::at(page, "read past the end of the database"));
        }
        self.src
            .read_span_into(span, buf)
            .map_err(|e| Fault::io(page, e.kind()))
    }

    /// Reads page `id`, checking that the page and its overflow run lie in `[2, hwm)` and that
    /// the header names the page.
    pub(crate) fn page(&self, id: u64) -> Result<PageView, Fault> {
        let here = Some(id);
        if id < 2 || id >= self.hwm {
            return Err(Fault::at(here, "page id outside the file's pages"));
        }
        let off = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or(Fault::at(here, "page id outside the file's pages"))?;
        let bytes = self.read(
            Span {
                off,
                len: self.page_size,
            },
            here,
        )?;
        self.page_from(id, bytes)
    }

    /// Reads page `id` whose first `page_size` bytes are `bytes` (see [`Tree::page`]).
    fn page_from(&self, id: u64, mut bytes: Vec<u8>) -> Result<PageView, Fault> {
        let here = Some(id);
        let off = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or(Fault::at(here, "page id outside the file's pages"))?;
        let mut r = Reader::new(&bytes);
        let (hdr_id, flags, count, overflow) = (|| {
            Ok::<_, WireError>((
                r.u64_le("page header")?,
                r.u16_le("page header")?,
                r.u16_le("page header")?,
                r.u32_le("page header")?,
            ))
        })()
        .map_err(|e| Fault::wire(here, &e))?;
        if hdr_id != id {
            return Err(Fault::at(here, "page header carries another page's id"));
        }
        let pages = u64::from(overflow) + 1;
        if id + pages > self.hwm {
            return Err(Fault::at(here, "overflow run past the high-water mark"));
        }
        if overflow > 0 {
            let len = usize::try_from(pages)
                .ok()
                .and_then(|p| p.checked_mul(self.page_size))
                .ok_or(Fault::at(here, "overflow run past the high-water mark"))?;
            bytes.resize(len, 0);
            let rest = bytes.get_mut(self.page_size..).unwrap_or_default();
            self.src
                .read_at(off + self.page_size, rest)
                .map_err(|e| Fault::io(here, e.kind()))?;
        }
        Ok(PageView {
            id: here,
            flags,
            count,
            off,
            bytes,
        })
    }

    /// Reads the pseudo-page of an inline bucket.
    fn inline_page(&self, span: Span, page: Option<u64>) -> Result<PageView, Fault> {
        let bytes = self.read(span, page)?;
        let mut r = Reader::new(&bytes);
        let (_, flags, count) = (|| {
            Ok::<_, WireError>((
                r.u64_le("inline bucket page header")?,
                r.u16_le("inline bucket page header")?,
                r.u16_le("inline bucket page header")?,
            ))
        })()
        .map_err(|e| Fault::wire(page, &e))?;
        if flags != LEAF {
            return Err(Fault::at(page, "inline bucket is not a leaf page"));
        }
        Ok(PageView {
            id: None,
            flags,
            count,
            off: span.off,
            bytes,
        })
    }
}

impl PageView {
    /// Reads leaf element `i`.
    pub(crate) fn leaf_elem(&self, i: u16, page: Option<u64>) -> Result<LeafElem<'_>, Fault> {
        let rel = PAGE_HEADER + usize::from(i) * ELEMENT;
        let header = slice_at(&self.bytes, rel, ELEMENT, "leaf element")
            .map_err(|e| Fault::wire(page, &e))?;
        let mut r = Reader::new(header);
        let (flags, pos, ksize, vsize) = (|| {
            Ok::<_, WireError>((
                r.u32_le("leaf element")?,
                r.u32_le("leaf element")?,
                r.u32_le("leaf element")?,
                r.u32_le("leaf element")?,
            ))
        })()
        .map_err(|e| Fault::wire(page, &e))?;
        let too_far = Fault::at(page, "leaf element points past its page");
        let key_rel = rel.checked_add(pos as usize).ok_or(too_far)?;
        let key = slice_at(&self.bytes, key_rel, ksize as usize, "leaf element key")
            .map_err(|e| Fault::wire(page, &e))?;
        let value_rel = key_rel.checked_add(ksize as usize).ok_or(too_far)?;
        let value = slice_at(&self.bytes, value_rel, vsize as usize, "leaf element value")
            .map_err(|e| Fault::wire(page, &e))?;
        Ok(LeafElem {
            page,
            flags,
            key,
            value,
            value_off: self.off + value_rel,
        })
    }

    /// Reads branch element `i`: its key and child page id.
    pub(crate) fn branch_elem(&self, i: u16) -> Result<(&[u8], u64), Fault> {
        let page = self.id;
        let rel = PAGE_HEADER + usize::from(i) * ELEMENT;
        let header = slice_at(&self.bytes, rel, ELEMENT, "branch element")
            .map_err(|e| Fault::wire(page, &e))?;
        let mut r = Reader::new(header);
        let (pos, ksize, child) = (|| {
            Ok::<_, WireError>((
                r.u32_le("branch element")?,
                r.u32_le("branch element")?,
                r.u64_le("branch element")?,
            ))
        })()
        .map_err(|e| Fault::wire(page, &e))?;
        let key_rel = rel
            .checked_add(pos as usize)
            .ok_or(Fault::at(page, "branch element points past its page"))?;
        let key = slice_at(&self.bytes, key_rel, ksize as usize, "branch element key")
            .map_err(|e| Fault::wire(page, &e))?;
        Ok((key, child))
    }
}

/// Parses a bucket header value into the bucket's root and sequence.
pub(crate) fn bucket(elem: &LeafElem<'_>) -> Result<(Root, u64), Fault> {
    let mut r = Reader::new(elem.value);
    let (root, sequence) =
        (|| Ok::<_, WireError>((r.u64_le("bucket header")?, r.u64_le("bucket header")?)))()
            .map_err(|e| Fault::wire(elem.page, &e))?;
    if root != 0 {
        return Ok((Root::Page(root), sequence));
    }
    let span = Span {
        off: elem.value_off + BUCKET_HEADER,
        len: elem.value.len() - BUCKET_HEADER,
    };
    Ok((
        Root::Inline {
            span,
            page: elem.page,
        },
        sequence,
    ))
}

/// A walk over one bucket's tree: visits its leaf elements in order (sub-buckets are handed to
/// the visitor as elements; it decides whether to descend). Shares `seen` and `budget` with the
/// other walks over the same file so that no page and no more elements than the file can hold
/// are ever visited. Each page is read once, when the walk reaches it; at most one page per
/// level of the tree is held.
pub(crate) struct Walk<'t, 'a> {
    tree: &'t Tree<'a>,
    seen: &'t mut PageSet,
    /// Elements left before the walk is declared corrupt.
    budget: &'t mut u64,
    /// Pages read ahead of the walk, when it goes through the file in page order.
    window: Window,
}

/// Pages `first..` read in one go: a walk that reads page `n + 1` right after page `n` (a
/// defragmented file, or a snapshot of one, is laid out that way) reads the next pages at once
/// instead of one at a time: 8, then twice as many each time the walk runs past the window
/// in order, up to [`WINDOW_PAGES`]. A walk that jumps starts again at 8, so a file whose
/// pages alternate (a hostile one) costs at most four times its pages in reads.
#[derive(Default)]
struct Window {
    first: u64,
    bytes: Vec<u8>,
    /// The page read last.
    last: Option<u64>,
    /// Pages the next window reads.
    next_len: u64,
}

impl Window {
    /// The first `page_size` bytes of page `id`, if the window holds them.
    fn page(&self, id: u64, page_size: usize) -> Option<&[u8]> {
        let at = usize::try_from(id.checked_sub(self.first)?)
            .ok()?
            .checked_mul(page_size)?;
        self.bytes.get(at..at.checked_add(page_size)?)
    }
}

/// Pages a [`Window`] reads at once (1 MiB of 4 KiB pages).
const WINDOW_PAGES: u64 = 256;

impl<'t, 'a> Walk<'t, 'a> {
    /// A walk over `tree` that shares `seen` and `budget` with the file's other walks.
    pub(crate) fn new(tree: &'t Tree<'a>, seen: &'t mut PageSet, budget: &'t mut u64) -> Self {
        Walk {
            tree,
            seen,
            budget,
            window: Window::default(),
        }
    }

    /// Reads page `id`, from the window when it holds it.
    fn read_page(&mut self, id: u64) -> Result<PageView, Fault> {
        let ps = self.tree.page_size;
        let sequential = self
            .window
            .last
            .is_some_and(|last| last.checked_add(1) == Some(id));
        self.window.last = Some(id);
        if !sequential {
            self.window.next_len = 8;
        }
        if self.window.page(id, ps).is_none() && sequential && id >= 2 && id < self.tree.hwm {
            let pages = self
                .window
                .next_len
                .clamp(1, WINDOW_PAGES)
                .min(self.tree.hwm - id);
            self.window.next_len = (self.window.next_len * 2).min(WINDOW_PAGES);
            let span = Span {
                off: (id as usize).saturating_mul(ps),
                len: (pages as usize).saturating_mul(ps),
            };
            // Into the last window's buffer: a fresh one costs a page fault per page.
            self.window.first = id;
            if let Err(e) = self.tree.read_into(span, Some(id), &mut self.window.bytes) {
                self.window.bytes.clear();
                return Err(e);
            }
        }
        match self.window.page(id, ps) {
            Some(first) => self.tree.page_from(id, first.to_vec()),
            None => self.tree.page(id),
        }
    }

    /// Pages visited so far by every walk sharing this set.
    pub(crate) fn seen_count(&self) -> u64 {
        self.seen.count()
    }

    /// Marks page `id` and its overflow run as visited, then reads it.
    pub(crate) fn visit_page(&mut self, id: u64) -> Result<PageView, Fault> {
        if id < 2 || id >= self.tree.hwm {
            return Err(Fault::at(Some(id), "page id outside the file's pages"));
        }
        let p = self.read_page(id)?;
        let pages = (p.bytes.len() / self.tree.page_size) as u64;
        self.seen.insert_run(id, id + pages - 1)?;
        Ok(p)
    }

    /// Visits every leaf element under `root`, in page order.
    pub(crate) fn leaves<E: From<Fault>>(
        &mut self,
        root: Root,
        mut visit: impl FnMut(LeafElem<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let (first, owner) = match root {
            Root::Page(id) => (self.visit_page(id)?, None),
            Root::Inline { span, page } => (self.tree.inline_page(span, page)?, page),
        };
        let mut stack: Vec<(PageView, u16)> = vec![(first, 0)];
        while let Some((page, next)) = stack.last_mut() {
            if *next >= page.count {
                stack.pop();
                continue;
            }
            let i = *next;
            *next += 1;
            let p = &*page;
            *self.budget = self.budget.checked_sub(1).ok_or(Fault::at(
                p.id.or(owner),
                "more elements than the file can hold",
            ))?;
            match p.flags {
                LEAF => visit(p.leaf_elem(i, p.id.or(owner))?)?,
                BRANCH => {
                    let (_, child) = p.branch_elem(i)?;
                    let id = p.id;
                    if stack.len() >= MAX_DEPTH {
                        return Err(Fault::at(id, "tree deeper than any real database").into());
                    }
                    let c = self.visit_page(child)?;
                    stack.push((c, 0));
                }
                _ => {
                    return Err(Fault::at(p.id, "page in a tree is neither branch nor leaf").into())
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_12_tree_debug_prints_sizes_not_bytes() {
        let file = Source::Memory(b"SECRET-PATTERN-0123456789".repeat(4));
        let tree = Tree {
            src: &file,
            db_len: 100,
            page_size: 4096,
            hwm: 0,
        };
        let shown = format!("{tree:?}");
        assert_eq!(shown, "Tree { db_len: 100, page_size: 4096, hwm: 0 }");
        assert!(!shown.contains("83, 69, 67"));
    }

    #[test]
    fn fnv_matches_go() {
        // Go: fnv.New64a() over "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            page_size: 4096,
            flags: 0,
            root: 3,
            sequence: 0,
            freelist: NO_FREELIST,
            hwm: 9,
            txid: 17,
        };
        let mut file = m.to_page(0);
        file.extend(m.to_page(1));
        assert_eq!(read_meta(&file, 0, 0), Ok(m));
        assert_eq!(read_meta(&file, 4096, 1), Ok(m));
        assert_eq!(read_meta(&file, 4096, 0), Err(MetaProblem::Header));
        file[16 + 40] ^= 1; // freelist byte: checksum breaks
        assert_eq!(read_meta(&file, 0, 0), Err(MetaProblem::Checksum));
        file[16] ^= 1;
        assert_eq!(read_meta(&file, 0, 0), Err(MetaProblem::Magic));
        assert_eq!(read_meta(&file[..50], 0, 0), Err(MetaProblem::Truncated));
    }

    #[test]
    fn page_sets_refuse_repeats() {
        let mut s = PageSet::new(10);
        s.insert_run(2, 4).unwrap();
        assert!(s.contains(3));
        assert!(!s.contains(5));
        assert!(s.insert_run(4, 5).is_err());
        assert!(s.insert_run(9, 10).is_err());
        assert!(!s.contains(1000));
    }
}
