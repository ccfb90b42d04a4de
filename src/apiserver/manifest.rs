//! Checking that kube-apiserver actually runs with an encryption config: its static pod
//! manifest, the file it names, and what that file does for Secrets.
//!
//! On a kubeadm control plane kube-apiserver is a static pod described by
//! `/etc/kubernetes/manifests/kube-apiserver.yaml`. Encryption at rest takes effect only when
//! every link holds:
//!
//! ```text
//! manifest: --encryption-provider-config=<pod path>     (command or args, `=v` or ` v`)
//!        └─ volumeMounts[].mountPath contains <pod path>
//!               └─ volumes[].hostPath.path  ──▶  <host path> exists on this node
//!                                                   └─ a valid EncryptionConfiguration
//!                                                        └─ covers secrets
//!                                                             └─ its first provider encrypts
//! ```
//!
//! These are what the CIS Kubernetes Benchmark asks of the API server (the control-plane items
//! on `--encryption-provider-config` and on appropriately configured encryption providers).
//! [`check_manifest`] follows the chain link by link and returns an [`ApiserverReport`] with one
//! [`Check`] per link; a link that cannot be checked because an earlier one failed is
//! [`CheckStatus::Skip`]. The report is the JSON schema of `atrest check-apiserver -o json`.
//!
//! Only the few manifest fields this needs are modelled ([`StaticPod`]); everything else in the
//! manifest is ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Config;
use crate::provider::ProviderKind;

/// Where kubeadm writes kube-apiserver's static pod manifest.
pub const DEFAULT_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

/// kube-apiserver's flag naming the EncryptionConfiguration file.
pub const CONFIG_FLAG: &str = "--encryption-provider-config";

/// kube-apiserver's flag that makes it re-read the file when it changes (about once a minute).
pub const RELOAD_FLAG: &str = "--encryption-provider-config-automatic-reload";

/// The part of a static pod manifest the checks read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StaticPod {
    /// `kind` (`Pod` for a static pod manifest).
    #[serde(default)]
    pub kind: Option<String>,
    /// `spec`.
    #[serde(default)]
    pub spec: PodSpec,
}

/// `spec` of a pod: its containers and volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PodSpec {
    /// `spec.containers`.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// `spec.volumes`.
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// One container: its command line and mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Container {
    /// `name`.
    #[serde(default)]
    pub name: Option<String>,
    /// `command` (kubeadm puts `kube-apiserver` and every flag here).
    #[serde(default)]
    pub command: Vec<String>,
    /// `args`.
    #[serde(default)]
    pub args: Vec<String>,
    /// `volumeMounts`.
    #[serde(default, rename = "volumeMounts")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// A container's `volumeMounts[]` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct VolumeMount {
    /// `name`: the volume it mounts.
    pub name: String,
    /// `mountPath`: where the volume appears inside the container.
    #[serde(rename = "mountPath")]
    pub mount_path: String,
    /// `subPath`: the part of the volume mounted, if not all of it.
    #[serde(default, rename = "subPath")]
    pub sub_path: Option<String>,
}

/// A pod's `volumes[]` item; only `hostPath` volumes can bring a node's file into a static pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Volume {
    /// `name`.
    pub name: String,
    /// `hostPath`, if this is a hostPath volume.
    #[serde(default, rename = "hostPath")]
    pub host_path: Option<HostPath>,
}

/// A `hostPath` volume source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostPath {
    /// `path` on the node.
    pub path: String,
    /// `type` (`DirectoryOrCreate`, `File`, …).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl StaticPod {
    /// Parses a manifest (YAML or JSON). Unknown fields are ignored.
    pub fn from_yaml(text: &str) -> Result<StaticPod, serde_norway::Error> {
        serde_norway::from_str(text)
    }

    /// The kube-apiserver container: the one named `kube-apiserver`, else the first whose
    /// command starts with a `kube-apiserver` binary, else the first container.
    pub fn apiserver_container(&self) -> Option<&Container> {
        let c = &self.spec.containers;
        c.iter()
            .find(|c| c.name.as_deref() == Some("kube-apiserver"))
            .or_else(|| {
                c.iter().find(|c| {
                    c.command
                        .first()
                        .is_some_and(|b| b.rsplit('/').next() == Some("kube-apiserver"))
                })
            })
            .or_else(|| c.first())
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.spec.volumes.iter().find(|v| v.name == name)
    }
}

