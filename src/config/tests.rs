//! Parsing, validation (rule by rule, with kube-apiserver's exact messages), masking, lookup,
//! warnings and secrecy.

use super::*;

/// 32 bytes spelling a distinctive text, so a leak is easy to spot.
const LEAKY: &str = "YXRyZXN0LWRpc3RpbmN0aXZlLXNlY3JldC0zMmJ5dGU=";
const K32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K24: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX";
const K16: &str = "AAECAwQFBgcICQoLDA0ODw==";
const K8: &str = "AAECAwQFBgc=";

const HEAD: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n";

/// A document with one entry.
fn doc(resources: &str, providers: &[&str]) -> String {
    let mut s = format!("{HEAD}resources:\n- resources: {resources}\n  providers:\n");
    for p in providers {
        s.push_str(&format!("  - {p}\n"));
    }
    s
}

fn aescbc(secret: &str) -> String {
    format!("aescbc: {{keys: [{{name: k1, secret: \"{secret}\"}}]}}")
}

fn kms(fields: &str) -> String {
    format!("kms: {{{fields}}}")
}

fn err(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn ok(yaml: &str) -> Config {
    match Config::from_yaml(yaml) {
        Ok(c) => c,
        Err(e) => panic!("refused: {e}\n{yaml}"),
    }
}

fn field_errors(yaml: &str) -> Vec<FieldError> {
    match Config::from_yaml(yaml) {
        Err(ConfigError::Invalid(v)) => v.errors().to_vec(),
        other => panic!("expected validation errors, got {other:?}"),
    }
}

// ---- decoding -----------------------------------------------------------------------------

#[test]
fn minimal_valid_config() {
    let c = ok(&doc("[secrets]", &[&aescbc(K32), "identity: {}"]));
    assert_eq!(c.model().resources[0].providers.len(), 2);
    assert_eq!(
        c.model().resources[0].providers[0]
            .aescbc
            .as_ref()
            .unwrap()
            .keys[0]
            .material()
            .len(),
        32
    );
}

#[test]
fn json_input_is_accepted() {
    let json = format!(
        r#"{{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{{"resources":["secrets"],"providers":[{{"secretbox":{{"keys":[{{"name":"a","secret":"{K32}"}}]}}}}]}}]}}"#
    );
    ok(&json);
}

#[test]
fn legacy_type_identity_is_accepted() {
    let yaml = doc("[secrets]", &["identity: {}"])
        .replace(HEAD, "apiVersion: v1\nkind: EncryptionConfig\n");
    ok(&yaml);
}

#[test]
fn other_kinds_are_refused_with_kube_wording() {
    let yaml =
        doc("[secrets]", &["identity: {}"]).replace("kind: EncryptionConfiguration", "kind: Pod");
    assert_eq!(
        err(&yaml),
        r#"no kind "Pod" is registered for version "apiserver.config.k8s.io/v1""#
    );
    let yaml = doc("[secrets]", &["identity: {}"]).replace("apiserver.config.k8s.io/v1", "v1");
    assert_eq!(
        err(&yaml),
        r#"no kind "EncryptionConfiguration" is registered for version "v1""#
    );
    let yaml = doc("[secrets]", &["identity: {}"]).replace("kind: EncryptionConfiguration\n", "");
    assert!(matches!(
        Config::from_yaml(&yaml),
        Err(ConfigError::Kind { .. })
    ));
    assert_eq!(err(&yaml), "Object 'Kind' is missing");
}

#[test]
fn kind_is_checked_before_fields() {
    let yaml = "apiVersion: v1\nkind: Secret\ndata: {a: b}\n";
    assert!(matches!(
        Config::from_yaml(yaml),
        Err(ConfigError::Kind { .. })
    ));
}

#[test]
fn unknown_fields_are_errors_with_path_and_position() {
    let yaml = doc("[secrets]", &["aescbc: {keys: [{name: k, secrt: x}]}"]);
    let e = err(&yaml);
    assert!(
        e.starts_with("error decoding encryption provider configuration: resources[0].providers[0].aescbc.keys[0]: unknown field `secrt`"),
        "{e}"
    );
    assert!(e.contains("at line 6 column 31"), "{e}");
}

#[test]
fn duplicate_fields_are_errors() {
    let yaml = doc(
        "[secrets]",
        &["aescbc: {keys: [{name: k, name: j, secret: x}]}"],
    );
    assert!(
        err(&yaml).contains("duplicate field `name`"),
        "{}",
        err(&yaml)
    );
}

#[test]
fn null_provider_is_an_empty_element_but_empty_map_is_identity() {
    let yaml = doc("[secrets]", &["identity:"]);
    assert_eq!(
        err(&yaml),
        r#"resources[0].providers[0]: Invalid value: {"AESGCM":null,"AESCBC":null,"Secretbox":null,"Identity":null,"KMS":null}: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity"#
    );
    ok(&doc("[secrets]", &["identity: {}"]));
}

#[test]
fn null_lists_and_strings_are_empty() {
    let yaml = doc("[secrets]", &["aescbc: {keys: }"]);
    assert_eq!(
        err(&yaml),
        "resources[0].providers[0].aescbc.keys: Required value: at least one keys is required"
    );
    let yaml = doc("[secrets]", &["aescbc: {keys: [{name: , secret: ~}]}"]);
    assert_eq!(
        err(&yaml),
        "[resources[0].providers[0].aescbc.keys[0].name: Required value: name is a mandatory field for a key, resources[0].providers[0].aescbc.keys[0].secret: Required value: secret is a mandatory field for a key]"
    );
    let yaml = doc("", &["identity: {}"]);
    assert_eq!(
        err(&yaml),
        "resources[0].resources: Required value: at least one resources[0].resources is required"
    );
}

#[test]
fn numbers_where_strings_belong_are_refused() {
    let yaml = doc(
        "[secrets]",
        &[&format!(
            "aescbc: {{keys: [{{name: 12, secret: \"{K32}\"}}]}}"
        )],
    );
    let e = err(&yaml);
    assert!(
        e.contains("invalid type: integer, expected a string"),
        "{e}"
    );
    // The number is not echoed.
    assert!(!e.contains("12,"), "{e}");
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let yaml = doc(
        "[secrets]",
        &["aescbc: {keys: [{name: k, secret: 918273645546372819}]}"],
    );
    let e = err(&yaml);
    assert!(
        e.contains("invalid type: integer, expected a base64 string"),
        "{e}"
    );
    assert!(!e.contains("918273645546372819"), "{e}");
    // A key pasted where a list belongs.
    let yaml = doc("[secrets]", &[&format!("aescbc: {{keys: \"{LEAKY}\"}}")]);
    let e = err(&yaml);
    assert!(
        e.contains("invalid type: string, expected a sequence"),
        "{e}"
    );
    assert!(!e.contains(LEAKY), "{e}");
    let yaml = doc(
        "[secrets]",
        &[&format!(
            "aescbc: {{keys: [{{name: k, secret: [\"{LEAKY}\"]}}]}}"
        )],
    );
    let e = err(&yaml);
    assert!(!e.contains(LEAKY), "{e}");
}

#[test]
fn invalid_kms_timeout_is_a_decode_error_with_go_wording() {
    let yaml = doc(
        "[secrets]",
        &[&kms(
            "apiVersion: v2, name: a, endpoint: 'unix:///k.sock', timeout: '3'",
        )],
    );
    let e = err(&yaml);
    assert!(
        e.contains(
            r#"resources[0].providers[0].kms: invalid timeout: time: missing unit in duration "3""#
        ),
        "{e}"
    );
    let yaml = doc(
        "[secrets]",
        &[&kms(
            "apiVersion: v2, name: a, endpoint: 'unix:///k.sock', timeout: 1d",
        )],
    );
    assert!(err(&yaml).contains(r#"time: unknown unit "d" in duration "1d""#));
    // A number is a type error (kube-apiserver wants a JSON string).
    let yaml = doc(
        "[secrets]",
        &[&kms(
            "apiVersion: v2, name: a, endpoint: 'unix:///k.sock', timeout: 3",
        )],
    );
    assert!(err(&yaml).contains("kms.timeout: invalid type: integer, expected a duration string"));
}

#[test]
fn load_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "error reading encryption provider configuration file \"{}\"",
            missing.display()
        )
    );
    assert!(std::error::Error::source(&e).is_some());

    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    assert_eq!(
        Config::load(&empty).unwrap_err().to_string(),
        format!(
            "encryption provider configuration file \"{}\" is empty",
            empty.display()
        )
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, doc("[secrets]", &["identty: {}"])).unwrap();
    let e = Config::load(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "error decoding encryption provider configuration file \"{}\": resources[0].providers[0]: unknown field `identty`",
            bad.display()
        )),
        "{e}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, doc("[secrets]", &[&aescbc(K32)])).unwrap();
    Config::load(&good).unwrap();
}

