//! The shared integration-test harness: a real etcd server on loopback.
//!
//! [`EtcdServer::start`] runs Debian's `etcd` binary on free loopback ports in a temporary data
//! directory and kills it when dropped. A missing `etcd` binary is a loud failure, never a skip.
//!
//! `ATREST_TEST_ETCD` and `ATREST_TEST_ETCDCTL` name other binaries (a path, or a name looked up
//! on PATH): `.ci/run` runs the suite once more against etcd 3.6 built by the interop tier
//! (`tests/interop/run`), with the etcdctl (3.4: it still has `snapshot restore`) left as is.
#![allow(dead_code, unreachable_pub)]

pub mod apiserver;
pub mod cli;
pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod apiserver_writes;
mod kine;
pub use apiserver_writes::{delete_key, put_key, try_delete_key, try_put_key};
pub use kine::KineServer;

/// What the harness's "etcd" really is: `kine` when `$ATREST_TEST_ETCD` is the kine stand-in
/// (`tests/interop/kine-as-etcd`), else `etcd` — the word atrest's reports put before the
/// endpoint in `source`.
pub fn store_kind() -> &'static str {
    match std::env::var_os("ATREST_TEST_ETCD") {
        Some(p) if p.to_string_lossy().ends_with("kine-as-etcd") => "kine",
        _ => "etcd",
    }
}

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

/// Finds the etcdctl binary (`$ATREST_TEST_ETCDCTL`, else `etcdctl` on PATH); panics with
/// advice if absent.
pub fn etcdctl_binary() -> PathBuf {
    let name = std::env::var_os("ATREST_TEST_ETCDCTL").unwrap_or_else(|| "etcdctl".into());
    which(Path::new(&name)).unwrap_or_else(|| {
        panic!(
            "etcdctl binary {name:?} not found: install it with \
             `apt-get install etcd-client` (see .ci/run)"
        )
    })
}

/// `snapshot restore` with the tool that matches the etcd under test: `$ATREST_TEST_ETCDUTL`
/// (`etcdutl snapshot restore`; etcd 3.6 no longer starts on a data directory restored by the
/// 3.4 etcdctl: "failed to update; member unknown"), else `etcdctl snapshot restore`. The
/// flags (`--data-dir`, `--name`, `--initial-cluster`, `--initial-advertise-peer-urls`) are the
/// same for both.
pub fn snapshot_restore_command() -> Command {
    let mut cmd =
        match std::env::var_os("ATREST_TEST_ETCDUTL") {
            Some(name) => Command::new(which(Path::new(&name)).unwrap_or_else(|| {
                panic!("etcdutl binary {name:?} (ATREST_TEST_ETCDUTL) not found")
            })),
            None => Command::new(etcdctl_binary()),
        };
    cmd.args(["snapshot", "restore"]).env("ETCDCTL_API", "3");
    cmd
}

fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 for a server a test starts (the probe listener is closed
/// before returning), never the same one twice in this process.
///
/// Asking the kernel for port 0 hands out ephemeral ports, which stay free only until someone
/// else takes them: between this call and etcd's bind, another test's etcd given the same
/// number, or any outgoing connection, could take it — and a test would then talk to another
/// test's etcd. So the ports come from below the ephemeral range (no outgoing connection uses
/// those), from a per-process counter (no two servers of this process share one), each checked
/// bindable. If the ephemeral range leaves no room below it, port 0 is used, still never twice.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const FIRST: u32 = 10_000;
    if low > FIRST + 2_000 {
        let span = low - FIRST;
        let offset = std::process::id() % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = u16::try_from(FIRST + (offset + n) % span).expect("below 65536");
            if !given.contains(&port) && bindable(port) {
                given.insert(port);
                return port;
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind a free loopback port");
        if given.insert(port) {
            return port;
        }
    }
}

/// Extra command-line flags for etcd (TLS, cluster membership).
#[derive(Default, Clone)]
pub struct EtcdOptions {
    /// Serve clients over https with these flags appended (e.g. `--cert-file`…).
    pub tls_flags: Vec<String>,
    /// `https` or `http` for client URLs.
    pub client_scheme: Option<&'static str>,
    /// Other etcd flags (e.g. `--quota-backend-bytes`), appended after the TLS ones.
    pub extra_flags: Vec<String>,
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
    /// Extra etcdctl flags (TLS client files) for readiness checks and [`EtcdServer::etcdctl`].
    etcdctl_flags: Vec<String>,
    /// How it was last started (initial cluster, state, extra flags), for [`EtcdServer::restart`].
    spawned: Option<(String, String, Vec<String>)>,
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
            etcdctl_flags: Vec::new(),
            spawned: None,
        };
        server.spawn(
            &cluster,
            "new",
            &[opts.tls_flags.clone(), opts.extra_flags.clone()].concat(),
        );
        server.wait_ready(&opts);
        server
    }

    /// Starts a single-member etcd that serves clients over https and requires a client
    /// certificate signed by `pki`'s CA (`--client-cert-auth`), and waits until etcdctl with
    /// the client certificate gets an answer.
    pub fn start_tls(pki: &TestPki) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let client = format!("https://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let name = "atrest-tls".to_owned();
        let cluster = format!("{name}={peer}");
        let mut server = EtcdServer {
            child: None,
            dir,
            endpoint: client,
            peer_url: peer,
            name,
            etcdctl_flags: pki.etcdctl_flags(),
            spawned: None,
        };
        server.spawn(&cluster, "new", &pki.server_flags());
        server.wait_healthy();
        server
    }

    fn spawn(&mut self, initial_cluster: &str, state: &str, extra: &[String]) {
        self.spawned = Some((initial_cluster.to_owned(), state.to_owned(), extra.to_vec()));
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

    /// Waits (30 s at most) until `etcdctl endpoint health` succeeds.
    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd exited early ({status}); log:\n{}", self.log());
                }
            }
            if self.etcdctl_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy in 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn etcdctl_ok(&self) -> bool {
        Command::new(etcdctl_binary())
            .args(["--endpoints", &self.endpoint, "--command-timeout=2s"])
            .args(&self.etcdctl_flags)
            .args(["endpoint", "health"])
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
            .args(&self.etcdctl_flags)
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

    /// Starts the server again on the same data directory, ports and flags (after
    /// [`EtcdServer::kill`]), and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        let (cluster, state, extra) = self.spawned.clone().expect("started before");
        self.spawn(&cluster, &state, &extra);
        self.wait_healthy();
    }

    /// The process id (panics when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd is running").id()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the server with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
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

