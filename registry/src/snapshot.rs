//! The registry as the dispatcher sees it: a [`RegistrySnapshot`] (declared versions per
//! model) built from the bucket's current values and kept current by a stream of
//! [`Change`]s (a KV watch: the latest value of every key, then each write).

use async_nats::jetstream::kv::Operation;
use futures::{Stream, StreamExt};
use jetinfer_schemas::registry::{decode_decl, ModelDecl, RegistrySnapshot};

use crate::{Registry, StoreError, Stored};

/// One write to the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A model was declared or its declaration changed.
    Declared(ModelDecl),
    /// A model's key was deleted or purged.
    Removed(String),
}

/// The snapshot of these declarations.
pub fn of(stored: &[Stored]) -> RegistrySnapshot {
    let mut snapshot = RegistrySnapshot::default();
    for s in stored {
        apply(&mut snapshot, Change::Declared(s.decl.clone()));
    }
    snapshot
}

/// Applies one change to a snapshot.
pub fn apply(snapshot: &mut RegistrySnapshot, change: Change) {
    match change {
        Change::Declared(decl) => {
            let versions = decl.versions.into_iter().map(|v| v.version).collect();
            snapshot.models.insert(decl.name, versions);
        }
        Change::Removed(name) => {
            snapshot.models.remove(&name);
        }
    }
}

impl Registry {
    /// Every key's latest value, then every later write, as [`Change`]s. A value that does
    /// not decode is an [`StoreError::Unreadable`] item (the stream goes on).
    pub async fn changes(
        &self,
    ) -> Result<impl Stream<Item = Result<Change, StoreError>> + Send + 'static, StoreError> {
        let watch = self.kv.watch_all().await.map_err(|e| StoreError::Read {
            name: "*".to_string(),
            source: Box::new(e),
        })?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(|e| StoreError::Read {
                name: "*".to_string(),
                source: Box::new(e),
            })?;
            match entry.operation {
                Operation::Put => {
                    decode_decl(&entry.value)
                        .map(Change::Declared)
                        .map_err(|source| StoreError::Unreadable {
                            key: entry.key.clone(),
                            revision: entry.revision,
                            source,
                        })
                }
                Operation::Delete | Operation::Purge => Ok(Change::Removed(entry.key)),
            }
        }))
    }
}
