//! The command-line surface, as clap derive types (the parsed, low-level form).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Kubernetes encryption at rest: check configs, audit and re-encrypt every resource
/// kube-apiserver stores in etcd (byte for byte as it stores them), and prove that each running
/// kube-apiserver has loaded the config.
#[derive(Debug, Parser)]
#[command(
    name = "atrest",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_long_help = EXIT_STATUS
)]
pub(crate) struct Cli {
    /// Output format (default: table on a terminal, json otherwise).
    #[arg(short = 'o', long = "output", global = true, value_parser = parse_output, value_name = "table|json|prometheus")]
    pub(crate) output: Option<OutputFormat>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The exit statuses, for `--help` and the man pages.
pub(crate) const EXIT_STATUS: &str = "EXIT STATUS:
  0  nothing to report
  1  findings (plaintext, stale with --strict, unreadable entries; an audit that read nothing),
     and refusals (the apiserver gate, the prune guard, a kube-apiserver that does not run the file)
  2  usage or configuration error
  3  a store, a KMS plugin or the Kubernetes API could not be reached or answered wrongly";

/// `-o FORMAT`: a format name; anything that looks like a file gets a hint towards `--out`.
fn parse_output(text: &str) -> Result<OutputFormat, String> {
    match text {
        "table" => Ok(OutputFormat::Table),
        "json" => Ok(OutputFormat::Json),
        "prometheus" => Ok(OutputFormat::Prometheus),
        file if file.contains(['.', '/']) => Err(format!(
            "{file:?} is not an output format (table, json, prometheus); to write to a file, did you mean --out {file}?"
        )),
        other => Err(format!(
            "{other:?} is not an output format: use table, json or prometheus"
        )),
    }
}

/// `--concurrency`: 1 to 10,000 transactions in flight.
fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?}: --concurrency takes 1 to 10000 transactions in flight (default 64)"
        )),
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// A human-readable table.
    Table,
    /// The JSON report (the library's report type).
    Json,
    /// Prometheus text exposition format, for node_exporter's textfile collector (audit,
    /// status and apiservers only).
    Prometheus,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Generate, check and rotate EncryptionConfiguration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Encrypt raw bytes into the value kube-apiserver would store in etcd.
    Encrypt(CryptArgs),
    /// Decrypt a stored etcd value back to the raw object bytes (prints secret data).
    Decrypt(CryptArgs),
    /// Explain one stored value: provider, key, state, and the object it holds.
    Inspect(InspectArgs),
    /// Report, entry by entry, what is plaintext, stale or unreadable in etcd or a snapshot.
    Audit(AuditArgs),
    /// Re-encrypt plaintext and stale entries in place with the config's write key.
    Rewrite(RewriteArgs),
    /// The config and the store together: what each configured key reads, what is unreadable.
    Status(StatusArgs),
    /// Check that kube-apiserver's static pod manifest really uses an encryption config.
    CheckApiserver(CheckApiserverArgs),
    /// Prove that every running kube-apiserver has loaded exactly this config file.
    Apiservers(Box<ApiserversArgs>),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions(CompletionsArgs),
    /// Print a man page (roff): atrest(1), or one subcommand's (`atrest man config rotate`);
    /// `--dir DIR` writes every page (atrest.1, atrest-audit.1, …).
    Man(ManArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Write a new EncryptionConfiguration with a fresh random key.
    New(ConfigNewArgs),
    /// Validate a file the way kube-apiserver does, and warn about weak settings.
    Check(ConfigCheckArgs),
    /// Take one step of the documented key rotation: add a key, promote it, prune old keys.
    Rotate(Box<ConfigRotateArgs>),
}

