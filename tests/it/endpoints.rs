//! Which member answered, which did not, and why a TLS connection failed: what `audit`,
//! `status` and `rewrite` tell the user about the endpoints (issue 14, items 3 and 8).

use crate::common::cli::stderr;
use serde_json::Value;

use crate::audit::{atrest, write_config, CONFIG};
use crate::common::{free_port, EtcdServer, TestPki};

/// An endpoint nothing listens on (a port handed out once and never bound).
fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[test]
fn issue_14_3_the_member_that_answered_is_named_and_the_dead_one_reported() {
    let server = EtcdServer::start();
    let dead = dead_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let endpoints = format!("{dead},{}", server.endpoint);
    for command in ["audit", "status"] {
        let out = atrest()
            .args([
                command,
                "-o",
                "json",
                "--dial-timeout",
                "3",
                "--allow-empty",
            ])
            .args(["--endpoints", &endpoints])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{command}: {}", stderr(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            r["source"],
            format!("{} {}", crate::common::store_kind(), server.endpoint),
            "{command}"
        );
        let unanswered = r["unanswered"].as_array().expect("unanswered listed");
        assert_eq!(unanswered.len(), 1, "{command}: {r}");
        assert_eq!(unanswered[0]["endpoint"], dead.as_str());
        let error = unanswered[0]["error"].as_str().unwrap();
        assert!(error.contains("unreachable"), "{error}");
        let err = stderr(&out);
        assert!(err.contains(&dead) && err.contains("warning"), "{err}");
        assert!(err.contains(&format!("using {}", server.endpoint)), "{err}");
    }

    // Every member answering: no `unanswered` field, no warning.
    let out = atrest()
        .args([
            "audit",
            "-o",
            "json",
            "--allow-empty",
            "--endpoints",
            &server.endpoint,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r.get("unanswered").is_none(), "{r}");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));

    // rewrite's summary carries the same list.
    let out = atrest()
        .args(["rewrite", "-o", "json", "--dry-run", "--dial-timeout", "3"])
        .args(["--endpoints", &endpoints])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["unanswered"][0]["endpoint"], dead.as_str(), "{r}");
}

#[test]
fn issue_14_3_with_every_member_dead_each_is_named() {
    let (a, b) = (dead_endpoint(), dead_endpoint());
    let out = atrest()
        .args(["audit", "--dial-timeout", "2"])
        .args(["--endpoints", &format!("{a},{b}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains(&a) && err.contains(&b), "{err}");
    assert!(err.contains("none of the 2 etcd members answered"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

/// Runs `atrest audit` against a TLS etcd with the given file flags, expects exit 3 (the
/// store refused), and returns stderr.
fn refused_tls_audit(endpoint: &str, files: &[(&str, &std::path::Path)]) -> String {
    let mut cmd = atrest();
    cmd.args(["audit", "--dial-timeout", "3", "--endpoints", endpoint]);
    for (flag, path) in files {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    eprintln!("{err}");
    err
}

#[test]
fn issue_14_8_a_key_that_does_not_match_the_certificate_is_named() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    // The client certificate with the server's key: both valid PEM, not a pair.
    let err = refused_tls_audit(
        &server.endpoint,
        &[
            ("--cacert", pki.ca.as_path()),
            ("--cert", pki.client_cert.as_path()),
            ("--key", pki.server_key.as_path()),
        ],
    );
    assert!(
        err.contains(&pki.server_key.display().to_string())
            && err.contains(&pki.client_cert.display().to_string()),
        "both files named: {err}"
    );
    assert!(err.contains("does not match"), "{err}");
    assert!(
        err.contains("hint: pass the key that belongs to the certificate"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");
    assert!(!err.contains("check --endpoints"), "{err}");
}

#[test]
fn issue_14_8_a_missing_client_certificate_says_so() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let err = refused_tls_audit(&server.endpoint, &[("--cacert", pki.ca.as_path())]);
    assert!(
        err.contains("etcd requires a client certificate and none was given"),
        "{err}"
    );
    assert!(
        err.contains("hint: this etcd runs with --client-cert-auth: pass --cert and --key"),
        "{err}"
    );
}

#[test]
fn issue_14_8_a_certificate_from_another_ca_is_named() {
    let pki = TestPki::generate();
    let other = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    // A client certificate the server's CA did not sign.
    let err = refused_tls_audit(
        &server.endpoint,
        &[
            ("--cacert", pki.ca.as_path()),
            ("--cert", other.client_cert.as_path()),
            ("--key", other.client_key.as_path()),
        ],
    );
    assert!(
        err.contains(&other.client_cert.display().to_string()),
        "{err}"
    );
    // The server's certificate signed by a CA that --cacert does not hold.
    let err = refused_tls_audit(
        &server.endpoint,
        &[
            ("--cacert", other.ca.as_path()),
            ("--cert", pki.client_cert.as_path()),
            ("--key", pki.client_key.as_path()),
        ],
    );
    assert!(
        err.contains(&format!("not signed by the CA in {}", other.ca.display())),
        "{err}"
    );
}

#[test]
fn issue_13_the_quota_is_read_from_metrics_over_the_same_tls() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let out = atrest()
        .args([
            "rewrite",
            "--dry-run",
            "-o",
            "json",
            "--endpoints",
            &server.endpoint,
        ])
        .args(pki.etcdctl_flags())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // etcd 3.4 has its quota only on /metrics (read here over TLS with the client
    // certificate); 3.6 also reports it in Status, which is read first.
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let from = match r["space"]["etcd"]["quota_source"].as_str() {
        Some("metrics") => "/metrics",
        Some("status") => "status",
        other => panic!("quota from {other:?}: {r}"),
    };
    assert!(
        stderr(&out).contains(&format!("quota 2048.0 MiB (from etcd's {from})")),
        "{}",
        stderr(&out)
    );
    assert_eq!(r["space"]["etcd"]["quota_bytes"], 2u64 << 30, "{r}");
}
