//! How every jetinfer process reaches its servers: the one home of connection settings.
//!
//! - [`NatsSettings`]: a NATS URL and connection options, and [`NatsSettings::connect`],
//!   which the client library, the dispatcher, the workers and the tools all use.
//! - [`ConnectArgs`] (feature `cli`): the `--nats-url` / `--redis-url` flags (env `NATS_URL`,
//!   `REDIS_URL`) that every binary flattens into its command line.
//! - [`redact_url`]: a URL with its credentials hidden, for logs and `--check-config`.
//! - [`streams`]: the JetStream streams and consumers every process agrees on.
//!
//! Redis settings beyond the URL (key prefix, TTLs, pool size) belong to the Redis contract
//! and live in `jetinfer-store`'s `StoreConfig`.

pub mod streams;

use std::time::Duration;

/// NATS URL used when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Redis URL used when none is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// NATS could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {source}")]
pub struct ConnectError {
    /// The URL, credentials redacted.
    pub url: String,
    #[source]
    pub source: async_nats::ConnectError,
}

/// Where and how to connect to NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
    /// The connection name the server shows (`nats server report connections`).
    pub name: Option<String>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Keep trying while the server is not up yet (a service starting beside its server);
    /// off for command-line tools, which should fail fast.
    pub retry_on_initial_connect: bool,
}

impl NatsSettings {
    /// Settings for `url` with a 5 s connection timeout and no retry of the first connect.
    pub fn new(url: impl Into<String>) -> Self {
        NatsSettings {
            url: url.into(),
            name: None,
            connect_timeout: Duration::from_secs(5),
            retry_on_initial_connect: false,
        }
    }

    /// Names the connection.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Keeps retrying the first connection until the server answers.
    pub fn retry_on_initial_connect(mut self) -> Self {
        self.retry_on_initial_connect = true;
        self
    }

    /// Opens the connection.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        let mut options =
            async_nats::ConnectOptions::new().connection_timeout(self.connect_timeout);
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        if self.retry_on_initial_connect {
            options = options.retry_on_initial_connect();
        }
        options
            .connect(&self.url)
            .await
            .map_err(|source| ConnectError {
                url: redact_url(&self.url),
                source,
            })
    }
}

/// The connection flags every binary takes.
#[cfg(feature = "cli")]
///
/// Its `Debug` form hides credentials, so a configuration that contains it prints safely
/// with `{:?}` (logs, `--check-config`).
#[derive(clap::Args, Clone, Default, PartialEq, Eq)]
pub struct ConnectArgs {
    /// NATS server URL [default: nats://127.0.0.1:4222].
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Redis URL (`redis://`, `redis+unix://`) [default: redis://127.0.0.1:6379].
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
}

#[cfg(feature = "cli")]
impl ConnectArgs {
    /// The NATS URL given, or the default.
    pub fn nats_url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }

    /// The Redis URL given, or the default.
    pub fn redis_url(&self) -> &str {
        self.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// NATS settings for the given (or default) URL.
    pub fn nats(&self) -> NatsSettings {
        NatsSettings::new(self.nats_url())
    }
}

#[cfg(feature = "cli")]
impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("nats_url", &redact_url(self.nats_url()))
            .field("redis_url", &redact_url(self.redis_url()))
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://***@host`, for logging configurations.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("redis://u:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }

    #[cfg(feature = "cli")]
    #[test]
    fn connection_flags_print_without_secrets() {
        let args = ConnectArgs {
            nats_url: Some("nats://u:pw@h:4222".into()),
            redis_url: None,
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("redis://127.0.0.1:6379"), "{shown}");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url_without_its_secret() {
        // Port 1 on loopback refuses at once; the error must not leak the password.
        let err = NatsSettings::new("nats://u:secret@127.0.0.1:1")
            .connect()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
