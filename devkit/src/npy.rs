//! A minimal `.npy` reader and writer: format versions 1.0 and 2.0 (3.0 is read too, it
//! only differs in the header's text encoding), little-endian numeric dtypes, C order.
//!
//! Just enough for golden data and CLI inputs, so the client needs no NumPy crate.
//! Anything else (big-endian, Fortran order, structured or object dtypes) is refused with a
//! clear error instead of being misread.

use std::path::{Path, PathBuf};

use jetinfer_schemas::{DType, Tensor};

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {source}")]
    Io {
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
    let (major, minor) = (bytes[6], bytes[7]);
    // Version 1 has a u16 header length, 2 and 3 a u32; 3 only allows UTF-8 in the header.
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            let raw = bytes
                .get(8..12)
                .ok_or_else(|| NpyError::Format("truncated header length".into()))?;
            (
                u32::from_le_bytes(raw.try_into().expect("4 bytes: this is a bug")) as usize,
                12,
            )
        }
        _ => {
            return Err(NpyError::Unsupported(format!(
                "format version {major}.{minor}"
            )))
        }
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            NpyError::Format(format!(
                "header of {header_len} bytes runs past the end of the file"
            ))
        })?;
    let text = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|_| NpyError::Format("header is not text".into()))?;
    let header = parse_header(text)?;
    if header.fortran_order {
        return Err(NpyError::Unsupported(
            "Fortran order (save the array C-contiguous)".into(),
        ));
    }
    let dtype = dtype_of(&header.descr)?;
    let count = header
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NpyError::Format(format!("shape {:?} overflows", header.shape)))?;
    let data = &bytes[header_end..];
    let expected = count
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| NpyError::Format(format!("shape {:?} overflows", header.shape)))?;
    if data.len() as u64 != expected {
        return Err(NpyError::Format(format!(
            "shape {:?} of {} needs {expected} data bytes, the file has {}",
            header.shape,
            header.descr,
            data.len()
        )));
    }
    let shape = header
        .shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| NpyError::Format(format!("dimension {d} too large")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor::owned(dtype, shape, data.to_vec()))
}

/// Encodes a tensor as a version 1.0 `.npy` file (version 2.0 if the header is huge).
pub fn to_bytes(tensor: &Tensor<'_>) -> Result<Vec<u8>, NpyError> {
    let descr = descr_of(tensor.dtype)?;
    let dims: Vec<String> = tensor.shape.iter().map(|d| d.to_string()).collect();
    // Python tuple syntax: `()`, `(3,)`, `(2, 3)`.
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // NumPy pads with spaces and ends with '\n' so the data starts 64-byte aligned.
    let (version, prefix) = if header.len() + 11 < u16::MAX as usize {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - prefix - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + tensor.data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    match version {
        1 => out.extend_from_slice(&(header.len() as u16).to_le_bytes()),
        _ => out.extend_from_slice(&(header.len() as u32).to_le_bytes()),
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&tensor.data);
    Ok(out)
}

/// Writes a tensor to a `.npy` file.
pub fn write(path: impl AsRef<Path>, tensor: &Tensor<'_>) -> Result<(), NpyError> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(tensor)?).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

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

/// The three keys of a `.npy` header.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses the header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (64, 16), }`.
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let mut p = Cursor {
        s: text.as_bytes(),
        i: 0,
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => {
                if p.peek() == Some(b'[') {
                    return Err(NpyError::Unsupported("structured dtypes".into()));
                }
                descr = Some(p.string()?);
            }
            "fortran_order" => fortran_order = Some(p.boolean()?),
            "shape" => shape = Some(p.int_tuple()?),
            other => return Err(NpyError::Format(format!("unexpected header key {other:?}"))),
        }
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    match (descr, fortran_order, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(Header {
            descr,
            fortran_order,
            shape,
        }),
        _ => Err(NpyError::Format(format!(
            "header lacks descr, fortran_order or shape: {}",
            text.trim()
        ))),
    }
}

/// A cursor over the header text; every method skips leading whitespace.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {:?}", c as char)))
        }
    }

    fn error(&self, what: &str) -> NpyError {
        let rest = String::from_utf8_lossy(&self.s[self.i.min(self.s.len())..]);
        NpyError::Format(format!(
            "header: {what} at {:?}",
            rest.chars().take(20).collect::<String>()
        ))
    }

    fn string(&mut self) -> Result<String, NpyError> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("expected a string")),
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == quote)
            .ok_or_else(|| self.error("unterminated string"))?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn word(&mut self) -> &[u8] {
        self.peek();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn boolean(&mut self) -> Result<bool, NpyError> {
        match self.word() {
            b"True" => Ok(true),
            b"False" => Ok(false),
            _ => Err(self.error("expected True or False")),
        }
    }

    fn int_tuple(&mut self) -> Result<Vec<u64>, NpyError> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            let word = self.word();
            // Python 2 wrote longs as `3L`.
            let digits = word.strip_suffix(b"L").unwrap_or(word);
            let dim = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| self.error("expected a dimension"))?;
            dims.push(dim);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
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
        let py2 = parse(&hand_made(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2L, 1L), }\n",
            1,
            &[1, 2],
        ))
        .unwrap();
        assert_eq!(py2.shape, vec![2, 1]);
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
        assert_eq!((10 + header_len) % 64, 0, "data is 64-byte aligned");
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert_eq!(parse(&bytes).unwrap(), t);
        let one = Tensor::owned(DType::Bool, vec![1], vec![1]);
        assert_eq!(parse(&to_bytes(&one).unwrap()).unwrap(), one);
        let scalar = Tensor::owned(DType::I64, vec![], 5i64.to_le_bytes().to_vec());
        assert_eq!(parse(&to_bytes(&scalar).unwrap()).unwrap(), scalar);
        assert!(to_bytes(&Tensor::owned(DType::Bf16, vec![1], vec![0, 0])).is_err());
    }
}
