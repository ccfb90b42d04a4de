//! Reading several prefixes at one revision, one page at a time.

use super::{Entry, ReadStore, StoreError};

/// Visits every key under each of `prefixes`, all pinned to the revision of the first page
/// read, one page in memory at a time. Returns that revision.
///
/// A prefix that holds several resources (the root, for `*.*`) is read one top-level segment
/// (`<root><segment>/`) at a time: after a page of the root, the rest of the segment its last
/// key is in is paged with that segment as the prefix, so each range etcd walks ends at the
/// segment (and the store can split it at namespace boundaries), then the root resumes after the
/// segment's last key. Every key is visited once, in key order.
pub(crate) async fn scan_pinned<S, F>(
    store: &S,
    root: &str,
    prefixes: &[String],
    mut visit: F,
) -> Result<i64, StoreError>
where
    S: ReadStore + Sync,
    F: FnMut(Entry),
{
    let mut revision = None;
    for prefix in prefixes {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store
                .page(prefix.as_bytes(), after.as_deref(), revision)
                .await?;
            revision = Some(page.revision);
            let Some(last) = page.entries.last().map(|e| e.key.clone()) else {
                break;
            };
            let more = page.more;
            page.entries.into_iter().for_each(&mut visit);
            if !more {
                break;
            }
            // Finish the segment the last key is in, with the segment as the prefix.
            let segment = segment_of(root, prefix, &last);
            let mut seg_after = last;
            if let Some(segment) = segment {
                loop {
                    let page = store.page(&segment, Some(&seg_after), revision).await?;
                    let more = page.more;
                    if let Some(l) = page.entries.last() {
                        seg_after = l.key.clone();
                    }
                    let empty = page.entries.is_empty();
                    page.entries.into_iter().for_each(&mut visit);
                    if !more || empty {
                        break;
                    }
                }
            }
            after = Some(seg_after);
        }
    }
    Ok(revision.unwrap_or_default())
}

/// The top-level segment (`<root><segment>/`) `key` is in, when `prefix` is the root itself
/// (`None` for a narrower prefix, which is paged as it is).
fn segment_of(root: &str, prefix: &str, key: &[u8]) -> Option<Vec<u8>> {
    if prefix != root {
        return None;
    }
    let rest = key.strip_prefix(root.as_bytes())?;
    let end = rest.iter().position(|&b| b == b'/')?;
    Some(key[..root.len() + end + 1].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_scans_go_by_top_level_segment() {
        let seg = |key: &str| {
            segment_of("/registry/", "/registry/", key.as_bytes())
                .map(|s| String::from_utf8(s).unwrap())
        };
        assert_eq!(
            seg("/registry/secrets/ns/a").as_deref(),
            Some("/registry/secrets/")
        );
        assert_eq!(
            seg("/registry/services/specs/ns/a").as_deref(),
            Some("/registry/services/")
        );
        assert_eq!(
            seg("/registry/example.com/widgets/ns/a").as_deref(),
            Some("/registry/example.com/")
        );
        assert_eq!(seg("/registry/loose"), None);
        assert_eq!(
            segment_of(
                "/registry/",
                "/registry/secrets/",
                b"/registry/secrets/ns/a"
            ),
            None
        );
    }
}
