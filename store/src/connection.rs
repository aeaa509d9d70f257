//! How the store reaches Redis: the connection pool for a URL (`redis://`, `rediss://`,
//! `redis+unix://`, or `redis+sentinel://` for a primary found through Sentinel, see
//! `sentinel.rs`) with, for `rediss://`, a custom CA and a client certificate
//! ([`RedisTls`]), and [`check`]: one connection at startup, so that a configuration Redis
//! will never accept (untrusted certificate, missing client certificate, wrong password,
//! plain `redis://` to a TLS port) is refused with a message naming what failed instead of
//! failing every later request.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deadpool::managed::{Object, Pool};
use deadpool_redis::redis::aio::ConnectionLike;
use deadpool_redis::redis::{self, ErrorKind, RedisError};
use deadpool_redis::{Manager, PoolConfig, Runtime};

use crate::checked::{Checked, CheckedConnection};
use crate::sentinel::{is_sentinel_url, SentinelManager, SentinelUrl};
use crate::StoreError;

/// The store's connection pool: straight to one server, or to the primary Sentinel names.
#[derive(Clone)]
pub(crate) enum RedisPool {
    Direct(Pool<Checked<Manager>>),
    Sentinel(Pool<Checked<SentinelManager>>),
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisPool::Direct(_) => "RedisPool::Direct",
            RedisPool::Sentinel(_) => "RedisPool::Sentinel",
        })
    }
}

/// A connection taken from a [`RedisPool`]; goes back to the pool when dropped.
pub(crate) enum PooledConnection {
    Direct(Object<Checked<Manager>>),
    Sentinel(Object<Checked<SentinelManager>>),
}

impl RedisPool {
    /// A connection: an idle one that was in use moments ago with no command failed, or
    /// that passes its check (`PING`; `ROLE` = primary behind Sentinel), or a new one
    /// (see `checked.rs`).
    pub(crate) async fn get(&self) -> Result<PooledConnection, deadpool_redis::PoolError> {
        Ok(match self {
            RedisPool::Direct(pool) => PooledConnection::Direct(pool.get().await?),
            RedisPool::Sentinel(pool) => PooledConnection::Sentinel(pool.get().await?),
        })
    }
}

impl PooledConnection {
    /// The connection, whichever pool it came from.
    fn connection(&mut self) -> &mut CheckedConnection {
        match self {
            PooledConnection::Direct(c) => c,
            PooledConnection::Sentinel(c) => c,
        }
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.connection().req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.connection().req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        match self {
            PooledConnection::Direct(c) => c.get_db(),
            PooledConnection::Sentinel(c) => c.get_db(),
        }
    }
}

/// TLS files for a `rediss://` URL, all PEM. Without `ca`, the system's trust store is used;
/// `cert` and `key` (both or neither) are the client certificate for servers that require
/// one (`tls-auth-clients yes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA certificate(s) to trust for the server's certificate (`--redis-tls-ca`).
    pub ca: Option<PathBuf>,
    /// Client certificate chain (`--redis-tls-cert`).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (`--redis-tls-key`).
    pub key: Option<PathBuf>,
}

