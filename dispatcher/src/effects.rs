//! The scheduler's decisions carried out: answers and bundles run on tasks of the
//! dispatcher's tracker, so shutdown waits for them.

use std::sync::Arc;

use jetinfer_schemas::JobError;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::answer::Answerer;
use crate::config::Config;
use crate::dispatch::Bundle;
use crate::events::Command;
use crate::job::HeldJob;
use crate::scheduler::Effects;
use crate::stored::StoredCheck;
use crate::workers::Placement;

pub(crate) struct Live {
    pub config: Arc<Config>,
    pub answer: Answerer,
    /// Shared by the bundles: their checks of stored results share Redis round trips.
    pub stored: StoredCheck,
    /// Handed to each bundle so it can report back to the scheduler.
    pub scheduler: mpsc::Sender<Command>,
    pub tasks: TaskTracker,
}

impl Effects for Live {
    fn fail(&self, job: HeldJob, error: JobError) {
        let answer = self.answer.clone();
        let span = job.span.clone();
        self.tasks
            .spawn(async move { answer.fail_held(job, error).await }.instrument(span));
    }

    fn dead_letter(&self, job: HeldJob, error: JobError) {
        let answer = self.answer.clone();
        self.tasks
            .spawn(async move { answer.dead_letter(job, error).await });
    }

    fn dispatch(&self, place: Placement, jobs: Vec<HeldJob>, suspects: u32) {
        let bundle = Bundle {
            place,
            jobs,
            suspects,
            config: self.config.clone(),
            answer: self.answer.clone(),
            stored: self.stored.clone(),
            scheduler: self.scheduler.clone(),
        };
        self.tasks.spawn(bundle.run());
    }
}