impl Container {
    /// The command line: `command` then `args`.
    pub fn command_line(&self) -> impl Iterator<Item = &str> {
        self.command.iter().chain(&self.args).map(String::as_str)
    }

    /// The value of a `--flag` written `--flag=value` or `--flag value` in `command` or `args`
    /// (the last one wins, as with Go's flag parsing). `Some("")` for a bare `--flag` at the end
    /// or followed by another flag.
    pub fn flag(&self, flag: &str) -> Option<String> {
        let mut found = None;
        let mut words = self.command_line().peekable();
        while let Some(word) = words.next() {
            if let Some(value) = word.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                found = Some(value.to_owned());
            } else if word == flag {
                let value = match words.peek() {
                    Some(next) if !next.starts_with('-') => words.next().unwrap_or_default(),
                    _ => "",
                };
                found = Some(value.to_owned());
            }
        }
        found
    }
}

/// How a pod path reaches the node: through which mount and volume, to which host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountMapping {
    /// The volumeMount's `name`.
    pub volume: String,
    /// The volumeMount's `mountPath`.
    pub mount_path: String,
    /// The hostPath volume's `path`, or `None` when the volume is not a hostPath volume.
    pub host_volume_path: Option<String>,
    /// The file on the node (`None` when the volume is not a hostPath volume).
    pub host_path: Option<String>,
}

/// The mount that makes `pod_path` visible in `container`: the most specific `mountPath` that
/// is the path itself or one of its directories, mapped through its volume. `None` when no
/// mount covers the path.
pub fn map_to_host(pod: &StaticPod, container: &Container, pod_path: &str) -> Option<MountMapping> {
    let normal = |p: &str| p.trim_end_matches('/').to_owned();
    let target = normal(pod_path);
    let (mount, rest) = container
        .volume_mounts
        .iter()
        .filter_map(|m| {
            let base = normal(&m.mount_path);
            if target == base {
                Some((m, String::new()))
            } else {
                target
                    .strip_prefix(&format!("{base}/"))
                    .map(|rest| (m, rest.to_owned()))
            }
        })
        .max_by_key(|(m, _)| normal(&m.mount_path).len())?;
    let host_volume_path = pod
        .volume(&mount.name)
        .and_then(|v| v.host_path.as_ref())
        .map(|h| h.path.clone());
    let host_path = host_volume_path.as_ref().map(|base| {
        let mut parts = vec![normal(base)];
        parts.extend(
            mount
                .sub_path
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| normal(s)),
        );
        if !rest.is_empty() {
            parts.push(rest.clone());
        }
        parts.join("/")
    });
    Some(MountMapping {
        volume: mount.name.clone(),
        mount_path: mount.mount_path.clone(),
        host_volume_path,
        host_path,
    })
}

/// Which link of the chain a check is about. Serialised in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CheckId {
    /// `--encryption-provider-config` is on kube-apiserver's command line.
    ConfigFlag,
    /// The file is inside a volumeMount backed by a hostPath volume.
    Mounted,
    /// The file exists on this node.
    FileExists,
    /// The file is an EncryptionConfiguration kube-apiserver would start with.
    ValidConfig,
    /// The config has providers for `secrets`.
    CoversSecrets,
    /// The first provider for `secrets` encrypts (it is not `identity`).
    EncryptsSecrets,
    /// `--encryption-provider-config-automatic-reload` (information only).
    AutomaticReload,
}

impl CheckId {
    /// The kebab-case name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::ConfigFlag => "config-flag",
            CheckId::Mounted => "mounted",
            CheckId::FileExists => "file-exists",
            CheckId::ValidConfig => "valid-config",
            CheckId::CoversSecrets => "covers-secrets",
            CheckId::EncryptsSecrets => "encrypts-secrets",
            CheckId::AutomaticReload => "automatic-reload",
        }
    }
}

/// A check's outcome. Serialised in kebab-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// The link holds.
    Pass,
    /// The link is broken: encryption at rest is not (fully) in effect.
    Fail,
    /// Not checked, because an earlier link failed.
    Skip,
    /// Information only; never a failure.
    Info,
}

impl CheckStatus {
    /// `pass`, `fail`, `skip` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "fail",
            CheckStatus::Skip => "skip",
            CheckStatus::Info => "info",
        }
    }
}

