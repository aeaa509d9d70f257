//! The dispatcher lease: with more than one dispatcher, only the one holding it schedules.
//!
//! The lease is the key [`LEASE_KEY`] of the NATS KV bucket [`LEASE_BUCKET`], whose
//! `max_age` is the lease TTL. A dispatcher that `create`s the key (which succeeds only
//! while it is absent, deleted or expired) is active; it renews by compare-and-set
//! `update` against its last revision every TTL/3. A standby watches the key and tries
//! `create` again whenever it changes, and at least every TTL/3 (an expiry by `max_age`
//! leaves no marker to watch). An active dispatcher that finds the revision moved, or
//! cannot renew for 2/3 of the TTL (measured from when its last good renewal was *sent*,
//! so before the server can expire the key), has lost the lease: it must stop scheduling.
//! On a clean shutdown it deletes the key, so a standby takes over at once.
//!
//! Layout: [`Renewal`] is the pure verdict on renewal results (unit-tested with plain
//! instants); [`open`], [`acquire`] and [`Held::keep`] do the NATS I/O.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The KV bucket holding the dispatcher lease.
pub const LEASE_BUCKET: &str = "JETINFER_LEASES";
/// The key whose holder is the active dispatcher.
pub const LEASE_KEY: &str = "dispatcher";

/// Why the lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot open or create the lease bucket {LEASE_BUCKET}")]
    Bucket(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Another dispatcher holds the lease now (the revision moved), or renewals failed
    /// for too long: this one must stop scheduling.
    #[error("lost the dispatcher lease: {why}")]
    Lost { why: String },
}

/// This dispatcher's relation to the lease, as `/readyz` and the metric show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the lease; `active` names the holder when known.
    Standby { active: Option<String> },
    /// Holding the lease (or running without `--lease`).
    Active,
    /// Lost the lease; stopping.
    Lost,
}

impl Role {
    /// The `/readyz` word for this role.
    pub fn describe(&self) -> String {
        match self {
            Role::Standby { active: Some(id) } => format!("standby, active is {id}"),
            Role::Standby { active: None } => "standby".to_string(),
            Role::Active => "active".to_string(),
            Role::Lost => "lost the lease, stopping".to_string(),
        }
    }
}

/// What to do after a renewal attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Renewed (or a transient error well within the TTL): keep going.
    Keep,
    /// Stop scheduling now.
    Lost,
}

/// The pure state of renewals: when the last good one was sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Renewal {
    ttl: Duration,
    last_good_sent: Instant,
}

impl Renewal {
    pub(crate) fn new(ttl: Duration, acquired_sent: Instant) -> Self {
        Renewal {
            ttl,
            last_good_sent: acquired_sent,
        }
    }

    /// How often to renew.
    pub(crate) fn every(ttl: Duration) -> Duration {
        (ttl / 3).max(Duration::from_millis(50))
    }

    /// How long failed renewals are tolerated: 2/3 of the TTL after the last good one was
    /// sent, so the holder stops before the server can expire its key and let a standby in.
    fn tolerance(&self) -> Duration {
        self.ttl * 2 / 3
    }

    /// A renewal sent at `sent` succeeded.
    pub(crate) fn renewed(&mut self, sent: Instant) {
        self.last_good_sent = self.last_good_sent.max(sent);
    }

    /// A renewal failed at `now`; `moved` when the revision was not ours any more.
    pub(crate) fn failed(&self, now: Instant, moved: bool) -> Verdict {
        if moved || now.duration_since(self.last_good_sent) >= self.tolerance() {
            Verdict::Lost
        } else {
            Verdict::Keep
        }
    }
}

