//! Tensors and results as JSON, for people and scripts: the CLI reads inputs written as
//! `{"dtype": "f32", "shape": [16], "data": [...]}` and prints results the same way.
//!
//! `data` is a flat list of numbers in row-major order (nested lists are flattened, so a
//! NumPy `tolist()` works too); booleans may be written `true`/`false` or `0`/`1`.

use jetinfer_schemas::{DType, JobResult, Tensor};
use serde_json::{json, Value};

/// Why a JSON value is not a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a tensor: {0}")]
pub struct TensorJsonError(pub String);

fn bad(message: impl Into<String>) -> TensorJsonError {
    TensorJsonError(message.into())
}

/// Parses `{"dtype", "shape", "data"}` into an owned tensor.
pub fn tensor_from_json(value: &Value) -> Result<Tensor<'static>, TensorJsonError> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad("expected an object with dtype, shape and data"))?;
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("\"dtype\" must be a string"))?;
    let dtype =
        DType::parse(dtype_name).ok_or_else(|| bad(format!("unknown dtype {dtype_name:?}")))?;
    let shape = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("\"shape\" must be a list of dimensions"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| i64::try_from(d).ok())
                .ok_or_else(|| bad(format!("dimension {d} is not a size")))
        })
        .collect::<Result<Vec<i64>, _>>()?;
    let mut values = Vec::new();
    flatten(
        obj.get("data").ok_or_else(|| bad("\"data\" is missing"))?,
        &mut values,
    )?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or_else(|| bad("shape overflows"))?;
    if values.len() != count {
        return Err(bad(format!(
            "shape {shape:?} needs {count} values, data has {}",
            values.len()
        )));
    }
    let mut data = Vec::with_capacity(count * dtype.size());
    for (i, v) in values.iter().enumerate() {
        encode_value(dtype, v, &mut data).map_err(|m| bad(format!("data[{i}] = {v}: {m}")))?;
    }
    Ok(Tensor::owned(dtype, shape, data))
}

fn flatten<'v>(value: &'v Value, out: &mut Vec<&'v Value>) -> Result<(), TensorJsonError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
        Value::Number(_) | Value::Bool(_) => {
            out.push(value);
            Ok(())
        }
        other => Err(bad(format!("data holds {other}, expected numbers"))),
    }
}

fn encode_value(dtype: DType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    fn int<T: TryFrom<i64>>(v: &Value) -> Result<T, String> {
        let i = v.as_i64().ok_or("expected an integer")?;
        T::try_from(i).map_err(|_| "out of range".to_string())
    }
    let float = || v.as_f64().ok_or("expected a number");
    match dtype {
        DType::F32 => out.extend((float()? as f32).to_le_bytes()),
        DType::F64 => out.extend(float()?.to_le_bytes()),
        DType::F16 => out.extend(f32_to_f16(float()? as f32).to_le_bytes()),
        DType::Bf16 => out.extend(f32_to_bf16(float()? as f32).to_le_bytes()),
        DType::I64 => out.extend(int::<i64>(v)?.to_le_bytes()),
        DType::I32 => out.extend(int::<i32>(v)?.to_le_bytes()),
        DType::I16 => out.extend(int::<i16>(v)?.to_le_bytes()),
        DType::I8 => out.extend(int::<i8>(v)?.to_le_bytes()),
        DType::U8 => out.push(int::<u8>(v)?),
        DType::Bool => out.push(match v {
            Value::Bool(b) => *b as u8,
            _ => match v.as_i64() {
                Some(0) => 0,
                Some(1) => 1,
                _ => return Err("expected true, false, 0 or 1".into()),
            },
        }),
    }
    Ok(())
}

/// A tensor for printing: dtype, shape and data, in that order.
///
/// Serialise it directly (`serde_json::to_string`) to keep the field order; a
/// `serde_json::Value` map sorts its keys.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorJson {
    pub dtype: &'static str,
    pub shape: Vec<i64>,
    /// Integers exactly; floats in their shortest form; NaN and infinities as the strings
    /// "NaN", "inf", "-inf" (JSON has no numbers for them).
    pub data: Vec<Value>,
}

