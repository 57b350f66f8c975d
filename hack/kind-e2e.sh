#!/usr/bin/env bash
# End-to-end test on a real kind cluster: build the image, install the chart, let a real busybox
# agent pod receive its mounted token, verify that token against the published JWKS, complete
# the task and check the token is revoked. OPTIONAL: needs a working Docker engine (and, for the
# kind node image and busybox, access to a container registry). See tests/e2e/README.md.
#
#   hack/kind-e2e.sh
#
# Environment:
#   KIND_VERSION     kind module version to build from the Go module proxy (default v0.33.0)
#   KIND_CLUSTER     cluster name (default taskwarden-e2e)
#   KIND_NODE_IMAGE  node image for `kind create cluster --image` (default: kind's own default)
#   KEEP_CLUSTER=1   leave the cluster (and the installed release) for debugging
#   REUSE_CLUSTER=1  use an existing cluster of that name instead of creating one
#   IMAGE            image to build and load (default ghcr.io/taskwarden/taskwarden:e2e)
#   TIMEOUT          seconds to wait for each step (default 240)
#   PYTHON           interpreter with taskwarden installed (default .venv/bin/python, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

KIND_VERSION="${KIND_VERSION:-v0.33.0}"
KIND_CLUSTER="${KIND_CLUSTER:-taskwarden-e2e}"
IMAGE="${IMAGE:-ghcr.io/taskwarden/taskwarden:e2e}"
TIMEOUT="${TIMEOUT:-240}"
CACHE_ROOT="${TASKWARDEN_CACHE:-${HOME}/.cache/taskwarden}"
OP_NS=taskwarden-system
AGENT_NS=agents
TASK=triage-4711
POD=research-agent
AGENT_SA=research-agent
AUDIENCE=https://api.github.com
WORK="$(mktemp -d)"

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'kind-e2e: FAIL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools

command -v docker >/dev/null 2>&1 || die "docker not found (kind needs a Docker engine)"
docker info >/dev/null 2>&1 || die "docker cannot reach a Docker engine"
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:${PATH}"
command -v go >/dev/null 2>&1 || die "Go toolchain not found (kind and helm are built from the Go module proxy)"

KIND_BIN="${CACHE_ROOT}/tools/kind-${KIND_VERSION}/bin/kind"
if [[ ! -x "${KIND_BIN}" ]]; then
  log "building kind ${KIND_VERSION} from the Go module proxy"
  mkdir -p "$(dirname "${KIND_BIN}")"
  GOBIN="$(dirname "${KIND_BIN}")" CGO_ENABLED=0 go install "sigs.k8s.io/kind@${KIND_VERSION}"
fi
HELM="${HELM:-$("${ROOT}/hack/install-helm.sh")}"

if command -v kubectl >/dev/null 2>&1; then
  KUBECTL_BIN="$(command -v kubectl)"
else
  KUBECTL_BIN="$(find "${CACHE_ROOT}/controlplane" -name kubectl -type f 2>/dev/null | sort -V | tail -n1 || true)"
  [[ -x "${KUBECTL_BIN}" ]] || die "kubectl not found: put one on PATH or run 'taskwarden controlplane build'"
fi

PYTHON="${PYTHON:-}"
if [[ -z "${PYTHON}" ]]; then
  if [[ -x "${ROOT}/.venv/bin/python" ]]; then PYTHON="${ROOT}/.venv/bin/python"; else PYTHON=python3; fi
fi
"${PYTHON}" -c 'import taskwarden' 2>/dev/null || die "${PYTHON} cannot import taskwarden (pip install -e .)"

KUBECONFIG_FILE="${WORK}/kubeconfig"
k() { "${KUBECTL_BIN}" --kubeconfig "${KUBECONFIG_FILE}" "$@"; }
as_agent() {
  k --as="system:serviceaccount:${AGENT_NS}:${AGENT_SA}" \
    --as-group=system:serviceaccounts --as-group="system:serviceaccounts:${AGENT_NS}" \
    --as-group=system:authenticated "$@"
}

# Poll a command until it succeeds; print what it printed last on failure.
wait_until() {
  local what="$1"; shift
  local deadline=$(( $(date +%s) + TIMEOUT )) out=""
  while (( $(date +%s) < deadline )); do
    if out="$("$@" 2>&1)"; then return 0; fi
    sleep 2
  done
  die "timed out after ${TIMEOUT}s waiting for ${what}: ${out}"
}

# ---------------------------------------------------------------- cluster