/// Opens the lease bucket, creating it (`max_age` = `ttl`, history 1, `replicas` copies)
/// when it does not exist, and raising an existing bucket's copies to `replicas`. Returns it with the TTL to work with: the bucket's `max_age`,
/// which decides when a key expires, even where it differs from `ttl` (an existing bucket
/// made by a dispatcher with another `--lease-ttl-ms`): renewing at a third of a longer TTL
/// than the bucket's would let the key expire under its holder.
pub(crate) async fn open(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<(kv::Store, Duration), LeaseError> {
    let store = open_or_create(js, ttl, replicas).await?;
    let max_age = store.status().await.map(|s| s.max_age()).unwrap_or(ttl);
    Ok((store, effective_ttl(ttl, max_age)))
}

/// The TTL to renew against, given ours and the bucket's `max_age` (zero: none).
fn effective_ttl(ours: Duration, max_age: Duration) -> Duration {
    if max_age.is_zero() {
        tracing::warn!(bucket = LEASE_BUCKET, "the lease bucket has no max_age: a dead holder's lease never expires (delete the key by hand, or recreate the bucket)");
        ours
    } else if max_age != ours {
        tracing::warn!(
            bucket = LEASE_BUCKET,
            bucket_ttl_ms = max_age.as_millis() as u64,
            ours_ms = ours.as_millis() as u64,
            "the lease bucket's max_age differs from --lease-ttl-ms; using the bucket's"
        );
        max_age
    } else {
        ours
    }
}

async fn open_or_create(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, LeaseError> {
    if let Ok(store) = js.get_key_value(LEASE_BUCKET).await {
        scale_up(js, replicas).await;
        return Ok(store);
    }
    let config = kv::Config {
        bucket: LEASE_BUCKET.to_string(),
        description: "jetinfer dispatcher lease: the active dispatcher's id".to_string(),
        history: 1,
        max_age: ttl,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another dispatcher created it meanwhile.
        Err(e) => js
            .get_key_value(LEASE_BUCKET)
            .await
            .map_err(|_| LeaseError::Bucket(Box::new(e))),
    }
}

/// Raises the bucket's replicas to `replicas` where it has fewer: a deployment moved onto a
/// NATS cluster (`--replicas 3`) keeps the bucket a single-server dispatcher made, and a
/// one-copy lease stops every dispatcher when its node goes, R3 streams or not. Only ever
/// up, so a dispatcher started with a lower `--replicas` does not shrink it; any dispatcher
/// may do it, active or not, as it changes no key. A failure only warns: the lease works
/// with fewer copies.
async fn scale_up(js: &jetstream::Context, replicas: usize) {
    let name = format!("KV_{LEASE_BUCKET}");
    let config = match js.get_stream(&name).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) => info.config.clone(),
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, "cannot read the lease bucket's replicas");
                return;
            }
        },
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "cannot read the lease bucket's replicas");
            return;
        }
    };
    let Some(config) = raised(config, replicas) else {
        return;
    };
    match js.update_stream(&config).await {
        Ok(_) => tracing::info!(
            bucket = LEASE_BUCKET,
            replicas,
            "raised the lease bucket's replicas"
        ),
        Err(e) => {
            tracing::warn!(bucket = LEASE_BUCKET, replicas, error = %e, "cannot raise the lease bucket's replicas; it keeps fewer")
        }
    }
}

/// `config` with `replicas` copies, if that is more than it has.
fn raised(
    mut config: jetstream::stream::Config,
    replicas: usize,
) -> Option<jetstream::stream::Config> {
    (config.num_replicas < replicas).then(|| {
        config.num_replicas = replicas;
        config
    })
}

/// The lease, held.
pub(crate) struct Held {
    kv: kv::Store,
    id: String,
    revision: u64,
    renewal: Renewal,
}

