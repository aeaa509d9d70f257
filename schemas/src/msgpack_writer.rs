//! The MessagePack primitives the hand-written writers of hot messages are built from
//! (`worker/run_request_writer.rs`, `result/writer.rs`). Each writes what `rmp` writes for
//! the value when `rmp_serde` serialises it (the smallest form that holds it), so a writer
//! composed of them produces `rmp_serde`'s bytes without serde's generic path; the
//! property tests in `tests/roundtrip.rs` hold each writer to `rmp_serde`'s output.

/// A growing message.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    /// A message in a buffer of `capacity` bytes (its expected size, so it never grows).
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer(Vec::with_capacity(capacity))
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn map_len(&mut self, n: usize) {
        self.len_marked(n, 0x80, 0xde, 0xdf);
    }

    pub fn array_len(&mut self, n: usize) {
        self.len_marked(n, 0x90, 0xdc, 0xdd);
    }

    /// A map or array header: the fix form below 16, else 16 or 32 bits.
    fn len_marked(&mut self, n: usize, fix: u8, m16: u8, m32: u8) {
        if n < 16 {
            self.0.push(fix | n as u8);
        } else {
            self.length(n, None, m16, m32);
        }
    }

    pub fn str(&mut self, s: &str) {
        if s.len() < 32 {
            self.0.push(0xa0 | s.len() as u8);
        } else {
            self.length(s.len(), Some(0xd9), 0xda, 0xdb);
        }
        self.0.extend_from_slice(s.as_bytes());
    }

    pub fn bin(&mut self, b: &[u8]) {
        self.length(b.len(), Some(0xc4), 0xc5, 0xc6);
        self.0.extend_from_slice(b);
    }

    /// A marker and a length of 8 (where the type has that form), 16 or 32 bits: the
    /// smallest that holds `n`.
    fn length(&mut self, n: usize, m8: Option<u8>, m16: u8, m32: u8) {
        match m8 {
            Some(m8) if n <= u8::MAX as usize => self.0.extend_from_slice(&[m8, n as u8]),
            _ if n <= u16::MAX as usize => {
                self.0.push(m16);
                self.0.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                self.0.push(m32);
                self.0.extend_from_slice(&(n as u32).to_be_bytes());
            }
        }
    }

    /// The smallest encoding of an unsigned integer, as `rmp::encode::write_uint`.
    pub fn uint(&mut self, v: u64) {
        if v < 128 {
            self.0.push(v as u8);
        } else if v <= u8::MAX as u64 {
            self.0.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u16::MAX as u64 {
            self.0.push(0xcd);
            self.0.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u32::MAX as u64 {
            self.0.push(0xce);
            self.0.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.0.push(0xcf);
            self.0.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// The smallest encoding of a signed integer, as `rmp::encode::write_sint` (which
    /// `rmp_serde` uses for every signed type): a non-negative value takes the unsigned
    /// forms, so `5i64` and `5u64` are the same bytes.
    pub fn sint(&mut self, v: i64) {
        if v >= 0 {
            self.uint(v as u64);
        } else if v >= -32 {
            // Negative fixint: the value's own two's-complement byte (0xe0..=0xff).
            self.0.push(v as i8 as u8);
        } else if v >= i8::MIN as i64 {
            self.0.extend_from_slice(&[0xd0, v as i8 as u8]);
        } else if v >= i16::MIN as i64 {
            self.0.push(0xd1);
            self.0.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i32::MIN as i64 {
            self.0.push(0xd2);
            self.0.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            self.0.push(0xd3);
            self.0.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// Always the 8-byte form, as `rmp_serde` writes an `f64` (it never narrows one to f32).
    pub fn f64(&mut self, v: f64) {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.0.push(if v { 0xc3 } else { 0xc2 });
    }
}
