//! A bounds-checked byte cursor for untrusted input.
//!
//! Every structure atrest reads from the outside world — stored values, protobuf envelopes, KMS
//! framing, bbolt pages — goes through [`Reader`]. It never panics on short input: every read
//! returns a [`WireError`] that names the structure being read (a `&'static str` chosen by the
//! caller), so an error says *what* was truncated rather than *where in our code* it failed.
//!
//! The model is rustls' `codec::Reader`: a slice plus an offset, and methods that either hand out
//! exactly the bytes asked for or fail.

use thiserror::Error;

/// A failure to read a structure from untrusted bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the structure did.
    #[error("{what}: truncated (needed {needed} more bytes, {available} left)")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes the read needed.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// Bytes were left over after a structure that must end the input.
    #[error("{what}: {extra} unexpected trailing bytes")]
    Trailing {
        /// The structure that should have ended the input.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field held a value the format does not allow.
    #[error("{what}: {problem}")]
    Invalid {
        /// The structure or field being read.
        what: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// A cursor over untrusted bytes. Reads advance the cursor; failed reads leave it unchanged.
/// `Debug` prints the length and offset only: the bytes may be secret.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("len", &self.buf.len())
            .field("offset", &self.offset)
            .finish()
    }
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, offset: 0 }
    }

    /// How many bytes have been consumed.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The bytes not yet consumed (without consuming them).
    pub fn remaining(&self) -> &'a [u8] {
        // `offset <= buf.len()` is an invariant of every method below.
        self.buf.get(self.offset..).unwrap_or_default()
    }

    /// Number of bytes not yet consumed.
    pub fn left(&self) -> usize {
        self.buf.len() - self.offset
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.left() == 0
    }

    /// Consumes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let rest = self.remaining();
        match rest.get(..n) {
            Some(bytes) => {
                self.offset += n;
                Ok(bytes)
            }
            None => Err(WireError::Truncated {
                what,
                needed: n,
                available: rest.len(),
            }),
        }
    }

    /// Consumes exactly `N` bytes into an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Consumes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.remaining();
        self.offset = self.buf.len();
        rest
    }

    /// Consumes `prefix` if the input starts with it; returns whether it did.
    pub fn eat(&mut self, prefix: &[u8]) -> bool {
        if self.remaining().starts_with(prefix) {
            self.offset += prefix.len();
            true
        } else {
            false
        }
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Reads a big-endian `u16`.
    pub fn u16_be(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Reads a protobuf base-128 varint (at most 10 bytes).
    pub fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let start = self.offset;
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = match self.u8(what) {
                Ok(b) => b,
                Err(e) => {
                    self.offset = start;
                    return Err(e);
                }
            };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        self.offset = start;
        Err(WireError::Invalid {
            what,
            problem: "varint longer than 10 bytes",
        })
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.left() {
            0 => Ok(()),
            extra => Err(WireError::Trailing { what, extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_12_debug_prints_lengths_not_bytes() {
        let secret = b"SECRET-PATTERN-0123456789";
        let mut r = Reader::new(secret);
        r.take(3, "x").unwrap();
        let shown = format!("{r:?}");
        assert_eq!(shown, "Reader { len: 25, offset: 3 }");
        assert!(!shown.contains("83, 69, 67") && !shown.contains("SECRET"));
    }

    #[test]
    fn short_reads_fail_without_moving() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.take(2, "x").unwrap(), &[1, 2]);
        let err = r.u16_le("field").unwrap_err();
        assert_eq!(
            err,
            WireError::Truncated {
                what: "field",
                needed: 2,
                available: 1
            }
        );
        assert_eq!(r.offset(), 2);
        assert_eq!(r.u8("y").unwrap(), 3);
        assert!(r.is_empty());
        r.finish("all").unwrap();
    }

    #[test]
    fn varints() {
        let mut r = Reader::new(&[0x96, 0x01, 0x00]);
        assert_eq!(r.varint("v").unwrap(), 150);
        assert_eq!(r.varint("v").unwrap(), 0);
        let mut r = Reader::new(&[0x80, 0x80]);
        assert!(r.varint("v").is_err());
        assert_eq!(r.offset(), 0);
        let mut r = Reader::new(&[0xff; 11]);
        assert!(matches!(r.varint("v"), Err(WireError::Invalid { .. })));
    }

    #[test]
    fn trailing_and_prefix() {
        let mut r = Reader::new(b"k8s:enc:rest");
        assert!(!r.eat(b"k8s\0"));
        assert!(r.eat(b"k8s:enc:"));
        assert_eq!(r.remaining(), b"rest");
        assert_eq!(
            r.finish("value"),
            Err(WireError::Trailing {
                what: "value",
                extra: 4
            })
        );
        assert_eq!(r.array::<4>("a").unwrap(), *b"rest");
    }
}
