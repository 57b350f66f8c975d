#!/usr/bin/env bash
# The Dockerfile's pip steps in a clean venv, without Docker: proves requirements/image.txt is
# complete (every transitive dependency present, every file's hash listed) and that the image's
# install works from wheels only. Run by `make image-check`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
# The build context, as .dockerignore lets it through.
mkdir -p "$work/src/requirements"
cp -r pyproject.toml README.md operator "$work/src/"
cp requirements/image.txt "$work/src/requirements/"
rm -rf "$work"/src/operator/*.egg-info
find "$work/src/operator" -name __pycache__ -prune -exec rm -rf {} +
cd "$work/src"
"$PYTHON" -m venv "$work/builder"
"$PYTHON" -m venv "$work/image"
B="$work/builder/bin/python" I="$work/image/bin/python"
# builder stage
$B -m pip download --require-hashes --only-binary=:all: --no-deps --dest "$work/wheels" \
  -r requirements/image.txt
$B -m pip install --no-index --find-links="$work/wheels" --require-hashes --no-deps \
  -r requirements/image.txt
$B -m pip wheel --no-index --no-deps --no-build-isolation --wheel-dir "$work/wheels" .
# image stage
$I -m pip install --no-index --find-links="$work/wheels" --require-hashes --no-deps \
  -r requirements/image.txt
$I -m pip install --no-index --no-deps "$work"/wheels/taskwarden-*.whl
$I -m pip check
"$work/image/bin/taskwarden" --version
sha256sum "$work"/wheels/taskwarden-*.whl | sed "s|$work/wheels/||"
