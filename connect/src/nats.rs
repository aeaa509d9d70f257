//! [`NatsSettings`]: where a process finds NATS, who it says it is, and how the connection is
//! encrypted; [`NatsSettings::connect`] opens it.

use std::path::PathBuf;
use std::time::Duration;

use crate::url::{redact_url, split_userinfo, MixedCredentials, UrlCredentials};

/// NATS could not be reached, or the settings to reach it are wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused or could not be reached (authorization violation, TLS failure,
    /// nothing listening, timeout); `url` has its credentials redacted.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("NATS credentials are given twice, in the URL and as {flag}; give them once")]
    GivenTwice { flag: &'static str },
    #[error(transparent)]
    MixedCredentials(#[from] MixedCredentials),
    #[error("cannot read the NATS {what} file {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a NATS client certificate needs its key, and a key its certificate (--nats-tls-cert, --nats-tls-key)")]
    CertWithoutKey,
}

/// How a process proves who it is to NATS. `Debug` hides the secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A file holding an nkey seed (`SU…`); the server knows the public key.
    NkeySeedFile(PathBuf),
    /// A `.creds` file: a user JWT and its nkey seed (decentralised auth, `nsc`).
    CredsFile(PathBuf),
}

impl NatsAuth {
    /// The flag that sets this kind of credential, for messages.
    fn flag(&self) -> &'static str {
        match self {
            NatsAuth::None => "nothing",
            NatsAuth::UserPassword { .. } => "--nats-user/--nats-password",
            NatsAuth::Token(_) => "--nats-token",
            NatsAuth::NkeySeedFile(_) => "--nats-nkey",
            NatsAuth::CredsFile(_) => "--nats-creds",
        }
    }
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ***)"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::NkeySeedFile(p) => write!(f, "NkeySeedFile({p:?})"),
            NatsAuth::CredsFile(p) => write!(f, "CredsFile({p:?})"),
        }
    }
}

/// TLS towards NATS: a CA to trust (a private CA) and a client certificate (mutual TLS).
/// Setting any of them requires TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Where and how to connect to NATS.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// One server, or a comma-separated list; `user:password@` or `token@` in it are used
    /// as credentials (async-nats itself would ignore them).
    pub url: String,
    pub auth: NatsAuth,
    pub tls: NatsTls,
    /// The connection name the server shows (`nats server report connections`).
    pub name: Option<String>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Keep trying while the server is not up yet (a service starting beside its server);
    /// off for command-line tools, which should fail fast.
    pub retry_on_initial_connect: bool,
}

impl NatsSettings {
    /// Settings for `url` with a 5 s connection timeout, no credentials beyond the URL's,
    /// and no retry of the first connect.
    pub fn new(url: impl Into<String>) -> Self {
        NatsSettings {
            url: url.into(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
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

    /// Checks what can be checked without a server: credentials given once, a client
    /// certificate with its key. `--check-config` calls it; [`NatsSettings::connect`] too.
    pub fn check(&self) -> Result<(), ConnectError> {
        let (_, from_url) = split_userinfo(&self.url)?;
        if from_url.is_some() && self.auth != NatsAuth::None {
            return Err(ConnectError::GivenTwice {
                flag: self.auth.flag(),
            });
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConnectError::CertWithoutKey);
        }
        Ok(())
    }

    /// Opens the connection.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        self.check()?;
        let (url, from_url) = split_userinfo(&self.url)?;
        let mut options = self.authenticated(from_url).await?;
        options = self.encrypted(options)?;
        options = options.connection_timeout(self.connect_timeout);
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        if self.retry_on_initial_connect {
            options = options.retry_on_initial_connect();
        }
        options
            .connect(url.as_str())
            .await
            .map_err(|source| ConnectError::Connect {
                url: redact_url(&self.url),
                source,
            })
    }

    /// Options carrying the credentials: from the URL, or from `auth` ([`NatsSettings::check`]
    /// has refused both at once).
    async fn authenticated(
        &self,
        from_url: Option<UrlCredentials>,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        let options = async_nats::ConnectOptions::new();
        if let Some(creds) = from_url {
            return Ok(match creds {
                UrlCredentials::UserPassword { user, password } => {
                    options.user_and_password(user, password)
                }
                UrlCredentials::Token(token) => options.token(token),
            });
        }
        Ok(match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::NkeySeedFile(path) => {
                let seed =
                    std::fs::read_to_string(path).map_err(|source| ConnectError::ReadFile {
                        what: "nkey seed",
                        path: path.clone(),
                        source,
                    })?;
                options.nkey(seed.trim().to_string())
            }
            NatsAuth::CredsFile(path) => {
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| ConnectError::ReadFile {
                        what: "credentials",
                        path: path.clone(),
                        source,
                    })?
            }
        })
    }

    /// Options with the TLS settings applied (none: whatever the URL scheme says).
    fn encrypted(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        let tls = &self.tls;
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => return Err(ConnectError::CertWithoutKey),
        }
        Ok(options)
    }
}