impl RedisTls {
    /// No file given: the URL alone decides (system trust store for `rediss://`).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The files read into what the redis crate takes; every failure names its file.
    fn certificates(&self) -> Result<redis::TlsCertificates, StoreError> {
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read_pem(cert, "client certificate", "CERTIFICATE")?,
                client_key: read_pem(key, "client key", "PRIVATE KEY")?,
            }),
            (None, None) => None,
            (Some(_), None) => return Err(tls_config("a client certificate needs its key")),
            (None, Some(_)) => return Err(tls_config("a client key needs its certificate")),
        };
        let root_cert = match &self.ca {
            Some(ca) => Some(read_pem(ca, "CA", "CERTIFICATE")?),
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

fn tls_config(problem: &str) -> StoreError {
    StoreError::TlsConfig(problem.to_string())
}

/// Reads a PEM file and checks it holds a block of the expected kind (`-----BEGIN <label>`,
/// also matching `RSA PRIVATE KEY` and `EC PRIVATE KEY`): an empty or swapped file would
/// otherwise only fail at the handshake, with a less helpful message.
fn read_pem(path: &Path, what: &'static str, label: &str) -> Result<Vec<u8>, StoreError> {
    let bytes = std::fs::read(path).map_err(|source| StoreError::TlsFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let has_block = text
        .match_indices("-----BEGIN ")
        .any(|(at, _)| text[at..].lines().next().is_some_and(|l| l.contains(label)));
    if !has_block {
        return Err(StoreError::TlsFile {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no PEM block '{label}' in it"),
            ),
        });
    }
    Ok(bytes)
}

/// The pool for `url` and `tls` (`check_busy`: see `StoreConfig::check_busy_connections`);
/// connections are opened lazily. `response_timeout`
/// replaces the redis crate's 500 ms for every command (a `WAIT` may block for longer).
pub(crate) fn pool(
    url: &str,
    tls: &RedisTls,
    check_busy: bool,
    config: PoolConfig,
    response_timeout: Option<Duration>,
) -> Result<RedisPool, StoreError> {
    let connection_config =
        response_timeout.map(|t| redis::AsyncConnectionConfig::new().set_response_timeout(Some(t)));
    if is_sentinel_url(url) {
        if !tls.is_empty() {
            return Err(tls_config(
                "TLS files are given but TLS through Sentinel is not supported yet",
            ));
        }
        let manager = SentinelManager::new(&SentinelUrl::parse(url)?, connection_config)?;
        return checked_pool(manager, check_busy, config).map(RedisPool::Sentinel);
    }
    let manager = if tls.is_empty() {
        direct_manager(url, connection_config)?
    } else {
        if !url.starts_with("rediss://") {
            return Err(tls_config(&format!(
                "TLS files (CA, client certificate) are given but the Redis URL {} is not \
                 rediss://",
                crate::redact(url)
            )));
        }
        let client = redis::Client::build_with_tls(url, tls.certificates()?)?;
        // The connection info carries the parsed certificates; the manager opens its
        // connections with them.
        direct_manager(client.get_connection_info().clone(), connection_config)?
    };
    checked_pool(manager, check_busy, config).map(RedisPool::Direct)
}

/// The pool of `manager`'s connections, checked as `check_busy` says (see `checked.rs`).
fn checked_pool<M>(
    manager: M,
    check_busy: bool,
    config: PoolConfig,
) -> Result<Pool<Checked<M>>, StoreError>
where
    Checked<M>: deadpool::managed::Manager,
{
    Pool::builder(Checked {
        manager,
        check_busy,
    })
    .config(config)
    .runtime(Runtime::Tokio1)
    .build()
    .map_err(|e| StoreError::Config(deadpool_redis::CreatePoolError::Build(e)))
}

fn direct_manager(
    info: impl redis::IntoConnectionInfo,
    config: Option<redis::AsyncConnectionConfig>,
) -> Result<Manager, RedisError> {
    match config {
        Some(config) => Manager::new_with_config(info, config),
        None => Manager::new(info),
    }
}

/// How long [`check`] waits for a connection and its PING.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection and PINGs. [`StoreError::Refused`]: Redis answered but will not
/// accept this configuration (retrying cannot help); [`StoreError::Unreachable`]: nothing
/// answered (it may come up later).
pub(crate) async fn check(pool: &RedisPool, url: &str, tls: &RedisTls) -> Result<(), StoreError> {
    let attempt = async {
        let mut conn = pool.get().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok::<(), StoreError>(())
    };
    let err = match tokio::time::timeout(CHECK_TIMEOUT, attempt).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(StoreError::Unreachable {
                url: crate::redact(url),
                reason: format!("no answer within {CHECK_TIMEOUT:?}"),
            })
        }
    };
    let redis_err = match &err {
        StoreError::Redis(e) | StoreError::Pool(deadpool_redis::PoolError::Backend(e)) => e,
        _ => {
            return Err(StoreError::Unreachable {
                url: crate::redact(url),
                reason: err.to_string(),
            })
        }
    };
    Err(classify(redis_err, url, tls))
}