CREATED=0
cleanup() {
  local rc=$?
  if (( rc != 0 )) && [[ -s "${KUBECONFIG_FILE}" ]]; then
    log "diagnostics"
    k -n "${OP_NS}" get pods -o wide >&2 || true
    k -n "${OP_NS}" logs -l app.kubernetes.io/name=taskwarden --tail=80 --prefix >&2 || true
    k -n "${AGENT_NS}" get agenttasks,pods,secrets -o wide >&2 || true
    k -n "${AGENT_NS}" get agenttask "${TASK}" -o yaml >&2 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    log "keeping cluster ${KIND_CLUSTER}: export KUBECONFIG=${KUBECONFIG_FILE}"
  elif (( CREATED )); then
    log "deleting cluster ${KIND_CLUSTER}"
    "${KIND_BIN}" delete cluster --name "${KIND_CLUSTER}" >&2 || true
    rm -rf "${WORK}"
  else
    rm -rf "${WORK}"
  fi
  exit "${rc}"
}
trap cleanup EXIT

if [[ "${REUSE_CLUSTER:-0}" == "1" ]] && "${KIND_BIN}" get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER}"; then
  log "reusing kind cluster ${KIND_CLUSTER}"
else
  log "creating kind cluster ${KIND_CLUSTER}"
  "${KIND_BIN}" delete cluster --name "${KIND_CLUSTER}" >/dev/null 2>&1 || true
  CREATED=1
  "${KIND_BIN}" create cluster --name "${KIND_CLUSTER}" --wait "${TIMEOUT}s" \
    ${KIND_NODE_IMAGE:+--image "${KIND_NODE_IMAGE}"}
fi
"${KIND_BIN}" get kubeconfig --name "${KIND_CLUSTER}" > "${KUBECONFIG_FILE}"

# ---------------------------------------------------------------- image and chart

log "building ${IMAGE}"
docker build -t "${IMAGE}" "${ROOT}"
"${KIND_BIN}" load docker-image "${IMAGE}" --name "${KIND_CLUSTER}"
# The agent's image: load it too when the host has it or can pull it (nodes may not reach a registry).
AGENT_IMAGE="$(awk '/image:/ {print $2; exit}' manifests/examples/agent-pod.yaml)"
if docker image inspect "${AGENT_IMAGE}" >/dev/null 2>&1 || docker pull "${AGENT_IMAGE}" >/dev/null 2>&1; then
  "${KIND_BIN}" load docker-image "${AGENT_IMAGE}" --name "${KIND_CLUSTER}" || true
fi

log "installing the chart"
"${HELM}" upgrade --install taskwarden charts/taskwarden \
  --kubeconfig "${KUBECONFIG_FILE}" \
  --namespace "${OP_NS}" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout "${TIMEOUT}s"
k -n "${OP_NS}" rollout status deploy/taskwarden --timeout "${TIMEOUT}s"

# The operator registers its own webhooks; task creation needs them (failurePolicy Fail).
wait_until "webhook configurations" k get mutatingwebhookconfiguration taskwarden
wait_until "webhook configurations" k get validatingwebhookconfiguration taskwarden
wait_until "JWKS ConfigMap" k -n "${OP_NS}" get configmap taskwarden-jwks

# ---------------------------------------------------------------- the agent

log "applying manifests/examples (namespace, accounts, policies)"
k apply -f manifests/examples/namespace.yaml
k apply -f manifests/examples/serviceaccount.yaml
k apply -f manifests/examples/policy.yaml
k -n "${AGENT_NS}" create rolebinding research-agent-tasks \
  --clusterrole=taskwarden:agent --serviceaccount="${AGENT_NS}:${AGENT_SA}" \
  --dry-run=client -o yaml | k apply -f -

# The task first: the pod guard refuses a pod naming the credential of a task that does not
# exist yet (it waits Pending for a Running pod of its ServiceAccount).
log "the agent asks for access: AgentTask ${TASK}, created as ${AGENT_SA}"
as_agent apply -f manifests/examples/task.yaml

log "starting the agent pod (busybox)"
k apply -f manifests/examples/agent-pod.yaml
k -n "${AGENT_NS}" wait --for=condition=Ready "pod/${POD}" --timeout "${TIMEOUT}s"
# The mutating webhook wired the credential mount in.
mounts="$(k -n "${AGENT_NS}" get pod "${POD}" -o jsonpath='{.spec.containers[0].volumeMounts[*].mountPath}')"
[[ "${mounts}" == *"/var/run/secrets/taskwarden.dev"* ]] || die "pod has no taskwarden mount: ${mounts}"

