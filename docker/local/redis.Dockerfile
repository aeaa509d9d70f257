# Redis for compose.yaml without a registry: Debian's redis-server (7.0) on the debootstrapped
# base, run as the redis user in /data like the official redis:7 image.
ARG BASE=jetinfer-base:bookworm
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
