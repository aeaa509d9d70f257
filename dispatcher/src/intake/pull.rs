//! The intake's own pull loop on a durable pull consumer: pull requests sent on a core NATS
//! subscription, the consumer's status messages read here, and job messages handed on as
//! they came, with their ack subject.
//!
//! async-nats's pull stream does the same, but wraps every message in a
//! `jetstream::Message` that carries a clone of the JetStream context (a `String` and
//! several `Arc`s, cloned and dropped once per job: ~3 % of the dispatcher's CPU per small
//! job, docs/benchmarks.md), and hands each pull request to a task of its own. Here a job
//! message stays the core message it arrived as, and its ack goes through one shared client
//! ([`crate::job::JobAck`]).
//!
//! What the loop keeps, as that stream does: a bounded number of messages asked for beyond
//! those delivered (here at most two batches: a new request whenever no more than one is
//! owed, since the intake may take a whole group with [`Pull::ready`] between two calls of
//! [`Pull::next`], the only one that asks; the consumer's `max_ack_pending` allows two
//! batches per intake task), the pull requests' short expiry and the server's idle
//! heartbeats (`PULL_EXPIRES`, `PULL_HEARTBEAT` in the intake), and the accounting of the
//! `408`/`409` answers that end a request. What it adds: a watchdog that asks again when
//! nothing at all arrived for a whole period of two heartbeats (so within 4-8 s) — a request
//! its consumer's old leader held, or one a restarted server forgot, is answered by nobody.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::{Message, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Why a pull stopped delivering for now; the next call asks again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PullError {
    #[error("cannot send a pull request: {0}")]
    Request(#[from] async_nats::PublishError),
    #[error("no answer to pull requests for {0:?} (no heartbeat either): asking again")]
    Silent(Duration),
    #[error("JetStream did not answer the pull request (no responders)")]
    NoResponders,
    #[error("the consumer answered {status}: {description}")]
    Status {
        status: StatusCode,
        description: String,
    },
}

/// One intake task's pull on its consumer.
pub(crate) struct Pull {
    nats: Arc<async_nats::Client>,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: Subject,
    inbox: Subject,
    messages: Subscriber,
    /// The pull request's JSON, the same for every request.
    request: Bytes,
    owed: Owed,
    /// Whether anything (a message, a heartbeat, a status) arrived since the last tick of
    /// `watchdog`: no clock is read per message.
    heard: bool,
    watchdog: Interval,
    /// After an error answer ("no responders": JetStream has no leader for the consumer
    /// yet; a consumer deleted): when to ask again, rather than asking in a loop.
    pause_until: Option<Instant>,
}

/// How long to wait before asking again after an error answer.
const PAUSE: Duration = Duration::from_millis(250);

