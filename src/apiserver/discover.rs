//! Which kube-apiserver instances exist: their identity Leases (hostnames) and addresses.
//!
//! Every kube-apiserver holds a Lease in `kube-system` named after its APIServerID (see
//! [`super::identity`]), labelled `apiserver.kubernetes.io/identity=kube-apiserver` and
//! `kubernetes.io/hostname=<host>`, renewed every 10 s for 3600 s. A Lease whose renew time plus
//! duration is in the future belongs to an instance that may still be running: it must be
//! checked. Addresses come from the `default/kubernetes` EndpointSlice (a real cluster's
//! endpoint reconciler keeps it) or from the URLs the caller gives.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::check::ApiError;

/// The label every identity Lease carries.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity=kube-apiserver";
/// The label naming the Lease holder's hostname.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The namespace of the identity Leases.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// One identity Lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityLease {
    /// The APIServerID (the Lease's name).
    pub identity: String,
    /// The holder's hostname (the `kubernetes.io/hostname` label; the identity when absent).
    pub hostname: String,
    /// Whether renew time + duration is still in the future.
    pub live: bool,
    /// Seconds since the last renewal (`None` without a renew time).
    pub renewed_seconds_ago: Option<i64>,
}

/// Lists the identity Leases (live or not), sorted by hostname.
pub async fn identity_leases(client: &kube::Client) -> Result<Vec<IdentityLease>, ApiError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let list = api
        .list(&ListParams::default().labels(IDENTITY_LABEL))
        .await
        .map_err(|e| ApiError::from_kube(e, "list", "leases.coordination.k8s.io in kube-system"))?;
    let now = now_seconds();
    let mut leases: Vec<_> = list
        .items
        .into_iter()
        .map(|lease| identity_lease(lease, now))
        .collect();
    leases.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Ok(leases)
}

fn identity_lease(lease: Lease, now: i64) -> IdentityLease {
    let identity = lease.metadata.name.unwrap_or_default();
    let hostname = lease
        .metadata
        .labels
        .and_then(|mut l| l.remove(HOSTNAME_LABEL))
        .unwrap_or_else(|| identity.clone());
    let spec = lease.spec.unwrap_or_default();
    let renewed = spec.renew_time.map(|t| t.0.as_second());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    IdentityLease {
        identity,
        hostname,
        live: renewed.is_some_and(|r| r + duration > now),
        renewed_seconds_ago: renewed.map(|r| now - r),
    }
}

/// The addresses in the `default/kubernetes` EndpointSlices, as `https://addr:port` URLs.
/// Empty when the endpoint reconciler is off (`--endpoint-reconciler-type=none`).
pub async fn endpoint_urls(client: &kube::Client) -> Result<Vec<String>, ApiError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let list = api
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .map_err(|e| {
            ApiError::from_kube(e, "list", "endpointslices.discovery.k8s.io in default")
        })?;
    Ok(slice_urls(list.items))
}

/// `https://addr:port` for every address of the slices (IPv6 in brackets), sorted, deduplicated.
fn slice_urls(slices: Vec<EndpointSlice>) -> Vec<String> {
    let mut urls = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .as_deref()
            .and_then(|p| p.iter().find_map(|p| p.port))
            .unwrap_or(443);
        for endpoint in slice.endpoints.unwrap_or_default() {
            for address in endpoint.addresses {
                let host = if slice.address_type == "IPv6" {
                    format!("[{address}]")
                } else {
                    address
                };
                urls.push(format!("https://{host}:{port}"));
            }
        }
    }
    urls.sort();
    urls.dedup();
    urls
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_slices_give_one_url_per_address() {
        let slices: Vec<EndpointSlice> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "kubernetes"}, "addressType": "IPv4",
             "ports": [{"name": "https", "port": 6443}],
             "endpoints": [{"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.1"]}]},
            {"metadata": {"name": "kubernetes-v6"}, "addressType": "IPv6",
             "ports": [{"port": 6443}], "endpoints": [{"addresses": ["fd00::1"]}]}
        ]))
        .unwrap();
        assert_eq!(
            slice_urls(slices),
            [
                "https://10.0.0.1:6443",
                "https://10.0.0.2:6443",
                "https://[fd00::1]:6443"
            ]
        );
    }

    #[test]
    fn a_lease_is_live_until_renew_plus_duration() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "apiserver-x", "labels": {HOSTNAME_LABEL: "cp-1"}},
            "spec": {"renewTime": "2026-12-04T20:00:00.000000Z", "leaseDurationSeconds": 3600}
        }))
        .unwrap();
        let renewed = 1_796_414_400; // 2026-12-04T20:00:00Z
        let live = identity_lease(lease.clone(), renewed + 3599);
        assert_eq!((live.hostname.as_str(), live.live), ("cp-1", true));
        assert_eq!(live.renewed_seconds_ago, Some(3599));
        assert!(!identity_lease(lease, renewed + 3600).live);
    }
}
