#!/usr/bin/env bash
# From nothing to a materialised graph on a local kind cluster (needs docker, kind, kubectl,
# helm). Run from the repository root:  deploy/kind/up.sh
#
# Order: cluster -> namespaces, RBAC, settings -> Secrets -> PostgreSQL, S3, registry ->
# user-code image (built here, pushed through localhost:5001) -> MLflow -> Dagster chart.
# Every step is idempotent: run it again after a change to the code to roll out a new image.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-mlops}
TAG=${TAG:-0.1.0}
CHART_VERSION=${CHART_VERSION:-1.13.27}
KANIKO_IMAGE=${KANIKO_IMAGE:-}
IMAGE_IN_CLUSTER=registry.mlops.svc.cluster.local:5000/mlops-assets:$TAG
IMAGE_PUSH=localhost:5001/mlops-assets:$TAG

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool is not installed" >&2; exit 1; }
done
say() { printf '\n== %s\n' "$*"; }

say "1/8 kind cluster '$CLUSTER' (ports 8080 UI, 5001 registry)"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config deploy/kind/cluster.yaml
kubectl config use-context "kind-$CLUSTER" >/dev/null

say "2/8 namespaces, RBAC, settings"
kubectl apply -f deploy/manifests/00-namespaces.yaml -f deploy/manifests/10-rbac.yaml -f deploy/manifests/20-settings.yaml
if [ -n "$KANIKO_IMAGE" ]; then
  kubectl -n mlops patch configmap mlops-settings --type merge -p "{\"data\":{\"MLOPS_KANIKO_IMAGE\":\"$KANIKO_IMAGE\"}}"
else
  echo "KANIKO_IMAGE is not set: served_image will fail until MLOPS_KANIKO_IMAGE is set in mlops-settings"
fi

say "3/8 Secrets (generated once, never printed)"
secret() { kubectl -n mlops get secret "$1" >/dev/null 2>&1; }
random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if ! secret dagster-postgresql; then
  kubectl -n mlops create secret generic dagster-postgresql --from-literal=postgresql-password="$(random)" >/dev/null
fi
if ! secret mlops-s3; then
  key="mlops$(random | head -c 12)"; secret_key="$(random)"
  kubectl -n mlops create secret generic mlops-s3 \
    --from-literal=AWS_ACCESS_KEY_ID="$key" --from-literal=AWS_SECRET_ACCESS_KEY="$secret_key" >/dev/null
  printf '{"identities":[{"name":"mlops","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' \
    "$key" "$secret_key" | kubectl -n mlops create secret generic mlops-s3-config --from-file=s3.json=/dev/stdin >/dev/null
fi
# The served model's traffic log writes to the same store, from the serving namespace.
if ! kubectl -n mlops-serving get secret mlops-s3 >/dev/null 2>&1; then
  kubectl -n mlops get secret mlops-s3 -o jsonpath='{.data}' | python3 -c 'import json, sys
data = json.load(sys.stdin)
print(json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data,
                  "metadata": {"name": "mlops-s3", "namespace": "mlops-serving"}}))' \
    | kubectl apply -f - >/dev/null
fi
secret mlops-alerts || kubectl -n mlops create secret generic mlops-alerts \
  --from-literal=MLOPS_ALERT_WEBHOOK_URL="${MLOPS_ALERT_WEBHOOK_URL:-}" >/dev/null
echo "dagster-postgresql, mlops-s3 (also in mlops-serving), mlops-s3-config, mlops-alerts: present"

say "4/8 PostgreSQL, S3 (SeaweedFS), registry"
kubectl apply -f deploy/manifests/30-postgres.yaml -f deploy/manifests/40-s3.yaml -f deploy/manifests/50-registry.yaml
kubectl -n mlops rollout status statefulset/postgres --timeout=300s
kubectl -n mlops rollout status statefulset/s3 --timeout=300s
kubectl -n mlops rollout status deployment/registry --timeout=300s

say "5/8 user-code image $IMAGE_PUSH"
docker build -f deploy/Dockerfile -t "$IMAGE_PUSH" .
docker push "$IMAGE_PUSH"

say "6/8 MLflow"
kubectl apply -f deploy/manifests/60-mlflow.yaml
kubectl -n mlops rollout status deployment/mlflow --timeout=300s

say "7/8 Dagster (official chart $CHART_VERSION, K8sRunLauncher)"
helm repo add dagster https://dagster-io.github.io/helm >/dev/null 2>&1 || true
helm repo update dagster >/dev/null
helm upgrade --install dagster dagster/dagster --version "$CHART_VERSION" --namespace mlops \
  -f deploy/helm/values.yaml \
  --set "dagster-user-deployments.deployments[0].image.tag=$TAG" \
  --wait --timeout 10m
# The UI on localhost:8080 through the node port kind maps (cluster.yaml).
kubectl -n mlops patch service dagster-dagster-webserver \
  -p '{"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30080}]}}' >/dev/null

say "8/8 ready"
echo "Dagster UI: http://localhost:8080   image in cluster: $IMAGE_IN_CLUSTER"
echo "Materialize: open the UI, Assets -> Materialize all; or launch refresh_model and serve_champion."
