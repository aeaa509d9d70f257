# The worker's runtime without a registry: the debootstrapped Debian base plus the shared
# libraries jetinfer-worker loads from the project's .venv (torch's lib/, found with ldd by
# scripts/compose-local-images.sh). Its own image, so a rebuilt worker binary does not send
# these hundreds of MB to the engine again.
ARG BASE=jetinfer-base:bookworm
FROM ${BASE}
# curl: the health check in compose.yaml.
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY lib/ /opt/jetinfer/lib/
RUN echo /opt/jetinfer/lib > /etc/ld.so.conf.d/jetinfer.conf && ldconfig