/// Rotation stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Stage {
    /// Add a new random key in second position (readable everywhere before anyone writes it).
    Add,
    /// Move the new key first: new writes use it. Then run `atrest rewrite`.
    Promote,
    /// Remove every key but the write key, once no stored entry needs them.
    Prune,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigRotateArgs {
    /// The EncryptionConfiguration file to edit (in place, atomically, mode 0600).
    pub(crate) file: PathBuf,
    /// The rotation stage to perform.
    #[arg(long, value_enum)]
    pub(crate) stage: Stage,
    /// add: the new key's name (default: the next free `keyN`); promote: the key to move
    /// first (default: the key `add` put second).
    #[arg(long)]
    pub(crate) key_name: Option<String>,
    /// add: the provider of the new key (default: the current write provider's, or aescbc).
    #[arg(long, value_enum)]
    pub(crate) provider: Option<NewProviderArg>,
    /// The resource whose providers are edited.
    #[arg(long, default_value = "secrets")]
    pub(crate) resource: String,
    /// Do not keep the previous file (as FILE.bak.N, N counting up, mode 0600).
    #[arg(long)]
    pub(crate) no_backup: bool,
    /// prune: also remove a key that `--stage add` added and that was never promoted (undo the
    /// add). Without it, prune refuses while such a key is there.
    #[arg(long)]
    pub(crate) discard_new: bool,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// prune: check an etcd snapshot or data file instead of a live etcd.
    #[arg(long, value_name = "FILE", conflicts_with = "kine_db")]
    pub(crate) snapshot: Option<PathBuf>,
    /// prune: check kine's SQLite file (k3s: /var/lib/rancher/k3s/server/db/state.db).
    #[arg(long, value_name = "FILE")]
    pub(crate) kine_db: Option<PathBuf>,
    /// prune: the key prefix whose entries must stay readable (read with --resource's chain).
    /// Without it: every resource the config covers, each read with its own chain before and
    /// after the prune.
    #[arg(long, value_parser = prefix_dir)]
    pub(crate) prefix: Option<String>,
    /// prune: kube-apiserver's --etcd-prefix (OpenShift: /kubernetes.io/).
    #[arg(long, default_value = "/registry/", value_parser = prefix_dir)]
    pub(crate) etcd_prefix: String,
    #[command(flatten)]
    pub(crate) kms: NewKmsArgs,
    #[command(flatten)]
    pub(crate) gate: GateArgs,
}

/// A KMS v2 provider to write into a config (`--provider kms`).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct NewKmsArgs {
    /// With --provider kms: the KMS provider's name (written into every value).
    #[arg(long, value_name = "NAME")]
    pub(crate) kms_name: Option<String>,
    /// With --provider kms: the plugin's socket, unix:///PATH.
    #[arg(long, value_name = "unix:///PATH")]
    pub(crate) kms_endpoint: Option<String>,
}

/// Providers `config new` can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NewProviderArg {
    /// AES-CBC with PKCS#7 padding (32-byte key).
    Aescbc,
    /// AES-GCM (32-byte key; rotate keys regularly).
    Aesgcm,
    /// XSalsa20-Poly1305 (32-byte key).
    Secretbox,
    /// A KMS v2 plugin (with --kms-name and --kms-endpoint; no local key).
    Kms,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigNewArgs {
    /// The provider that encrypts new writes.
    #[arg(long, value_enum, default_value = "aescbc")]
    pub(crate) provider: NewProviderArg,
    /// The new key's name (written into every value it encrypts).
    #[arg(long, default_value = "key1")]
    pub(crate) key_name: String,
    /// Resources to encrypt.
    #[arg(long, value_delimiter = ',', default_value = "secrets")]
    pub(crate) resources: Vec<String>,
    /// Leave out the trailing identity provider (existing plaintext then becomes unreadable
    /// until it is rewritten).
    #[arg(long)]
    pub(crate) no_identity: bool,
    /// Write to FILE (atomically, mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long, requires = "out")]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) kms: NewKmsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigCheckArgs {
    /// The EncryptionConfiguration file.
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CryptArgs {
    /// The EncryptionConfiguration to use.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// The full etcd key of the value, e.g. /registry/secrets/default/db (aesgcm binds it).
    #[arg(long, value_name = "PATH")]
    pub(crate) etcd_key: String,
    /// Input file (`-` or absent: standard input).
    pub(crate) input: Option<PathBuf>,
    /// Output file, written atomically with mode 0600 (absent or `-`: standard output; decrypt
    /// refuses a terminal unless `-`). An existing file is refused unless --force.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Replace the --out FILE if it exists (a symbolic link there is replaced, not followed).
    #[arg(long, requires = "out")]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) kms: KmsArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The EncryptionConfiguration to decrypt with (without it, only the prefix is read).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The value's full etcd key (needed for aesgcm; with --snapshot, the key to look up).
    #[arg(long, value_name = "PATH")]
    pub(crate) etcd_key: Option<String>,
    /// Read the value from an etcd snapshot or data file (needs --etcd-key).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "kine_db"])]
    pub(crate) snapshot: Option<PathBuf>,
    /// Read the value from kine's SQLite file (k3s's state.db; needs --etcd-key).
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    pub(crate) kine_db: Option<PathBuf>,
    /// Input file holding the raw stored value (`-` or absent: standard input).
    pub(crate) input: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) kms: KmsArgs,
}

