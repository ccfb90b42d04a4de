//! The offline writer: a fresh, compact bbolt file made from a [`Snapshot`], with chosen values
//! of the `key` bucket replaced — the embedded way to re-encrypt a snapshot without an etcd.
//!
//! # What it writes
//!
//! ```text
//! page 0, 1   meta (same layout as read), root = the root bucket's page, freelist = 0xFFFF…
//!             (etcd's NoFreelistSync: bbolt rebuilds the freelist by walking the tree),
//!             hwm = pages written, txid = the source's (page 1 one lower, as bbolt's
//!             `Tx.WriteTo` does), FNV-1a checksums
//! pages 2..   for each bucket of the root bucket, in key order: its leaf pages in key order,
//!             then its branch levels bottom-up (each branch key = its child's first key);
//!             a bucket of one leaf of at most page_size / 4 bytes is written inline in its
//!             parent's value instead, exactly when bbolt would inline it; then the root
//!             bucket's own pages
//! trailer     sha256 of everything before it, as `etcdctl snapshot save` appends
//! ```
//!
//! Pages are filled up to the page size (an element larger than a page gets an overflow run of
//! its own), so the file has no free pages: nothing of the source's free pages, old page
//! versions or slack is carried over. Every key and value is copied byte for byte, except the
//! `key` bucket records whose value `replace` changes: those are re-serialised with
//! [`KeyValue::with_value`], every other field byte-identical. The output is written to a
//! temporary file beside `out` (created exclusively, mode 0600: it holds Secrets), synced, and
//! moved into place (see [`crate::secret::file`]).

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::bbolt::{
    self, Fault, Meta, PageSet, Root, Walk, BRANCH, BUCKET_ELEMENT, ELEMENT, LEAF, NO_FREELIST,
    PAGE_HEADER,
};
use super::mvcc::{parse_rev_key, KeyValue};
use super::{element_budget, entry_from, Snapshot, SnapshotError};
use crate::store::Entry;

/// What [`write_snapshot`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WriteStats {
    /// Records of the `key` bucket copied (revisions and tombstones).
    pub records: u64,
    /// Records whose value `replace` changed.
    pub replaced: u64,
    /// Buckets of the root bucket copied.
    pub buckets: u64,
    /// Pages in the new file (its high-water mark).
    pub pages: u64,
    /// Size of the new file, trailer included.
    pub bytes: u64,
}

/// Writes `src` as a fresh, compact bbolt file at `out` with a sha256 trailer, replacing the
/// value of every `key` bucket record (every stored revision, not only the newest) for which
/// `replace` returns `Some`. Tombstones are not offered. Everything else — the other buckets,
/// the `meta` bucket, revisions, leases — is copied unchanged. `etcdctl snapshot restore`
/// accepts the result.
///
/// The file is written beside `out` under a fresh temporary name (created exclusively, mode
/// 0600, see [`crate::secret::file`]) and moved over it only once complete, so `out` is never
/// left half-written. Without `overwrite` an existing `out` (even one that appears while the
/// file is written) is refused with an [`io::ErrorKind::AlreadyExists`] I/O error.
pub fn write_snapshot(
    src: &Snapshot,
    out: &Path,
    overwrite: bool,
    mut replace: impl FnMut(&Entry) -> Option<Vec<u8>>,
) -> Result<WriteStats, SnapshotError> {
    write_snapshot_marked(src, out, overwrite, |entry, _| replace(entry))
}