// ---- validation, rule by rule ---------------------------------------------------------------

#[test]
fn no_resources_at_all() {
    assert_eq!(
        err(&format!("{HEAD}resources: []\n")),
        "resources: Required value: at least one resources is required"
    );
    assert_eq!(
        err(HEAD),
        "resources: Required value: at least one resources is required"
    );
}

#[test]
fn entry_without_providers() {
    let yaml = format!("{HEAD}resources:\n- resources: [secrets]\n");
    assert_eq!(
        err(&yaml),
        "resources[0].providers: Required value: at least one resources[0].providers is required"
    );
}

#[test]
fn duplicate_resources() {
    let e = field_errors(&doc("[secrets, secrets]", &["identity: {}"]));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path(), "resources[0].resources");
    assert_eq!(e[0].error_type(), FieldErrorType::Invalid);
    assert_eq!(e[0].value(), Some(r#"["secrets","secrets"]"#));
    assert_eq!(
        e[0].to_string(),
        r#"resources[0].resources: Invalid value: ["secrets","secrets"]: the same resource cannot be specified multiple times"#
    );
    // `secrets.` is the same group/resource as `secrets`.
    assert_eq!(
        err(&doc("[secrets, secrets.]", &["identity: {}"])),
        r#"resources[0].resources: Invalid value: ["secrets","secrets."]: the same resource cannot be specified multiple times"#
    );
}

#[test]
fn overlapping_resources() {
    assert_eq!(
        err(&doc("[secrets, '*.']", &["identity: {}"])),
        r#"resources[0].resources: Invalid value: ["secrets","*."]: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"#
    );
    assert_eq!(
        err(&doc("['*.*', configmaps]", &["identity: {}"])),
        r#"resources[0].resources: Invalid value: ["*.*","configmaps"]: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"#
    );
    assert_eq!(
        err(&doc("[deployments.apps, '*.apps']", &["identity: {}"])),
        r#"resources[0].resources: Invalid value: ["deployments.apps","*.apps"]: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"#
    );
    // Different groups do not overlap.
    ok(&doc("[secrets, '*.apps']", &["identity: {}"]));
}

#[test]
fn duplicate_wildcards_report_both_duplicate_and_overlap() {
    for list in ["['*.', '*.']", "['*.*', '*.*']"] {
        let e = field_errors(&doc(list, &["identity: {}"]));
        let details: Vec<&str> = e.iter().map(FieldError::detail).collect();
        assert_eq!(
            details,
            [
                "the same resource cannot be specified multiple times",
                "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"
            ],
            "{list}"
        );
    }
}

#[test]
fn resource_name_rules() {
    let cases = [
        ("Secrets", "resource name should not contain capital letters"),
        ("*", "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"),
        ("apiserveripinfo", "resources which do not have REST API/s cannot be encrypted"),
        ("serviceipallocations", "resources which do not have REST API/s cannot be encrypted"),
        ("servicenodeportallocations", "resources which do not have REST API/s cannot be encrypted"),
        ("events.events.k8s.io", "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"),
        ("*.events.k8s.io", "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"),
        ("*.extensions", "'extensions' group has been removed and cannot be used for encryption"),
        ("foo.extensions", "'extensions' group has been removed and cannot be used for encryption"),
        ("secrets.*", "encrypting the same resource across groups is not supported"),
    ];
    for (name, detail) in cases {
        assert_eq!(
            err(&doc(&format!("['{name}']"), &["identity: {}"])),
            format!("resources[0].resources[0]: Invalid value: \"{name}\": {detail}"),
            "{name}"
        );
    }
}

#[test]
fn capital_letters_win_over_other_name_rules() {
    assert_eq!(
        err(&doc("[apiServerIPInfo]", &["identity: {}"])),
        r#"resources[0].resources[0]: Invalid value: "apiServerIPInfo": resource name should not contain capital letters"#
    );
}

#[test]
fn unknown_groups_pass_validation() {
    ok(&doc(
        "[secrets.core, pandas.awesome.bears.example]",
        &["identity: {}"],
    ));
}

#[test]
fn more_than_one_provider_in_an_element_never_prints_keys() {
    let yaml = doc(
        "[secrets]",
        &[&format!(
            "{{aescbc: {{keys: [{{name: k, secret: \"{LEAKY}\"}}]}}, identity: {{}}}}"
        )],
    );
    let e = err(&yaml);
    assert_eq!(
        e,
        r#"resources[0].providers[0]: Invalid value: ["aescbc","identity"]: more than one provider specified in a single element, should split into different list elements"#
    );
    assert!(!e.contains(LEAKY));
}

#[test]
fn only_one_provider_type_is_checked_per_element() {
    // kube-apiserver checks kms before aesgcm before aescbc before secretbox: the bad aescbc
    // key is not reported.
    let yaml = doc(
        "[secrets]",
        &[&format!(
            "{{aesgcm: {{keys: [{{name: k, secret: \"{K32}\"}}]}}, aescbc: {{keys: []}}}}"
        )],
    );
    assert_eq!(
        err(&yaml),
        r#"resources[0].providers[0]: Invalid value: ["aesgcm","aescbc"]: more than one provider specified in a single element, should split into different list elements"#
    );
}

#[test]
fn key_rules() {
    let p = "resources[0].providers[0]";
    assert_eq!(
        err(&doc("[secrets]", &["secretbox: {keys: []}"])),
        format!("{p}.secretbox.keys: Required value: at least one keys is required")
    );
    assert_eq!(
        err(&doc(
            "[secrets]",
            &[&format!("aesgcm: {{keys: [{{secret: \"{K32}\"}}]}}")]
        )),
        format!("{p}.aesgcm.keys[0].name: Required value: name is a mandatory field for a key")
    );
    assert_eq!(
        err(&doc("[secrets]", &["aescbc: {keys: [{name: k}]}"])),
        format!("{p}.aescbc.keys[0].secret: Required value: secret is a mandatory field for a key")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&aescbc("not base64!")])),
        format!("{p}.aescbc.keys[0].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded")
    );
    // Missing padding: Go requires it.
    assert_eq!(
        err(&doc("[secrets]", &[&aescbc(K32.trim_end_matches('='))])),
        format!("{p}.aescbc.keys[0].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&aescbc(K8)])),
        format!("{p}.aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 8, expected one of [16 24 32]")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&format!("secretbox: {{keys: [{{name: k, secret: \"{K16}\"}}]}}")])),
        format!("{p}.secretbox.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 16, expected one of [32]")
    );
    for k in [K16, K24, K32] {
        ok(&doc("[secrets]", &[&aescbc(k)]));
        ok(&doc(
            "[secrets]",
            &[&format!("aesgcm: {{keys: [{{name: k, secret: \"{k}\"}}]}}")],
        ));
    }
}