/// A test certificate authority with a server certificate for loopback and a client
/// certificate, as PEM files in a temporary directory (generated with rcgen; ECDSA P-256).
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate (SAN 127.0.0.1, localhost), signed by the CA.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate (CN atrest-test), signed by the CA.
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates a fresh CA, server and client certificate.
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("atrest test CA {}", free_port()),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let leaf = |cn: &str, sans: Vec<String>, eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![eku];
            let cert = params
                .signed_by(&key, &ca_cert, &ca_key)
                .expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            "atrest-test-server",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key_pem) = leaf(
            "atrest-test",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        TestPki {
            ca: write("ca.crt", ca_cert.pem()),
            server_cert: write("server.crt", server_pem),
            server_key: write("server.key", server_key_pem),
            client_cert: write("client.crt", client_pem),
            client_key: write("client.key", client_key_pem),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// etcd flags: https clients, this CA, client certificates required.
    pub fn server_flags(&self) -> Vec<String> {
        let p = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        vec![
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            p(&self.ca),
            "--cert-file".into(),
            p(&self.server_cert),
            "--key-file".into(),
            p(&self.server_key),
        ]
    }

    /// etcdctl flags for a client holding this PKI's client certificate (atrest takes the same).
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let p = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        vec![
            "--cacert".into(),
            p(&self.ca),
            "--cert".into(),
            p(&self.client_cert),
            "--key".into(),
            p(&self.client_key),
        ]
    }
}

/// A cluster of etcd members on loopback (plain http), each killed on drop.
pub struct EtcdCluster {
    /// The members, in start order.
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    /// Starts `n` members that form one cluster, and waits until every member is healthy.
    pub fn start(n: usize) -> EtcdCluster {
        let mut members: Vec<EtcdServer> = (0..n)
            .map(|i| EtcdServer {
                child: None,
                dir: tempfile::tempdir().expect("temp dir for etcd"),
                endpoint: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                name: format!("m{i}"),
                etcdctl_flags: Vec::new(),
                spawned: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("atrest-{}", free_port());
        for m in &mut members {
            m.spawn(
                &initial_cluster,
                "new",
                &["--initial-cluster-token".to_owned(), token.clone()],
            );
        }
        for m in &mut members {
            m.wait_healthy();
        }
        EtcdCluster { members }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }
}

/// Writes many keys with up to 64 puts in flight (etcdctl manages about 40 puts/s, this about
/// 5,000). Each item is `(key, value, lease)`; lease 0 means none.
pub async fn put_many(client: &etcd_client::Client, items: Vec<(Vec<u8>, Vec<u8>, i64)>) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut in_flight = FuturesUnordered::new();
    for (key, value, lease) in items {
        if in_flight.len() >= 64 {
            in_flight.next().await;
        }
        let mut kv = client.kv_client();
        in_flight.push(async move {
            let options = (lease != 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
            kv.put(key, value, options).await.expect("put");
        });
    }
    while in_flight.next().await.is_some() {}
}

/// Whether the file's raw bytes hold `needle` anywhere (live, history or free pages): the
/// ground truth for residue counts, whatever the etcd version does with freed pages.
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let bytes = std::fs::read(path).expect("read the file");
    bytes.windows(needle.len()).any(|w| w == needle)
}

/// A deterministic pseudo-random byte string (xorshift), for values that must differ.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl EtcdServer {
    /// Restores `snapshot` with `snapshot restore` ([`snapshot_restore_command`]) into a fresh data directory and
    /// starts a single-member etcd on it (what an operator does with a backup).
    pub fn start_restored(snapshot: &Path) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let name = "atrest-test".to_owned();
        let cluster = format!("{name}={peer}");
        let data = dir.path().join("data");
        let out = snapshot_restore_command()
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", &name, "--initial-cluster", &cluster])
            .args(["--initial-advertise-peer-urls", &peer])
            .output()
            .expect("run snapshot restore");
        assert!(
            out.status.success(),
            "snapshot restore {} failed: {}",
            snapshot.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = EtcdServer {
            child: None,
            dir,
            endpoint: client,
            peer_url: peer,
            name,
            etcdctl_flags: Vec::new(),
            spawned: None,
        };
        server.spawn(&cluster, "new", &[]);
        server.wait_ready(&EtcdOptions::default());
        server
    }
}
