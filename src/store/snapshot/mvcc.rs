//! etcd's MVCC records inside the bbolt `key` bucket: revision keys and `mvccpb.KeyValue` values.
//!
//! # Format
//!
//! ```text
//! key bucket key   = main u64 BE | '_' | sub u64 BE [| 't']      (17 bytes, 18 for a tombstone)
//! key bucket value = mvccpb.KeyValue (protobuf):
//!                      1 key             bytes
//!                      2 create_revision int64 (varint)
//!                      3 mod_revision    int64 (varint)
//!                      4 version         int64 (varint)
//!                      5 value           bytes
//!                      6 lease           int64 (varint)
//! meta bucket      finishedCompactRev / scheduledCompactRev = a 17-byte revision key
//!                  consistent_index = u64 BE
//! ```
//!
//! Sources: etcd `mvcc/revision.go` (`revToBytes`, `bytesToRev`), `mvcc/kvstore.go`
//! (`appendMarkTombstone`, `restoreChunk`), `mvcc/mvccpb/kv.proto`. A tombstone's value holds
//! only the key. Proto3 leaves zero fields out, so an empty value has no field 5 at all.
//!
//! Parse and write sit side by side: [`KeyValue::decode`] reads a record and
//! [`KeyValue::with_value`] re-serialises it with a new value, keeping every other byte.

use crate::wire::{Reader, WireError};

/// A revision: the transaction (`main`) and the operation inside it (`sub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rev {
    /// The store revision of the transaction.
    pub(crate) main: i64,
    /// The operation's index inside the transaction.
    pub(crate) sub: i64,
}

/// A parsed key of the `key` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RevKey {
    /// The revision the record was written at.
    pub(crate) rev: Rev,
    /// Whether the record is a deletion marker.
    pub(crate) tombstone: bool,
}

/// Parses a `key` bucket key (17 bytes, or 18 ending in `t`).
pub(crate) fn parse_rev_key(bytes: &[u8]) -> Result<RevKey, WireError> {
    let mut r = Reader::new(bytes);
    let rev = read_rev(&mut r)?;
    let tombstone = r.eat(b"t");
    r.finish("revision key")?;
    Ok(RevKey { rev, tombstone })
}

/// Parses a bare 17-byte revision (the `meta` bucket's compaction marks).
pub(crate) fn parse_rev(bytes: &[u8]) -> Result<Rev, WireError> {
    let mut r = Reader::new(bytes);
    let rev = read_rev(&mut r)?;
    r.finish("revision")?;
    Ok(rev)
}

fn read_rev(r: &mut Reader<'_>) -> Result<Rev, WireError> {
    let main = r.u64_be("revision main")?;
    if !r.eat(b"_") {
        return Err(WireError::Invalid {
            what: "revision key",
            problem: "no '_' between main and sub revision",
        });
    }
    let sub = r.u64_be("revision sub")?;
    let out_of_range = WireError::Invalid {
        what: "revision key",
        problem: "revision does not fit an int64",
    };
    Ok(Rev {
        main: i64::try_from(main).map_err(|_| out_of_range.clone())?,
        sub: i64::try_from(sub).map_err(|_| out_of_range)?,
    })
}

/// Writes a revision key (the inverse of [`parse_rev_key`]).
#[cfg(test)]
pub(crate) fn rev_key(rev: Rev, tombstone: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    out.extend_from_slice(&rev.main.to_be_bytes());
    out.push(b'_');
    out.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        out.push(b't');
    }
    out
}

/// A legitimate record has at most six fields; anything far beyond that is hostile input, and
/// the cap keeps decoding O(1) per record whatever the value's size.
const MAX_FIELDS: usize = 64;

/// A record with field 5 (the value) more than once: corrupt.
const DUPLICATE_VALUE: WireError = WireError::Invalid {
    what: "mvccpb.KeyValue",
    problem: "the value field (5) appears twice",
};

const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// A decoded `mvccpb.KeyValue`, borrowing its bytes from the record. `Debug` shows the key and
/// revisions but only the value's length (it may be a plaintext Secret).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KeyValue<'a> {
    /// Field 1.
    pub(crate) key: &'a [u8],
    /// Field 2.
    pub(crate) create_revision: i64,
    /// Field 3.
    pub(crate) mod_revision: i64,
    /// Field 4.
    pub(crate) version: i64,
    /// Field 5.
    pub(crate) value: &'a [u8],
    /// Field 6.
    pub(crate) lease: i64,
}

impl std::fmt::Debug for KeyValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(self.key))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("value_len", &self.value.len())
            .field("lease", &self.lease)
            .finish()
    }
}

