# jetinfer image: the three binaries and the sample models on an official PyTorch 2.11 CUDA
# runtime (its libtorch is the one the worker links against).
FROM pytorch/pytorch:2.11.0-cuda13.0-cudnn9-runtime AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH LIBTORCH_USE_PYTORCH=1
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir numpy && python models/export.py --out models/out \
    && cargo build --release --bins

FROM pytorch/pytorch:2.11.0-cuda13.0-cudnn9-runtime
COPY --from=build /src/target/release/jetinfer /src/target/release/jetinfer-dispatcher /src/target/release/jetinfer-worker /usr/local/bin/
COPY --from=build /src/models/out /opt/jetinfer/models
RUN echo "$(python -c 'import torch,os;print(os.path.dirname(torch.__file__)+"/lib")')" > /etc/ld.so.conf.d/torch.conf && ldconfig
# /metrics, /healthz and /readyz when started with --metrics-addr 0.0.0.0:9464 (see compose.yaml).
EXPOSE 9464