#[test]
fn secrets_with_line_breaks_and_lax_trailing_bits_are_accepted() {
    // A block scalar keeps the line break inside the key; Go ignores it.
    let yaml = format!(
        "{HEAD}resources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: |\n          {}\n          {}\n",
        &K32[..20],
        &K32[20..]
    );
    let c = ok(&yaml);
    assert_eq!(
        c.model().resources[0].providers[0]
            .aescbc
            .as_ref()
            .unwrap()
            .keys[0]
            .material()
            .len(),
        32
    );
    // 16 bytes whose last character carries non-zero unused bits ('x' instead of 'w').
    ok(&doc("[secrets]", &[&aescbc("AAECAwQFBgcICQoLDA0ODx==")]));
}

#[test]
fn the_documentation_sample_keys_are_refused() {
    // kubernetes.io's EncryptionConfiguration reference sample: key2 is 28 bytes, key3 25.
    let yaml = format!(
        "{HEAD}resources:
- resources:
  - events
  providers:
  - identity: {{}}
- resources:
  - secrets
  - configmaps
  - pandas.awesome.bears.example
  providers:
  - aescbc:
      keys:
      - name: key1
        secret: c2VjcmV0IGlzIHNlY3VyZQ==
- resources:
  - '*.apps'
  providers:
  - aescbc:
      keys:
      - name: key2
        secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==
- resources:
  - '*.*'
  providers:
  - aescbc:
      keys:
      - name: key3
        secret: c2VjcmV0IGlzIHNlY3VyZSwgSSB0aGluaw==
"
    );
    assert_eq!(
        err(&yaml),
        "[resources[2].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 28, expected one of [16 24 32], resources[3].providers[0].aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 25, expected one of [16 24 32]]"
    );
}