impl<'a> KeyValue<'a> {
    /// Decodes one record. Unknown fields are skipped (the format may grow), malformed ones are
    /// an error.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<KeyValue<'a>, WireError> {
        let mut kv = KeyValue::default();
        let mut has_value = false;
        for_each_field(bytes, |field| {
            match (field.number, field.payload) {
                (1, Payload::Bytes(b)) => kv.key = b,
                (2, Payload::Varint(v)) => kv.create_revision = v as i64,
                (3, Payload::Varint(v)) => kv.mod_revision = v as i64,
                (4, Payload::Varint(v)) => kv.version = v as i64,
                // Protobuf keeps the last of a repeated field, but the writer replaces one: a
                // record with two values would keep the other one. etcd never writes that.
                (5, Payload::Bytes(_)) if has_value => return Err(DUPLICATE_VALUE),
                (5, Payload::Bytes(b)) => {
                    kv.value = b;
                    has_value = true;
                }
                (6, Payload::Varint(v)) => kv.lease = v as i64,
                (1..=6, _) => {
                    return Err(WireError::Invalid {
                        what: "mvccpb.KeyValue",
                        problem: "field has the wrong wire type",
                    })
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(kv)
    }

    /// Re-serialises `record` (the bytes this was decoded from) with `value` in field 5, keeping
    /// every other byte as it was: field 5 is replaced where it stood, or inserted before the
    /// first higher-numbered field when the old value was empty; an empty new value drops it.
    pub(crate) fn with_value(record: &[u8], value: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut new_field = Vec::with_capacity(value.len() + 6);
        if !value.is_empty() {
            put_varint(&mut new_field, (5 << 3) | WIRE_LEN);
            put_varint(&mut new_field, value.len() as u64);
            new_field.extend_from_slice(value);
        }
        // Where the old field 5 starts and ends, wherever it stands (a damaged record may have
        // it after a higher-numbered field), else where a new one goes: before the first
        // higher-numbered field.
        let mut old_value: Option<(usize, usize)> = None;
        let mut insert_at: Option<usize> = None;
        for_each_field(record, |field| {
            if field.number == 5 {
                if old_value.is_some() {
                    return Err(DUPLICATE_VALUE);
                }
                old_value = Some((field.start, field.end));
            } else if field.number > 5 && insert_at.is_none() {
                insert_at = Some(field.start);
            }
            Ok(())
        })?;
        let (start, end) = old_value
            .or(insert_at.map(|at| (at, at)))
            .unwrap_or((record.len(), record.len()));
        let mut r = Reader::new(record);
        let head = r.take(start, "mvccpb.KeyValue")?;
        r.take(end - start, "mvccpb.KeyValue value")?;
        let tail = r.rest();
        let mut out = Vec::with_capacity(head.len() + new_field.len() + tail.len());
        out.extend_from_slice(head);
        out.extend_from_slice(&new_field);
        out.extend_from_slice(tail);
        Ok(out)
    }
}

/// A field's payload.
#[derive(Debug, Clone, Copy)]
enum Payload<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// One field of a protobuf message and where it sits (`start..end`, tag included).
#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u64,
    payload: Payload<'a>,
    start: usize,
    end: usize,
}

fn for_each_field<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(Field<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut r = Reader::new(bytes);
    let mut fields = 0usize;
    while !r.is_empty() {
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(WireError::Invalid {
                what: "mvccpb.KeyValue",
                problem: "too many fields",
            });
        }
        let start = r.offset();
        let tag = r.varint("mvccpb.KeyValue field tag")?;
        let number = tag >> 3;
        if number == 0 {
            return Err(WireError::Invalid {
                what: "mvccpb.KeyValue field tag",
                problem: "field number 0",
            });
        }
        let payload = match tag & 7 {
            WIRE_VARINT => Payload::Varint(r.varint("mvccpb.KeyValue varint field")?),
            WIRE_LEN => {
                let len = r.varint("mvccpb.KeyValue field length")?;
                let len = usize::try_from(len).map_err(|_| WireError::Invalid {
                    what: "mvccpb.KeyValue field length",
                    problem: "length does not fit in memory",
                })?;
                Payload::Bytes(r.take(len, "mvccpb.KeyValue bytes field")?)
            }
            WIRE_FIXED64 => {
                r.take(8, "mvccpb.KeyValue fixed64 field")?;
                Payload::Fixed
            }
            WIRE_FIXED32 => {
                r.take(4, "mvccpb.KeyValue fixed32 field")?;
                Payload::Fixed
            }
            _ => {
                return Err(WireError::Invalid {
                    what: "mvccpb.KeyValue field tag",
                    problem: "unsupported wire type",
                })
            }
        };
        f(Field {
            number,
            payload,
            start,
            end: r.offset(),
        })?;
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes a record the way etcd (gogoproto) does: fields in order, zero values left out.
#[cfg(test)]
pub(crate) fn encode(kv: &KeyValue<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = |out: &mut Vec<u8>, n: u64, b: &[u8]| {
        if !b.is_empty() {
            put_varint(out, (n << 3) | WIRE_LEN);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    };
    let int = |out: &mut Vec<u8>, n: u64, v: i64| {
        if v != 0 {
            put_varint(out, n << 3);
            put_varint(out, v as u64);
        }
    };
    bytes(&mut out, 1, kv.key);
    int(&mut out, 2, kv.create_revision);
    int(&mut out, 3, kv.mod_revision);
    int(&mut out, 4, kv.version);
    bytes(&mut out, 5, kv.value);
    int(&mut out, 6, kv.lease);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: &'static [u8], lease: i64) -> KeyValue<'static> {
        KeyValue {
            key: b"/registry/secrets/default/db",
            create_revision: 4,
            mod_revision: 9,
            version: 3,
            value,
            lease,
        }
    }

    #[test]
    fn issue_22_12_key_value_debug_prints_the_value_length_only() {
        let kv = sample(b"SECRET-PATTERN-0123456789", 7);
        let shown = format!("{kv:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("83, 69, 67"),
            "{shown}"
        );
        assert!(shown.contains("value_len: 25") && shown.contains("/registry/secrets/default/db"));
    }

    #[test]
    fn issue_22_13_a_record_with_two_values_is_corrupt() {
        let mut record = encode(&sample(b"old plaintext", 0));
        record.extend_from_slice(&encode(&KeyValue {
            value: b"second",
            ..KeyValue::default()
        }));
        let e = KeyValue::decode(&record).unwrap_err();
        assert_eq!(e, DUPLICATE_VALUE);
        assert!(e.to_string().contains("mvccpb.KeyValue"), "{e}");
        assert_eq!(KeyValue::with_value(&record, b"new"), Err(DUPLICATE_VALUE));
        // One value: fine.
        assert!(KeyValue::decode(&encode(&sample(b"v", 0))).is_ok());
    }

    #[test]
    fn rev_keys_round_trip() {
        let rev = Rev { main: 300, sub: 2 };
        let k = rev_key(rev, false);
        assert_eq!(k.len(), 17);
        assert_eq!(
            parse_rev_key(&k).unwrap(),
            RevKey {
                rev,
                tombstone: false
            }
        );
        let t = rev_key(rev, true);
        assert!(parse_rev_key(&t).unwrap().tombstone);
        assert_eq!(parse_rev(&k).unwrap(), rev);
        assert!(parse_rev(&t).is_err());
        assert!(parse_rev_key(&k[..16]).is_err());
        let mut bad = k.clone();
        bad[8] = b'-';
        assert!(parse_rev_key(&bad).is_err());
        let mut extra = t.clone();
        extra.push(0);
        assert!(parse_rev_key(&extra).is_err());
        assert!(parse_rev_key(&[0xff; 17]).is_err());
    }

    #[test]
    fn keyvalue_round_trips() {
        for kv in [sample(b"k8s\0abc", 0), sample(b"", 7), sample(b"v", -1)] {
            let bytes = encode(&kv);
            assert_eq!(KeyValue::decode(&bytes).unwrap(), kv);
        }
    }

    /// A damaged record with its value after a higher-numbered field: the value is replaced
    /// where it stands, never inserted a second time (which the reader refuses).
    #[test]
    fn with_value_replaces_a_value_that_follows_a_higher_field() {
        // field 1 (key "k"), field 6 (lease 1), then field 5 (value "old").
        let record = [0x0a, 0x01, b'k', 0x30, 0x01, 0x2a, 0x03, b'o', b'l', b'd'];
        let re = KeyValue::with_value(&record, b"new").unwrap();
        let kv = KeyValue::decode(&re).unwrap();
        assert_eq!((kv.key, kv.value, kv.lease), (&b"k"[..], &b"new"[..], 1));
    }

    #[test]
    fn with_value_keeps_every_other_byte() {
        let cases: [(&'static [u8], i64, &'static [u8]); 5] = [
            (b"old", 0, b"new value, longer than the old one"),
            (b"old", 42, b"n"),
            (b"", 42, b"now set"),
            (b"", 0, b"now set"),
            (b"old", 42, b""),
        ];
        for (old, lease, new) in cases {
            let before = encode(&sample(old, lease));
            let after = KeyValue::with_value(&before, new).unwrap();
            assert_eq!(after, encode(&sample(new, lease)));
        }
    }

    #[test]
    fn unknown_fields_are_skipped_and_kept() {
        let mut bytes = encode(&sample(b"v", 3));
        bytes.extend_from_slice(&[0x3a, 0x02, 0xaa, 0xbb]); // field 7, bytes
        let kv = KeyValue::decode(&bytes).unwrap();
        assert_eq!(kv.value, b"v");
        let re = KeyValue::with_value(&bytes, b"w").unwrap();
        assert!(re.ends_with(&[0x3a, 0x02, 0xaa, 0xbb]));
        assert_eq!(KeyValue::decode(&re).unwrap().value, b"w");
    }

    #[test]
    fn malformed_records_fail() {
        assert!(KeyValue::decode(&[0x0a, 0x05, b'a']).is_err()); // truncated bytes
        assert!(KeyValue::decode(&[0x08]).is_err()); // truncated varint
        assert!(KeyValue::decode(&[0x00, 0x00]).is_err()); // field 0
        assert!(KeyValue::decode(&[0x0b]).is_err()); // group wire type
        assert!(KeyValue::decode(&[0x10, 0x01].repeat(65)).is_err()); // too many fields
        assert!(KeyValue::decode(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0]).is_err()); // key as fixed64
    }
}