/// One check: what was found, and for a failure what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which link it is about.
    pub id: CheckId,
    /// The outcome.
    pub status: CheckStatus,
    /// What was found (one sentence; never key material).
    pub message: String,
    /// What to do about a failure (`None` when there is nothing to do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// What `check-apiserver` concludes, and so its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiserverVerdict {
    /// Every check passed (exit 0).
    Pass,
    /// At least one check failed (exit 1).
    Fail,
}

/// The result of [`check_manifest`]: the JSON schema of `atrest check-apiserver -o json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiserverReport {
    /// The manifest that was read.
    pub manifest: String,
    /// The container checked (its name, or `containers[i]` when it has none).
    pub container: String,
    /// The value of `--encryption-provider-config` (a path inside the pod); `null` if unset.
    pub config_path: Option<String>,
    /// The same file on this node, as the mounts map it (without the `--root` prefix); `null`
    /// when it could not be mapped.
    pub host_path: Option<String>,
    /// Whether `--encryption-provider-config-automatic-reload` is on.
    pub automatic_reload: bool,
    /// The checks, in chain order (see [`CheckId`]).
    pub checks: Vec<Check>,
    /// `fail` when any check failed.
    pub verdict: ApiserverVerdict,
}

impl ApiserverReport {
    /// The check with this id, if it was made.
    pub fn check(&self, id: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Why a manifest could not be checked at all (exit 2).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApiserverError {
    /// The manifest could not be read.
    #[error("cannot read the kube-apiserver manifest {path}: {source}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest is not YAML shaped like a pod.
    #[error("the kube-apiserver manifest {path} is not a pod manifest: {message}")]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// What the YAML decoder said.
        message: String,
    },
    /// The manifest has no container.
    #[error("the kube-apiserver manifest {path} has no containers")]
    NoContainer {
        /// The manifest.
        path: PathBuf,
    },
}

/// The largest manifest [`check_manifest`] reads: 4 MiB (a real one is a few KiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// `path` (absolute, as seen on the node) under `root` (`/` on the node itself).
pub fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Reads a manifest and checks it (see the module docs). Node paths are looked up under `root`
/// (pass `/` on the node; a directory holding a copy of the node's files otherwise).
pub fn check_manifest(manifest: &Path, root: &Path) -> Result<ApiserverReport, ApiserverError> {
    let parse_err = |message: String| ApiserverError::Parse {
        path: manifest.to_owned(),
        message,
    };
    let bytes = crate::config::read_at_most(manifest, MAX_MANIFEST_BYTES).map_err(|source| {
        ApiserverError::Read {
            path: manifest.to_owned(),
            source,
        }
    })?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(parse_err(format!(
            "the file is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        parse_err(format!(
            "the file is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    // The YAML scanner slows down quadratically with flow nesting; refuse deep files first.
    if let Some(line) = crate::config::flow_too_deep(&text) {
        return Err(parse_err(format!(
            "flow collections ([ or {{) nest more than {} levels deep at line {line}",
            crate::config::MAX_FLOW_DEPTH
        )));
    }
    let pod = StaticPod::from_yaml(&text).map_err(|e| ApiserverError::Parse {
        path: manifest.to_owned(),
        message: e.to_string(),
    })?;
    check_pod(&pod, manifest, root)
}

/// Checks an already parsed manifest; `manifest` only names it in the report.
pub fn check_pod(
    pod: &StaticPod,
    manifest: &Path,
    root: &Path,
) -> Result<ApiserverReport, ApiserverError> {
    let container = pod
        .apiserver_container()
        .ok_or_else(|| ApiserverError::NoContainer {
            path: manifest.to_owned(),
        })?;
    let container_name = container.name.clone().unwrap_or_else(|| {
        let i = pod
            .spec
            .containers
            .iter()
            .position(|c| std::ptr::eq(c, container))
            .unwrap_or_default();
        format!("containers[{i}]")
    });
    let config_path = container.flag(CONFIG_FLAG).filter(|v| !v.is_empty());
    // A bare boolean flag is true; a value is read as Go's strconv.ParseBool reads it.
    let reload = container
        .flag(RELOAD_FLAG)
        .is_some_and(|v| matches!(v.as_str(), "" | "1" | "t" | "T" | "true" | "TRUE" | "True"));

    let mut checks = Vec::new();
    let mut host_path = None;
    let link = Link {
        pod,
        container,
        container_name: &container_name,
        manifest,
        root,
    };
    link.run_chain(config_path.as_deref(), &mut checks, &mut host_path);
    skip_unchecked(&mut checks);
    checks.push(check_automatic_reload(reload));
    let verdict = if checks.iter().any(|c| c.status == CheckStatus::Fail) {
        ApiserverVerdict::Fail
    } else {
        ApiserverVerdict::Pass
    };
    Ok(ApiserverReport {
        manifest: manifest.display().to_string(),
        container: container_name,
        config_path,
        host_path,
        automatic_reload: reload,
        checks,
        verdict,
    })
}

/// What every link of the chain may need to know.
struct Link<'a> {
    pod: &'a StaticPod,
    container: &'a Container,
    container_name: &'a str,
    manifest: &'a Path,
    root: &'a Path,
}

/// A check, and what the next link needs (`None`: the chain stops here).
type Outcome<T> = (Check, Option<T>);

/// Records a link's check and hands on what the next link needs.
fn record<T>(checks: &mut Vec<Check>, (check, next): Outcome<T>) -> Option<T> {
    checks.push(check);
    next
}

fn pass(id: CheckId, message: String) -> Check {
    Check {
        id,
        status: CheckStatus::Pass,
        message,
        advice: None,
    }
}

fn fail(id: CheckId, message: String, advice: String) -> Check {
    Check {
        id,
        status: CheckStatus::Fail,
        message,
        advice: Some(advice),
    }
}

impl Link<'_> {
    /// Follows the chain link by link, stopping at the first failure. `host_path` is set as soon
    /// as the mounts map the file, even when a later link fails.
    fn run_chain(
        &self,
        config_path: Option<&str>,
        checks: &mut Vec<Check>,
        host_path: &mut Option<String>,
    ) -> Option<()> {
        let pod_path = record(checks, self.check_config_flag(config_path))?;
        let host = record(checks, self.check_mounted(pod_path))?;
        *host_path = Some(host.clone());
        let on_disk = record(checks, self.check_file_exists(&host))?;
        let config = record(checks, check_valid_config(&on_disk, &host))?;
        let first = record(checks, check_covers_secrets(&config))?;
        record(checks, check_encrypts_secrets(first, &host))
    }

    fn check_config_flag<'p>(&self, config_path: Option<&'p str>) -> Outcome<&'p str> {
        let Some(pod_path) = config_path else {
            let check = fail(
                CheckId::ConfigFlag,
                format!(
                    "{CONFIG_FLAG} is not set: kube-apiserver stores every resource unencrypted"
                ),
                format!(
                    "write a config (`atrest config new --out /etc/kubernetes/enc/enc.yaml`), add \
                     `- {CONFIG_FLAG}=/etc/kubernetes/enc/enc.yaml` to the command of {} with a \
                     hostPath volume and volumeMount for /etc/kubernetes/enc, then run \
                     `atrest rewrite` once kube-apiserver has restarted",
                    self.manifest.display()
                ),
            );
            return (check, None);
        };
        (
            pass(CheckId::ConfigFlag, format!("{CONFIG_FLAG}={pod_path}")),
            Some(pod_path),
        )
    }