k -n "${AGENT_NS}" wait --for=jsonpath='{.status.phase}'=Active "agenttask/${TASK}" --timeout "${TIMEOUT}s"

log "reading the mounted token inside the pod (kubelet syncs Secret volumes within about a minute)"
wait_until "token file in the pod" \
  k -n "${AGENT_NS}" exec "${POD}" -- sh -c 'test -s /var/run/secrets/taskwarden.dev/token'
k -n "${AGENT_NS}" exec "${POD}" -- cat /var/run/secrets/taskwarden.dev/token > "${WORK}/token"
# shellcheck disable=SC2016  # expanded inside the pod
k -n "${AGENT_NS}" exec "${POD}" -- sh -c 'echo "$TASKWARDEN_TOKEN_FILE"' | grep -q /var/run/secrets/taskwarden.dev/ \
  || die "TASKWARDEN_TOKEN_FILE is not set in the agent container"

k -n "${OP_NS}" get configmap taskwarden-jwks -o jsonpath='{.data.jwks\.json}' > "${WORK}/jwks.json"
# The same keys are served over HTTPS by every replica (through the API server's service proxy).
k get --raw "/api/v1/namespaces/${OP_NS}/services/https:taskwarden:443/proxy/.well-known/jwks.json" \
  > "${WORK}/jwks-https.json"
"${PYTHON}" - "${WORK}/jwks.json" "${WORK}/jwks-https.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
ka, kb = ({k["kid"] for k in d["keys"]} for d in (a, b))
assert ka and ka == kb, f"JWKS differ: configmap {ka} https {kb}"
PY

ISSUER="https://taskwarden.${OP_NS}.svc"
verify() {  # verify TOKENFILE: `taskwarden verify` when present, else the library it wraps
  if "${PYTHON}" -m taskwarden verify --help >/dev/null 2>&1; then
    k -n "${OP_NS}" get configmap taskwarden-revocations -o jsonpath='{.data.revocations\.json}' \
      > "${WORK}/revocations.json" 2>/dev/null || echo '{}' > "${WORK}/revocations.json"
    "${PYTHON}" -m taskwarden verify --jwks "${WORK}/jwks.json" \
      --revocations "${WORK}/revocations.json" --audience "${AUDIENCE}" --issuer "${ISSUER}" "$1"
  else
    "${PYTHON}" - "$1" "${WORK}/jwks.json" "${AUDIENCE}" "${ISSUER}" <<'PY'
import json, sys, time
from taskwarden.credentials import tokens
token = open(sys.argv[1]).read().strip()
claims = tokens.verify(token, json.load(open(sys.argv[2])), now=time.time(),
                       audience=sys.argv[3], issuer=sys.argv[4])
print(json.dumps({k: claims[k] for k in ("sub", "jti", "exp", "scope")}))
PY
  fi
}

log "verifying the token against the JWKS"
verify "${WORK}/token" || die "the mounted token does not verify"
SPIFFE="$("${PYTHON}" -c 'import base64,json,sys; p=open(sys.argv[1]).read().split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["sub"])' "${WORK}/token")"
[[ "${SPIFFE}" == "spiffe://cluster.local/ns/${AGENT_NS}/sa/${AGENT_SA}" ]] || die "unexpected sub ${SPIFFE}"

# ---------------------------------------------------------------- revocation

log "the agent marks its task completed: credential revoked"
JTI="$(k -n "${AGENT_NS}" get agenttask "${TASK}" -o jsonpath='{.status.credential.jti}')"
as_agent -n "${AGENT_NS}" patch agenttask "${TASK}" --type merge -p '{"spec":{"completed":true}}'
k -n "${AGENT_NS}" wait --for=jsonpath='{.status.phase}'=Completed "agenttask/${TASK}" --timeout "${TIMEOUT}s"
wait_until "Secret ${TASK}-credential deleted" \
  sh -c "! '${KUBECTL_BIN}' --kubeconfig '${KUBECONFIG_FILE}' -n '${AGENT_NS}' get secret '${TASK}-credential' >/dev/null 2>&1"
wait_until "jti ${JTI} in the revocation list" \
  sh -c "'${KUBECTL_BIN}' --kubeconfig '${KUBECONFIG_FILE}' -n '${OP_NS}' get configmap taskwarden-revocations -o jsonpath='{.data.revocations\.json}' | grep -q '${JTI}'"
if "${PYTHON}" -m taskwarden verify --help >/dev/null 2>&1; then
  if verify "${WORK}/token" >/dev/null 2>&1; then die "a revoked token still verifies"; fi
fi

log "kind e2e passed: token issued into a real pod, verified, revoked"
