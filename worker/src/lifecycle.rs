//! `--registry`: the worker follows the model registry and loads, announces, retires and
//! unloads versions while it serves, without a restart.
//!
//! One task owns what the worker runs. It reads the bucket (every declaration, then every
//! write) and compares the versions placed on this worker (`placement.rs`) with those it
//! runs:
//! - **a new version** gets its own executor thread on each of its devices here, which
//!   loads and warms it (one forward per warm shape, the largest batch included, as at
//!   start) beside the versions already serving, and one batcher over those threads; the
//!   file's sha256 is checked first. Only then is it added to the
//!   roster, which announces it at once (the heartbeat fires on roster changes): no job is
//!   routed to a version before it is warm. A refused version (unreadable file, sha256
//!   mismatch, libtorch error) is logged, shown with its reason in `/readyz` and the
//!   heartbeat, and the worker serves the rest; a later write to its model retries it. A
//!   version that loads on some of its devices only serves on those (the others are
//!   logged).
//! - **a version no longer placed here** (undeclared, `models unload`, placement changed)
//!   leaves the roster, so it is no longer announced and new jobs for it are sent back
//!   (`retry`) for the dispatcher to place elsewhere. Its queue closes: the batcher runs
//!   the jobs already queued, the executor thread runs the batches handed to it, the
//!   results are stored as always, and then the threads end and drop the module. A
//!   version whose devices here change is unloaded, then loaded on the new ones. The
//!   log line `model unloaded` gives the process RSS (and CUDA memory in use) before and
//!   after.
//!
//! A version runs on its own thread so that loading one never stalls the batches of
//! another, and so that unloading is simply the end of that thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use jetinfer_registry::snapshot::Change;
use jetinfer_registry::{ModelDecl, Registry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::executor::DeviceState;
use crate::loading::LoadError;
use crate::placement::{placed, Key, Wanted};
use crate::roster::{Lifecycle, RosterTx, Served, VersionState};
use crate::startup::Shared;

mod swap;

use swap::{load, unload};

/// The executor threads the watchdog watches; versions come and go.
pub(crate) type Watched = Arc<Mutex<Vec<(String, DeviceState)>>>;

/// How often to look for the bucket while it does not exist, or after an error.
const RETRY: Duration = Duration::from_secs(2);

/// Versions remembered as retired (see `Roster::retired`).
const RETIRED_KEPT: usize = 256;

/// What the lifecycle task needs from the worker.
pub(crate) struct Follower {
    pub js: jetstream::Context,
    pub worker: String,
    /// `--devices`.
    pub devices: Vec<String>,
    /// Capacity of each batcher queue (the worker's slots).
    pub slots: u32,
    pub shared: Shared,
    pub roster: RosterTx,
    pub watched: Watched,
}

/// Where one placed version stands in this task.
enum Slot {
    Loading,
    Loaded(Running),
    Unloading,
    Failed(String),
}

/// A version that serves: its batcher, and per device it loaded on, its thread's state.
struct Running {
    batcher: JoinHandle<()>,
    states: Vec<(String, DeviceState)>,
    /// The devices it was placed on when it loaded (a change of placement reloads it).
    placed_on: Vec<String>,
}

/// What the task reacts to.
enum Event {
    /// Every declaration, read when the watch (re)starts.
    Snapshot(Vec<ModelDecl>),
    Change(Change),
    Loaded {
        key: Key,
        result: Result<(Served, Running), LoadError>,
        took: Duration,
    },
    Unloaded(Key),
}

struct Task {
    f: Follower,
    decls: BTreeMap<String, ModelDecl>,
    wanted: BTreeMap<Key, Wanted>,
    slots: BTreeMap<Key, Slot>,
    /// Per device, the state its version threads share (load, pinned buffers, faults).
    devices: HashMap<String, DeviceState>,
    events: mpsc::UnboundedSender<Event>,
}

impl Follower {
    /// Follows the registry until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let (events, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(watch_registry(
            self.js.clone(),
            events.clone(),
            shutdown.clone(),
        ));
        let mut task = Task {
            f: self,
            decls: BTreeMap::new(),
            wanted: BTreeMap::new(),
            slots: BTreeMap::new(),
            devices: HashMap::new(),
            events,
        };
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                e = rx.recv() => e,
            };
            let Some(event) = event else { return };
            task.on(event);
            task.reconcile();
            task.publish();
        }
    }
}

