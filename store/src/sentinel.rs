//! Redis behind Sentinel: the URL form [`SentinelUrl`]
//! (`redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/<db>]`) and the
//! pool's [`SentinelManager`], which asks the sentinels where the primary is for every new
//! connection and drops a pooled connection whose server is no longer the primary.
//!
//! Why a manager of our own rather than `deadpool_redis::sentinel`: that one checks a
//! pooled connection with `PING`, which a demoted primary (now a replica) still answers, so
//! after a `SENTINEL FAILOVER` the pool would keep handing out connections whose writes fail
//! with `READONLY`. Here the check is `ROLE` (one round trip, like the `PING` it replaces),
//! and a connection to anything but the primary is replaced through Sentinel.

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::sentinel::{
    SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
};
use deadpool_redis::redis::{
    self, aio::MultiplexedConnection, ConnectionAddr, RedisConnectionInfo, RedisError,
};

/// The scheme of a Sentinel URL.
pub const SCHEME: &str = "redis+sentinel://";

/// The sentinels' port when a host names none (Sentinel's own default).
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// What is wrong with a `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SentinelUrlError {
    #[error("a Sentinel URL starts with {SCHEME} (got {0})")]
    Scheme(String),
    #[error("a Sentinel URL needs at least one sentinel host: {SCHEME}host1:26379,host2:26379/<master-name>")]
    NoSentinels,
    #[error("an empty sentinel host in the list (two commas, or a trailing one)")]
    EmptyHost,
    #[error("sentinel port {port:?} of {host:?} is not a number from 1 to 65535")]
    BadPort { host: String, port: String },
    #[error("a Sentinel URL names the primary's master name after the hosts: {SCHEME}host:26379/<master-name>")]
    NoMasterName,
    #[error("database {0:?} after the master name is not a number")]
    BadDatabase(String),
    #[error("unexpected {0:?} after /<master-name>/<db>")]
    Trailing(String),
    #[error("query parameters ({0:?}) are not supported in a Sentinel URL")]
    Query(String),
}

/// A parsed `redis+sentinel://` URL. The user and password (if any) log in to the primary
/// and replicas; the sentinels themselves are asked without credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// Sentinel addresses, as given.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> …`).
    pub master_name: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Whether `url` is a Sentinel URL (by its scheme).
pub fn is_sentinel_url(url: &str) -> bool {
    url.starts_with(SCHEME)
}

impl SentinelUrl {
    /// Parses `redis+sentinel://[user:password@]host[:port][,host[:port]…]/<master-name>[/<db>]`
    /// (hosts separated by `,` or `;`).
    pub fn parse(url: &str) -> Result<SentinelUrl, SentinelUrlError> {
        let rest = url.strip_prefix(SCHEME).ok_or_else(|| {
            SentinelUrlError::Scheme(url.split("://").next().unwrap_or("").into())
        })?;
        if let Some((_, query)) = rest.split_once('?') {
            return Err(SentinelUrlError::Query(query.to_string()));
        }
        // Userinfo ends at the last '@' before the path: a password may hold '@' encoded or not.
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if hosts.is_empty() {
            return Err(SentinelUrlError::NoSentinels);
        }
        let sentinels = hosts
            // `;` too: lists of URLs (`--inputs-redis-url`) are split at commas.
            .split([',', ';'])
            .map(parse_host)
            .collect::<Result<Vec<_>, _>>()?;
        let mut parts = path.splitn(3, '/');
        let master_name = percent_decode(parts.next().unwrap_or(""));
        if master_name.is_empty() {
            return Err(SentinelUrlError::NoMasterName);
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| SentinelUrlError::BadDatabase(db.to_string()))?,
        };
        if let Some(extra) = parts.next().filter(|e| !e.is_empty()) {
            return Err(SentinelUrlError::Trailing(extra.to_string()));
        }
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pw)) => (
                    Some(percent_decode(user)).filter(|s| !s.is_empty()),
                    Some(percent_decode(pw)),
                ),
                None => (Some(percent_decode(u)).filter(|s| !s.is_empty()), None),
            },
        };
        Ok(SentinelUrl {
            sentinels,
            master_name,
            db,
            username,
            password,
        })
    }

    /// The URL without credentials, for messages.
    pub fn redacted(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        format!("{SCHEME}{}/{}", hosts.join(","), self.master_name)
    }

    /// A client that asks these sentinels for the primary.
    pub(crate) fn client(&self) -> Result<SentinelClient, RedisError> {
        let sentinels: Vec<ConnectionAddr> = self
            .sentinels
            .iter()
            .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p))
            .collect();
        let mut node = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            node = node.set_username(user);
        }
        if let Some(pw) = &self.password {
            node = node.set_password(pw);
        }
        SentinelClient::build(
            sentinels,
            self.master_name.clone(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(node)),
            SentinelServerType::Master,
        )
    }
}

