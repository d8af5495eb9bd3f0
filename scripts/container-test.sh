#!/usr/bin/env bash
# The container test: builds the Dockerfile's `runtime` stage with podman
# around a chatwire binary built on this machine (no rust base image needed),
# on a Debian bookworm base made here with debootstrap (no registry needed),
# then runs it as a user would: a named volume, the port published on
# 127.0.0.1, the image's own settings. It checks the image's settings, that
# the server runs as non-root PID 1, that the health check passes, that a
# user registered over REST sends a message with socket.io-client and gets
# its ack, that `podman stop` (SIGTERM) ends it at once with status 0, and
# that a second container on the same volume finds the message with the
# first one's token.
#
# Usage: scripts/container-test.sh
#   CHATWIRE_BIN    the binary to put in the image (default target/debug/chatwire)
#   CHATWIRE_IMAGE  test this image instead (one built from the Dockerfile
#                   by other means, `podman build --format docker .` say):
#                   no base image, no build
#
# Needs root, Node 20 + npm, and Debian's podman, buildah, debootstrap and
# runc (installed with apt-get when missing). Everything it keeps is in
# tests/.container/ (git-ignored): podman's configuration and storage, the
# debootstrap base; a second run reuses them. Containers and the volume are
# removed at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
STARTED=$SECONDS
export npm_config_cache="$ROOT/tests/.npm-cache"

section() {
  printf '\n---------- container test: %s ----------\n' "$*"
}
fail() {
  echo "container test FAILED: $*" >&2
  exit 1
}

BIN="${CHATWIRE_BIN:-$ROOT/target/debug/chatwire}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
[ -x "$BIN" ] || fail "no chatwire binary at $BIN (cargo build, or set CHATWIRE_BIN)"

section "tools"
"$ROOT/scripts/apt-install.sh" podman buildah debootstrap runc uidmap slirp4netns >/dev/null
podman --version

# podman's configuration and storage live in the checkout. In this sandbox
# podman needs runc (not crun) and explicit ulimits.
CACHE="$ROOT/tests/.container"
mkdir -p "$CACHE/empty"
cat >"$CACHE/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF
cat >"$CACHE/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$CACHE/run"
EOF
export CONTAINERS_CONF="$CACHE/containers.conf"
export CONTAINERS_STORAGE_CONF="$CACHE/storage.conf"

