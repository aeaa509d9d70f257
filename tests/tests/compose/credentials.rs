//! The credentials of compose.yaml's stack without Docker: what `scripts/compose-secrets.sh`
//! writes (and keeps), how compose.yaml hands it to each service, and real nats-server and
//! redis-server processes running the stack's files (deploy/nats/compose.conf, the rendered
//! ACL file) with those credentials.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jetinfer_devkit::local::{NatsServer, RedisServer};
use tokio::sync::mpsc;

use super::{compose, environment, root, secrets_script, strings, text, Secrets};

/// The role of each jetinfer service: its NATS user, Redis user, and the names of their
/// passwords in `passwords`.
const ROLES: [(&str, &str, &str, &str, &str); 3] = [
    (
        "dispatcher",
        "dispatcher",
        "jetinfer-dispatcher",
        "JETINFER_NATS_DISPATCHER_PASSWORD",
        "JETINFER_REDIS_DISPATCHER_PASSWORD",
    ),
    (
        "worker",
        "worker",
        "jetinfer-worker",
        "JETINFER_NATS_WORKER_PASSWORD",
        "JETINFER_REDIS_WORKER_PASSWORD",
    ),
    (
        "worker-cpu",
        "worker",
        "jetinfer-worker",
        "JETINFER_NATS_WORKER_PASSWORD",
        "JETINFER_REDIS_WORKER_PASSWORD",
    ),
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_script_keeps_its_passwords_and_writes_private_files() {
    let secrets = Secrets::generate();
    let first = secrets.vars("passwords");
    assert_eq!(first.len(), 9, "passwords: {:?}", first.keys());
    for (name, pw) in &first {
        assert!(
            pw.len() == 48 && pw.chars().all(|c| c.is_ascii_hexdigit()),
            "{name} is not 24 random bytes in hex"
        );
    }
    let distinct: std::collections::BTreeSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), first.len(), "two roles share a password");

    // Readable by the owner only, but for the ACL file (hashes), which the container's redis
    // user reads.
    assert_eq!(mode(&secrets.dir), 0o700);
    for entry in std::fs::read_dir(&secrets.dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a temporary file was left: {name}");
        let want = if name == "redis-users.acl" {
            0o644
        } else {
            0o600
        };
        assert_eq!(mode(&path), want, "{name}");
    }
    let acl = std::fs::read_to_string(secrets.dir.join("redis-users.acl")).unwrap();
    for pw in first.values() {
        assert!(
            !acl.contains(pw.as_str()),
            "the ACL file holds a clear password"
        );
    }

    // Again: the same passwords, the same files.
    let before: BTreeMap<String, String> = [
        "dispatcher.env",
        "worker.env",
        "producer.env",
        "redis-users.acl",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            std::fs::read_to_string(secrets.dir.join(f)).unwrap(),
        )
    })
    .collect();
    let out = secrets_script(&secrets.dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(secrets.vars("passwords"), first);
    for (f, content) in &before {
        assert_eq!(
            &std::fs::read_to_string(secrets.dir.join(f)).unwrap(),
            content,
            "{f}"
        );
    }

    // A password removed is generated anew, one changed by hand is used everywhere, the
    // others stay; the host ports follow the variables compose reads.
    let kept: String = first
        .iter()
        .filter(|(k, _)| k.as_str() != "JETINFER_REDIS_HEALTH_PASSWORD")
        .map(|(k, v)| {
            let v = if k == "JETINFER_NATS_DISPATCHER_PASSWORD" {
                "chosen-by-hand"
            } else {
                v
            };
            format!("{k}={v}\n")
        })
        .collect();
    std::fs::write(secrets.dir.join("passwords"), kept).unwrap();
    let out = secrets_script(
        &secrets.dir,
        &[
            ("JETINFER_NATS_PORT", "14222"),
            ("JETINFER_REDIS_PORT", "16379"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let second = secrets.vars("passwords");
    assert_ne!(
        second["JETINFER_REDIS_HEALTH_PASSWORD"],
        first["JETINFER_REDIS_HEALTH_PASSWORD"]
    );
    assert_eq!(
        second["JETINFER_REDIS_PRODUCER_PASSWORD"],
        first["JETINFER_REDIS_PRODUCER_PASSWORD"]
    );
    assert_eq!(
        secrets.var("dispatcher.env", "NATS_PASSWORD"),
        "chosen-by-hand"
    );
    assert_eq!(
        secrets.var("redis-health.env", "REDISCLI_AUTH"),
        second["JETINFER_REDIS_HEALTH_PASSWORD"]
    );
    assert!(secrets
        .var("producer.env", "NATS_URL")
        .ends_with("@127.0.0.1:14222"));
    assert!(secrets
        .var("producer.env", "REDIS_URL")
        .ends_with("@127.0.0.1:16379"));

    // Redis URLs for TLS on request.
    let out = secrets_script(&secrets.dir, &[("JETINFER_REDIS_SCHEME", "rediss")]);
    assert!(out.status.success(), "{}", text(&out));
    for file in [
        "dispatcher.env",
        "worker.env",
        "producer.env",
        "operator.env",
    ] {
        let url = secrets.var(file, "REDIS_URL");
        assert!(url.starts_with("rediss://jetinfer-"), "{file}: {url}");
    }

    // Port 0 (Docker chooses): no host URLs until the ports are known, never stale ones.
    let out = secrets_script(&secrets.dir, &[("JETINFER_REDIS_PORT", "0")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("docker compose port"), "{}", text(&out));
    assert!(!secrets.dir.join("producer.env").exists());
    assert!(!secrets.dir.join("operator.env").exists());
    assert_eq!(
        secrets.var("dispatcher.env", "NATS_PASSWORD"),
        "chosen-by-hand"
    );

    // Bad input is refused, naming what is wrong, and leaves the files as they were.
    for (var, bad) in [
        ("JETINFER_NATS_PORT", "nats"),
        ("JETINFER_REDIS_SCHEME", "http"),
    ] {
        let out = secrets_script(&secrets.dir, &[(var, bad)]);
        assert!(
            !out.status.success() && text(&out).contains(var),
            "{}",
            text(&out)
        );
    }
    let passwords = secrets.dir.join("passwords");
    let good = std::fs::read_to_string(&passwords).unwrap();
    for (bad, says) in [
        ("not a pair\n", "is not NAME=value"),
        (
            "JETINFER_NATS_WORKER_PASSWORD=a@b\n",
            "JETINFER_NATS_WORKER_PASSWORD holds characters",
        ),
    ] {
        std::fs::write(&passwords, format!("{good}{bad}")).unwrap();
        let out = secrets_script(&secrets.dir, &[]);
        assert!(
            !out.status.success() && text(&out).contains(says),
            "{bad:?}: {}",
            text(&out)
        );
    }
    assert_eq!(
        secrets.var("dispatcher.env", "NATS_PASSWORD"),
        "chosen-by-hand"
    );
}

#[test]
fn every_service_gets_its_own_role_and_no_secret_on_its_command_line() {
    let secrets = Secrets::generate();
    let passwords = secrets.vars("passwords");
    let compose = compose(&secrets);
    let services = compose["services"].as_object().expect("services");

    for (name, service) in services {
        let command = strings(&service["command"]);
        let joined = command.join(" ");
        for pw in passwords.values() {
            assert!(
                !joined.contains(pw.as_str()),
                "service {name} has a password on its command line"
            );
        }
        if !command.first().is_some_and(|c| c.starts_with("jetinfer")) {
            continue;
        }
        let (_, nats_user, redis_user, nats_pw, redis_pw) = ROLES
            .iter()
            .find(|r| r.0 == name)
            .unwrap_or_else(|| panic!("service {name} has no role in this test"));
        for flag in [
            "--redis-url",
            "--nats-user",
            "--nats-password",
            "--nats-token",
        ] {
            assert!(
                !command.iter().any(|a| a == flag),
                "service {name}: {flag} on the command line"
            );
        }
        assert!(
            joined.contains("--nats-url nats://nats:4222"),
            "service {name} does not connect to the nats service: {joined}"
        );
        let env = environment(service);
        assert_eq!(
            env.get("NATS_USER").map(String::as_str),
            Some(*nats_user),
            "service {name}"
        );
        assert_eq!(
            env.get("NATS_PASSWORD"),
            Some(&passwords[*nats_pw]),
            "service {name}"
        );
        assert_eq!(
            env.get("REDIS_URL"),
            Some(&format!(
                "redis://{redis_user}:{}@redis:6379",
                passwords[*redis_pw]
            )),
            "service {name}"
        );
    }

    // NATS runs the compose config from the mounted deploy/nats folder, with every password
    // the config reads in its environment.
    let nats = &services["nats"];
    let command = strings(&nats["command"]);
    let config = command
        .iter()
        .position(|a| a == "-c")
        .and_then(|i| command.get(i + 1))
        .expect("nats runs with -c <config>");
    let (folder, file) = config.rsplit_once('/').unwrap();
    assert!(
        strings(&nats["volumes"]).contains(&format!("./deploy/nats:{folder}:ro")),
        "nats: {folder} is not deploy/nats"
    );
    let text = std::fs::read_to_string(root().join("deploy/nats").join(file)).unwrap();
    let env = environment(nats);
    let mut read = 0;
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
        if let Some(var) = word.strip_prefix("$JETINFER_") {
            let var = format!("JETINFER_{var}");
            assert!(
                env.get(&var).is_some_and(|v| *v == passwords[&var]),
                "nats: {var}"
            );
            read += 1;
        }
    }
    assert_eq!(read, 4, "deploy/nats/{file} reads {read} passwords");

    // Redis loads the rendered ACL file, and its health check logs in as jetinfer-health.
    let redis = &services["redis"];
    let command = strings(&redis["command"]);
    let acl = command
        .iter()
        .position(|a| a == "--aclfile")
        .and_then(|i| command.get(i + 1))
        .expect("redis runs with --aclfile");
    let mount = format!("{}/redis-users.acl:{acl}:ro", secrets.dir.display());
    assert!(
        strings(&redis["volumes"]).contains(&mount),
        "redis does not mount {mount}"
    );
    let health = strings(&redis["healthcheck"]["test"]).join(" ");
    assert!(health.contains("--user jetinfer-health"), "{health}");
    assert_eq!(
        environment(redis).get("REDISCLI_AUTH"),
        Some(&passwords["JETINFER_REDIS_HEALTH_PASSWORD"])
    );
}

/// A NATS connection with the given credentials, and the server's errors on it.
async fn nats_as(
    url: &str,
    user: &str,
    password: &str,
) -> Result<(async_nats::Client, mpsc::UnboundedReceiver<String>), async_nats::ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = if user.is_empty() {
        async_nats::ConnectOptions::new()
    } else {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
    };
    let client = options
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, rx))
}

