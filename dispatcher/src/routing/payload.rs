//! Writing a routed version into a job's payload, which the worker decodes again: the
//! worker runs the version the job names, so a job routed by weight must name it.
//!
//! The payload is the producer's MessagePack map, forwarded untouched otherwise. Rather
//! than decoding and re-encoding the whole job (tensors included), the intake finds where
//! a `version` belongs ([`VersionSlot::find`]: a walk over the top-level entries that
//! skips strings and binaries by their length), and the dispatch writes it there
//! ([`VersionSlot::write`]): a `version: nil` entry gets the string in place of the nil,
//! a map without `version` gets one more entry at its end (and a count one higher). Every
//! other byte, including keys this build does not know, reaches the worker as sent.

use bytes::{BufMut, Bytes, BytesMut};

/// Where the routed version goes in one payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VersionSlot {
    /// The map has `version: nil`; the nil is at this offset.
    ReplaceNil(usize),
    /// The map has no `version`: its header is `header_len` bytes for `count` entries,
    /// which end at `end`.
    Append {
        header_len: usize,
        count: u32,
        end: usize,
    },
}

/// Why a payload has no place for a version (it decoded as a job, so only a bug or a
/// version skew gets here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotError {
    #[error("the job is not a MessagePack map")]
    NotAMap,
    #[error("the job's MessagePack ends early or holds a reserved byte")]
    Malformed,
    #[error("the job names a version already")]
    HasVersion,
}

const VERSION_KEY: &[u8] = b"version";

impl VersionSlot {
    /// Finds where a version goes in `payload`, a job that names none.
    pub fn find(payload: &[u8]) -> Result<VersionSlot, SlotError> {
        let (count, header_len) = map_header(payload)?;
        let mut at = header_len;
        for _ in 0..count {
            let key = str_at(payload, at);
            at = skip(payload, at)?;
            if key == Some(VERSION_KEY) {
                return match payload.get(at) {
                    Some(0xc0) => Ok(VersionSlot::ReplaceNil(at)),
                    Some(_) => Err(SlotError::HasVersion),
                    None => Err(SlotError::Malformed),
                };
            }
            at = skip(payload, at)?;
        }
        Ok(VersionSlot::Append {
            header_len,
            count,
            end: at,
        })
    }

    /// `payload` (the one this slot was found in) naming `version`.
    pub fn write(self, payload: &[u8], version: &str) -> Bytes {
        let mut out =
            BytesMut::with_capacity(payload.len() + VERSION_KEY.len() + version.len() + 16);
        match self {
            VersionSlot::ReplaceNil(nil) => {
                out.put_slice(&payload[..nil]);
                put_str(&mut out, version.as_bytes());
                out.put_slice(&payload[nil + 1..]);
            }
            VersionSlot::Append {
                header_len,
                count,
                end,
            } => {
                put_map_header(&mut out, count + 1);
                out.put_slice(&payload[header_len..end]);
                put_str(&mut out, VERSION_KEY);
                put_str(&mut out, version.as_bytes());
                out.put_slice(&payload[end..]);
            }
        }
        out.freeze()
    }
}

fn map_header(b: &[u8]) -> Result<(u32, usize), SlotError> {
    match *b.first().ok_or(SlotError::Malformed)? {
        m @ 0x80..=0x8f => Ok((u32::from(m & 0x0f), 1)),
        0xde => Ok((be(b, 1, 2)? as u32, 3)),
        0xdf => Ok((be(b, 1, 4)? as u32, 5)),
        _ => Err(SlotError::NotAMap),
    }
}

