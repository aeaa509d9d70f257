//! [`ClientBuilder`]: connection settings for a [`Client`] in one chain,
//! `Client::builder(nats_url).redis(url).name("producer").connect()` — every NATS setting
//! of [`NatsSettings`] (credentials, TLS, name, timeouts), the store's (URL, key prefix,
//! pool, or a whole [`StoreConfig`]), and the client's own (inputs by reference, retry
//! when a stream is full).

use std::path::PathBuf;
use std::time::Duration;

use jetinfer_connect::{NatsAuth, NatsSettings, NatsTls, DEFAULT_REDIS_URL};
use jetinfer_schemas::inputs_ref::DEFAULT_INLINE_LIMIT;
use jetinfer_schemas::Keys;
use jetinfer_store::{InputStores, StoreConfig};

use crate::client::DEFAULT_INPUTS_TTL;
use crate::error::ClientError;
use crate::retry::RetryPolicy;
use crate::Client;

/// Settings for [`Client::builder`]. Defaults: Redis at `redis://127.0.0.1:6379`, an
/// unnamed NATS connection without credentials beyond the URL's, a 5 s connection
/// timeout, retrying the first connection until the server answers (as
/// [`Client::connect`] does), and no retry of publishes a full stream refuses.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    nats: NatsSettings,
    store: StoreConfig,
    inline_limit: usize,
    inputs_ttl: Duration,
    retry_full: Option<RetryPolicy>,
    /// Extra Redis servers for inputs sent by reference (input stores 1…).
    inputs_redis_urls: Vec<String>,
    /// Partition streams per priority, when not read from JetStream.
    partitions: Option<u16>,
}

impl ClientBuilder {
    pub(crate) fn new(nats_url: impl Into<String>) -> Self {
        ClientBuilder {
            nats: NatsSettings::new(nats_url).retry_on_initial_connect(),
            store: StoreConfig::new(DEFAULT_REDIS_URL),
            inline_limit: DEFAULT_INLINE_LIMIT,
            inputs_ttl: DEFAULT_INPUTS_TTL,
            retry_full: None,
            inputs_redis_urls: Vec::new(),
            partitions: None,
        }
    }

    /// All NATS settings at once (e.g. `ConnectArgs::nats()` of a command line); replaces
    /// the URL and everything set so far.
    pub fn nats(mut self, settings: NatsSettings) -> Self {
        self.nats = settings;
        self
    }

    /// NATS user and password (not together with credentials in the URL).
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.nats.auth = NatsAuth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// A NATS authentication token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.nats.auth = NatsAuth::Token(token.into());
        self
    }

    /// A file holding an nkey seed (`SU…`).
    pub fn nkey_seed_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats.auth = NatsAuth::NkeySeedFile(path.into());
        self
    }

    /// A `.creds` file (user JWT and nkey seed).
    pub fn creds_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats.auth = NatsAuth::CredsFile(path.into());
        self
    }

    /// A CA certificate (PEM) to trust for the NATS server's certificate; requires TLS.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats.tls.ca = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM) for mutual TLS with NATS.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.nats.tls = NatsTls {
            cert: Some(cert.into()),
            key: Some(key.into()),
            ..self.nats.tls
        };
        self
    }

    /// Prefix of the Redis keys (default `jetinfer`); must match the servers'.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.store.keys = Keys::new(prefix);
        self
    }

    /// TLS towards Redis (a `rediss://` URL): a CA to trust and a client certificate.
    pub fn redis_tls(mut self, tls: jetinfer_store::RedisTls) -> Self {
        self.store.tls = tls;
        self
    }

    /// Connections in the Redis pool.
    pub fn redis_pool_size(mut self, size: usize) -> Self {
        self.store.pool_size = size;
        self
    }

    /// Retry publishes that a full stream refuses with this back-off instead of failing
    /// with [`ClientError::StreamFull`] at once (off by default; `RetryPolicy::default()`
    /// is 50 ms doubling to 2 s, for up to 30 s).
    pub fn retry_when_full(mut self, policy: RetryPolicy) -> Self {
        self.retry_full = Some(policy);
        self
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

    /// Replies to this client (publish acks) arrive under `prefix` instead of `_INBOX`, for
    /// servers that let each role receive only its own replies (`_INBOX_<role>.>`).
    pub fn inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.nats.inbox_prefix = Some(prefix.into());
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

    /// More Redis servers for inputs sent by reference, after the result store (see
    /// `jetinfer_store::InputStores`); workers must list the same URLs in the same order
    /// (`--inputs-redis-url`). They use the result store's TLS files and key prefix.
    pub fn inputs_redis_urls(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.inputs_redis_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// See [`Client::with_partitions`] (by default the count is read from JetStream).
    pub fn partitions(mut self, n: u16) -> Self {
        self.partitions = Some(n);
        self
    }

    /// The store configuration as built so far.
    pub fn store_config(&self) -> &StoreConfig {
        &self.store
    }

    /// Connects to NATS and prepares the Redis pool.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let client = Client::connect_with(&self.nats, &self.store).await?;
        let inputs =
            InputStores::new(client.store().clone(), &self.store, &self.inputs_redis_urls)?;
        let client = client
            .with_input_stores(inputs)
            .with_inline_limit(self.inline_limit)
            .with_inputs_ttl(self.inputs_ttl)
            .with_retry_when_full(self.retry_full);
        Ok(match self.partitions {
            Some(n) => client.with_partitions(n),
            None => client,
        })
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
        assert_eq!(defaults.nats_settings().auth, NatsAuth::None);
        assert_eq!(defaults.retry_full, None);
    }

    #[test]
    fn the_builder_takes_every_nats_credential_and_tls_setting() {
        let b = Client::builder("tls://example:4222")
            .user_password("svc", "pw")
            .tls_ca("/ca.pem")
            .tls_client_cert("/c.pem", "/k.pem")
            .key_prefix("tenant")
            .redis_pool_size(3)
            .redis_tls(jetinfer_store::RedisTls {
                ca: Some("/rca.pem".into()),
                ..Default::default()
            })
            .retry_when_full(RetryPolicy::default());
        let n = b.nats_settings();
        assert_eq!(
            n.auth,
            NatsAuth::UserPassword {
                user: "svc".into(),
                password: "pw".into()
            }
        );
        assert_eq!(n.tls.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(n.tls.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(n.tls.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(b.store_config().keys.result("j"), "tenant:result:j");
        assert_eq!(b.store_config().pool_size, 3);
        assert_eq!(
            b.store_config().tls.ca.as_deref(),
            Some(std::path::Path::new("/rca.pem"))
        );
        assert_eq!(b.retry_full, Some(RetryPolicy::default()));
        let token = Client::builder("nats://x").token("t");
        assert_eq!(token.nats_settings().auth, NatsAuth::Token("t".into()));
        let nkey = Client::builder("nats://x").nkey_seed_file("/s.nk");
        assert_eq!(
            nkey.nats_settings().auth,
            NatsAuth::NkeySeedFile("/s.nk".into())
        );
        let creds = Client::builder("nats://x").creds_file("/u.creds");
        assert_eq!(
            creds.nats_settings().auth,
            NatsAuth::CredsFile("/u.creds".into())
        );
        let whole = Client::builder("nats://x").nats(NatsSettings::new("nats://y:1").name("n"));
        assert_eq!(whole.nats_settings().url, "nats://y:1");
    }
}
