//! The primitives of Kafka's generated message code, for the records coordinators write to
//! their internal topics (`__consumer_offsets`, `__transaction_state`): int16-length and
//! compact strings, bytes and arrays, varints and tagged-field sections, behind a version
//! prefix. They are written here, not taken from kafka-protocol, whose `types::*` encoders work
//! through traits it keeps `pub(crate)`; `group/records.rs`'s tests pin them to kafka-protocol's
//! generated messages byte for byte.
//!
//! Reading never panics and allocates at most in proportion to the input: every length is
//! checked against the bytes present before anything is copied or reserved.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use uuid::Uuid;

/// The longest string Kafka's generated code reads or writes, in any version (its `0x7fff`
/// check), compact strings included.
const STRING_MAX_BYTES: usize = 0x7fff;

/// Why a record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The version is outside those the schema knows: a newer Kafka may have written the
    /// record, or a caller asked to encode such a version or an unknown key.
    UnsupportedVersion {
        /// The schema, e.g. `OffsetCommitValue`.
        schema: &'static str,
        /// The version (the record type for a key).
        version: i16,
    },
    /// The bytes do not follow the schema (truncated, impossible length, trailing bytes, ...),
    /// or a value does not fit it (a string longer than 32767 bytes).
    Invalid(String),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::UnsupportedVersion { schema, version } => {
                write!(f, "{schema}: unsupported version {version}")
            }
            RecordError::Invalid(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for RecordError {}

pub(crate) fn check_version(
    schema: &'static str,
    version: i16,
    max: i16,
) -> Result<(), RecordError> {
    if (0..=max).contains(&version) {
        Ok(())
    } else {
        Err(RecordError::UnsupportedVersion { schema, version })
    }
}

/// Writes a version prefix and then a struct's fields in Kafka's encodings; `flexible` selects
/// the compact forms.
pub(crate) struct Writer {
    schema: &'static str,
    pub(crate) flexible: bool,
    pub(crate) buf: BytesMut,
}

impl Writer {
    pub(crate) fn new(schema: &'static str, version: i16, flexible: bool) -> Self {
        let mut w = Self::without_version(schema, flexible);
        w.buf.put_i16(version);
        w
    }

    /// A writer with no version prefix, for a struct carried inside a tagged field.
    pub(crate) fn without_version(schema: &'static str, flexible: bool) -> Self {
        Writer {
            schema,
            flexible,
            buf: BytesMut::with_capacity(64),
        }
    }

    pub(crate) fn i8(&mut self, value: i8) {
        self.buf.put_i8(value);
    }

    pub(crate) fn i16(&mut self, value: i16) {
        self.buf.put_i16(value);
    }

    pub(crate) fn i32(&mut self, value: i32) {
        self.buf.put_i32(value);
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.buf.put_i64(value);
    }

    /// A UUID as Java's `writeUuid`: its two longs big-endian, which is its byte order.
    pub(crate) fn uuid(&mut self, value: &Uuid) {
        self.buf.put_slice(value.as_bytes());
    }

    pub(crate) fn unsigned_varint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.buf.put_u8(value as u8 | 0x80);
            value >>= 7;
        }
        self.buf.put_u8(value as u8);
    }

    pub(crate) fn string(&mut self, field: &'static str, value: &str) -> Result<(), RecordError> {
        self.nullable_string(field, Some(value))
    }

    pub(crate) fn nullable_string(
        &mut self,
        field: &'static str,
        value: Option<&str>,
    ) -> Result<(), RecordError> {
        let Some(value) = value else {
            if self.flexible {
                self.unsigned_varint(0);
            } else {
                self.buf.put_i16(-1);
            }
            return Ok(());
        };
        if value.len() > STRING_MAX_BYTES {
            return Err(self.too_long(field, value.len(), STRING_MAX_BYTES));
        }
        if self.flexible {
            self.unsigned_varint(value.len() as u32 + 1);
        } else {
            self.buf.put_i16(value.len() as i16);
        }
        self.buf.put_slice(value.as_bytes());
        Ok(())
    }

    pub(crate) fn bytes(&mut self, field: &'static str, value: &[u8]) -> Result<(), RecordError> {
        self.length(field, value.len())?;
        self.buf.put_slice(value);
        Ok(())
    }

    pub(crate) fn array_len(&mut self, field: &'static str, len: usize) -> Result<(), RecordError> {
        self.length(field, len)
    }

    /// A null array: int32 -1, or varint 0 when flexible.
    pub(crate) fn null_array(&mut self) {
        if self.flexible {
            self.unsigned_varint(0);
        } else {
            self.buf.put_i32(-1);
        }
    }

    pub(crate) fn string_array(
        &mut self,
        field: &'static str,
        values: &[String],
    ) -> Result<(), RecordError> {
        self.array_len(field, values.len())?;
        for value in values {
            self.string(field, value)?;
        }
        Ok(())
    }

    pub(crate) fn i32_array(
        &mut self,
        field: &'static str,
        values: &[i32],
    ) -> Result<(), RecordError> {
        self.array_len(field, values.len())?;
        for value in values {
            self.i32(*value);
        }
        Ok(())
    }

    /// The length of non-null bytes or an array: int32, or varint of length + 1 when flexible.
    pub(crate) fn length(&mut self, field: &'static str, len: usize) -> Result<(), RecordError> {
        if self.flexible {
            let max = u32::MAX as usize - 1;
            if len > max {
                return Err(self.too_long(field, len, max));
            }
            self.unsigned_varint(len as u32 + 1);
        } else {
            let max = i32::MAX as usize;
            if len > max {
                return Err(self.too_long(field, len, max));
            }
            self.buf.put_i32(len as i32);
        }
        Ok(())
    }

    /// A tagged-field section: the count, then each field's tag, size and bytes. `fields` must
    /// be in ascending tag order, as Kafka writes them.
    pub(crate) fn tagged_fields(&mut self, fields: &[(u32, &[u8])]) {
        self.unsigned_varint(fields.len() as u32);
        for (tag, data) in fields {
            self.unsigned_varint(*tag);
            self.unsigned_varint(data.len() as u32);
            self.buf.put_slice(data);
        }
    }

    pub(crate) fn too_long(&self, field: &'static str, len: usize, max: usize) -> RecordError {
        RecordError::Invalid(format!(
            "{}: field `{field}` is {len} long, more than the {max} its encoding holds",
            self.schema
        ))
    }

    pub(crate) fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// Reads a struct's fields in Kafka's encodings, checking every length against the bytes left.
