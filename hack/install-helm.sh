#!/usr/bin/env bash
# Install Helm from the Go module proxy (never a downloaded binary) and print its path.
#
#   hack/install-helm.sh            -> prints e.g. ~/.cache/taskwarden/tools/helm-v3.19.0/bin/helm
#   HELM_VERSION=v3.19.0 hack/install-helm.sh
#
# The binary is cached under ${TASKWARDEN_CACHE:-~/.cache/taskwarden}/tools/helm-<version>/bin
# and reused on later runs. A cold build takes about 3 minutes on 2 cores.
# Build logs go to stderr; only the binary path is printed on stdout.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.0}"
# Kubernetes version that `helm template` / `helm lint` assume without a cluster; helm's own
# release build derives it from its client-go module (v0.34 -> 1.34 for helm v3.19).
HELM_K8S_MAJOR="${HELM_K8S_MAJOR:-1}"
HELM_K8S_MINOR="${HELM_K8S_MINOR:-34}"
CACHE_ROOT="${TASKWARDEN_CACHE:-${HOME}/.cache/taskwarden}"
DEST="${CACHE_ROOT}/tools/helm-${HELM_VERSION}"
BIN="${DEST}/bin/helm"

usable() {
  [[ -x "${BIN}" ]] && [[ "$("${BIN}" version --template '{{.Version}}' 2>/dev/null)" == "${HELM_VERSION}" ]]
}

if usable; then
  echo "${BIN}"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [[ -x "${candidate}" ]]; then PATH="$(dirname "${candidate}"):${PATH}"; break; fi
  done
fi
command -v go >/dev/null 2>&1 || { echo "install-helm: Go toolchain not found (needed to build helm from the module proxy)" >&2; exit 1; }

mkdir -p "${DEST}/bin"
LOCK="${DEST}/.lock"
exec 9>"${LOCK}"
if command -v flock >/dev/null 2>&1; then flock 9; fi
# Another process may have finished the build while we waited for the lock.
if usable; then
  echo "${BIN}"
  exit 0
fi

echo "install-helm: building helm ${HELM_VERSION} from the Go module proxy into ${DEST}/bin (takes a few minutes) ..." >&2
start=$(date +%s)
# The same -X flags as helm's Makefile, so `helm version` and the default capabilities are right.
pkg=helm.sh/helm/v3
ldflags="-w -s -X ${pkg}/internal/version.version=${HELM_VERSION} -X ${pkg}/internal/version.gitTreeState=clean"
ldflags+=" -X ${pkg}/pkg/lint/rules.k8sVersionMajor=${HELM_K8S_MAJOR} -X ${pkg}/pkg/lint/rules.k8sVersionMinor=${HELM_K8S_MINOR}"
ldflags+=" -X ${pkg}/pkg/chartutil.k8sVersionMajor=${HELM_K8S_MAJOR} -X ${pkg}/pkg/chartutil.k8sVersionMinor=${HELM_K8S_MINOR}"
GOBIN="${DEST}/bin" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" \
  go install -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" >&2
echo "install-helm: built in $(( $(date +%s) - start ))s" >&2
usable || { echo "install-helm: ${BIN} does not report ${HELM_VERSION}" >&2; exit 1; }
"${BIN}" version --short >&2
echo "${BIN}"
