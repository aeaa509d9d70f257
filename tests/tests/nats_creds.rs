//! jetinfer against a nats-server that knows its clients by nkey, the two ways NATS offers:
//!
//! - **nkey**: the server's `authorization` block lists a user's public nkey (`U…`); the
//!   process holds the seed (`SU…`) in a file (`--nats-nkey` / `NATS_NKEY`).
//! - **`.creds`** (decentralised JWT auth): the server trusts an operator; the operator signs
//!   an account, the account signs a user, and the process holds the user's JWT and seed in a
//!   `.creds` file (`--nats-creds` / `NATS_CREDS`). `nsc` is not needed: the test signs the
//!   claims of the chain itself with the `nkeys` crate.
//!
//! For each: a connection through `NatsSettings` works; the whole pipeline runs with the flags
//! on the dispatcher, the worker, the client library's builder and the `jetinfer` CLI, and its
//! golden jobs come out right; and wrong credentials (another seed, a missing one, a user of an
//! account the server does not know, an expired user, a file that holds no seed) are refused
//! with a message naming what failed and never showing the seed.
//!
//! [`jwt`] signs the chain; [`pipeline`] starts the processes one by one rather than through
//! `LocalStack`, whose own readiness connection has no credentials: here even the harness
//! connects with the seed.

#[path = "nats_creds/jwt.rs"]
mod jwt;
#[path = "nats_creds/pipeline.rs"]
mod pipeline;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use jetinfer_client::{Client, ConnectError, NatsAuth, NatsSettings};
use jetinfer_devkit::local::{binary, repo_root, NatsServer, Process, RedisServer};
use nkeys::KeyPair;

use jwt::now;
use pipeline::{golden_jobs_come_out_right, Cred, Pipeline};

/// A message goes out and comes back over the connection.
async fn round_trip(nats: &async_nats::Client) {
    let mut sub = nats.subscribe("auth.check").await.unwrap();
    nats.publish("auth.check", "ping".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("no message within 5 s")
        .unwrap();
    assert_eq!(&msg.payload[..], b"ping");
}

/// The refusal of `settings`: the server's authorization failure, without `secret`.
async fn refused(settings: NatsSettings, secret: &str) -> String {
    let err = settings
        .connect()
        .await
        .expect_err("connected without the right credentials");
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Connect { .. }), "{text}");
    assert!(text.to_lowercase().contains("authoriz"), "{text}");
    assert!(!text.contains(secret), "the error shows the secret: {text}");
    text
}

/// Like [`refused`], and the server (run with `-D`) logs `reason` for it: the refusal comes
/// from the check the test means, not from some other mistake in the credentials.
async fn refused_because(
    server: &NatsServer,
    settings: NatsSettings,
    secret: &str,
    reason: &str,
) -> String {
    let before = server.log().len();
    let text = refused(settings, secret).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !server.log()[before..].contains(reason) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nats-server did not log {reason:?} for the refusal; its log since:\n{}",
            &server.log()[before..]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    text
}

fn settings(url: &str, auth: NatsAuth) -> NatsSettings {
    NatsSettings {
        auth,
        ..NatsSettings::new(url)
    }
}

/// Writes `text` to `dir/name`, readable by this user only (as a secret should be).
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn seed(key: &KeyPair) -> String {
    key.seed().expect("a generated key pair has its seed")
}

/// A nats-server in operator mode (memory resolver) trusting one operator, with a system
/// account and a JetStream-enabled application account whose users the tests sign.
struct Operator {
    server: NatsServer,
    account: KeyPair,
    dir: tempfile::TempDir,
}