#[test]
fn kms_rules() {
    let p = "resources[0].providers[0].kms";
    let ep = "endpoint: 'unix:///tmp/kms.sock'";
    ok(&doc(
        "[secrets]",
        &[&kms(&format!("apiVersion: v2, name: a, {ep}"))],
    ));
    ok(&doc(
        "[secrets]",
        &[&kms(&format!("name: a, {ep}, cachesize: -1, timeout: 1m"))],
    ));
    assert_eq!(
        err(&doc("[secrets]", &[&kms(&format!("apiVersion: v2, {ep}"))])),
        format!("{p}.name: Required value: name is a mandatory field for a provider")
    );
    assert_eq!(
        err(&doc(
            "[secrets]",
            &[&kms(&format!("apiVersion: v2, name: 'a:b', {ep}"))]
        )),
        format!(
            "{p}.name: Invalid value: \"a:b\": invalid KMS provider name a:b, must not contain ':'"
        )
    );
    // v1 names may contain ':'.
    ok(&doc(
        "[secrets]",
        &[&kms(&format!("apiVersion: v1, name: 'a:b', {ep}"))],
    ));
    assert_eq!(
        err(&doc(
            "[secrets]",
            &[&kms(&format!(
                "apiVersion: v2, name: a, {ep}, timeout: -1s"
            ))]
        )),
        format!("{p}.timeout: Invalid value: \"-1s\": timeout should be a positive value")
    );
    assert_eq!(
        err(&doc(
            "[secrets]",
            &[&kms(&format!(
                "apiVersion: v2, name: a, {ep}, timeout: '0'"
            ))]
        )),
        format!("{p}.timeout: Invalid value: \"0s\": timeout should be a positive value")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&kms("apiVersion: v2, name: a")])),
        format!("{p}.endpoint: Invalid value: \"\": endpoint is a mandatory field for a kms")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&kms("apiVersion: v2, name: a, endpoint: 'tcp://127.0.0.1:9000'")])),
        format!("{p}.endpoint: Invalid value: \"tcp://127.0.0.1:9000\": unsupported scheme \"tcp\" for KMS provider, only unix is supported")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&kms("apiVersion: v2, name: a, endpoint: /tmp/kms.sock")])),
        format!("{p}.endpoint: Invalid value: \"/tmp/kms.sock\": unsupported scheme \"\" for KMS provider, only unix is supported")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&kms("apiVersion: v2, name: a, endpoint: '://x'")])),
        format!("{p}.endpoint: Invalid value: \"://x\": invalid endpoint for kms provider, error: parse \"://x\": missing protocol scheme")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&kms(&format!("apiVersion: v1, name: a, {ep}, cachesize: 0"))])),
        format!("{p}.cachesize: Invalid value: 0: cachesize should be a positive value, or negative to disable")
    );
    assert_eq!(
        err(&doc(
            "[secrets]",
            &[&kms(&format!(
                "apiVersion: v2, name: a, {ep}, cachesize: 10"
            ))]
        )),
        format!("{p}.cachesize: Invalid value: 10: cachesize is not supported in v2")
    );
    assert_eq!(
        err(&doc("[secrets]", &[&kms(&format!("apiVersion: v3, name: a, {ep}"))])),
        format!("{p}.apiVersion: Invalid value: \"v3\": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported")
    );
    // An unknown version with a cachesize gets both errors, as in kube-apiserver.
    assert_eq!(
        err(&doc("[secrets]", &[&kms(&format!("apiVersion: v3, name: a, {ep}, cachesize: 5"))])),
        format!("[{p}.cachesize: Invalid value: 5: cachesize is not supported in v2, {p}.apiVersion: Invalid value: \"v3\": unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported]")
    );
}

#[test]
fn kms_names_must_be_unique_for_v2() {
    let ep = "endpoint: 'unix:///tmp/kms.sock'";
    let v1 = kms(&format!("apiVersion: v1, name: foo, {ep}"));
    let v2 = kms(&format!("apiVersion: v2, name: foo, {ep}"));
    assert_eq!(
        err(&doc("[secrets]", &[&v2, &v2])),
        "resources[0].providers[1].kms.name: Invalid value: \"foo\": duplicate KMS provider name foo, names must be unique"
    );
    assert_eq!(
        err(&doc("[secrets]", &[&v1, &v2])),
        "resources[0].providers[1].kms.name: Invalid value: \"foo\": duplicate KMS provider name foo, names must be unique"
    );
    // Across entries too.
    let yaml = format!(
        "{HEAD}resources:\n- resources: [secrets]\n  providers: [{{{v2}}}]\n- resources: [configmaps]\n  providers: [{{{v2}}}]\n"
    );
    assert_eq!(
        err(&yaml),
        "resources[1].providers[0].kms.name: Invalid value: \"foo\": duplicate KMS provider name foo, names must be unique"
    );
    // v1 twice is allowed without automatic reload ...
    ok(&doc("[secrets]", &[&v1, &v1]));
    // ... and refused with it.
    let model: EncryptionConfiguration =
        serde_norway::from_str(&doc("[secrets]", &[&v1, &v1])).unwrap();
    assert_eq!(
        validate::validate(&model, true).unwrap_err().to_string(),
        "resources[0].providers[1].kms.name: Invalid value: \"foo\": duplicate KMS provider name foo, names must be unique"
    );
}