fn put_map_header(out: &mut BytesMut, n: u32) {
    if n < 16 {
        out.put_u8(0x80 | n as u8);
    } else if n <= u32::from(u16::MAX) {
        out.put_u8(0xde);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdf);
        out.put_u32(n);
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.put_u8(0xa0 | n as u8);
    } else if n <= usize::from(u8::MAX) {
        out.put_u8(0xd9);
        out.put_u8(n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.put_u8(0xda);
        out.put_u16(n as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(n as u32);
    }
    out.put_slice(s);
}

/// The big-endian unsigned integer of `len` bytes at `at`.
fn be(b: &[u8], at: usize, len: usize) -> Result<u64, SlotError> {
    let bytes = b.get(at..at + len).ok_or(SlotError::Malformed)?;
    Ok(bytes.iter().fold(0u64, |n, x| (n << 8) | u64::from(*x)))
}

/// The string at `at`, when the value there is one.
fn str_at(b: &[u8], at: usize) -> Option<&[u8]> {
    let (start, len) = match *b.get(at)? {
        s @ 0xa0..=0xbf => (at + 1, usize::from(s & 0x1f)),
        0xd9 => (at + 2, be(b, at + 1, 1).ok()? as usize),
        0xda => (at + 3, be(b, at + 1, 2).ok()? as usize),
        0xdb => (at + 5, be(b, at + 1, 4).ok()? as usize),
        _ => return None,
    };
    b.get(start..start.checked_add(len)?)
}

/// The offset just past the value at `at` (nested arrays and maps included), without
/// recursion: `pending` counts the values still to pass.
fn skip(b: &[u8], mut at: usize) -> Result<usize, SlotError> {
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let tag = *b.get(at).ok_or(SlotError::Malformed)?;
        // (bytes of the tag and its length field, bytes of data, values nested inside)
        let (head, data, nested): (usize, u64, u64) = match tag {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * u64::from(tag & 0x0f)),
            0x90..=0x9f => (1, 0, u64::from(tag & 0x0f)),
            0xa0..=0xbf => (1, u64::from(tag & 0x1f), 0),
            0xc4 | 0xd9 => (2, be(b, at + 1, 1)?, 0),
            0xc5 | 0xda => (3, be(b, at + 1, 2)?, 0),
            0xc6 | 0xdb => (5, be(b, at + 1, 4)?, 0),
            0xc7 => (3, be(b, at + 1, 1)?, 0),
            0xc8 => (4, be(b, at + 1, 2)?, 0),
            0xc9 => (6, be(b, at + 1, 4)?, 0),
            0xca => (5, 0, 0),
            0xcb => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xce | 0xd2 => (5, 0, 0),
            0xcf | 0xd3 => (9, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => (3, 0, be(b, at + 1, 2)?),
            0xdd => (5, 0, be(b, at + 1, 4)?),
            0xde => (3, 0, 2 * be(b, at + 1, 2)?),
            0xdf => (5, 0, 2 * be(b, at + 1, 4)?),
            0xc1 => return Err(SlotError::Malformed),
        };
        at = at
            .checked_add(head)
            .and_then(|a| a.checked_add(usize::try_from(data).ok()?))
            .filter(|a| *a <= b.len())
            .ok_or(SlotError::Malformed)?;
        pending = pending.checked_add(nested).ok_or(SlotError::Malformed)?;
        // Each nested value takes at least a byte: more than remain is a lie.
        if pending > (b.len() - at) as u64 {
            return Err(SlotError::Malformed);
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jetinfer_schemas::tensor::Tensor;
    use jetinfer_schemas::{decode_job, encode, Job, Limits};

    use super::*;

    fn job() -> Job<'static> {
        let mut j = Job::new(
            "job-1",
            "mlp",
            vec![
                Tensor::from_f32(vec![16], &[0.5; 16]),
                Tensor::from_f32(vec![2, 70], &[1.5; 140]),
            ],
        );
        j.deadline_ms = Some(123);
        j.meta = Some(BTreeMap::from([("user".into(), "alice".into())]));
        j
    }

    fn routed(payload: &[u8], version: &str) -> Job<'static> {
        let slot = VersionSlot::find(payload).unwrap();
        let out = slot.write(payload, version);
        let job = decode_job(&out, &Limits::default()).unwrap();
        Job {
            id: job.id.into_owned().into(),
            model: job.model.into_owned().into(),
            version: job.version.map(|v| v.into_owned().into()),
            inputs: job.inputs.into_iter().map(Tensor::into_owned).collect(),
            ..job
        }
    }

    #[test]
    fn a_job_without_version_gets_one_and_nothing_else_changes() {
        let original = job();
        let payload = encode(&original);
        for version in ["2", &"v".repeat(64)] {
            let got = routed(&payload, version);
            assert_eq!(got.version.as_deref(), Some(version));
            assert_eq!(
                Job {
                    version: None,
                    ..got
                },
                original
            );
        }
    }

    #[test]
    fn an_explicit_nil_version_is_replaced() {
        // A producer that writes `version: nil` (no skip_serializing_if), and a key this
        // build does not know.
        let mut out = BytesMut::new();
        put_map_header(&mut out, 6);
        for (k, v) in [
            ("v", &[1u8][..]),
            ("id", b"\xa5job-1"),
            ("model", b"\xa3mlp"),
        ] {
            put_str(&mut out, k.as_bytes());
            out.put_slice(v);
        }
        put_str(&mut out, b"version");
        out.put_u8(0xc0);
        put_str(&mut out, b"inputs");
        out.put_u8(0x91);
        out.put_slice(&encode(&Tensor::from_f32(vec![16], &[0.5; 16])));
        put_str(&mut out, b"extra");
        out.put_u8(7);
        let payload = out.freeze();
        assert!(matches!(
            VersionSlot::find(&payload),
            Ok(VersionSlot::ReplaceNil(_))
        ));
        assert_eq!(routed(&payload, "3").version.as_deref(), Some("3"));
    }

    #[test]
    fn large_maps_grow_their_header() {
        // 15 entries (a fixmap) become 16 (a map16); map16 stays map16.
        for n in [15usize, 16, 40] {
            let mut out = BytesMut::new();
            put_map_header(&mut out, n as u32);
            put_str(&mut out, b"v");
            out.put_u8(1);
            put_str(&mut out, b"id");
            put_str(&mut out, b"job-1");
            put_str(&mut out, b"model");
            put_str(&mut out, b"mlp");
            put_str(&mut out, b"inputs");
            out.put_u8(0x91);
            out.put_slice(&encode(&Tensor::from_f32(vec![16], &[0.5; 16])));
            for i in 0..n - 4 {
                put_str(&mut out, format!("x{i:02}").as_bytes());
                out.put_u8(i as u8);
            }
            let got = routed(&out, "2");
            assert_eq!(
                (got.version.as_deref(), &*got.id),
                (Some("2"), "job-1"),
                "{n}"
            );
        }
    }

    #[test]
    fn what_cannot_take_a_version_is_an_error() {
        let mut named = job();
        named.version = Some("1".into());
        assert_eq!(
            VersionSlot::find(&encode(&named)),
            Err(SlotError::HasVersion)
        );
        assert_eq!(VersionSlot::find(&[0x93, 1, 2, 3]), Err(SlotError::NotAMap));
        let payload = encode(&job());
        for cut in [1, 5, payload.len() / 2, payload.len() - 1] {
            assert!(VersionSlot::find(&payload[..cut]).is_err(), "cut at {cut}");
        }
        // A nested count far beyond the bytes left.
        assert_eq!(
            VersionSlot::find(&[0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(SlotError::Malformed)
        );
        assert_eq!(
            VersionSlot::find(&[0x81, 0xc1, 0xc0]),
            Err(SlotError::Malformed)
        );
    }
}
