//! Which servers `demo` and `bench` use. They start their own unless told otherwise on
//! the command line: `--use-running` (the URLs of the flags, the environment or the
//! defaults) or `--nats-url`/`--redis-url` given as flags. `NATS_URL`/`REDIS_URL` inherited
//! from the environment alone never redirect them (a shell set up for another stack would
//! otherwise silently load it); they are named in a note instead.

use clap::parser::ValueSource;
use clap::ArgMatches;

/// Which server URLs were given as command-line flags (not from the environment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explicit {
    pub nats: bool,
    pub redis: bool,
}

impl Explicit {
    /// Reads clap's matches, the subcommand's included (global flags may follow it).
    pub fn from_matches(m: &ArgMatches) -> Self {
        let flag = |m: &ArgMatches, id: &str| {
            matches!(
                m.try_get_raw(id).ok().flatten().and(m.value_source(id)),
                Some(ValueSource::CommandLine)
            )
        };
        let mut e = Explicit {
            nats: flag(m, "nats_url"),
            redis: flag(m, "redis_url"),
        };
        if let Some((_, sub)) = m.subcommand() {
            let inner = Explicit::from_matches(sub);
            e.nats |= inner.nats;
            e.redis |= inner.redis;
        }
        e
    }
}

/// The servers a `demo` or `bench` run uses: a URL to use, or `None` to start one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub nats_url: Option<String>,
    pub redis_url: Option<String>,
    /// Environment URLs left unused, for the person to see.
    pub notes: Vec<String>,
}

/// Decides from the URLs the flags or environment gave (`nats`, `redis`: `None` when
/// neither did), which came from flags, `--use-running`, and the defaults.
pub fn choose(
    nats: Option<&str>,
    redis: Option<&str>,
    explicit: Explicit,
    use_running: bool,
    defaults: (&str, &str),
) -> Choice {
    if use_running {
        return Choice {
            nats_url: Some(nats.unwrap_or(defaults.0).to_string()),
            redis_url: Some(redis.unwrap_or(defaults.1).to_string()),
            notes: Vec::new(),
        };
    }
    let mut notes = Vec::new();
    let mut pick = |url: Option<&str>, given: bool, var: &str, server: &str| match url {
        Some(u) if given => Some(u.to_string()),
        Some(u) => {
            notes.push(format!(
                "{var}={} from the environment is not used: starting a {server} of its own \
                 (pass --use-running or the flag to use it)",
                jetinfer_client::redact_url(u)
            ));
            None
        }
        None => None,
    };
    let nats_url = pick(nats, explicit.nats, "NATS_URL", "nats-server");
    let redis_url = pick(redis, explicit.redis, "REDIS_URL", "redis-server");
    Choice {
        nats_url,
        redis_url,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    const D: (&str, &str) = ("nats://127.0.0.1:4222", "redis://127.0.0.1:6379");

    #[test]
    fn the_environment_alone_never_redirects() {
        let env_only = choose(
            Some("nats://a:1"),
            Some("redis://b:2"),
            Explicit::default(),
            false,
            D,
        );
        assert_eq!((env_only.nats_url, env_only.redis_url), (None, None));
        assert_eq!(env_only.notes.len(), 2);
        assert!(
            env_only.notes[0].contains("NATS_URL=nats://a:1"),
            "{:?}",
            env_only.notes
        );
        let flags = Explicit {
            nats: true,
            redis: false,
        };
        let one = choose(Some("nats://a:1"), None, flags, false, D);
        assert_eq!(one.nats_url.as_deref(), Some("nats://a:1"));
        assert_eq!(one.redis_url, None);
        assert!(one.notes.is_empty());
        let running = choose(None, Some("redis://b:2"), Explicit::default(), true, D);
        assert_eq!(running.nats_url.as_deref(), Some(D.0));
        assert_eq!(running.redis_url.as_deref(), Some("redis://b:2"));
    }

    #[test]
    fn flags_before_or_after_the_subcommand_count_as_explicit() {
        let cmd = crate::commands::Cli::command();
        let m = cmd
            .clone()
            .try_get_matches_from(["jetinfer", "--nats-url", "nats://x:1", "demo"])
            .unwrap();
        assert_eq!(
            Explicit::from_matches(&m),
            Explicit {
                nats: true,
                redis: false
            }
        );
        let m = cmd
            .clone()
            .try_get_matches_from(["jetinfer", "demo", "--redis-url", "redis://y"])
            .unwrap();
        assert_eq!(
            Explicit::from_matches(&m),
            Explicit {
                nats: false,
                redis: true
            }
        );
        let m = cmd.try_get_matches_from(["jetinfer", "demo"]).unwrap();
        assert_eq!(Explicit::from_matches(&m), Explicit::default());
        assert!(crate::commands::Cli::from_arg_matches(&m).is_ok());
    }
}