impl Operator {
    fn start() -> Operator {
        let (operator, system, account) = (
            KeyPair::new_operator(),
            KeyPair::new_account(),
            KeyPair::new_account(),
        );
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            jwt::operator(&operator, &system),
            system.public_key(),
            system.public_key(),
            jwt::account(&operator, &system, "SYS", false),
            account.public_key(),
            jwt::account(&operator, &account, "jetinfer", true),
        );
        let path = dir.path().join("operator.conf");
        std::fs::write(&path, config).unwrap();
        let server = NatsServer::start_with_args(["-D", "-c", &path.display().to_string()])
            .unwrap_or_else(|e| panic!("nats-server in operator mode: {e}"));
        Operator {
            server,
            account,
            dir,
        }
    }

    /// A `.creds` file for a new user of `account`, expiring at `exp` if given; returns its
    /// path and the user's seed.
    fn creds(&self, name: &str, account: &KeyPair, exp: Option<u64>) -> (PathBuf, String) {
        let user = KeyPair::new_user();
        let text = jwt::creds(&jwt::user(account, &user, exp), &seed(&user));
        (secret_file(self.dir.path(), name, &text), seed(&user))
    }
}

/// A nats-server whose only user is the public key of `user`.
fn nkey_server(user: &KeyPair, dir: &Path) -> NatsServer {
    let config = dir.join("nkey.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
            user.public_key()
        ),
    )
    .unwrap();
    NatsServer::start_with_args(["-D", "-c", &config.display().to_string()])
        .unwrap_or_else(|e| panic!("nats-server with an nkey user: {e}"))
}

#[tokio::test]
async fn an_nkey_seed_file_connects_and_wrong_seeds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let user = KeyPair::new_user();
    let server = nkey_server(&user, dir.path());
    let url = server.url();

    let seed_file = secret_file(dir.path(), "user.nk", &format!("{}\n", seed(&user)));
    let nats = settings(&url, NatsAuth::NkeySeedFile(seed_file))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting with the seed: {e}"));
    round_trip(&nats).await;

    // nats-server gives no reason beyond this for nkey users, even with -D.
    let failed = "authentication error";
    let text = refused_because(&server, NatsSettings::new(&url), "SU", failed).await;
    println!("missing: {text}");
    let other = KeyPair::new_user();
    let other_file = secret_file(dir.path(), "other.nk", &seed(&other));
    let wrong = settings(&url, NatsAuth::NkeySeedFile(other_file));
    let text = refused_because(&server, wrong, &seed(&other), failed).await;
    println!("another user's seed: {text}");
}

