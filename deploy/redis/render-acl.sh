#!/usr/bin/env bash
# Writes deploy/redis/users.acl with real password hashes: every `#sha256:NAME` in it becomes
# `#<SHA-256 of the environment variable NAME>`, so the file on the server holds no clear
# password. Redis refuses to start with the unrendered file (a hash must be 64 hex digits),
# and this script refuses when a variable is unset or empty.
#
#   JETINFER_REDIS_PRODUCER_PASSWORD=… JETINFER_REDIS_WORKER_PASSWORD=… \
#   JETINFER_REDIS_DISPATCHER_PASSWORD=… JETINFER_REDIS_OPERATOR_PASSWORD=… \
#     deploy/redis/render-acl.sh [template] > /etc/redis/users.acl
#
# Optional: JETINFER_REDIS_KEY_PREFIX replaces the key prefix `jetinfer` (the services'
# --key-prefix) in the key patterns.
set -euo pipefail

template="${1:-$(dirname "$0")/users.acl}"
prefix="${JETINFER_REDIS_KEY_PREFIX:-jetinfer}"
if [[ ! "$prefix" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    echo "render-acl.sh: JETINFER_REDIS_KEY_PREFIX must be letters, digits, '_', '.' or '-'" >&2
    exit 1
fi

content="$(cat "$template")"
for name in $(grep -o '#sha256:[A-Z0-9_]*' "$template" | cut -d: -f2 | sort -u); do
    value="${!name:-}"
    if [[ -z "$value" ]]; then
        echo "render-acl.sh: $name is not set; it is the password of a Redis user in $template" >&2
        exit 1
    fi
    hash="$(printf '%s' "$value" | sha256sum | cut -c1-64)"
    content="${content//"#sha256:$name"/"#$hash"}"
done
# Key patterns are `~jetinfer:`, `%R~jetinfer:`, `%W~jetinfer:`.
content="${content//"~jetinfer:"/"~$prefix:"}"
printf '%s\n' "$content"
