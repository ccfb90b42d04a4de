//! The live etcd store. (Skeleton: owned by a helper.)

use thiserror::Error;

/// A failure talking to etcd.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// Placeholder.
    #[error("not implemented")]
    Todo,
}

/// A live etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdStore {}