/// Publishes to `subject` and says whether the server refused it.
async fn publish_refused(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    subject: &str,
) -> bool {
    client
        .publish(subject.to_string(), "x".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    match tokio::time::timeout(Duration::from_millis(500), errors.recv()).await {
        Ok(Some(e)) => {
            assert!(e.to_lowercase().contains("permissions violation"), "{e}");
            true
        }
        _ => false,
    }
}

/// The user and password of `scheme://user:password@host…`.
fn userinfo(url: &str) -> (String, String) {
    let rest = url.split_once("://").unwrap().1;
    let (user, rest) = rest.split_once(':').unwrap();
    let password = rest.split_once('@').unwrap().0;
    (user.to_string(), password.to_string())
}

/// `redis-cli` on the server's socket as `user` (the password in REDISCLI_AUTH, as the
/// compose health check gives it); its output.
fn redis_cli(redis: &RedisServer, user: Option<(&str, &str)>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-s")
        .arg(redis.socket_path())
        .env_remove("REDISCLI_AUTH");
    if let Some((user, password)) = user {
        cmd.args(["--user", user]).env("REDISCLI_AUTH", password);
    }
    let out = cmd.args(args).output().expect("running redis-cli");
    text(&out).trim().to_string()
}

#[tokio::test]
async fn nats_and_redis_take_each_roles_generated_credentials_and_nothing_else() {
    let secrets = Secrets::generate();
    let nats = NatsServer::start_with_env(
        [
            "-c".to_string(),
            root()
                .join("deploy/nats/compose.conf")
                .display()
                .to_string(),
        ],
        secrets.vars("nats.env"),
    )
    .expect("nats-server with deploy/nats/compose.conf and nats.env");
    let url = nats.url();

    // Each role's file logs in: the services' user and password, the host's URLs.
    let mut logins = Vec::new();
    for file in ["dispatcher.env", "worker.env"] {
        logins.push((
            file,
            secrets.var(file, "NATS_USER"),
            secrets.var(file, "NATS_PASSWORD"),
        ));
    }
    for file in ["producer.env", "operator.env"] {
        let (user, password) = userinfo(&secrets.var(file, "NATS_URL"));
        logins.push((file, user, password));
    }
    let mut clients = BTreeMap::new();
    for (file, user, password) in logins {
        let client = nats_as(&url, &user, &password)
            .await
            .unwrap_or_else(|e| panic!("{file}'s NATS user {user}: {e}"));
        clients.insert(user, client);
    }
    for (user, password) in [("", ""), ("producer", "wrong"), ("admin", "admin")] {
        let refused = nats_as(&url, user, password).await.err().map(|e| e.kind());
        assert_eq!(
            refused,
            Some(async_nats::ConnectErrorKind::AuthorizationViolation),
            "NATS user {user:?}"
        );
    }

    // The workers' shared user answers any worker id's run subject and heartbeat, and
    // nothing of the producer's; the producer reaches no worker.
    let (worker, worker_errors) = clients.get_mut("worker").unwrap();
    worker
        .subscribe("jetinfer.worker.any-id.run")
        .await
        .unwrap();
    assert!(!publish_refused(worker, worker_errors, "jetinfer.workers.any-id.heartbeat").await);
    assert!(publish_refused(worker, worker_errors, "jetinfer.jobs.p0.mlp").await);
    let (producer, producer_errors) = clients.get_mut("producer").unwrap();
    assert!(!publish_refused(producer, producer_errors, "jetinfer.jobs.p0.mlp").await);
    assert!(publish_refused(producer, producer_errors, "jetinfer.worker.any-id.run").await);

    // Redis: the default user is off; each role's URL logs in with its rights; the health
    // check's user may only PING.
    let acl = secrets.dir.join("redis-users.acl");
    let redis = RedisServer::start_with_args(["--aclfile".to_string(), acl.display().to_string()])
        .expect("redis-server with the rendered ACL file");
    assert!(redis_cli(&redis, None, &["ping"]).starts_with("NOAUTH"));
    let login = |file: &str| userinfo(&secrets.var(file, "REDIS_URL"));
    let (user, password) = login("producer.env");
    let producer = Some((user.as_str(), password.as_str()));
    assert_eq!(redis_cli(&redis, producer, &["ping"]), "PONG");
    assert!(
        redis_cli(&redis, producer, &["set", "jetinfer:result:x", "forged"]).starts_with("NOPERM")
    );
    let (user, password) = login("worker.env");
    let worker = Some((user.as_str(), password.as_str()));
    assert_eq!(
        redis_cli(&redis, worker, &["set", "jetinfer:result:x", "y"]),
        "OK"
    );
    let (user, password) = login("dispatcher.env");
    let dispatcher = Some((user.as_str(), password.as_str()));
    assert_eq!(
        redis_cli(&redis, dispatcher, &["exists", "jetinfer:result:x"]),
        "1"
    );
    let (user, password) = login("operator.env");
    assert_eq!(
        redis_cli(&redis, Some((&user, &password)), &["ping"]),
        "PONG"
    );
    let health_pw = secrets.var("redis-health.env", "REDISCLI_AUTH");
    let health = Some(("jetinfer-health", health_pw.as_str()));
    assert_eq!(redis_cli(&redis, health, &["ping"]), "PONG");
    assert!(redis_cli(&redis, health, &["get", "jetinfer:result:x"]).starts_with("NOPERM"));
    assert!(redis_cli(&redis, Some(("jetinfer-health", "wrong")), &["ping"]).contains("WRONGPASS"));
}