#[test]
fn errors_keep_kube_order_and_drop_identical_texts() {
    let yaml = format!(
        "{HEAD}resources:
- resources: [Secrets, secrets.*]
  providers:
  - aescbc: {{keys: [{{name: k, secret: '{K8}'}}, {{name: '', secret: '{K8}'}}]}}
- resources: []
  providers: []
"
    );
    let e = field_errors(&yaml);
    let paths: Vec<&str> = e.iter().map(FieldError::path).collect();
    assert_eq!(
        paths,
        [
            "resources[0].resources[0]",
            "resources[0].resources[1]",
            "resources[0].providers[0].aescbc.keys[0].secret",
            "resources[0].providers[0].aescbc.keys[1].name",
            "resources[0].providers[0].aescbc.keys[1].secret",
            "resources[1].resources",
            "resources[1].providers",
        ]
    );
    // Two identical texts print once.
    let same = doc("[secrets]", &["identity:", "identity:"]).replace("providers[1]", "x");
    let e = field_errors(&same);
    assert_eq!(e.len(), 2, "different paths are different texts");
    let model = EncryptionConfiguration {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        resources: vec![ResourceConfiguration {
            resources: vec!["Secrets".into(), "Secrets".into()],
            providers: vec![ProviderConfiguration {
                identity: Some(IdentityConfiguration {}),
                ..Default::default()
            }],
        }],
    };
    let e = validate::validate(&model, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"[resources[0].resources: Invalid value: ["Secrets","Secrets"]: the same resource cannot be specified multiple times, resources[0].resources[0]: Invalid value: "Secrets": resource name should not contain capital letters, resources[0].resources[1]: Invalid value: "Secrets": resource name should not contain capital letters]"#
    );
}

#[test]
fn identical_error_texts_are_dropped() {
    let list = vec![
        validate_test_error("a", "x"),
        validate_test_error("a", "x"),
        validate_test_error("b", "x"),
    ];
    let v = ValidationErrors::from_test(list);
    assert_eq!(v.errors().len(), 2);
    assert_eq!(
        v.to_string(),
        "[a: Required value: x, b: Required value: x]"
    );
}

fn validate_test_error(path: &str, detail: &str) -> FieldError {
    FieldError::test_required(path, detail)
}

// ---- masking -------------------------------------------------------------------------------

fn two_entries(first: &str, second: &str) -> String {
    format!(
        "{HEAD}resources:\n- resources: {first}\n  providers: [{{identity: {{}}}}]\n- resources: {second}\n  providers: [{{identity: {{}}}}]\n"
    )
}

#[test]
fn masking_by_earlier_wildcards() {
    let cases = [
        ("['*.']", "[secrets]", "secrets", "*."),
        ("['*.*']", "[secrets]", "secrets", "*.*"),
        ("['*.*']", "['*.']", "*.", "*.*"),
        (
            "['*.apps']",
            "[deployments.apps]",
            "deployments.apps",
            "*.apps",
        ),
        ("['*.']", "['*.']", "*.", "*."),
        ("['*.*']", "['*.apps']", "*.apps", "*.*"),
    ];
    for (first, second, resource, rule) in cases {
        let e = Config::from_yaml(&two_entries(first, second)).unwrap_err();
        match &e {
            ConfigError::Masked {
                resource: r,
                rule: w,
            } => {
                assert_eq!(
                    (r.as_str(), w.as_str()),
                    (resource, rule),
                    "{first} {second}"
                );
            }
            other => panic!("{first} {second}: {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            format!("resource \"{resource}\" is masked by earlier rule \"{rule}\"")
        );
    }
}

#[test]
fn specific_before_wildcard_is_allowed() {
    ok(&two_entries("[secrets]", "['*.']"));
    ok(&two_entries("['*.']", "['*.*']"));
    ok(&two_entries("[secrets]", "['*.*']"));
    ok(&two_entries("['*.apps']", "[secrets]"));
    // The same exact resource twice is not masking.
    ok(&two_entries("[secrets]", "[secrets]"));
}

// ---- lookup --------------------------------------------------------------------------------

fn lookup_config() -> Config {
    ok(&format!(
        "{HEAD}resources:
- resources: [secrets, configmaps]
  providers:
  - aescbc: {{keys: [{{name: a, secret: '{K32}'}}]}}
  - identity: {{}}
- resources: ['*.apps']
  providers:
  - aesgcm: {{keys: [{{name: g, secret: '{K32}'}}]}}
- resources: [secrets.]
  providers:
  - secretbox: {{keys: [{{name: s, secret: '{K32}'}}]}}
- resources: ['*.*']
  providers:
  - identity: {{}}
"
    ))
}

fn indexes(v: Vec<((usize, usize), &ProviderConfiguration)>) -> Vec<(usize, usize)> {
    v.into_iter().map(|(i, _)| i).collect()
}

#[test]
fn lookup_exact_names_concatenate_in_entry_order() {
    let c = lookup_config();
    let found = c.providers_for("", "secrets");
    assert_eq!(
        found
            .iter()
            .map(|(_, p)| p.type_name().unwrap())
            .collect::<Vec<_>>(),
        ["aescbc", "identity", "secretbox"]
    );
    assert_eq!(indexes(found), [(0, 0), (0, 1), (2, 0)]);
    assert_eq!(indexes(c.providers_for("", "configmaps")), [(0, 0), (0, 1)]);
}

