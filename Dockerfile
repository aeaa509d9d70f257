# jetinfer images for compose.yaml, built from source on official images:
#   --target dispatcher  jetinfer-dispatcher and the jetinfer CLI on Debian slim (no libtorch:
#                        neither binary links it)
#   --target worker      jetinfer-worker (and the CLI) with the sample models on the official
#                        PyTorch 2.11 CUDA runtime, whose libtorch the worker links
# Without a registry, scripts/compose-local-images.sh builds equivalent images from
# docker/local/ instead (docs/compose.md).
ARG TORCH_IMAGE=pytorch/pytorch:2.11.0-cuda13.0-cudnn9-runtime
ARG DISPATCHER_BASE=debian:bookworm-slim

FROM ${TORCH_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir numpy && python models/export.py --out models/out \
    && cargo build --release --bins

# The build image is Ubuntu 22.04 (glibc 2.35); bookworm's glibc 2.36 runs what it builds.
FROM ${DISPATCHER_BASE} AS dispatcher
# curl: the health check in compose.yaml.
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/jetinfer /src/target/release/jetinfer-dispatcher /usr/local/bin/
# /metrics, /healthz and /readyz when started with --metrics-addr 0.0.0.0:9464 (see compose.yaml).
EXPOSE 9464

FROM ${TORCH_IMAGE} AS worker
RUN apt-get update && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/jetinfer /src/target/release/jetinfer-worker /usr/local/bin/
COPY --from=build /src/models/out /opt/jetinfer/models
RUN echo "$(python -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')" > /etc/ld.so.conf.d/torch.conf && ldconfig
EXPOSE 9464
