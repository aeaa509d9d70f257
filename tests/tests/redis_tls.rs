//! jetinfer against a Redis that speaks only TLS, trusts a private CA, requires a client
//! certificate (`tls-auth-clients yes`) and an ACL user with a password (the default user
//! off): the store connects with `StoreConfig.tls`, the whole pipeline runs with
//! `--redis-tls-ca/--redis-tls-cert/--redis-tls-key`, and every wrong setting (another CA, no
//! client certificate, a wrong password, plain `redis://`, a missing file) is refused with
//! a message naming it. Certificates are made with the `openssl` command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jetinfer_client::{Client, ResultStore, StoreConfig, StoreError};
use jetinfer_devkit::local::{binary, repo_root, LocalStack, Process, RedisServer};
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, publish_samples, run_id};

const USER: &str = "jetinfer";
const PASSWORD: &str = "rs3cret-pw";

/// A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and an
/// unrelated CA (`other-ca.pem`), made with `openssl` in `dir`.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for ca in ["ca", "other-ca"] {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "1",
            "-subj",
            &format!("/CN=jetinfer test {ca}"),
        ]);
    }
    for (name, cn) in [("server", "127.0.0.1"), ("client", "jetinfer-worker")] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}

/// A port nothing listens on right now (the kernel's pick; released before use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// redis-server with TCP only over TLS (mutual: client certificates required) on
/// 127.0.0.1, and the default user off: only `jetinfer` with its password gets in.
struct TlsRedis {
    certs: tempfile::TempDir,
    port: u16,
    // Dropped last: the server outlives nothing that points at it.
    _server: RedisServer,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let certs = tempfile::tempdir().unwrap();
        make_certs(certs.path());
        let file = |f: &str| certs.path().join(f).display().to_string();
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ];
        // Config directives on the command line: `user <name> <rules…>`.
        for rule in [
            format!("{USER} on >{PASSWORD} ~* &* +@all"),
            "default off".to_string(),
        ] {
            args.push("--user".into());
            args.extend(rule.split(' ').map(String::from));
        }
        // (`--port 0`: no plain TCP; the devkit's own Unix socket serves its readiness PING.)
        let server = RedisServer::start_with_args(args)
            .unwrap_or_else(|e| panic!("starting redis-server with TLS: {e}"));
        TlsRedis {
            certs,
            port,
            _server: server,
        }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    /// `rediss://jetinfer:<password>@127.0.0.1:<port>`.
    fn url(&self) -> String {
        format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// The store settings that work: our CA, the client certificate and key.
    fn store_config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(self.url());
        config.tls.ca = Some(self.cert("ca.pem"));
        config.tls.cert = Some(self.cert("client.pem"));
        config.tls.key = Some(self.cert("client.key"));
        config
    }

    /// The flags the dispatcher and the workers get (URL aside).
    fn flags(&self, ca: &str) -> Vec<String> {
        [
            ("--redis-tls-ca", ca),
            ("--redis-tls-cert", "client.pem"),
            ("--redis-tls-key", "client.key"),
        ]
        .into_iter()
        .flat_map(|(flag, file)| [flag.to_string(), self.cert(file).display().to_string()])
        .collect()
    }
}

/// The error of a first connection with `config`, which must be a refusal (Redis answered,
/// retrying cannot help) without the password in it.
async fn refusal(config: &StoreConfig) -> String {
    let store = ResultStore::new(config).expect("the settings themselves are well-formed");
    let err = store
        .check()
        .await
        .expect_err("connected with a wrong setting");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::Refused { .. }),
        "not a refusal: {err:?}"
    );
    assert!(!text.contains(PASSWORD), "the password shows: {text}");
    assert!(text.contains("127.0.0.1"), "no address: {text}");
    // `connect` (what processes call at startup) fails the same way.
    assert!(ResultStore::connect(config).await.is_err());
    text
}

#[tokio::test]
async fn the_store_works_over_mutual_tls_as_an_acl_user() {
    let redis = TlsRedis::start();
    let store = ResultStore::connect(&redis.store_config())
        .await
        .unwrap_or_else(|e| panic!("connecting over TLS: {e}"));
    store.check().await.unwrap();
    let id = run_id("redis-tls");
    store
        .put_inputs(&id, b"over tls", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get_inputs(&[&id]).await.unwrap(),
        vec![Some(b"over tls".to_vec())]
    );
}

