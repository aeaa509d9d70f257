//! The changes an operator makes to a declaration, as pure functions: each leaves the
//! declaration valid or returns why not (and the caller writes nothing).
//!
//! `default` is the atomic switch: it names the default version and sends it all
//! unversioned traffic (weights `v=1`). `weights` splits that traffic and leaves the
//! default (the version to fall back to) alone.

use std::collections::BTreeMap;

use jetinfer_schemas::registry::{
    format_weights, Audit, ModelDecl, RegistryError, VersionDecl, Weight, DECL_VERSION,
};

/// A new model whose only version is `version`: its default, with all the traffic.
pub fn new_model(
    name: &str,
    version: VersionDecl,
    audit: Audit,
) -> Result<ModelDecl, RegistryError> {
    let decl = ModelDecl {
        v: DECL_VERSION,
        name: name.to_string(),
        default_version: version.version.clone(),
        weights: BTreeMap::from([(version.version.clone(), 100)]),
        versions: vec![version],
        sticky_key: None,
        audit,
    };
    decl.validate()?;
    Ok(decl)
}

/// Adds `version` to `decl` (default and weights unchanged: a new version gets no traffic
/// until the operator gives it some).
pub fn add_version(decl: &mut ModelDecl, version: VersionDecl) -> Result<(), RegistryError> {
    if decl.version(&version.version).is_some() {
        return Err(RegistryError::DuplicateVersion {
            model: decl.name.clone(),
            version: version.version,
        });
    }
    decl.versions.push(version);
    decl.validate()
}

/// Makes `version` the default and gives it all unversioned traffic.
pub fn set_default(decl: &mut ModelDecl, version: &str) -> Result<(), RegistryError> {
    if decl.version(version).is_none() {
        return Err(RegistryError::Undeclared {
            model: decl.name.clone(),
            version: version.to_string(),
            what: "default",
        });
    }
    decl.default_version = version.to_string();
    decl.weights = BTreeMap::from([(version.to_string(), 100)]);
    decl.validate()
}

/// Replaces the traffic weights (every version named must be declared, the sum must be 1).
/// Versions left out get weight 0.
pub fn set_weights(
    decl: &mut ModelDecl,
    weights: BTreeMap<String, Weight>,
) -> Result<(), RegistryError> {
    if let Some(v) = weights.keys().find(|v| decl.version(v).is_none()) {
        return Err(RegistryError::Undeclared {
            model: decl.name.clone(),
            version: v.clone(),
            what: "a weight",
        });
    }
    decl.weights = weights.into_iter().filter(|(_, w)| *w > 0).collect();
    decl.validate()
}

/// Why a version's load state cannot change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadStateError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("model {model} version {version} is the default version: make another version the default (jetinfer models default {model} <version>) before unloading it")]
    IsDefault { model: String, version: String },
    #[error("model {model} version {version} still has {weight}/100 of the unversioned traffic: move its weight to other versions first (jetinfer models weights {model} ...)")]
    HasTraffic {
        model: String,
        version: String,
        weight: Weight,
    },
}

/// Sets whether workers keep `version` loaded. Unloading is refused while the version is
/// the default or has traffic weight: jobs routed to it would find no worker.
pub fn set_loaded(decl: &mut ModelDecl, version: &str, loaded: bool) -> Result<(), LoadStateError> {
    let model = decl.name.clone();
    if decl.version(version).is_none() {
        return Err(RegistryError::Undeclared {
            model,
            version: version.to_string(),
            what: if loaded { "load" } else { "unload" },
        }
        .into());
    }
    if !loaded {
        if decl.default_version == version {
            return Err(LoadStateError::IsDefault {
                model,
                version: version.to_string(),
            });
        }
        if let Some(&weight) = decl.weights.get(version).filter(|w| **w > 0) {
            return Err(LoadStateError::HasTraffic {
                model,
                version: version.to_string(),
                weight,
            });
        }
    }
    for v in decl.versions.iter_mut().filter(|v| v.version == version) {
        v.loaded = loaded;
    }
    Ok(decl.validate()?)
}

/// The audit line of a weights change.
pub fn weights_change(weights: &BTreeMap<String, Weight>) -> String {
    format!("weights {}", format_weights(weights))
}

#[cfg(test)]
mod tests {
    use jetinfer_schemas::registry::{parse_weights, Batching};

    use super::*;

    fn version(v: &str) -> VersionDecl {
        let example = VersionDecl::example(v);
        VersionDecl {
            path: "/m.pt".into(),
            sha256: "0".repeat(64),
            batching: Batching {
                max_batch_size: 4,
                ..example.batching.clone()
            },
            ..example
        }
    }

    fn audit() -> Audit {
        Audit {
            by: "op".into(),
            at_ms: 5,
            change: "declare".into(),
        }
    }

    #[test]
    fn versions_default_and_weights_change_only_into_valid_states() {
        let mut d = new_model("m", version("1"), audit()).unwrap();
        assert_eq!(d.weights, BTreeMap::from([("1".into(), 100)]));
        add_version(&mut d, version("2")).unwrap();
        assert_eq!(d.default_version, "1", "a new version gets no traffic");
        assert!(matches!(
            add_version(&mut d, version("2")),
            Err(RegistryError::DuplicateVersion { .. })
        ));
        set_weights(&mut d, parse_weights("1=0.9,2=0.1").unwrap()).unwrap();
        assert_eq!(d.weights["2"], 10);
        assert!(set_weights(&mut d.clone(), parse_weights("1=0.9,2=0.2").unwrap()).is_err());
        assert!(set_weights(&mut d.clone(), parse_weights("1=0.9,3=0.1").unwrap()).is_err());
        assert!(set_weights(&mut d.clone(), parse_weights("1=1,3=0").unwrap()).is_err());
        set_weights(&mut d, parse_weights("1=0,2=1").unwrap()).unwrap();
        assert_eq!(d.weights, BTreeMap::from([("2".into(), 100)]));
        set_default(&mut d, "1").unwrap();
        assert_eq!(
            (d.default_version.as_str(), d.weights.clone()),
            ("1", BTreeMap::from([("1".into(), 100)]))
        );
        assert!(matches!(
            set_default(&mut d, "9"),
            Err(RegistryError::Undeclared { .. })
        ));
        assert_eq!(weights_change(&d.weights), "weights 1=1.00");
    }

    #[test]
    fn unloading_is_refused_for_the_default_and_for_a_version_with_traffic() {
        let mut d = new_model("m", version("1"), audit()).unwrap();
        add_version(&mut d, version("2")).unwrap();
        set_weights(&mut d, parse_weights("1=0.9,2=0.1").unwrap()).unwrap();
        let e = set_loaded(&mut d, "1", false).unwrap_err();
        assert!(matches!(e, LoadStateError::IsDefault { .. }), "{e}");
        assert!(e.to_string().contains("jetinfer models default m"));
        let e = set_loaded(&mut d, "2", false).unwrap_err();
        assert!(
            matches!(e, LoadStateError::HasTraffic { weight: 10, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("move its weight"));
        assert!(matches!(
            set_loaded(&mut d, "9", true),
            Err(LoadStateError::Registry(RegistryError::Undeclared { .. }))
        ));
        set_weights(&mut d, parse_weights("1=1").unwrap()).unwrap();
        set_loaded(&mut d, "2", false).unwrap();
        assert!(!d.version("2").unwrap().loaded && d.version("1").unwrap().loaded);
        set_loaded(&mut d, "2", true).unwrap();
        assert!(d.version("2").unwrap().loaded);
    }
}
