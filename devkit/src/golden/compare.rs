//! Checking outputs against golden ones, within tolerances.

use jetinfer_schemas::Tensor;

/// Why outputs do not match the expected ones.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("expected {expected} outputs, got {got}")]
    Count { expected: usize, got: usize },
    #[error("output {output}: shape {got:?}, expected {expected:?}")]
    Shape {
        output: usize,
        got: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error(
        "output {output}: {got} values, expected {expected} (data length does not match the shape)"
    )]
    Length {
        output: usize,
        got: usize,
        expected: usize,
    },
    #[error("output {output}: {wrong} of {count} values differ (first at {first}: got {got}, expected {expected}; max |diff| {max_diff}; atol {atol}, rtol {rtol})")]
    Values {
        output: usize,
        wrong: usize,
        count: usize,
        first: usize,
        got: f32,
        expected: f32,
        max_diff: f32,
        atol: f32,
        rtol: f32,
    },
}

/// Checks outputs against expected ones: same count, same shapes, and every value within
/// `atol + rtol * |expected|` (NaN matches only NaN, infinities only themselves).
/// Dtypes may differ (an f16 model returns f16); values are compared as f32.
pub fn compare(
    expected: &[Tensor<'_>],
    got: &[Tensor<'_>],
    atol: f32,
    rtol: f32,
) -> Result<(), Mismatch> {
    if expected.len() != got.len() {
        return Err(Mismatch::Count {
            expected: expected.len(),
            got: got.len(),
        });
    }
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if e.shape != g.shape {
            return Err(Mismatch::Shape {
                output: i,
                got: g.shape.clone(),
                expected: e.shape.clone(),
            });
        }
        let (ev, gv) = (e.to_f32_vec(), g.to_f32_vec());
        if ev.len() != gv.len() {
            return Err(Mismatch::Length {
                output: i,
                got: gv.len(),
                expected: ev.len(),
            });
        }
        let mut wrong = 0usize;
        let mut first = None;
        let mut max_diff = 0f32;
        for (k, (&a, &b)) in ev.iter().zip(&gv).enumerate() {
            let close = if a.is_nan() || b.is_nan() {
                a.is_nan() && b.is_nan()
            } else if a.is_infinite() || b.is_infinite() {
                a == b
            } else {
                let diff = (a - b).abs();
                max_diff = max_diff.max(diff);
                diff <= atol + rtol * a.abs()
            };
            if !close {
                wrong += 1;
                first.get_or_insert(k);
            }
        }
        if let Some(k) = first {
            return Err(Mismatch::Values {
                output: i,
                wrong,
                count: ev.len(),
                first: k,
                got: gv[k],
                expected: ev[k],
                max_diff,
                atol,
                rtol,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::DType;

    fn f32s(shape: Vec<i64>, v: &[f32]) -> Tensor<'static> {
        Tensor::from_f32(shape, v)
    }

    #[test]
    fn compare_uses_absolute_and_relative_tolerance() {
        let e = [f32s(vec![3], &[0.0, 100.0, -1.0])];
        assert!(compare(&e, &e, 0.0, 0.0).is_ok());
        // 0.0 vs 5e-5: within atol 1e-4; 100 vs 100.09: within rtol 1e-3 (0.1 + 1e-4).
        assert!(compare(&e, &[f32s(vec![3], &[5e-5, 100.09, -1.0])], 1e-4, 1e-3).is_ok());
        let err = compare(&e, &[f32s(vec![3], &[5e-5, 100.2, -1.01])], 1e-4, 1e-3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 of 3 values differ (first at 1"), "{err}");
        // rtol scales with the expected value, not the received one.
        assert!(compare(&[f32s(vec![1], &[1.0])], &[f32s(vec![1], &[1.5])], 0.0, 0.4).is_err());
    }

    #[test]
    fn compare_checks_count_shape_and_special_values() {
        let e = [f32s(vec![2], &[1.0, 2.0])];
        assert!(compare(&e, &[], 1.0, 1.0)
            .unwrap_err()
            .to_string()
            .contains("expected 1 outputs, got 0"));
        assert!(compare(&e, &[f32s(vec![2, 1], &[1.0, 2.0])], 1.0, 1.0)
            .unwrap_err()
            .to_string()
            .contains("shape"));
        let nan = [f32s(vec![2], &[f32::NAN, f32::INFINITY])];
        assert!(compare(&nan, &nan, 0.0, 0.0).is_ok());
        assert!(compare(&nan, &[f32s(vec![2], &[0.0, f32::INFINITY])], 1e9, 1e9).is_err());
        assert!(compare(&nan, &[f32s(vec![2], &[f32::NAN, f32::MAX])], 1e9, 1e9).is_err());
        // An f16 result is compared by value: 0x3c00 is 1.0.
        let half = [Tensor::owned(DType::F16, vec![1], vec![0x00, 0x3c])];
        assert!(compare(&[f32s(vec![1], &[1.0])], &half, 0.0, 0.0).is_ok());
    }
}