impl Pull {
    /// Subscribes to a new inbox for `consumer`'s messages; nothing is asked for until the
    /// first [`Pull::next`].
    pub async fn start(
        nats: Arc<async_nats::Client>,
        consumer: &PullConsumer,
        batch: usize,
        expires: Duration,
        heartbeat: Duration,
    ) -> Result<Pull, async_nats::SubscribeError> {
        let info = consumer.cached_info();
        let next_subject = Subject::from(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            info.stream_name, info.name
        ));
        let inbox = Subject::from(nats.new_inbox());
        let messages = nats.subscribe(inbox.clone()).await?;
        let request = Bytes::from(format!(
            r#"{{"batch":{batch},"expires":{},"idle_heartbeat":{}}}"#,
            expires.as_nanos(),
            heartbeat.as_nanos()
        ));
        // Two heartbeats: while a request waits the server sends one every `heartbeat`, and
        // one ends at least every `expires` with a `408`, after which we ask again.
        let every = heartbeat * 2;
        let mut watchdog = tokio::time::interval_at(Instant::now() + every, every);
        watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Pull {
            nats,
            next_subject,
            inbox,
            messages,
            request,
            owed: Owed { n: 0, batch },
            heard: true,
            watchdog,
            pause_until: None,
        })
    }

    /// The next job message, asking for more first when no more than a batch is owed.
    /// `None` when the subscription ended (the client is closing).
    pub async fn next(&mut self) -> Option<Result<Message, PullError>> {
        loop {
            if let Err(e) = self.ask_if_low().await {
                return Some(Err(e));
            }
            let msg = tokio::select! {
                biased;
                m = self.messages.next() => m?,
                _ = self.watchdog.tick() => {
                    if std::mem::replace(&mut self.heard, false) {
                        continue;
                    }
                    // Nothing for two heartbeats: the requests we count are lost.
                    self.owed.lost();
                    return Some(Err(PullError::Silent(self.watchdog.period())));
                }
            };
            match self.read(msg) {
                Some(result) => return Some(result),
                None => continue,
            }
        }
    }

    /// A job message already delivered, without waiting and without asking for more.
    pub fn ready(&mut self) -> Option<Result<Message, PullError>> {
        use futures::FutureExt;
        loop {
            let msg = self.messages.next().now_or_never()??;
            if let Some(result) = self.read(msg) {
                return Some(result);
            }
        }
    }

    /// Sends a pull request when no more than a batch is still to come.
    async fn ask_if_low(&mut self) -> Result<(), PullError> {
        if !self.owed.wants_more() {
            return Ok(());
        }
        if let Some(until) = self.pause_until.take() {
            tokio::time::sleep_until(until).await;
        }
        self.nats
            .publish_with_reply(
                self.next_subject.clone(),
                self.inbox.clone(),
                self.request.clone(),
            )
            .await?;
        self.owed.asked();
        Ok(())
    }

    /// Asks again only after [`PAUSE`]: the same request would meet the same answer.
    fn pause(&mut self) {
        self.pause_until = Some(Instant::now() + PAUSE);
    }

    /// A job message as is; a status message accounted for (`None`: nothing to hand on),
    /// or as an error.
    fn read(&mut self, msg: Message) -> Option<Result<Message, PullError>> {
        self.heard = true;
        let status = match msg.status {
            None | Some(StatusCode::OK) => {
                self.owed.delivered();
                return Some(Ok(msg));
            }
            Some(status) => status,
        };
        match status {
            StatusCode::IDLE_HEARTBEAT => None,
            // A request ended (expired, or the server ended it: a leader change, a
            // consumer deleted, limits): what it still owed will not come.
            StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED => {
                let owed = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok());
                self.owed.released(owed);
                if status == StatusCode::TIMEOUT || owed.is_some() {
                    return None;
                }
                self.pause();
                Some(Err(PullError::Status {
                    status,
                    description: msg.description.unwrap_or_default(),
                }))
            }
            StatusCode::NO_RESPONDERS => {
                self.owed.lost();
                self.pause();
                Some(Err(PullError::NoResponders))
            }
            status => {
                self.owed.lost();
                self.pause();
                Some(Err(PullError::Status {
                    status,
                    description: msg.description.unwrap_or_default(),
                }))
            }
        }
    }
}

/// Messages asked for and neither delivered nor released by a `408`/`409` yet: a new
/// request of `batch` whenever no more than one batch is owed, so at most two are.
struct Owed {
    n: usize,
    batch: usize,
}

impl Owed {
    fn wants_more(&self) -> bool {
        self.n <= self.batch
    }

    fn asked(&mut self) {
        self.n += self.batch;
    }

    fn delivered(&mut self) {
        self.n = self.n.saturating_sub(1);
    }

    /// A request ended owing `n` (the server's `Nats-Pending-Messages`); without a count,
    /// every request is taken as ended.
    fn released(&mut self, n: Option<usize>) {
        self.n = n.map_or(0, |n| self.n.saturating_sub(n));
    }

    /// Every request is lost (nothing heard, no responders): ask again.
    fn lost(&mut self) {
        self.n = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Owed;

    #[test]
    fn at_most_two_batches_are_owed_and_a_new_one_is_asked_once_one_is_in() {
        let mut owed = Owed { n: 0, batch: 32 };
        assert!(owed.wants_more());
        owed.asked();
        assert!(owed.wants_more(), "one batch owed: ask for the next");
        owed.asked();
        assert!(!owed.wants_more(), "two batches owed: wait");
        (0..31).for_each(|_| owed.delivered());
        assert!(!owed.wants_more());
        owed.delivered();
        assert!(owed.wants_more(), "a batch is in: ask again");
    }

    #[test]
    fn an_ended_request_releases_what_it_still_owed() {
        let mut owed = Owed { n: 0, batch: 32 };
        owed.asked();
        owed.asked();
        (0..10).for_each(|_| owed.delivered());
        owed.released(Some(22));
        assert_eq!(owed.n, 32);
        // More than is counted (a request from before a reset): nothing is owed.
        owed.released(Some(50));
        assert_eq!(owed.n, 0);
        owed.asked();
        owed.released(None);
        assert_eq!(owed.n, 0, "an end without a count asks again");
        owed.asked();
        owed.lost();
        assert!(owed.wants_more());
    }
}