#[test]
fn lookup_group_wildcard_then_any() {
    let c = lookup_config();
    assert_eq!(indexes(c.providers_for("apps", "deployments")), [(1, 0)]);
    assert_eq!(indexes(c.providers_for("batch", "jobs")), [(3, 0)]);
    assert_eq!(indexes(c.providers_for("", "pods")), [(3, 0)]);
}

#[test]
fn lookup_not_covered() {
    let c = ok(&doc("[configmaps, secrets.core]", &["identity: {}"]));
    assert!(c.providers_for("", "secrets").is_empty());
    // `secrets.core` names group "core", which no object uses.
    assert!(c.providers_for("", "secrets").is_empty());
    assert_eq!(indexes(c.providers_for("core", "secrets")), [(0, 0)]);
}

#[test]
fn lookup_core_wildcard() {
    let c = ok(&doc("['*.']", &[&aescbc(K32)]));
    assert_eq!(indexes(c.providers_for("", "secrets")), [(0, 0)]);
    assert!(c.providers_for("apps", "deployments").is_empty());
}

#[test]
fn parse_group_resource_splits_at_first_dot() {
    assert_eq!(parse_group_resource("secrets"), ("", "secrets"));
    assert_eq!(parse_group_resource("secrets."), ("", "secrets"));
    assert_eq!(parse_group_resource("*."), ("", "*"));
    assert_eq!(parse_group_resource("*.*"), ("*", "*"));
    assert_eq!(parse_group_resource("*.apps"), ("apps", "*"));
    assert_eq!(
        parse_group_resource("pandas.awesome.bears.example"),
        ("awesome.bears.example", "pandas")
    );
}

// ---- warnings ------------------------------------------------------------------------------

fn warning_paths(c: &Config) -> Vec<(&str, &str)> {
    c.warnings()
        .iter()
        .map(|w| (w.path.as_str(), w.message.as_str()))
        .collect()
}

/// The warnings but aesgcm's rotation warning (for tests that use aesgcm as a plain writer).
fn without_gcm_rotation(c: &Config) -> Vec<(&str, &str)> {
    warning_paths(c)
        .into_iter()
        .filter(|(p, _)| !p.ends_with("].aesgcm"))
        .collect()
}

