//! The dynamic batcher of one model: collects jobs into a batch (when a batch goes: see
//! `gather.rs`), splits it by input shapes (a batch stacks samples, so shapes must agree),
//! hands each group to one of the model's executor threads ([`Lane`]s: every device the
//! model is listed on, times its instances) — the least busy one, so N threads run N
//! batches at once — and passes the outputs to the result writer.

use std::sync::Arc;
use std::time::Duration;

use jetinfer_schemas::worker::RunOutcome;
use jetinfer_schemas::{now_ms, ErrorCode, JobError, Tensor, Timings};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch_time::BatchTime;
use crate::config::ModelConfig;
use crate::exec_batch::{ExecBatch, ExecOutput};
use crate::executor::Lane;
use crate::gather::{gather, window, Window};
use crate::job::{JobCtx, Pending};
use crate::results::{Finished, Writer};
use crate::staging::HostBatch;
use crate::telemetry::JobTrace;

pub(crate) struct Batcher {
    pub model: String,
    /// The version it serves (for the batch span).
    pub version: String,
    /// The executor threads that run it (at least one), with their devices and instances.
    pub lanes: Vec<Lane>,
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    /// How long a batch waits for company while the device is idle (`linger_ms`).
    pub linger: Duration,
    /// The model pads batches to their longest job: every job fits one batch.
    pub pad: bool,
    pub config: Arc<ModelConfig>,
    pub writer: Writer,
    pub tasks: TaskTracker,
    pub batch_time: Arc<BatchTime>,
    /// Cancelled when the device reports a sticky error: the worker must stop.
    pub fatal: CancellationToken,
}

impl Batcher {
    pub async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        assert!(
            !self.lanes.is_empty(),
            "a batcher without an executor: this is a bug"
        );
        // Idle as soon as any of the model's threads is idle.
        let loads: Vec<_> = self.lanes.iter().map(|l| l.load.clone()).collect();
        let mut device = crate::device_load::least_of(&loads);
        let mut next = 0;
        while let Some(first) = rx.recv().await {
            let window = Window {
                busy: window(self.batch_time.get(), self.max_queue_delay),
                idle: self.linger,
            };
            let jobs = gather(first, &mut rx, &mut device, self.max_batch_size, window).await;
            let groups = if self.pad {
                vec![jobs]
            } else {
                by_shapes(jobs)
            };
            for group in groups {
                self.submit(group, &mut next).await;
            }
        }
    }

    /// The lane for the next batch: the one with the fewest batches in flight; among equals,
    /// the first from `next` on (round robin), so idle threads take turns.
    fn pick(&self, next: &mut usize) -> &Lane {
        let n = self.lanes.len();
        let at = (0..n)
            .map(|k| (*next + k) % n)
            .min_by_key(|&i| self.lanes[i].load.current())
            .unwrap_or(0);
        *next = (at + 1) % n;
        &self.lanes[at]
    }

    /// Sends one same-shape group to the least busy executor thread (waiting while it is
    /// busy with its previous batch: that wait is the backpressure) and spawns the
    /// completion.
    async fn submit(&self, group: Vec<Pending>, next: &mut usize) {
        let now = now_ms();
        let (live, late): (Vec<_>, Vec<_>) =
            group.into_iter().partition(|p| p.ctx.deadline_ms > now);
        if !late.is_empty() {
            let writer = self.writer.clone();
            let finished = late
                .into_iter()
                .map(|p| {
                    let e = JobError::new(
                        ErrorCode::Expired,
                        "deadline passed while waiting for a batch",
                    );
                    Finished {
                        result: p.ctx.failed(e),
                        ctx: p.ctx,
                    }
                })
                .collect();
            self.tasks
                .spawn(async move { writer.write(finished).await });
        }
        if live.is_empty() {
            return;
        }
        let (ctxs, inputs): (Vec<_>, Vec<_>) = live.into_iter().map(|p| (p.ctx, p.inputs)).unzip();
        let traces: Vec<&JobTrace> = ctxs.iter().map(|c| &c.trace).collect();
        let lane = self.pick(next);
        let batch =
            crate::telemetry::Batch::start(&self.model, &self.version, &lane.device, &traces);
        let (inputs, host) = self.stage(lane, inputs).await;
        let (reply, outputs) = oneshot::channel();
        let writer = self.writer.clone();
        lane.load.submitted();
        if lane
            .exec
            .send(ExecBatch {
                model: lane.exec_index,
                inputs,
                host,
                reply,
            })
            .await
            .is_err()
        {
            lane.load.finished();
            tracing::error!(model = %self.model, device = %lane.device, instance = lane.instance, "executor thread is gone");
        }
        let ran = ::metrics::counter!(
            crate::telemetry::BATCHES,
            "model" => self.model.clone(),
            "version" => self.version.clone(),
            "device" => lane.device.clone(),
            "instance" => lane.instance.to_string(),
        );
        let (batch_time, fatal) = (self.batch_time.clone(), self.fatal.clone());
        let (jobs, lanes) = (ctxs.len(), self.lanes.len());
        self.tasks.spawn(async move {
            // Executor gone: the jobs' done senders drop and their requests answer Failed.
            let Ok(out) = outputs.await else { return };
            batch.done(out.compute_ms);
            if out.fatal.is_some() {
                // Nothing ran: the jobs go back to the dispatcher, counting a failure each.
                fatal.cancel();
                for ctx in ctxs {
                    let _ = ctx.done.send(RunOutcome::Failed);
                }
                return;
            }
            ran.increment(1);
            batch_time.record(out.compute_ms);
            batch_time.meter().record(jobs, out.compute_ms, lanes);
            writer.write(finish(ctxs, out)).await;
        });
    }

    /// Writes the batch into the pinned buffers of `lane`'s device on a blocking thread,
    /// while that thread still runs its previous batch (`None` on the CPU, or when that
    /// fails: the executor then writes it itself).
    async fn stage(
        &self,
        lane: &Lane,
        inputs: Vec<Vec<Tensor<'static>>>,
    ) -> (Vec<Vec<Tensor<'static>>>, Option<HostBatch>) {
        let Some(pool) = lane.pinned.clone() else {
            return (inputs, None);
        };
        let config = self.config.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let host = pool.stage(&inputs, &config);
            (inputs, host)
        })
        .await;
        match staged {
            Ok((inputs, Ok(host))) => (inputs, Some(host)),
            Ok((inputs, Err(e))) => {
                tracing::warn!(model = %self.model, error = %e, "cannot write the batch into pinned memory; the executor will");
                (inputs, None)
            }
            Err(e) => panic!("staging a batch panicked: {e}"),
        }
    }
}

