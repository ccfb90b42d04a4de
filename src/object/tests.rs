//! Tests against Kubernetes' own serialization fixtures (`tests/fixtures/k8s-api/`), the worked
//! example of a stored Secret, and robustness on damaged input.

use std::error::Error as _;

use serde_json::Value as Json;

use super::*;

const SECRET_PB: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/k8s-api/core.v1.Secret.pb"
));
const SECRET_JSON: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/k8s-api/core.v1.Secret.json"
));
const CONFIG_MAP_PB: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/k8s-api/core.v1.ConfigMap.pb"
));
const CONFIG_MAP_JSON: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/k8s-api/core.v1.ConfigMap.json"
));

/// The 125-byte plaintext of notes' worked example 5.1, as listed there.
const EXAMPLE_5_1_HEX: &str = "
6b 38 73 00 0a 0c 0a 02 76 31 12 06 53 65 63 72
65 74 12 65 0a 4a 0a 07 73 65 63 72 65 74 31 12
00 1a 07 64 65 66 61 75 6c 74 22 00 2a 24 30 62
35 63 32 61 36 65 2d 37 61 33 39 2d 34 66 38 65
2d 39 64 33 63 2d 31 63 32 62 33 61 34 64 35 65
36 66 32 00 38 00 42 08 08 80 e2 cf aa 06 10 00
12 0f 0a 05 6d 79 6b 65 79 12 06 6d 79 64 61 74
61 1a 06 4f 70 61 71 75 65 1a 00 22 00";

fn example_5_1() -> Vec<u8> {
    let bytes: Vec<u8> = EXAMPLE_5_1_HEX
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    assert_eq!(bytes.len(), 125);
    bytes
}

/// A deterministic xorshift64 generator (no extra crates).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn opt_str(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned).filter(|s| !s.is_empty())
}