pub(crate) struct Reader<'a> {
    pub(crate) schema: &'static str,
    pub(crate) flexible: bool,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(schema: &'static str, buf: &'a [u8], flexible: bool) -> Self {
        Reader {
            schema,
            flexible,
            buf,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn invalid(&self, field: &str, reason: impl fmt::Display) -> RecordError {
        RecordError::Invalid(format!("{}: field `{field}`: {reason}", self.schema))
    }

    pub(crate) fn take(&mut self, field: &str, len: usize) -> Result<&'a [u8], RecordError> {
        if len > self.buf.len() {
            return Err(self.invalid(
                field,
                format_args!("needs {len} bytes, {} remain", self.buf.len()),
            ));
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn i8(&mut self, field: &str) -> Result<i8, RecordError> {
        Ok(self.take(field, 1)?.get_i8())
    }

    pub(crate) fn i16(&mut self, field: &str) -> Result<i16, RecordError> {
        Ok(self.take(field, 2)?.get_i16())
    }

    pub(crate) fn i32(&mut self, field: &str) -> Result<i32, RecordError> {
        Ok(self.take(field, 4)?.get_i32())
    }

    pub(crate) fn i64(&mut self, field: &str) -> Result<i64, RecordError> {
        Ok(self.take(field, 8)?.get_i64())
    }

    pub(crate) fn uuid(&mut self, field: &str) -> Result<Uuid, RecordError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(field, 16)?);
        Ok(Uuid::from_bytes(id))
    }

    /// At most five bytes, as Kafka's `readUnsignedVarint`; bits beyond 32 are an error.
    pub(crate) fn unsigned_varint(&mut self, field: &str) -> Result<u32, RecordError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(field, 1)?[0];
            if i == 4 && byte > 0x0f {
                break;
            }
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.invalid(field, "varint longer than 32 bits"))
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, RecordError> {
        self.nullable_string(field)?
            .ok_or_else(|| self.invalid(field, "null in a non-nullable string"))
    }

    pub(crate) fn nullable_string(&mut self, field: &str) -> Result<Option<String>, RecordError> {
        let len = if self.flexible {
            match self.unsigned_varint(field)? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            // Any negative length is null to Kafka's generated readers, not only -1.
            match self.i16(field)? {
                n if n < 0 => return Ok(None),
                n => n as usize,
            }
        };
        if len > STRING_MAX_BYTES {
            return Err(self.invalid(field, format_args!("string length {len} over 32767")));
        }
        let raw = self.take(field, len)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(error) => Err(self.invalid(field, error)),
        }
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<Bytes, RecordError> {
        let len = self.length(field)?;
        Ok(Bytes::copy_from_slice(self.take(field, len)?))
    }

    /// An array's element count, no more than the bytes left (every element takes at least
    /// one), as Kafka's generated readers require before they allocate.
    pub(crate) fn array_len(&mut self, field: &str) -> Result<usize, RecordError> {
        let len = self.length(field)?;
        if len > self.remaining() {
            return Err(self.invalid(
                field,
                format_args!("{len} elements but only {} bytes remain", self.remaining()),
            ));
        }
        Ok(len)
    }

    /// A nullable array's element count (`None`: null), bounded as [`Reader::array_len`].
    pub(crate) fn nullable_array_len(&mut self, field: &str) -> Result<Option<usize>, RecordError> {
        let len = if self.flexible {
            match self.unsigned_varint(field)? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i32(field)? {
                -1 => return Ok(None),
                n if n < 0 => return Err(self.invalid(field, format_args!("negative length {n}"))),
                n => n as usize,
            }
        };
        if len > self.remaining() {
            return Err(self.invalid(
                field,
                format_args!("{len} elements but only {} bytes remain", self.remaining()),
            ));
        }
        Ok(Some(len))
    }

    /// A non-nullable array of non-nullable strings.
    pub(crate) fn string_array(&mut self, field: &str) -> Result<Vec<String>, RecordError> {
        // Every string takes at least a byte, so `array_len` bounds the count by the input.
        let count = self.array_len(field)?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            values.push(self.string(field)?);
        }
        Ok(values)
    }

    /// A non-nullable array of int32.
    pub(crate) fn i32_array(&mut self, field: &str) -> Result<Vec<i32>, RecordError> {
        let count = self.array_len(field)?;
        let mut values = Vec::with_capacity(count.min(self.remaining() / 4));
        for _ in 0..count {
            values.push(self.i32(field)?);
        }
        Ok(values)
    }

    /// The length of non-nullable bytes or an array.
    pub(crate) fn length(&mut self, field: &str) -> Result<usize, RecordError> {
        if self.flexible {
            match self.unsigned_varint(field)? {
                0 => Err(self.invalid(field, "null where the schema does not allow null")),
                n => Ok((n - 1) as usize),
            }
        } else {
            match self.i32(field)? {
                n if n < 0 => Err(self.invalid(field, format_args!("negative length {n}"))),
                n => Ok(n as usize),
            }
        }
    }

    /// Reads a tagged-field section, handing each field's tag and bytes to `known`, which
    /// ignores the tags it does not know.
    pub(crate) fn tagged_fields(
        &mut self,
        mut known: impl FnMut(u32, &'a [u8]) -> Result<(), String>,
    ) -> Result<(), RecordError> {
        // Each field takes at least two bytes, so a huge count fails on the bytes, not memory.
        let count = self.unsigned_varint("tagged fields")?;
        for _ in 0..count {
            let tag = self.unsigned_varint("tagged field tag")?;
            let size = self.unsigned_varint("tagged field size")? as usize;
            let data = self.take("tagged field data", size)?;
            known(tag, data).map_err(|reason| self.invalid("tagged fields", reason))?;
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<(), RecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid(format!(
                "{}: {} bytes after the last field",
                self.schema,
                self.buf.len()
            )))
        }
    }
}
