//! kube-apiserver's validation of an EncryptionConfiguration: the same rules, in the same
//! order, with the same messages.
//!
//! Source: `apiserver/pkg/apis/apiserver/validation/validation_encryption.go`; message format
//! from `apimachinery/pkg/util/validation/field/errors.go` (`<path>: <Type>[: <value>][: <detail>]`,
//! strings `%q`-quoted, other values as JSON) and aggregation from
//! `apimachinery/pkg/util/errors/errors.go` (identical texts dropped; one error bare, several as
//! `[e1, e2]`). Validation runs on the defaulted object: a kms `apiVersion` of `""` is `v1`,
//! a missing `timeout` is `3s`, a missing v1 `cachesize` is 1000
//! (`apiserver/pkg/apis/apiserver/v1/defaults.go`).

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::go::{decode_secret, duration, go_json_string, go_json_string_list, go_quote};
use super::model::{EncryptionConfiguration, Key, KmsConfiguration, ProviderConfiguration};
use super::parse_group_resource;

/// The kind of a field error, printed as kube-apiserver prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldErrorType {
    /// `Required value`: a mandatory field or list is empty.
    Required,
    /// `Invalid value`: the value is there but not acceptable.
    Invalid,
}

impl fmt::Display for FieldErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldErrorType::Required => "Required value",
            FieldErrorType::Invalid => "Invalid value",
        })
    }
}

/// One validation failure: `<path>: <type>[: <value>][: <detail>]`.
///
/// The value is already rendered the way kube-apiserver renders it (a quoted string, a JSON
/// list, a number). Key secrets always render as `"REDACTED"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    path: String,
    error_type: FieldErrorType,
    value: Option<String>,
    detail: String,
}

