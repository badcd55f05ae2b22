#!/usr/bin/env bash
# A local podman pod: nats-server with auth callout, nats-oidc-callout, and a
# development OIDC issuer. See README.md beside this file.
#
#   ./pod.sh up                 generate keys (once), render nats.conf, start the pod
#   ./pod.sh token ana admin    print a token for user ana with role admin
#   ./pod.sh status             container states and the callout's health
#   ./pod.sh logs [container]   logs (callout, nats, issuer)
#   ./pod.sh down               stop and remove the pod (keys are kept)
#   ./pod.sh purge              down, and remove the keys and podman secrets
#   ./pod.sh render             generate keys and render nats.conf only
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${IMAGE:-localhost/nats-oidc-callout:latest}
NATS_IMAGE=${NATS_IMAGE:-docker.io/library/nats:2.11-alpine}
POD=${POD:-nats-oidc-callout}
STATE=${STATE:-$HERE/.state}
# Host networking: the pod's services listen on 127.0.0.1 of the host.
NETWORK=${NETWORK:-host}
# Set to a nats-oidc-callout binary to generate keys without podman.
NATS_OIDC_CALLOUT_BIN=${NATS_OIDC_CALLOUT_BIN:-}

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

callout() {
  if [ -n "$NATS_OIDC_CALLOUT_BIN" ]; then
    "$NATS_OIDC_CALLOUT_BIN" "$@"
  else
    podman run --rm --network none "$IMAGE" "$@"
  fi
}

# Seeds are created once and kept only in $STATE (mode 0600) and as podman
# secrets; their public keys go into nats.conf.
keys() {
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  local kind name
  for pair in account:issuer curve:xkey; do
    kind=${pair%%:*}
    name=${pair##*:}
    if [ ! -s "$STATE/$name.nk" ]; then
      say "generating the $name seed ($kind nkey)"
      (umask 077 && callout keygen "$kind" > "$STATE/$name.nk" 2> "$STATE/$name.pub")
    fi
  done
}

render() {
  keys
  local issuer xkey
  issuer=$(tr -d '[:space:]' < "$STATE/issuer.pub")
  xkey=$(tr -d '[:space:]' < "$STATE/xkey.pub")
  case "$issuer" in A*) ;; *) die "$STATE/issuer.pub does not hold an account public key" ;; esac
  case "$xkey" in X*) ;; *) die "$STATE/xkey.pub does not hold a curve public key" ;; esac
  sed -e "s/\${ISSUER_PUBLIC}/$issuer/" -e "s/\${XKEY_PUBLIC}/$xkey/" \
    "$HERE/nats.conf.template" > "$STATE/nats.conf"
  say "rendered $STATE/nats.conf (issuer $issuer)"
}

secrets() {
  local name
  for name in issuer xkey; do
    podman secret rm "$POD-$name" >/dev/null 2>&1 || true
    podman secret create "$POD-$name" "$STATE/$name.nk" >/dev/null
  done
}

up() {
  command -v podman >/dev/null || die "podman is not installed"
  podman image exists "$IMAGE" || die "image $IMAGE not found: build it with 'podman build -t $IMAGE .' in the project root"
  render
  secrets
  podman pod exists "$POD" && die "pod $POD exists: ./pod.sh down first"
  podman pod create --name "$POD" --network "$NETWORK" >/dev/null
  podman run -d --pod "$POD" --name "$POD-nats" \
    -v "$STATE/nats.conf:/etc/nats/nats.conf:ro,Z" \
    "$NATS_IMAGE" -c /etc/nats/nats.conf >/dev/null
  podman run -d --pod "$POD" --name "$POD-issuer" \
    "$IMAGE" dev-issuer --port 8081 >/dev/null
  # The seeds are mounted as files readable only by the image's user.
  podman run -d --pod "$POD" --name "$POD-callout" \
    --health-cmd '["/usr/local/bin/nats-oidc-callout", "health"]' --health-interval 10s \
    -v "$HERE/config.toml:/etc/nats-oidc-callout/config.toml:ro,Z" \
    --secret "$POD-issuer,type=mount,target=/etc/nats-oidc-callout/issuer.nk,uid=65532,gid=65532,mode=0400" \
    --secret "$POD-xkey,type=mount,target=/etc/nats-oidc-callout/xkey.nk,uid=65532,gid=65532,mode=0400" \
    "$IMAGE" run >/dev/null
  say "waiting for the callout to be ready"
  for _ in $(seq 1 60); do
    if podman exec "$POD-callout" /usr/local/bin/nats-oidc-callout health >/dev/null 2>&1; then
      cat >&2 <<EOF
ready.
  TOKEN=\$($0 token ana admin)
  nats --server nats://127.0.0.1:4222 --user ana --password "\$TOKEN" pub orders.new hello
EOF
      return 0
    fi
    sleep 1
  done
  podman logs "$POD-callout" >&2 || true
  die "the callout did not become ready"
}

token() {
  local user=${1:-ana} roles=${2:-admin}
  curl -fsS "http://127.0.0.1:8081/token?user=$user&roles=$roles"
  echo
}

status() {
  podman pod ps --filter "name=^$POD\$"
  podman ps -a --pod --filter "pod=$POD" --format '{{.Names}}\t{{.Status}}'
  curl -fsS http://127.0.0.1:8080/readyz && echo
}

logs() {
  podman logs "$POD-${1:-callout}"
}

down() {
  podman pod rm -f "$POD" >/dev/null 2>&1 || true
  say "pod $POD removed"
}

purge() {
  down
  podman secret rm "$POD-issuer" "$POD-xkey" >/dev/null 2>&1 || true
  rm -rf "$STATE"
  say "keys and secrets removed"
}

case "${1:-up}" in
  up) up ;;
  render) render ;;
  token) shift; token "$@" ;;
  status) status ;;
  logs) shift; logs "$@" ;;
  down) down ;;
  purge) purge ;;
  *) die "usage: $0 up|token [user] [roles]|status|logs [callout|nats|issuer]|down|purge|render" ;;
esac