/// [`write_snapshot`], telling `replace` whether each record is its key's newest revision
/// (the value a read of the snapshot returns): the index knows, so no record is read again.
pub(crate) fn write_snapshot_marked(
    src: &Snapshot,
    out: &Path,
    overwrite: bool,
    replace: impl FnMut(&Entry, bool) -> Option<Vec<u8>>,
) -> Result<WriteStats, SnapshotError> {
    let out_err = |e| Fail::Io(out.to_path_buf(), e);
    let result = if !overwrite && out.symlink_metadata().is_ok() {
        Err(out_err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the output file exists (pass --force to replace it)",
        )))
    } else {
        crate::secret::file::create_temp(out)
            .map_err(out_err)
            .and_then(|(tmp, file)| {
                // The source is read a page at a time: a copy of a file that changed while it
                // was read would mix two states, and is thrown away.
                let stats = src
                    .check_unchanged()
                    .map_err(|_| Fail::Changed)
                    .and_then(|()| write_to(src, file, &tmp, replace))
                    .and_then(|stats| {
                        src.check_unchanged().map_err(|_| Fail::Changed)?;
                        Ok(stats)
                    })
                    .inspect_err(|_| {
                        let _ = std::fs::remove_file(&tmp);
                    })?;
                crate::secret::file::persist(&tmp, out, overwrite).map_err(out_err)?;
                Ok(stats)
            })
    };
    result.map_err(|fail| match fail {
        Fail::Io(path, source) => SnapshotError::Io { path, source },
        Fail::Source(f) => src.corrupt(f),
        Fail::Changed => SnapshotError::Changed {
            path: src.path.clone(),
        },
        Fail::Unsupported(what) => SnapshotError::Unsupported {
            path: src.path.clone(),
            what,
        },
    })
}

/// Why writing stopped.
#[derive(Debug)]
enum Fail {
    /// Reading or writing a file failed.
    Io(PathBuf, io::Error),
    /// The source is inconsistent (found while copying it).
    Source(Fault),
    /// The source or a replacement cannot be written.
    Unsupported(&'static str),
    /// The source file changed while it was read.
    Changed,
}

impl From<Fault> for Fail {
    fn from(f: Fault) -> Self {
        Fail::Source(f)
    }
}

fn write_to(
    src: &Snapshot,
    file: File,
    tmp: &Path,
    mut replace: impl FnMut(&Entry, bool) -> Option<Vec<u8>>,
) -> Result<WriteStats, Fail> {
    let io = |e| Fail::Io(tmp.to_path_buf(), e);
    let page_size = src.page_size;
    let mut pages = Pages {
        out: BufWriter::with_capacity(1 << 20, file),
        next: 2,
        page_size,
        path: tmp,
    };
    // Meta pages go last, once the root is known; reserve their room.
    pages.out.write_all(&vec![0; 2 * page_size]).map_err(io)?;

    let tree = src.tree();
    let mut seen = PageSet::new(src.hwm);
    let mut budget = element_budget(src.db_len);
    let mut walk = Walk::new(&tree, &mut seen, &mut budget);

    // The root bucket: names and headers of etcd's buckets.
    let mut top: Vec<(Vec<u8>, Root, u64)> = Vec::new();
    let mut names = 0usize;
    walk.leaves(Root::Page(src.root), |e| {
        names = super::bucket_names(names, &e, src.db_len)?;
        let (root, sequence) = bbolt::bucket(&e)?;
        top.push((e.key.to_vec(), root, sequence));
        Ok::<(), Fault>(())
    })?;

    let mut stats = WriteStats::default();
    let mut root_bucket = Builder::new(page_size);
    for (name, root, sequence) in top {
        let is_key = name == b"key";
        let mut bucket = Builder::new(page_size);
        walk.leaves(root, |e| {
            if e.is_bucket() {
                return Err(Fail::Unsupported(
                    "it has nested buckets, which etcd never writes",
                ));
            }
            let (key, record) = (e.key, e.value);
            let mut value = Cow::Borrowed(record);
            if is_key {
                // The record's place in the bucket, as the index counted it when the file
                // was opened.
                let ordinal = u32::try_from(stats.records).unwrap_or(u32::MAX);
                stats.records += 1;
                let rev = parse_rev_key(key).map_err(|err| Fault::wire(e.page, &err))?;
                if !rev.tombstone {
                    let kv = KeyValue::decode(record).map_err(|err| Fault::wire(e.page, &err))?;
                    let newest = src.newest.contains(ordinal);
                    if let Some(new) = replace(&entry_from(&kv), newest) {
                        let rewritten = KeyValue::with_value(record, &new)
                            .map_err(|err| Fault::wire(e.page, &err))?;
                        value = Cow::Owned(rewritten);
                        stats.replaced += 1;
                    }
                }
            }
            bucket.push(&mut pages, e.page, key, value, 0)
        })?;
        let header = bucket.finish(&mut pages, sequence, true)?;
        root_bucket.push(&mut pages, None, &name, Cow::Owned(header), BUCKET_ELEMENT)?;
        stats.buckets += 1;
    }
    let root = root_bucket.finish_root(&mut pages)?;

    let hwm = pages.next;
    let mut file = pages
        .out
        .into_inner()
        .map_err(|e| Fail::Io(tmp.to_path_buf(), e.into_error()))?;
    let txid = src.txid.max(1);
    let meta = Meta {
        page_size: u32::try_from(page_size).map_err(|_| Fail::Unsupported("page size"))?,
        flags: 0,
        root,
        sequence: src.root_sequence,
        freelist: NO_FREELIST,
        hwm,
        txid,
    };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&meta.to_page(0)).map_err(io)?;
    let older = Meta {
        txid: txid - 1,
        ..meta
    };
    file.write_all(&older.to_page(1)).map_err(io)?;

