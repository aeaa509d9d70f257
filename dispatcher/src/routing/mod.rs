//! The routing decision for each job, against one immutable [`Routes`] snapshot of the
//! model registry: a job for an undeclared model or version is refused; a job that names
//! a version goes to it; a job that names none, for a declared model, goes to the version
//! its weights pick (`jetinfer_schemas::routing`: FNV-1a of the sticky `meta` value or the
//! job id, over 1,000 buckets). Without a registry (or for a model it does not declare)
//! nothing is routed: any worker serving the model runs the job, as before.
//!
//! The registry follower ([`crate::registry`]) builds a new snapshot per registry write
//! and swaps it whole, and the intake takes one snapshot per group of jobs, so no job is
//! routed by half of a change. Each model's split, version strings and `routed_total`
//! counters are built once per write; per job the cost is two map lookups, a hash over the
//! key and a search over a few integers ([`payload`] then finds where the version goes).

pub(crate) mod payload;

use std::collections::HashMap;

use jetinfer_registry::snapshot::{self, Change};
use jetinfer_registry::Stored;
use jetinfer_schemas::registry::{ModelDecl, RegistrySnapshot};
use jetinfer_schemas::routing::{route_bucket, route_key, TrafficSplit};
use jetinfer_schemas::{Job, JobError};

use crate::telemetry;

/// The registry as the intake routes jobs by it. Immutable once published.
#[derive(Clone, Default)]
pub(crate) struct Routes {
    /// Declared models and versions: the one check of a named route.
    check: RegistrySnapshot,
    /// Per declared model, its traffic split.
    models: HashMap<String, ModelRoutes>,
}

#[derive(Clone)]
struct ModelRoutes {
    split: TrafficSplit,
    sticky_key: Option<String>,
    /// The versions of `split`, by the same index.
    targets: Vec<Target>,
}

/// A version jobs are routed to, with its counter.
#[derive(Clone)]
pub(crate) struct Target {
    pub version: String,
    pub counter: metrics::Counter,
}

impl Routes {
    /// The routes of the declarations read at start.
    pub fn of(stored: &[Stored]) -> Routes {
        let mut routes = Routes::default();
        for s in stored {
            routes.apply(Change::Declared(s.decl.clone()));
        }
        routes
    }

    /// Applies one registry write.
    pub fn apply(&mut self, change: Change) {
        match &change {
            Change::Declared(decl) => {
                self.models.insert(decl.name.clone(), ModelRoutes::of(decl));
            }
            Change::Removed(name) => {
                self.models.remove(name);
            }
        }
        snapshot::apply(&mut self.check, change);
    }

    /// The declared versions of each declared model (empty without a registry).
    pub fn declared(&self) -> &std::collections::BTreeMap<String, Vec<String>> {
        &self.check.models
    }

    /// How many models the registry declares.
    pub fn declared_models(&self) -> usize {
        self.check.models.len()
    }

    /// Where `job` goes: `Ok(None)` as it names (its version, or any when it names none and
    /// the registry does not declare the model), `Ok(Some(target))` the version its model's
    /// weights pick, `Err` the `unknown_model` answer for an undeclared model or version.
    pub fn route(&self, job: &Job<'_>) -> Result<Option<&Target>, JobError> {
        self.check.check(&job.model, job.version.as_deref())?;
        if job.version.is_some() {
            return Ok(None);
        }
        let Some(model) = self.models.get(&*job.model) else {
            return Ok(None);
        };
        let key = route_key(model.sticky_key.as_deref(), &job.id, job.meta.as_ref());
        Ok(model
            .split
            .pick_index(route_bucket(key))
            .map(|i| &model.targets[i]))
    }
}

