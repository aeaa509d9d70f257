# The dispatcher for compose.yaml without a registry: jetinfer-dispatcher and the jetinfer CLI
# built on the host (bookworm, like the base) on the debootstrapped Debian base. No libtorch:
# neither binary links it.
ARG BASE=jetinfer-base:bookworm
FROM ${BASE}
# curl: the health check in compose.yaml.
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY bin/ /usr/local/bin/
EXPOSE 9464
