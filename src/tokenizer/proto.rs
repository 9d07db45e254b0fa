//! Minimal protobuf wire-format reader and writer, enough for SentencePiece's `ModelProto`.
//!
//! Every length is bounded by the bytes that remain, varints are at most 10 bytes, and unknown
//! fields (including deprecated groups, nested to a bounded depth) are skipped. Nothing here
//! panics on hostile input; every failure is a [`TokenizerError::Protobuf`].

#![forbid(unsafe_code)]

use super::TokenizerError;

pub(crate) const WT_VARINT: u8 = 0;
pub(crate) const WT_FIXED64: u8 = 1;
pub(crate) const WT_LEN: u8 = 2;
pub(crate) const WT_START_GROUP: u8 = 3;
pub(crate) const WT_END_GROUP: u8 = 4;
pub(crate) const WT_FIXED32: u8 = 5;

/// Deepest nesting of groups we are willing to skip.
const MAX_GROUP_DEPTH: usize = 64;

fn err(what: impl Into<String>) -> TokenizerError {
    TokenizerError::Protobuf(what.into())
}

/// A cursor over one protobuf message.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, TokenizerError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| err("truncated varint"))?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(err("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(err("varint longer than 10 bytes"))
    }

    /// Reads a field key: (field number, wire type).
    pub(crate) fn key(&mut self) -> Result<(u32, u8), TokenizerError> {
        let key = self.varint()?;
        let field = key >> 3;
        let wire_type = (key & 7) as u8;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(err(format!("invalid field number {field}")));
        }
        Ok((field as u32, wire_type))
    }

    pub(crate) fn fixed32(&mut self) -> Result<u32, TokenizerError> {
        let bytes = self.take(4).map_err(|_| err("truncated fixed32"))?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenizerError> {
        if n > self.remaining() {
            return Err(err(format!(
                "length {n} exceeds the {} remaining bytes",
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Reads a length-delimited payload.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], TokenizerError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| err("length does not fit in memory"))?;
        self.take(len)
    }

    pub(crate) fn string(&mut self) -> Result<String, TokenizerError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| err("string field is not valid UTF-8"))
    }

    /// Skips the payload of a field whose key has just been read.
    pub(crate) fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), TokenizerError> {
        match wire_type {
            WT_VARINT => self.varint().map(|_| ()),
            WT_FIXED64 => self.take(8).map(|_| ()),
            WT_LEN => self.bytes().map(|_| ()),
            WT_FIXED32 => self.take(4).map(|_| ()),
            WT_START_GROUP => {
                // Skip until the matching end-group, tracking nested groups explicitly.
                let mut stack = vec![field];
                while let Some(&open) = stack.last() {
                    let (f, wt) = self.key()?;
                    match wt {
                        WT_START_GROUP => {
                            if stack.len() >= MAX_GROUP_DEPTH {
                                return Err(err("groups nested too deeply"));
                            }
                            stack.push(f);
                        }
                        WT_END_GROUP => {
                            if f != open {
                                return Err(err("mismatched end-group"));
                            }
                            stack.pop();
                        }
                        other => self.skip(f, other)?,
                    }
                }
                Ok(())
            }
            WT_END_GROUP => Err(err("unexpected end-group")),
            other => Err(err(format!("invalid wire type {other}"))),
        }
    }

    /// Fails unless `got` is the wire type the schema expects for `field`.
    pub(crate) fn expect(field: u32, got: u8, want: u8) -> Result<(), TokenizerError> {
        if got == want {
            Ok(())
        } else {
            Err(err(format!(
                "field {field} has wire type {got}, expected {want}"
            )))
        }
    }

    pub(crate) fn bool_field(&mut self, field: u32, wt: u8) -> Result<bool, TokenizerError> {
        Self::expect(field, wt, WT_VARINT)?;
        Ok(self.varint()? != 0)
    }

    /// An `int32` field (negative values arrive sign-extended to 64 bits).
    pub(crate) fn int32_field(&mut self, field: u32, wt: u8) -> Result<i32, TokenizerError> {
        Self::expect(field, wt, WT_VARINT)?;
        Ok(self.varint()? as i64 as i32)
    }
}

/// Appends protobuf-encoded fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    pub(crate) fn bytes(&mut self, field: u32, data: &[u8]) {
        self.key(field, WT_LEN);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    pub(crate) fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    pub(crate) fn float(&mut self, field: u32, v: f32) {
        self.key(field, WT_FIXED32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn int32(&mut self, field: u32, v: i32) {
        self.key(field, WT_VARINT);
        self.varint(i64::from(v) as u64);
    }

    pub(crate) fn bool(&mut self, field: u32, v: bool) {
        self.key(field, WT_VARINT);
        self.varint(u64::from(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_and_negative_int32() {
        for v in [0i32, 1, 127, 128, 300, -1, i32::MIN, i32::MAX] {
            let mut w = Writer::default();
            w.int32(7, v);
            let mut r = Reader::new(&w.buf);
            let (f, wt) = r.key().unwrap();
            assert_eq!(f, 7);
            assert_eq!(r.int32_field(f, wt).unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
        // length 5 with only 2 bytes left
        assert!(Reader::new(&[5, 1, 2]).bytes().is_err());
    }

    #[test]
    fn skips_nested_groups() {
        // field 9 start-group, field 2 varint 1, field 3 start-group, field 3 end-group,
        // field 9 end-group, then field 1 varint 5
        let data = [
            (9 << 3) | 3,
            2 << 3,
            1,
            (3 << 3) | 3,
            (3 << 3) | 4,
            (9 << 3) | 4,
            1 << 3,
            5,
        ];
        let mut r = Reader::new(&data);
        let (f, wt) = r.key().unwrap();
        r.skip(f, wt).unwrap();
        let (f, _) = r.key().unwrap();
        assert_eq!(f, 1);
        assert_eq!(r.varint().unwrap(), 5);
    }
}
