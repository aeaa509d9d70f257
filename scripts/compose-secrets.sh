#!/usr/bin/env bash
# Generates the credentials of compose.yaml's stack: one random password per NATS and Redis
# user, and from them the files compose.yaml reads (docs/compose.md, "Credentials"):
#
#   passwords          every password, NAME=value (the one source; kept on later runs)
#   nats.env           nats-server's environment: the passwords deploy/nats/compose.conf reads
#   redis-users.acl    deploy/redis/users.acl rendered (SHA-256 hashes only) + the health user
#   redis-health.env   the Redis health check's password (REDISCLI_AUTH, user jetinfer-health)
#   dispatcher.env     the dispatcher's NATS user and Redis URL (NATS_USER, NATS_PASSWORD, REDIS_URL)
#   worker.env         the workers' NATS user and Redis URL (every replica shares the user `worker`)
#   producer.env       for your programs on the host: NATS_URL and REDIS_URL with the producer's
#                      credentials on 127.0.0.1, e.g. env $(cat .secrets/producer.env) jetinfer demo --use-running
#   operator.env       the same for the `jetinfer` CLI's stats, dlq and get (the operator user)
#
#   scripts/compose-secrets.sh [DIR]      DIR: $JETINFER_SECRETS_DIR, else .secrets in the repo
#
# Idempotent: passwords already in DIR/passwords are kept, missing ones are added, and every
# other file is written again from them (edit `passwords`, run this again, recreate the
# stack). The host ports in producer.env and operator.env are JETINFER_NATS_PORT and
# JETINFER_REDIS_PORT as compose.yaml reads them (defaults 4222, 6379): run this again after
# moving them. Port 0 (Docker chooses) is known only after `up`: the two files are then left
# out until this runs again with the ports `docker compose port` tells. JETINFER_REDIS_SCHEME=rediss writes every Redis URL for TLS (docs/compose.md,
# "Adding TLS"; default redis). DIR and the files with clear passwords are readable by you only; the rendered
# ACL file holds hashes only and is world-readable, because the container's redis user
# reads it. Nothing here is needed by anybody else: DIR is git-ignored.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-${JETINFER_SECRETS_DIR:-$ROOT/.secrets}}
NATS_PORT=${JETINFER_NATS_PORT:-4222}
REDIS_PORT=${JETINFER_REDIS_PORT:-6379}
REDIS_SCHEME=${JETINFER_REDIS_SCHEME:-redis}

die() { echo "compose-secrets: $*" >&2; exit 1; }

for port in "$NATS_PORT" "$REDIS_PORT"; do
    [[ $port =~ ^[0-9]+$ && $port -le 65535 ]] \
        || die "JETINFER_NATS_PORT/JETINFER_REDIS_PORT must be a port number (0-65535), not '$port'"
done

[[ $REDIS_SCHEME == redis || $REDIS_SCHEME == rediss ]] \
    || die "JETINFER_REDIS_SCHEME must be redis or rediss (TLS), not '$REDIS_SCHEME'"

# Every password the stack uses. NATS: the users of deploy/nats/compose.conf. Redis: the
# users of deploy/redis/users.acl plus jetinfer-health, which may only PING.
NAMES=(
    JETINFER_NATS_PRODUCER_PASSWORD JETINFER_NATS_DISPATCHER_PASSWORD
    JETINFER_NATS_OPERATOR_PASSWORD JETINFER_NATS_WORKER_PASSWORD
    JETINFER_REDIS_PRODUCER_PASSWORD JETINFER_REDIS_DISPATCHER_PASSWORD
    JETINFER_REDIS_OPERATOR_PASSWORD JETINFER_REDIS_WORKER_PASSWORD
    JETINFER_REDIS_HEALTH_PASSWORD
)

umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"
PASSWORDS=$DIR/passwords
touch "$PASSWORDS"

# 24 random bytes as hex: safe in URLs, env files and config files without quoting.
random_password() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