/// What a failed first connection means, in words that name the setting to fix.
fn classify(e: &RedisError, url: &str, tls: &RedisTls) -> StoreError {
    let shown = crate::redact(url);
    let refused = |reason: String| StoreError::Refused {
        url: shown.clone(),
        reason,
    };
    let code = e.code().unwrap_or_default();
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM")
    {
        return refused(format!(
            "authentication failed (user and password in the URL): {e}"
        ));
    }
    if e.kind() == ErrorKind::InvalidClientConfig {
        return refused(format!("invalid client configuration: {e}"));
    }
    if e.is_connection_refusal() || e.is_timeout() {
        return StoreError::Unreachable {
            url: shown,
            reason: e.to_string(),
        };
    }
    let tls_url = url.starts_with("rediss://");
    if tls_url && e.is_io_error() {
        // Any I/O failure other than a refusal or timeout while setting up a TLS
        // connection is the handshake: the server's certificate (CA) or ours (client
        // certificate) was not accepted, or the port does not speak TLS.
        let ca = match &tls.ca {
            Some(ca) => format!("CA {}", ca.display()),
            None => "the system's trust store (no --redis-tls-ca)".to_string(),
        };
        let cert = match &tls.cert {
            Some(cert) => format!("client certificate {}", cert.display()),
            None => "no client certificate (--redis-tls-cert)".to_string(),
        };
        return refused(format!("TLS handshake failed ({ca}; {cert}): {e}"));
    }
    if !tls_url && e.is_connection_dropped() {
        return refused(format!(
            "the server closed the connection before answering; a TLS-only server \
             needs a rediss:// URL: {e}"
        ));
    }
    StoreError::Unreachable {
        url: shown,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_the_address_never_the_password() {
        assert_eq!(
            crate::redact("rediss://svc:pw@10.0.0.5:6380/0"),
            "rediss://10.0.0.5:6380"
        );
        assert_eq!(
            crate::redact("redis+unix:///run/r.sock"),
            "redis+unix:///run/r.sock"
        );
    }

    #[test]
    fn tls_files_with_a_plain_url_or_half_a_pair_are_refused() {
        let ca_only = RedisTls {
            ca: Some("/nowhere/ca.pem".into()),
            ..Default::default()
        };
        let err = pool(
            "redis://u:pw@h:6379",
            &ca_only,
            true,
            PoolConfig::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::TlsConfig(_)), "{err:?}");
        assert!(!err.to_string().contains("pw"), "{err}");
        let cert_only = RedisTls {
            cert: Some("/c.pem".into()),
            ..Default::default()
        };
        let err = pool(
            "rediss://h:6380",
            &cert_only,
            true,
            PoolConfig::default(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs its key"), "{err}");
    }

    #[test]
    fn a_malformed_sentinel_url_is_a_typed_error_and_a_good_one_a_sentinel_pool() {
        let err = pool(
            "redis+sentinel://u:pw@h:x/m",
            &RedisTls::default(),
            true,
            PoolConfig::default(),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SentinelUrl(crate::SentinelUrlError::BadPort { .. })
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("pw"), "{err}");
        let ok = pool(
            "redis+sentinel://h1:26379,h2/jetinfer",
            &RedisTls::default(),
            true,
            PoolConfig::default(),
            None,
        )
        .unwrap();
        assert!(matches!(ok, RedisPool::Sentinel(_)));
        assert_eq!(
            crate::redact("redis+sentinel://u:pw@h1:26379,h2/jetinfer"),
            "redis+sentinel://h1:26379,h2:26379/jetinfer"
        );
    }
}
