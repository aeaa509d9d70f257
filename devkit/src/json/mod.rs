//! Tensors and results as JSON, for people and scripts: the CLI reads inputs written as
//! `{"dtype": "f32", "shape": [16], "data": [...]}` and prints results the same way.
//!
//! `data` is a flat list of numbers in row-major order (nested lists are flattened, so a
//! NumPy `tolist()` works too); booleans may be written `true`/`false` or `0`/`1`.
//!
//! - [`parse`]: tensors from JSON ([`tensor_from_json`]).
//! - [`tensor`]: tensors as JSON ([`TensorJson`], [`tensor_to_json`]).
//! - [`result`]: results as JSON ([`ResultJson`], [`result_to_json`]).

mod half;
mod parse;
mod result;
mod tensor;

pub use parse::{tensor_from_json, TensorJsonError};
pub use result::{compact_scalar_lists, result_to_json, ResultJson};
pub use tensor::{tensor_to_json, TensorJson};
