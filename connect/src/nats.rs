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
    /// The `--nats-creds` file holds no user JWT and seed in the `.creds` format (the reason
    /// comes from async-nats and never quotes the file).
    #[error("the NATS credentials file {path} is not a valid .creds file: {source}")]
    BadCreds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `--nats-nkey` file holds no valid user seed; its content is not shown.
    #[error("the NATS nkey file {path} holds no valid user nkey seed (a line of 58 characters starting with SU; the public key, U…, belongs in the server's configuration)")]
    BadSeed { path: PathBuf },
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
    /// Prefix of this connection's reply subjects instead of `_INBOX` (JetStream API
    /// answers, publish acks, pulled messages, run replies), so a server can let each role
    /// receive its own replies only (`_INBOX_<role>.>`) rather than everybody's.
    pub inbox_prefix: Option<String>,
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
            inbox_prefix: None,
        }
    }

    /// Names the connection.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Replies to this connection arrive under `prefix` (see [`NatsSettings::inbox_prefix`]).
    pub fn inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// Keeps retrying the first connection until the server answers.
    pub fn retry_on_initial_connect(mut self) -> Self {
        self.retry_on_initial_connect = true;
        self
    }

    /// Checks what can be checked without a server: credentials given once, a client
    /// certificate with its key, an nkey or `.creds` file that reads and parses.
    /// `--check-config` calls it; [`NatsSettings::connect`] too.
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
        self.with_auth(async_nats::ConnectOptions::new())?;
        Ok(())
    }

    /// Opens the connection.
    pub async fn connect(&self) -> Result<async_nats::Client, ConnectError> {
        self.check()?;
        let (url, from_url) = split_userinfo(&self.url)?;
        let mut options = self.authenticated(from_url)?;
        options = self.encrypted(options)?;
        options = options.connection_timeout(self.connect_timeout);
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        if self.retry_on_initial_connect {
            options = options.retry_on_initial_connect();
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        // async-nats parses a `&str` as one server: a comma-separated list must be handed
        // over as a list, or its first `,` makes the URL invalid.
        options
            .connect(server_list(&url))
            .await
            .map_err(|source| ConnectError::Connect {
                url: redact_url(&self.url),
                source,
            })
    }

    /// Options carrying the credentials: from the URL, or from `auth` ([`NatsSettings::check`]
    /// has refused both at once).
    fn authenticated(
        &self,
        from_url: Option<UrlCredentials>,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        let options = async_nats::ConnectOptions::new();
        match from_url {
            Some(UrlCredentials::UserPassword { user, password }) => {
                Ok(options.user_and_password(user, password))
            }
            Some(UrlCredentials::Token(token)) => Ok(options.token(token)),
            None => self.with_auth(options),
        }
    }

    /// `options` with the credentials of `auth`; an nkey seed or `.creds` file is read and
    /// parsed here, so a bad one is refused naming the file before any server is asked.
    fn with_auth(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, ConnectError> {
        Ok(match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
            NatsAuth::NkeySeedFile(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConnectError::ReadFile {
                        what: "nkey seed",
                        path: path.clone(),
                        source,
                    })?;
                // async-nats only finds a bad seed once a server answered, and then says
                // "failed signing nonce".
                let seed =
                    user_seed(&text).ok_or_else(|| ConnectError::BadSeed { path: path.clone() })?;
                options.nkey(seed.to_string())
            }
            NatsAuth::CredsFile(path) => {
                // Read here rather than by `credentials_file` (async), so that `check` can,
                // and a missing file and a file that is not a `.creds` file differ.
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConnectError::ReadFile {
                        what: "credentials",
                        path: path.clone(),
                        source,
                    })?;
                options
                    .credentials(&text)
                    .map_err(|source| ConnectError::BadCreds {
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

/// The servers of a comma-separated URL list (blanks around commas and empty entries left
/// out), each parsed by async-nats on its own.
fn server_list(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The user seed in the text of an nkey file: the first line starting with `SU` (a bare seed,
/// or `nsc`'s decorated form with the seed between marker lines), if it is a well-formed seed:
/// 58 base32 characters decoding to a user-seed prefix, 32 key bytes and a matching CRC-16.
fn user_seed(text: &str) -> Option<&str> {
    let seed = text.lines().map(str::trim).find(|l| l.starts_with("SU"))?;
    let bytes = base32_decode(seed)?;
    // Two prefix bytes (seed, user), 32 bytes of key, then the CRC-16 of all before it,
    // little-endian, as the nkeys encoding defines.
    if bytes.len() != 36 {
        return None;
    }
    let (body, crc) = bytes.split_at(34);
    (crc16_xmodem(body) == u16::from_le_bytes([crc[0], crc[1]])).then_some(seed)
}

/// RFC 4648 base32 without padding; None for any other character or stray bits.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), the checksum of nkeys.
fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (0..8).fold(crc ^ (u16::from(b) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user seed from the nkeys documentation.
    const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";

    #[test]
    fn a_url_list_is_split_into_servers() {
        assert_eq!(server_list("nats://a:1"), vec!["nats://a:1"]);
        assert_eq!(
            server_list("nats://a:1, nats://b:2,,nats://c:3"),
            vec!["nats://a:1", "nats://b:2", "nats://c:3"]
        );
        use async_nats::ToServerAddrs;
        // The whole list as one `&str` is what async-nats cannot read.
        assert!("nats://a:1,nats://b:2".to_server_addrs().is_err());
        assert_eq!(
            server_list("nats://a:1,nats://b:2")
                .to_server_addrs()
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn a_user_seed_is_found_bare_or_decorated() {
        assert_eq!(user_seed(&format!("{SEED}\n")), Some(SEED));
        let decorated =
            format!("-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n");
        assert_eq!(user_seed(&decorated), Some(SEED));
    }

    #[test]
    fn anything_else_is_not_a_user_seed() {
        let typo = SEED.replacen("SUAIO", "SUAIP", 1);
        for text in [
            "",
            "UAIO3FHUX5PNV2LQ",
            &SEED[..57],
            &typo,
            &SEED.to_lowercase(),
        ] {
            assert_eq!(user_seed(text), None, "{text}");
        }
    }

    #[test]
    fn check_reads_the_credential_files() {
        let dir = std::env::temp_dir().join(format!("jetinfer-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let check = |auth| {
            NatsSettings {
                auth,
                ..NatsSettings::new("nats://127.0.0.1:1")
            }
            .check()
        };
        assert!(check(NatsAuth::NkeySeedFile(file("good.nk", SEED))).is_ok());
        let public = file(
            "public.nk",
            "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4",
        );
        assert!(matches!(
            check(NatsAuth::NkeySeedFile(public)),
            Err(ConnectError::BadSeed { .. })
        ));
        let creds = file("bad.creds", "no JWT here");
        assert!(matches!(
            check(NatsAuth::CredsFile(creds)),
            Err(ConnectError::BadCreds { .. })
        ));
        assert!(matches!(
            check(NatsAuth::CredsFile(dir.join("missing.creds"))),
            Err(ConnectError::ReadFile { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }
}
