//! Reading the few metric families atrest needs from kube-apiserver's `/metrics`.
//!
//! # Format
//! Prometheus text exposition format 0.0.4, one sample per line:
//!
//! ```text
//! # HELP name text          (comments: skipped)
//! name{label="value",…} 1.5 [timestamp]
//! ```
//!
//! Label values escape `\\`, `\"` and `\n`. A kube-apiserver serves about 2.5 MB here, so
//! [`MetricsReader`] is fed the body chunk by chunk, looks at each line's name first and keeps
//! only the samples of [`FAMILIES`]; memory stays at one line.

/// `apiserver_encryption_config_controller_last_config_info{apiserver_id_hash, hash} 1`: the
/// hash of the config file the instance has loaded (since 1.34).
pub const LAST_CONFIG_INFO: &str = "apiserver_encryption_config_controller_last_config_info";
/// `…_automatic_reloads_total{status, apiserver_id_hash}`: reload attempts (1.30+).
pub const RELOADS_TOTAL: &str = "apiserver_encryption_config_controller_automatic_reloads_total";
/// `…_automatic_reload_last_timestamp_seconds{status, apiserver_id_hash}`.
pub const RELOAD_LAST_TIMESTAMP: &str =
    "apiserver_encryption_config_controller_automatic_reload_last_timestamp_seconds";
/// `apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{provider_name,
/// key_id_hash, apiserver_id_hash}`: the KMS v2 key ID each provider currently writes with.
pub const KMS_KEY_ID_STATUS: &str =
    "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds";
/// `process_start_time_seconds`: when the process started (evidence before 1.34).
pub const PROCESS_START: &str = "process_start_time_seconds";

/// The families [`MetricsReader`] keeps.
pub const FAMILIES: [&str; 5] = [
    LAST_CONFIG_INFO,
    RELOADS_TOTAL,
    RELOAD_LAST_TIMESTAMP,
    KMS_KEY_ID_STATUS,
    PROCESS_START,
];

/// A line longer than this is skipped (a real kube-apiserver line is under 1 KiB).
pub const MAX_LINE: usize = 64 << 10;

/// One sample of a kept family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (one of [`FAMILIES`]).
    pub name: &'static str,
    /// Its labels, in the order served.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Feeds on a `/metrics` body chunk by chunk and keeps the samples of [`FAMILIES`].
#[derive(Debug, Default)]
pub struct MetricsReader {
    line: Vec<u8>,
    /// The current line is longer than [`MAX_LINE`]: drop it up to its newline.
    overlong: bool,
    samples: Vec<Sample>,
    bytes: u64,
}

impl MetricsReader {
    /// A reader that has seen nothing.
    pub fn new() -> MetricsReader {
        MetricsReader::default()
    }

    /// Reads the next piece of the body (any split, even inside a line).
    pub fn feed(&mut self, mut chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            self.push_bytes(&chunk[..nl]);
            self.end_line();
            chunk = &chunk[nl + 1..];
        }
        self.push_bytes(chunk);
    }

    /// Ends the body and returns the kept samples.
    pub fn finish(mut self) -> Vec<Sample> {
        self.end_line();
        self.samples
    }

    /// How many body bytes were fed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.overlong || self.line.len() + bytes.len() > MAX_LINE {
            self.overlong = true;
            self.line.clear();
            return;
        }
        // A line whose start names no kept family is dropped as soon as that is certain.
        self.line.extend_from_slice(bytes);
        if self.line.len() >= 64 && !FAMILIES.iter().any(|f| starts_family(&self.line, f)) {
            self.overlong = true;
            self.line.clear();
        }
    }

    fn end_line(&mut self) {
        if !self.overlong {
            if let Some(sample) = std::str::from_utf8(&self.line).ok().and_then(parse_line) {
                self.samples.push(sample);
            }
        }
        self.line.clear();
        self.overlong = false;
    }
}

/// Whether `line` may still be a sample of `family` (its first bytes agree so far).
fn starts_family(line: &[u8], family: &str) -> bool {
    let n = line.len().min(family.len());
    line[..n] == family.as_bytes()[..n]
}

/// Parses one sample line of a kept family; anything else (comments, other families,
/// malformed lines) is `None`.
pub fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim_end_matches('\r');
    let name = FAMILIES.into_iter().find(|f| {
        line.strip_prefix(f)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })?;
    let rest = &line[name.len()..];
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), rest),
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "\
# HELP apiserver_encryption_config_controller_last_config_info [ALPHA] Total number of successful automatic reloads of encryption configuration split by apiserver identity.
# TYPE apiserver_encryption_config_controller_last_config_info gauge
apiserver_encryption_config_controller_last_config_info{apiserver_id_hash=\"sha256:aa\",hash=\"sha256:bb\"} 1
apiserver_encryption_config_controller_automatic_reloads_total{apiserver_id_hash=\"sha256:aa\",status=\"failure\"} 2
apiserver_request_total{code=\"200\",verb=\"GET\"} 12
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash=\"sha256:aa\",key_id_hash=\"sha256:cc\",provider_name=\"k\\\"ms\"} 1.7e+09
process_start_time_seconds 1.76e+09
process_start_time_seconds_extra 3
";

    #[test]
    fn keeps_only_the_wanted_families_whatever_the_chunking() {
        for size in [1, 2, 7, 64, 100, BODY.len()] {
            let mut r = MetricsReader::new();
            for chunk in BODY.as_bytes().chunks(size) {
                r.feed(chunk);
            }
            assert_eq!(r.bytes(), BODY.len() as u64);
            let s = r.finish();
            let names: Vec<_> = s.iter().map(|s| s.name).collect();
            assert_eq!(
                names,
                [
                    LAST_CONFIG_INFO,
                    RELOADS_TOTAL,
                    KMS_KEY_ID_STATUS,
                    PROCESS_START
                ],
                "chunk size {size}"
            );
            assert_eq!(s[0].label("hash"), Some("sha256:bb"));
            assert_eq!(s[1].value, 2.0);
            assert_eq!(s[2].label("provider_name"), Some("k\"ms"));
            assert_eq!(s[3].value, 1.76e9);
        }
    }

    #[test]
    fn drops_overlong_and_malformed_lines() {
        let mut r = MetricsReader::new();
        let long = format!("{PROCESS_START}{{a=\"{}\"}} 1\n", "x".repeat(MAX_LINE));
        r.feed(long.as_bytes());
        r.feed(
            b"process_start_time_seconds{a=\"unterminated} 1\nprocess_start_time_seconds nan?\n",
        );
        r.feed(b"process_start_time_seconds 5");
        let s = r.finish();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].value, 5.0);
    }
}
