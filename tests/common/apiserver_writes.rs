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
