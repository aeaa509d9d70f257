//! [`ConnectArgs`]: the connection flags every binary flattens into its command line, named
//! like the NATS and Redis tools' own (`NATS_URL`, `NATS_CREDS`, `NATS_CA`, …; for Redis,
//! `REDIS_URL` and the TLS files `REDIS_CA`, `REDIS_CERT`, `REDIS_KEY`, after the `--cacert`,
//! `--cert`, `--key` options of `redis-cli`).

use std::path::PathBuf;

use crate::nats::{NatsAuth, NatsSettings, NatsTls};
use crate::url::redact_url;
use crate::{DEFAULT_NATS_URL, DEFAULT_REDIS_URL};

/// The connection flags every binary takes.
///
/// Its `Debug` form hides credentials, so a configuration that contains it prints safely
/// with `{:?}` (logs, `--check-config`).
#[derive(clap::Args, Clone, Default, PartialEq, Eq)]
pub struct ConnectArgs {
    /// NATS server URL, or a comma-separated list [default: nats://127.0.0.1:4222].
    /// `user:password@` or `token@` in it are used as credentials.
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// NATS user name (with --nats-password).
    #[arg(long, env = "NATS_USER", global = true, requires = "nats_password",
          conflicts_with_all = ["nats_token", "nats_nkey", "nats_creds"])]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(long, env = "NATS_PASSWORD", global = true, requires = "nats_user")]
    pub nats_password: Option<String>,
    /// NATS authentication token.
    #[arg(long, env = "NATS_TOKEN", global = true, conflicts_with_all = ["nats_nkey", "nats_creds"])]
    pub nats_token: Option<String>,
    /// File holding an nkey seed (`SU…`) to sign the server's challenge with.
    #[arg(long, env = "NATS_NKEY", global = true, conflicts_with = "nats_creds")]
    pub nats_nkey: Option<PathBuf>,
    /// A `.creds` file (user JWT and nkey seed) for decentralised NATS auth.
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to trust for the NATS server's TLS certificate; requires TLS.
    #[arg(long, env = "NATS_CA", global = true)]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with NATS (with --nats-tls-key).
    #[arg(long, env = "NATS_CERT", global = true, requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "NATS_KEY", global = true, requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Prefix of this process's NATS reply subjects instead of `_INBOX`, for servers that let
    /// each role receive only its own replies (`_INBOX_<role>.>`; see deploy/README.md).
    #[arg(long, env = "NATS_INBOX_PREFIX", global = true)]
    pub nats_inbox_prefix: Option<String>,
    /// Redis URL (`redis://`, `rediss://` for TLS, `redis+unix://`, or
    /// `redis+sentinel://host1:26379,host2:26379/<master-name>` for the primary that Sentinel
    /// names) [default: redis://127.0.0.1:6379]. `user:password@` in it log in as an ACL user.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// CA certificate (PEM) to trust for the Redis server's TLS certificate, instead of the
    /// system's; needs a `rediss://` URL.
    #[arg(long, env = "REDIS_CA", global = true)]
    pub redis_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for Redis servers that require one (with --redis-tls-key).
    #[arg(long, env = "REDIS_CERT", global = true, requires = "redis_tls_key")]
    pub redis_tls_cert: Option<PathBuf>,
    /// The Redis client certificate's private key (PEM).
    #[arg(long, env = "REDIS_KEY", global = true, requires = "redis_tls_cert")]
    pub redis_tls_key: Option<PathBuf>,
    /// More Redis servers for inputs sent by reference (the claim check), after the result
    /// store, which is input store 0; repeat the flag or separate URLs with commas. Producers
    /// and workers must list the same URLs in the same order (a job's reference names its
    /// store by position); the dispatcher never reads inputs and ignores this. Same TLS files
    /// as `--redis-url`.
    #[arg(
        long = "inputs-redis-url",
        env = "JETINFER_INPUTS_REDIS_URLS",
        global = true,
        value_delimiter = ','
    )]
    pub inputs_redis_urls: Vec<String>,
    /// Results count as stored only once this many Redis replicas hold them (`WAIT`), so a
    /// failover to a replica cannot lose an acknowledged result; fewer in time and the jobs
    /// run again. 0 (the default): as soon as the primary has them.
    #[arg(
        long,
        env = "JETINFER_REDIS_WAIT_REPLICAS",
        global = true,
        default_value_t = 0
    )]
    pub redis_wait_replicas: u32,
    /// How long a results write waits for --redis-wait-replicas [default: 1000].
    #[arg(long, env = "JETINFER_REDIS_WAIT_TIMEOUT_MS", global = true)]
    pub redis_wait_timeout_ms: Option<u64>,
}

