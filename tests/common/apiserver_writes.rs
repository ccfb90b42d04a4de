//! Writes the way kube-apiserver makes them, so tests' concurrent writers exercise the same
//! transactions against etcd and kine alike (kine implements deletes only in this shape:
//! a plain `DeleteRange` is "not implemented").

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

/// Deletes `key` as kube-apiserver's `GuaranteedUpdate`/`Delete` does: read its mod_revision,
/// then `if mod_revision == seen then delete else get`, retried until it lands or the key is
/// gone. Returns whether this call deleted it.
pub async fn delete_key(client: &mut etcd_client::Client, key: impl AsRef<[u8]>) -> bool {
    let key = key.as_ref().to_vec();
    loop {
        let resp = client
            .get(key.clone(), None)
            .await
            .expect("get before delete");
        let Some(kv) = resp.kvs().first() else {
            return false;
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        if client.txn(txn).await.expect("delete txn").succeeded() {
            return true;
        }
    }
}

/// Writes `value` under `key` as kube-apiserver's `GuaranteedUpdate` does: read the key's
/// mod_revision, then `if mod_revision == seen then put else get` (creation: `if
/// mod_revision == 0 then put`), retried until it lands. Returns the revision of the write.
///
/// A plain `Put` is not the same on kine: kine implements it as read-then-update and reports
/// success even when a concurrent write made the update fail, so the value is silently not
/// stored. kube-apiserver never sends a plain `Put`; neither do the tests' writers.
pub async fn put_key(
    client: &mut etcd_client::Client,
    key: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> i64 {
    let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
    loop {
        let resp = client.get(key.clone(), None).await.expect("get before put");
        // kube-apiserver's shapes: create is `mod_revision == 0` with no failure branch.
        let seen = resp.kvs().first().map_or(0, |kv| kv.mod_revision());
        let mut txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, seen)])
            .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
        if seen != 0 {
            txn = txn.or_else([TxnOp::get(key.clone(), None)]);
        }
        let resp = client.txn(txn).await.expect("put txn");
        if resp.succeeded() {
            return resp.header().map_or(0, |h| h.revision());
        }
    }
}

/// One attempt of [`put_key`]'s transaction: `Ok(true)` written, `Ok(false)` the key changed
/// in between (nothing written), `Err` the store failed (a writer racing faults carries on).
pub async fn try_put_key(
    client: &mut etcd_client::Client,
    key: &str,
    value: &[u8],
) -> Result<bool, etcd_client::Error> {
    let resp = client.get(key, None).await?;
    let seen = resp.kvs().first().map_or(0, |kv| kv.mod_revision());
    let mut txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, seen)])
        .and_then([TxnOp::put(key, value.to_vec(), None)]);
    if seen != 0 {
        txn = txn.or_else([TxnOp::get(key, None)]);
    }
    Ok(client.txn(txn).await?.succeeded())
}

/// One attempt of [`delete_key`]'s transaction: `Ok(true)` deleted (or already absent),
/// `Ok(false)` the key changed in between, `Err` the store failed.
pub async fn try_delete_key(
    client: &mut etcd_client::Client,
    key: &str,
) -> Result<bool, etcd_client::Error> {
    let resp = client.get(key, None).await?;
    let Some(kv) = resp.kvs().first() else {
        return Ok(true);
    };
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key,
            CompareOp::Equal,
            kv.mod_revision(),
        )])
        .and_then([TxnOp::delete(key, None)])
        .or_else([TxnOp::get(key, None)]);
    Ok(client.txn(txn).await?.succeeded())
}
