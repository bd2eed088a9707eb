# syntax=docker/dockerfile:1
# authz: multi-stage build. The final image holds a virtualenv with authz and its
# runtime dependencies only (no pip cache, no build tools, no tests), runs as a
# non-root user and starts `authz serve`.
#
# Reproducible: every package comes from requirements.lock (`make lock`), checked against
# its sha256 (--require-hashes) and installed from wheels only; authz itself is built
# offline (--no-index) with the locked setuptools. The OpenTelemetry extra is in the lock,
# so `authz serve --tracing` works in the image. tests/e2e/test_lockfile.py replays this
# build stage without Docker.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/authz
COPY requirements.lock ./
RUN /opt/authz/bin/pip install --no-compile --require-hashes --only-binary=:all: -r requirements.lock
# xds-protos ships its own, older copy of opentelemetry/proto/*_pb2.py; whichever package pip
# installs last owns those files, and with xds-protos' copy the OTLP exporter cannot import
# (`--tracing` fails at startup). Reinstall opentelemetry-proto, hash-checked, from the lock.
RUN awk '/^[^ #]/ { keep = /^opentelemetry-proto==/ } keep && !/^ *#/' requirements.lock > otel-proto.lock \
 && /opt/authz/bin/pip install --no-compile --require-hashes --only-binary=:all: --no-deps --force-reinstall -r otel-proto.lock
COPY pyproject.toml README.md LICENSE ./
COPY authz ./authz
RUN /opt/authz/bin/pip install --no-compile --no-deps --no-index --no-build-isolation . \
 && /opt/authz/bin/pip uninstall --yes setuptools \
 && /opt/authz/bin/python -m compileall -q /opt/authz/lib

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="authz" \
      org.opencontainers.image.description="JWT authorizer for Envoy and Istio (ext_authz v3)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
ENV PATH=/opt/authz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/authz /opt/authz
# 65532: the conventional "nonroot" UID; the chart sets runAsNonRoot and a read-only root fs.
USER 65532:65532
EXPOSE 9001 9002
ENTRYPOINT ["authz", "serve"]
CMD ["--policy-dir", "/etc/authz/policies", "--grpc-addr", "0.0.0.0:9001", "--http-addr", "0.0.0.0:9002"]
