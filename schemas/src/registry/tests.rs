//! Tests of the registry declarations; `decl` is shared with routing's tests.

use super::*;
use crate::error::ErrorCode;

pub(crate) fn decl(name: &str, versions: &[&str]) -> ModelDecl {
    ModelDecl {
        v: DECL_VERSION,
        name: name.into(),
        versions: versions
            .iter()
            .map(|v| VersionDecl {
                path: format!("{name}-{v}.pt"),
                inputs: vec![InputSpec {
                    dtype: DType::F32,
                    shape: vec![16],
                }],
                ..VersionDecl::example(v)
            })
            .collect(),
        default_version: versions[0].into(),
        weights: BTreeMap::from([(versions[0].to_string(), 100)]),
        sticky_key: None,
        audit: Audit {
            by: "test".into(),
            at_ms: 1,
            change: "declare".into(),
        },
    }
}

#[test]
fn a_declaration_round_trips_and_validates() {
    let d = decl("mlp", &["1", "2"]);
    assert_eq!(decode_decl(&crate::encode(&d)).unwrap(), d);
    assert!(matches!(
        decode_decl(b"\x01"),
        Err(RegistryError::Decode(_))
    ));
    let mut future = d.clone();
    future.v = 9;
    assert_eq!(
        decode_decl(&crate::encode(&future)),
        Err(RegistryError::SchemaVersion(9))
    );
}

#[test]
fn a_linger_is_written_only_when_set_and_round_trips() {
    let d = decl("mlp", &["1"]);
    // No linger: the bytes are those of a declaration from before the field.
    assert!(!crate::encode(&d).windows(9).any(|w| w == b"linger_ms"));
    let mut lingering = d.clone();
    lingering.versions[0].batching.linger_ms = 3;
    assert_eq!(decode_decl(&crate::encode(&lingering)).unwrap(), lingering);
}

#[test]
fn the_load_state_defaults_to_loaded_and_round_trips() {
    let d = decl("mlp", &["1", "2"]);
    // Written as before the field existed: no `loaded` key at all.
    let bytes = crate::encode(&d);
    assert!(!bytes.windows(6).any(|w| w == b"loaded"));
    assert!(decode_decl(&bytes)
        .unwrap()
        .versions
        .iter()
        .all(|v| v.loaded));
    let mut off = d.clone();
    off.versions[1].loaded = false;
    let back = decode_decl(&crate::encode(&off)).unwrap();
    assert_eq!(back, off);
    assert_eq!(back.versions[1].as_loaded(), d.versions[1]);
}

#[test]
fn invalid_declarations_are_refused_with_the_reason() {
    let mut d = decl("mlp", &["1", "1"]);
    assert!(matches!(
        d.validate(),
        Err(RegistryError::DuplicateVersion { .. })
    ));
    d = decl("m.x", &["1"]);
    assert!(matches!(d.validate(), Err(RegistryError::Name(_))));
    d = decl("mlp", &["1"]);
    d.default_version = "7".into();
    assert!(matches!(
        d.validate(),
        Err(RegistryError::Undeclared {
            what: "the default version",
            ..
        })
    ));
    d = decl("mlp", &["1", "2"]);
    d.weights = BTreeMap::from([("1".into(), 90), ("2".into(), 9)]);
    assert_eq!(
        d.validate(),
        Err(RegistryError::WeightsSum {
            model: "mlp".into(),
            sum_hundredths: 99
        })
    );
    d.weights = BTreeMap::from([("1".into(), 90), ("3".into(), 10)]);
    assert!(matches!(
        d.validate(),
        Err(RegistryError::Undeclared {
            what: "a weight",
            ..
        })
    ));
    d = decl("mlp", &["1"]);
    d.versions[0].sha256 = "AB".repeat(32);
    assert!(matches!(d.validate(), Err(RegistryError::Field { .. })));
    d = decl("mlp", &["1"]);
    d.versions[0].batching.pad = Some(vec![0, 0]);
    assert!(matches!(d.validate(), Err(RegistryError::Field { .. })));
    d.versions.clear();
    assert!(matches!(d.validate(), Err(RegistryError::NoVersions(_))));
}

#[test]
fn weights_parse_exactly_at_hundredths() {
    for (text, want) in [
        ("0", 0),
        ("1", 100),
        ("1.0", 100),
        ("0.9", 90),
        ("0.10", 10),
        (".25", 25),
        ("0.01", 1),
        ("0.290", 29),
    ] {
        assert_eq!(parse_weight(text), Ok(want), "{text}");
    }
    for bad in ["", ".", "0.005", "1.01", "2", "-0.1", "0,5", "abc", "1e-2"] {
        assert!(parse_weight(bad).is_err(), "{bad:?} was accepted");
    }
    let w = parse_weights("1=0.9, 2=0.1").unwrap();
    assert_eq!(w, BTreeMap::from([("1".into(), 90), ("2".into(), 10)]));
    assert_eq!(format_weights(&w), "1=0.90,2=0.10");
    assert!(parse_weights("1=0.5,1=0.5").is_err());
    assert!(parse_weights("1").is_err());
    assert!(parse_weights("").is_err());
}

#[test]
fn the_snapshot_checks_models_and_versions_only_when_active() {
    let empty = RegistrySnapshot::default();
    assert!(empty.check("anything", Some("9")).is_ok());
    let snap = RegistrySnapshot {
        models: BTreeMap::from([("mlp".into(), vec!["1".into(), "2".into()])]),
    };
    assert!(snap.check("mlp", None).is_ok());
    assert!(snap.check("mlp", Some("2")).is_ok());
    let e = snap.check("ghost", None).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownModel);
    assert!(e.message.contains("\"ghost\" is not declared"), "{e}");
    let e = snap.check("mlp", Some("7")).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownModel);
    assert!(
        e.message.contains("no version \"7\"") && e.message.contains("declared: 1, 2"),
        "{e}"
    );
}
