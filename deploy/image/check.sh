#!/usr/bin/env bash
# Run the image as a user would, and check what it ships (CI runs this after
# deploy/image/build.sh):
#
#  1. what it ships: a non-root numeric user; the binary's shared libraries
#     all resolve (the image's own dynamic loader lists them); no shell and
#     no package manager; its size;
#  2. `docker run --read-only --network host IMAGE run --listen ...` (the
#     built-in generator) answers /healthz, /readyz and /metrics, runs as uid
#     65532, writes nothing (`docker diff`), and stops cleanly on SIGTERM;
#  3. a client with TLS and SASL settings starts (OpenSSL is in the image);
#  4. the Kafka overlay's own config (deploy/overlays/kafka/downbeat.toml,
#     brokers and listen address pointed here) in the image, read-only with
#     the manifests' volumes only (the config, the emptyDir at
#     /var/lib/downbeat), against a tansu broker on the host: the image's
#     `produce` fills the topic, a replica consumes all of it, and a merger
#     (merge.yaml's command) emits global windows from its partials.
#
# Needs: docker (a daemon; build.sh starts one), curl, python3, tansu 0.6.0
# on PATH (cargo install tansu --version 0.6.0 --features dynostore --locked).
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${IMAGE:-downbeat:dev}
uid=65532
work=$(mktemp -d "${TMPDIR:-/tmp}/downbeat-image-check.XXXXXX")
containers=()
tansu_pid=
cleanup() {
  # KEEP=1 leaves the containers and the broker running, to look at.
  [ -n "${KEEP:-}" ] && return
  for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
  [ -n "$tansu_pid" ] && kill "$tansu_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf -- '--- image: %s\n' "$*"; }
fail() {
  echo "image: FAILED: $*" >&2
  for c in "${containers[@]}"; do
    echo "--- logs of $c" >&2
    docker logs --tail 30 "$c" >&2 2>&1 || true
  done
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2" || true; }
# metric PORT SERIES: the value of one series (exact name and labels), or empty.
metric() { curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v s="$2" '$1 == s { print $2 }'; }
# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq 1 "$((seconds * 2))"); do
    "$@" && return 0
    sleep 0.5
  done
  fail "waited ${seconds} s for $what"
}
start() {
  local name=$1
  shift
  docker rm -f "$name" >/dev/null 2>&1 || true
  containers+=("$name")
  docker run -d --name "$name" --read-only --network host "$@" >/dev/null
}
writes_nothing() {
  local changes
  changes=$(docker diff "$1")
  [ -z "$changes" ] || fail "$1 wrote outside its volumes: $changes"
}
runs_as_non_root() {
  local uids
  uids=$(docker top "$1" -eo pid,uid | awk 'NR > 1 { print $2 }' | sort -u)
  [ "$uids" = "$uid" ] || fail "$1 runs as uid(s) '$uids', not $uid"
}

step "what $image ships"
[ "$(docker image inspect -f '{{.Config.User}}' "$image")" = "$uid:$uid" ] \
  || fail "the image's user is not $uid:$uid"
probe=$(docker create "$image")
files=$(docker export "$probe" | tar -t)
docker rm "$probe" >/dev/null
for banned in bin/sh bin/bash bin/dash bin/busybox usr/bin/sh usr/bin/bash usr/bin/apt usr/bin/dpkg; do
  grep -qx "$banned" <<<"$files" && fail "the image ships $banned"
done
loader=$(grep -E '^lib[^/]*/ld-linux[^/]*\.so\.[0-9]+$' <<<"$files" | head -1)
[ -n "$loader" ] || fail "no dynamic loader in the image"
libraries=$(docker run --rm --network none --entrypoint "/$loader" "$image" --list /usr/local/bin/downbeat) \
  || fail "the loader cannot list the binary's libraries"
grep -q "not found" <<<"$libraries" && fail "unresolved libraries: $libraries"
echo "  libraries:"
sed 's/ (0x[0-9a-f]*)//; s/^\s*/    /' <<<"$libraries"
echo "  files: $(grep -cv '/$' <<<"$files") (no shell, no package manager)"
echo "  size: $(($(docker image inspect -f '{{.Size}}' "$image") / 1000)) kB"

step "the built-in generator: read-only, host network"
port=$(free_port)
start downbeat-check-generator "$image" run --listen "127.0.0.1:$port"
answers() { [ "$(status_of "$port" "$1")" = 200 ]; }
wait_for 30 "/healthz" answers /healthz
wait_for 30 "/readyz" answers /readyz
events_counted() { local v; v=$(metric "$port" downbeat_events_total); [ -n "$v" ] && [ "${v%.*}" -gt 0 ]; }
wait_for 30 "downbeat_events_total > 0" events_counted
runs_as_non_root downbeat-check-generator
writes_nothing downbeat-check-generator
docker stop -t 20 downbeat-check-generator >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' downbeat-check-generator)
[ "$code" = 0 ] || fail "the generator exited with $code on SIGTERM"
echo "  ok: /healthz, /readyz, /metrics; uid $uid; nothing written; exit 0 on SIGTERM"

step "TLS and SASL settings are accepted (librdkafka with OpenSSL, the CA bundle found)"
port=$(free_port)
closed=$(free_port)
start downbeat-check-tls "$image" run --brokers "127.0.0.1:$closed" --topic t --checkpoint-dir "" \
  --kafka-property security.protocol=SASL_SSL --kafka-property sasl.mechanism=SCRAM-SHA-512 \
  --kafka-property sasl.username=u --kafka-property sasl.password=p --listen "127.0.0.1:$port"
wait_for 30 "/healthz with SASL_SSL settings" answers /healthz
# librdkafka logs each failed dial of the closed port with its URL.
dialed_tls() { docker logs downbeat-check-tls 2>&1 | grep -q "sasl_ssl://127.0.0.1:$closed"; }
wait_for 30 "the client to dial sasl_ssl://" dialed_tls
docker rm -f downbeat-check-tls >/dev/null
echo "  ok: a SASL_SSL client starts and dials sasl_ssl://"

step "the Kafka overlay's config against tansu on the host"
command -v tansu >/dev/null 2>&1 \
  || fail "tansu not on PATH: cargo install tansu --version 0.6.0 --features dynostore --locked"
kafka_port=$(free_port)
tansu broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
tansu_pid=$!
brokers="127.0.0.1:$kafka_port"
wait_for 30 "tansu" tansu topic create listen_events --partitions 2 --broker "tcp://$brokers"
# The overlay's file, with only the brokers and the listen address changed.
replica_port=$(free_port)
merger_port=$(free_port)
for role in replica merger; do
  mkdir -p "$work/$role"
  listen=$([ "$role" = replica ] && echo "$replica_port" || echo "$merger_port")
  sed -e "s|^brokers = .*|brokers = \"$brokers\"|" \
    -e "s|^listen = .*|listen = \"127.0.0.1:$listen\"|" \
    deploy/overlays/kafka/downbeat.toml >"$work/$role/downbeat.toml"
  chmod -R a+rX "$work/$role"
done
grep -q "^brokers = \"$brokers\"" "$work/replica/downbeat.toml" || fail "the overlay's config has no brokers line"
count=20000
docker run --rm --network host "$image" produce --brokers "$brokers" --topic listen_events \
  --count "$count" --seed 7 >/dev/null || fail "produce from the image"
volumes=(--tmpfs "/var/lib/downbeat:uid=$uid,gid=$uid" --env DOWNBEAT_REPLICA_ID=check-0)
start downbeat-check-replica -v "$work/replica:/etc/downbeat:ro" "${volumes[@]}" "$image"
start downbeat-check-merger -v "$work/merger:/etc/downbeat:ro" "$image" merge --config /etc/downbeat/downbeat.toml
all_consumed() { [ "$(metric "$replica_port" downbeat_events_total)" = "$count" ]; }
wait_for 60 "the replica to consume $count events" all_consumed
merged() { local v; v=$(metric "$merger_port" 'downbeat_merge_records_total{outcome="merged"}'); [ -n "$v" ] && [ "${v%.*}" -gt 0 ]; }
wait_for 60 "the merger to merge partials" merged
windows() { local v; v=$(metric "$merger_port" 'downbeat_windows_emitted_total{window="1m"}'); [ -n "$v" ] && [ "${v%.*}" -gt 0 ]; }
wait_for 90 "the merger to emit a global window" windows
for c in downbeat-check-replica downbeat-check-merger; do
  runs_as_non_root "$c"
  writes_nothing "$c"
done
echo "  ok: the replica consumed $count events, the merger emitted windows; uid $uid; nothing written outside the volumes"
echo "image: all checks passed"
