//! Configs that kube-apiserver accepts but that protect less than their author may think.
//!
//! Warnings never carry key material: they name field paths only.

use std::fmt;

use super::go::decode_secret;
use super::model::EncryptionConfiguration;
use super::parse_group_resource;
use super::validate::kms_api_version;

/// A weakness in a valid config: where it is and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The field path the warning is about (`resources[0].providers[0]`), or `resources` for
    /// the file as a whole.
    pub path: String,
    /// What is weak and what to do instead.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The warnings for a validated model, in file order (per entry: identity first, aescbc first,
/// KMS v1, shared key material), then whole-file ones (secrets not covered).
pub(crate) fn warnings(model: &EncryptionConfiguration) -> Vec<Warning> {
    let mut out = Vec::new();
    // The first path each distinct key was seen at. Keyed by the decoded bytes (wiped on drop).
    let mut seen: Vec<(zeroize::Zeroizing<Vec<u8>>, String)> = Vec::new();
    // Resources named by an earlier entry: kube-apiserver appends a later entry's providers to
    // that resource's chain, so the later entry's first provider never writes it.
    let mut earlier: std::collections::HashSet<(&str, &str)> = std::collections::HashSet::new();
    for (i, entry) in model.resources.iter().enumerate() {
        let written: Vec<&str> = entry
            .resources
            .iter()
            .filter(|r| !earlier.contains(&parse_group_resource(r)))
            .map(String::as_str)
            .collect();
        earlier.extend(entry.resources.iter().map(|r| parse_group_resource(r)));
        let names = written.join(", ");
        if let Some(first) = entry.providers.first().filter(|_| !written.is_empty()) {
            let path = format!("resources[{i}].providers[0]");
            if first.identity.is_some() {
                out.push(Warning {
                    path: path.clone(),
                    message: format!(
                        "identity is the first provider, so new writes of {names} are stored unencrypted"
                    ),
                });
            } else if first.aesgcm.is_some() {
                out.push(Warning {
                    path: format!("{path}.aesgcm"),
                    message: "aesgcm encrypts new writes with random nonces: the Kubernetes \
                              documentation says its keys must be rotated every 200k writes \
                              (atrest config rotate); a rewrite spends one write per entry; \
                              consider kms v2"
                        .to_owned(),
                });
            } else if first.aescbc.is_some() {
                out.push(Warning {
                    path: format!("{path}.aescbc"),
                    message: "aescbc encrypts new writes; the Kubernetes documentation no longer \
                              recommends it because CBC is vulnerable to padding oracle attacks; \
                              consider aesgcm with regular key rotation, or kms v2"
                        .to_owned(),
                });
            }
        }
        // The first path each (provider type, key name) was seen at in this entry.
        let mut names: Vec<(&str, &str, String)> = Vec::new();
        for (j, provider) in entry.providers.iter().enumerate() {
            let path = format!("resources[{i}].providers[{j}]");
            if let Some(kms) = &provider.kms {
                if kms_api_version(kms) == "v1" {
                    out.push(Warning {
                        path: format!("{path}.kms"),
                        message: "KMS v1 is deprecated: kube-apiserver 1.29 and later refuse it \
                                  unless started with --feature-gates=KMSv1=true; migrate to \
                                  apiVersion: v2"
                            .to_owned(),
                    });
                }
            }
            let (kind, keys) = if let Some(c) = &provider.aesgcm {
                ("aesgcm", &c.keys)
            } else if let Some(c) = &provider.aescbc {
                ("aescbc", &c.keys)
            } else if let Some(c) = &provider.secretbox {
                ("secretbox", &c.keys)
            } else {
                continue;
            };
            for (k, key) in keys.iter().enumerate() {
                let key_path = format!("{path}.{kind}.keys[{k}]");
                if let Some((_, _, first)) = names
                    .iter()
                    .find(|(t, n, _)| *t == kind && *n == key.name.as_str())
                {
                    out.push(Warning {
                        path: format!("{key_path}.name"),
                        message: format!(
                            "the name {:?} is also used by {first}: both write the prefix \
                             k8s:enc:{kind}:v1:{}:, so a stored value no longer tells which key \
                             wrote it; give every key its own name",
                            key.name, key.name
                        ),
                    });
                } else {
                    names.push((kind, key.name.as_str(), key_path.clone()));
                }
                let Ok(bytes) = decode_secret(key.secret.expose_secret()) else {
                    continue;
                };
                if let Some((_, first)) = seen.iter().find(|(b, _)| **b == *bytes) {
                    out.push(Warning {
                        path: key_path,
                        message: format!(
                            "uses the same key material as {first}; give every key its own random secret"
                        ),
                    });
                } else {
                    seen.push((bytes, key_path));
                }
            }
        }
    }
    let covers_secrets = model.resources.iter().any(|e| {
        e.resources.iter().any(|r| {
            matches!(
                parse_group_resource(r),
                ("", "secrets") | ("", "*") | ("*", "*")
            )
        })
    });
    if !covers_secrets {
        out.push(Warning {
            path: "resources".to_owned(),
            message: "no rule covers secrets, so kube-apiserver stores them unencrypted; add \
                      secrets to a resources list"
                .to_owned(),
        });
    }
    out
}
