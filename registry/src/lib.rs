//! The model registry every process can see: one [`ModelDecl`] per model in the NATS KV
//! bucket [`REGISTRY_BUCKET`], keyed by model name.
//!
//! - [`Registry`] (this file): open or create the bucket, read declarations, and write them
//!   only by compare-and-set on the key's revision, so two operators never overwrite each
//!   other ([`StoreError::Conflict`]); each key's history (64 revisions) is the audit trail
//!   and what [`Registry::rollback`] goes back to.
//! - [`edit`]: the pure changes an operator makes (add a version, set the default, set
//!   weights), each checked against the declaration.
//! - [`seed`]: declarations from a worker's models TOML file (idempotent).
//! - [`snapshot`]: the declared models and versions as a stream of changes, for the
//!   dispatcher's [`RegistrySnapshot`].
//!
//! Values are MessagePack (the types and rules live in `jetinfer_schemas::registry`).
//! This crate depends on schemas and async-nats only; it does no routing.

pub mod edit;
pub mod seed;
pub mod snapshot;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use futures::TryStreamExt;
pub use jetinfer_schemas::registry::{
    decode_decl, Audit, ModelDecl, RegistryError, RegistrySnapshot, VersionDecl, REGISTRY_BUCKET,
    REGISTRY_HISTORY,
};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the model registry (NATS KV bucket {REGISTRY_BUCKET}) does not exist yet: declare or seed a model first")]
    NoBucket,
    #[error("cannot open the model registry bucket {REGISTRY_BUCKET}")]
    Bucket(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("model {0} is not declared in the registry")]
    NotDeclared(String),
    #[error("model {name} changed since revision {expected} (another writer got there first): read it again and retry")]
    Conflict { name: String, expected: u64 },
    #[error("model {name} is already declared (a concurrent declare won)")]
    AlreadyDeclared { name: String },
    #[error("model {name}: no earlier declaration to roll back to")]
    NoEarlierRevision { name: String },
    #[error("cannot read model {name} from the registry")]
    Read {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot write model {name} to the registry")]
    Write {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("registry key {key} at revision {revision}: {source}")]
    Unreadable {
        key: String,
        revision: u64,
        #[source]
        source: RegistryError,
    },
    #[error(transparent)]
    Invalid(#[from] RegistryError),
    #[error(transparent)]
    LoadState(#[from] edit::LoadStateError),
}

/// A declaration and the KV revision it was read at (what an update must name).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub decl: ModelDecl,
    pub revision: u64,
}

/// One revision of a model's key, oldest first in [`Registry::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub revision: u64,
    /// The declaration written at this revision; `None` for a delete marker.
    pub decl: Option<ModelDecl>,
}

/// A handle on the registry bucket (cheap to clone).
#[derive(Debug, Clone)]
pub struct Registry {
    kv: kv::Store,
}

