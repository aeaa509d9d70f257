//! Starts real nats-server and redis-server processes (the venv's nats-server, redis-server
//! from PATH) and uses them the way jetinfer does.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use deadpool_redis::redis::AsyncCommands;

use super::*;

#[tokio::test]
async fn servers_start_serve_and_restart() {
    let mut nats = NatsServer::start().expect("nats-server starts");
    let mut redis = RedisServer::start().expect("redis-server starts");
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
    assert!(redis.url().starts_with("redis+unix:///"));
    assert_ne!(nats.pid(), redis.pid());

    // JetStream: a file-backed stream, one message, acked by the server.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "T".into(),
        subjects: vec!["t.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("t.a", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for_stream(&js, Duration::from_secs(1))
        .await
        .expect_err("no JETINFER_JOBS stream here");

    // Redis through the same pool type the store uses, from the server's URL.
    let pool = deadpool_redis::Config::from_url(redis.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let _: () = conn.set("k", b"v".as_slice()).await.unwrap();
    let v: Vec<u8> = conn.get("k").await.unwrap();
    assert_eq!(v, b"v");
    drop(conn);
    let store =
        jetinfer_client::ResultStore::new(&jetinfer_client::StoreConfig::new(redis.url())).unwrap();
    store.ping().await.unwrap();
    assert!(store.get("nothing").await.unwrap().is_none());

    // Kill and restart NATS: same port, and the stream and its message survive.
    let (port, old_pid) = (nats.port(), nats.pid());
    nats.kill();
    assert!(!nats.is_running());
    nats.restart().expect("nats-server restarts");
    assert_eq!(nats.port(), port);
    assert_ne!(nats.pid(), old_pid);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let mut s = js.get_stream("T").await.unwrap();
    assert_eq!(
        s.info().await.unwrap().state.messages,
        1,
        "the message survived the kill"
    );
    assert!(nats.log().contains("Server is ready"), "{}", nats.log());

    // Redis restarts on the same socket, empty.
    redis.restart().unwrap();
    let mut conn = pool.get().await.unwrap();
    let v: Option<Vec<u8>> = conn.get("k").await.unwrap();
    assert_eq!(v, None);

    redis.stop();
    nats.stop();
    assert!(!redis.is_running() && !nats.is_running());
}

#[tokio::test]
async fn waiting_for_workers_sees_heartbeats() {
    use jetinfer_schemas::worker::{Heartbeat, ModelInfo};
    let nats = NatsServer::start().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let beat = |worker: &str, accepting: bool, models: usize| Heartbeat {
        v: 1,
        worker: worker.into(),
        models: (0..models)
            .map(|_| ModelInfo {
                name: "mlp".into(),
                version: "1".into(),
                max_batch_size: 8,
                inputs: vec![],
                batch_ms: None,
            })
            .collect(),
        slots: 8,
        free_slots: 8,
        devices: vec!["cpu".into()],
        gpu_memory_bytes: None,
        accepting,
        sent_at_ms: 0,
        load_errors: Vec::new(),
        load: None,
    };
    let publisher = client.clone();
    let announce = tokio::spawn(async move {
        for _ in 0..50 {
            for hb in [
                beat("a", true, 1),
                beat("b", false, 1),
                beat("c", true, 0),
                beat("d", true, 2),
            ] {
                let bytes = jetinfer_schemas::encode(&hb);
                publisher
                    .publish(
                        jetinfer_schemas::names::heartbeat_subject(&hb.worker),
                        bytes.into(),
                    )
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let ready = wait_for_workers(&client, 2, Duration::from_secs(5))
        .await
        .unwrap();
    let ids: Vec<&str> = ready.iter().map(|h| h.worker.as_str()).collect();
    assert_eq!(ids, ["a", "d"]);
    let err = wait_for_workers(&client, 3, Duration::from_millis(300))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("b (not accepting)") && err.contains("c (no models)"),
        "{err}"
    );
    announce.abort();
}
