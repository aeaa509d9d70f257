//! Results as JSON for printing: every field in wire order, lists of numbers on one line.

use jetinfer_schemas::JobResult;
use serde_json::{json, Value};

use super::tensor::TensorJson;

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

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::{ErrorCode, JobError};

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
}
