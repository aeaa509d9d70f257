//! f32 to the half-precision formats (IEEE f16 and bfloat16), rounding to nearest even.

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
    use jetinfer_schemas::{DType, Tensor};

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