impl FieldError {
    fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            error_type: FieldErrorType::Required,
            value: None,
            detail: detail.into(),
        }
    }

    fn invalid(path: impl Into<String>, value: String, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            error_type: FieldErrorType::Invalid,
            value: Some(value),
            detail: detail.into(),
        }
    }

    /// The field path, such as `resources[0].providers[1].aescbc.keys[0].secret`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `Required value` or `Invalid value`.
    pub fn error_type(&self) -> FieldErrorType {
        self.error_type
    }

    /// The offending value as printed (`"Secrets"`, `["a","b"]`, `0`, `"REDACTED"`), if any.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// What is wrong, in kube-apiserver's words.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.error_type)?;
        if let Some(value) = &self.value {
            write!(f, ": {value}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every validation failure of a config, in kube-apiserver's order. `Display` is kube's
/// aggregate: identical texts once, one error bare, several as `[e1, e2, ...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// The errors, in order, without duplicates (as the aggregate prints them).
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// Drops errors whose text repeats an earlier one (kube's `ToAggregate`).
    fn dedup(list: Vec<FieldError>) -> Self {
        let mut seen = HashSet::new();
        ValidationErrors(
            list.into_iter()
                .filter(|e| seen.insert(e.to_string()))
                .collect(),
        )
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("[")?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl std::error::Error for ValidationErrors {}

const MORE_THAN_ONE: &str =
    "more than one provider specified in a single element, should split into different list elements";
const NO_PROVIDER: &str =
    "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity";
/// How kube-apiserver prints an empty provider element (`json.Marshal` of its internal type).
const EMPTY_PROVIDER_JSON: &str =
    r#"{"AESGCM":null,"AESCBC":null,"Secretbox":null,"Identity":null,"KMS":null}"#;
const REDACTED: &str = "\"REDACTED\"";
const AES_KEY_SIZES: &[usize] = &[16, 24, 32];
const SECRETBOX_KEY_SIZES: &[usize] = &[32];
/// kms v1 `cachesize` default (`defaults.go`).
const DEFAULT_CACHE_SIZE: i32 = 1000;

/// Validates a model. `reload` is kube-apiserver's `--encryption-provider-config-automatic-reload`
/// (it makes KMS v1 names unique too). `Ok` when there is nothing to report.
pub(crate) fn validate(
    config: &EncryptionConfiguration,
    reload: bool,
) -> Result<(), ValidationErrors> {
    let errs = field_errors(config, reload);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors::dedup(errs))
    }
}

fn field_errors(config: &EncryptionConfiguration, reload: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if config.resources.is_empty() {
        errs.push(FieldError::required(
            "resources",
            "at least one resources is required",
        ));
        return errs;
    }
    let mut kms_names: HashSet<&str> = HashSet::new();
    for (i, entry) in config.resources.iter().enumerate() {
        let r = format!("resources[{i}].resources");
        let p = format!("resources[{i}].providers");
        if entry.resources.is_empty() {
            errs.push(FieldError::required(
                r.clone(),
                format!("at least one {r} is required"),
            ));
        }
        resource_overlap(&entry.resources, &r, &mut errs);
        resource_names(&entry.resources, &r, &mut errs);
        if entry.providers.is_empty() {
            errs.push(FieldError::required(
                p.clone(),
                format!("at least one {p} is required"),
            ));
        }
        for (j, provider) in entry.providers.iter().enumerate() {
            let path = format!("{p}[{j}]");
            single_provider(provider, &path, &mut errs);
            // kube-apiserver checks one type per element, in this order.
            if let Some(kms) = &provider.kms {
                kms_config(kms, &format!("{path}.kms"), &kms_names, reload, &mut errs);
                kms_names.insert(&kms.name);
            } else if let Some(c) = &provider.aesgcm {
                keys(
                    &c.keys,
                    &format!("{path}.aesgcm.keys"),
                    AES_KEY_SIZES,
                    &mut errs,
                );
            } else if let Some(c) = &provider.aescbc {
                keys(
                    &c.keys,
                    &format!("{path}.aescbc.keys"),
                    AES_KEY_SIZES,
                    &mut errs,
                );
            } else if let Some(c) = &provider.secretbox {
                keys(
                    &c.keys,
                    &format!("{path}.secretbox.keys"),
                    SECRETBOX_KEY_SIZES,
                    &mut errs,
                );
            }
        }
    }
    errs
}

/// `validateResourceOverlap`, including its quirk: `["*.","*."]` reports both the duplicate and
/// the overlap, because the first equal pair only sets `hasDuplicate` and the mirrored pair then
/// falls through to the overlap checks.
///
/// kube-apiserver visits every ordered pair; this does the same in one pass with sets (a list
/// of 40,000 names took seconds pair by pair). The pair test is: `r1` is `*.*`, or both are in
/// one group and either is that group's `*`. Skipping the first equal pair never changes the
/// outcome, since the test is symmetric for equal names and the mirrored pair is still visited.
/// So: a duplicate is any name seen twice; an overlap is `*.*` beside any other name, or a
/// group with a `*` and at least two names.
fn resource_overlap(resources: &[String], path: &str, errs: &mut Vec<FieldError>) {
    if resources.len() < 2 {
        return;
    }
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(resources.len());
    // Per group: how many names, and whether one is the group's `*`.
    let mut groups: HashMap<&str, (usize, bool)> = HashMap::new();
    let (mut has_overlap, mut has_duplicate) = (false, false);
    for r in resources {
        let gr = parse_group_resource(r);
        has_duplicate |= !seen.insert(gr);
        has_overlap |= gr == ("*", "*");
        let g = groups.entry(gr.0).or_default();
        g.0 += 1;
        g.1 |= gr.1 == "*";
        has_overlap |= g.0 >= 2 && g.1;
    }
    if has_duplicate {
        errs.push(FieldError::invalid(
            path,
            go_json_string_list(resources),
            "the same resource cannot be specified multiple times",
        ));
    }
    if has_overlap {
        errs.push(FieldError::invalid(
            path,
            go_json_string_list(resources),
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        ));
    }
}

/// `validateResourceNames`: the first matching rule per name.
fn resource_names(resources: &[String], path: &str, errs: &mut Vec<FieldError>) {
    for (k, res) in resources.iter().enumerate() {
        let detail = if res.to_lowercase() != *res {
            "resource name should not contain capital letters"
        } else if res == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else {
            let (group, resource) = parse_group_resource(res);
            if group == "events.k8s.io" {
                "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
            } else if group == "extensions" {
                "'extensions' group has been removed and cannot be used for encryption"
            } else if group == "*" && resource != "*" {
                "encrypting the same resource across groups is not supported"
            } else {
                continue;
            }
        };
        errs.push(FieldError::invalid(
            format!("{path}[{k}]"),
            go_quote(res),
            detail,
        ));
    }
}

/// `validateSingleProvider`.
///
/// Deliberate departure: for an element with several providers kube-apiserver prints the whole
/// element as its value, keys in clear. We print only the provider type names
/// (`["aescbc","identity"]`) so that no message ever carries key material.
fn single_provider(provider: &ProviderConfiguration, path: &str, errs: &mut Vec<FieldError>) {
    let names = provider.type_names();
    match names.len() {
        0 => errs.push(FieldError::invalid(
            path,
            EMPTY_PROVIDER_JSON.to_owned(),
            NO_PROVIDER,
        )),
        1 => {}
        _ => errs.push(FieldError::invalid(
            path,
            go_json_string_list(&names),
            MORE_THAN_ONE,
        )),
    }
}

/// `validateKeys` + `validateKey`.
fn keys(keys: &[Key], path: &str, sizes: &[usize], errs: &mut Vec<FieldError>) {
    if keys.is_empty() {
        errs.push(FieldError::required(path, "at least one keys is required"));
        return;
    }
    for (k, key) in keys.iter().enumerate() {
        let path = format!("{path}[{k}]");
        if key.name.is_empty() {
            errs.push(FieldError::required(
                format!("{path}.name"),
                "name is a mandatory field for a key",
            ));
        }
        let secret_path = format!("{path}.secret");
        if key.secret.is_empty() {
            errs.push(FieldError::required(
                secret_path,
                "secret is a mandatory field for a key",
            ));
            continue;
        }
        match decode_secret(key.secret.expose_secret()) {
            Err(_) => errs.push(FieldError::invalid(
                secret_path,
                REDACTED.to_owned(),
                "secrets must be base64 encoded",
            )),
            Ok(bytes) if !sizes.contains(&bytes.len()) => {
                let expected: Vec<String> = sizes.iter().map(ToString::to_string).collect();
                errs.push(FieldError::invalid(
                    secret_path,
                    REDACTED.to_owned(),
                    format!(
                        "secret is not of the expected length, got {}, expected one of [{}]",
                        bytes.len(),
                        expected.join(" ")
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
}

/// The kms `apiVersion` after defaulting (`""` and absent are `v1`).
pub(crate) fn kms_api_version(kms: &KmsConfiguration) -> &str {
    match kms.api_version.as_deref() {
        None | Some("") => "v1",
        Some(v) => v,
    }
}

/// `validateKMSConfiguration`: name, timeout, endpoint, cachesize, apiVersion.
fn kms_config(
    kms: &KmsConfiguration,
    path: &str,
    names: &HashSet<&str>,
    reload: bool,
    errs: &mut Vec<FieldError>,
) {
    let version = kms_api_version(kms);
    // name
    let name_path = format!("{path}.name");
    if kms.name.is_empty() {
        errs.push(FieldError::required(
            name_path.clone(),
            "name is a mandatory field for a provider",
        ));
    }
    if version != "v1" && kms.name.contains(':') {
        errs.push(FieldError::invalid(
            name_path.clone(),
            go_quote(&kms.name),
            format!(
                "invalid KMS provider name {}, must not contain ':'",
                kms.name
            ),
        ));
    }
    if (reload || version != "v1") && names.contains(kms.name.as_str()) {
        errs.push(FieldError::invalid(
            name_path,
            go_quote(&kms.name),
            format!(
                "duplicate KMS provider name {}, names must be unique",
                kms.name
            ),
        ));
    }
    // timeout
    let timeout_path = format!("{path}.timeout");
    match kms.timeout.as_deref().map(duration::parse) {
        // Absent: kube-apiserver defaults it to 3s, which is positive.
        None => {}
        Some(Ok(nanos)) if nanos > 0 => {}
        Some(Ok(nanos)) => errs.push(FieldError::invalid(
            timeout_path,
            go_json_string(&duration::format(nanos)),
            "timeout should be a positive value",
        )),
        // kube-apiserver refuses this while decoding; a model built in code gets it here.
        Some(Err(e)) => errs.push(FieldError::invalid(
            timeout_path,
            go_quote(kms.timeout.as_deref().unwrap_or_default()),
            e,
        )),
    }
    // endpoint
    let endpoint_path = format!("{path}.endpoint");
    if kms.endpoint.is_empty() {
        errs.push(FieldError::invalid(
            endpoint_path,
            go_quote(""),
            "endpoint is a mandatory field for a kms",
        ));
    } else {
        match url_scheme(&kms.endpoint) {
            Err(e) => errs.push(FieldError::invalid(
                endpoint_path,
                go_quote(&kms.endpoint),
                format!("invalid endpoint for kms provider, error: {e}"),
            )),
            Ok(scheme) if scheme != "unix" => errs.push(FieldError::invalid(
                endpoint_path,
                go_quote(&kms.endpoint),
                format!(
                    "unsupported scheme {} for KMS provider, only unix is supported",
                    go_quote(&scheme)
                ),
            )),
            Ok(_) => {}
        }
    }
    // cachesize
    let cache_path = format!("{path}.cachesize");
    let cachesize = match (kms.cachesize, version) {
        (None, "v1") => Some(DEFAULT_CACHE_SIZE),
        (c, _) => c,
    };
    if version != "v1" {
        if let Some(c) = cachesize {
            errs.push(FieldError::invalid(
                cache_path.clone(),
                c.to_string(),
                "cachesize is not supported in v2",
            ));
        }
    }
    if version == "v1" && cachesize == Some(0) {
        errs.push(FieldError::invalid(
            cache_path,
            "0".to_owned(),
            "cachesize should be a positive value, or negative to disable",
        ));
    }
    // apiVersion
    if version != "v1" && version != "v2" {
        // "apiVersion apiVersion" is kube-apiserver's own wording (it formats the field name,
        // not the value); kept as is.
        errs.push(FieldError::invalid(
            format!("{path}.apiVersion"),
            go_quote(version),
            "unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported",
        ));
    }
}

/// The scheme (lowercased) of `url` as Go's `net/url.Parse` sees it, or Go's error text
/// (`parse "<url>": <reason>`). Covers the checks `url.Parse` makes: control characters, a
/// missing scheme before `:`, a colon in the first path segment, the port, host characters and
/// `%` escapes.
fn url_scheme(raw: &str) -> Result<String, String> {
    let wrap = |u: &str, e: String| format!("parse {}: {e}", go_quote(u));
    let (u, frag) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    let scheme = url_parse(u).map_err(|e| wrap(u, e))?;
    if let Some(frag) = frag {
        unescape(frag, Mode::Other).map_err(|e| wrap(raw, e))?;
    }
    Ok(scheme)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Other,
}

fn url_parse(raw: &str) -> Result<String, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".to_owned());
    }
    if raw == "*" {
        return Ok(String::new());
    }
    // getScheme
    let mut scheme = "";
    let mut rest = raw;
    for (i, c) in raw.bytes().enumerate() {
        if c.is_ascii_alphabetic() {
            continue;
        }
        if c.is_ascii_digit() || c == b'+' || c == b'-' || c == b'.' {
            if i == 0 {
                break;
            }
            continue;
        }
        if c == b':' {
            if i == 0 {
                return Err("missing protocol scheme".to_owned());
            }
            scheme = &raw[..i];
            rest = &raw[i + 1..];
        }
        break;
    }
    let scheme = scheme.to_ascii_lowercase();
    // query
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(r, _)| r)
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            return Ok(scheme); // opaque
        }
        let segment = rest.split_once('/').map_or(rest, |(s, _)| s);
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".to_owned());
        }
    }
    let mut path = rest;
    if (!scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let authority_and_path = &rest[2..];
        let (authority, p) = match authority_and_path.find('/') {
            Some(i) => (&authority_and_path[..i], &authority_and_path[i..]),
            None => (authority_and_path, ""),
        };
        path = p;
        parse_authority(authority)?;
    }
    unescape(path, Mode::Other)?;
    Ok(scheme)
}

fn parse_authority(authority: &str) -> Result<(), String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    parse_host(host)?;
    if let Some(userinfo) = userinfo {
        let valid = userinfo
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c));
        if !valid {
            return Err("net/url: invalid userinfo".to_owned());
        }
        unescape(userinfo, Mode::Other)?;
    }
    Ok(())
}