/// How to reach the config's KMS plugins.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct KmsArgs {
    /// Do not contact KMS plugins: KMS entries are only recognised (state `kms`), e.g. on a
    /// machine without the plugin's socket (or set ATREST_NO_KMS=true).
    #[arg(long, env = "ATREST_NO_KMS", conflicts_with = "kms_endpoints")]
    pub(crate) no_kms: bool,
    /// Reach KMS provider NAME's plugin at this socket instead of the config's endpoint
    /// (repeatable), e.g. `--kms-endpoint vault=unix:///mnt/node/var/run/kmsplugin/socket.sock`.
    #[arg(long = "kms-endpoint", value_name = "NAME=unix:///PATH")]
    pub(crate) kms_endpoints: Vec<String>,
}

/// How to reach etcd, as etcdctl spells it.
#[derive(Debug, Args, Clone)]
pub(crate) struct StoreArgs {
    /// etcd endpoints, comma-separated [default: http://127.0.0.1:2379; with --kubeadm:
    /// https://127.0.0.1:2379].
    #[arg(long, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',')]
    pub(crate) endpoints: Vec<String>,
    /// CA bundle to verify etcd's server certificate.
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// Client certificate.
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// Client certificate's private key.
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Connection timeout, as etcdctl writes it (2s, 500ms, 1m) or in plain seconds.
    #[arg(long, default_value = "5s", value_parser = atrest::config::parse_timeout)]
    pub(crate) dial_timeout: std::time::Duration,
    /// Per-request timeout, as etcdctl writes it (5s, 1m) or in plain seconds.
    #[arg(long, default_value = "60s", value_parser = atrest::config::parse_timeout)]
    pub(crate) command_timeout: std::time::Duration,
    /// A kubeadm control-plane node: default to https://127.0.0.1:2379 with kube-apiserver's
    /// etcd client certificate under /etc/kubernetes/pki (flags given explicitly still win).
    #[arg(long)]
    pub(crate) kubeadm: bool,
    /// A k3s server node: read kine's SQLite file (server/db/state.db) with k3s's encryption
    /// config (server/cred/encryption-config.json) under the k3s data directory, unless
    /// --config or --kine-db say otherwise.
    #[arg(long, conflicts_with = "kubeadm")]
    pub(crate) k3s: bool,
    /// k3s's data directory (its --data-dir), for --k3s.
    #[arg(
        long,
        env = "K3S_DATA_DIR",
        value_name = "DIR",
        default_value = "/var/lib/rancher/k3s"
    )]
    pub(crate) k3s_data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Audit an etcd snapshot (`etcdctl snapshot save`) or a stopped member's `member/snap/db`
    /// instead of a live etcd.
    #[arg(long, value_name = "FILE", conflicts_with = "kine_db")]
    pub(crate) snapshot: Option<PathBuf>,
    /// Audit kine's SQLite file (k3s: /var/lib/rancher/k3s/server/db/state.db) instead of a
    /// live etcd; its history includes the `old_value` copies kine keeps.
    #[arg(long, value_name = "FILE")]
    pub(crate) kine_db: Option<PathBuf>,
    /// The EncryptionConfiguration kube-apiserver runs with (without it: plaintext vs encrypted).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Key prefix to audit, read with the chain of the resource it names. Without it: with
    /// --config, every resource the config covers, each with its own chain; without --config,
    /// /registry/secrets/.
    #[arg(long, value_parser = prefix_dir, conflicts_with = "resource")]
    pub(crate) prefix: Option<String>,
    /// Audit only this resource, as a config names it (`secrets`, `deployments.apps`,
    /// `widgets.example.com`); repeatable. Needs --config.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub(crate) resource: Vec<String>,
    /// kube-apiserver's --etcd-prefix (OpenShift: /kubernetes.io/), for audits by resource.
    #[arg(long, default_value = "/registry/", value_parser = prefix_dir)]
    pub(crate) etcd_prefix: String,
    /// Also fail (exit 1) on stale entries.
    #[arg(long)]
    pub(crate) strict: bool,
    /// Exit 0 when the scope holds no entry at all (by default that is exit 1: an audit that
    /// read nothing proves nothing, and is usually a typo in --prefix, --etcd-prefix or the
    /// config's resource names).
    #[arg(long)]
    pub(crate) allow_empty: bool,
    /// Also list, key by key, the entries of resources the config does not cover (by default
    /// only counted per resource); JSON: `not_covered_keys`.
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
    #[command(flatten)]
    pub(crate) kms: KmsArgs,
    /// Also check which config each running kube-apiserver has loaded (as `atrest
    /// apiservers`): JSON `apiservers`; exit 1 unless every one runs --config.
    #[arg(long = "apiservers", requires = "config")]
    pub(crate) with_apiservers: bool,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RewriteArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// The EncryptionConfiguration kube-apiserver runs with; its first provider and key
    /// encrypt.
    #[arg(long, value_name = "FILE", required_unless_present = "k3s")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) gate: GateArgs,
    /// Key prefix to rewrite, with the chain of the resource it names. Without it, a rewrite
    /// (live or --out) covers every resource the config covers, each to its own write provider
    /// (keys of other resources are never touched).
    #[arg(long, value_parser = prefix_dir, conflicts_with = "resource")]
    pub(crate) prefix: Option<String>,
    /// Rewrite only this resource, as a config names it (`secrets`, `deployments.apps`,
    /// `widgets.example.com`); repeatable.
    #[arg(long, value_name = "NAME")]
    pub(crate) resource: Vec<String>,
    /// kube-apiserver's --etcd-prefix (OpenShift: /kubernetes.io/), for rewrites by resource.
    #[arg(long, default_value = "/registry/", value_parser = prefix_dir)]
    pub(crate) etcd_prefix: String,
    /// Plan only: show what would be rewritten, write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Transactions in flight (1 to 10000).
    #[arg(long, default_value_t = 64, value_parser = parse_concurrency, allow_hyphen_values = true)]
    pub(crate) concurrency: usize,
    /// Save an etcd snapshot to FILE before writing anything (refuse to start if it fails).
    /// The file holds every Secret in plaintext or under today's keys: it is created with mode
    /// 0600 (written beside FILE, fsynced, then renamed), and an existing FILE is refused
    /// unless --force.
    #[arg(long, value_name = "FILE")]
    pub(crate) backup: Option<PathBuf>,
    /// Allow an identity write provider: decrypt everything back to plaintext.
    #[arg(long)]
    pub(crate) allow_decrypt: bool,
    /// After rewriting, compact etcd's history at the final revision (old plaintext revisions
    /// are then gone; `etcdctl defrag` frees their pages).
    #[arg(long)]
    pub(crate) compact: bool,
    /// etcd's backend quota in bytes, used when it cannot be read from the members' status or
    /// /metrics [default: etcd's 2 GiB].
    #[arg(long, value_name = "BYTES")]
    pub(crate) quota_bytes: Option<u64>,
    /// Keep every member's database under this fraction of the quota. A rewrite writes a new
    /// revision of every entry; when that would cross the margin, it runs in batches and
    /// compacts etcd's history at each batch's revision so freed pages are reused
    /// (progressive compaction: it removes only history kube-apiserver itself compacts within
    /// 5 minutes). When not even that fits, nothing is written.
    #[arg(long, value_name = "FRACTION", default_value_t = atrest::rewrite::space_plan::DEFAULT_MAX_DB_FRACTION,
          value_parser = parse_fraction)]
    pub(crate) max_db_fraction: f64,
    /// Compact etcd's history after every N rewritten entries (progressive compaction; by
    /// default only when the space quota needs it).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) compact_every: Option<u64>,
    /// Offline: re-encrypt this etcd snapshot file into --out instead of a live etcd (every
    /// stored revision, no free pages; the input is never modified).
    #[arg(long, value_name = "IN", requires = "out", conflicts_with_all = ["backup", "compact", "kine_db"])]
    pub(crate) snapshot: Option<PathBuf>,
    /// Offline: re-encrypt kine's SQLite file (k3s's state.db) into --out instead (every row,
    /// `old_value` copies included, then vacuumed; the input is never modified).
    #[arg(long, value_name = "IN", requires = "out", conflicts_with_all = ["backup", "compact"])]
    pub(crate) kine_db: Option<PathBuf>,
    /// Offline: the new file to write.
    #[arg(long, value_name = "OUT")]
    pub(crate) out: Option<PathBuf>,
    /// Overwrite the --backup FILE or the offline --out file if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) kms: KmsArgs,
}

