//! The MessagePack primitives the hand-written readers of hot messages are built from
//! (`job/reader.rs`, `worker/run_request_reader.rs`). Every read returns `None`
//! on anything but the expected encoding, so a reader gives up and its caller decodes with
//! `rmp_serde`, which then has the last word on the value or the error.

/// A cursor over one message.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Whether the whole message was read (trailing bytes leave it to `rmp_serde`).
    pub fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// `None` (nil) or `read`'s value.
    pub fn nil_or<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == 0xc0 {
            self.at += 1;
            return Some(None);
        }
        read(self).map(Some)
    }

    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    pub fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some((m & 0x0f) as usize),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.key()?).ok()
    }

    /// A map key: a str's bytes, not checked as UTF-8 — the readers compare them with their
    /// (ASCII) field names and give up at anything else.
    pub fn key(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    pub fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// Any integer encoding, as a value that fits an `i128`.
    pub fn integer(&mut self) -> Option<i128> {
        Some(match self.byte()? {
            m @ 0x00..=0x7f => m as i128,
            m @ 0xe0..=0xff => m as i8 as i128,
            0xcc => self.be(1)? as i128,
            0xcd => self.be(2)? as i128,
            0xce => self.be(4)? as i128,
            0xcf => u64::from_be_bytes(self.take(8)?.try_into().ok()?) as i128,
            0xd0 => self.take(1)?[0] as i8 as i128,
            0xd1 => i16::from_be_bytes(self.take(2)?.try_into().ok()?) as i128,
            0xd2 => i32::from_be_bytes(self.take(4)?.try_into().ok()?) as i128,
            0xd3 => i64::from_be_bytes(self.take(8)?.try_into().ok()?) as i128,
            _ => return None,
        })
    }

    pub fn uint(&mut self) -> Option<u64> {
        u64::try_from(self.integer()?).ok()
    }

    pub fn int(&mut self) -> Option<i64> {
        i64::try_from(self.integer()?).ok()
    }

    /// A big-endian unsigned length or value of `n` bytes (1, 2 or 4).
    pub fn be(&mut self, n: usize) -> Option<usize> {
        Some(
            self.take(n)?
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize),
        )
    }

    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
}

/// Stores a field's value once; a repeated field gives up (serde refuses it).
pub(crate) fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}
