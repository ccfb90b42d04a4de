//! Encoding a Secret exactly as kube-apiserver stores it (protobuf `k8s\0` + runtime.Unknown),
//! shared by the examples that write test data (`seed_cluster`, `bench_load`).

pub(crate) fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

pub(crate) fn field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(num << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

pub(crate) fn field_varint(num: u64, v: u64, out: &mut Vec<u8>) {
    varint(num << 3, out);
    varint(v, out);
}

/// The protobuf bytes kube-apiserver stores for a Secret: `k8s\0` + runtime.Unknown.
pub(crate) fn stored_secret(
    ns: &str,
    name: &str,
    uid: &str,
    created: u64,
    data: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut meta = Vec::new();
    field(1, name.as_bytes(), &mut meta);
    field(2, b"", &mut meta);
    field(3, ns.as_bytes(), &mut meta);
    field(4, b"", &mut meta);
    field(5, uid.as_bytes(), &mut meta);
    field(6, b"", &mut meta);
    field_varint(7, 0, &mut meta);
    let mut ts = Vec::new();
    field_varint(1, created, &mut ts);
    field_varint(2, 0, &mut ts);
    field(8, &ts, &mut meta);
    let mut secret = Vec::new();
    field(1, &meta, &mut secret);
    for (k, v) in data {
        let mut entry = Vec::new();
        field(1, k.as_bytes(), &mut entry);
        field(2, v, &mut entry);
        field(2, &entry, &mut secret);
    }
    field(3, b"Opaque", &mut secret);
    let mut type_meta = Vec::new();
    field(1, b"v1", &mut type_meta);
    field(2, b"Secret", &mut type_meta);
    let mut unknown = b"k8s\0".to_vec();
    field(1, &type_meta, &mut unknown);
    field(2, &secret, &mut unknown);
    field(3, b"", &mut unknown);
    field(4, b"", &mut unknown);
    unknown
}
