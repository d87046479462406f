#!/usr/bin/env bash
# Checks the Grafana board: installs the pinned tools (npm ci, skipped when
# node_modules already matches package-lock.json), type-checks
# grafana/dashboards/downbeat.json against @grafana/schema with tsc, lints it,
# and shows the lint failing on a broken copy. Exits non-zero on any failure.
#
#   bash grafana/check/run.sh
set -uo pipefail
cd "$(dirname "$0")"

log() { printf '\n--- grafana check: %s\n' "$*"; }
passed=0
failed=0
step() { # step NAME COMMAND...: run, count, keep going
  local name=$1
  shift
  log "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name" >&2
    failed=$((failed + 1))
  fi
}

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "grafana check: node and npm are needed (Debian: apt-get install -y nodejs npm)" >&2
  exit 1
}
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' || {
  echo "grafana check: node >= 18 is needed, found $(node --version)" >&2
  exit 1
}

# npm ci only when node_modules was not installed from this exact lock file.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.downbeat-lock-sha256
if [ -x node_modules/.bin/tsc ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ]; then
  log "node_modules matches package-lock.json, npm ci skipped"
else
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error || { echo "grafana check: npm ci failed" >&2; exit 1; }
  echo "$lock_sum" >"$stamp"
fi
echo "typescript $(node -p 'require("./node_modules/typescript/package.json").version'), @grafana/schema $(node -p 'require("./node_modules/@grafana/schema/package.json").version')"

typecheck() {
  node gen-strict.mjs && node_modules/.bin/tsc --noEmit -p tsconfig.json && echo "tsc: no errors"
}
step "type check against @grafana/schema (tsc --noEmit)" typecheck

step "lint (with its self-test on mutated copies)" node lint.mjs

# The lint must also fail from the command line on a broken file: a copy of
# the board whose first time series panel has no datasource.
lint_rejects_broken_copy() {
  local broken out
  broken=$(mktemp --suffix=.json)
  node -e '
    const fs = require("fs");
    const d = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    delete d.panels.find((p) => p.type === "timeseries").datasource;
    fs.writeFileSync(process.argv[2], JSON.stringify(d));
  ' ../dashboards/downbeat.json "$broken"
  if out=$(node lint.mjs --no-self-test "$broken" 2>&1); then
    echo "the lint passed a board with a panel without datasource:" >&2
    echo "$out" >&2
    rm -f "$broken"
    return 1
  fi
  rm -f "$broken"
  echo "$out" | grep -q '\[panel-datasource\]' || { echo "unexpected lint output: $out" >&2; return 1; }
  echo "lint rejects a broken copy (exit non-zero, [panel-datasource] reported)"
}
step "lint fails on a broken copy" lint_rejects_broken_copy

echo
echo "grafana check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
