//! Tensors as JSON for printing: dtype, shape and data in that order, values exact.

use jetinfer_schemas::{DType, Tensor};
use serde_json::{json, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{tensor_from_json, TensorJsonError};

    fn parse(text: &str) -> Result<Tensor<'static>, TensorJsonError> {
        tensor_from_json(&serde_json::from_str(text).unwrap())
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
}
