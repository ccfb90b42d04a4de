//! A real kube-apiserver control plane for the tests: 1–3 instances on one test etcd.
//!
//! Each instance runs in its own UTS namespace with its own hostname (`unshare --uts`, then
//! `hostname cp-N`), so each holds its own identity Lease. All serve one certificate for
//! 127.0.0.1 from one test CA ([`super::TestPki`]). A static token file holds an admin token
//! (group `system:masters`) and a limited token ([`LIMITED_USER`], no RBAC at all);
//! `--endpoint-reconciler-type=none` is required on 127.0.0.1, so tests name each instance
//! with `--apiserver`.
//!
//! The binary is `$ATREST_TEST_KUBE_APISERVER`, else `target/interop/bin/kube-apiserver`
//! (built by `bash tests/interop/build-kube-apiserver`). A missing binary is a loud failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TestPki};

/// The admin user's token (in `system:masters`). Tests grep every output for it.
pub const ADMIN_TOKEN: &str = "atrest-test-admin-token-3f9c2e7d1b";
/// The limited user's token (no role bound).
pub const LIMITED_TOKEN: &str = "atrest-test-limited-token-8a41d0c6e2";
/// The limited user's name.
pub const LIMITED_USER: &str = "limited";

/// How long one instance may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The kube-apiserver binary: `$ATREST_TEST_KUBE_APISERVER` or the interop build's.
pub fn kube_apiserver_binary() -> PathBuf {
    let path = std::env::var_os("ATREST_TEST_KUBE_APISERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop/bin/kube-apiserver")
        });
    assert!(
        path.is_file(),
        "kube-apiserver not found at {}: build it with `bash tests/interop/build-kube-apiserver` \
         (or set ATREST_TEST_KUBE_APISERVER)",
        path.display()
    );
    path
}

/// One instance.
struct Instance {
    hostname: String,
    port: u16,
    config: PathBuf,
    reload: bool,
    child: Option<Child>,
}

/// A control plane of kube-apiserver instances on one etcd; every instance is killed on drop.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    pki: TestPki,
    etcd: String,
    instances: Vec<Instance>,
    /// The kubeconfig (admin token, CA) pointing at instance 0.
    pub kubeconfig: PathBuf,
    /// The same with the limited token.
    pub limited_kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts `n` instances (hostnames `cp-1`…`cp-n`) on `etcd` with `config` as
    /// `--encryption-provider-config`, and waits until each answers `/readyz` and holds its
    /// identity Lease.
    pub async fn start(n: usize, etcd: &str, config: &Path) -> ControlPlane {
        Self::start_with(n, etcd, config, false).await
    }

    /// As [`ControlPlane::start`], with `--encryption-provider-config-automatic-reload`.
    pub async fn start_with(n: usize, etcd: &str, config: &Path, reload: bool) -> ControlPlane {
        let dir = tempfile::tempdir().expect("temp dir for kube-apiserver");
        let pki = TestPki::generate();
        write_static_files(dir.path());
        let mut plane = ControlPlane {
            kubeconfig: dir.path().join("admin.kubeconfig"),
            limited_kubeconfig: dir.path().join("limited.kubeconfig"),
            dir,
            pki,
            etcd: etcd.to_owned(),
            instances: Vec::new(),
        };
        for i in 0..n {
            plane.instances.push(Instance {
                hostname: format!("cp-{}", i + 1),
                port: free_port(),
                config: config.to_owned(),
                reload,
                child: None,
            });
        }
        plane.write_kubeconfig(&plane.kubeconfig, ADMIN_TOKEN);
        plane.write_kubeconfig(&plane.limited_kubeconfig, LIMITED_TOKEN);
        for i in 0..n {
            plane.spawn(i);
        }
        for i in 0..n {
            plane.wait_ready(i).await;
        }
        plane
    }

    /// Instance `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.instances[i].port)
    }

    /// Every instance's URL, comma-separated (for `--apiserver`).
    pub fn urls(&self) -> String {
        (0..self.instances.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Instance `i`'s hostname.
    pub fn hostname(&self, i: usize) -> &str {
        &self.instances[i].hostname
    }

    /// A directory that lives as long as the control plane.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Stops instance `i` (SIGKILL): its identity Lease stays live for an hour.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.instances[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts instance `i` with `config`, and waits until it is ready.
    pub async fn restart(&mut self, i: usize, config: &Path) {
        self.kill(i);
        self.instances[i].config = config.to_owned();
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// A kube client (admin) for instance `i`.
    pub async fn client(&self, i: usize) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.cluster_url = self.url(i).parse().unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Instance `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.instances[i].hostname))
    }

    fn spawn(&mut self, i: usize) {
        let binary = kube_apiserver_binary();
        let dir = self.dir.path();
        let inst = &self.instances[i];
        let cert_dir = dir.join(format!("certs-{}", inst.hostname));
        let mut flags = vec![
            format!("--etcd-servers={}", self.etcd),
            format!("--secure-port={}", inst.port),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--tls-cert-file={}", self.pki.server_cert.display()),
            format!("--tls-private-key-file={}", self.pki.server_key.display()),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=RBAC".to_owned(),
            "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--encryption-provider-config={}", inst.config.display()),
        ];
        if inst.reload {
            flags.push("--encryption-provider-config-automatic-reload=true".to_owned());
        }
        let script = format!("hostname {} && exec \"$0\" \"$@\"", inst.hostname);
        let log = std::fs::File::create(self.log_path(i)).expect("kube-apiserver log");
        let child = Command::new("unshare")
            .args(["--uts", "sh", "-c", &script])
            .arg(&binary)
            .args(&flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start unshare --uts kube-apiserver");
        self.instances[i].child = Some(child);
    }

    /// Waits until instance `i` answers `/readyz` with 200 and its identity Lease exists.
    async fn wait_ready(&mut self, i: usize) {
        let start = Instant::now();
        let client = self.client(i).await;
        let lease = atrest::apiserver::identity::apiserver_id(&self.instances[i].hostname);
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client.clone(), "kube-system");
        loop {
            if let Some(status) = self.instances[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "kube-apiserver {} exited ({status}) before it was ready:\n{}",
                    self.instances[i].hostname,
                    tail(&self.log(i))
                );
            }
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            let ready = client.request_text(request).await.is_ok();
            if ready && leases.get_opt(&lease).await.ok().flatten().is_some() {
                return;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "kube-apiserver {} not ready after {READY_TIMEOUT:?}:\n{}",
                self.instances[i].hostname,
                tail(&self.log(i))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn write_kubeconfig(&self, path: &Path, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user}}\ncurrent-context: test\n",
            self.url(0),
            self.pki.ca.display()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for i in 0..self.instances.len() {
            self.kill(i);
        }
    }
}

/// The service-account key pair (ECDSA P-256) and
/// the static token file.
fn write_static_files(dir: &Path) {
    let key = rcgen::KeyPair::generate().expect("service-account key");
    std::fs::write(dir.join("sa.key"), key.serialize_pem()).expect("write sa.key");
    std::fs::write(dir.join("sa.pub"), key.public_key_pem()).expect("write sa.pub");
    let tokens = format!(
        "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n{LIMITED_TOKEN},{LIMITED_USER},limited-uid\n"
    );
    std::fs::write(dir.join("tokens.csv"), tokens).expect("write tokens.csv");
}

fn tail(log: &str) -> String {
    let lines: Vec<_> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
