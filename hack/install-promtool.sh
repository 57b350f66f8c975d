#!/usr/bin/env bash
# Build promtool (Prometheus rule checker and unit tester) from the Go module proxy, cached
# under ~/.cache/taskwarden/tools/promtool-<version>/bin. About 8 minutes cold on 2 cores.
# Prints the binary path. Used by the alert-rule tests in tests/integration/test_chart.py.
set -euo pipefail
VERSION="${PROMTOOL_VERSION:-v0.316.0}"
DEST="${TASKWARDEN_CACHE:-${HOME}/.cache/taskwarden}/tools/promtool-${VERSION}/bin"
if [[ ! -x "${DEST}/promtool" ]]; then
  mkdir -p "${DEST}"
  echo "building promtool ${VERSION} from the Go module proxy ..." >&2
  GOBIN="${DEST}" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@${VERSION}" >&2
fi
echo "${DEST}/promtool"