/// Sends every declaration, then every write, to the task; re-reads everything after an
/// error (a reconnect may have missed deletes). Waits for the bucket while it is absent.
async fn watch_registry(
    js: jetstream::Context,
    events: mpsc::UnboundedSender<Event>,
    shutdown: CancellationToken,
) {
    let mut warned = false;
    while !shutdown.is_cancelled() {
        match follow_once(&js, &events, &shutdown).await {
            Ok(()) => {}
            Err(e) if !warned => {
                tracing::warn!(error = %e, "cannot follow the model registry; retrying every {}s", RETRY.as_secs());
                warned = true;
            }
            Err(e) => tracing::debug!(error = %e, "cannot follow the model registry"),
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(RETRY) => {} }
    }
}

async fn follow_once(
    js: &jetstream::Context,
    events: &mpsc::UnboundedSender<Event>,
    shutdown: &CancellationToken,
) -> Result<(), jetinfer_registry::StoreError> {
    let Some(registry) = Registry::open(js).await? else {
        tracing::debug!("the model registry bucket does not exist yet");
        return Ok(());
    };
    let changes = registry.changes().await?;
    let all = registry.list().await?;
    tracing::info!(declared_models = all.len(), "following the model registry");
    let _ = events.send(Event::Snapshot(all.into_iter().map(|s| s.decl).collect()));
    let mut changes = std::pin::pin!(changes);
    loop {
        let next = tokio::select! { biased; _ = shutdown.cancelled() => return Ok(()), c = changes.next() => c };
        match next {
            Some(Ok(change)) => {
                let _ = events.send(Event::Change(change));
            }
            Some(Err(e)) => tracing::warn!(error = %e, "model registry entry ignored"),
            None => return Ok(()),
        }
    }
}

impl Task {
    fn on(&mut self, event: Event) {
        match event {
            Event::Snapshot(decls) => {
                self.decls = decls.into_iter().map(|d| (d.name.clone(), d)).collect();
            }
            Event::Change(Change::Declared(decl)) => {
                // Any write to a model retries its refused versions (`models load` again).
                self.slots
                    .retain(|k, s| !(k.name == decl.name && matches!(s, Slot::Failed(_))));
                self.decls.insert(decl.name.clone(), decl);
            }
            Event::Change(Change::Removed(name)) => {
                self.decls.remove(&name);
            }
            Event::Loaded { key, result, took } => self.loaded(key, result, took),
            Event::Unloaded(key) => {
                self.slots.remove(&key);
            }
        }
        self.wanted = placed(self.decls.values(), &self.f.worker, &self.f.devices);
    }

    /// Starts loading what is placed here and not run yet, and unloading what runs and is
    /// no longer placed here.
    fn reconcile(&mut self) {
        let new: Vec<(Key, Wanted)> = self
            .wanted
            .iter()
            .filter(|(k, _)| !self.slots.contains_key(*k))
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        for (key, wanted) in new {
            self.start_load(key, wanted);
        }
        let gone: Vec<Key> = self
            .slots
            .iter()
            .filter(|(k, slot)| match (self.wanted.get(*k), slot) {
                (None, _) => true,
                (Some(w), Slot::Loaded(r)) => w.devices != r.placed_on,
                (Some(_), _) => false,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            match self.slots.get(&key) {
                Some(Slot::Loaded(_)) => self.start_unload(key),
                Some(Slot::Failed(_)) => {
                    self.slots.remove(&key);
                }
                // A loading version is unloaded when its load ends (see `loaded`).
                Some(Slot::Loading) | Some(Slot::Unloading) | None => {}
            }
        }
    }

    fn start_load(&mut self, key: Key, wanted: Wanted) {
        tracing::info!(model = %key.name, version = %key.version, devices = ?wanted.devices, "loading model version");
        self.slots.insert(key.clone(), Slot::Loading);
        let states: Vec<(String, DeviceState)> = wanted
            .devices
            .iter()
            .map(|d| (d.clone(), self.thread_state(d)))
            .collect();
        let (shared, slots, events) = (self.f.shared.clone(), self.f.slots, self.events.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = load(&key, wanted, states, slots, &shared).await;
            let _ = events.send(Event::Loaded {
                key,
                result,
                took: started.elapsed(),
            });
        });
    }

