//! The canary: evidence on any Kubernetes version that each kube-apiserver writes with the
//! config's write provider and key.
//!
//! Through each instance, [`run_canaries`] creates a small Secret `atrest-canary-<random>`
//! labelled `app.kubernetes.io/managed-by=atrest` and [`RUN_LABEL`]`=<run id>`, reads the bytes
//! etcd stores for it (`/registry/secrets/<ns>/<name>`), classifies them with the config's chain
//! and deletes the Secret. Whatever happens — an error, the caller's shutdown (Ctrl-C) — every
//! Secret of the run is deleted by its run label before the function returns, and the report
//! says whether none is left.

use std::future::Future;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;

use crate::store::ReadStore;
use crate::transform::{Chain, State};

use super::check::ApiError;

/// The label every atrest-made object carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "atrest");
/// The label naming one canary run (its Secrets are deleted by it).
pub const RUN_LABEL: &str = "atrest/canary-run";
/// The name prefix of canary Secrets.
pub const NAME_PREFIX: &str = "atrest-canary-";

/// What one instance's canary showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryReport {
    /// The Secret's name.
    pub name: String,
    /// Which provider and key the stored bytes were written by (`null`: not read).
    pub written_by: Option<WrittenBy>,
    /// Whether they were written by the config's write provider and key (state `current`).
    pub ok: bool,
    /// Whether no Secret of this run is left.
    pub deleted: bool,
    /// What went wrong, if anything (never a value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The provider and key that wrote a stored value, as the chain reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WrittenBy {
    /// `aescbc`, `aesgcm`, `secretbox`, `kms` or `identity` (plaintext).
    pub provider: String,
    /// The key name (KMS: the provider name); `null` for plaintext.
    pub key: Option<String>,
    /// The value's state against the config (`current`, `stale`, `plaintext`, …).
    pub state: String,
}

/// Where to write canaries.
pub struct CanaryTarget<'a, S> {
    /// The store kube-apiserver writes to.
    pub store: &'a S,
    /// The chain for `secrets` of the config.
    pub chain: &'a Chain,
    /// The namespace.
    pub namespace: &'a str,
}

/// Writes one canary through each client (in order), and deletes every one of them whatever
/// happens; `shutdown` resolving stops the run early (then still deletes). Returns one report
/// per client.
pub async fn run_canaries<S: ReadStore + Sync>(
    clients: &[kube::Client],
    target: &CanaryTarget<'_, S>,
    shutdown: impl Future<Output = ()>,
) -> Vec<CanaryReport> {
    let run_id = random_suffix();
    let names: Vec<String> = (0..clients.len())
        .map(|i| format!("{NAME_PREFIX}{run_id}-{i}"))
        .collect();
    let all = async {
        let mut out = Vec::new();
        for (client, name) in clients.iter().zip(&names) {
            out.push(one_canary(client, target, name, &run_id).await);
        }
        out
    };
    let mut reports = tokio::select! {
        reports = all => reports,
        () = shutdown => names.iter().map(|name| CanaryReport {
            name: name.clone(),
            written_by: None,
            ok: false,
            deleted: false,
            error: Some("interrupted".to_owned()),
        }).collect(),
    };
    let left = cleanup(clients, target.namespace, &run_id).await;
    for r in &mut reports {
        r.deleted = left == Some(0);
        if left.is_none() {
            r.error
                .get_or_insert_with(|| "could not confirm the canary was deleted".to_owned());
        }
    }
    reports
}

/// Creates the canary through `client`, reads and classifies what etcd stores for it.
async fn one_canary<S: ReadStore + Sync>(
    client: &kube::Client,
    target: &CanaryTarget<'_, S>,
    name: &str,
    run_id: &str,
) -> CanaryReport {
    let mut report = CanaryReport {
        name: name.to_owned(),
        written_by: None,
        ok: false,
        deleted: false,
        error: None,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), target.namespace);
    let secret: Secret = match serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, RUN_LABEL: run_id},
        },
        "stringData": {"canary": "written by atrest apiservers --canary"},
    })) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let what = format!("secrets in namespace {}", target.namespace);
    if let Err(e) = api.create(&PostParams::default(), &secret).await {
        report.error = Some(ApiError::from_kube(e, "create", &what).to_string());
        return report;
    }
    let key = format!("/registry/secrets/{}/{name}", target.namespace);
    match stored_value(target.store, key.as_bytes()).await {
        Ok(Some(value)) => {
            let c = target.chain.classify(&value, key.as_bytes());
            report.ok = c.state == State::Current;
            report.written_by = Some(WrittenBy {
                provider: c
                    .provider
                    .map_or_else(|| "identity".to_owned(), |p| p.as_str().to_owned()),
                key: c.key_name,
                state: c.state.to_string(),
            });
        }
        Ok(None) => {
            report.error = Some(format!(
                "{key} is not in the store: is this the etcd the apiservers use?"
            ))
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// The value stored at exactly `key`.
async fn stored_value<S: ReadStore + Sync>(
    store: &S,
    key: &[u8],
) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
    let page = store.page(key, None, None).await?;
    Ok(page
        .entries
        .into_iter()
        .find(|e| e.key == key)
        .map(|e| e.value))
}

/// Deletes every Secret of run `run_id` through the first client that answers; returns how
/// many are left (`None`: no client could list them).
async fn cleanup(clients: &[kube::Client], namespace: &str, run_id: &str) -> Option<usize> {
    let selector = format!("{RUN_LABEL}={run_id}");
    for client in clients {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let params = ListParams::default().labels(&selector);
        if api
            .delete_collection(&DeleteParams::default(), &params)
            .await
            .is_err()
        {
            continue;
        }
        if let Ok(list) = api.list_metadata(&params).await {
            return Some(list.items.len());
        }
    }
    None
}

/// 8 random lower-case base32 characters.
fn random_suffix() -> String {
    let mut bytes = [0u8; 5];
    crate::secret::fill_random(&mut bytes);
    super::identity::base32_lower_unpadded(&bytes)
}

/// Runs a canary through every instance of `report` that answered, attaches each result to
/// its instance (`canary`) and makes the verdict require each canary `ok` and deleted.
pub async fn canary_apiservers<S: ReadStore + Sync>(
    access: &super::access::ApiAccess,
    report: &mut super::check::ApiserversReport,
    target: &CanaryTarget<'_, S>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), super::access::AccessError> {
    let asked: Vec<usize> = (0..report.apiservers.len())
        .filter(|&i| {
            !matches!(
                report.apiservers[i].problem,
                Some(super::check::Problem::NotAnswered { .. })
            )
        })
        .collect();
    let clients = asked
        .iter()
        .map(|&i| access.client_for(&report.apiservers[i].url))
        .collect::<Result<Vec<_>, _>>()?;
    let results = run_canaries(&clients, target, shutdown).await;
    for (i, result) in asked.into_iter().zip(results) {
        report.apiservers[i].canary = Some(result);
    }
    report.ok = report.ok
        && report
            .apiservers
            .iter()
            .filter_map(|a| a.canary.as_ref())
            .all(|c| c.ok && c.deleted);
    Ok(())
}
