//! Arbitrary bytes → `object::decode`, `peek_kind` and `decode_secret_data`, as given and with the
//! protobuf magic `k8s\0` prepended: never panics, and the lenient page scanner agrees with the
//! strict decoder on the type it reads.
//!
//! `peek_kind` reads only the envelope's first field while `decode` merges every `typeMeta`, so
//! the two are compared on the value cut right after that first field.
#![no_main]

use atrest::object;
use atrest::wire::Reader;
use libfuzzer_sys::fuzz_target;

/// `value` cut right after the envelope's first field, when that field is a `typeMeta`.
fn first_type_meta(value: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(value);
    if !r.eat(object::PROTOBUF_MAGIC) || r.varint("key").ok()? != 0x0a {
        return None;
    }
    let len = usize::try_from(r.varint("length").ok()?).ok()?;
    r.take(len, "typeMeta").ok()?;
    value.get(..r.offset())
}

fn check(value: &[u8]) {
    let _ = object::decode(value);
    let _ = object::decode_secret_data(value);
    if let Some(peeked) = object::peek_kind(value) {
        let head = first_type_meta(value).expect("peek_kind read a first typeMeta");
        assert_eq!(object::peek_kind(head).as_ref(), Some(&peeked));
        let obj = object::decode(head).expect("a typeMeta peek_kind accepts decodes");
        assert_eq!((obj.api_version, obj.kind), peeked);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut with_magic = object::PROTOBUF_MAGIC.to_vec();
    with_magic.extend_from_slice(data);
    check(&with_magic);
});