declare -A PW
while IFS= read -r line; do
    [[ -z $line || $line == \#* ]] && continue
    [[ $line == *=* ]] || die "$PASSWORDS: '$line' is not NAME=value"
    name=${line%%=*}
    value=${line#*=}
    # Values go into URLs and config files unquoted: keep them to what needs no escaping.
    [[ $value =~ ^[A-Za-z0-9._~-]+$ ]] \
        || die "$PASSWORDS: $name holds characters other than letters, digits and '._~-'"
    PW[$name]=$value
done <"$PASSWORDS"

added=0
for name in "${NAMES[@]}"; do
    if [[ -z ${PW[$name]:-} ]]; then
        PW[$name]=$(random_password)
        echo "$name=${PW[$name]}" >>"$PASSWORDS"
        added=$((added + 1))
    fi
done
chmod 600 "$PASSWORDS"

# write <file> <mode>: stdin into DIR/<file> through a temporary file, so a reader never
# sees half a file and a failed run leaves the old one.
write() {
    local tmp
    tmp=$(mktemp "$DIR/.$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    mv -f "$tmp" "$DIR/$1"
}

write nats.env 600 <<EOF
JETINFER_NATS_PRODUCER_PASSWORD=${PW[JETINFER_NATS_PRODUCER_PASSWORD]}
JETINFER_NATS_DISPATCHER_PASSWORD=${PW[JETINFER_NATS_DISPATCHER_PASSWORD]}
JETINFER_NATS_OPERATOR_PASSWORD=${PW[JETINFER_NATS_OPERATOR_PASSWORD]}
JETINFER_NATS_WORKER_PASSWORD=${PW[JETINFER_NATS_WORKER_PASSWORD]}
EOF

# The shipped ACL file plus a user for the health check, rendered by the shipped renderer.
template=$(mktemp "$DIR/.users.acl.XXXXXX")
trap 'rm -f "$template"' EXIT
{
    cat "$ROOT/deploy/redis/users.acl"
    echo "user jetinfer-health on #sha256:JETINFER_REDIS_HEALTH_PASSWORD resetkeys resetchannels -@all +ping"
} >"$template"
for name in "${NAMES[@]}"; do export "$name=${PW[$name]}"; done
rendered=$("$ROOT/deploy/redis/render-acl.sh" "$template")
printf '%s\n' "$rendered" | write redis-users.acl 644

write redis-health.env 600 <<EOF
REDISCLI_AUTH=${PW[JETINFER_REDIS_HEALTH_PASSWORD]}
EOF

write dispatcher.env 600 <<EOF
NATS_USER=dispatcher
NATS_PASSWORD=${PW[JETINFER_NATS_DISPATCHER_PASSWORD]}
REDIS_URL=$REDIS_SCHEME://jetinfer-dispatcher:${PW[JETINFER_REDIS_DISPATCHER_PASSWORD]}@redis:6379
EOF

write worker.env 600 <<EOF
NATS_USER=worker
NATS_PASSWORD=${PW[JETINFER_NATS_WORKER_PASSWORD]}
REDIS_URL=$REDIS_SCHEME://jetinfer-worker:${PW[JETINFER_REDIS_WORKER_PASSWORD]}@redis:6379
EOF

if [[ $NATS_PORT -eq 0 || $REDIS_PORT -eq 0 ]]; then
    # Stale URLs would point at another server: none until the ports are known.
    rm -f "$DIR/producer.env" "$DIR/operator.env"
    echo "compose-secrets: host port 0 (Docker chooses): producer.env and operator.env left out;" \
        "after 'up', run this again with JETINFER_NATS_PORT and JETINFER_REDIS_PORT set to" \
        "the ports 'docker compose port nats 4222' and 'docker compose port redis 6379' print" >&2
else
    write producer.env 600 <<EOF
NATS_URL=nats://producer:${PW[JETINFER_NATS_PRODUCER_PASSWORD]}@127.0.0.1:$NATS_PORT
REDIS_URL=$REDIS_SCHEME://jetinfer-producer:${PW[JETINFER_REDIS_PRODUCER_PASSWORD]}@127.0.0.1:$REDIS_PORT
EOF

    write operator.env 600 <<EOF
NATS_URL=nats://operator:${PW[JETINFER_NATS_OPERATOR_PASSWORD]}@127.0.0.1:$NATS_PORT
REDIS_URL=$REDIS_SCHEME://jetinfer-operator:${PW[JETINFER_REDIS_OPERATOR_PASSWORD]}@127.0.0.1:$REDIS_PORT
EOF
fi

if [[ $added -eq 0 ]]; then
    echo "compose-secrets: kept the passwords in $PASSWORDS, wrote the files in $DIR again" >&2
else
    echo "compose-secrets: $added new password(s) in $PASSWORDS; files in $DIR" >&2
fi
if [[ -f $DIR/producer.env ]]; then
    echo "compose-secrets: your programs connect as the producer: env \$(cat $DIR/producer.env) <program>" >&2
fi