    // The trailer: sha256 of the whole database, read back in order.
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        len += n as u64;
    }
    if len != hwm * page_size as u64 {
        return Err(Fail::Io(
            tmp.to_path_buf(),
            io::Error::other("the written file has an unexpected length"),
        ));
    }
    file.write_all(&hasher.finalize()).map_err(io)?;
    file.sync_all().map_err(io)?;
    stats.pages = hwm;
    stats.bytes = len + 32;
    Ok(stats)
}

/// The output file, written one page run after another.
struct Pages<'p> {
    out: BufWriter<File>,
    /// The id the next page gets.
    next: u64,
    page_size: usize,
    path: &'p Path,
}

impl Pages<'_> {
    /// Writes a page run (a whole number of pages) and returns its first page id.
    fn write(&mut self, run: &[u8]) -> Result<u64, Fail> {
        let id = self.next;
        self.out
            .write_all(run)
            .map_err(|e| Fail::Io(self.path.to_path_buf(), e))?;
        self.next += (run.len() / self.page_size) as u64;
        Ok(id)
    }
}

/// One element of a leaf being assembled.
struct Elem<'a> {
    key: Cow<'a, [u8]>,
    value: Cow<'a, [u8]>,
    flags: u32,
}

/// Builds one bucket's B+ tree bottom-up from elements pushed in key order.
struct Builder {
    page_size: usize,
    /// The leaf being filled (copies: the source's pages are read one at a time).
    leaf: Vec<Elem<'static>>,
    /// Its encoded size, page header included.
    leaf_size: usize,
    /// The last key pushed (keys must ascend across pages too).
    prev: Option<Vec<u8>>,
    /// Leaves written so far: (first key, page id).
    written: Vec<(Vec<u8>, u64)>,
}

impl Builder {
    fn new(page_size: usize) -> Self {
        Builder {
            page_size,
            leaf: Vec::new(),
            leaf_size: PAGE_HEADER,
            prev: None,
            written: Vec::new(),
        }
    }

    /// Adds the next element; keys must arrive strictly ascending (bbolt's order).
    fn push(
        &mut self,
        pages: &mut Pages<'_>,
        page: Option<u64>,
        key: &[u8],
        value: Cow<'_, [u8]>,
        flags: u32,
    ) -> Result<(), Fail> {
        match &mut self.prev {
            Some(prev) if prev.as_slice() >= key => {
                return Err(Fault::at(page, "keys out of order in a bucket").into());
            }
            Some(prev) => {
                prev.clear();
                prev.extend_from_slice(key);
            }
            None => self.prev = Some(key.to_vec()),
        }
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.is_empty() && self.leaf_size + size > self.page_size {
            self.flush(pages)?;
        }
        self.leaf.push(Elem {
            key: Cow::Owned(key.to_vec()),
            value: Cow::Owned(value.into_owned()),
            flags,
        });
        self.leaf_size += size;
        Ok(())
    }

    /// Writes the current leaf as a page.
    fn flush(&mut self, pages: &mut Pages<'_>) -> Result<(), Fail> {
        let first = self
            .leaf
            .first()
            .map(|e| e.key.to_vec())
            .unwrap_or_default();
        let page = leaf_page(pages.next, &self.leaf, Some(self.page_size))?;
        let id = pages.write(&page)?;
        self.written.push((first, id));
        self.leaf.clear();
        self.leaf_size = PAGE_HEADER;
        Ok(())
    }

