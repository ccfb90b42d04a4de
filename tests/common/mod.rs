//! The shared integration-test harness: a real etcd server on loopback.
//!
//! [`EtcdServer::start`] runs Debian's `etcd` binary on free loopback ports in a temporary data
//! directory and kills it when dropped. A missing `etcd` binary is a loud failure, never a skip.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds the etcd binary (`$ATREST_TEST_ETCD`, else `etcd` on PATH); panics with advice if absent.
pub fn etcd_binary() -> PathBuf {
    let name = std::env::var_os("ATREST_TEST_ETCD").unwrap_or_else(|| "etcd".into());
    which(Path::new(&name)).unwrap_or_else(|| {
        panic!(
            "etcd binary {name:?} not found: integration tests need a real etcd. \
             Install it with `apt-get install etcd-server etcd-client` (see .ci/run)"
        )
    })
}

/// Finds the etcdctl binary; panics with advice if absent.
pub fn etcdctl_binary() -> PathBuf {
    which(Path::new("etcdctl")).unwrap_or_else(|| {
        panic!("etcdctl not found: install it with `apt-get install etcd-client` (see .ci/run)")
    })
}

fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (the listener is closed before returning).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Extra command-line flags for etcd (TLS, cluster membership).
#[derive(Default, Clone)]
pub struct EtcdOptions {
    /// Serve clients over https with these flags appended (e.g. `--cert-file`…).
    pub tls_flags: Vec<String>,
    /// `https` or `http` for client URLs.
    pub client_scheme: Option<&'static str>,
}

/// A running etcd server, killed and its data removed on drop.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` (or https).
    pub endpoint: String,
    /// The peer URL.
    pub peer_url: String,
    name: String,
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it serves requests.
    pub fn start() -> EtcdServer {
        Self::start_with(EtcdOptions::default())
    }

    /// Starts a single-member etcd with extra options.
    pub fn start_with(opts: EtcdOptions) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let scheme = opts.client_scheme.unwrap_or("http");
        let client = format!("{scheme}://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let name = "atrest-test".to_owned();
        let cluster = format!("{name}={peer}");
        let mut server = EtcdServer {
            child: None,
            dir,
            endpoint: client,
            peer_url: peer,
            name,
        };
        server.spawn(&cluster, "new", &opts.tls_flags);
        server.wait_ready(&opts);
        server
    }

    fn spawn(&mut self, initial_cluster: &str, state: &str, extra: &[String]) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&self.endpoint)
            .arg("--advertise-client-urls")
            .arg(&self.endpoint)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(state)
            .args(["--log-level", "error"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    fn wait_ready(&mut self, opts: &EtcdOptions) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self
            .endpoint
            .rsplit("//")
            .next()
            .expect("endpoint has a host")
            .to_owned();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd exited early ({status}); log:\n{}", self.log());
                }
            }
            let connected = std::net::TcpStream::connect(&addr).is_ok();
            if connected && (opts.tls_flags.is_empty() && self.etcdctl_ok()) {
                return;
            }
            if connected && !opts.tls_flags.is_empty() {
                // TLS servers are probed by the caller with its own certificates.
                std::thread::sleep(Duration::from_millis(300));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready in 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn etcdctl_ok(&self) -> bool {
        Command::new(etcdctl_binary())
            .args([
                "--endpoints",
                &self.endpoint,
                "--command-timeout=2s",
                "endpoint",
                "health",
            ])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// The server's data directory (`member/snap/db` lives under it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs etcdctl against this server and returns stdout; panics on failure.
    pub fn etcdctl(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(etcdctl_binary())
            .args(["--endpoints", &self.endpoint])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Saves a snapshot with `etcdctl snapshot save` and returns its path.
    pub fn snapshot_save(&self, file_name: &str) -> PathBuf {
        let path = self.dir.path().join(file_name);
        self.etcdctl(&["snapshot", "save", path.to_str().expect("utf-8 temp path")]);
        path
    }

    /// Connects an etcd-client to this (plain-http) server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None)
            .await
            .expect("connect etcd-client")
    }

    /// Stops the server (SIGKILL) but keeps its data directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes raw bytes under `key` (values are binary, so etcdctl's argv is not used).
pub async fn put_raw(client: &mut etcd_client::Client, key: &[u8], value: &[u8]) -> i64 {
    let resp = client
        .put(key.to_vec(), value.to_vec(), None)
        .await
        .expect("put");
    resp.header().expect("response header").revision()
}
