//! A hand-written reader for the usual shape of a job message, tried before `rmp_serde`.
//!
//! Both services decode every job (the dispatcher to triage it, the worker to run it), and
//! `rmp_serde`'s generic path was 5 % of each one's CPU for a small job (docs/benchmarks.md,
//! "First deliveries skip the lookup, and the job reader"). This reader takes only the shape
//! producers write — a map with string keys, the known fields, string, integer, bool, nil
//! and bin values of the expected types — and gives up (`None`) at anything else: unknown or repeated keys, `inputs_ref`, other
//! encodings of a value, trailing bytes. [`crate::decode_job`] then decodes with `rmp_serde`,
//! so the result, or the error, is always the one `rmp_serde` would give; a property test
//! (`tests/roundtrip.rs`, `the_job_reader_decodes_as_rmp_serde`) holds the two to that.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::Job;
use crate::msgpack_reader::{set, Reader};
use crate::tensor::{DType, Tensor};

/// The job in `bytes`, when it has the usual shape; `None` to leave it to `rmp_serde`.
pub(crate) fn read_job(bytes: &[u8]) -> Option<Job<'_>> {
    let mut r = Reader::new(bytes);
    let job = job(&mut r)?;
    r.at_end().then_some(job)
}

fn job<'a>(r: &mut Reader<'a>) -> Option<Job<'a>> {
    let (mut v, mut id, mut model, mut inputs) = (None, None, None, None);
    let (mut version, mut deadline_ms, mut cache, mut meta) = (None, None, None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"v" => set(&mut v, u32::try_from(r.uint()?).ok()?)?,
            b"id" => set(&mut id, r.str()?)?,
            b"model" => set(&mut model, r.str()?)?,
            b"version" => set(&mut version, r.nil_or(Reader::str)?)?,
            b"inputs" => set(&mut inputs, tensors(r)?)?,
            b"deadline_ms" => set(&mut deadline_ms, r.nil_or(Reader::uint)?)?,
            b"cache" => set(&mut cache, r.nil_or(Reader::bool)?)?,
            b"meta" => set(&mut meta, r.nil_or(meta_map)?)?,
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

fn tensors<'a>(r: &mut Reader<'a>) -> Option<Vec<Tensor<'a>>> {
    let n = r.array_len()?;
    let mut tensors = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        tensors.push(tensor(r)?);
    }
    Some(tensors)
}

fn tensor<'a>(r: &mut Reader<'a>) -> Option<Tensor<'a>> {
    let (mut dtype, mut shape, mut data) = (None, None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"dtype" => set(&mut dtype, DType::parse(r.str()?)?)?,
            b"shape" => set(&mut shape, dims(r)?)?,
            b"data" => set(&mut data, r.bin()?)?,
            _ => return None,
        }
    }
    Some(Tensor {
        dtype: dtype?,
        shape: shape?,
        data: Cow::Borrowed(data?),
    })
}

fn dims(r: &mut Reader<'_>) -> Option<Vec<i64>> {
    let n = r.array_len()?;
    let mut dims = Vec::with_capacity(n.min(8));
    for _ in 0..n {
        dims.push(r.int()?);
    }
    Some(dims)
}

fn meta_map(r: &mut Reader<'_>) -> Option<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    for _ in 0..r.map_len()? {
        let key = r.str()?.to_string();
        // A repeated key keeps its last value, as serde's map visitor does.
        meta.insert(key, r.str()?.to_string());
    }
    Some(meta)
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