#[tokio::test]
async fn each_wrong_setting_is_refused_naming_what_failed() {
    let redis = TlsRedis::start();
    let good = redis.store_config();

    // The server's certificate is not signed by the CA we trust.
    let mut other_ca = good.clone();
    other_ca.tls.ca = Some(redis.cert("other-ca.pem"));
    let text = refusal(&other_ca).await;
    println!("other CA: {text}");
    assert!(
        text.contains("TLS handshake") && text.contains("other-ca.pem"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");

    // No CA: the system's trust store does not know our private CA either.
    let mut no_ca = good.clone();
    no_ca.tls.ca = None;
    let text = refusal(&no_ca).await;
    println!("no CA: {text}");
    assert!(text.contains("system's trust store"), "{text}");

    // The server requires a client certificate.
    let mut no_cert = good.clone();
    no_cert.tls.cert = None;
    no_cert.tls.key = None;
    let text = refusal(&no_cert).await;
    println!("no client certificate: {text}");
    assert!(text.contains("no client certificate"), "{text}");

    // TLS is fine, the password is not.
    let mut wrong_password = good.clone();
    wrong_password.url = format!("rediss://{USER}:nope-pw@127.0.0.1:{}", redis.port);
    let text = refusal(&wrong_password).await;
    println!("wrong password: {text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("nope-pw"), "{text}");

    // Plain redis:// to the TLS port (and no TLS files: they would be refused earlier).
    let plain = StoreConfig::new(format!(
        "redis://{USER}:{PASSWORD}@127.0.0.1:{}",
        redis.port
    ));
    let text = refusal(&plain).await;
    println!("plain redis://: {text}");
    assert!(text.contains("rediss://"), "{text}");

    // Nothing listening: unreachable, not refused (it may come up), and `connect` lets
    // the process start as before.
    let mut nobody = good.clone();
    nobody.url = format!("rediss://127.0.0.1:{}", free_port());
    let err = ResultStore::new(&nobody)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    ResultStore::connect(&nobody).await.unwrap();
}

#[tokio::test]
async fn bad_tls_files_fail_when_the_store_is_made() {
    let redis = TlsRedis::start();
    let good = redis.store_config();
    let err_of = |config: &StoreConfig| match ResultStore::new(config) {
        Ok(_) => panic!("made a store with {:?}", config.tls),
        Err(e) => e,
    };

    let mut missing = good.clone();
    missing.tls.ca = Some(redis.cert("nowhere/ca.pem"));
    let err = err_of(&missing);
    println!("missing CA file: {err}");
    assert!(
        matches!(err, StoreError::TlsFile { what: "CA", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("nowhere/ca.pem"), "{err}");

    // A key where the certificate belongs.
    let mut swapped = good.clone();
    swapped.tls.cert = Some(redis.cert("client.key"));
    let err = err_of(&swapped);
    println!("key as certificate: {err}");
    assert!(err.to_string().contains("client certificate"), "{err}");

    let mut half = good.clone();
    half.tls.key = None;
    assert!(matches!(err_of(&half), StoreError::TlsConfig(_)));

    // TLS files with a plain URL: refused rather than silently unused.
    let mut plain = good.clone();
    plain.url = format!("redis://127.0.0.1:{}", redis.port);
    let err = err_of(&plain);
    println!("TLS files, plain URL: {err}");
    assert!(err.to_string().contains("not rediss://"), "{err}");
}

#[tokio::test]
async fn check_config_prints_the_tls_files_without_the_password() {
    let redis = TlsRedis::start();
    let models = repo_root().unwrap().join("models/out/models.toml");
    let worker_args = vec!["--models".to_string(), models.display().to_string()];
    for (program, own_args) in [
        ("jetinfer-dispatcher", Vec::new()),
        ("jetinfer-worker", worker_args),
    ] {
        let out = std::process::Command::new(binary(program).unwrap())
            .arg("--check-config")
            .args(own_args)
            .arg("--redis-url")
            .arg(redis.url())
            .args(redis.flags("ca.pem"))
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{program}: {out:?}");
        for file in ["ca.pem", "client.pem", "client.key"] {
            let path = redis.cert(file).display().to_string();
            assert!(shown.contains(&path), "{program} hides {file}: {shown}");
        }
        assert!(!shown.contains(PASSWORD), "{program} shows the password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_redis_with_mutual_tls() {
    let redis = TlsRedis::start();
    let flags = redis.flags("ca.pem");
    let mut stack = LocalStack::builder()
        .redis_url(redis.url())
        .dispatcher_args(flags.clone())
        .worker_args(flags)
        .workers(1)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let client = Client::connect(stack.nats_url(), &redis.store_config())
        .await
        .unwrap();
    let jobs = publish_samples(&client, "mlp", 40, Priority::P1, &run_id("redis-tls")).await;
    assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_and_a_dispatcher_that_trust_another_ca_exit_saying_so() {
    let redis = TlsRedis::start();
    let mut stack = LocalStack::builder()
        .redis_url(redis.url())
        .dispatcher(false)
        .workers(0)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let wrong = redis.flags("other-ca.pem");
    stack.start_dispatcher(wrong.clone()).unwrap();
    stack.start_worker(wrong).unwrap();
    let ca = redis.cert("other-ca.pem");
    exits_naming_the_ca(stack.dispatcher().unwrap(), &ca).await;
    exits_naming_the_ca(&mut stack.workers()[0], &ca).await;
}

/// `process` exits, unsuccessfully, within 60 s, and its error names the TLS failure and the
/// CA it trusted.
async fn exits_naming_the_ca(process: &mut Process, ca: &Path) {
    let status = process.wait_exit_async(Duration::from_secs(60)).await;
    let text = process.log();
    let status = status.unwrap_or_else(|| {
        panic!(
            "{} still runs with an untrusted CA; log:\n{text}",
            process.name()
        )
    });
    assert!(!status.success(), "{}: {status}", process.name());
    println!("{}: {}", process.name(), text.trim());
    // The error line itself (the startup line prints the CA path too).
    let said = format!(
        "refused the connection: TLS handshake failed (CA {}",
        ca.display()
    );
    assert!(
        text.lines().any(|line| line.contains(&said)),
        "{} does not say what failed:\n{text}",
        process.name()
    );
    assert!(!text.contains(PASSWORD), "the password shows:\n{text}");
}