impl ConnectArgs {
    /// The NATS URL given, or the default.
    pub fn nats_url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(DEFAULT_NATS_URL)
    }

    /// The Redis URL given, or the default.
    pub fn redis_url(&self) -> &str {
        self.redis_url.as_deref().unwrap_or(DEFAULT_REDIS_URL)
    }

    /// How long a results write waits for `--redis-wait-replicas`.
    pub fn redis_wait_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.redis_wait_timeout_ms.unwrap_or(1000))
    }

    /// NATS settings for the given (or default) URL, credentials and TLS files.
    pub fn nats(&self) -> NatsSettings {
        NatsSettings {
            auth: self.nats_auth(),
            tls: NatsTls {
                ca: self.nats_tls_ca.clone(),
                cert: self.nats_tls_cert.clone(),
                key: self.nats_tls_key.clone(),
            },
            inbox_prefix: self.nats_inbox_prefix.clone(),
            ..NatsSettings::new(self.nats_url())
        }
    }

    /// The credentials given by flags (clap lets at most one kind through).
    fn nats_auth(&self) -> NatsAuth {
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            }
        } else if let Some(token) = &self.nats_token {
            NatsAuth::Token(token.clone())
        } else if let Some(path) = &self.nats_nkey {
            NatsAuth::NkeySeedFile(path.clone())
        } else if let Some(path) = &self.nats_creds {
            NatsAuth::CredsFile(path.clone())
        } else {
            NatsAuth::None
        }
    }
}

impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("nats_url", &redact_url(self.nats_url()))
            .field("nats_auth", &self.nats_auth())
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("nats_inbox_prefix", &self.nats_inbox_prefix)
            .field("redis_url", &redact_url(self.redis_url()))
            .field("redis_tls_ca", &self.redis_tls_ca)
            .field("redis_tls_cert", &self.redis_tls_cert)
            .field("redis_tls_key", &self.redis_tls_key)
            .field(
                "inputs_redis_urls",
                &self
                    .inputs_redis_urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("redis_wait_replicas", &self.redis_wait_replicas)
            .field("redis_wait_timeout_ms", &self.redis_wait_timeout_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    #[test]
    fn connection_flags_print_without_secrets() {
        let cli = Cli::try_parse_from([
            "x",
            "--nats-url",
            "nats://u:pw@h:4222",
            "--redis-url",
            "redis://ru:rpw@h:6379",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.connect);
        assert!(!shown.contains("pw"), "{shown}");
        let cli =
            Cli::try_parse_from(["x", "--nats-user", "svc", "--nats-password", "hunter2"]).unwrap();
        let shown = format!("{:?}", cli.connect);
        assert!(
            shown.contains("svc") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("redis://127.0.0.1:6379"), "{shown}");
    }

    #[test]
    fn redis_wait_replicas_is_off_unless_asked_for() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.connect.redis_wait_replicas, 0);
        assert_eq!(cli.connect.redis_wait_timeout().as_millis(), 1000);
        let cli = Cli::try_parse_from([
            "x",
            "--redis-wait-replicas",
            "1",
            "--redis-wait-timeout-ms",
            "250",
        ])
        .unwrap();
        assert_eq!(cli.connect.redis_wait_replicas, 1);
        assert_eq!(cli.connect.redis_wait_timeout().as_millis(), 250);
    }

    #[test]
    fn redis_tls_files_print_and_come_in_pairs() {
        let cli = Cli::try_parse_from([
            "x",
            "--redis-url",
            "rediss://svc:rpw@h:6380",
            "--redis-tls-ca",
            "/etc/ca.pem",
            "--redis-tls-cert",
            "/etc/c.pem",
            "--redis-tls-key",
            "/etc/c.key",
        ])
        .unwrap();
        assert_eq!(cli.connect.redis_tls_ca, Some("/etc/ca.pem".into()));
        let shown = format!("{:?}", cli.connect);
        for path in ["/etc/ca.pem", "/etc/c.pem", "/etc/c.key", "rediss://"] {
            assert!(shown.contains(path), "{path} missing: {shown}");
        }
        assert!(!shown.contains("rpw"), "{shown}");
        assert!(
            Cli::try_parse_from(["x", "--redis-tls-cert", "c"]).is_err(),
            "cert needs a key"
        );
        assert!(
            Cli::try_parse_from(["x", "--redis-tls-key", "k"]).is_err(),
            "key needs a cert"
        );
    }

    #[test]
    fn one_kind_of_credential_at_a_time() {
        assert!(Cli::try_parse_from(["x", "--nats-token", "t", "--nats-creds", "c"]).is_err());
        assert!(
            Cli::try_parse_from(["x", "--nats-user", "u"]).is_err(),
            "user needs a password"
        );
        assert!(
            Cli::try_parse_from(["x", "--nats-tls-cert", "c"]).is_err(),
            "cert needs a key"
        );
        let cli = Cli::try_parse_from(["x", "--nats-creds", "/a.creds"]).unwrap();
        assert_eq!(
            cli.connect.nats().auth,
            NatsAuth::CredsFile("/a.creds".into())
        );
    }
}