fn parse_host(host: &str) -> Result<(String, u16), SentinelUrlError> {
    if host.is_empty() {
        return Err(SentinelUrlError::EmptyHost);
    }
    // `[::1]:26379`: the port follows the closing bracket.
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && (!name.contains(':') || name.ends_with(']')) => {
            (name, Some(port))
        }
        _ => (host, None),
    };
    let port =
        match port {
            None => DEFAULT_SENTINEL_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                SentinelUrlError::BadPort {
                    host: name.to_string(),
                    port: p.to_string(),
                }
            })?,
        };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() {
        return Err(SentinelUrlError::EmptyHost);
    }
    Ok((name.to_string(), port))
}

/// `%XX` escapes decoded (a password may need them for `@`, `:` or `/`); anything else kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates connections to the current primary (asking the sentinels each time) and keeps a
/// pooled one only while its server still says it is the primary.
pub(crate) struct SentinelManager {
    client: tokio::sync::Mutex<SentinelClient>,
    /// Timeouts of the connections to the primary (the redis crate's defaults if `None`).
    config: redis::AsyncConnectionConfig,
}

impl SentinelManager {
    pub(crate) fn new(
        url: &SentinelUrl,
        config: Option<redis::AsyncConnectionConfig>,
    ) -> Result<Self, RedisError> {
        Ok(SentinelManager {
            client: tokio::sync::Mutex::new(url.client()?),
            config: config.unwrap_or_default(),
        })
    }
}

impl deadpool::managed::Manager for SentinelManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        // The lookup asks the sentinels, then checks with ROLE that the address they name
        // is a primary (a sentinel that has not seen the failover yet names the old one).
        let client = self.client.lock().await.async_get_client().await?;
        client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        let role: redis::Value = redis::cmd("ROLE").query_async(conn).await?;
        match is_primary(&role) {
            true => Ok(()),
            false => Err(RecycleError::message(
                "the server is no longer the primary (failover): reconnecting through Sentinel",
            )),
        }
    }
}

/// `ROLE`'s first element is `master` on a primary (`slave`, `sentinel` elsewhere).
fn is_primary(role: &redis::Value) -> bool {
    let first = match role {
        redis::Value::Array(items) => items.first(),
        _ => None,
    };
    match first {
        Some(redis::Value::BulkString(b)) => b == b"master",
        Some(redis::Value::SimpleString(s)) => s == "master",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_parses() {
        let u = SentinelUrl::parse(
            "redis+sentinel://svc:p%40ss@10.0.0.1:26379,s2,[::1]:26380/jetinfer/2",
        )
        .unwrap();
        assert_eq!(
            u.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("s2".to_string(), 26379),
                ("::1".to_string(), 26380)
            ]
        );
        assert_eq!(u.master_name, "jetinfer");
        assert_eq!(u.db, 2);
        assert_eq!(u.username.as_deref(), Some("svc"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        let shown = format!("{u:?}");
        assert!(!shown.contains("p@ss") && !shown.contains("svc"), "{shown}");
        assert_eq!(
            u.redacted(),
            "redis+sentinel://10.0.0.1:26379,s2:26379,::1:26380/jetinfer"
        );
    }

    #[test]
    fn a_password_alone_and_no_db() {
        let semi = SentinelUrl::parse("redis+sentinel://a:1;b:2/m").unwrap();
        assert_eq!(semi.sentinels.len(), 2);
        let u = SentinelUrl::parse("redis+sentinel://:pw@h:1/m").unwrap();
        assert_eq!((u.username, u.password, u.db), (None, Some("pw".into()), 0));
    }

    #[test]
    fn malformed_urls_get_typed_errors() {
        use SentinelUrlError as E;
        let cases: &[(&str, E)] = &[
            ("redis://h:26379/m", E::Scheme("redis".into())),
            ("redis+sentinel:///m", E::NoSentinels),
            ("redis+sentinel://u:p@/m", E::NoSentinels),
            ("redis+sentinel://a:1,,b:2/m", E::EmptyHost),
            ("redis+sentinel://a:1,/m", E::EmptyHost),
            (
                "redis+sentinel://a:port/m",
                E::BadPort {
                    host: "a".into(),
                    port: "port".into(),
                },
            ),
            (
                "redis+sentinel://a:70000/m",
                E::BadPort {
                    host: "a".into(),
                    port: "70000".into(),
                },
            ),
            ("redis+sentinel://a:1", E::NoMasterName),
            ("redis+sentinel://a:1/", E::NoMasterName),
            ("redis+sentinel://a:1/m/x", E::BadDatabase("x".into())),
            ("redis+sentinel://a:1/m/-1", E::BadDatabase("-1".into())),
            ("redis+sentinel://a:1/m/0/z", E::Trailing("z".into())),
            ("redis+sentinel://a:1/m?db=1", E::Query("db=1".into())),
        ];
        for (url, want) in cases {
            assert_eq!(SentinelUrl::parse(url).as_ref(), Err(want), "{url}");
        }
    }

    #[test]
    fn only_master_counts_as_primary() {
        use redis::Value;
        let role = |r: &[u8]| Value::Array(vec![Value::BulkString(r.to_vec()), Value::Int(0)]);
        assert!(is_primary(&role(b"master")));
        assert!(!is_primary(&role(b"slave")));
        assert!(!is_primary(&Value::Nil));
    }
}