    fn check_mounted(&self, pod_path: &str) -> Outcome<String> {
        if !pod_path.starts_with('/') {
            let check = fail(
                CheckId::Mounted,
                format!("{pod_path} is a relative path: it resolves against kube-apiserver's working directory"),
                format!("give {CONFIG_FLAG} an absolute path inside a hostPath volumeMount"),
            );
            return (check, None);
        }
        let dir = Path::new(pod_path)
            .parent()
            .map_or_else(|| "/".to_owned(), |d| d.display().to_string());
        let container_name = self.container_name;
        match map_to_host(self.pod, self.container, pod_path) {
            None => (
                fail(
                    CheckId::Mounted,
                    format!("no volumeMount of container {container_name} contains {pod_path}: kube-apiserver cannot read the file and will not start"),
                    format!(
                        "add a volumeMount {{mountPath: {dir}, readOnly: true}} to the container and a \
                         volume {{hostPath: {{path: {dir}, type: DirectoryOrCreate}}}} with the same name"
                    ),
                ),
                None,
            ),
            Some(MountMapping {
                volume,
                host_path: None,
                ..
            }) => (
                fail(
                    CheckId::Mounted,
                    format!("{pod_path} is in volume {volume:?}, which is not a hostPath volume: a static pod sees the node's file only through hostPath"),
                    format!("make volume {volume:?} a hostPath volume for the node directory holding the file"),
                ),
                None,
            ),
            Some(MountMapping {
                volume,
                mount_path,
                host_path: Some(host),
                ..
            }) => (
                pass(
                    CheckId::Mounted,
                    format!("mounted from the node's {host} (volume {volume:?} at {mount_path})"),
                ),
                Some(host),
            ),
        }
    }

