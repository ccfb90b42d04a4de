//! `--backup`: a full snapshot streamed from etcd into a file (temp file, fsync, rename), its
//! sha256 trailer checked on the way.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use etcd_client::SnapshotStreaming;
use sha2::{Digest, Sha256};

use super::error::{classify, Failed};
use super::{EtcdError, EtcdStore};

impl EtcdStore {
    pub(super) async fn save_snapshot(
        &self,
        path: &Path,
        overwrite: bool,
    ) -> Result<u64, EtcdError> {
        let backup_error = |source| EtcdError::Backup {
            path: path.to_owned(),
            source,
        };
        // Checked before etcd streams anything; `persist` checks again at the end.
        if !overwrite && path.symlink_metadata().is_ok() {
            return Err(backup_error(io::Error::from(io::ErrorKind::AlreadyExists)));
        }
        // Mode 0600 from the start: the snapshot holds every Secret etcd stores.
        let (temp, file) = crate::secret::file::create_temp(path).map_err(backup_error)?;
        let result = async {
            let (stream, endpoint) = self
                .call(|m| {
                    let mut maintenance = m.client.maintenance_client();
                    let endpoint = m.endpoint.clone();
                    async move { Ok((maintenance.snapshot().await?, endpoint)) }
                })
                .await
                .map_err(|f| f.into_error("snapshot"))?;
            write_snapshot(stream, file, &temp, &endpoint).await
        }
        .await;
        match result {
            Ok(size) => {
                crate::secret::file::persist(&temp, path, overwrite).map_err(backup_error)?;
                Ok(size)
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }
}

/// Writes the snapshot stream to `temp`, checking etcd's sha256 trailer on the way, and fsyncs.
///
/// # Format
///
/// `| bbolt database | sha256(database) 32 |`: etcd appends the digest, so a complete snapshot
/// has `size % 512 == 32` (bbolt pages are multiples of 512) — `etcdctl snapshot restore`
/// checks the same two things.
async fn write_snapshot(
    mut stream: SnapshotStreaming,
    mut file: File,
    temp: &Path,
    endpoint: &str,
) -> Result<u64, EtcdError> {
    let io_error = |source| EtcdError::Backup {
        path: temp.to_owned(),
        source,
    };
    let mut hasher = Sha256::new();
    // The last (up to) 32 bytes seen, not hashed yet: they may be the trailer.
    let mut held: Vec<u8> = Vec::with_capacity(64);
    let mut size = 0u64;
    loop {
        let message = stream.message().await.map_err(|error| {
            let (kind, detail) = classify(&error);
            Failed {
                kind,
                endpoint: endpoint.to_owned(),
                detail,
                error,
            }
            .into_error("snapshot")
        })?;
        let Some(message) = message else { break };
        let blob = message.blob();
        file.write_all(blob).map_err(io_error)?;
        size += blob.len() as u64;
        match blob.len().checked_sub(32) {
            Some(cut) => {
                hasher.update(&held);
                hasher.update(&blob[..cut]);
                held.clear();
                held.extend_from_slice(&blob[cut..]);
            }
            None => {
                held.extend_from_slice(blob);
                if let Some(cut) = held.len().checked_sub(32) {
                    hasher.update(&held[..cut]);
                    held.drain(..cut);
                }
            }
        }
    }
    let bad = |reason| EtcdError::BadSnapshot {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if size % 512 != 32 {
        return Err(bad(
            "no sha256 trailer (size % 512 != 32): the stream ended early",
        ));
    }
    if hasher.finalize().as_slice() != held.as_slice() {
        return Err(bad("the sha256 trailer does not match the data"));
    }
    file.sync_all().map_err(io_error)?;
    Ok(size)
}
