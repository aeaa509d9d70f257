//! The service name of this process: `OTEL_SERVICE_NAME` when set, else the default the
//! binary passes to [`crate::init`]. [`crate::init`] records it once, so everything that
//! names the service (the traces' `service.name`, the `jetinfer_build_info` gauge) agrees.

use std::sync::OnceLock;

static SERVICE: OnceLock<String> = OnceLock::new();

/// `OTEL_SERVICE_NAME` when set and not empty, else `default`.
pub fn resolve(default: &str) -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Records the service name for [`service_name`]; the first call wins.
pub(crate) fn remember(name: &str) {
    let _ = SERVICE.set(name.to_string());
}

/// The service name [`crate::init`] recorded, or, before it ran, the executable's name.
pub fn service_name() -> String {
    if let Some(name) = SERVICE.get() {
        return name.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_string())
}
