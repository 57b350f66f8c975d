# syntax=docker/dockerfile:1
# Taskwarden operator image.
#   make image            (= docker build with SOURCE_DATE_EPOCH from the last commit)
#   kind load docker-image ghcr.io/taskwarden/taskwarden:0.1.0
# Reproducible inputs: every Python dependency, the build backend included, is pinned by version
# and sha256 in requirements/image.txt (pip-compile --generate-hashes; `make lock` regenerates
# it) and installed with --require-hashes from wheels only. Release builds also pin the base
# image by digest (docs/release.md):
#   --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest>
# Stage 1 builds the wheels; stage 2 installs only those into a clean base and runs as 65532.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# Given (make image passes the last commit's time), it fixes timestamps in the wheel and .pyc files.
ARG SOURCE_DATE_EPOCH
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/image.txt requirements/image.txt
# A file whose hash is not in the lock, or a dependency missing from it, fails the build.
RUN python -m pip download --require-hashes --only-binary=:all: --no-deps \
        --dest /wheels -r requirements/image.txt \
    && python -m pip install --no-index --find-links=/wheels --require-hashes --no-deps \
        -r requirements/image.txt
COPY pyproject.toml README.* ./
COPY operator/ operator/
COPY sdk/python/src/ sdk/python/src/
# Built with the pinned setuptools just installed, not a fresh unpinned one.
RUN python -m pip wheel --no-index --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE_DATE_EPOCH
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
# Install from the builder's wheels only (no index, hashes checked again), then drop the
# installers themselves. SOURCE_DATE_EPOCH makes the compiled .pyc files hash-based.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/src/requirements,target=/requirements \
    python -m pip install --no-index --find-links=/wheels \
        --require-hashes --no-deps -r /requirements/image.txt \
    && python -m pip install --no-index --no-deps /wheels/taskwarden-*.whl \
    && { python -m pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true; } \
    && rm -rf /root/.cache /tmp/* \
    && taskwarden --version
USER 65532:65532
EXPOSE 8080 9090 9443
ENTRYPOINT ["taskwarden"]
CMD ["run"]
