//! The dynamic batcher of one model: collects jobs into a batch (when a batch goes: see
//! `gather.rs`), splits it by input shapes (a batch stacks samples, so shapes must agree),
//! hands each group to the device's executor, and passes the outputs to the result writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jetinfer_schemas::worker::RunOutcome;
use jetinfer_schemas::{now_ms, ErrorCode, JobError, Tensor, Timings};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch_time::BatchTime;
use crate::config::ModelConfig;
use crate::device_load::DeviceLoad;
use crate::exec_batch::{ExecBatch, ExecOutput};
use crate::gather::{gather, window};
use crate::job::{JobCtx, Pending};
use crate::results::{Finished, Writer};
use crate::staging::{HostBatch, PinnedPool};
use crate::telemetry::JobTrace;

pub(crate) struct Batcher {
    pub model: String,
    /// The version it serves (for the batch span).
    pub version: String,
    /// The device that runs it (for the batch span).
    pub device: String,
    /// The model's index on its executor thread.
    pub exec_index: usize,
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    /// The model pads batches to their longest job: every job fits one batch.
    pub pad: bool,
    pub config: Arc<ModelConfig>,
    /// The device's pinned buffers: each batch is written there before it is handed over,
    /// while the executor still runs the previous one (CUDA devices; see staging.rs).
    pub pinned: Option<Arc<PinnedPool>>,
    pub exec: mpsc::Sender<ExecBatch>,
    pub writer: Writer,
    pub tasks: TaskTracker,
    pub batch_time: Arc<BatchTime>,
    /// Cancelled when the device reports a sticky error: the worker must stop.
    pub fatal: CancellationToken,
    /// Batches in flight on the model's device (shared by the device's batchers).
    pub load: DeviceLoad,
}

impl Batcher {
    pub async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        let mut device = self.load.watch();
        while let Some(first) = rx.recv().await {
            let window = window(self.batch_time.get(), self.max_queue_delay);
            let jobs = gather(first, &mut rx, &mut device, self.max_batch_size, window).await;
            let groups = if self.pad {
                vec![jobs]
            } else {
                by_shapes(jobs)
            };
            for group in groups {
                self.submit(group).await;
            }
        }
    }

    /// Sends one same-shape group to the executor (waiting while it is busy with the
    /// previous batch: that wait is the backpressure) and spawns the completion.
    async fn submit(&self, group: Vec<Pending>) {
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
        let batch =
            crate::telemetry::Batch::start(&self.model, &self.version, &self.device, &traces);
        let (inputs, host) = self.stage(inputs).await;
        let (reply, outputs) = oneshot::channel();
        let writer = self.writer.clone();
        self.load.submitted();
        if self
            .exec
            .send(ExecBatch {
                model: self.exec_index,
                inputs,
                host,
                reply,
            })
            .await
            .is_err()
        {
            self.load.finished();
            tracing::error!(model = %self.model, "executor thread is gone");
        }
        let (batch_time, fatal) = (self.batch_time.clone(), self.fatal.clone());
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
            batch_time.record(out.compute_ms);
            writer.write(finish(ctxs, out)).await;
        });
    }

    /// Writes the batch into the device's pinned buffers on a blocking thread (`None` on
    /// the CPU, or when that fails: the executor then writes it itself).
    async fn stage(
        &self,
        inputs: Vec<Vec<Tensor<'static>>>,
    ) -> (Vec<Vec<Tensor<'static>>>, Option<HostBatch>) {
        let Some(pool) = self.pinned.clone() else {
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

fn finish(ctxs: Vec<JobCtx>, out: ExecOutput) -> Vec<Finished> {
    let batch_size = ctxs.len() as u32;
    let started_ms = now_ms().saturating_sub(out.started.elapsed().as_millis() as u64);
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
                    ctx.ok(outputs, timings)
                }
                Err(e) => ctx.failed(e),
            };
            Finished { ctx, result }
        })
        .collect()
}

/// Groups jobs by the shapes of all their inputs, keeping arrival order within a group;
/// suspect jobs (they lost a run before) form groups of one.
fn by_shapes(jobs: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut order: Vec<Vec<Vec<i64>>> = Vec::new();
    let mut groups: HashMap<Vec<Vec<i64>>, Vec<Pending>> = HashMap::new();
    let mut alone = Vec::new();
    for p in jobs {
        if p.suspect {
            alone.push(vec![p]);
            continue;
        }
        let key: Vec<Vec<i64>> = p.inputs.iter().map(|t| t.shape.clone()).collect();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(p);
    }
    let mut out: Vec<Vec<Pending>> = order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .collect();
    out.extend(alone);
    out
}