fn parse_host(host: &str) -> Result<(), String> {
    let valid_port = |p: &str| {
        p.is_empty() || (p.starts_with(':') && p[1..].bytes().all(|c| c.is_ascii_digit()))
    };
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return Err("missing ']' in host".to_owned());
        };
        let port = &host[i + 1..];
        if !valid_port(port) {
            return Err(format!("invalid port {} after host", go_quote(port)));
        }
    } else if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_port(port) {
            return Err(format!("invalid port {} after host", go_quote(port)));
        }
    }
    unescape(host, Mode::Host)
}

/// The error checks of Go's `url.unescape`.
fn unescape(s: &str, mode: Mode) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if i + 2 >= b.len()
                    || !b[i + 1].is_ascii_hexdigit()
                    || !b[i + 2].is_ascii_hexdigit()
                {
                    let end = (i + 3).min(b.len());
                    let esc = String::from_utf8_lossy(&b[i..end]);
                    return Err(format!("invalid URL escape {}", go_quote(&esc)));
                }
                if mode == Mode::Host && hex_value(b[i + 1]) < 8 && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {}", go_quote(&s[i..i + 3])));
                }
                i += 3;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && host_char_invalid(c) {
                    return Err(format!(
                        "invalid character {} in host name",
                        go_quote(&char::from(c).to_string())
                    ));
                }
                i += 1;
            }
        }
    }
    Ok(())
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Go's `shouldEscape(c, encodeHost)`.
fn host_char_invalid(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c))
}