impl Registry {
    /// The registry, or `None` when its bucket does not exist (no registry: nothing is
    /// checked against it).
    pub async fn open(js: &jetstream::Context) -> Result<Option<Registry>, StoreError> {
        match js.get_stream(format!("KV_{REGISTRY_BUCKET}")).await {
            Ok(_) => {}
            Err(e) => {
                return match e.kind() {
                    GetStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok(None)
                    }
                    _ => Err(StoreError::Bucket(Box::new(e))),
                }
            }
        }
        let kv = js
            .get_key_value(REGISTRY_BUCKET)
            .await
            .map_err(|e| StoreError::Bucket(Box::new(e)))?;
        Ok(Some(Registry { kv }))
    }

    /// The registry, creating its bucket (with [`REGISTRY_HISTORY`] revisions per key, file
    /// storage, `replicas` copies: 3 on a 3-node NATS cluster) when it does not exist; an
    /// existing bucket is used as it is.
    pub async fn open_or_create(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Registry, StoreError> {
        if let Some(r) = Self::open(js).await? {
            return Ok(r);
        }
        let config = kv::Config {
            bucket: REGISTRY_BUCKET.to_string(),
            description: "jetinfer model registry: one declaration per model".to_string(),
            history: REGISTRY_HISTORY,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(kv) => Ok(Registry { kv }),
            // Another process created it meanwhile.
            Err(e) => Self::open(js)
                .await?
                .ok_or_else(|| StoreError::Bucket(Box::new(e))),
        }
    }

    /// The underlying KV store (for watching).
    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// The declaration of `name`, or `None` when it is not declared (or was deleted).
    pub async fn get(&self, name: &str) -> Result<Option<Stored>, StoreError> {
        let entry = self.kv.entry(name).await.map_err(|e| StoreError::Read {
            name: name.to_string(),
            source: Box::new(e),
        })?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(None);
        };
        let decl = decode_decl(&entry.value).map_err(|source| StoreError::Unreadable {
            key: name.to_string(),
            revision: entry.revision,
            source,
        })?;
        Ok(Some(Stored {
            decl,
            revision: entry.revision,
        }))
    }

    /// Every declaration, by model name.
    pub async fn list(&self) -> Result<Vec<Stored>, StoreError> {
        let read = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Read {
            name: "*".to_string(),
            source: e,
        };
        let mut keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(|e| read(Box::new(e)))?
            .try_collect()
            .await
            .map_err(|e| read(Box::new(e)))?;
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(stored) = self.get(&key).await? {
                out.push(stored);
            }
        }
        Ok(out)
    }

    /// Writes a new model's declaration; fails when the model is already declared.
    pub async fn create(&self, decl: &ModelDecl) -> Result<u64, StoreError> {
        decl.validate()?;
        let value = jetinfer_schemas::encode(decl).into();
        self.kv
            .create(&decl.name, value)
            .await
            .map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => StoreError::AlreadyDeclared {
                    name: decl.name.clone(),
                },
                _ => StoreError::Write {
                    name: decl.name.clone(),
                    source: Box::new(e),
                },
            })
    }

    /// Replaces the declaration read at `revision`: compare-and-set, so a write made by
    /// someone else since that read fails with [`StoreError::Conflict`].
    pub async fn update(&self, decl: &ModelDecl, revision: u64) -> Result<u64, StoreError> {
        decl.validate()?;
        let value = jetinfer_schemas::encode(decl).into();
        self.kv
            .update(&decl.name, value, revision)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => StoreError::Conflict {
                    name: decl.name.clone(),
                    expected: revision,
                },
                _ => StoreError::Write {
                    name: decl.name.clone(),
                    source: Box::new(e),
                },
            })
    }

    /// Reads `name`, applies `change` to its declaration, stamps `audit` and writes it back
    /// by compare-and-set. With `expect_revision`, the write also fails unless the model is
    /// still at the revision the operator looked at.
    pub async fn modify<E>(
        &self,
        name: &str,
        expect_revision: Option<u64>,
        audit: Audit,
        change: impl FnOnce(&mut ModelDecl) -> Result<(), E>,
    ) -> Result<Stored, StoreError>
    where
        StoreError: From<E>,
    {
        let current = self
            .get(name)
            .await?
            .ok_or_else(|| StoreError::NotDeclared(name.to_string()))?;
        let revision = expect_revision.unwrap_or(current.revision);
        let mut decl = current.decl;
        change(&mut decl)?;
        decl.audit = audit;
        let revision = self.update(&decl, revision).await?;
        Ok(Stored { decl, revision })
    }

    /// Every revision the bucket still keeps of `name` (up to [`REGISTRY_HISTORY`]),
    /// oldest first: the audit trail.
    pub async fn history(&self, name: &str) -> Result<Vec<Revision>, StoreError> {
        let read = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Read {
            name: name.to_string(),
            source: e,
        };
        let mut history = self.kv.history(name).await.map_err(|e| read(Box::new(e)))?;
        let mut out = Vec::new();
        while let Some(entry) = history.try_next().await.map_err(|e| read(Box::new(e)))? {
            let decl =
                match entry.operation {
                    Operation::Put => Some(decode_decl(&entry.value).map_err(|source| {
                        StoreError::Unreadable {
                            key: name.to_string(),
                            revision: entry.revision,
                            source,
                        }
                    })?),
                    Operation::Delete | Operation::Purge => None,
                };
            out.push(Revision {
                revision: entry.revision,
                decl,
            });
        }
        Ok(out)
    }

    /// Restores the declaration `name` had before its latest revision, as a new revision
    /// (compare-and-set against the latest) with `audit`'s who and when. Returns the new
    /// revision and the one restored.
    pub async fn rollback(&self, name: &str, audit: Audit) -> Result<(Stored, u64), StoreError> {
        let history = self.history(name).await?;
        let Some((latest, earlier)) = history.split_last() else {
            return Err(StoreError::NotDeclared(name.to_string()));
        };
        if latest.decl.is_none() {
            return Err(StoreError::NotDeclared(name.to_string()));
        }
        let previous = earlier
            .iter()
            .rev()
            .find_map(|r| r.decl.clone().map(|d| (d, r.revision)));
        let Some((mut decl, restored)) = previous else {
            return Err(StoreError::NoEarlierRevision {
                name: name.to_string(),
            });
        };
        decl.audit = Audit {
            change: format!(
                "rollback to revision {restored} ({})",
                decl.audit.change.clone()
            ),
            ..audit
        };
        let revision = self.update(&decl, latest.revision).await?;
        Ok((Stored { decl, revision }, restored))
    }
}
