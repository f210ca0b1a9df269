# syntax=docker/dockerfile:1
#
# The gateway as a container: build a wheel and a virtualenv in one stage, copy only the
# virtualenv into a clean slim image that runs as an unprivileged user.
#
#   docker build -t llm-gateway .
#   docker run --rm -p 8080:8080 -v "$PWD/gateway.yaml:/etc/gateway/config.yaml:ro" \
#     -e UPSTREAM_TOKEN -e GATEWAY_API_KEY llm-gateway
#   docker run --rm -p 8080:8080 -e GATEWAY_CONFIG= llm-gateway
#
# Configuration: a YAML file mounted at /etc/gateway/config.yaml (GATEWAY_CONFIG); secrets come
# from the environment through the config's ${NAME} interpolation (docker run -e NAME passes
# the value from your shell). An empty GATEWAY_CONFIG (the last command) runs the demo setup:
# the embedded emulator and the demo key sk-gateway-demo.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_CONFIG=/etc/gateway/config.yaml \
    PROMETHEUS_MULTIPROC_DIR=/tmp/gateway-metrics
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway \
      --shell /usr/sbin/nologin gateway \
 && mkdir -p /etc/gateway /var/lib/gateway /tmp/gateway-metrics \
 && chown gateway:gateway /var/lib/gateway /tmp/gateway-metrics
COPY --from=builder /opt/venv /opt/venv
WORKDIR /var/lib/gateway
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
# SIGTERM (docker stop, Kubernetes) starts the graceful shutdown: give the container at least
# server.graceful_shutdown_seconds plus a few seconds (docker stop -t, stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