    fn check_file_exists(&self, host: &str) -> Outcome<PathBuf> {
        let on_disk = under_root(self.root, host);
        if !on_disk.is_file() {
            let check = fail(
                CheckId::FileExists,
                format!("{host} does not exist on this node{}", if on_disk.exists() { " as a file" } else { "" }),
                format!(
                    "copy the EncryptionConfiguration to {host} (mode 0600) on every control-plane node; \
                     until then kube-apiserver does not start"
                ),
            );
            return (check, None);
        }
        (
            pass(CheckId::FileExists, format!("{host} exists")),
            Some(on_disk),
        )
    }
}

fn check_valid_config(on_disk: &Path, host: &str) -> Outcome<Config> {
    match Config::load(on_disk) {
        Ok(config) => (
            pass(
                CheckId::ValidConfig,
                format!("{host} is a valid EncryptionConfiguration"),
            ),
            Some(config),
        ),
        Err(e) => (
            fail(
                CheckId::ValidConfig,
                format!("kube-apiserver would refuse {host}: {e}"),
                format!("fix the file (`atrest config check {host}` shows every error), or write a new one with `atrest config new`"),
            ),
            None,
        ),
    }
}

/// The first provider for secrets: its field path, kind and first key name.
struct FirstProvider {
    path: String,
    kind: ProviderKind,
    key: Option<String>,
}

fn check_covers_secrets(config: &Config) -> Outcome<FirstProvider> {
    let providers = config.providers_for("", "secrets");
    let Some(((ri, pi), first)) = providers.first() else {
        let check = fail(
            CheckId::CoversSecrets,
            "no rule covers secrets: kube-apiserver stores Secrets unencrypted".to_owned(),
            "add `secrets` to a resources list (first), with an encrypting provider before identity".to_owned(),
        );
        return (check, None);
    };
    let (kind, key) = first_provider(first);
    let check = pass(
        CheckId::CoversSecrets,
        format!(
            "secrets are covered by resources[{ri}] ({} provider(s))",
            providers.len()
        ),
    );
    let first = FirstProvider {
        path: format!("resources[{ri}].providers[{pi}]"),
        kind,
        key: key.map(str::to_owned),
    };
    (check, Some(first))
}

fn check_encrypts_secrets(first: FirstProvider, host: &str) -> Outcome<()> {
    let FirstProvider { path, kind, key } = first;
    if kind == ProviderKind::Identity {
        let check = fail(
            CheckId::EncryptsSecrets,
            format!("the first provider for secrets ({path}) is identity: new Secrets are written unencrypted"),
            format!(
                "move an encrypting provider (aesgcm, secretbox, aescbc or kms v2) before identity \
                 (`atrest config rotate {host} --stage add`, then `--stage promote`), restart \
                 kube-apiserver, then run `atrest rewrite`"
            ),
        );
        return (check, None);
    }
    let check = pass(
        CheckId::EncryptsSecrets,
        format!(
            "new Secrets are encrypted with {kind}{} ({path})",
            key.map(|k| format!(" key {k:?}")).unwrap_or_default()
        ),
    );
    (check, Some(()))
}

/// Marks every link the chain did not reach as skipped.
fn skip_unchecked(checks: &mut Vec<Check>) {
    for id in [
        CheckId::ConfigFlag,
        CheckId::Mounted,
        CheckId::FileExists,
        CheckId::ValidConfig,
        CheckId::CoversSecrets,
        CheckId::EncryptsSecrets,
    ] {
        if !checks.iter().any(|c| c.id == id) {
            checks.push(Check {
                id,
                status: CheckStatus::Skip,
                message: "not checked: an earlier check failed".to_owned(),
                advice: None,
            });
        }
    }
}

fn check_automatic_reload(reload: bool) -> Check {
    Check {
        id: CheckId::AutomaticReload,
        status: CheckStatus::Info,
        message: if reload {
            format!("{RELOAD_FLAG} is on: kube-apiserver re-reads the file when it changes (about once a minute)")
        } else {
            format!("{RELOAD_FLAG} is off: restart kube-apiserver after every change to the file")
        },
        advice: None,
    }
}

