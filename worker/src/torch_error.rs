//! libtorch errors as job errors: the line worth showing, the error code, and whether the
//! CUDA context survived.

use jetinfer_schemas::{ErrorCode, JobError};

/// libtorch errors carry a whole C++ backtrace: keep the telling line; out-of-memory gets
/// its own code.
pub(crate) fn torch_error(e: tch::TchError) -> JobError {
    let text = e.to_string();
    let code = if text.contains("out of memory") {
        ErrorCode::ResourceExhausted
    } else {
        ErrorCode::Internal
    };
    JobError::new(code, telling_line(&text))
}

/// The line of a libtorch error worth showing. A TorchScript failure starts with "The
/// following operation failed in the TorchScript interpreter" and names the real cause
/// (e.g. "CUDA out of memory. Tried to allocate …") further down, after the traceback.
pub(crate) fn telling_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| l.contains("out of memory"))
        .or_else(|| lines.iter().rev().find(|l| l.starts_with("RuntimeError:")))
        .or_else(|| lines.first());
    pick.map_or_else(
        || "libtorch error".to_string(),
        |l| l.trim_start_matches("RuntimeError: ").to_string(),
    )
}

/// Errors after which the CUDA context is unusable (they are "sticky": every later call
/// fails too), so the worker must stop and be restarted.
pub(crate) fn is_sticky(e: &JobError) -> bool {
    const STICKY: [&str; 5] = [
        "illegal memory access",
        "device-side assert",
        "unspecified launch failure",
        "misaligned address",
        "illegal instruction",
    ];
    STICKY.iter().any(|m| e.message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_cause_out_of_a_torchscript_traceback() {
        let text = "Internal torch error: The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n  File \"x.py\", line 5\nRuntimeError: CUDA out of memory. Tried to allocate 84.00 GiB. GPU 0 has a total capacity of 79.19 GiB\n";
        assert_eq!(telling_line(text), "CUDA out of memory. Tried to allocate 84.00 GiB. GPU 0 has a total capacity of 79.19 GiB");
        let other =
            "Internal torch error: The following operation failed.\nRuntimeError: shape mismatch\n";
        assert_eq!(telling_line(other), "shape mismatch");
        assert_eq!(telling_line("just one line"), "just one line");
        assert_eq!(telling_line(""), "libtorch error");
    }

    #[test]
    fn out_of_memory_has_its_own_code_and_illegal_access_is_sticky() {
        let oom = torch_error(tch::TchError::Torch("CUDA out of memory. Tried".into()));
        assert_eq!(oom.code, ErrorCode::ResourceExhausted);
        assert!(!is_sticky(&oom));
        let bad = torch_error(tch::TchError::Torch(
            "CUDA error: an illegal memory access was encountered".into(),
        ));
        assert_eq!(bad.code, ErrorCode::Internal);
        assert!(is_sticky(&bad));
    }
}