#[test]
fn warns_about_identity_first() {
    let c = ok(&doc("[secrets]", &["identity: {}", &aescbc(K32)]));
    let w = warning_paths(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[0].providers[0]");
    assert!(w[0].1.contains("unencrypted"));
}

#[test]
fn identity_in_a_later_rule_for_the_same_resource_never_writes() {
    // kube-apiserver appends the second rule's providers to the secrets chain: aesgcm writes.
    let gcm = format!("aesgcm: {{keys: [{{name: g, secret: '{K32}'}}]}}");
    let yaml = format!(
        "{HEAD}resources:\n- resources: [secrets]\n  providers:\n  - {gcm}\n\
         - resources: [secrets, configmaps]\n  providers:\n  - identity: {{}}\n"
    );
    let c = ok(&yaml);
    let w = without_gcm_rotation(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[1].providers[0]");
    assert!(
        w[0].1
            .contains("new writes of configmaps are stored unencrypted"),
        "{w:?}"
    );
    // Only secrets in the later rule: nothing to warn about.
    let yaml = yaml.replace("[secrets, configmaps]", "[secrets]");
    assert!(
        without_gcm_rotation(&ok(&yaml)).is_empty(),
        "{:?}",
        ok(&yaml).warnings()
    );
}

#[test]
fn warns_about_aescbc_as_write_provider_only() {
    let c = ok(&doc("[secrets]", &[&aescbc(K32), "identity: {}"]));
    let w = warning_paths(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[0].providers[0].aescbc");
    assert!(w[0].1.contains("padding oracle"));
    let c = ok(&doc(
        "[secrets]",
        &[
            &format!("aesgcm: {{keys: [{{name: g, secret: '{K32}'}}]}}"),
            &aescbc(K16),
        ],
    ));
    let w = warning_paths(&c);
    assert_eq!(w.len(), 1, "aesgcm's own warning only: {w:?}");
    assert_eq!(w[0].0, "resources[0].providers[0].aesgcm");
}

#[test]
fn issue_22_14_warns_that_aesgcm_keys_must_be_rotated_every_200k_writes() {
    let gcm = format!("aesgcm: {{keys: [{{name: g, secret: '{K32}'}}]}}");
    let c = ok(&doc("[secrets]", &[&gcm, "identity: {}"]));
    let w = warning_paths(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[0].providers[0].aesgcm");
    assert!(
        w[0].1.contains("must be rotated every 200k writes"),
        "{}",
        w[0].1
    );
    // Only as the write provider: a read-only aesgcm key spends no nonces.
    let c = ok(&doc("[secrets]", &["identity: {}", &gcm]));
    assert!(warning_paths(&c).iter().all(|(p, _)| !p.contains("aesgcm")));
}

#[test]
fn warns_about_shared_key_material_without_showing_it() {
    let c = ok(&doc(
        "[secrets]",
        &[
            &format!("aesgcm: {{keys: [{{name: g, secret: '{LEAKY}'}}]}}"),
            &format!("secretbox: {{keys: [{{name: s, secret: '{K32}'}}, {{name: t, secret: '{LEAKY}'}}]}}"),
        ],
    ));
    let w = without_gcm_rotation(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[0].providers[1].secretbox.keys[1]");
    assert!(w[0].1.contains("resources[0].providers[0].aesgcm.keys[0]"));
    for w in c.warnings() {
        assert!(!w.to_string().contains(LEAKY));
    }
}

#[test]
fn warns_about_a_key_name_used_twice_by_one_provider_type() {
    // Same type and name in one entry: a value's prefix no longer says which key wrote it.
    let c = ok(&doc(
        "[secrets]",
        &[
            &format!("aesgcm: {{keys: [{{name: k, secret: '{K32}'}}]}}"),
            &format!("aesgcm: {{keys: [{{name: k, secret: '{K16}'}}]}}"),
            // The same name under another type has another prefix: no warning.
            &format!("secretbox: {{keys: [{{name: k, secret: '{LEAKY}'}}]}}"),
        ],
    ));
    let w = without_gcm_rotation(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[0].providers[1].aesgcm.keys[0].name");
    assert!(w[0].1.contains("resources[0].providers[0].aesgcm.keys[0]"));
    assert!(w[0].1.contains("k8s:enc:aesgcm:v1:k:"));
}

#[test]
fn warns_about_kms_v1() {
    let c = ok(&doc(
        "[secrets]",
        &[&kms("name: a, endpoint: 'unix:///k.sock'")],
    ));
    let w = warning_paths(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources[0].providers[0].kms");
    assert!(w[0].1.contains("--feature-gates=KMSv1=true"));
    let c = ok(&doc(
        "[secrets]",
        &[&kms("apiVersion: v2, name: a, endpoint: 'unix:///k.sock'")],
    ));
    assert!(c.warnings().is_empty());
}

#[test]
fn warns_when_secrets_are_not_covered() {
    let c = ok(&doc(
        "[configmaps, secrets.core]",
        &[&format!("aesgcm: {{keys: [{{name: g, secret: '{K32}'}}]}}")],
    ));
    let w = without_gcm_rotation(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "resources");
    assert!(w[0].1.contains("secrets"));
    for covering in ["['*.']", "['*.*']", "[secrets.]"] {
        let c = ok(&doc(
            covering,
            &[&format!("aesgcm: {{keys: [{{name: g, secret: '{K32}'}}]}}")],
        ));
        assert!(
            without_gcm_rotation(&c).is_empty(),
            "{covering}: {:?}",
            c.warnings()
        );
    }
}

// ---- secrecy -------------------------------------------------------------------------------

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let leaky_cases = [
        // wrong length for secretbox
        doc("[secrets]", &[&format!("secretbox: {{keys: [{{name: k, secret: '{}'}}]}}", &LEAKY[..24])]),
        // two providers in one element
        doc("[secrets]", &[&format!("{{aescbc: {{keys: [{{name: k, secret: '{LEAKY}'}}]}}, aesgcm: {{keys: [{{name: k, secret: '{LEAKY}'}}]}}}}")]),
        // not base64
        doc("[secrets]", &[&aescbc(&format!("{LEAKY}!"))]),
        // masked rule
        format!("{}\n- resources: [secrets]\n  providers: [{{{}}}]\n", doc("['*.']", &[&aescbc(LEAKY)]).trim_end(), aescbc(LEAKY)),
        // unknown field next to a key
        doc("[secrets]", &[&format!("aescbc: {{keys: [{{name: k, secret: '{LEAKY}', extra: 1}}]}}")]),
        // the key where the key list belongs
        doc("[secrets]", &[&format!("aescbc: {{keys: '{LEAKY}'}}")]),
        // the key where a name belongs
        doc("[secrets]", &[&format!("aescbc: {{keys: [{{name: ['{LEAKY}'], secret: '{LEAKY}'}}]}}")]),
        // the key where the cachesize belongs
        doc("[secrets]", &[&kms(&format!("name: a, endpoint: 'unix:///k', cachesize: '{LEAKY}'"))]),
    ];
    for yaml in &leaky_cases {
        let e = Config::from_yaml(yaml).expect_err(yaml);
        assert!(!e.to_string().contains(LEAKY), "{e}");
        assert!(!format!("{e:?}").contains(LEAKY), "{e:?}");
        assert!(!e.to_string().contains("atrest-distinctive"), "{e}");
    }
    let c = ok(&doc("[secrets]", &[&aescbc(LEAKY)]));
    assert!(!format!("{c:?}").contains(LEAKY));
    assert!(!format!("{:?}", c.model()).contains(LEAKY));
    let key = &c.model().resources[0].providers[0]
        .aescbc
        .as_ref()
        .unwrap()
        .keys[0];
    assert!(!format!("{key:?}").contains(LEAKY));
    assert!(!format!("{:?}", key.material()).contains("atrest"));
}

#[test]
fn key_material_is_the_decoded_secret() {
    let c = ok(&doc("[secrets]", &[&aescbc(K16)]));
    let key = &c.model().resources[0].providers[0]
        .aescbc
        .as_ref()
        .unwrap()
        .keys[0];
    let m = key.material();
    assert_eq!(m.expose_secret(), (0u8..16).collect::<Vec<_>>().as_slice());
    let bad = Key {
        name: "x".into(),
        secret: SecretString::new("!!".into()),
    };
    assert!(bad.material().is_empty());
}

// ---- the data corpus -----------------------------------------------------------------------

fn corpus(kind: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/configs")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in {}", dir.display());
    files
}

#[test]
fn corpus_valid_configs_load() {
    let mut failures = Vec::new();
    for file in corpus("valid") {
        if let Err(e) = Config::load(&file) {
            failures.push(format!("{}: {e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corpus_invalid_configs_fail_with_the_expected_message() {
    let mut failures = Vec::new();
    for file in corpus("invalid") {
        let expected_file = file.with_extension("err");
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
        let text = std::fs::read_to_string(&file).unwrap();
        match Config::from_yaml(&text) {
            Ok(_) => failures.push(format!("{}: accepted", file.display())),
            Err(e) if e.to_string() != expected.trim_end_matches('\n') => failures.push(format!(
                "{}:\n  expected: {}\n  got:      {e}",
                file.display(),
                expected.trim_end()
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn documents_without_a_kind() {
    for text in ["", "# only a comment\n", "---\n"] {
        assert_eq!(err(text), "Object 'Kind' is missing", "{text:?}");
    }
    assert_eq!(
        err("[]"),
        "error decoding encryption provider configuration: invalid type: sequence, expected struct EncryptionConfiguration"
    );
    // A bare scalar (perhaps a pasted key) is not echoed.
    assert_eq!(
        err(LEAKY),
        "error decoding encryption provider configuration: invalid type: string, expected struct EncryptionConfiguration"
    );
}

#[test]
fn deep_flow_nesting_is_refused_before_parsing() {
    let deep = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: {}",
        "[".repeat(100_000)
    );
    let err = Config::from_yaml(&deep).unwrap_err().to_string();
    assert!(
        err.contains("flow collections ([ or {) nest more than 64 levels deep at line 3"),
        "{err}"
    );
    // Brackets in quoted scalars and comments are not nesting; 64 levels are allowed.
    let quoted = format!(
        "# {}\napiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
         resources:\n  - resources: [\"{}\", 'a[[']\n    providers: [{{identity: {{}}}}]\n",
        "[".repeat(100),
        "{".repeat(100)
    );
    let c = Config::from_yaml(&quoted).unwrap();
    assert_eq!(c.model().resources[0].resources[1], "a[[");
    assert!(super::flow_too_deep(&"[".repeat(64)).is_none());
    assert_eq!(
        super::flow_too_deep(&format!("a:\n  {}", "{".repeat(65))),
        Some(2)
    );
}

#[test]
fn timeouts_parse_as_etcdctl_writes_them() {
    use crate::config::parse_timeout;
    use std::time::Duration;
    assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_timeout("5"), Ok(Duration::from_secs(5)));
    assert!(parse_timeout("0s").unwrap_err().contains("not a positive"));
    assert!(parse_timeout("-1s").unwrap_err().contains("not a positive"));
    assert!(parse_timeout("2x").unwrap_err().contains("unknown unit"));
    assert!(parse_timeout("").is_err());
}

// ---- issue 22 item 4: bounded work on hostile configs -------------------------------------

fn names(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("r{i}.g{i}")).collect();
    format!("[{}]", list.join(", "))
}

#[test]
fn issue_22_4_forty_thousand_names_are_refused_naming_the_limit() {
    let e = err(&doc(&names(40_000), &["identity: {}"]));
    assert!(
        e.contains("resources[0].resources")
            && e.contains("more than 10000 resource names in the file (atrest's limit)"),
        "{e}"
    );
    // At the limit: accepted (and checked in one pass, with one duplicate and one overlap).
    ok(&doc(&names(MAX_RESOURCE_NAMES), &["identity: {}"]));
    let mut list: Vec<String> = (0..9_997).map(|i| format!("r{i}.g{i}")).collect();
    list.extend(["r5.g5".into(), "'*.g7'".into(), "secrets".into()]);
    let errs = field_errors(&doc(&format!("[{}]", list.join(", ")), &["identity: {}"]));
    let details: Vec<&str> = errs.iter().map(FieldError::detail).collect();
    assert_eq!(
        details,
        [
            "the same resource cannot be specified multiple times",
            "using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked",
        ]
    );
    // A model built in code is held to the same limit.
    let mut model = ok(&doc("[secrets]", &["identity: {}"])).model().clone();
    model.resources[0].resources = (0..=MAX_RESOURCE_NAMES).map(|i| format!("r{i}")).collect();
    let e = Config::from_model(model).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::TooManyResourceNames { names: 10_001 }
    ));
    assert!(e.to_string().contains("limit of 10000"), "{e}");
}

#[test]
fn issue_22_4_alias_bombs_are_refused_as_excessive_aliasing() {
    // 1,000 aliases of one 100-name list: 100,000 names from a few KB.
    let mut s = format!(
        "{HEAD}resources:\n- &e\n  resources: {}\n  providers: [identity: {{}}]\n",
        names(100)
    );
    for _ in 0..1_000 {
        s.push_str("- *e\n");
    }
    let e = err(&s);
    assert!(
        e.contains("excessive aliasing") && e.contains("1000 YAML aliases"),
        "{e}"
    );
    // Under the alias limit, the name limit still holds across the expansion.
    let mut s = format!(
        "{HEAD}resources:\n- &e\n  resources: {}\n  providers: [identity: {{}}]\n",
        names(2_000)
    );
    for _ in 0..10 {
        s.push_str("- *e\n");
    }
    let e = err(&s);
    assert!(e.contains("more than 10000 resource names"), "{e}");
    // A few aliases, quoted stars and comments are fine.
    assert_eq!(
        super::yaml_aliases("a: '*.*'\nb: \"*\" # *x\nc: [*y, *z]\nd: - *w\n"),
        3
    );
    ok(&format!(
        "{HEAD}resources:\n- resources: [secrets]\n  providers: &p\n  - identity: {{}}\n\
         - resources: [configmaps]\n  providers: *p\n"
    ));
}

#[test]
fn issue_22_10_config_files_are_read_without_reallocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enc.yaml");
    std::fs::write(&path, vec![b'x'; 5000]).unwrap();
    let bytes = super::read_at_most(&path, MAX_CONFIG_BYTES).unwrap();
    assert_eq!(bytes.len(), 5000);
    assert_eq!(bytes.capacity(), 5001, "sized once from the file's length");
    // Larger than the limit: still read only up to limit + 1.
    let bytes = super::read_at_most(&path, 100).unwrap();
    assert_eq!(bytes.len(), 101);
}
