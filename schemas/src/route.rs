//! Where a job may run: its model, and the version when the job named one. The one
//! definition of route matching: the dispatcher's queues and worker registry and the
//! worker's model lookup all use it.

/// A job's route: its model, and the version when the job named one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub model: String,
    pub version: Option<String>,
}

/// Whether a job for `model` (at `version`, when it named one) may run on a served model
/// `served_name` at `served_version`. A job that names no version runs on any version.
pub fn route_matches(
    model: &str,
    version: Option<&str>,
    served_name: &str,
    served_version: &str,
) -> bool {
    model == served_name && version.is_none_or(|v| v == served_version)
}

impl Route {
    /// Whether a worker announcing `name` at `version` can run this route's jobs.
    pub fn matches(&self, name: &str, version: &str) -> bool {
        route_matches(&self.model, self.version.as_deref(), name, version)
    }
}

impl std::fmt::Display for Route {
    /// `model`, or `model version v` when the job named a version.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} version {v}", self.model),
            None => f.write_str(&self.model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn a_route_without_version_matches_every_version() {
        let any = Route {
            model: "m".into(),
            version: None,
        };
        let v1 = Route {
            model: "m".into(),
            version: Some("1".into()),
        };
        assert!(any.matches("m", "1") && any.matches("m", "2"));
        assert!(v1.matches("m", "1") && !v1.matches("m", "2") && !v1.matches("x", "1"));
        assert_eq!(
            (any.to_string(), v1.to_string()),
            ("m".into(), "m version 1".into())
        );
    }
}
