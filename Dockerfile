# syntax=docker/dockerfile:1
# falco-router container image.
#
# The builder stage installs the package and its dependencies into a virtual environment; the final
# stage copies only that environment, so no compiler, pip cache or source tree reaches the image.
# Every dependency ships manylinux wheels for amd64 and arm64, so the builder needs no build tools
# either.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml ./
COPY router ./router
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="falco-router" \
      org.opencontainers.image.description="Routes Falco alerts to Kafka, Slack and webhooks" \
      org.opencontainers.image.licenses="Apache-2.0"

# Bytecode was compiled in the builder, so the interpreter never needs to write next to the sources;
# together with the state directory below this lets the pod run with a read-only root filesystem.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    FALCO_ROUTER_HEALTH_URL=http://127.0.0.1:2801/healthz

# A numeric UID lets Kubernetes check runAsNonRoot without reading /etc/passwd from the image.
RUN groupadd --system --gid 65532 falco-router \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/falco-router \
       --shell /usr/sbin/nologin falco-router \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/falco-router

COPY --from=builder /opt/venv /opt/venv
COPY docker/config.yaml /etc/falco-router/config.yaml

USER 65532:65532
WORKDIR /var/lib/falco-router
# Spool and state live here; mount a volume so they outlive the container.
VOLUME ["/var/lib/falco-router"]
EXPOSE 2801

# The image carries no curl, so the check uses the interpreter that is already there. It fails on any
# non-2xx answer and on a refused connection. Set FALCO_ROUTER_HEALTH_URL when the listener moves or
# serves HTTPS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['FALCO_ROUTER_HEALTH_URL'], timeout=4)"]

ENTRYPOINT ["falco-router", "run"]
CMD ["--config", "/etc/falco-router/config.yaml"]
