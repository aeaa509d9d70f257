//! The check before an ack: a worker that replies `stored` without storing (a bug, or a
//! forged responder on its run subject) must not get a job acked, so the dispatcher looks
//! for the results in Redis first (docs/security.md).
//!
//! One check at a time, for every bundle that came back while the previous one was under
//! way ([`crate::coalesce`]): one `EXISTS` names all their jobs. Bundles on a many-core host
//! are small, and a check of its own per bundle would cost a Redis socket write and read
//! each (docs/benchmarks.md, "Shared Redis round trips").

use jetinfer_store::ResultStore;
use tokio::sync::{mpsc, oneshot};

use crate::coalesce::next_pass;
use crate::job::HeldJob;

/// Hands the jobs of returned bundles to the check task.
#[derive(Clone)]
pub(crate) struct StoredCheck {
    tx: mpsc::Sender<Request>,
}

struct Request {
    jobs: Vec<HeldJob>,
    reply: oneshot::Sender<Checked>,
}

/// The jobs of one request, split by whether their result is in Redis.
#[derive(Default)]
pub(crate) struct Checked {
    pub stored: Vec<HeldJob>,
    /// No result found although the worker said stored: run them again.
    pub missing: Vec<HeldJob>,
    /// Redis did not answer (then every job is here): run them again, and they find their
    /// results.
    pub unchecked: Vec<HeldJob>,
}

impl StoredCheck {
    /// Starts the check task; it ends once every handle is dropped and its queue is done.
    /// `in_flight` is the sum of the priorities' in-flight caps: every request holds at
    /// least one of those permits, so a queue of that many never makes a bundle wait.
    pub fn start(store: ResultStore, in_flight: usize) -> StoredCheck {
        let (tx, rx) = mpsc::channel(in_flight.max(1));
        tokio::spawn(run(store, rx));
        StoredCheck { tx }
    }

    /// Which of `jobs`, reported stored by their worker, really have a result.
    pub async fn check(&self, jobs: Vec<HeldJob>) -> Checked {
        if jobs.is_empty() {
            return Checked::default();
        }
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(request)) = self.tx.send(Request { jobs, reply }).await {
            // Only when the task panicked: run the jobs again rather than ack unchecked.
            return Checked {
                unchecked: request.jobs,
                ..Checked::default()
            };
        }
        // The task answers every request it takes; without an answer the jobs are dropped
        // un-acked, and JetStream delivers them again.
        answer.await.unwrap_or_default()
    }
}

async fn run(store: ResultStore, mut rx: mpsc::Receiver<Request>) {
    while let Some(pass) = next_pass(&mut rx).await {
        check_pass(&store, pass).await;
    }
}

/// One `EXISTS` pipeline for every job of `pass`; each request gets its own jobs back.
async fn check_pass(store: &ResultStore, pass: Vec<Request>) {
    let ids: Vec<&str> = pass
        .iter()
        .flat_map(|r| r.jobs.iter().map(|j| j.id.as_str()))
        .collect();
    let found = store.exists_many(&ids).await;
    drop(ids);
    let mut found = match found {
        Ok(found) => Some(found.into_iter()),
        Err(e) => {
            let jobs: usize = pass.iter().map(|r| r.jobs.len()).sum();
            tracing::warn!(jobs, error = %e, "cannot check the stored results; running the jobs again");
            None
        }
    };
    for Request { jobs, reply } in pass {
        let checked = match found.as_mut() {
            Some(found) => {
                let mut checked = Checked {
                    stored: Vec::with_capacity(jobs.len()),
                    ..Checked::default()
                };
                for job in jobs {
                    if found.next().unwrap_or(false) {
                        checked.stored.push(job);
                    } else {
                        checked.missing.push(job);
                    }
                }
                checked
            }
            None => Checked {
                unchecked: jobs,
                ..Checked::default()
            },
        };
        // A bundle that stopped waiting (the dispatcher shutting down) drops its jobs
        // un-acked: JetStream delivers them again.
        let _ = reply.send(checked);
    }
}