    /// The state of a new executor thread on `device`: its own watchdog clock and exit
    /// signal, the device's shared load counter, pinned buffers and faults.
    fn thread_state(&mut self, device: &str) -> DeviceState {
        let faults = self.f.shared.faults.clone();
        let template = self
            .devices
            .entry(device.to_string())
            .or_insert_with(|| DeviceState {
                faults,
                pinned: crate::loading::parse_device(device)
                    .ok()
                    .and_then(crate::staging::PinnedPool::for_device),
                ..Default::default()
            });
        let mut state = template.clone();
        state.busy_since_ms = Default::default();
        state.exited = Default::default();
        state
    }

    fn loaded(&mut self, key: Key, result: Result<(Served, Running), LoadError>, took: Duration) {
        let (served, running) = match result {
            Ok(ok) => ok,
            Err(why) => {
                tracing::error!(model = %key.name, version = %key.version, load_error = %why, "model version refused; serving the others");
                self.slots.insert(key, Slot::Failed(why.to_string()));
                return;
            }
        };
        if self.wanted.get(&key).map(|w| &w.devices) != Some(&running.placed_on) {
            // Unloaded, undeclared or moved while it loaded: never announced, dropped at
            // once (and loaded again where it is now placed).
            self.slots.insert(key.clone(), Slot::Unloading);
            self.spawn_unload(key, served, running);
            return;
        }
        tracing::info!(model = %key.name, version = %key.version, devices = %served.device, load_ms = took.as_millis() as u64, "model version loaded, warm and announced");
        self.f
            .watched
            .lock()
            .expect("watchdog list poisoned")
            .extend(running.states.iter().cloned());
        self.f.roster.send_modify(|r| {
            r.retired
                .retain(|(n, v)| !(*n == key.name && *v == key.version));
            r.models.push(served);
        });
        self.slots.insert(key, Slot::Loaded(running));
    }

    fn start_unload(&mut self, key: Key) {
        let Some(Slot::Loaded(running)) = self.slots.insert(key.clone(), Slot::Unloading) else {
            return;
        };
        let mut removed = None;
        self.f.roster.send_modify(|r| {
            if let Some(i) = r
                .models
                .iter()
                .position(|m| m.info.name == key.name && m.info.version == key.version)
            {
                removed = Some(r.models.remove(i));
            }
            r.retired.push((key.name.clone(), key.version.clone()));
            let extra = r.retired.len().saturating_sub(RETIRED_KEPT);
            r.retired.drain(..extra);
        });
        tracing::info!(model = %key.name, version = %key.version, "unloading model version: no longer announced; its queued and running batches finish first");
        match removed {
            Some(served) => self.spawn_unload(key, served, running),
            None => {
                // Not in the roster (cannot happen: loaded versions are): nothing to drain.
                let _ = self.events.send(Event::Unloaded(key));
            }
        }
    }

    fn spawn_unload(&self, key: Key, served: Served, running: Running) {
        let (events, watched) = (self.events.clone(), self.f.watched.clone());
        tokio::spawn(async move {
            unload(&key, served, running, &watched).await;
            let _ = events.send(Event::Unloaded(key));
        });
    }

    /// Publishes the lifecycle of every placed version and the models' default versions.
    fn publish(&self) {
        let lifecycle: Vec<Lifecycle> = self
            .slots
            .iter()
            .map(|(k, s)| Lifecycle {
                name: k.name.clone(),
                version: k.version.clone(),
                device: self
                    .wanted
                    .get(k)
                    .map(|w| w.devices.join(","))
                    .unwrap_or_default(),
                state: match s {
                    Slot::Loading => VersionState::Loading,
                    Slot::Loaded(_) => VersionState::Loaded,
                    Slot::Unloading => VersionState::Unloading,
                    Slot::Failed(why) => VersionState::Failed(why.clone()),
                },
            })
            .collect();
        let defaults: HashMap<String, String> = self
            .decls
            .values()
            .map(|d| (d.name.clone(), d.default_version.clone()))
            .collect();
        self.f.roster.send_if_modified(|r| {
            let changed = r.lifecycle != lifecycle || r.defaults != defaults;
            r.lifecycle = lifecycle;
            r.defaults = defaults;
            changed
        });
    }
}
