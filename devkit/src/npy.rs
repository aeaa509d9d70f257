//! `.npy` files as tensors, through the `npyz` crate: format versions 1.0 to 3.0,
//! little-endian numeric dtypes, C order. Tensors keep the file's bytes as they are.
//!
//! Anything else (big-endian, Fortran order, structured or object dtypes) is refused with a
//! clear error instead of being misread.

use std::io::Read;
use std::path::{Path, PathBuf};

use jetinfer_schemas::{DType, Tensor};
use npyz::WriterBuilder;

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a well-formed `.npy` file.
    #[error("not a valid .npy file: {0}")]
    Format(String),
    /// A valid file this reader does not handle (dtype, byte order, layout, version).
    #[error("unsupported .npy file: {0}")]
    Unsupported(String),
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// Deepest bracket nesting accepted in a `.npy` header (see `parse`).
const MAX_HEADER_NESTING: usize = 4;

/// The deepest nesting of `[`, `(` and `{` in `text`.
fn bracket_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for &b in text {
        match b {
            b'[' | b'(' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b')' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Reads a `.npy` file into an owned tensor with the file's full shape.
pub fn read(path: impl AsRef<Path>) -> Result<Tensor<'static>, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes)
}

/// Parses the bytes of a `.npy` file.
pub fn parse(bytes: &[u8]) -> Result<Tensor<'static>, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError::Format("missing the \\x93NUMPY magic".into()));
    }
    if !(1..=3).contains(&bytes[6]) {
        let (major, minor) = (bytes[6], bytes[7]);
        return Err(NpyError::Unsupported(format!(
            "format version {major}.{minor}"
        )));
    }
    // npyz allocates the header's declared length before reading it: a 4 GB claim in a
    // tiny file must be refused here, not attempted (found by the fuzzer).
    let (len_at, len_bytes) = if bytes[6] == 1 { (8, 2) } else { (8, 4) };
    let header_len = bytes
        .get(len_at..len_at + len_bytes)
        .map(|b| {
            b.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
        })
        .ok_or_else(|| NpyError::Format("truncated header length".into()))?;
    if (len_at + len_bytes) as u64 + header_len > bytes.len() as u64 {
        return Err(NpyError::Format(format!(
            "header of {header_len} bytes is longer than the file ({} bytes)",
            bytes.len()
        )));
    }
    // npyz reads the header with `py_literal`, whose parser backtracks exponentially on
    // nested brackets (20 levels of `[` take a minute; found by the fuzzer). A plain dtype's
    // header nests two deep (`{… (2, 3) …}`): refuse anything deeper than a little more.
    let header = &bytes[len_at + len_bytes..][..header_len as usize];
    if bracket_depth(header) > MAX_HEADER_NESTING {
        return Err(NpyError::Unsupported(format!(
            "a header nesting brackets more than {MAX_HEADER_NESTING} deep"
        )));
    }
    let file = npyz::NpyFile::new(bytes).map_err(|e| NpyError::Format(e.to_string()))?;
    let header = file.header().clone();
    if header.order() == npyz::Order::Fortran {
        return Err(NpyError::Unsupported(
            "Fortran order (save the array C-contiguous)".into(),
        ));
    }
    let descr = match header.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => {
            return Err(NpyError::Unsupported(format!(
                "structured dtype {}",
                other.descr()
            )))
        }
    };
    let dtype = dtype_of(&descr)?;
    let shape = header.shape();
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .ok_or_else(|| NpyError::Format(format!("shape {shape:?} overflows")))?;
    let mut data = Vec::new();
    file.into_inner()
        .read_to_end(&mut data)
        .map_err(|e| NpyError::Format(e.to_string()))?;
    if data.len() as u64 != count {
        return Err(NpyError::Format(format!(
            "shape {shape:?} of {descr} needs {count} data bytes, the file has {}",
            data.len()
        )));
    }
    let shape = shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| NpyError::Format(format!("dimension {d} too large")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::owned(dtype, shape, data))
}