/// Waits as a standby until `create` succeeds; `None` when `shutdown` comes first.
/// `role` is told who is active meanwhile.
pub(crate) async fn acquire(
    kv: kv::Store,
    id: &str,
    ttl: Duration,
    role: &tokio::sync::watch::Sender<Role>,
    shutdown: &CancellationToken,
) -> Option<Held> {
    let poll = Renewal::every(ttl);
    // Changes of the key wake us early (a delete on hand-over); polling covers expiry.
    let mut watch = kv.watch(LEASE_KEY).await.ok();
    loop {
        let sent = Instant::now();
        match kv.create(LEASE_KEY, id.to_string().into()).await {
            Ok(revision) => {
                tracing::info!(id, revision, "took the dispatcher lease; active");
                return Some(Held {
                    kv,
                    id: id.to_string(),
                    revision,
                    renewal: Renewal::new(ttl, sent),
                });
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let active = kv
                    .get(LEASE_KEY)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                let next = Role::Standby { active };
                if *role.borrow() != next {
                    tracing::info!(role = %next.describe(), "another dispatcher holds the lease; waiting");
                    role.send_replace(next);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot try the dispatcher lease; retrying"),
        }
        // `false` when the watch has ended (then polling alone goes on).
        let changed = async {
            match watch.as_mut() {
                Some(w) => w.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        let watching = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            more = changed => more,
            _ = tokio::time::sleep(poll) => true,
        };
        if !watching {
            watch = None;
        }
    }
}

impl Held {
    /// Renews every TTL/3 until `release` (then deletes the key, so that a standby takes
    /// over at once) or until the lease is lost (then cancels `lost` and returns the error).
    pub(crate) async fn keep(
        mut self,
        lost: CancellationToken,
        release: CancellationToken,
    ) -> Result<(), LeaseError> {
        let mut tick = tokio::time::interval(Renewal::every(self.renewal.ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = release.cancelled() => break,
                _ = tick.tick() => {}
            }
            let sent = Instant::now();
            let attempt = tokio::time::timeout(
                Renewal::every(self.renewal.ttl),
                self.kv
                    .update(LEASE_KEY, self.id.clone().into(), self.revision),
            )
            .await;
            let (moved, why) = match attempt {
                Ok(Ok(revision)) => {
                    self.revision = revision;
                    self.renewal.renewed(sent);
                    continue;
                }
                Ok(Err(e)) => (
                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                ),
                Err(_) => (false, "renewal timed out".to_string()),
            };
            if self.renewal.failed(Instant::now(), moved) == Verdict::Lost {
                lost.cancel();
                return Err(LeaseError::Lost { why });
            }
            tracing::warn!(error = %why, "cannot renew the dispatcher lease; retrying");
        }
        // Only our own revision is deleted: a lease someone else holds stays theirs.
        match self
            .kv
            .delete_expect_revision(LEASE_KEY, Some(self.revision))
            .await
        {
            Ok(()) => tracing::info!("released the dispatcher lease"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the dispatcher lease; it expires with its TTL")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_verdicts() {
        let ttl = Duration::from_millis(3000);
        let t0 = Instant::now();
        let mut r = Renewal::new(ttl, t0);
        assert_eq!(Renewal::every(ttl), Duration::from_millis(1000));
        // A moved revision is lost at once.
        assert_eq!(
            r.failed(t0 + Duration::from_millis(10), true),
            Verdict::Lost
        );
        // Errors are tolerated up to 2/3 of the TTL after the last good renewal was sent.
        assert_eq!(
            r.failed(t0 + Duration::from_millis(1999), false),
            Verdict::Keep
        );
        assert_eq!(
            r.failed(t0 + Duration::from_millis(2000), false),
            Verdict::Lost
        );
        r.renewed(t0 + Duration::from_millis(1500));
        assert_eq!(
            r.failed(t0 + Duration::from_millis(3000), false),
            Verdict::Keep
        );
        // A late answer to an older renewal does not move the mark back.
        r.renewed(t0 + Duration::from_millis(500));
        assert_eq!(
            r.failed(t0 + Duration::from_millis(3400), false),
            Verdict::Keep
        );
        assert_eq!(
            r.failed(t0 + Duration::from_millis(3500), false),
            Verdict::Lost
        );
    }

    #[test]
    fn the_buckets_max_age_wins() {
        let s = Duration::from_secs;
        assert_eq!(effective_ttl(s(3), s(3)), s(3));
        assert_eq!(effective_ttl(s(3), s(30)), s(30));
        assert_eq!(effective_ttl(s(30), s(3)), s(3));
        assert_eq!(effective_ttl(s(3), Duration::ZERO), s(3));
    }

    #[test]
    fn replicas_only_go_up() {
        let with = |n| jetstream::stream::Config {
            num_replicas: n,
            ..Default::default()
        };
        assert_eq!(raised(with(1), 3).map(|c| c.num_replicas), Some(3));
        assert!(raised(with(3), 3).is_none());
        assert!(raised(with(3), 1).is_none());
    }

    #[test]
    fn role_words() {
        let s = Role::Standby {
            active: Some("d1".into()),
        };
        assert_eq!(s.describe(), "standby, active is d1");
        assert_eq!(Role::Active.describe(), "active");
    }
}
