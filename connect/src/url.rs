//! Credentials inside server URLs: hidden for printing ([`redact_url`]) and taken out for
//! connecting ([`split_userinfo`]), since async-nats ignores the `user:password@` part.

/// `scheme://user:secret@host` → `scheme://***@host`, for logging configurations. Each server
/// of a comma-separated list is redacted.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (rest, userinfo) = split_one(one);
            match userinfo {
                Some(_) => rest.replacen("://", "://***@", 1),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Credentials written into a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `user:password@`.
    UserPassword { user: String, password: String },
    /// `token@`.
    Token(String),
}

/// Servers written with different credentials in one comma-separated URL list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the servers in the NATS URL list carry different credentials; give them once, with --nats-user/--nats-password or --nats-token")]
pub struct MixedCredentials;

/// The URL list without its userinfo, and the credentials it carried (the same for every
/// server, or none).
pub fn split_userinfo(url: &str) -> Result<(String, Option<UrlCredentials>), MixedCredentials> {
    let mut found: Option<Option<UrlCredentials>> = None;
    let mut servers = Vec::new();
    for one in url.split(',') {
        let (rest, userinfo) = split_one(one);
        let creds = userinfo.map(|u| match u.split_once(':') {
            Some((user, password)) => UrlCredentials::UserPassword {
                user: user.to_string(),
                password: password.to_string(),
            },
            None => UrlCredentials::Token(u.to_string()),
        });
        match &found {
            Some(previous) if *previous != creds => return Err(MixedCredentials),
            _ => found = Some(creds),
        }
        servers.push(rest);
    }
    Ok((servers.join(","), found.flatten()))
}

/// One server URL without its userinfo, and the userinfo.
fn split_one(url: &str) -> (String, Option<&str>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let at = scheme_end + at;
            let rest = format!("{}{}", &url[..scheme_end], &url[at + 1..]);
            (rest, Some(&url[scheme_end..at]))
        }
        None => (url.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("redis://u:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(
            redact_url("nats://t@a:1,nats://t@b:2"),
            "nats://***@a:1,nats://***@b:2"
        );
        // An `@` in a path is not userinfo.
        assert_eq!(
            redact_url("redis+unix:///tmp/a@b.sock"),
            "redis+unix:///tmp/a@b.sock"
        );
    }

    #[test]
    fn userinfo_is_taken_out_of_every_server() {
        let (url, creds) = split_userinfo("nats://u:p@a:1,nats://u:p@b:2").unwrap();
        assert_eq!(url, "nats://a:1,nats://b:2");
        assert_eq!(
            creds,
            Some(UrlCredentials::UserPassword {
                user: "u".into(),
                password: "p".into()
            })
        );
        let (url, creds) = split_userinfo("tls://s3cr3t@h:4222").unwrap();
        assert_eq!(url, "tls://h:4222");
        assert_eq!(creds, Some(UrlCredentials::Token("s3cr3t".into())));
        assert_eq!(
            split_userinfo("nats://h:4222").unwrap(),
            ("nats://h:4222".to_string(), None)
        );
        assert_eq!(
            split_userinfo("nats://a@h:1,nats://h:2"),
            Err(MixedCredentials)
        );
    }
}
