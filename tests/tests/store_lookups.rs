//! The result store's lookups on the job path against a real redis-server: which jobs have
//! a result (`exists_many`, `job_states`) when none, all or some do — one `EXISTS` naming
//! every job answers the first two, the third is asked job by job — and the services'
//! pool (`check_busy_connections = false`), which skips the check of busy connections,
//! recovering from a Redis restart: a failed command discards its connection.

use jetinfer_client::{ResultStore, ResultWrite, StoreConfig};
use jetinfer_devkit::local::RedisServer;

async fn store_with_results(redis: &RedisServer, stored: &[&str]) -> ResultStore {
    let store = ResultStore::new(&StoreConfig {
        check_busy_connections: false,
        ..StoreConfig::new(redis.url())
    })
    .unwrap();
    let writes: Vec<ResultWrite<'_>> = stored
        .iter()
        .map(|id| ResultWrite {
            id,
            bytes: b"result".to_vec(),
            drop_inputs: false,
        })
        .collect();
    assert!(store
        .put_results(&writes, &[])
        .await
        .unwrap()
        .iter()
        .all(|new| *new));
    store
}

#[tokio::test]
async fn lookups_tell_each_job_whether_it_has_a_result() {
    let redis = RedisServer::start().unwrap();
    let store = store_with_results(&redis, &["a", "b"]).await;
    store.add_failures(&["b", "c", "c"]).await.unwrap();

    // None, all, some, and a job named twice.
    assert_eq!(
        store.exists_many(&["x", "y"]).await.unwrap(),
        [false, false]
    );
    assert_eq!(store.exists_many(&["a", "b"]).await.unwrap(), [true, true]);
    assert_eq!(
        store.exists_many(&["x", "a", "y", "b"]).await.unwrap(),
        [false, true, false, true]
    );
    assert_eq!(store.exists_many(&["a", "a"]).await.unwrap(), [true, true]);
    assert_eq!(
        store.exists_many(&["a", "a", "x"]).await.unwrap(),
        [true, true, false]
    );

    assert_eq!(
        store.job_states(&["x", "c"]).await.unwrap(),
        [(false, 0), (false, 2)]
    );
    assert_eq!(
        store.job_states(&["a", "b"]).await.unwrap(),
        [(true, 0), (true, 1)]
    );
    assert_eq!(
        store.job_states(&["c", "a", "x", "b"]).await.unwrap(),
        [(false, 2), (true, 0), (false, 0), (true, 1)]
    );
}

#[tokio::test]
async fn a_busy_connection_broken_by_a_restart_is_replaced() {
    let mut redis = RedisServer::start().unwrap();
    let store = store_with_results(&redis, &["a"]).await;
    assert_eq!(store.exists_many(&["a"]).await.unwrap(), [true]);
    redis.kill();
    redis.restart().unwrap();
    // The pooled connection was busy a moment ago, so it is handed out unchecked: its
    // first command may fail, and that failure discards it.
    let _ = store.exists_many(&["a"]).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(store.exists_many(&["a"]).await.map_err(|e| e.to_string()));
    }
    // The restarted Redis is empty (no persistence here): every later lookup answers.
    assert!(
        answers.iter().all(|a| a.as_deref() == Ok(&[false][..])),
        "lookups after the restart: {answers:?}"
    );
}