/// A fraction in (0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction between 0 and 1 (e.g. 0.8)"
        )),
    }
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Read an etcd snapshot or a stopped member's `member/snap/db` instead of a live etcd.
    #[arg(long, value_name = "FILE", conflicts_with = "kine_db")]
    pub(crate) snapshot: Option<PathBuf>,
    /// Read kine's SQLite file (k3s: /var/lib/rancher/k3s/server/db/state.db) instead.
    #[arg(long, value_name = "FILE")]
    pub(crate) kine_db: Option<PathBuf>,
    /// The EncryptionConfiguration kube-apiserver runs with.
    #[arg(long, value_name = "FILE", required_unless_present = "k3s")]
    pub(crate) config: Option<PathBuf>,
    /// Key prefix to scan, read with the chain of the resource it names. Without it: every
    /// resource the config covers, each with its own chain.
    #[arg(long, value_parser = prefix_dir, conflicts_with = "resource")]
    pub(crate) prefix: Option<String>,
    /// Only this resource, as a config names it (`secrets`, `deployments.apps`); repeatable.
    #[arg(long, value_name = "NAME")]
    pub(crate) resource: Vec<String>,
    /// kube-apiserver's --etcd-prefix (OpenShift: /kubernetes.io/), for a status by resource.
    #[arg(long, default_value = "/registry/", value_parser = prefix_dir)]
    pub(crate) etcd_prefix: String,
    /// Exit 0 when the scope holds no entry at all (by default exit 1: nothing read proves
    /// nothing).
    #[arg(long)]
    pub(crate) allow_empty: bool,
    #[command(flatten)]
    pub(crate) kms: KmsArgs,
    /// Also check which config each running kube-apiserver has loaded (as `atrest
    /// apiservers`): JSON `apiservers`; exit 1 unless every one runs --config.
    #[arg(long = "apiservers", requires = "config")]
    pub(crate) with_apiservers: bool,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CheckApiserverArgs {
    /// kube-apiserver's static pod manifest.
    #[arg(default_value = atrest::apiserver::DEFAULT_MANIFEST)]
    pub(crate) manifest: PathBuf,
    /// Look node paths (the config file named in the manifest) up under DIR instead of `/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub(crate) root: PathBuf,
}