#[tokio::test]
async fn a_file_without_a_user_seed_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let user = KeyPair::new_user();
    let server = nkey_server(&user, dir.path());
    let url = server.url();
    let account = KeyPair::new_account();
    // Mistakes a user can make: the public key instead of the seed, an account's seed, a
    // seed with a character lost or mistyped, an empty file.
    let good = seed(&user);
    let truncated = good[..57].to_string();
    let flipped = if &good[20..21] == "A" { "B" } else { "A" };
    let typo = format!("{}{flipped}{}", &good[..20], &good[21..]);
    for (name, text) in [
        ("public.nk", user.public_key()),
        ("account.nk", seed(&account)),
        ("truncated.nk", truncated),
        ("typo.nk", typo),
        ("empty.nk", String::new()),
    ] {
        let path = secret_file(dir.path(), name, &text);
        let err = settings(&url, NatsAuth::NkeySeedFile(path.clone()))
            .connect()
            .await
            .expect_err("connected with a file that holds no user seed");
        let said = err.to_string();
        println!("{name}: {said}");
        assert!(
            matches!(err, ConnectError::BadSeed { .. }),
            "{name}: {said}"
        );
        assert!(said.contains(&path.display().to_string()), "{said}");
        assert!(
            text.is_empty() || !said.contains(&text),
            "shows the file: {said}"
        );
    }
    let missing = dir.path().join("missing.nk");
    let err = settings(&url, NatsAuth::NkeySeedFile(missing.clone()))
        .connect()
        .await
        .expect_err("connected with a missing seed file");
    assert!(matches!(err, ConnectError::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.nk"), "{err}");
}

#[tokio::test]
async fn a_creds_file_connects_and_unknown_or_expired_users_are_refused() {
    let op = Operator::start();
    let url = op.server.url();
    let (good, _) = op.creds("good.creds", &op.account, None);
    let nats = settings(&url, NatsAuth::CredsFile(good))
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connecting with the .creds file: {e}\nserver log:\n{}",
                op.server.log()
            )
        });
    round_trip(&nats).await;
    // JetStream is on for the account (the account JWT's limits).
    let info = async_nats::jetstream::new(nats)
        .query_account()
        .await
        .unwrap_or_else(|e| panic!("JetStream for the account: {e}"));
    println!("account JetStream limits: {:?}", info.limits);

    // A user that expires in the future connects too, and one whose time is up does not.
    let (later, _) = op.creds("later.creds", &op.account, Some(now() + 3600));
    round_trip(
        &settings(&url, NatsAuth::CredsFile(later))
            .connect()
            .await
            .unwrap(),
    )
    .await;
    let (expired, expired_seed) = op.creds("expired.creds", &op.account, Some(now() - 60));
    let expired = settings(&url, NatsAuth::CredsFile(expired));
    let text = refused_because(&op.server, expired, &expired_seed, "claim is expired").await;
    println!("expired user: {text}");

    // An account the server was never told about, with a well-formed chain otherwise.
    let stranger = KeyPair::new_account();
    let (unknown, unknown_seed) = op.creds("unknown.creds", &stranger, None);
    let unknown = settings(&url, NatsAuth::CredsFile(unknown));
    let text = refused_because(&op.server, unknown, &unknown_seed, "account missing").await;
    println!("unknown account: {text}");

    // The right JWT with another user's seed: the nonce signature does not match.
    let user = KeyPair::new_user();
    let other = KeyPair::new_user();
    let mixed = secret_file(
        op.dir.path(),
        "mixed.creds",
        &jwt::creds(&jwt::user(&op.account, &user, None), &seed(&other)),
    );
    let mixed = settings(&url, NatsAuth::CredsFile(mixed));
    let text = refused_because(&op.server, mixed, &seed(&other), "Signature not verified").await;
    println!("JWT of one user, seed of another: {text}");

    let none = NatsSettings::new(&url);
    let text = refused_because(&op.server, none, "SU", "requires a user JWT").await;
    println!("no creds: {text}");

    // Files that are not .creds files are refused before anything is sent, naming the file
    // and not its content: no JWT, a seed with a typo, no seed.
    let user = KeyPair::new_user();
    let user_jwt = jwt::user(&op.account, &user, None);
    let good_seed = seed(&user);
    let flipped = if &good_seed[20..21] == "A" { "B" } else { "A" };
    let typo = format!("{}{flipped}{}", &good_seed[..20], &good_seed[21..]);
    for (name, text) in [
        ("garbage.creds", "not a creds file\n".to_string()),
        ("typo.creds", jwt::creds(&user_jwt, &typo)),
        ("no-seed.creds", jwt::creds(&user_jwt, "")),
    ] {
        let path = secret_file(op.dir.path(), name, &text);
        let err = settings(&url, NatsAuth::CredsFile(path))
            .connect()
            .await
            .expect_err("connected with a file that is not a .creds file");
        let said = err.to_string();
        println!("{name}: {said}");
        assert!(matches!(err, ConnectError::BadCreds { .. }), "{said}");
        assert!(said.contains(name), "{said}");
        assert!(
            !said.contains(&typo[2..]) && !said.contains(&user_jwt),
            "{said}"
        );
    }
    let missing = op.dir.path().join("missing.creds");
    let err = settings(&url, NatsAuth::CredsFile(missing))
        .connect()
        .await
        .expect_err("connected with a missing .creds file");
    println!("missing file: {err}");
    assert!(matches!(err, ConnectError::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.creds"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_with_an_nkey_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let user = KeyPair::new_user();
    let server = nkey_server(&user, dir.path());
    let url = server.url();
    let seed_file = secret_file(dir.path(), "user.nk", &seed(&user));
    let cred = Cred {
        flag: "--nats-nkey",
        env: "NATS_NKEY",
        file: seed_file.display().to_string(),
    };
    let auth = NatsAuth::NkeySeedFile(seed_file.clone());
    let pipeline = Pipeline::start(&url, &cred, settings(&url, auth)).await;
    let client = Client::builder(&url)
        .nkey_seed_file(&seed_file)
        .redis(pipeline.redis.url())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the client with the seed file: {e}"));
    golden_jobs_come_out_right(&pipeline, &client, &url, &cred, "nkey").await;
    let logs = pipeline.logs();
    assert!(
        !logs.contains(&seed(&user)),
        "a log shows the seed:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_with_a_creds_file() {
    let op = Operator::start();
    let url = op.server.url();
    let (creds, user_seed) = op.creds("jetinfer.creds", &op.account, None);
    let cred = Cred {
        flag: "--nats-creds",
        env: "NATS_CREDS",
        file: creds.display().to_string(),
    };
    let auth = NatsAuth::CredsFile(creds.clone());
    let pipeline = Pipeline::start(&url, &cred, settings(&url, auth)).await;
    let client = Client::builder(&url)
        .creds_file(&creds)
        .redis(pipeline.redis.url())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the client with the .creds file: {e}"));
    golden_jobs_come_out_right(&pipeline, &client, &url, &cred, "creds").await;
    let logs = pipeline.logs();
    assert!(!logs.contains(&user_seed), "a log shows the seed:\n{logs}");
}

/// Waits up to 30 s for `process`'s log to say `what`; returns the log.
async fn log_says(process: &mut Process, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = process.log();
        if log.to_lowercase().contains(what) {
            return log;
        }
        if tokio::time::Instant::now() >= deadline {
            let running = process.is_running();
            panic!(
                "{} never said {what:?} (running: {running}); log:\n{log}",
                process.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_with_wrong_credentials_say_so_without_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let nkey_server = nkey_server(&KeyPair::new_user(), dir.path());
    let other = KeyPair::new_user();
    let other_file = secret_file(dir.path(), "other.nk", &seed(&other));
    let op = Operator::start();
    let (expired, expired_seed) = op.creds("expired.creds", &op.account, Some(now() - 60));
    let redis = RedisServer::start().unwrap();
    let models = repo_root().unwrap().join("models/out/models.toml");

    // The services keep trying (they may start before their server is configured), and say
    // why each attempt failed.
    let mut dispatcher = Process::start(
        "dispatcher",
        binary("jetinfer-dispatcher").unwrap(),
        [
            "--nats-url",
            &nkey_server.url(),
            "--redis-url",
            &redis.url(),
            "--nats-nkey",
            &other_file.display().to_string(),
        ],
        [("RUST_LOG", "info")],
        dir.path().join("dispatcher.log"),
    )
    .unwrap();
    let mut worker = Process::start(
        "worker-0",
        binary("jetinfer-worker").unwrap(),
        [
            "--nats-url",
            &op.server.url(),
            "--redis-url",
            &redis.url(),
            "--nats-creds",
            &expired.display().to_string(),
            "--models",
            &models.display().to_string(),
            "--id",
            "worker-0",
        ],
        [("RUST_LOG", "info")],
        dir.path().join("worker-0.log"),
    )
    .unwrap();
    for (process, secret) in [
        (&mut dispatcher, seed(&other)),
        (&mut worker, expired_seed.clone()),
    ] {
        let log = log_says(process, "authorization violation").await;
        assert!(
            !log.contains(&secret),
            "{} shows the seed:\n{log}",
            process.name()
        );
        assert!(
            !log.contains("panicked"),
            "{} panicked:\n{log}",
            process.name()
        );
    }

    // The CLI fails at once, naming the failure.
    let out = tokio::process::Command::new(binary("jetinfer").unwrap())
        .args(["--nats-url", &op.server.url(), "--nats-creds"])
        .arg(&expired)
        .arg("stats")
        .output()
        .await
        .expect("running jetinfer");
    let said = String::from_utf8_lossy(&out.stderr);
    println!("jetinfer stats with an expired user: {}", said.trim());
    assert!(!out.status.success(), "jetinfer stats succeeded: {said}");
    assert!(said.contains("authorization violation"), "{said}");
    assert!(said.contains("NATS"), "{said}");
    assert!(
        !said.contains(&seed(&other)) && !said.contains("SU"),
        "{said}"
    );
}