/// Encodes a tensor as a `.npy` file (version 1.0, or a later one if the header needs it).
pub fn to_bytes(tensor: &Tensor<'_>) -> Result<Vec<u8>, NpyError> {
    let descr = descr_of(tensor.dtype)?;
    let type_str: npyz::TypeStr = descr
        .parse()
        .expect("the dtypes written here are valid type strings: this is a bug");
    let shape = tensor
        .shape
        .iter()
        .map(|&d| {
            u64::try_from(d).map_err(|_| NpyError::Unsupported(format!("negative dimension {d}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(128 + tensor.data.len());
    npyz::WriteOptions::new_header_only()
        .dtype(npyz::DType::Plain(type_str))
        .shape(&shape)
        .writer(&mut out)
        .write_header_only()
        .map_err(|e| NpyError::Format(e.to_string()))?;
    out.extend_from_slice(&tensor.data);
    Ok(out)
}

/// Writes a tensor to a `.npy` file.
pub fn write(path: impl AsRef<Path>, tensor: &Tensor<'_>) -> Result<(), NpyError> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(tensor)?).map_err(|source| NpyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The tensor dtype of a `.npy` type string.
fn dtype_of(descr: &str) -> Result<DType, NpyError> {
    // '|' means "byte order not applicable"; NumPy writes it for one-byte types.
    Ok(match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "<i2" => DType::I16,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "|b1" | "<b1" => DType::Bool,
        d if d.starts_with('>') => {
            return Err(NpyError::Unsupported(format!("big-endian dtype {d:?}")))
        }
        d => {
            return Err(NpyError::Unsupported(format!(
                "dtype {d:?} (supported: <f4 <f8 <f2 <i8 <i4 <i2 |i1 |u1 |b1)"
            )))
        }
    })
}

/// The `.npy` type string of a tensor dtype.
fn descr_of(dtype: DType) -> Result<&'static str, NpyError> {
    Ok(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::Bf16 => return Err(NpyError::Unsupported("bf16 has no .npy dtype".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1.0 file written by hand the way NumPy writes `np.array([[1, 2, 3]], '<f4')`.
    fn hand_made(header: &str, version: u8, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn deeply_nested_headers_are_refused_at_once() {
        let nested = hand_made(&format!("{{'descr':{} }}", "[".repeat(40)), 1, &[]);
        assert!(matches!(parse(&nested), Err(NpyError::Unsupported(m)) if m.contains("nesting")));
    }

    #[test]
    fn a_header_longer_than_the_file_is_refused_without_allocating_it() {
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&[2, 0]);
        v2.extend_from_slice(&u32::MAX.to_le_bytes());
        v2.extend_from_slice(b"{'descr'");
        assert!(matches!(parse(&v2), Err(NpyError::Format(_))));
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&[1, 0, 0xff, 0xff]);
        assert!(matches!(parse(&v1), Err(NpyError::Format(_))));
    }

    #[test]
    fn reads_version_1_and_2() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }          \n";
        for version in [1, 2] {
            let t = parse(&hand_made(header, version, &f32_bytes(&[1.0, 2.0, 3.0]))).unwrap();
            assert_eq!(t.dtype, DType::F32);
            assert_eq!(t.shape, vec![1, 3]);
            assert_eq!(t.to_f32_vec(), vec![1.0, 2.0, 3.0]);
        }
    }

    #[test]
    fn reads_every_supported_dtype_and_odd_shapes() {
        let cases: [(&str, DType, usize); 9] = [
            ("<f4", DType::F32, 4),
            ("<f8", DType::F64, 8),
            ("<f2", DType::F16, 2),
            ("<i8", DType::I64, 8),
            ("<i4", DType::I32, 4),
            ("<i2", DType::I16, 2),
            ("|i1", DType::I8, 1),
            ("|u1", DType::U8, 1),
            ("|b1", DType::Bool, 1),
        ];
        for (descr, dtype, size) in cases {
            let header =
                format!("{{\"descr\": \"{descr}\", \"fortran_order\": False, \"shape\": (2,)}}\n");
            let t = parse(&hand_made(&header, 1, &vec![0; 2 * size])).unwrap();
            assert_eq!((t.dtype, t.shape.clone()), (dtype, vec![2]), "{descr}");
        }
        let scalar = parse(&hand_made(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (), }\n",
            1,
            &[7],
        ))
        .unwrap();
        assert_eq!((scalar.shape.len(), scalar.data.to_vec()), (0, vec![7]));
        let empty = parse(&hand_made(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }\n",
            1,
            &[],
        ))
        .unwrap();
        assert_eq!(empty.shape, vec![0, 4]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let unsupported = |header: &str| match parse(&hand_made(header, 1, &[0; 8])) {
            Err(NpyError::Unsupported(m)) => m,
            other => panic!("{header}: {other:?}"),
        };
        assert!(
            unsupported("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }")
                .contains("big-endian")
        );
        assert!(
            unsupported("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }")
                .contains("Fortran")
        );
        assert!(
            unsupported("{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }")
                .contains("<u2")
        );
        assert!(
            unsupported("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }")
                .contains("structured")
        );
        let mut v4 = hand_made(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            1,
            &[0; 8],
        );
        v4[6] = 4;
        assert!(matches!(parse(&v4), Err(NpyError::Unsupported(_))));

        let format = |bytes: &[u8]| matches!(parse(bytes), Err(NpyError::Format(_)));
        assert!(format(b"PK\x03\x04 a zip file"));
        assert!(
            format(&hand_made(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
                1,
                &[0; 8]
            )),
            "short data"
        );
        assert!(
            format(&hand_made(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
                1,
                &[0; 8]
            )),
            "long data"
        );
        assert!(
            format(&hand_made("{'descr': '<f4', 'shape': (2,), }", 1, &[0; 8])),
            "missing key"
        );
        assert!(
            format(&hand_made(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2,",
                1,
                &[]
            )),
            "cut header"
        );
        let mut long_header = hand_made(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
            1,
            &[],
        );
        long_header[8] = 0xff;
        assert!(format(&long_header), "header length past the end");
    }

    #[test]
    fn writes_what_numpy_reads() {
        let t = Tensor::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let bytes = to_bytes(&t).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 16, 0, "data is 16-byte aligned");
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert_eq!(parse(&bytes).unwrap(), t);
        let one = Tensor::owned(DType::Bool, vec![1], vec![1]);
        assert_eq!(parse(&to_bytes(&one).unwrap()).unwrap(), one);
        let scalar = Tensor::owned(DType::I64, vec![], 5i64.to_le_bytes().to_vec());
        assert_eq!(parse(&to_bytes(&scalar).unwrap()).unwrap(), scalar);
        assert!(to_bytes(&Tensor::owned(DType::Bf16, vec![1], vec![0, 0])).is_err());
    }
}
