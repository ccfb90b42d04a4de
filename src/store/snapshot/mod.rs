//! The read-only reader of etcd snapshot and data files. (Skeleton: owned by a helper.)

use thiserror::Error;

/// A failure reading a snapshot or data file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Placeholder.
    #[error("not implemented")]
    Todo,
}

/// An opened etcd snapshot or `member/snap/db` file.
#[derive(Debug)]
pub struct Snapshot {}
