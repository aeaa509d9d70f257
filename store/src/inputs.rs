//! [`InputStores`]: where inputs sent by reference live (the claim check, see
//! [`jetinfer_schemas::inputs_ref`]). Store 0 is the result store; more Redis servers
//! (`--inputs-redis-url`, in the same order in every producer and worker) spread the inputs
//! by job id, because a ResNet-50 image crosses Redis twice (the producer's `SET`, the
//! worker's `MGET`) and one Redis command thread saturates near 7,000 such jobs a second
//! (docs/benchmarks.md). Each reference names its store, so a worker reads from the one the
//! producer wrote to without recomputing anything.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use jetinfer_schemas::inputs_ref::input_store_for;

use crate::{ResultStore, StoreConfig, StoreError};

/// What reading one job's inputs found.
#[derive(Debug)]
pub enum StoredValue {
    /// The stored bytes (still to be checked against the reference's length and digest).
    Found(Vec<u8>),
    /// Nothing under the key: expired, deleted, or never stored.
    Missing,
    /// That store did not answer: the job can be tried again later.
    Unreachable,
    /// The reference names a store this process was not given (`--inputs-redis-url`): its
    /// producers list more input stores than it does.
    UnknownStore { store: u16, known: u16 },
}

/// The input stores of a process: the result store first, then the extra servers.
#[derive(Clone)]
pub struct InputStores {
    stores: Vec<ResultStore>,
}

impl InputStores {
    /// Only the result store: inputs live beside the results (the default).
    pub fn single(main: ResultStore) -> Self {
        InputStores { stores: vec![main] }
    }

    /// The result store and one more store per URL, with the result store's TLS files, key
    /// prefix and pool size.
    pub fn new(
        main: ResultStore,
        main_config: &StoreConfig,
        extra: &[String],
    ) -> Result<Self, StoreError> {
        let mut stores = vec![main];
        for url in extra {
            let config = StoreConfig {
                url: url.clone(),
                ..main_config.clone()
            };
            stores.push(ResultStore::new(&config)?);
        }
        Ok(InputStores { stores })
    }

    /// [`InputStores::new`], checking each extra store at startup as
    /// [`ResultStore::connect`] does.
    pub async fn connect(
        main: ResultStore,
        main_config: &StoreConfig,
        extra: &[String],
    ) -> Result<Self, StoreError> {
        let stores = Self::new(main, main_config, extra)?;
        for store in &stores.stores[1..] {
            if let Err(e @ StoreError::Refused { .. }) = store.check().await {
                return Err(e);
            }
        }
        Ok(stores)
    }

    /// How many stores there are (1 without extra ones).
    pub fn count(&self) -> u16 {
        // A reference names its store in 16 bits; nobody runs 65,535 Redis servers for inputs.
        u16::try_from(self.stores.len()).unwrap_or(u16::MAX)
    }

    /// The store a job's inputs go to ([`input_store_for`] its id).
    pub fn store_for(&self, id: &str) -> u16 {
        input_store_for(id, self.count())
    }

    /// Stores a job's inputs (`SET PX`) in its store ([`InputStores::store_for`]) and returns
    /// that store's index for the job's reference. Call before publishing the job.
    pub async fn put(&self, id: &str, value: &[u8], ttl: Duration) -> Result<u16, StoreError> {
        let store = self.store_for(id);
        self.stores[usize::from(store)]
            .put_inputs(id, value, ttl)
            .await?;
        Ok(store)
    }

    /// Reads the inputs of many jobs, `(id, store)` each, with one `MGET` per store, the
    /// stores read concurrently; the answers come in the order of `refs`. A store that
    /// fails affects only the jobs it holds.
    pub async fn get(&self, refs: &[(&str, u16)]) -> Vec<StoredValue> {
        let mut by_store: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (at, (_, store)) in refs.iter().enumerate() {
            by_store.entry(*store).or_default().push(at);
        }
        let mut found: Vec<StoredValue> = refs.iter().map(|_| StoredValue::Missing).collect();
        let reads = by_store.iter().map(|(&store, positions)| async move {
            let Some(handle) = self.stores.get(usize::from(store)) else {
                return (positions, Err(None));
            };
            let ids: Vec<&str> = positions.iter().map(|&at| refs[at].0).collect();
            (positions, handle.get_inputs(&ids).await.map_err(Some))
        });
        for (positions, read) in join_all(reads).await {
            match read {
                Ok(values) => {
                    for (&at, value) in positions.iter().zip(values) {
                        found[at] = value.map_or(StoredValue::Missing, StoredValue::Found);
                    }
                }
                Err(error) => {
                    if let Some(e) = &error {
                        tracing::warn!(error = %e, jobs = positions.len(), "cannot read inputs sent by reference");
                    }
                    for &at in positions {
                        found[at] = match error {
                            Some(_) => StoredValue::Unreachable,
                            None => StoredValue::UnknownStore {
                                store: refs[at].1,
                                known: self.count(),
                            },
                        };
                    }
                }
            }
        }
        found
    }

    /// Deletes the inputs of jobs whose results are stored, from every store but the result
    /// store (whose inputs go in the results' own pipeline, see [`crate::ResultWrite`]).
    /// Best effort: what is not deleted expires with its TTL.
    pub async fn unlink_extra(&self, refs: &[(&str, u16)]) {
        let mut by_store: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for (id, store) in refs {
            if *store != 0 {
                by_store.entry(*store).or_default().push(id);
            }
        }
        let deletes = by_store.into_iter().filter_map(|(store, ids)| {
            let handle = self.stores.get(usize::from(store))?;
            Some(async move {
                if let Err(e) = handle.unlink_inputs(&ids).await {
                    tracing::debug!(error = %e, store, "cannot delete inputs; they expire with their TTL");
                }
            })
        });
        join_all(deletes).await;
    }
}
