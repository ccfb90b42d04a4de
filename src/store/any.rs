//! One store, chosen once from what the user asked for: a live etcd (or kine serving etcd's
//! API), an etcd snapshot or data file, or kine's SQLite file. A new kind of store touches only
//! this folder.

use std::path::PathBuf;

use super::etcd::{EtcdOptions, EtcdStore};
use super::kine::KineDb;
use super::offline::Offline;
use super::snapshot::Snapshot;
use super::{Page, ReadStore, StoreError, Unanswered};

/// Where to read: the choice a command's store flags make.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreSpec {
    /// A live etcd (or kine serving etcd's API) at these endpoints.
    Etcd(EtcdOptions),
    /// An etcd snapshot (`etcdctl snapshot save`) or a stopped member's `member/snap/db`.
    Snapshot(PathBuf),
    /// kine's SQLite file (k3s: `server/db/state.db`).
    KineDb(PathBuf),
}

/// An open store of any kind (see [`StoreSpec`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum Store {
    /// A live etcd (or kine serving etcd's API): the only kind that can be written.
    Etcd(EtcdStore),
    /// An etcd snapshot or data file, read-only.
    Snapshot(Box<Snapshot>),
    /// kine's SQLite file, read-only.
    Kine(Box<KineDb>),
}

impl Store {
    /// Opens what `spec` names: connects to etcd (lazily; the first request fails over between
    /// endpoints), or opens and checks the file.
    pub async fn open(spec: StoreSpec) -> Result<Store, StoreError> {
        Ok(match spec {
            StoreSpec::Etcd(opts) => Store::Etcd(EtcdStore::connect(opts).await?),
            StoreSpec::Snapshot(path) => Store::Snapshot(Box::new(Snapshot::open(&path)?)),
            StoreSpec::KineDb(path) => Store::Kine(Box::new(KineDb::open(&path)?)),
        })
    }

    /// The live store, which alone can be written; `None` for a file.
    pub fn live(&self) -> Option<&EtcdStore> {
        match self {
            Store::Etcd(s) => Some(s),
            _ => None,
        }
    }
}

impl ReadStore for Store {
    fn source(&self) -> String {
        match self {
            Store::Etcd(s) => s.source(),
            Store::Snapshot(s) => s.source(),
            Store::Kine(s) => s.source(),
        }
    }

    fn unanswered(&self) -> Vec<Unanswered> {
        match self {
            Store::Etcd(s) => s.unanswered(),
            Store::Snapshot(s) => s.unanswered(),
            Store::Kine(s) => s.unanswered(),
        }
    }

    fn offline(&self) -> Option<&dyn Offline> {
        match self {
            Store::Etcd(s) => s.offline(),
            Store::Snapshot(s) => s.offline(),
            Store::Kine(s) => s.offline(),
        }
    }

    async fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        match self {
            Store::Etcd(s) => s.count(prefix).await,
            Store::Snapshot(s) => s.count(prefix).await,
            Store::Kine(s) => s.count(prefix).await,
        }
    }

    async fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        revision: Option<i64>,
    ) -> Result<Page, StoreError> {
        match self {
            Store::Etcd(s) => s.page(prefix, after, revision).await,
            Store::Snapshot(s) => s.page(prefix, after, revision).await,
            Store::Kine(s) => s.page(prefix, after, revision).await,
        }
    }
}
