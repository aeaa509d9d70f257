//! jetinfer on a 3-node NATS cluster with replicated (R3) streams, under steady load: the
//! node that leads the P1 jobs stream (and its consumer, and holds the dispatcher's
//! connection), or the JetStream meta leader, is killed (SIGKILL) → every job still gets
//! exactly one correct result, and the time from the kill to the next result is reported;
//! the node is restarted → its copy of the stream catches up with the leader's. A
//! dispatcher started with `--replicas 3` scales single-replica streams up.
//!
//! Real processes throughout: three nats-servers ([`NatsCluster`]), redis-server, the
//! dispatcher (`--replicas 3`) and a worker, all connected with the list of the three
//! nodes' URLs; outputs are compared with PyTorch's golden outputs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use jetinfer_client::Client;
use jetinfer_devkit::golden::{compare, Sample};
use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_schemas::names::{consumer_name, jobs_stream, DLQ_STREAM};
use jetinfer_schemas::{now_ms, Job, Priority, Status};
use jetinfer_tests::cluster::NatsCluster;
use jetinfer_tests::load::{is_wrong, ran_twice, wait_for_executions};
use jetinfer_tests::{collect_results, golden, run_id, ATOL, RTOL};
use tokio::task::JoinSet;

/// Jobs published in all, at [`RATE`] per second: ten seconds of steady load.
const JOBS: usize = 600;
const RATE: f64 = 60.0;
/// The P1 leader is killed once this many results are in: load is flowing, and most of
/// the jobs are still to come.
const KILL_AFTER_RESULTS: usize = 150;
/// How long one publish is retried (with the same id) before the job counts as refused.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(60);
/// How long a publish waits for JetStream's acknowledgement before it is tried again.
const PUBLISH_ATTEMPT: Duration = Duration::from_secs(5);

/// The longest acceptable time from the kill to the first result of a job published after
/// it.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);

/// The dispatcher's id, also the name of its NATS connection (found in `/connz`).
const DISPATCHER_ID: &str = "cluster-dispatcher";

