//! Input tensors for `submit`: files — a `.npy` (one sample, no batch dimension) or a
//! `.json` tensor `{"dtype": "f32", "shape": [16], "data": [...]}` — or standard input
//! (`--input -`, or no `--input` while stdin is piped): one `.npy`, one JSON tensor, or a
//! JSON list of tensors (one per model input, in order).

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use jetinfer_devkit::{json, npy};
use jetinfer_schemas::Tensor;

/// The `--input` value that means standard input.
pub const STDIN: &str = "-";

/// The first bytes of every `.npy` file.
const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Reads every input: the files in order, `-` for standard input (once), or standard
/// input alone when no file is given and it is not a terminal.
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Tensor<'static>>> {
    if paths.is_empty() {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            bail!("no input: give --input FILE (.npy or .json) or pipe one on stdin (--input -)");
        }
        return from_stdin();
    }
    if paths.iter().filter(|p| p.as_os_str() == STDIN).count() > 1 {
        bail!("standard input (--input -) can be read only once");
    }
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == STDIN {
            out.extend(from_stdin()?);
        } else {
            out.push(read_tensor(p)?);
        }
    }
    Ok(out)
}

fn from_stdin() -> anyhow::Result<Vec<Tensor<'static>>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    parse_bytes(&bytes).context("in standard input")
}

/// Tensors from bytes of unknown format: `.npy` by its magic, else JSON (one tensor or a
/// list of tensors).
pub fn parse_bytes(bytes: &[u8]) -> anyhow::Result<Vec<Tensor<'static>>> {
    if bytes.starts_with(NPY_MAGIC) {
        return Ok(vec![npy::parse(bytes)?]);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("it is empty: expected a .npy or a JSON tensor");
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).context("not a .npy and not JSON")?;
    match &value {
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_object()) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json::tensor_from_json(v).with_context(|| format!("input {i} of the list"))
            })
            .collect(),
        _ => Ok(vec![json::tensor_from_json(&value)?]),
    }
}

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
        _ => bail!(
            "{}: inputs must be .npy or .json files (or - for stdin)",
            path.display()
        ),
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

    #[test]
    fn bytes_of_either_format_and_lists_of_tensors() {
        let t = Tensor::from_f32(vec![2], &[1.5, -2.0]);
        assert_eq!(parse_bytes(&npy::to_bytes(&t).unwrap()).unwrap(), vec![t]);
        let two = parse_bytes(
            br#"[{"dtype": "u8", "shape": [1], "data": [7]}, {"dtype": "i64", "shape": [], "data": [3]}]"#,
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[0], Tensor::owned(DType::U8, vec![1], vec![7]));
        assert!(parse_bytes(b"  \n")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(parse_bytes(b"not json").is_err());
        let err = format!(
            "{:#}",
            parse_bytes(br#"[{"dtype": "u8", "shape": [2], "data": [1]}]"#).unwrap_err()
        );
        assert!(err.contains("input 0"), "{err}");
    }
}