/// Sorted key names of the JSON objects at `fields` of `obj`.
fn json_keys(obj: &Json, fields: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = fields
        .iter()
        .filter_map(|f| obj[*f].as_object())
        .flat_map(|m| m.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Checks `obj` against the upstream JSON fixture, field by field.
fn assert_matches_fixture(obj: &StoredObject, fixture: &[u8], data_fields: &[&str]) {
    let want: Json = serde_json::from_slice(fixture).unwrap();
    let meta = &want["metadata"];
    assert_eq!(Some(obj.api_version.clone()), opt_str(&want["apiVersion"]));
    assert_eq!(Some(obj.kind.clone()), opt_str(&want["kind"]));
    assert_eq!(obj.name, opt_str(&meta["name"]));
    assert_eq!(obj.namespace, opt_str(&meta["namespace"]));
    assert_eq!(obj.uid, opt_str(&meta["uid"]));
    assert_eq!(obj.resource_version, opt_str(&meta["resourceVersion"]));
    assert_eq!(obj.creation_timestamp, opt_str(&meta["creationTimestamp"]));
    assert_eq!(obj.labels, json_keys(meta, &["labels"]));
    assert_eq!(obj.data_keys, json_keys(&want, data_fields));
    assert_eq!(obj.immutable, want["immutable"].as_bool());
    if obj.is_secret() {
        assert_eq!(obj.secret_type, opt_str(&want["type"]));
    } else {
        assert_eq!(obj.secret_type, None);
    }
    // The fixtures fill every field: make sure the comparisons above were not all None == None.
    assert!(obj.name.is_some() && obj.namespace.is_some() && obj.uid.is_some());
    assert!(obj.creation_timestamp.is_some() && obj.immutable.is_some());
    assert_eq!(obj.data_keys.len(), 2);
    assert_eq!(obj.labels.len(), 1);
}

#[test]
fn fixture_secret_pb_matches_upstream_json() {
    let obj = decode(SECRET_PB).unwrap();
    assert_eq!(obj.encoding, Encoding::Protobuf);
    assert_eq!(
        (obj.content_type.as_ref(), obj.content_encoding.as_ref()),
        (None, None)
    );
    assert!(obj.secret_type.is_some());
    assert_matches_fixture(&obj, SECRET_JSON, &["data", "stringData"]);
}

#[test]
fn fixture_config_map_pb_matches_upstream_json() {
    let obj = decode(CONFIG_MAP_PB).unwrap();
    assert_eq!(obj.encoding, Encoding::Protobuf);
    assert!(obj.is_config_map());
    assert_matches_fixture(&obj, CONFIG_MAP_JSON, &["data", "binaryData"]);
}

#[test]
fn fixture_json_decodes_like_pb() {
    for (pb, json, fields) in [
        (SECRET_PB, SECRET_JSON, &["data", "stringData"]),
        (CONFIG_MAP_PB, CONFIG_MAP_JSON, &["data", "binaryData"]),
    ] {
        let from_json = decode(json).unwrap();
        assert_eq!(from_json.encoding, Encoding::Json);
        assert_matches_fixture(&from_json, json, fields);
        let from_pb = decode(pb).unwrap();
        assert_eq!(
            StoredObject {
                encoding: Encoding::Protobuf,
                ..from_json
            },
            from_pb
        );
    }
}

#[test]
fn worked_example_5_1() {
    let obj = decode(&example_5_1()).unwrap();
    assert_eq!(obj.encoding, Encoding::Protobuf);
    assert_eq!(
        (obj.api_version.as_str(), obj.kind.as_str()),
        ("v1", "Secret")
    );
    assert_eq!(obj.name.as_deref(), Some("secret1"));
    assert_eq!(obj.namespace.as_deref(), Some("default"));
    assert_eq!(
        obj.uid.as_deref(),
        Some("0b5c2a6e-7a39-4f8e-9d3c-1c2b3a4d5e6f")
    );
    assert_eq!(
        obj.creation_timestamp.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
    assert_eq!(obj.resource_version, None, "stored empty");
    assert_eq!(obj.secret_type.as_deref(), Some("Opaque"));
    assert_eq!(obj.data_keys, ["mykey"]);
    assert!(obj.labels.is_empty());
    assert_eq!(obj.immutable, None);
    assert_eq!(obj.content_type, None);
    assert_eq!(obj.content_encoding, None);
}

#[test]
fn json_as_kube_apiserver_writes_it() {
    let value = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","namespace":"prod","uid":"u-1","creationTimestamp":"2023-11-14T22:13:20Z","labels":{"app":"x"}},"data":{"b":"c2VjcmV0","a":null},"type":"Opaque"}
"#;
    let obj = decode(value).unwrap();
    assert_eq!(obj.encoding, Encoding::Json);
    assert_eq!(obj.name.as_deref(), Some("db"));
    assert_eq!(obj.namespace.as_deref(), Some("prod"));
    assert_eq!(obj.data_keys, ["a", "b"]);
    assert_eq!(obj.labels, ["app"]);
    assert_eq!(obj.secret_type.as_deref(), Some("Opaque"));

    // Another kind: its `type` and `data` are not a Secret's and are not reported.
    let svc = br#"  {"kind":"Service","apiVersion":"v1","metadata":{"name":"s"},"spec":{"type":"ClusterIP"},"type":{"x":1},"data":[1]}"#;
    let obj = decode(svc).unwrap();
    assert_eq!(
        (obj.kind.as_str(), obj.name.as_deref()),
        ("Service", Some("s"))
    );
    assert_eq!(obj.secret_type, None);
    assert!(obj.data_keys.is_empty());
}

#[test]
fn other_kinds_report_metadata_only() {
    // A Secret's raw bytes re-labelled as another kind: metadata still decodes (field 1).
    let pb = example_5_1();
    let mut relabelled = pb[..10].to_vec();
    relabelled.extend_from_slice(&[0x12, 0x06]);
    relabelled.extend_from_slice(b"Widget");
    relabelled.extend_from_slice(&pb[18..]);
    let obj = decode(&relabelled).unwrap();
    assert_eq!(obj.kind, "Widget");
    assert_eq!(obj.name.as_deref(), Some("secret1"));
    assert_eq!(obj.secret_type, None);
    assert!(obj.data_keys.is_empty());
    assert_eq!(peek_kind(&relabelled), Some(("v1".into(), "Widget".into())));
}

#[test]
fn encodings_that_are_not_ours() {
    for value in [
        &b""[..],
        b"   ",
        b"k8s:enc:aescbc:v1:key1:\x00\x01",
        b"apiVersion: v1\nkind: Secret\n",
        b"\xd9\xd9\xf7\xa1", // CBOR
        b"k8s",
    ] {
        assert!(
            matches!(decode(value), Err(ObjectError::UnknownEncoding)),
            "{value:?}"
        );
        assert!(peek_kind(value).is_none());
    }
}

#[test]
fn empty_protobuf_body() {
    match decode(b"k8s\x00") {
        Err(ObjectError::Protobuf { what, .. }) => assert_eq!(what, "runtime.Unknown"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peek_kind(b"k8s\x00"), None);
}

#[test]
fn invalid_utf8_in_strings_is_an_error() {
    let pb = example_5_1();
    // The `S` of kind "Secret" (envelope, read by the cursor).
    let mut kind = pb.clone();
    kind[12] = 0xff;
    assert!(matches!(
        decode(&kind),
        Err(ObjectError::Protobuf {
            what: "runtime.Unknown.typeMeta",
            ..
        })
    ));
    assert_eq!(peek_kind(&kind), None);
    // The `s` of name "secret1" (inside the Secret, read by prost).
    let mut name = pb.clone();
    assert_eq!(name[24], b's');
    name[24] = 0xc3;
    let err = decode(&name).unwrap_err();
    assert!(
        matches!(
            err,
            ObjectError::Protobuf {
                what: "v1.Secret",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.source().is_some());
    // The data key.
    let mut key = pb;
    assert_eq!(&key[100..105], b"mykey");
    key[101] = 0x80;
    assert!(decode(&key).is_err());
    assert!(decode_secret_data(&key).is_err());
}

#[test]
fn peek_kind_on_fixtures_with_trailing_garbage() {
    let mut rng = XorShift(0x5eed_0001);
    for (pb, kind) in [
        (SECRET_PB, "Secret"),
        (CONFIG_MAP_PB, "ConfigMap"),
        (&example_5_1()[..], "Secret"),
    ] {
        let want = Some(("v1".to_owned(), kind.to_owned()));
        assert_eq!(peek_kind(pb), want);
        for n in [0, 1, 7, 4096] {
            let mut page = pb.to_vec();
            page.extend(rng.bytes(n));
            assert_eq!(peek_kind(&page), want);
        }
        // Every prefix: never a panic, and never a wrong answer.
        for len in 0..=pb.len() {
            let got = peek_kind(&pb[..len]);
            assert!(got.is_none() || got == want, "prefix {len}: {got:?}");
        }
        // typeMeta is complete after magic, tag, length and its own bytes: from there on the
        // answer is known, and not before.
        let complete = 6 + usize::from(pb[5]);
        assert_eq!(peek_kind(&pb[..complete]), want);
        assert_eq!(peek_kind(&pb[..complete - 1]), None);
    }
}

#[test]
fn peek_kind_on_random_bytes() {
    let mut rng = XorShift(0x5eed_0002);
    for i in 0..5000 {
        let n = rng.below(64);
        let mut bytes = rng.bytes(n);
        if i % 2 == 0 {
            // Half of them with the magic, so the envelope parser is reached.
            bytes.splice(0..0, *PROTOBUF_MAGIC);
        }
        if let Some((api_version, kind)) = peek_kind(&bytes) {
            assert!(!kind.is_empty() && kind.is_ascii() && !api_version.is_empty());
        }
    }
}

#[test]
fn peek_kind_plausibility() {
    let frame = |api_version: &str, kind: &str| {
        let mut tm = vec![0x0a, api_version.len() as u8];
        tm.extend_from_slice(api_version.as_bytes());
        tm.push(0x12);
        tm.push(kind.len() as u8);
        tm.extend_from_slice(kind.as_bytes());
        let mut v = PROTOBUF_MAGIC.to_vec();
        v.push(0x0a);
        v.push(tm.len() as u8);
        v.extend(tm);
        v
    };
    let ok = |a: &str, k: &str| Some((a.to_owned(), k.to_owned()));
    assert_eq!(peek_kind(&frame("v1", "Secret")), ok("v1", "Secret"));
    assert_eq!(
        peek_kind(&frame("apps/v1", "Deployment")),
        ok("apps/v1", "Deployment")
    );
    assert_eq!(
        peek_kind(&frame("rbac.authorization.k8s.io/v1beta1", "Role")),
        ok("rbac.authorization.k8s.io/v1beta1", "Role")
    );
    for (a, k) in [
        ("v1", ""),
        ("v1", "Se cret"),
        ("v1", "1Secret"),
        ("v1", "Sécret"),
        ("", "Secret"),
        ("V1", "Secret"),
        ("/v1", "Secret"),
        ("apps/", "Secret"),
        ("apps..io/v1", "Secret"),
        ("a/b/c", "Secret"),
    ] {
        assert_eq!(peek_kind(&frame(a, k)), None, "{a:?} {k:?}");
    }
    // The first field must be typeMeta (1, length-delimited).
    let mut raw_first = frame("v1", "Secret");
    raw_first[4] = 0x12;
    assert_eq!(peek_kind(&raw_first), None);
}

#[test]
fn decode_never_panics_on_truncations() {
    for pb in [SECRET_PB, CONFIG_MAP_PB, &example_5_1()[..]] {
        for len in 0..pb.len() {
            let _ = decode(&pb[..len]);
            let _ = decode_secret_data(&pb[..len]);
        }
    }
    for json in [SECRET_JSON, CONFIG_MAP_JSON] {
        for len in 0..json.len() {
            let _ = decode(&json[..len]);
        }
    }
    // The last 4 bytes (contentEncoding, contentType) are the only optional ones.
    let pb = example_5_1();
    assert!(decode(&pb[..pb.len() - 4]).is_ok());
    assert!(decode(&pb[..pb.len() - 5]).is_err());
}

#[test]
fn decode_never_panics_on_mutations() {
    let mut rng = XorShift(0x5eed_0003);
    let inputs = [SECRET_PB.to_vec(), CONFIG_MAP_PB.to_vec(), example_5_1()];
    let mut decoded = 0;
    for i in 0..6000 {
        let mut v = inputs[i % inputs.len()].clone();
        for _ in 0..=rng.below(4) {
            let at = 4 + rng.below(v.len() - 4); // keep the magic so the parser is reached
            match rng.below(3) {
                0 => v[at] ^= 1 << rng.below(8),
                1 => v[at] = rng.next() as u8,
                _ => v.truncate(at.max(5)),
            }
        }
        if decode(&v).is_ok() {
            decoded += 1;
        }
        let _ = decode_secret_data(&v);
        let _ = peek_kind(&v);
    }
    // Flips inside string payloads still decode: the loop exercised both paths.
    assert!(decoded > 0 && decoded < 6000, "{decoded}");
}

/// Debug, Display and JSON of what a decode returns.
fn renderings(result: &Result<StoredObject, ObjectError>) -> String {
    let mut out = format!("{result:?}");
    match result {
        Ok(obj) => out.push_str(&serde_json::to_string(obj).unwrap()),
        Err(e) => {
            let mut cause: Option<&dyn std::error::Error> = Some(e);
            while let Some(c) = cause {
                out.push_str(&c.to_string());
                cause = c.source();
            }
        }
    }
    out
}

#[test]
fn output_never_holds_a_data_value() {
    let secret: Json = serde_json::from_slice(SECRET_JSON).unwrap();
    let config_map: Json = serde_json::from_slice(CONFIG_MAP_JSON).unwrap();
    let mut values: Vec<String> = Vec::new();
    for (obj, fields) in [
        (&secret, &["data", "stringData"][..]),
        (&config_map, &["data", "binaryData"][..]),
    ] {
        for f in fields {
            for v in obj[*f].as_object().unwrap().values() {
                values.push(v.as_str().unwrap().to_owned());
            }
        }
    }
    values.push("labelsValue".into());
    for input in [SECRET_PB, SECRET_JSON, CONFIG_MAP_PB, CONFIG_MAP_JSON] {
        let text = renderings(&decode(input));
        for v in &values {
            assert!(!text.contains(v.as_str()), "{v} in {text}");
        }
        // The Secret's binary value (0x02) cannot appear in text output at all.
        assert!(!text.as_bytes().contains(&0x02));
    }
    let text = renderings(&decode(&example_5_1()));
    assert!(!text.contains("mydata"), "{text}");
}

#[test]
fn json_errors_do_not_quote_values() {
    for bad in [
        &br#"{"kind":"Secret","apiVersion":"v1","data":"hunter2-secret"}"#[..],
        br#"{"kind":"Secret","apiVersion":"v1","stringData":"hunter2-secret"}"#,
        br#"{"kind":"ConfigMap","apiVersion":"v1","binaryData":"hunter2-secret"}"#,
        br#"{"kind":"Secret","apiVersion":"v1","data":{"k":"hunter2-secret"},"immutable":"x"}"#,
    ] {
        let result = decode(bad);
        assert!(matches!(result, Err(ObjectError::Json { .. })));
        assert!(!renderings(&result).contains("hunter2"));
    }
    let err = decode_secret_data(br#"{"kind":"Secret","apiVersion":"v1","data":{"k":"hunter2!"}}"#)
        .unwrap_err();
    assert!(!format!("{err:?} {err}").contains("hunter2"));
    // A JSON value without kind is not an object kube-apiserver would store.
    assert!(matches!(
        decode(br#"{"apiVersion":"v1"}"#),
        Err(ObjectError::Json { .. })
    ));
}

#[test]
fn serialized_shape() {
    let json = serde_json::to_value(decode(&example_5_1()).unwrap()).unwrap();
    assert_eq!(json["encoding"], "protobuf");
    assert_eq!(json["api_version"], "v1");
    assert_eq!(json["secret_type"], "Opaque");
    assert_eq!(json["data_keys"], serde_json::json!(["mykey"]));
    assert_eq!(json["content_type"], Json::Null);
    assert_eq!(decode(SECRET_JSON).unwrap().encoding, Encoding::Json);
    assert_eq!(serde_json::to_value(Encoding::Json).unwrap(), "json");
}

#[test]
fn secret_data_on_request() {
    let data = decode_secret_data(&example_5_1()).unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data["mykey"].as_slice(), b"mydata");

    // The upstream fixture: pb (raw bytes) and JSON (base64) agree.
    let from_pb = decode_secret_data(SECRET_PB).unwrap();
    let from_json = decode_secret_data(SECRET_JSON).unwrap();
    let fixture: Json = serde_json::from_slice(SECRET_JSON).unwrap();
    assert_eq!(from_pb["dataKey"].as_slice(), [0x02]);
    assert_eq!(
        from_pb["stringDataKey"].as_slice(),
        fixture["stringData"]["stringDataKey"]
            .as_str()
            .unwrap()
            .as_bytes()
    );
    assert_eq!(
        from_pb
            .iter()
            .map(|(k, v)| (k, v.as_slice()))
            .collect::<Vec<_>>(),
        from_json
            .iter()
            .map(|(k, v)| (k, v.as_slice()))
            .collect::<Vec<_>>()
    );

    for not_secret in [CONFIG_MAP_PB, CONFIG_MAP_JSON] {
        assert!(matches!(
            decode_secret_data(not_secret),
            Err(ObjectError::NotASecret { ref kind, .. }) if kind == "ConfigMap"
        ));
    }
    assert!(
        decode_secret_data(br#"{"kind":"Secret","apiVersion":"v1","data":{"k":"!!"}}"#).is_err()
    );
}

/// Found by the `object` fuzz target: an envelope with two `typeMeta` fields. Protobuf (and
/// kube-apiserver's generated `Unknown.Unmarshal`, which unmarshals each occurrence into the same
/// `TypeMeta`) merges them; the decoder used to keep only the last one whole.
#[test]
fn duplicate_type_meta_fields_merge_like_protobuf() {
    fn envelope(type_metas: &[&[u8]]) -> Vec<u8> {
        let mut v = PROTOBUF_MAGIC.to_vec();
        for tm in type_metas {
            v.push(0x0a);
            v.push(tm.len() as u8);
            v.extend_from_slice(tm);
        }
        v.extend_from_slice(b"\x12\x00\x1a\x00\x22\x00");
        v
    }
    let secret_v1: &[u8] = b"\x0a\x02v1\x12\x06Secret";
    // The second carries only a kind: the apiVersion of the first stays.
    let obj = decode(&envelope(&[secret_v1, b"\x12\x09ConfigMap"])).unwrap();
    assert_eq!(
        (obj.api_version.as_str(), obj.kind.as_str()),
        ("v1", "ConfigMap")
    );
    // The second carries only an apiVersion: the kind of the first stays.
    let obj = decode(&envelope(&[secret_v1, b"\x0a\x07apps/v1"])).unwrap();
    assert_eq!(
        (obj.api_version.as_str(), obj.kind.as_str()),
        ("apps/v1", "Secret")
    );
    // A malformed typeMeta is an error even when a later one is well formed.
    let err = decode(&envelope(&[b"\x12\x02\xff\xfe", secret_v1])).unwrap_err();
    assert!(matches!(
        err,
        ObjectError::Protobuf {
            what: "runtime.Unknown.typeMeta",
            ..
        }
    ));
    // The page scanner reads the first typeMeta only, as documented.
    assert_eq!(
        peek_kind(&envelope(&[secret_v1, b"\x12\x09ConfigMap"])),
        Some(("v1".to_owned(), "Secret".to_owned()))
    );
}
