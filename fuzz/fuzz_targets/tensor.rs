//! One tensor: decoding, the structural checks, conversion to f32 and the digest.

#![no_main]

use jetinfer_schemas::tensor::inputs_digest;
use jetinfer_schemas::{encode, ErrorCode, Limits, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = rmp_serde::from_slice::<Tensor<'_>>(data) else {
        return;
    };
    let again = encode(&t);
    let back: Tensor<'_> = rmp_serde::from_slice(&again).expect("an encoded tensor decodes");
    assert_eq!(back, t);
    let _ = inputs_digest(std::slice::from_ref(&t));
    match t.validate(&Limits::default()) {
        Ok(()) => {
            let count = t
                .element_count()
                .expect("a valid tensor has an element count");
            assert_eq!(t.to_f32_vec().len() as u64, count);
        }
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidInput, "{e}"),
    }
});
