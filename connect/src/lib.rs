//! How every jetinfer process reaches its servers: the one home of connection settings.
//!
//! - [`NatsSettings`] (`nats.rs`): a NATS URL, credentials ([`NatsAuth`]: user/password,
//!   token, nkey seed, `.creds` file), TLS ([`NatsTls`]: CA, client certificate), and
//!   [`NatsSettings::connect`], which the client library, the dispatcher, the workers and the
//!   tools all use.
//! - [`ConnectArgs`] (`args.rs`, feature `cli`): the connection flags (`--nats-url`,
//!   `--nats-creds`, `--nats-tls-ca`, … `--redis-url`; env `NATS_URL`, `NATS_CREDS`, `NATS_CA`,
//!   … `REDIS_URL`) that every binary flattens into its command line.
//! - [`LimitsArgs`] (`limits_args.rs`, feature `cli`): the job limits (`--max-payload-bytes`,
//!   …) the dispatcher and the workers both apply, so they agree.
//! - `url.rs`: credentials inside URLs — [`redact_url`] for printing, and taken out of the
//!   URL for connecting.
//! - [`streams`]: the JetStream streams and consumers every process agrees on.
//!
//! Redis settings beyond the URL (key prefix, TTLs, pool size) belong to the Redis contract
//! and live in `jetinfer-store`'s `StoreConfig`.

#[cfg(feature = "cli")]
mod args;
#[cfg(feature = "cli")]
mod limits_args;
mod nats;
pub mod streams;
mod url;

#[cfg(feature = "cli")]
pub use args::ConnectArgs;
#[cfg(feature = "cli")]
pub use limits_args::LimitsArgs;
pub use nats::{ConnectError, NatsAuth, NatsSettings, NatsTls};
pub use url::{redact_url, MixedCredentials};

/// NATS URL used when none is given.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Redis URL used when none is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn credentials_in_the_url_and_in_flags_are_refused() {
        let settings = NatsSettings {
            auth: NatsAuth::Token("t".into()),
            ..NatsSettings::new("nats://u:p@127.0.0.1:1")
        };
        let err = settings.connect().await.unwrap_err();
        assert!(
            matches!(
                err,
                ConnectError::GivenTwice {
                    flag: "--nats-token"
                }
            ),
            "{err}"
        );
    }
}
