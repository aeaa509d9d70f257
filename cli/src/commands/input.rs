//! Input files for `submit`: a `.npy` (one sample, no batch dimension) or a `.json`
//! tensor `{"dtype": "f32", "shape": [16], "data": [...]}`.

use std::path::Path;

use anyhow::{bail, Context};
use jetinfer_devkit::{json, npy};
use jetinfer_schemas::Tensor;

/// Reads one input tensor; the extension decides the format.
pub fn read_tensor(path: &Path) -> anyhow::Result<Tensor<'static>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => Ok(npy::read(path)?),
        Some("json") => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            json::tensor_from_json(&value).with_context(|| format!("in {}", path.display()))
        }
        _ => bail!("{}: inputs must be .npy or .json files", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::DType;

    #[test]
    fn reads_both_formats_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::from_f32(vec![2], &[1.5, -2.0]);
        npy::write(dir.path().join("a.npy"), &t).unwrap();
        assert_eq!(read_tensor(&dir.path().join("a.npy")).unwrap(), t);
        std::fs::write(
            dir.path().join("b.JSON"),
            r#"{"dtype": "u8", "shape": [3], "data": [1, 2, 3]}"#,
        )
        .unwrap();
        assert_eq!(
            read_tensor(&dir.path().join("b.JSON")).unwrap(),
            Tensor::owned(DType::U8, vec![3], vec![1, 2, 3])
        );
        std::fs::write(
            dir.path().join("c.json"),
            r#"{"dtype": "u8", "shape": [3], "data": [1, 2]}"#,
        )
        .unwrap();
        let err = format!("{:#}", read_tensor(&dir.path().join("c.json")).unwrap_err());
        assert!(
            err.contains("c.json") && err.contains("needs 3 values"),
            "{err}"
        );
        assert!(read_tensor(&dir.path().join("d.txt")).is_err());
        assert!(read_tensor(&dir.path().join("missing.npy")).is_err());
    }
}