section "node_modules (tests/e2e/js)"
if [ ! -d "$ROOT/tests/e2e/js/node_modules/socket.io-client" ]; then
  (cd "$ROOT/tests/e2e/js" && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "present"
fi

IMAGE="${CHATWIRE_IMAGE:-}"
if [ -n "$IMAGE" ]; then
  section "image $IMAGE (CHATWIRE_IMAGE: not built here)"
  podman image exists "$IMAGE" || fail "no image $IMAGE"
else
  # The base image: Debian bookworm minbase from debootstrap, trimmed as the
  # slim images are (no docs, man pages, locales, apt lists), cached.
  BASE_IMAGE=localhost/chatwire-test-base:bookworm
  BASE_DIR="$CACHE/bookworm-minbase"
  section "base image $BASE_IMAGE"
  if [ ! -f "$BASE_DIR.done" ]; then
    rm -rf "$BASE_DIR"
    t0=$SECONDS
    debootstrap --variant=minbase bookworm "$BASE_DIR" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log" >&2; fail "debootstrap (log: $CACHE/debootstrap.log)"; }
    rm -rf "$BASE_DIR"/usr/share/{doc,man,info,locale}/* "$BASE_DIR"/var/lib/apt/lists/* \
      "$BASE_DIR"/var/cache/apt/*.bin "$BASE_DIR"/var/cache/apt/archives/*.deb "$BASE_DIR"/var/log/*.log
    touch "$BASE_DIR.done"
    podman rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true
    echo "debootstrap: $((SECONDS - t0)) s"
  fi
  if ! podman image exists "$BASE_IMAGE"; then
    tar -C "$BASE_DIR" -c . | podman import -q - "$BASE_IMAGE" >/dev/null
  fi
  podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$BASE_IMAGE"

  # The binary in a directory laid out as the `build` stage's output: as the
  # build context `build`, it replaces that stage (no rust image needed).
  IMAGE=localhost/chatwire:container-test
  section "build: the runtime stage around $BIN"
  BIN_CTX="$CACHE/bin-context"
  rm -rf "$BIN_CTX"
  mkdir -p "$BIN_CTX/usr/local/bin"
  ln "$BIN" "$BIN_CTX/usr/local/bin/chatwire" 2>/dev/null || cp "$BIN" "$BIN_CTX/usr/local/bin/chatwire"
  # The main context is empty: the runtime stage copies nothing from it.
  podman build -q --format docker --target runtime --build-context build="$BIN_CTX" \
    --build-arg RUNTIME_BASE="$BASE_IMAGE" -t "$IMAGE" -f "$ROOT/Dockerfile" "$CACHE/empty" >/dev/null
  rm -rf "$BIN_CTX"
  # the images of earlier runs' binaries, now untagged
  podman image prune -f >/dev/null
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"

section "image settings"
inspect() { podman image inspect --format "$1" "$IMAGE"; }
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || fail "USER is $(inspect '{{.Config.User}}')"
env_lines="$(inspect '{{range .Config.Env}}{{println .}}{{end}}')"
for want in DATABASE_URL=/var/lib/chatwire HOST=0.0.0.0 PORT=3000; do
  grep -qx "$want" <<<"$env_lines" || fail "ENV lacks $want: $env_lines"
done
grep -q '3000/tcp' <<<"$(inspect '{{.Config.ExposedPorts}}')" || fail "EXPOSE: $(inspect '{{.Config.ExposedPorts}}')"
grep -q '/var/lib/chatwire' <<<"$(inspect '{{.Config.Volumes}}')" || fail "VOLUME: $(inspect '{{.Config.Volumes}}')"
health="$(inspect '{{.HealthCheck.Test}}')"
grep -q -- '--healthcheck' <<<"$health" || fail "HEALTHCHECK: $health (built without --format docker?)"
echo "user 10001:10001, env, port 3000, volume, health check $health: ok"

# Containers and the volume are this run's own, removed at the end; those
# of an earlier run that was killed are removed now.
for c in $(podman ps -a --format '{{.Names}}' | grep -E '^chatwire-ct-[0-9]+-' || true); do
  pid="${c#chatwire-ct-}"
  kill -0 "${pid%%-*}" 2>/dev/null || podman rm -f -v -t 0 "$c" >/dev/null 2>&1 || true
done
for v in $(podman volume ls --format '{{.Name}}' | grep -E '^chatwire-ct-[0-9]+-data$' || true); do
  pid="${v#chatwire-ct-}"
  kill -0 "${pid%%-*}" 2>/dev/null || podman volume rm -f "$v" >/dev/null 2>&1 || true
done
TAG="chatwire-ct-$$"
VOLUME="$TAG-data"
CONTAINERS=()
cleanup() {
  for c in "${CONTAINERS[@]+"${CONTAINERS[@]}"}"; do podman rm -f -v -t 0 "$c" >/dev/null 2>&1 || true; done
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
JWT_SECRET="$(node --input-type=module -e 'import { JWT_SECRET } from "./tests/e2e/js/lib/chat.mjs"; console.log(JWT_SECRET)')"
podman volume create "$VOLUME" >/dev/null

# start NAME: a container of the image on the volume, published on a free
# loopback port; only the secret, a fast bcrypt and no health timer are set
# (the health check is run by hand: no systemd here to time it).
start() {
  local name="$1" port
  port="$(free_port)"
  CONTAINERS+=("$name")
  podman run -d --name "$name" -p "127.0.0.1:$port:3000" -v "$VOLUME:/var/lib/chatwire" \
    -e JWT_SECRET="$JWT_SECRET" -e BCRYPT_COST=4 --health-interval disable "$IMAGE" \
    2> >(grep -v 'systemd connection' >&2) >/dev/null
  URL="http://127.0.0.1:$port"
}

# wait_healthy NAME: `podman healthcheck run` (the image's HEALTHCHECK, in the
# container) passes within 30 s; the server also answers /ready from here.
wait_healthy() {
  local name="$1" t0=$SECONDS
  until podman healthcheck run "$name" >/dev/null 2>&1; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
      podman logs "$name" >&2 || true
      fail "$name exited before it was healthy"
    fi
    [ $((SECONDS - t0)) -lt 30 ] || { podman logs "$name" >&2; fail "$name not healthy within 30 s"; }
    sleep 0.5
  done
  [ "$(podman inspect --format '{{.State.Health.Status}}' "$name")" = healthy ] \
    || fail "$name: health status $(podman inspect --format '{{.State.Health.Status}}' "$name")"
  python3 - "$URL" <<'EOF' || fail "GET /ready from the host"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/ready", timeout=5) as r:
    assert r.status == 200, r.status
EOF
  echo "$name healthy after $((SECONDS - t0)) s, $URL/ready 200"
}

# stop_cleanly NAME: SIGTERM (podman stop, 10 s before SIGKILL) ends it within
# 5 s with status 0.
stop_cleanly() {
  local name="$1" t0 ms code
  t0=$(date +%s%N)
  podman stop -t 10 "$name" 2> >(grep -v 'systemd connection' >&2) >/dev/null
  ms=$((($(date +%s%N) - t0) / 1000000))
  code="$(podman inspect --format '{{.State.ExitCode}}' "$name")"
  [ "$code" = 0 ] || { podman logs "$name" >&2; fail "$name exited with status $code after SIGTERM (137: killed)"; }
  [ "$ms" -lt 5000 ] || fail "$name took $ms ms to stop"
  # The logs are read whole before grep (`podman logs | grep -q` fails
  # under pipefail when grep stops reading early and podman gets SIGPIPE),
  # a few times in case the last lines reach podman's log file late.
  local logs tries=0
  until logs="$(podman logs "$name" 2>&1)"; grep -q "shutting down" <<<"$logs"; do
    tries=$((tries + 1))
    [ "$tries" -lt 10 ] || { printf '%s\n' "$logs" >&2; fail "$name did not log its shutdown"; }
    sleep 0.2
  done
  echo "$name stopped by SIGTERM in $ms ms, status 0"
}

section "first container"
start "$TAG-1"
wait_healthy "$TAG-1"
[ "$(podman exec "$TAG-1" id -u)" = 10001 ] || fail "runs as uid $(podman exec "$TAG-1" id -u)"
[ "$(podman exec "$TAG-1" id -g)" = 10001 ] || fail "runs as gid $(podman exec "$TAG-1" id -g)"
top="$(podman top "$TAG-1" pid huser args | awk 'NR > 1')"
grep -Eq '^ *1 +10001 +/usr/local/bin/chatwire *$' <<<"$top" || fail "PID 1 is not chatwire as 10001: $top"
echo "PID 1 is /usr/local/bin/chatwire, host uid 10001"
STATE="$CACHE/state-$$.json"
(cd "$ROOT/tests/e2e/js" && node container/drive.mjs send "$URL" "$STATE") || fail "send"
stop_cleanly "$TAG-1"

# The store's files are in the volume, owned by the server's user.
mnt="$(podman volume inspect --format '{{.Mountpoint}}' "$VOLUME")"
[ -n "$(ls -A "$mnt")" ] || fail "the volume is empty"
bad="$(find "$mnt" -mindepth 1 \( ! -uid 10001 -o ! -gid 10001 \) -print)"
[ -z "$bad" ] || fail "in the volume, not owned by 10001:10001: $bad"
echo "volume: $(ls -A "$mnt" | tr '\n' ' ')(all 10001:10001)"

section "second container, same volume"
start "$TAG-2"
wait_healthy "$TAG-2"
(cd "$ROOT/tests/e2e/js" && node container/drive.mjs check "$URL" "$STATE") || fail "check"
rm -f "$STATE"
stop_cleanly "$TAG-2"

section "passed in $((SECONDS - STARTED)) s"