    /// Finishes a bucket and returns its header value for the parent: inline when bbolt would
    /// inline it (one leaf, at most page_size / 4 bytes, no sub-buckets), else the root page.
    fn finish(
        mut self,
        pages: &mut Pages<'_>,
        sequence: u64,
        inline: bool,
    ) -> Result<Vec<u8>, Fail> {
        let mut header = Vec::with_capacity(BUCKET_HEADER_LEN + self.leaf_size);
        if inline
            && self.written.is_empty()
            && self.leaf_size <= self.page_size / 4
            && self.leaf.iter().all(|e| e.flags & BUCKET_ELEMENT == 0)
        {
            header.extend_from_slice(&0u64.to_le_bytes());
            header.extend_from_slice(&sequence.to_le_bytes());
            header.extend(leaf_page(0, &self.leaf, None)?);
            return Ok(header);
        }
        let root = self.finish_root(pages)?;
        header.extend_from_slice(&root.to_le_bytes());
        header.extend_from_slice(&sequence.to_le_bytes());
        Ok(header)
    }

    /// Writes the remaining leaf and the branch levels above the leaves; returns the root page.
    fn finish_root(&mut self, pages: &mut Pages<'_>) -> Result<u64, Fail> {
        if !self.leaf.is_empty() || self.written.is_empty() {
            // An empty bucket that is not inline is one empty leaf page.
            self.flush(pages)?;
        }
        let mut level = std::mem::take(&mut self.written);
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut group: Vec<(Vec<u8>, u64)> = Vec::new();
            let mut size = PAGE_HEADER;
            for child in level {
                let grow = ELEMENT + child.0.len();
                if !group.is_empty() && size + grow > self.page_size {
                    next.push(write_branch(pages, &mut group)?);
                    size = PAGE_HEADER;
                }
                size += grow;
                group.push(child);
            }
            next.push(write_branch(pages, &mut group)?);
            level = next;
        }
        level
            .first()
            .map(|(_, id)| *id)
            .ok_or(Fail::Unsupported("an empty tree"))
    }
}

/// Size of a bucket header in a parent's value.
const BUCKET_HEADER_LEN: usize = 16;

/// Writes the branch page over `group` (emptying it); returns (its first key, its page id).
fn write_branch(
    pages: &mut Pages<'_>,
    group: &mut Vec<(Vec<u8>, u64)>,
) -> Result<(Vec<u8>, u64), Fail> {
    let page = branch_page(pages.next, group, pages.page_size)?;
    let id = pages.write(&page)?;
    let first = group.first().map(|(k, _)| k.clone()).unwrap_or_default();
    group.clear();
    Ok((first, id))
}

fn u32_len(n: usize) -> Result<u32, Fail> {
    u32::try_from(n).map_err(|_| Fail::Unsupported("a key or value over 4 GiB"))
}

/// A page header.
fn page_header(
    out: &mut Vec<u8>,
    id: u64,
    flags: u16,
    count: usize,
    overflow: u32,
) -> Result<(), Fail> {
    let count = u16::try_from(count)
        .map_err(|_| Fail::Unsupported("more than 65535 elements in a page"))?;
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&overflow.to_le_bytes());
    Ok(())
}

/// The overflow count of a page holding `len` bytes, and the padded length.
fn overflow(len: usize, page_size: usize) -> Result<(u32, usize), Fail> {
    let pages = len.div_ceil(page_size).max(1);
    Ok((u32_len(pages - 1)?, pages * page_size))
}