/// The dispatcher on the cluster: R3 streams (and so R3 consumers), and a short ack wait
/// so a job whose ack was lost in the failover comes back within seconds.
const DISPATCHER_ARGS: &[&str] = &[
    "--id",
    DISPATCHER_ID,
    "--replicas",
    "3",
    "--ack-wait-ms",
    "4000",
    "--heartbeat-timeout-ms",
    "2000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_p1_stream_leader_loses_no_job_and_it_catches_up() {
    failover(Victim::P1Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_jetstream_meta_leader_loses_no_job_and_it_catches_up() {
    failover(Victim::MetaLeader).await;
}

/// Which node a failover test kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// The leader of P1's stream and consumer, holding the dispatcher's connection too.
    P1Leader,
    /// The JetStream meta leader (stream and consumer creation, placement, API requests
    /// about them), with P1's stream and consumer led elsewhere: jobs should hardly notice.
    MetaLeader,
}

/// Under steady P1 load, kills `victim`, checks every job, restarts the node and waits
/// for its copy of the P1 stream to catch up.
async fn failover(victim: Victim) {
    let mut cluster = NatsCluster::start(3)
        .await
        .unwrap_or_else(|e| panic!("starting the NATS cluster: {e}"));
    let log_dir = repo_root()
        .unwrap()
        .join("target/cluster-logs")
        .join(match victim {
            Victim::P1Leader => "p1-leader-killed",
            Victim::MetaLeader => "meta-leader-killed",
        });
    let _ = std::fs::remove_dir_all(&log_dir);
    let stack = LocalStack::builder()
        .nats_url(cluster.urls())
        .workers(1)
        .dispatcher_args(DISPATCHER_ARGS.iter().copied())
        .worker_args(["--record-executions"])
        .env("RUST_LOG", "info")
        .log_dir(&log_dir)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting jetinfer on the cluster: {e}"));
    let client = stack.client().await.expect("client on the cluster");
    let js = client.jetstream().clone();

    // Every priority's stream and consumer are replicated on all three nodes.
    for p in Priority::ALL {
        assert_replicated(&js, p, 3).await;
    }
    assert_eq!(dlq_replicas(&js).await, 3, "dead-letter stream replicas");

    // P1 killed: the worst case, the node the dispatcher is connected to leads both P1's
    // stream and its consumer, so the kill takes the dispatcher's connection, the stream's
    // leader and the consumer's leader at once. Meta leader killed: P1's leaders are moved
    // off it, so only the meta leader goes.
    let p1_home = match victim {
        Victim::P1Leader => cluster
            .node_of_client(DISPATCHER_ID)
            .await
            .expect("the dispatcher's connection on some node"),
        Victim::MetaLeader => {
            let meta = cluster
                .wait_for_meta_leader(Duration::from_secs(30))
                .await
                .expect("a meta leader");
            cluster
                .names()
                .into_iter()
                .find(|n| *n != meta)
                .expect("another node")
        }
    };
    for group in [Group::Stream, Group::Consumer] {
        move_leader_to(&client, &js, Priority::P1, group, &p1_home).await;
    }

    let samples = golden().samples("mlp");
    assert!(!samples.is_empty(), "no golden samples for mlp");
    let load = tokio::spawn(publish_steadily(
        client.clone(),
        samples.clone(),
        run_id("cluster"),
    ));

    // Kill the victim while jobs flow (leaders may have moved meanwhile: the node leading
    // now is killed, whatever else it holds).
    wait_for_executions(&client, KILL_AFTER_RESULTS, Duration::from_secs(60)).await;
    let leader = stream_leader(&js, Priority::P1).await;
    let consumer_leader = leader_of(&js, Priority::P1, Group::Consumer).await;
    let dispatcher_on = cluster.node_of_client(DISPATCHER_ID).await;
    let worker_on = cluster.node_of_client("worker-0").await;
    let meta_leader = cluster
        .wait_for_meta_leader(Duration::from_secs(30))
        .await
        .expect("a meta leader");
    let killed = match victim {
        Victim::P1Leader => leader.clone(),
        Victim::MetaLeader => meta_leader.clone(),
    };
    cluster.kill(&killed);
    let killed_ms = now_ms();
    eprintln!(
        "killed {killed} ({victim:?}); P1 stream leader {leader}, its consumer's leader \
         {consumer_leader:?}, meta leader {meta_leader}; the dispatcher was connected to \
         {dispatcher_on:?}, the worker to {worker_on:?}"
    );

    let published = load.await.expect("publishing task");
    let refused: Vec<&Published> = published.iter().filter(|p| !p.acked).collect();
    assert!(
        refused.is_empty(),
        "{} of {JOBS} publishes were never acknowledged (producers retried for {PUBLISH_PATIENCE:?}), e.g. {}",
        refused.len(),
        refused[0].id
    );
    let retried = published.iter().filter(|p| p.attempts > 1).count();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &published {
        if let Some(e) = &p.first_error {
            *reasons.entry(e.as_str()).or_default() += 1;
        }
    }
    eprintln!("publishes retried: {retried}, first failures by reason: {reasons:?}");

    // Every job: one result, ok, equal to PyTorch's outputs.
    let ids: Vec<String> = published.iter().map(|p| p.id.clone()).collect();
    let results = collect_results(&client, &ids, Duration::from_secs(120)).await;
    let lost: Vec<&String> = ids.iter().filter(|id| !results.contains_key(*id)).collect();
    let wrong: Vec<&Published> = published
        .iter()
        .filter(|p| is_wrong(&results, &p.id, &samples[p.sample]))
        .collect();
    let executions = client.store().executions().await.expect("execution counts");
    let twice = ran_twice(&executions, &ids);

    // Recovery: from the kill to the next result, and to the first result of a job whose
    // first publish came after the kill (the whole path through the new leader).
    let next_result_ms = results
        .values()
        .map(|r| r.completed_at_ms)
        .filter(|&t| t >= killed_ms)
        .min();
    let first_new_ms = published
        .iter()
        .filter(|p| p.first_attempt_ms >= killed_ms)
        .filter_map(|p| results.get(&p.id).map(|r| r.completed_at_ms))
        .min();
    // Publishing recovers when the new stream leader is elected; this is its first ack.
    let first_ack_ms = published
        .iter()
        .filter(|p| p.acked && p.attempts > 1 && p.acked_ms >= killed_ms)
        .map(|p| p.acked_ms)
        .min();
    let new_leader = stream_leader(&js, Priority::P1).await;
    eprintln!(
        "cluster failover: published {}, results {}, lost {}, wrong {}, executed twice {}, \
         publishes retried {retried}; P1 leader {leader} -> {new_leader}; \
         kill -> first retried publish acknowledged {} ms, kill -> next result {} ms, \
         kill -> first result of a job published after the kill {} ms",
        published.len(),
        results.len(),
        lost.len(),
        wrong.len(),
        twice.len(),
        fmt_ms(first_ack_ms.map(|t| t - killed_ms)),
        fmt_ms(next_result_ms.map(|t| t - killed_ms)),
        fmt_ms(first_new_ms.map(|t| t - killed_ms)),
    );
    assert!(
        lost.is_empty(),
        "lost jobs, e.g. {:?} (logs in {})",
        &lost[..lost.len().min(5)],
        log_dir.display()
    );
    assert!(
        wrong.is_empty(),
        "wrong results, e.g. {}: {:?}",
        wrong[0].id,
        results[&wrong[0].id].error
    );
    assert!(
        twice.is_empty(),
        "jobs executed more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
    match victim {
        Victim::P1Leader => assert_ne!(new_leader, killed, "the killed node still leads P1"),
        Victim::MetaLeader => {
            // Survivors name the killed node until they elect another: the check is that all
            // of them agree on another node within 30 s.
            cluster
                .wait_for_meta_leader_other_than(Some(&killed), Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("no new meta leader: {e}"));
        }
    }
    let recovery_ms = first_new_ms
        .map(|t| t - killed_ms)
        .expect("no job was published after the kill; the test proves nothing");
    // 5-10 s is what the elections take here; 20 s catches a consumer that stays silent
    // until its pull request expires (30 s), as an unanswered info request could cause.
    assert!(
        recovery_ms < RECOVERY_BOUND.as_millis() as u64,
        "jobs published after the kill took {recovery_ms} ms to get a result (bound \
         {RECOVERY_BOUND:?}; logs in {})",
        log_dir.display()
    );

    // Restart the node: its own copy of the stream reaches the leader's last sequence, and
    // the leader reports it current.
    let restarted_at = tokio::time::Instant::now();
    cluster
        .restart(&killed)
        .await
        .unwrap_or_else(|e| panic!("restarting {killed}: {e}"));
    let stream = jobs_stream(Priority::P1);
    let deadline = restarted_at + Duration::from_secs(60);
    loop {
        let info = js
            .get_stream(stream)
            .await
            .expect("P1 stream")
            .info()
            .await
            .expect("P1 stream info")
            .clone();
        let on_node = cluster.replica_state(&killed, stream).await.ok().flatten();
        let current = info
            .cluster
            .as_ref()
            .map(|c| {
                c.leader.as_deref() == Some(killed.as_str())
                    || c.replicas
                        .iter()
                        .any(|r| r.name == killed && r.current && !r.offline)
            })
            .unwrap_or(false);
        let caught_up = on_node.is_some_and(|s| {
            s.last_seq == info.state.last_sequence && s.first_seq == info.state.first_sequence
        });
        if current && caught_up {
            eprintln!(
                "{killed} caught up in {} ms: last sequence {} on it and on the leader",
                restarted_at.elapsed().as_millis(),
                info.state.last_sequence
            );
            assert!(
                info.state.last_sequence >= JOBS as u64,
                "the P1 stream saw {} messages, fewer than the {JOBS} jobs",
                info.state.last_sequence
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{killed} did not catch up within 60 s: its copy {on_node:?}, the leader's last \
             sequence {} (first {}), replicas {:?}",
            info.state.last_sequence,
            info.state.first_sequence,
            info.cluster.map(|c| c.replicas)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `p`'s stream and its durable consumer are both spread over `replicas` nodes (a leader
/// and `replicas - 1` followers), once their groups have a leader; waits up to 30 s (a
/// dispatcher may still be updating them).
async fn assert_replicated(js: &jetstream::Context, p: Priority, replicas: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = js.get_stream(jobs_stream(p)).await.expect("jobs stream");
        let info = stream.info().await.expect("stream info").clone();
        let mut consumer: consumer::PullConsumer = stream
            .get_consumer(&consumer_name(p))
            .await
            .expect("priority consumer");
        let cinfo = consumer.info().await.expect("consumer info").clone();
        let followers = |c: &Option<async_nats::jetstream::stream::ClusterInfo>| {
            c.as_ref()
                .filter(|c| c.leader.is_some())
                .map(|c| c.replicas.len())
        };
        if info.config.num_replicas == replicas
            && followers(&info.cluster) == Some(replicas - 1)
            && followers(&cinfo.cluster) == Some(replicas - 1)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{p}: stream replicas {}, stream cluster {:?}, consumer cluster {:?}: not \
             replicated {replicas} times",
            info.config.num_replicas,
            info.cluster,
            cinfo.cluster
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The dead-letter stream's replicas, once it exists.
async fn dlq_replicas(js: &jetstream::Context) -> usize {
    let mut dlq = js.get_stream(DLQ_STREAM).await.expect("dead-letter stream");
    dlq.info()
        .await
        .expect("dead-letter stream info")
        .config
        .num_replicas
}

/// The server name of the node leading `p`'s jobs stream (waits for one to be elected).
async fn stream_leader(js: &jetstream::Context, p: Priority) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let leader = match js.get_stream(jobs_stream(p)).await {
            Ok(mut s) => s
                .info()
                .await
                .ok()
                .and_then(|i| i.cluster.clone())
                .and_then(|c| c.leader),
            Err(_) => None,
        };
        if let Some(leader) = leader {
            return leader;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{p}'s stream has no leader"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams a dispatcher made with one replica (the default) become R3, consumers too, when
/// a dispatcher starts with `--replicas 3`: a single-replica deployment is moved onto the
/// cluster's replication by restarting its dispatcher, keeping the jobs queued meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_with_replicas_3_scales_existing_streams_up() {
    let cluster = NatsCluster::start(3)
        .await
        .unwrap_or_else(|e| panic!("starting the NATS cluster: {e}"));
    let mut stack = LocalStack::builder()
        .nats_url(cluster.urls())
        .workers(0)
        .env("RUST_LOG", "info")
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting a dispatcher on the cluster: {e}"));
    let client = stack.client().await.expect("client on the cluster");
    let js = client.jetstream().clone();
    for p in Priority::ALL {
        assert_replicated(&js, p, 1).await;
    }
    // Jobs waiting in the R1 stream must still be there after the change.
    let samples = golden().samples("mlp");
    let run = run_id("scale-up");
    for i in 0..20 {
        let mut job = Job::new(
            format!("{run}-{i}"),
            "mlp",
            samples[i % samples.len()].inputs.clone(),
        );
        // They wait for the worker to start, which may take longer than P1's default
        // deadline on a busy machine.
        job.deadline_ms = Some(now_ms() + 3_600_000);
        client.submit(Priority::P1, &job).await.expect("publish");
    }

    stack
        .start_dispatcher(["--replicas", "3"])
        .expect("restarting the dispatcher");
    for p in Priority::ALL {
        assert_replicated(&js, p, 3).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dlq_replicas(&js).await != 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead-letter stream stayed at one replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A worker now serves the jobs queued before the change.
    stack.start_worker(Vec::<String>::new()).expect("worker");
    let ids: Vec<String> = (0..20).map(|i| format!("{run}-{i}")).collect();
    let results = collect_results(&client, &ids, Duration::from_secs(60)).await;
    assert_eq!(
        results.len(),
        20,
        "jobs queued before the scale-up were lost"
    );
    for (i, id) in ids.iter().enumerate() {
        let r = &results[id];
        assert_eq!(r.status, Status::Ok, "job {id}: {:?}", r.error);
        compare(&samples[i % samples.len()].outputs, &r.outputs, ATOL, RTOL)
            .unwrap_or_else(|e| panic!("job {id} differs from PyTorch: {e}"));
    }
}

/// A Raft group of priority `p`: its jobs stream, or its durable consumer.
#[derive(Debug, Clone, Copy)]
enum Group {
    Stream,
    Consumer,
}

/// The server name of the node leading `p`'s `group`, if one is elected.
async fn leader_of(js: &jetstream::Context, p: Priority, group: Group) -> Option<String> {
    let mut stream = js.get_stream(jobs_stream(p)).await.ok()?;
    let cluster = match group {
        Group::Stream => stream.info().await.ok()?.cluster.clone(),
        Group::Consumer => {
            let mut consumer: consumer::PullConsumer =
                stream.get_consumer(&consumer_name(p)).await.ok()?;
            consumer.info().await.ok()?.cluster.clone()
        }
    };
    cluster?.leader
}

/// Asks the leader of `p`'s `group` to step down until `node` leads it (each step-down
/// elects one of the other replicas).
async fn move_leader_to(
    client: &Client,
    js: &jetstream::Context,
    p: Priority,
    group: Group,
    node: &str,
) {
    let subject = match group {
        Group::Stream => format!("$JS.API.STREAM.LEADER.STEPDOWN.{}", jobs_stream(p)),
        Group::Consumer => format!(
            "$JS.API.CONSUMER.LEADER.STEPDOWN.{}.{}",
            jobs_stream(p),
            consumer_name(p)
        ),
    };
    for _ in 0..12 {
        let Some(current) = leader_of(js, p, group).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if current == node {
            return;
        }
        let _ = client.nats().request(subject.clone(), "".into()).await;
        // Until a new leader is elected.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while leader_of(js, p, group).await.is_none_or(|l| l == current)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("the leader of {p}'s {group:?} did not move to {node}");
}

/// One job of the load.
struct Published {
    id: String,
    sample: usize,
    first_attempt_ms: u64,
    attempts: u32,
    acked: bool,
    /// Why the first try failed, if it did.
    first_error: Option<String>,
    /// When JetStream acknowledged it.
    acked_ms: u64,
}

/// Publishes [`JOBS`] golden `mlp` jobs at P1, [`RATE`] per second, each on a task of its
/// own so a publish stuck in the failover does not hold back the ones after it.
async fn publish_steadily(client: Client, samples: Vec<Sample>, run: String) -> Vec<Published> {
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..JOBS {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / RATE)).await;
        let sample = i % samples.len();
        let mut job = Job::new(format!("{run}-{i}"), "mlp", samples[sample].inputs.clone());
        // The samples repeat: without this, cache hits would skip the model and hide a job
        // run twice.
        job.cache = Some(false);
        // Far beyond any failover: this test measures loss, not expiry (P1's default
        // deadline is 30 s after publish).
        job.deadline_ms = Some(now_ms() + 3_600_000);
        let client = client.clone();
        tasks.spawn(async move {
            let first_attempt_ms = now_ms();
            let (acked, attempts, first_error) = publish_patiently(&client, &job).await;
            let acked_ms = now_ms();
            Published {
                id: job.id.to_string(),
                sample,
                first_attempt_ms,
                attempts,
                acked,
                first_error,
                acked_ms,
            }
        });
    }
    let mut out = tasks.join_all().await;
    out.sort_by_key(|p| p.first_attempt_ms);
    out
}

/// Publishes until JetStream acknowledges, with the same job id each time: a publish whose
/// ack was lost in the failover may have been stored, and the stream's duplicate window
/// (`Nats-Msg-Id`) keeps it once. The client retries by itself only when a stream is full,
/// so timeouts and "no responders" while a leader is elected are retried here, as a
/// careful producer would. Returns whether it was acknowledged, after how many tries, and
/// why the first try failed.
async fn publish_patiently(client: &Client, job: &Job<'_>) -> (bool, u32, Option<String>) {
    let give_up = tokio::time::Instant::now() + PUBLISH_PATIENCE;
    let mut attempts = 0;
    let mut first_error = None;
    loop {
        attempts += 1;
        let error =
            match tokio::time::timeout(PUBLISH_ATTEMPT, client.submit(Priority::P1, job)).await {
                Ok(Ok(_)) => return (true, attempts, first_error),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PUBLISH_ATTEMPT:?}"),
            };
        first_error.get_or_insert(error);
        if tokio::time::Instant::now() >= give_up {
            return (false, attempts, first_error);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn fmt_ms(ms: Option<u64>) -> String {
    ms.map_or("-".to_string(), |ms| ms.to_string())
}
