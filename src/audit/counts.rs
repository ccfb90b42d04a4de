//! Entry counts by state, and the verdict they give.

use serde::Serialize;

use crate::transform::State;

/// Entry counts by state. Serialised with every state present, `unknown-key` spelled as in
/// the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Entries counted.
    pub total: u64,
    /// `plaintext` entries.
    pub plaintext: u64,
    /// `current` entries.
    pub current: u64,
    /// `stale` entries.
    pub stale: u64,
    /// `unknown-key` entries.
    #[serde(rename = "unknown-key")]
    pub unknown_key: u64,
    /// `undecryptable` entries.
    pub undecryptable: u64,
    /// `kms` entries.
    pub kms: u64,
    /// `encrypted` entries (no config given).
    pub encrypted: u64,
}

/// The summary of an audit.
pub type Summary = Counts;

/// What an audit concludes, and so its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing to report (exit 0).
    Clean,
    /// Something is not encrypted with the current key (exit 1).
    Findings,
    /// Nothing was read: the scope holds no entry, which proves nothing (exit 1 unless
    /// `--allow-empty`). Usually a typo in `--prefix`, `--etcd-prefix` or the config's
    /// resource names.
    Empty,
}

impl Counts {
    /// Counts one more entry in `state`.
    pub fn add(&mut self, state: State) {
        self.total += 1;
        *self.slot(state) += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Counts) {
        self.total += other.total;
        self.plaintext += other.plaintext;
        self.current += other.current;
        self.stale += other.stale;
        self.unknown_key += other.unknown_key;
        self.undecryptable += other.undecryptable;
        self.kms += other.kms;
        self.encrypted += other.encrypted;
    }

    /// The count for one state.
    pub fn get(&self, state: State) -> u64 {
        match state {
            State::Plaintext => self.plaintext,
            State::Current => self.current,
            State::Stale => self.stale,
            State::UnknownKey => self.unknown_key,
            State::Undecryptable => self.undecryptable,
            State::Kms => self.kms,
            State::Encrypted => self.encrypted,
        }
    }

    fn slot(&mut self, state: State) -> &mut u64 {
        match state {
            State::Plaintext => &mut self.plaintext,
            State::Current => &mut self.current,
            State::Stale => &mut self.stale,
            State::UnknownKey => &mut self.unknown_key,
            State::Undecryptable => &mut self.undecryptable,
            State::Kms => &mut self.kms,
            State::Encrypted => &mut self.encrypted,
        }
    }

    /// The verdict: findings are plaintext, unknown-key and undecryptable entries, and stale
    /// ones with `strict`. `current`, `kms` and (without a config) `encrypted` are fine.
    pub fn verdict(&self, strict: bool) -> Verdict {
        if self.total == 0 {
            return Verdict::Empty;
        }
        let findings = self.plaintext
            + self.unknown_key
            + self.undecryptable
            + if strict { self.stale } else { 0 };
        if findings == 0 {
            Verdict::Clean
        } else {
            Verdict::Findings
        }
    }
}
