//! A hand-written reader for the usual shape of a job message, tried before `rmp_serde`.
//!
//! Both services decode every job (the dispatcher to triage it, the worker to run it), and
//! `rmp_serde`'s generic path was 5 % of each one's CPU for a small job (docs/benchmarks.md,
//! "The job reader"). This reader takes only the shape producers write — a map with string
//! keys, the known fields, string, integer, bool, nil and bin values of the expected types —
//! and gives up (`None`) at anything else: unknown or repeated keys, `inputs_ref`, other
//! encodings of a value, trailing bytes. [`crate::decode_job`] then decodes with `rmp_serde`,
//! so the result, or the error, is always the one `rmp_serde` would give; a property test
//! (`tests/job_reader.rs`) holds the two to that.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::job::Job;
use crate::tensor::{DType, Tensor};

/// The job in `bytes`, when it has the usual shape; `None` to leave it to `rmp_serde`.
pub(crate) fn read_job(bytes: &[u8]) -> Option<Job<'_>> {
    let mut r = Reader { bytes, at: 0 };
    let job = r.job()?;
    (r.at == bytes.len()).then_some(job)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn job(&mut self) -> Option<Job<'a>> {
        let (mut v, mut id, mut model, mut inputs) = (None, None, None, None);
        let (mut version, mut deadline_ms, mut cache, mut meta) = (None, None, None, None);
        for _ in 0..self.map_len()? {
            match self.str()? {
                "v" => set(&mut v, u32::try_from(self.uint()?).ok()?)?,
                "id" => set(&mut id, self.str()?)?,
                "model" => set(&mut model, self.str()?)?,
                "version" => set(&mut version, self.nil_or(Self::str)?)?,
                "inputs" => set(&mut inputs, self.tensors()?)?,
                "deadline_ms" => set(&mut deadline_ms, self.nil_or(Self::uint)?)?,
                "cache" => set(&mut cache, self.nil_or(Self::bool)?)?,
                "meta" => set(&mut meta, self.nil_or(Self::meta)?)?,
                _ => return None,
            }
        }
        Some(Job {
            v: v?,
            id: Cow::Borrowed(id?),
            model: Cow::Borrowed(model?),
            version: version.flatten().map(Cow::Borrowed),
            inputs: inputs?,
            inputs_ref: None,
            deadline_ms: deadline_ms.flatten(),
            cache: cache.flatten(),
            meta: meta.flatten(),
        })
    }

    fn tensors(&mut self) -> Option<Vec<Tensor<'a>>> {
        let n = self.array_len()?;
        let mut tensors = Vec::with_capacity(n.min(16));
        for _ in 0..n {
            tensors.push(self.tensor()?);
        }
        Some(tensors)
    }

    fn tensor(&mut self) -> Option<Tensor<'a>> {
        let (mut dtype, mut shape, mut data) = (None, None, None);
        for _ in 0..self.map_len()? {
            match self.str()? {
                "dtype" => set(&mut dtype, dtype_named(self.str()?)?)?,
                "shape" => set(&mut shape, self.dims()?)?,
                "data" => set(&mut data, self.bin()?)?,
                _ => return None,
            }
        }
        Some(Tensor {
            dtype: dtype?,
            shape: shape?,
            data: Cow::Borrowed(data?),
        })
    }

    fn dims(&mut self) -> Option<Vec<i64>> {
        let n = self.array_len()?;
        let mut dims = Vec::with_capacity(n.min(8));
        for _ in 0..n {
            dims.push(self.int()?);
        }
        Some(dims)
    }

    fn meta(&mut self) -> Option<BTreeMap<String, String>> {
        let mut meta = BTreeMap::new();
        for _ in 0..self.map_len()? {
            let key = self.str()?.to_string();
            // A repeated key keeps its last value, as serde's map visitor does.
            meta.insert(key, self.str()?.to_string());
        }
        Some(meta)
    }

    /// `None` (nil) or `read`'s value.
    fn nil_or<T>(&mut self, read: fn(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == 0xc0 {
            self.at += 1;
            return Some(None);
        }
        read(self).map(Some)
    }

    fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some((m & 0x0f) as usize),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// Any integer encoding, as a value that fits an `i128`.
    fn integer(&mut self) -> Option<i128> {
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

    fn uint(&mut self) -> Option<u64> {
        u64::try_from(self.integer()?).ok()
    }

    fn int(&mut self) -> Option<i64> {
        i64::try_from(self.integer()?).ok()
    }

    /// A big-endian unsigned length or value of `n` bytes (1, 2 or 4).
    fn be(&mut self, n: usize) -> Option<usize> {
        Some(
            self.take(n)?
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
}

/// Stores a field's value once; a repeated field gives up (serde refuses it).
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// The dtype named as its wire name; anything else is left to `rmp_serde` (and refused there).
fn dtype_named(name: &str) -> Option<DType> {
    Some(match name {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::Bf16,
        "f64" => DType::F64,
        "i64" => DType::I64,
        "i32" => DType::I32,
        "i16" => DType::I16,
        "i8" => DType::I8,
        "u8" => DType::U8,
        "bool" => DType::Bool,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, InputsRef};

    fn full_job() -> Job<'static> {
        let mut job = Job::new(
            "job-1",
            "mlp",
            vec![
                Tensor::from_f32(vec![2], &[1.0, 2.0]),
                Tensor::owned(DType::I64, vec![1, 1], 7i64.to_le_bytes().to_vec()),
            ],
        );
        job.version = Some("2".into());
        job.deadline_ms = Some(u64::MAX);
        job.cache = Some(false);
        job.meta = Some([("k".to_string(), "v".to_string())].into());
        job
    }

    #[test]
    fn reads_what_the_clients_write() {
        let job = full_job();
        assert_eq!(read_job(&encode(&job)), Some(job));
        let bare = Job::new("j", "m", vec![Tensor::from_f32(vec![], &[1.0])]);
        assert_eq!(read_job(&encode(&bare)), Some(bare));
    }

    #[test]
    fn reads_every_dtype_by_its_wire_name() {
        for dtype in [
            DType::F32,
            DType::F16,
            DType::Bf16,
            DType::F64,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U8,
            DType::Bool,
        ] {
            assert_eq!(dtype_named(dtype.as_str()), Some(dtype));
        }
    }

    /// {v:1, id:"j1", model:"mlp", inputs:[{dtype:"f32", shape:[2], data:bin(8)}]}, with
    /// `v` as a uint16 and the dims as int64: other integer widths, the same values.
    #[test]
    fn reads_any_integer_width() {
        let mut b = vec![0x84, 0xa1, b'v', 0xcd, 0x00, 0x01];
        b.extend([0xa2, b'i', b'd', 0xa2, b'j', b'1']);
        b.extend([0xa5, b'm', b'o', b'd', b'e', b'l', 0xa3, b'm', b'l', b'p']);
        b.extend([0xa6, b'i', b'n', b'p', b'u', b't', b's', 0x91, 0x83]);
        b.extend([0xa5, b'd', b't', b'y', b'p', b'e', 0xa3, b'f', b'3', b'2']);
        b.extend([
            0xa5, b's', b'h', b'a', b'p', b'e', 0x91, 0xd3, 0, 0, 0, 0, 0, 0, 0, 2,
        ]);
        b.extend([
            0xa4, b'd', b'a', b't', b'a', 0xc4, 8, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40,
        ]);
        let expected = Job::new("j1", "mlp", vec![Tensor::from_f32(vec![2], &[1.0, 2.0])]);
        assert_eq!(read_job(&b), Some(expected));
    }

    /// Shapes it leaves to `rmp_serde`: a reference, an unknown or repeated key, trailing
    /// bytes, a field as an array (positional struct).
    #[test]
    fn leaves_other_shapes_to_rmp_serde() {
        let mut by_ref = Job::new("j", "m", Vec::new());
        by_ref.inputs_ref = Some(InputsRef {
            bytes: 1,
            digest: "0".repeat(64),
            store: 0,
        });
        assert_eq!(read_job(&encode(&by_ref)), None);
        let mut trailing = encode(&full_job());
        trailing.push(0xc0);
        assert_eq!(read_job(&trailing), None);
        // {v:1, v:1, ...}: serde refuses a repeated field.
        let mut repeated = encode(&full_job());
        repeated[0] += 1;
        repeated.splice(1..1, [0xa1, b'v', 0x01]);
        assert_eq!(read_job(&repeated), None);
        // {x:nil, ...}: serde ignores an unknown key; the reader leaves it.
        let mut unknown = encode(&full_job());
        unknown[0] += 1;
        unknown.splice(1..1, [0xa1, b'x', 0xc0]);
        assert_eq!(read_job(&unknown), None);
        let positional = rmp_serde::to_vec(&full_job()).unwrap();
        assert_eq!(read_job(&positional), None);
    }
}
