# syntax=docker/dockerfile:1
# Taskwarden operator image.
#   docker build -t ghcr.io/taskwarden/taskwarden:0.1.0 .
# Stage 1 builds wheels for taskwarden and its dependencies; stage 2 installs only those wheels
# into a clean python:3.11-slim (no compilers, no build tree, no pip cache) and runs as 65532.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.* ./
COPY operator/ operator/
COPY sdk/python/src/ sdk/python/src/
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="taskwarden" \
      org.opencontainers.image.description="Task-scoped, short-lived credentials for AI agents on Kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/taskwarden/taskwarden"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# Install from the builder's wheels only (no index), then drop the installers themselves.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels taskwarden \
    && { python -m pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true; } \
    && rm -rf /root/.cache /tmp/* \
    && taskwarden --version
USER 65532:65532
EXPOSE 8080 9090 9443
ENTRYPOINT ["taskwarden"]
CMD ["run"]
