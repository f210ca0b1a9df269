# syntax=docker/dockerfile:1
#
# The gateway as a container: build a wheel and a virtualenv in one stage, copy only the
# virtualenv into a clean slim image that runs as an unprivileged user.
#
#   docker build -t llm-gateway .
#   docker run --rm -p 8080:8080 -v "$PWD/gateway.yaml:/etc/gateway/config.yaml:ro" \
#     -e ALICE_GATEWAY_KEY -e TEAM_A_UPSTREAM_TOKEN llm-gateway
#   docker run --rm -p 8080:8080 -e GATEWAY_CONFIG= llm-gateway
#
# Configuration: a YAML file mounted at /etc/gateway/config.yaml (GATEWAY_CONFIG); secrets come
# from the environment through the config's ${NAME} interpolation (docker run -e NAME passes
# the value from your shell). An empty GATEWAY_CONFIG (the last command) runs the demo setup:
# the embedded emulator and the demo key sk-gateway-demo.

# Reproducible builds: the base image is pinned by digest and the dependencies come from
# requirements.lock, exact versions with their hashes (pip refuses anything else).
#
# PYTHON_IMAGE: python:3.11-slim at the digest of its multi-platform index. A tag moves (every
# Debian or CPython patch re-publishes it); a digest names one image for ever. To take a newer
# base (say, monthly, or for a CVE in the base), read the tag's current digest and replace it
# below, in a commit of its own:
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
#   (or: crane digest python:3.11-slim / skopeo inspect docker://python:3.11-slim)
# or override it for one build: docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
#
# requirements.lock: made from pyproject.toml's dependencies with pip-tools; to refresh it
# (new floors, a security release), run from the repository root and commit the result:
#   pip install pip-tools
#   pip-compile --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links --extra otel --output-file requirements.lock pyproject.toml
# (add --upgrade to take new releases; the header of requirements.lock repeats the command).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# The gateway itself, without resolving anything: every dependency is already there, locked.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
 && /opt/venv/bin/pip check

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
