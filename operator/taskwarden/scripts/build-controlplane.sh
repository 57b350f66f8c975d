#!/usr/bin/env bash
# Build (or reuse) the local control plane binaries from Go modules at pinned versions:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok, kubelet-less nodes that give pods a real
# lifecycle) with its "fast" node and pod Stages concatenated into kwok-stages.yaml. Binaries are cached outside the repository, per version, so later
# runs start in seconds. Prints the directory holding the binaries on its last line of stdout.
#
# Env: TASKWARDEN_K8S_VERSION (default v1.36.3), TASKWARDEN_ETCD_VERSION (default v3.6.6),
#      TASKWARDEN_KWOK_VERSION (default v0.8.0), TASKWARDEN_CACHE (default ~/.cache/taskwarden).
set -euo pipefail

K8S_VERSION="${TASKWARDEN_K8S_VERSION:-v1.36.3}"
ETCD_VERSION="${TASKWARDEN_ETCD_VERSION:-v3.6.6}"
KWOK_VERSION="${TASKWARDEN_KWOK_VERSION:-v0.8.0}"
CACHE="${TASKWARDEN_CACHE:-$HOME/.cache/taskwarden}"
OUT="$CACHE/controlplane/$K8S_VERSION"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

need() { [[ -x "$OUT/$1" ]]; }
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
all_k8s() { for c in "${K8S_CMDS[@]}"; do need "$c" || return 1; done; }
have_kwok() { need kwok && [[ -s "$OUT/kwok-stages.yaml" ]]; }
if all_k8s && need etcd && have_kwok; then
  echo "$OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
mkdir -p "$OUT"
WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
start=$(date +%s)

if ! all_k8s; then
  mkdir -p "$WORK/k8s"
  cd "$WORK/k8s"
  go mod init taskwarden.dev/controlplane-tools >/dev/null 2>&1
  # k8s.io/kubernetes replaces its staging modules with local paths, which do not apply to a
  # consumer: pin every one of them to the matching v0.X.Y, read from the released go.mod.
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } >> go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >&2
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in "${K8S_CMDS[@]}"; do
    need "$cmd" && continue
    echo "building $cmd $K8S_VERSION ..." >&2
    go build -trimpath -ldflags "$ldflags" -o "$OUT/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
    mv "$OUT/$cmd.tmp" "$OUT/$cmd"
  done
fi

if ! need etcd; then
  echo "building etcd $ETCD_VERSION ..." >&2
  # `go install pkg@version` refuses modules whose go.mod has replace directives (etcd's does),
  # so build it from a small consumer module instead.
  mkdir -p "$WORK/etcd"
  cd "$WORK/etcd"
  go mod init taskwarden.dev/etcd-tools >/dev/null 2>&1
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >> go.mod
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3 >&2
  mv "$OUT/etcd.tmp" "$OUT/etcd"
fi

if ! have_kwok; then
  echo "building kwok $KWOK_VERSION ..." >&2
  # kwok's go.mod has no replace directives, so `go install` works; GOBIN puts it in the cache.
  GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  # kwok refuses to start without Stages; its module ships them. "fast": nodes Ready at once,
  # pods Pending -> Running in about a second, deletions through graceful termination. The chaos
  # Stage fails a Running pod's container when the pod carries its label (a crash, for tests).
  mod="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  first=1
  for f in "$mod"/node/fast/*.yaml "$mod"/pod/fast/*.yaml \
    "$mod"/pod/chaos/pod-container-running-failed.yaml; do
    [[ $f == */kustomization.yaml ]] && continue
    (( first )) || echo "---"
    first=0
    cat "$f"
  done > "$OUT/kwok-stages.yaml.tmp"
  mv "$OUT/kwok-stages.yaml.tmp" "$OUT/kwok-stages.yaml"
fi

printf '%s %s %s built in %ss\n' "$K8S_VERSION" "$ETCD_VERSION" "kwok-$KWOK_VERSION" "$(( $(date +%s) - start ))" > "$OUT/BUILD-INFO"
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$OUT"