impl TensorJson {
    pub fn new(t: &Tensor<'_>) -> TensorJson {
        let d = &t.data;
        let data: Vec<Value> = match t.dtype {
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| float(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
            DType::I64 => d
                .chunks_exact(8)
                .map(|c| json!(i64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|c| json!(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
            DType::I16 => d
                .chunks_exact(2)
                .map(|c| json!(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DType::I8 => d.iter().map(|&b| json!(b as i8)).collect(),
            DType::U8 | DType::Bool => d.iter().map(|&b| json!(b)).collect(),
            // f32, f16 and bf16: via f32, printed as the shortest decimal that reads back as
            // the same f32 (going through f64 directly prints 0.1f32 as 0.10000000149011612).
            DType::F32 | DType::F16 | DType::Bf16 => t
                .to_f32_vec()
                .into_iter()
                .map(|x| float(x.to_string().parse::<f64>().unwrap_or(f64::NAN)))
                .collect(),
        };
        TensorJson {
            dtype: t.dtype.as_str(),
            shape: t.shape.clone(),
            data,
        }
    }
}

/// A tensor as a JSON value `{"dtype", "shape", "data"}` (see [`TensorJson`]).
pub fn tensor_to_json(t: &Tensor<'_>) -> Value {
    serde_json::to_value(TensorJson::new(t))
        .expect("a tensor view always serialises: this is a bug")
}

fn float(x: f64) -> Value {
    match serde_json::Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None if x.is_nan() => json!("NaN"),
        None if x > 0.0 => json!("inf"),
        None => json!("-inf"),
    }
}

/// A result for printing: every field of the wire result in wire order, the outputs as
/// [`TensorJson`]. Serialise it directly to keep the order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResultJson<'r> {
    pub id: &'r str,
    pub status: &'static str,
    pub model: &'r str,
    pub version: &'r str,
    pub outputs: Vec<TensorJson>,
    pub error: Option<Value>,
    pub meta: &'r std::collections::BTreeMap<String, String>,
    pub worker: &'r str,
    pub cached: bool,
    pub attempts: u32,
    pub timings: &'r jetinfer_schemas::Timings,
    pub completed_at_ms: u64,
}

impl<'r> ResultJson<'r> {
    pub fn new(r: &'r JobResult<'_>) -> ResultJson<'r> {
        ResultJson {
            id: &r.id,
            status: r.status.as_str(),
            model: &r.model,
            version: &r.version,
            outputs: r.outputs.iter().map(TensorJson::new).collect(),
            error: r
                .error
                .as_ref()
                .map(|e| json!({ "code": e.code.as_str(), "message": e.message })),
            meta: &r.meta,
            worker: &r.worker,
            cached: r.cached,
            attempts: r.attempts,
            timings: &r.timings,
            completed_at_ms: r.completed_at_ms,
        }
    }

    /// Pretty-printed JSON, fields in wire order, lists of numbers on one line.
    pub fn to_pretty_string(&self) -> String {
        compact_scalar_lists(
            &serde_json::to_string_pretty(self)
                .expect("a result view always serialises: this is a bug"),
        )
    }
}

/// Puts every list of scalars of serde_json's pretty output on one line, so tensor data
/// and shapes read as `[1, 2, 3]` rather than one number per line.
///
/// Works on the text: in pretty output a line that ends with `[` opens a list (a string
/// ending in `[` would end with a quote), and each element sits on its own line.
pub fn compact_scalar_lists(pretty: &str) -> String {
    let lines: Vec<&str> = pretty.lines().collect();
    let mut out = String::with_capacity(pretty.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.ends_with('[') {
            // Find the closing line; collapse only if everything between is a scalar.
            let close = (i + 1..lines.len()).find(|&j| !is_scalar_line(lines[j]));
            if let Some(j) = close.filter(|&j| matches!(lines[j].trim(), "]" | "],")) {
                let items: Vec<&str> = lines[i + 1..j]
                    .iter()
                    .map(|l| l.trim().trim_end_matches(','))
                    .collect();
                out.push_str(line);
                out.push_str(&items.join(", "));
                out.push_str(lines[j].trim());
                out.push('\n');
                i = j + 1;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    if !pretty.ends_with('\n') {
        out.pop();
    }
    out
}

fn is_scalar_line(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty()
        || t.ends_with('[')
        || t.ends_with('{')
        || t.starts_with(']')
        || t.starts_with('}')
        || t.contains("\": "))
}

/// A result as a JSON value (see [`ResultJson`]).
pub fn result_to_json(r: &JobResult<'_>) -> Value {
    serde_json::to_value(ResultJson::new(r))
        .expect("a result view always serialises: this is a bug")
}

/// f32 to IEEE half, rounding to nearest even; overflow gives infinity.
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        // Infinity stays infinity; NaN stays a (quiet) NaN.
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let (h, rem, half) = if e <= 0 {
        // Subnormal half: value = m * 2^-24, with the implicit bit made explicit.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        (m >> shift, m & ((1 << shift) - 1), 1u32 << (shift - 1))
    } else {
        (((e as u32) << 10) | (man >> 13), man & 0x1fff, 0x1000)
    };
    // A carry out of the mantissa bumps the exponent, which is exactly right (up to inf).
    let h = if rem > half || (rem == half && h & 1 == 1) {
        h + 1
    } else {
        h
    };
    sign | h as u16
}

/// f32 to bfloat16, rounding to nearest even.
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::{ErrorCode, JobError};

    fn parse(text: &str) -> Result<Tensor<'static>, TensorJsonError> {
        tensor_from_json(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn parses_inputs_of_each_dtype() {
        let t =
            parse(r#"{"dtype": "f32", "shape": [2, 2], "data": [[1, 2.5], [-3, 0.1]]}"#).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        assert_eq!(t.to_f32_vec(), vec![1.0, 2.5, -3.0, 0.1]);
        let t = parse(r#"{"dtype": "u8", "shape": [3], "data": [0, 7, 255]}"#).unwrap();
        assert_eq!(t.data.to_vec(), vec![0, 7, 255]);
        let t = parse(r#"{"dtype": "i64", "shape": [1], "data": [-9007199254740993]}"#).unwrap();
        assert_eq!(
            t.data.to_vec(),
            (-9007199254740993i64).to_le_bytes().to_vec(),
            "i64 is exact"
        );
        let t = parse(r#"{"dtype": "bool", "shape": [3], "data": [true, 0, 1]}"#).unwrap();
        assert_eq!(t.data.to_vec(), vec![1, 0, 1]);
        let t = parse(r#"{"dtype": "f16", "shape": [2], "data": [1.0, -2.0]}"#).unwrap();
        assert_eq!(t.to_f32_vec(), vec![1.0, -2.0]);
        let t = parse(r#"{"dtype": "bf16", "shape": [1], "data": [1.5]}"#).unwrap();
        assert_eq!(t.to_f32_vec(), vec![1.5]);
        let t = parse(r#"{"dtype": "f32", "shape": [], "data": 4}"#).unwrap();
        assert_eq!((t.shape.len(), t.to_f32_vec()), (0, vec![4.0]));
    }

    #[test]
    fn refuses_malformed_inputs() {
        for (text, needle) in [
            (r#"[1, 2]"#, "object"),
            (
                r#"{"dtype": "f7", "shape": [1], "data": [1]}"#,
                "unknown dtype",
            ),
            (
                r#"{"dtype": "f32", "shape": [-1], "data": [1]}"#,
                "dimension",
            ),
            (
                r#"{"dtype": "f32", "shape": [3], "data": [1, 2]}"#,
                "needs 3 values",
            ),
            (
                r#"{"dtype": "u8", "shape": [1], "data": [256]}"#,
                "out of range",
            ),
            (
                r#"{"dtype": "i32", "shape": [1], "data": [1.5]}"#,
                "integer",
            ),
            (
                r#"{"dtype": "f32", "shape": [1], "data": ["1"]}"#,
                "expected numbers",
            ),
            (
                r#"{"dtype": "bool", "shape": [1], "data": [2]}"#,
                "true, false",
            ),
            (r#"{"dtype": "f32", "shape": [1]}"#, "missing"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn prints_tensors_exactly_and_readably() {
        let t = Tensor::from_f32(vec![3], &[0.1, f32::NAN, f32::NEG_INFINITY]);
        let v = tensor_to_json(&t);
        assert_eq!(v["data"].to_string(), r#"[0.1,"NaN","-inf"]"#);
        assert_eq!(
            (v["dtype"].as_str(), v["shape"].to_string().as_str()),
            (Some("f32"), "[3]")
        );
        let t = Tensor::owned(DType::I64, vec![1], i64::MIN.to_le_bytes().to_vec());
        assert_eq!(tensor_to_json(&t)["data"][0], json!(i64::MIN));
        let t = parse(r#"{"dtype": "i8", "shape": [2], "data": [-1, 5]}"#).unwrap();
        assert_eq!(
            tensor_from_json(&tensor_to_json(&t)).unwrap(),
            t,
            "round trip"
        );
    }

    #[test]
    fn result_json_has_every_field() {
        let mut r = JobResult::failed("j", "mlp", JobError::new(ErrorCode::Overloaded, "full"));
        r.meta.insert("k".into(), "v".into());
        let v = result_to_json(&r);
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], "overloaded");
        assert_eq!(v["meta"]["k"], "v");
        for key in [
            "id",
            "model",
            "version",
            "outputs",
            "worker",
            "cached",
            "attempts",
            "timings",
            "completed_at_ms",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(v["timings"]["batch_size"], 0);
        let text = ResultJson::new(&r).to_pretty_string();
        assert!(
            text.find("\"id\"").unwrap() < text.find("\"status\"").unwrap(),
            "wire order: {text}"
        );
    }

    #[test]
    fn pretty_output_keeps_lists_of_scalars_on_one_line() {
        let value = json!({"a": [1, 2.5, "x]", null], "b": [[1, 2], []], "c": [{"d": [true]}], "e": "tricky ["});
        let text = compact_scalar_lists(&serde_json::to_string_pretty(&value).unwrap());
        assert!(text.contains(r#""a": [1, 2.5, "x]", null],"#), "{text}");
        assert!(text.contains("[1, 2]"), "{text}");
        assert!(text.contains(r#""d": [true]"#), "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            value,
            "still the same JSON"
        );
        assert_eq!(compact_scalar_lists("[\n  1\n]"), "[1]");
    }

    #[test]
    fn half_precision_rounding() {
        let back =
            |h: u16| Tensor::owned(DType::F16, vec![1], h.to_le_bytes().to_vec()).to_f32_vec()[0];
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00, "rounds up to infinity");
        assert_eq!(f32_to_f16(5.960_464_5e-8), 0x0001, "smallest subnormal");
        assert_eq!(f32_to_f16(1e-9), 0x0000);
        assert_eq!(
            f32_to_f16(1.0 + 1.0 / 2048.0),
            0x3c00,
            "a tie rounds to even"
        );
        assert_eq!(
            f32_to_f16(1.0 + 3.0 / 2048.0),
            0x3c02,
            "a tie rounds to even (up)"
        );
        assert!(back(f32_to_f16(f32::NAN)).is_nan());
        for x in [0.1f32, 2.5e3, -1234.5, 6.1e-5, 1e-6, 0.333] {
            let y = back(f32_to_f16(x));
            assert!((x - y).abs() <= x.abs() * 1e-3 + 6e-8, "{x} -> {y}");
        }
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80, "tie to even");
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    }
}