/// The kind and (first) key name of a provider element.
fn first_provider(p: &crate::config::ProviderConfiguration) -> (ProviderKind, Option<&str>) {
    fn first_key(keys: &[crate::config::Key]) -> Option<&str> {
        keys.first().map(|k| k.name.as_str())
    }
    if let Some(c) = &p.aescbc {
        (ProviderKind::Aescbc, first_key(&c.keys))
    } else if let Some(c) = &p.aesgcm {
        (ProviderKind::Aesgcm, first_key(&c.keys))
    } else if let Some(c) = &p.secretbox {
        (ProviderKind::Secretbox, first_key(&c.keys))
    } else if let Some(k) = &p.kms {
        (ProviderKind::Kms, Some(k.name.as_str()))
    } else {
        (ProviderKind::Identity, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --advertise-address=10.0.0.1
    - --encryption-provider-config
    - /etc/kubernetes/enc/enc.yaml
    - --encryption-provider-config-automatic-reload=true
    volumeMounts:
    - {mountPath: /etc/kubernetes/pki, name: k8s-certs, readOnly: true}
    - {mountPath: /etc/kubernetes/enc, name: enc, readOnly: true}
    - {mountPath: /etc/kubernetes/enc/sub, name: other}
  volumes:
  - {name: k8s-certs, hostPath: {path: /etc/kubernetes/pki, type: DirectoryOrCreate}}
  - {name: enc, hostPath: {path: /srv/enc/, type: DirectoryOrCreate}}
  - {name: other, emptyDir: {}}
";

    #[test]
    fn reads_flags_in_both_spellings() {
        let pod = StaticPod::from_yaml(POD).unwrap();
        let c = pod.apiserver_container().unwrap();
        assert_eq!(
            c.flag(CONFIG_FLAG).as_deref(),
            Some("/etc/kubernetes/enc/enc.yaml")
        );
        assert_eq!(c.flag(RELOAD_FLAG).as_deref(), Some("true"));
        assert_eq!(c.flag("--missing"), None);
        let bare = Container {
            args: vec!["--a".into(), "--b=1".into()],
            ..Container::default()
        };
        assert_eq!(bare.flag("--a").as_deref(), Some(""));
        assert_eq!(bare.flag("--b").as_deref(), Some("1"));
    }

    #[test]
    fn maps_pod_paths_through_the_most_specific_mount() {
        let pod = StaticPod::from_yaml(POD).unwrap();
        let c = pod.apiserver_container().unwrap();
        let m = map_to_host(&pod, c, "/etc/kubernetes/enc/enc.yaml").unwrap();
        assert_eq!(m.host_path.as_deref(), Some("/srv/enc/enc.yaml"));
        let m = map_to_host(&pod, c, "/etc/kubernetes/enc/sub/x.yaml").unwrap();
        assert_eq!((m.volume.as_str(), m.host_path), ("other", None));
        assert!(map_to_host(&pod, c, "/etc/kubernetes/encx/enc.yaml").is_none());
        let file_mount = Container {
            volume_mounts: vec![VolumeMount {
                name: "enc".into(),
                mount_path: "/etc/enc.yaml".into(),
                sub_path: None,
            }],
            ..Container::default()
        };
        let m = map_to_host(&pod, &file_mount, "/etc/enc.yaml").unwrap();
        assert_eq!(m.host_path.as_deref(), Some("/srv/enc"));
    }

    #[test]
    fn missing_file_fails_and_skips_the_rest() {
        let pod = StaticPod::from_yaml(POD).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = check_pod(&pod, Path::new("m.yaml"), dir.path()).unwrap();
        assert_eq!(r.verdict, ApiserverVerdict::Fail);
        assert!(r.automatic_reload);
        let status: Vec<_> = r.checks.iter().map(|c| (c.id, c.status)).collect();
        assert_eq!(
            status,
            [
                (CheckId::ConfigFlag, CheckStatus::Pass),
                (CheckId::Mounted, CheckStatus::Pass),
                (CheckId::FileExists, CheckStatus::Fail),
                (CheckId::ValidConfig, CheckStatus::Skip),
                (CheckId::CoversSecrets, CheckStatus::Skip),
                (CheckId::EncryptsSecrets, CheckStatus::Skip),
                (CheckId::AutomaticReload, CheckStatus::Info),
            ]
        );
        assert!(r.check(CheckId::FileExists).unwrap().advice.is_some());
    }
}
