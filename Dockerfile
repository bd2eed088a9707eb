# syntax=docker/dockerfile:1
# authz: multi-stage build. The final image holds a virtualenv with authz and its
# runtime dependencies only (no pip cache, no build tools, no tests), runs as a
# non-root user and starts `authz serve`.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/authz
COPY pyproject.toml README.md ./
COPY authz ./authz
RUN /opt/authz/bin/pip install --no-compile . \
 && /opt/authz/bin/python -m compileall -q /opt/authz/lib

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="authz" \
      org.opencontainers.image.description="JWT authorizer for Envoy and Istio (ext_authz v3)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/authz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/authz /opt/authz
# 65532: the conventional "nonroot" UID; the chart sets runAsNonRoot and a read-only root fs.
USER 65532:65532
EXPOSE 9001 9002
ENTRYPOINT ["authz", "serve"]
CMD ["--policy-dir", "/etc/authz/policies", "--grpc-addr", "0.0.0.0:9001", "--http-addr", "0.0.0.0:9002"]
