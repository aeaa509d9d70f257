//! The devkit's JSON tensor parser (`devkit/src/json/parse.rs`, with the half-precision
//! conversions it uses), which the CLI's `submit --input x.json` runs on the file's bytes.

#[path = "../../devkit/src/json/half.rs"]
mod half;

#[path = "../../devkit/src/json/parse.rs"]
mod parse;

pub use parse::{tensor_from_json, TensorJsonError};