fn finish(ctxs: Vec<Box<JobCtx>>, out: ExecOutput) -> Vec<Finished> {
    let batch_size = ctxs.len() as u32;
    // One clock read for the batch: its jobs finished together.
    let now = now_ms();
    let started_ms = now.saturating_sub(out.started.elapsed().as_millis() as u64);
    ctxs.into_iter()
        .zip(out.outputs)
        .map(|(ctx, result)| {
            let result = match result {
                Ok(outputs) => {
                    let timings = Timings {
                        queued_ms: started_ms.saturating_sub(ctx.published_ms) as f64,
                        batch_size,
                        compute_ms: out.compute_ms,
                        total_ms: 0.0,
                    };
                    ctx.ok(outputs, timings, now)
                }
                Err(e) => ctx.failed(e),
            };
            Finished { ctx, result }
        })
        .collect()
}

/// Groups jobs by the shapes of all their inputs, keeping arrival order within a group and
/// the groups in order of their first job; suspect jobs (they lost a run before) form
/// groups of one.
///
/// A job joins the first group whose first job has its shapes, compared in place: a batch
/// nearly always holds one or a few shapes, and a key built and hashed per job (as this
/// did) was ~1.5 % of the worker's CPU per trivial job on the H100 host.
fn by_shapes(jobs: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    let mut alone = Vec::new();
    for p in jobs {
        if p.suspect {
            alone.push(vec![p]);
            continue;
        }
        let same_shapes = |g: &&mut Vec<Pending>| {
            let first = &g[0].inputs;
            first.len() == p.inputs.len()
                && first.iter().zip(&p.inputs).all(|(a, b)| a.shape == b.shape)
        };
        match groups.iter_mut().find(same_shapes) {
            Some(group) => group.push(p),
            None => groups.push(vec![p]),
        }
    }
    groups.extend(alone);
    groups
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jetinfer_schemas::worker::RunJob;
    use jetinfer_schemas::{DType, Priority};

    use super::*;

    /// A queued job `id` whose inputs have `shapes` (f32, zeros).
    fn pending(id: &str, shapes: &[&[i64]], suspect: bool) -> Pending {
        let run_job = RunJob {
            payload: Default::default(),
            priority: Priority::P1,
            deadline_ms: u64::MAX,
            remaining_ms: None,
            published_ms: 0,
            attempt: 1,
            suspect,
            report_existing: false,
            traceparent: None,
            tracestate: None,
        };
        let inputs = shapes
            .iter()
            .map(|s| {
                let n = s.iter().product::<i64>() as usize;
                Tensor::owned(DType::F32, s.to_vec(), vec![0; 4 * n])
            })
            .collect();
        let ctx = JobCtx {
            id: id.into(),
            model: "m".into(),
            version: "1".into(),
            meta: BTreeMap::new(),
            attempt: 1,
            published_ms: 0,
            deadline_ms: u64::MAX,
            cache_key: None,
            inputs_store: None,
            inputs_digest: String::new(),
            trace_id: String::new(),
            report_existing: false,
            done: oneshot::channel().0,
            _slot: None,
            trace: JobTrace::start(&run_job),
        };
        Pending {
            ctx: Box::new(ctx),
            inputs,
            suspect,
        }
    }

    fn ids(groups: &[Vec<Pending>]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| g.iter().map(|p| p.ctx.id.as_str()).collect())
            .collect()
    }

    #[test]
    fn jobs_group_by_all_their_shapes_in_arrival_order_and_suspects_alone() {
        let jobs = vec![
            pending("a1", &[&[4], &[2, 3]], false),
            pending("b1", &[&[5], &[2, 3]], false),
            pending("a2", &[&[4], &[2, 3]], false),
            pending("s", &[&[4], &[2, 3]], true),
            // Same first input, another second: its own group.
            pending("c1", &[&[4], &[3, 2]], false),
            // One input fewer than the a-jobs, of their first shape.
            pending("d1", &[&[4]], false),
            pending("b2", &[&[5], &[2, 3]], false),
        ];
        assert_eq!(
            ids(&by_shapes(jobs)),
            vec![
                vec!["a1", "a2"],
                vec!["b1", "b2"],
                vec!["c1"],
                vec!["d1"],
                vec!["s"]
            ]
        );
    }
}