/// Shells `completions` can write a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

/// A `--prefix` names a directory of keys: `/registry/configmaps` means `/registry/configmaps/`
/// (without the slash it would also match `/registry/configmapsfoo/…` and split namespaces
/// wrongly).
fn prefix_dir(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?} does not start with / (e.g. /registry/secrets/)"
        ));
    }
    Ok(if text.ends_with('/') {
        text.to_owned()
    } else {
        format!("{text}/")
    })
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// The subcommand whose page to print (`audit`, `config rotate`, …).
    pub(crate) command: Vec<String>,
    /// Write every page, one file each (atrest.1, atrest-audit.1, …), into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub(crate) dir: Option<PathBuf>,
}

/// How to reach the Kubernetes API, as kubectl spells it.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct ApiArgs {
    /// The kubeconfig [default: KUBECONFIG, else ~/.kube/config, else the in-cluster service
    /// account; with --kubeadm: /etc/kubernetes/admin.conf].
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// Ask these kube-apiserver instances, each at its own URL, comma-separated [default: the
    /// addresses of the default/kubernetes EndpointSlice].
    #[arg(long = "apiserver", value_name = "URL", value_delimiter = ',')]
    pub(crate) apiservers: Vec<String>,
}

/// `atrest rewrite` and `config rotate`: the apiserver gate's flags.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct GateArgs {
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Do not check that every kube-apiserver has loaded the config before writing.
    #[arg(long)]
    pub(crate) no_apiserver_check: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ApiserversArgs {
    /// The EncryptionConfiguration file every kube-apiserver should run.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Also write a canary Secret through each kube-apiserver, read what etcd stores for it
    /// (store flags), check it was written with the config's write key, and delete it.
    #[arg(long)]
    pub(crate) canary: bool,
    /// --canary: the namespace of the canary Secrets.
    #[arg(long, default_value = "default", value_name = "NS")]
    pub(crate) canary_namespace: String,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) kms: KmsArgs,
}