#[cfg(test)]
impl FieldError {
    pub(crate) fn test_required(path: &str, detail: &str) -> Self {
        FieldError::required(path, detail)
    }
}

#[cfg(test)]
impl ValidationErrors {
    pub(crate) fn from_test(list: Vec<FieldError>) -> Self {
        ValidationErrors::dedup(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\x00\x7f"), r#""\n\t\x00\x7f""#);
        assert_eq!(go_quote("é"), "\"é\"");
        assert_eq!(go_quote("\u{a0}"), r#""\u00a0""#);
    }

    #[test]
    fn go_json_escapes_like_go() {
        assert_eq!(go_json_string("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(
            go_json_string_list(&["secrets", "*."]),
            r#"["secrets","*."]"#
        );
    }

    #[test]
    fn url_scheme_follows_go() {
        assert_eq!(url_scheme("unix:///tmp/kms.sock"), Ok("unix".to_owned()));
        assert_eq!(url_scheme("UNIX:///tmp/kms.sock"), Ok("unix".to_owned()));
        assert_eq!(url_scheme("unix:kms.sock"), Ok("unix".to_owned()));
        assert_eq!(url_scheme("tcp://127.0.0.1:80"), Ok("tcp".to_owned()));
        assert_eq!(url_scheme("/tmp/kms.sock"), Ok(String::new()));
        assert_eq!(
            url_scheme("://x"),
            Err(r#"parse "://x": missing protocol scheme"#.to_owned())
        );
        assert_eq!(
            url_scheme("unix://host:port/x"),
            Err(r#"parse "unix://host:port/x": invalid port ":port" after host"#.to_owned())
        );
        assert_eq!(
            url_scheme("unix:///tmp/%zz"),
            Err(r#"parse "unix:///tmp/%zz": invalid URL escape "%zz""#.to_owned())
        );
        assert_eq!(
            url_scheme("unix:///tmp/\x01"),
            Err(
                "parse \"unix:///tmp/\\x01\": net/url: invalid control character in URL".to_owned()
            )
        );
        assert_eq!(url_scheme("a/b:c"), Ok(String::new()));
        assert_eq!(
            url_scheme("1a:b"),
            Err(r#"parse "1a:b": first path segment in URL cannot contain colon"#.to_owned())
        );
        assert_eq!(
            url_scheme("unix://a b/x"),
            Err(r#"parse "unix://a b/x": invalid character " " in host name"#.to_owned())
        );
    }
}

#[cfg(test)]
mod overlap_tests {
    use super::*;

    /// kube-apiserver's pairwise loop, as it was implemented here before issue 22 item 4.
    fn pairwise(resources: &[String]) -> (bool, bool) {
        let parsed: Vec<(&str, &str)> = resources.iter().map(|r| parse_group_resource(r)).collect();
        let (mut has_overlap, mut has_duplicate) = (false, false);
        for (i, r1) in parsed.iter().enumerate() {
            for (j, r2) in parsed.iter().enumerate() {
                if i == j {
                    continue;
                }
                if r1 == r2 && !has_duplicate {
                    has_duplicate = true;
                    continue;
                }
                if has_overlap {
                    continue;
                }
                if *r1 == ("*", "*") || (r1.0 == r2.0 && (r1.1 == "*" || r2.1 == "*")) {
                    has_overlap = true;
                }
            }
        }
        (has_overlap, has_duplicate)
    }

    #[test]
    fn issue_22_4_one_pass_overlap_matches_the_pairwise_loop() {
        let alphabet = [
            "secrets", "*.", "*.*", "d.apps", "*.apps", "x.*", "secrets.",
        ];
        let mut lists: Vec<Vec<String>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<String>> = lists
                .iter()
                .filter(|l| l.len() == lists.last().map_or(0, Vec::len))
                .flat_map(|l| {
                    alphabet.iter().map(move |a| {
                        let mut l = l.clone();
                        l.push((*a).to_owned());
                        l
                    })
                })
                .collect();
            lists.extend(longer);
        }
        assert!(lists.len() > 2000);
        for list in &lists {
            let mut errs = Vec::new();
            resource_overlap(list, "r", &mut errs);
            let (overlap, duplicate) = if list.len() < 2 {
                (false, false)
            } else {
                pairwise(list)
            };
            let got = |d: &str| errs.iter().any(|e| e.detail().starts_with(d));
            assert_eq!(
                (got("using overlapping"), got("the same resource")),
                (overlap, duplicate),
                "{list:?}"
            );
            assert_eq!(errs.len(), usize::from(overlap) + usize::from(duplicate));
        }
    }
}
