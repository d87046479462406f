#!/usr/bin/env bash
# Build the downbeat image from deploy/Dockerfile: tag downbeat:dev, or $IMAGE.
#
#   deploy/image/build.sh            (from anywhere in the repository)
#
# - Starts dockerd when none answers (as root; its log goes to
#   ${TMPDIR:-/tmp}/downbeat-dockerd.log).
# - Builds with BuildKit (the Dockerfile's cache mounts need it): buildx when
#   the client has it, else a pre-23 client (Debian's docker.io 20.10) with
#   DOCKER_BUILDKIT=1, which uses the daemon's own BuildKit.
# - The build stage's base is rust:1.95-bookworm when it is in the local
#   store or can be pulled; when no registry answers, local-base.sh makes one
#   from Debian's packages and this machine's Rust toolchain. The runtime
#   stage is `scratch`: nothing to pull.
# - Prints the image's size.
#
# The first build on a machine takes about 10 minutes on 2 cores (the
# release build); BuildKit's cache mounts keep the crates and target/ for
# the next one.
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${IMAGE:-downbeat:dev}
upstream_base=rust:1.95-bookworm

start_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null 2>&1 || {
    echo "dockerd not found: apt-get install -y docker.io" >&2
    exit 1
  }
  local log="${TMPDIR:-/tmp}/downbeat-dockerd.log"
  echo "build: starting dockerd (log: $log)" >&2
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "dockerd did not answer within 60 s; see $log" >&2
  exit 1
}

# The build command: BuildKit through buildx, or through a pre-23 client.
builder() {
  if docker buildx version >/dev/null 2>&1; then
    echo "docker buildx build --load"
    return
  fi
  local client major
  for client in $(type -ap docker); do
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 23)); then
      echo "env DOCKER_BUILDKIT=1 $client build"
      return
    fi
  done
  echo "no docker client can build with BuildKit: install buildx, or Debian's docker.io" >&2
  exit 1
}

start_dockerd
base_args=()
if docker image inspect "$upstream_base" >/dev/null 2>&1 \
  || timeout 120 docker pull -q "$upstream_base" >/dev/null 2>&1; then
  echo "build: build stage on $upstream_base" >&2
else
  local_base=$(bash deploy/image/local-base.sh)
  echo "build: no registry answers; build stage on $local_base (made here)" >&2
  base_args=(--build-arg "RUST_IMAGE=$local_base")
fi

read -r -a build <<<"$(builder)"
started=$(date +%s)
"${build[@]}" --network host -f deploy/Dockerfile -t "$image" "${base_args[@]}" .
bytes=$(docker image inspect -f '{{.Size}}' "$image")
echo "build: $image built in $(($(date +%s) - started)) s: $((bytes / 1000)) kB ($((bytes / 1000000)) MB)"
