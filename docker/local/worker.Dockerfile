# The worker for compose.yaml without a registry: jetinfer-worker and the jetinfer CLI built on
# the host, and the sample models, on the runtime of torch.Dockerfile. Same layout as the
# Dockerfile's `worker` target (models in /opt/jetinfer/models).
ARG RUNTIME=jetinfer-local/torch
FROM ${RUNTIME}
COPY models/ /opt/jetinfer/models/
COPY bin/ /usr/local/bin/
EXPOSE 9464
