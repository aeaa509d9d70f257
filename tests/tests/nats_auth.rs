//! jetinfer against a NATS server that requires credentials: user/password and token, given
//! in the URL or as settings, the whole pipeline with them, mutual TLS with a private CA
//! (certificates made by the `openssl` command), and a clear refusal when any of them is
//! wrong or missing.

use std::time::Duration;

use futures::StreamExt;
use jetinfer_client::{ConnectError, NatsAuth, NatsSettings};
use jetinfer_devkit::local::{LocalStack, NatsServer};
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, publish_samples, run_id};

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

/// The refusal of `settings`, which must name an authorization failure and hide secrets.
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

#[tokio::test]
async fn user_and_password_from_the_url_or_the_settings() {
    let server = NatsServer::start_with_args(["--user", "svc", "--pass", "s3cret"]).unwrap();
    let port = server.port();
    let in_url = NatsSettings::new(format!("nats://svc:s3cret@127.0.0.1:{port}"));
    round_trip(&in_url.connect().await.unwrap()).await;
    let in_settings = NatsSettings {
        auth: NatsAuth::UserPassword {
            user: "svc".into(),
            password: "s3cret".into(),
        },
        ..NatsSettings::new(server.url())
    };
    round_trip(&in_settings.connect().await.unwrap()).await;

    println!(
        "missing: {}",
        refused(NatsSettings::new(server.url()), "s3cret").await
    );
    let wrong = NatsSettings::new(format!("nats://svc:wrong@127.0.0.1:{port}"));
    println!("wrong: {}", refused(wrong, "wrong").await);
}

#[tokio::test]
async fn a_token_from_the_url_or_the_settings() {
    let server = NatsServer::start_with_args(["--auth", "tok3n"]).unwrap();
    let port = server.port();
    let in_url = NatsSettings::new(format!("nats://tok3n@127.0.0.1:{port}"));
    round_trip(&in_url.connect().await.unwrap()).await;
    let in_settings = NatsSettings {
        auth: NatsAuth::Token("tok3n".into()),
        ..NatsSettings::new(server.url())
    };
    round_trip(&in_settings.connect().await.unwrap()).await;
    refused(NatsSettings::new(server.url()), "tok3n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_a_nats_that_requires_credentials() {
    let server = NatsServer::start_with_args(["--user", "svc", "--pass", "s3cret"]).unwrap();
    let url = format!("nats://svc:s3cret@127.0.0.1:{}", server.port());
    // The dispatcher and the worker get the URL with its credentials (--nats-url).
    let mut stack = LocalStack::builder()
        .nats_url(&url)
        .workers(1)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let client = stack.client().await.unwrap();
    let jobs = publish_samples(&client, "mlp", 40, Priority::P1, &run_id("auth")).await;
    assert_all_correct(&client, &jobs, Duration::from_secs(60)).await;
    stack.stop();
}

/// A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with
/// the `openssl` command in `dir`.
fn make_certs(dir: &std::path::Path) {
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
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=jetinfer test CA",
    ]);
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

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let path = |f: &str| dir.path().join(f).display().to_string();
    let server = NatsServer::start_with_args([
        "--tlsverify".to_string(),
        "--tlscert".to_string(),
        path("server.pem"),
        "--tlskey".to_string(),
        path("server.key"),
        "--tlscacert".to_string(),
        path("ca.pem"),
    ])
    .unwrap();
    let tls = jetinfer_client::NatsTls {
        ca: Some(dir.path().join("ca.pem")),
        cert: Some(dir.path().join("client.pem")),
        key: Some(dir.path().join("client.key")),
    };
    let settings = NatsSettings {
        tls: tls.clone(),
        ..NatsSettings::new(server.url())
    };
    round_trip(&settings.connect().await.unwrap()).await;

    // Without a client certificate the server refuses; without the CA the client does.
    let no_cert = NatsSettings {
        tls: jetinfer_client::NatsTls {
            cert: None,
            key: None,
            ..tls.clone()
        },
        ..NatsSettings::new(server.url())
    };
    let err = no_cert
        .connect()
        .await
        .expect_err("connected without a client certificate");
    println!("no client certificate: {err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let untrusted = NatsSettings {
        tls: jetinfer_client::NatsTls { ca: None, ..tls },
        ..NatsSettings::new(server.url())
    };
    let err = untrusted
        .connect()
        .await
        .expect_err("trusted an unknown CA");
    println!("unknown CA: {err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
