//! The stack's credentials in compose_up: `scripts/compose-secrets.sh` run into a folder of
//! the test's own, and the checks of what the running stack lets in: refusals without or
//! with wrong credentials, the producer's Redis user held to its rights, the services logged
//! in to NATS as their roles, and the script run again keeping every password.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{http_get, inspect, root_dir, text, Project, WORKERS};

/// The stack's credentials: `scripts/compose-secrets.sh` run into a folder of the test's own.
pub(crate) struct Secrets {
    dir: tempfile::TempDir,
}

impl Secrets {
    /// Generates them, with the host ports the script writes into producer.env (compose's
    /// defaults when `None`).
    pub(crate) fn generate(root: &Path) -> Secrets {
        let secrets = Secrets {
            dir: tempfile::tempdir().expect("a temporary folder"),
        };
        secrets.run_script(root, None);
        secrets
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// Runs the script again (or the first time) on this folder.
    fn run_script(&self, root: &Path, ports: Option<(&str, &str)>) {
        let mut cmd = Command::new("bash");
        cmd.arg(root.join("scripts/compose-secrets.sh"))
            .arg(self.path())
            .env_remove("JETINFER_SECRETS_DIR")
            .env_remove("JETINFER_NATS_PORT")
            .env_remove("JETINFER_REDIS_PORT");
        if let Some((nats, redis)) = ports {
            cmd.env("JETINFER_NATS_PORT", nats)
                .env("JETINFER_REDIS_PORT", redis);
        }
        let out = cmd.output().expect("running scripts/compose-secrets.sh");
        assert!(
            out.status.success(),
            "scripts/compose-secrets.sh failed:\n{}",
            text(&out)
        );
    }

    /// One of its `NAME=value` files.
    fn vars(&self, file: &str) -> BTreeMap<String, String> {
        let path = self.path().join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) fn var(&self, file: &str, name: &str) -> String {
        self.vars(file)
            .remove(name)
            .unwrap_or_else(|| panic!("{file} has no {name}"))
    }
}

/// Sends Redis commands over one plain TCP connection; the first line of each reply
/// (`+PONG`, `-NOAUTH …`, `$-1`), so no client library decides what counts as refused.
fn redis_replies(addr: &str, commands: &[&[&str]]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    commands
        .iter()
        .map(|args| {
            let mut request = format!("*{}\r\n", args.len());
            for a in *args {
                request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            s.write_all(request.as_bytes()).unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        })
        .collect()
}

/// A NATS connection attempt that must be refused for its credentials.
async fn assert_nats_refuses(options: async_nats::ConnectOptions, addr: &str, what: &str) {
    let attempt = tokio::time::timeout(Duration::from_secs(10), options.connect(addr)).await;
    match attempt {
        Ok(Err(e)) => assert_eq!(
            e.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "NATS refused {what}, but not for its credentials: {e}"
        ),
        Ok(Ok(_)) => panic!("NATS at {addr} accepted {what}"),
        Err(_) => panic!("connecting {what} to NATS at {addr} neither failed nor succeeded"),
    }
}

/// The stack's access control, from the host: refusals without or with wrong credentials,
/// the producer's Redis user held to its rights, the services logged in as their roles.
pub(crate) async fn check_access(
    project: &Project,
    secrets: &Secrets,
    nats: &str,
    redis: &str,
    monitor: &str,
) {
    // NATS: no credentials, a wrong password, a user that does not exist.
    let producer_pw = secrets.var("passwords", "JETINFER_NATS_PRODUCER_PASSWORD");
    assert_nats_refuses(
        async_nats::ConnectOptions::new(),
        nats,
        "a client without credentials",
    )
    .await;
    assert_nats_refuses(
        async_nats::ConnectOptions::with_user_and_password("producer".into(), "wrong".into()),
        nats,
        "the producer with a wrong password",
    )
    .await;
    assert_nats_refuses(
        async_nats::ConnectOptions::with_user_and_password("admin".into(), producer_pw),
        nats,
        "a user named admin",
    )
    .await;

    // Redis: the default user is off, a wrong password is refused, and the producer may read
    // results but not write one.
    let redis_pw = secrets.var("passwords", "JETINFER_REDIS_PRODUCER_PASSWORD");
    let replies = redis_replies(
        redis,
        &[
            &["PING"],
            &["GET", "jetinfer:result:compose-up"],
            &["AUTH", "jetinfer-producer", "wrong"],
            &["AUTH", "default", ""],
            &["AUTH", "jetinfer-producer", &redis_pw],
            &["PING"],
            &["GET", "jetinfer:result:compose-up"],
            &["SET", "jetinfer:result:compose-up", "forged"],
        ],
    );
    let expected = [
        "-NOAUTH",
        "-NOAUTH",
        "-WRONGPASS",
        "-WRONGPASS",
        "+OK",
        "+PONG",
        "$-1",
        "-NOPERM",
    ];
    for (reply, want) in replies.iter().zip(expected) {
        assert!(
            reply.starts_with(want),
            "Redis replies {replies:?}, expected {expected:?}"
        );
    }

    // Every connection NATS holds is the dispatcher's or a worker's, under its own user;
    // the workers share theirs, each under its own id (the connection's name).
    let connz: serde_json::Value =
        serde_json::from_str(&http_get(monitor, "/connz?auth=1&limit=1000")).expect("connz JSON");
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in connz["connections"].as_array().expect("connections") {
        let user = c["authorized_user"].as_str().unwrap_or("").to_string();
        let name = c["name"].as_str().unwrap_or("").to_string();
        users.entry(user).or_default().push(name);
    }
    assert_eq!(
        users.keys().map(String::as_str).collect::<Vec<_>>(),
        ["dispatcher", "worker"],
        "NATS connections by user: {users:?}"
    );
    let mut worker_ids = users["worker"].clone();
    worker_ids.sort();
    worker_ids.dedup();
    assert_eq!(worker_ids.len(), WORKERS, "worker connections: {users:?}");

    // And each service's Redis URL names its own role's user.
    for (service, user) in [
        ("dispatcher", "jetinfer-dispatcher"),
        ("worker-cpu", "jetinfer-worker"),
    ] {
        for id in project.containers(service) {
            let env = inspect(std::slice::from_ref(&id), "{{json .Config.Env}}").join("");
            let env: Vec<String> = serde_json::from_str(&env).expect("Config.Env as JSON");
            let url = env
                .iter()
                .find_map(|e| e.strip_prefix("REDIS_URL="))
                .unwrap_or_else(|| panic!("{service} has no REDIS_URL"));
            assert!(
                url.starts_with(&format!("redis://{user}:")),
                "{service} connects to Redis as {}",
                jetinfer_client::redact_url(url)
            );
        }
    }

    // The script again, with the ports Docker chose: the same passwords, the new ports.
    let before = secrets.vars("passwords");
    let (nats_port, redis_port) = (port_of(nats), port_of(redis));
    secrets.run_script(&root_dir(), Some((nats_port, redis_port)));
    assert_eq!(
        secrets.vars("passwords"),
        before,
        "a second run changed the passwords"
    );
    assert!(secrets
        .var("producer.env", "NATS_URL")
        .ends_with(&format!("@{nats}")));
    assert!(secrets
        .var("producer.env", "REDIS_URL")
        .ends_with(&format!("@{redis}")));
}

/// The port of `host:port`.
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().expect("host:port")
}