impl ModelRoutes {
    fn of(decl: &ModelDecl) -> ModelRoutes {
        let split = TrafficSplit::of(decl);
        let targets = split
            .versions()
            .map(|v| Target {
                version: v.to_string(),
                counter: telemetry::routed_counter(&decl.name, v),
            })
            .collect();
        ModelRoutes {
            split,
            sticky_key: decl.sticky_key.clone(),
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jetinfer_schemas::registry::{Audit, VersionDecl, DECL_VERSION};
    use jetinfer_schemas::tensor::Tensor;
    use jetinfer_schemas::ErrorCode;

    use super::*;

    fn decl(name: &str, weights: &[(&str, u16)], sticky: Option<&str>) -> ModelDecl {
        let d = ModelDecl {
            v: DECL_VERSION,
            name: name.into(),
            versions: weights
                .iter()
                .map(|(v, _)| VersionDecl::example(v))
                .collect(),
            default_version: weights[0].0.into(),
            weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            sticky_key: sticky.map(Into::into),
            audit: Audit {
                by: "t".into(),
                at_ms: 0,
                change: "t".into(),
            },
        };
        d.validate().unwrap();
        d
    }

    fn job<'a>(id: &'a str, model: &'a str, version: Option<&'a str>) -> Job<'a> {
        let mut j = Job::new(id, model, vec![Tensor::from_f32(vec![4], &[0.0; 4])]);
        j.version = version.map(Into::into);
        j
    }

    fn routed(routes: &Routes, j: &Job<'_>) -> Option<String> {
        routes.route(j).unwrap().map(|t| t.version.clone())
    }

    #[test]
    fn no_registry_routes_nothing_and_checks_nothing() {
        let routes = Routes::default();
        assert_eq!(routed(&routes, &job("a", "m", None)), None);
        assert_eq!(routed(&routes, &job("a", "m", Some("9"))), None);
    }

    #[test]
    fn unversioned_jobs_follow_the_weights_and_named_ones_their_version() {
        let mut routes = Routes::default();
        let d = decl("m", &[("1", 90), ("2", 10)], None);
        routes.apply(Change::Declared(d.clone()));
        let n = 10_000;
        let mut second = 0;
        for i in 0..n {
            let id = format!("job-{i}");
            let got = routed(&routes, &job(&id, "m", None)).unwrap();
            // The dispatcher's tables agree with the one definition.
            assert_eq!(Some(got.clone()), d.routed_version(&id, None));
            second += usize::from(got == "2");
        }
        assert!((second as f64 / n as f64 - 0.10).abs() < 0.01, "{second}");
        assert_eq!(routed(&routes, &job("x", "m", Some("2"))), None);
        // Undeclared model and version: unknown_model.
        let e = routes.route(&job("x", "other", None)).err().unwrap();
        assert_eq!(e.code, ErrorCode::UnknownModel);
        let e = routes.route(&job("x", "m", Some("9"))).err().unwrap();
        assert_eq!(e.code, ErrorCode::UnknownModel);
        // Removed: nothing declared any more, so nothing is checked or routed.
        routes.apply(Change::Removed("m".into()));
        assert_eq!(routes.declared_models(), 0);
        assert_eq!(routed(&routes, &job("x", "m", None)), None);
    }

    #[test]
    fn a_sticky_key_keeps_a_user_on_one_version() {
        let mut routes = Routes::default();
        routes.apply(Change::Declared(decl(
            "m",
            &[("1", 50), ("2", 50)],
            Some("user"),
        )));
        let mut seen = std::collections::HashSet::new();
        for user in 0..50 {
            let meta = BTreeMap::from([("user".to_string(), format!("u{user}"))]);
            let versions: std::collections::HashSet<String> = (0..20)
                .map(|i| {
                    let id = format!("job-{user}-{i}");
                    let mut j = job(&id, "m", None);
                    j.meta = Some(meta.clone());
                    routed(&routes, &j).unwrap()
                })
                .collect();
            assert_eq!(versions.len(), 1, "user {user} saw {versions:?}");
            seen.extend(versions);
        }
        assert_eq!(seen.len(), 2, "50 users at 50/50 meet both versions");
    }
}
