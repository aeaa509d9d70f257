//! [`ClientBuilder`]: connection settings for a [`Client`] in one chain,
//! `Client::builder(nats_url).redis(url).name("producer").connect()`.

use std::time::Duration;

use jetinfer_connect::{NatsSettings, DEFAULT_REDIS_URL};
use jetinfer_schemas::inputs_ref::DEFAULT_INLINE_LIMIT;
use jetinfer_store::StoreConfig;

use crate::client::DEFAULT_INPUTS_TTL;
use crate::error::ClientError;
use crate::Client;

/// Settings for [`Client::builder`]. Defaults: Redis at `redis://127.0.0.1:6379`, an
/// unnamed NATS connection, a 5 s connection timeout, and retrying the first connection
/// until the server answers (as [`Client::connect`] does).
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nats: NatsSettings,
    store: StoreConfig,
    inline_limit: usize,
    inputs_ttl: Duration,
}

impl ClientBuilder {
    pub(crate) fn new(nats_url: impl Into<String>) -> Self {
        ClientBuilder {
            nats: NatsSettings::new(nats_url).retry_on_initial_connect(),
            store: StoreConfig::new(DEFAULT_REDIS_URL),
            inline_limit: DEFAULT_INLINE_LIMIT,
            inputs_ttl: DEFAULT_INPUTS_TTL,
        }
    }

    /// Jobs whose input data totals at least `bytes` send their inputs by reference (see
    /// [`Client::with_inline_limit`]); `usize::MAX` sends everything inline.
    pub fn inline_limit(mut self, bytes: usize) -> Self {
        self.inline_limit = bytes;
        self
    }

    /// See [`Client::with_inputs_ttl`].
    pub fn inputs_ttl(mut self, ttl: Duration) -> Self {
        self.inputs_ttl = ttl;
        self
    }

    /// The Redis URL (`redis://…`, `rediss://…`, `redis+unix://…`); the other store
    /// settings stay as they are.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.store.url = url.into();
        self
    }

    /// The whole store configuration (URL, key prefix, pool size).
    pub fn store(mut self, config: StoreConfig) -> Self {
        self.store = config;
        self
    }

    /// The connection name the NATS server shows.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.nats.name = Some(name.into());
        self
    }

    /// How long one NATS connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.nats.connect_timeout = timeout;
        self
    }

    /// Whether to keep retrying the first NATS connection until the server answers
    /// (default) or fail at once (command-line tools).
    pub fn retry_on_initial_connect(mut self, retry: bool) -> Self {
        self.nats.retry_on_initial_connect = retry;
        self
    }

    /// The NATS settings as built so far.
    pub fn nats_settings(&self) -> &NatsSettings {
        &self.nats
    }

    /// The store configuration as built so far.
    pub fn store_config(&self) -> &StoreConfig {
        &self.store
    }

    /// Connects to NATS and prepares the Redis pool.
    pub async fn connect(self) -> Result<Client, ClientError> {
        Ok(Client::connect_with(&self.nats, &self.store)
            .await?
            .with_inline_limit(self.inline_limit)
            .with_inputs_ttl(self.inputs_ttl))
    }
}

impl Client {
    /// Starts a [`ClientBuilder`] for the NATS server at `nats_url`.
    pub fn builder(nats_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(nats_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_collects_settings() {
        let b = Client::builder("nats://example:4222")
            .redis("redis://example:6380")
            .name("producer")
            .connect_timeout(Duration::from_secs(1))
            .retry_on_initial_connect(false);
        assert_eq!(b.nats_settings().url, "nats://example:4222");
        assert_eq!(b.nats_settings().name.as_deref(), Some("producer"));
        assert_eq!(b.nats_settings().connect_timeout, Duration::from_secs(1));
        assert!(!b.nats_settings().retry_on_initial_connect);
        assert_eq!(b.store_config().url, "redis://example:6380");
        let defaults = Client::builder("nats://x");
        assert!(defaults.nats_settings().retry_on_initial_connect);
        assert_eq!(defaults.store_config().url, DEFAULT_REDIS_URL);
    }
}
