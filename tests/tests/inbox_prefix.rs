//! Replies under a prefix of one's own (`--nats-inbox-prefix`, `ClientBuilder::inbox_prefix`):
//! with it, a server can let each role receive only its own replies (`_INBOX_<role>.>`)
//! instead of everybody's `_INBOX.>` — JetStream publish acks, pulled jobs and run replies
//! carry other producers' data.
//!
//! The server here lets the dispatcher and the worker receive only `_INBOX_dispatcher.>`
//! and `_INBOX_worker.>` besides the `jetinfer.>` subjects, and a producer only
//! `_INBOX_producer.>` besides the completion notices: the whole pipeline runs with the
//! prefixes, a producer without one is refused its publish acks, and a user allowed
//! `_INBOX.>` sees none of the prefixed replies.

use std::time::Duration;

use futures::StreamExt;
use jetinfer_client::{Client, NatsSettings};
use jetinfer_devkit::local::{wait_for_workers, LocalStack, NatsServer, ProcessUrls, RedisServer};
use jetinfer_schemas::{Job, Priority, Tensor};
use jetinfer_tests::{assert_all_correct, publish_samples, run_id};

const CONFIG: &str = r#"
jetstream: enabled
accounts: {
  J: {
    jetstream: enabled
    users: [
      { user: admin, password: a }
      { user: svc, password: s, permissions: {
          subscribe: { allow: ["jetinfer.>", "_INBOX_dispatcher.>", "_INBOX_worker.>"] } } }
      { user: producer, password: p, permissions: {
          publish: { allow: ["jetinfer.jobs.>"] }
          subscribe: { allow: ["jetinfer.done.>", "_INBOX_producer.>"] } } }
      { user: snoop, password: n, permissions: {
          publish: { allow: ["jetinfer.jobs.>"] }
          subscribe: { allow: ["_INBOX.>"] } } }
    ]
  }
}
"#;

fn url(server: &NatsServer, user: &str, password: &str) -> String {
    format!("nats://{user}:{password}@127.0.0.1:{}", server.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_receives_only_replies_under_its_own_prefix() {
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), CONFIG).unwrap();
    let nats =
        NatsServer::start_with_args(["-c".to_string(), conf.path().display().to_string()]).unwrap();
    let redis = RedisServer::start().unwrap();
    let svc = url(&nats, "svc", "s");
    // The harness itself connects as admin; the dispatcher and the worker as svc, each
    // with its own prefix (without one, svc may not receive its replies: they would not start).
    let mut stack = LocalStack::builder()
        .nats_url(url(&nats, "admin", "a"))
        .redis_url(redis.url())
        .dispatcher_urls(&svc, redis.url())
        .dispatcher_args(["--nats-inbox-prefix", "_INBOX_dispatcher"])
        .workers(0)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the stack: {e}"));
    stack
        .start_worker_with_urls(
            ProcessUrls::new(&svc, redis.url()),
            ["--nats-inbox-prefix", "_INBOX_worker"],
        )
        .unwrap();
    let admin = stack.connect_nats().await.unwrap();
    wait_for_workers(&admin, 1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("worker: {e}\n{}", stack.log_tails(20)));

    // A user allowed everybody's `_INBOX.>` listens while the producer works.
    // (URL credentials: async-nats alone would drop them; NatsSettings uses them.)
    let snoop = NatsSettings::new(url(&nats, "snoop", "n"))
        .connect()
        .await
        .unwrap();
    let mut overheard = snoop.subscribe("_INBOX.>").await.unwrap();
    snoop.flush().await.unwrap();

    let producer = Client::builder(url(&nats, "producer", "p"))
        .redis(redis.url())
        .inbox_prefix("_INBOX_producer")
        .connect()
        .await
        .unwrap();
    let jobs = publish_samples(&producer, "mlp", 20, Priority::P1, &run_id("inbox")).await;
    assert_all_correct(&producer, &jobs, Duration::from_secs(60)).await;
    let heard = tokio::time::timeout(Duration::from_millis(500), overheard.next()).await;
    assert!(
        heard.is_err(),
        "a prefixed reply reached `_INBOX.>`: {heard:?}"
    );

    // Without its prefix the producer may not receive its publish acks: refused, not lost.
    let unprefixed = Client::builder(url(&nats, "producer", "p"))
        .redis(redis.url())
        .connect()
        .await
        .unwrap();
    let job = Job::new(
        format!("{}-x", run_id("noprefix")),
        "mlp",
        vec![Tensor::from_f32(vec![16], &[0.5; 16])],
    );
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        unprefixed.submit(Priority::P1, &job),
    )
    .await
    .expect("the refusal comes within the publish timeout");
    assert!(
        refused.is_err(),
        "published without a reply subject it may receive: {refused:?}"
    );
}
