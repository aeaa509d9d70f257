//! Waiting on what a process writes to its log file: the harness's processes log to
//! files, and a test often needs a line that appears some time after the start.

use std::path::Path;
use std::time::{Duration, Instant};

/// The first line of the file at `log` that `matches` picks (re-read every 100 ms);
/// panics with the log's text when none has come within `limit`.
pub async fn wait_for_line<T>(
    log: &Path,
    limit: Duration,
    what: &str,
    mut matches: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(found) = text.lines().find_map(&mut matches) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in {} after {limit:?}:\n{text}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