/// Encodes a leaf page: element headers, then each key followed by its value. With
/// `page_size`, the page is padded to whole pages (an overflow run when it needs several);
/// without, it is an inline bucket's pseudo-page.
fn leaf_page(id: u64, elems: &[Elem<'_>], page_size: Option<usize>) -> Result<Vec<u8>, Fail> {
    let data: usize = elems.iter().map(|e| e.key.len() + e.value.len()).sum();
    let len = PAGE_HEADER + elems.len() * ELEMENT + data;
    let (over, padded) = match page_size {
        Some(ps) => overflow(len, ps)?,
        None => (0, len),
    };
    let mut page = Vec::with_capacity(padded);
    page_header(&mut page, id, LEAF, elems.len(), over)?;
    let mut data_at = PAGE_HEADER + elems.len() * ELEMENT;
    for (i, e) in elems.iter().enumerate() {
        let elem_at = PAGE_HEADER + i * ELEMENT;
        page.extend_from_slice(&e.flags.to_le_bytes());
        page.extend_from_slice(&u32_len(data_at - elem_at)?.to_le_bytes());
        page.extend_from_slice(&u32_len(e.key.len())?.to_le_bytes());
        page.extend_from_slice(&u32_len(e.value.len())?.to_le_bytes());
        data_at += e.key.len() + e.value.len();
    }
    for e in elems {
        page.extend_from_slice(&e.key);
        page.extend_from_slice(&e.value);
    }
    page.resize(padded, 0);
    Ok(page)
}

/// Encodes a branch page: element headers (pos, key size, child page id), then the keys.
fn branch_page(id: u64, children: &[(Vec<u8>, u64)], page_size: usize) -> Result<Vec<u8>, Fail> {
    let data: usize = children.iter().map(|(k, _)| k.len()).sum();
    let len = PAGE_HEADER + children.len() * ELEMENT + data;
    let (over, padded) = overflow(len, page_size)?;
    let mut page = Vec::with_capacity(padded);
    page_header(&mut page, id, BRANCH, children.len(), over)?;
    let mut data_at = PAGE_HEADER + children.len() * ELEMENT;
    for (i, (key, child)) in children.iter().enumerate() {
        let elem_at = PAGE_HEADER + i * ELEMENT;
        page.extend_from_slice(&u32_len(data_at - elem_at)?.to_le_bytes());
        page.extend_from_slice(&u32_len(key.len())?.to_le_bytes());
        page.extend_from_slice(&child.to_le_bytes());
        data_at += key.len();
    }
    for (key, _) in children {
        page.extend_from_slice(key);
    }
    page.resize(padded, 0);
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::super::bbolt::{Source, Tree, BUCKET_HEADER};
    use super::*;

    fn elems() -> Vec<Elem<'static>> {
        vec![
            Elem {
                key: Cow::Borrowed(b"alpha"),
                value: Cow::Borrowed(b"one"),
                flags: 0,
            },
            Elem {
                key: Cow::Borrowed(b"beta"),
                value: Cow::Owned(vec![7; 5000]),
                flags: 0,
            },
        ]
    }

    #[test]
    fn leaf_pages_read_back() {
        let mut file = vec![0u8; 2 * 4096];
        file.extend(leaf_page(2, &elems(), Some(4096)).unwrap());
        assert_eq!(file.len(), 4 * 4096, "5 KB of data needs one overflow page");
        let db_len = file.len();
        let src = Source::Memory(file);
        let tree = Tree {
            src: &src,
            db_len,
            page_size: 4096,
            hwm: 4,
        };
        let page = tree.page(2).unwrap();
        assert_eq!((page.flags, page.count, page.bytes.len()), (LEAF, 2, 8192));
        for (i, want) in elems().iter().enumerate() {
            let e = page.leaf_elem(i as u16, Some(2)).unwrap();
            assert_eq!(e.key, &*want.key);
            assert_eq!(e.value, &*want.value);
        }
    }

    #[test]
    fn branch_pages_read_back() {
        let children = vec![(b"a".to_vec(), 5u64), (b"mm".to_vec(), 9u64)];
        let mut file = vec![0u8; 2 * 4096];
        file.extend(branch_page(2, &children, 4096).unwrap());
        let db_len = file.len();
        let src = Source::Memory(file);
        let tree = Tree {
            src: &src,
            db_len,
            page_size: 4096,
            hwm: 3,
        };
        let page = tree.page(2).unwrap();
        assert_eq!((page.flags, page.count), (BRANCH, 2));
        for (i, (key, child)) in children.iter().enumerate() {
            let (k, c) = page.branch_elem(i as u16).unwrap();
            assert_eq!((k, c), (key.as_slice(), *child));
        }
    }

    #[test]
    fn inline_pages_have_no_padding() {
        let small = &elems()[..1];
        let page = leaf_page(0, small, None).unwrap();
        assert_eq!(page.len(), PAGE_HEADER + ELEMENT + 5 + 3);
        assert_eq!(BUCKET_HEADER_LEN, BUCKET_HEADER);
    }
}
