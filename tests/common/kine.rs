//! A real kine (k3s's etcd-API shim over SQLite) on loopback, for the tests that need kine's
//! own behaviour or its `state.db`. Built by `bash tests/interop/build-kine` (`.ci/run` does);
//! a missing binary is a loud failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The kine binary: `$ATREST_TEST_KINE`, else `target/interop/bin/kine`.
pub fn kine_binary() -> PathBuf {
    let path = std::env::var_os("ATREST_TEST_KINE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop/bin/kine"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "kine binary {} not found: the kine tests need a real kine. Build it with \
         `bash tests/interop/build-kine` (needs Go >= 1.24 and gcc; .ci/run does it)",
        path.display()
    );
    path
}

/// A running kine over a SQLite file in a temporary directory; killed on drop.
pub struct KineServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl KineServer {
    /// Starts kine with a new database and waits until it answers.
    pub fn start() -> KineServer {
        let dir = tempfile::tempdir().expect("temp dir for kine");
        let mut k = KineServer {
            child: None,
            endpoint: format!("http://127.0.0.1:{}", super::free_port()),
            dir,
        };
        k.spawn();
        k
    }

    /// Starts kine on an existing database file (copied into a new directory).
    pub fn start_on(db: &Path) -> KineServer {
        let dir = tempfile::tempdir().expect("temp dir for kine");
        std::fs::copy(db, dir.path().join("state.db")).expect("copy the database");
        let mut k = KineServer {
            child: None,
            endpoint: format!("http://127.0.0.1:{}", super::free_port()),
            dir,
        };
        k.spawn();
        k
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("kine.log")).expect("kine log");
        let child = Command::new(kine_binary())
            .arg("--listen-address")
            .arg(self.endpoint.trim_start_matches("http://"))
            .arg("--endpoint")
            .arg(format!(
                "sqlite://{}?_journal=WAL&cache=shared",
                self.db_path().display()
            ))
            // Compaction only when asked (kube-apiserver's compactor, or a test), keeping no
            // minimum number of revisions.
            .args(["--metrics-bind-address", "0", "--compact-min-retain", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kine");
        self.child = Some(child);
        let addr = self.endpoint.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("kine exited early ({status}); log:\n{}", self.log());
            }
            if std::net::TcpStream::connect(&addr).is_ok() && self.answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kine did not answer in 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers(&self) -> bool {
        Command::new(super::etcdctl_binary())
            .args(["--endpoints", &self.endpoint, "--command-timeout=2s"])
            .args(["get", "/registry/health"])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// kine's SQLite file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// kine's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kine.log")).unwrap_or_default()
    }

    /// Connects an etcd-client to kine.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None)
            .await
            .expect("connect etcd-client to kine")
    }

    /// Stops kine (SIGTERM, so SQLite checkpoints its WAL into the file) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KineServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
