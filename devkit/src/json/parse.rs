//! Tensors from JSON: `{"dtype": "f32", "shape": [16], "data": [...]}` with `data` a flat
//! or nested list of numbers (booleans as `true`/`false` or `0`/`1`).

use jetinfer_schemas::{DType, Tensor};
use serde_json::Value;

use super::half::{f32_to_bf16, f32_to_f16};

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

/// Collects the numbers and booleans of nested lists in row-major order.
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

/// Why one data value does not fit the dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BadValue {
    #[error("expected an integer")]
    NotInteger,
    #[error("out of range")]
    OutOfRange,
    #[error("expected a number")]
    NotNumber,
    #[error("expected true, false, 0 or 1")]
    NotBool,
}

/// Appends `v` as one little-endian value of `dtype`.
fn encode_value(dtype: DType, v: &Value, out: &mut Vec<u8>) -> Result<(), BadValue> {
    fn int<T: TryFrom<i64>>(v: &Value) -> Result<T, BadValue> {
        let i = v.as_i64().ok_or(BadValue::NotInteger)?;
        T::try_from(i).map_err(|_| BadValue::OutOfRange)
    }
    let float = || v.as_f64().ok_or(BadValue::NotNumber);
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
                _ => return Err(BadValue::NotBool),
            },
        }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
