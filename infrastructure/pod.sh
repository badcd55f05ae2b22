#!/usr/bin/env bash
# A local podman pod: nats-server with auth callout, nats-oidc-callout, and a
# development OIDC issuer. See README.md beside this file.
#
#   ./pod.sh up                 generate keys (once), render nats.conf, start the pod (safe to re-run)
#   ./pod.sh token ana admin    print a token for user ana with role admin
#   ./pod.sh status             container states and the callout's health
#   ./pod.sh logs [container]   logs (callout, nats, issuer)
#   ./pod.sh reload             SIGHUP the callout (it also reloads by itself when the config changes)
#   ./pod.sh down               stop and remove the pod (keys, config and secrets are kept)
#   ./pod.sh purge              down, and remove the keys, the config and the secrets pod.sh created
#   ./pod.sh render             generate keys and render nats.conf only
set -Eeuo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${IMAGE:-localhost/nats-oidc-callout:latest}
NATS_IMAGE=${NATS_IMAGE:-docker.io/library/nats:2.11-alpine}
POD=${POD:-nats-oidc-callout}
STATE=${STATE:-$HERE/.state}
# The callout's config directory, mounted read-only at
# /etc/nats-oidc-callout/config: a directory, not the file, so a config
# replaced by rename (editors, `mv`) is seen by the container and reloaded.
CONFIG_DIR=${CONFIG_DIR:-$STATE/config}
# podman secrets holding the seeds: <prefix>-issuer and <prefix>-xkey. pod.sh
# creates them, records their ids in $STATE/secrets, and never replaces or
# removes a secret of that name it did not create.
SECRET_PREFIX=${SECRET_PREFIX:-$POD-pod}
# Host networking: the pod's services listen on 127.0.0.1 of the host.
NETWORK=${NETWORK:-host}
# 0: no development issuer container (a real identity provider is configured).
DEV_ISSUER=${DEV_ISSUER:-1}
# Set to a nats-oidc-callout binary to generate keys without podman.
NATS_OIDC_CALLOUT_BIN=${NATS_OIDC_CALLOUT_BIN:-}

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
trap 'say "error: pod.sh stopped at line $LINENO: $BASH_COMMAND failed"' ERR

need_podman() {
  command -v podman >/dev/null || die "podman is not installed"
}

# Runs the image (or NATS_OIDC_CALLOUT_BIN). Only its stdout is ever kept:
# podman prints warnings on stderr on some hosts (no systemd, cgroups v1),
# and they go to the terminal, never into a file.
callout() {
  if [ -n "$NATS_OIDC_CALLOUT_BIN" ]; then
    "$NATS_OIDC_CALLOUT_BIN" "$@"
  else
    need_podman
    podman image exists "$IMAGE" || die "image $IMAGE not found: build it with 'podman build --format docker -t $IMAGE .' in the project root"
    podman run --rm --network none "$IMAGE" "$@"
  fi
}

# The public key of a seed file, from stdout only.
public_key() { # SEED_FILE
  if [ -n "$NATS_OIDC_CALLOUT_BIN" ]; then
    "$NATS_OIDC_CALLOUT_BIN" pubkey "$1"
  else
    # The seed file is root's (0600); uid 0 in a throwaway container with
    # no network reads it, read-only.
    callout_image_as_root -v "$1:/seed.nk:ro,Z" -- pubkey /seed.nk
  fi
}

callout_image_as_root() {
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  need_podman
  podman run --rm --network none --user 0:0 "${opts[@]}" "$IMAGE" "$@"
}

# Seeds are created once and kept only in $STATE (mode 0600) and as podman
# secrets; their public keys (derived from the seeds at every run) go into
# nats.conf. Files are written whole or not at all, so a failed run leaves
# nothing that breaks the next.
keys() {
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  local pair kind name seed tmp public pattern
  for pair in account:issuer:A curve:xkey:X; do
    IFS=: read -r kind name pattern <<< "$pair"
    seed=$STATE/$name.nk
    if [ ! -s "$seed" ]; then
      say "generating the $name seed ($kind nkey); its public key:"
      tmp=$(umask 077 && mktemp "$STATE/.$name.nk.XXXXXX")
      if ! callout keygen "$kind" > "$tmp"; then
        rm -f "$tmp"
        die "keygen $kind failed (see above)"
      fi
      if ! grep -Eqx "S${pattern}[A-Z2-7]{56}" "$tmp"; then
        rm -f "$tmp"
        die "keygen $kind did not print a $kind seed on stdout"
      fi
      mv "$tmp" "$seed"
    fi
    grep -Eqx "S${pattern}[A-Z2-7]{56}" "$seed" \
      || die "$seed does not hold a $kind seed (S${pattern}...): remove it, or './pod.sh purge' to start over"
    public=$(public_key "$seed") || die "cannot derive the public key of $seed (see above)"
    [[ $public =~ ^${pattern}[A-Z2-7]{55}$ ]] \
      || die "the public key of $seed is not a $kind public key (${pattern}...): got '${public:0:80}'"
    printf '%s\n' "$public" > "$STATE/$name.pub"
  done
}

render() {
  keys
  local issuer xkey tmp
  issuer=$(cat "$STATE/issuer.pub")
  xkey=$(cat "$STATE/xkey.pub")
  tmp=$(mktemp "$STATE/.nats.conf.XXXXXX")
  sed -e "s/\${ISSUER_PUBLIC}/$issuer/" -e "s/\${XKEY_PUBLIC}/$xkey/" \
    "$HERE/nats.conf.template" > "$tmp"
  chmod 644 "$tmp"
  if cmp -s "$tmp" "$STATE/nats.conf"; then
    rm -f "$tmp"
  else
    mv "$tmp" "$STATE/nats.conf"
  fi
  if [ ! -e "$CONFIG_DIR/config.toml" ]; then
    mkdir -p "$CONFIG_DIR"
    cp "$HERE/config.toml" "$CONFIG_DIR/config.toml"
    chmod 755 "$CONFIG_DIR"
    chmod 644 "$CONFIG_DIR/config.toml"
    say "copied config.toml to $CONFIG_DIR (the pod's config: edit it there)"
  fi
  say "rendered $STATE/nats.conf (issuer $issuer)"
}

# The secret's id and the seed's digest pod.sh recorded when it created it.
recorded() { # SECRET
  [ -f "$STATE/secrets" ] || return 0
  awk -v n="$1" '$1 == n { print $2, $3 }' "$STATE/secrets"
}

record() { # SECRET ID DIGEST
  local tmp
  tmp=$(mktemp "$STATE/.secrets.XXXXXX")
  { [ -f "$STATE/secrets" ] && awk -v n="$1" '$1 != n' "$STATE/secrets"; [ -n "$2" ] && printf '%s %s %s\n' "$1" "$2" "$3"; } > "$tmp" || true
  mv "$tmp" "$STATE/secrets"
}

secret_id() { # SECRET: prints the id, fails when there is no such secret
  podman secret inspect --format '{{.ID}}' "$1" 2>/dev/null
}

secrets() {
  local name secret id digest mine mine_id mine_digest
  for name in issuer xkey; do
    secret=$SECRET_PREFIX-$name
    digest=$(sha256sum < "$STATE/$name.nk" | cut -d' ' -f1)
    mine=$(recorded "$secret")
    mine_id=${mine%% *}
    mine_digest=${mine#* }
    if id=$(secret_id "$secret"); then
      if [ -z "$mine_id" ] || [ "$id" != "$mine_id" ]; then
        die "podman secret $secret exists and was not created by pod.sh (from $STATE): it is left alone.
  Remove it if it is not yours ('podman secret rm $secret'), or set SECRET_PREFIX to use other names."
      fi
      [ "$digest" = "$mine_digest" ] && continue
      say "the $name seed changed: replacing pod.sh's secret $secret"
      podman secret rm "$secret" >/dev/null
    fi
    id=$(podman secret create "$secret" "$STATE/$name.nk")
    record "$secret" "$id" "$digest"
  done
}

# Creates a container, or starts it if it exists and is stopped.
container() { # NAME RUN-ARGS...
  local name=$1
  shift
  if podman container exists "$name"; then
    if [ "$(podman container inspect --format '{{.State.Running}}' "$name")" != true ]; then
      podman start "$name" >/dev/null
      say "started $name"
    fi
  else
    podman run -d --pod "$POD" --name "$name" "$@" >/dev/null
    say "created $name"
  fi
}

up() {
  need_podman
  podman image exists "$IMAGE" || die "image $IMAGE not found: build it with 'podman build --format docker -t $IMAGE .' in the project root"
  render
  secrets
  podman pod exists "$POD" || podman pod create --name "$POD" --network "$NETWORK" >/dev/null
  container "$POD-nats" \
    -v "$STATE/nats.conf:/etc/nats/nats.conf:ro,Z" \
    "$NATS_IMAGE" -c /etc/nats/nats.conf
  if [ "$DEV_ISSUER" = 1 ]; then
    # The issuer is the same image with another command: the image's
    # HEALTHCHECK (the callout's /readyz) does not apply to it.
    container "$POD-issuer" --no-healthcheck \
      "$IMAGE" dev-issuer --port 8081
  fi
  # The config directory, not the file, is mounted (see CONFIG_DIR); the
  # seeds are mounted as files readable only by the image's user.
  container "$POD-callout" \
    --health-cmd '["/usr/local/bin/nats-oidc-callout", "health"]' --health-interval 10s \
    -v "$CONFIG_DIR:/etc/nats-oidc-callout/config:ro,Z" \
    --secret "$SECRET_PREFIX-issuer,type=mount,target=/etc/nats-oidc-callout/issuer.nk,uid=65532,gid=65532,mode=0400" \
    --secret "$SECRET_PREFIX-xkey,type=mount,target=/etc/nats-oidc-callout/xkey.nk,uid=65532,gid=65532,mode=0400" \
    "$IMAGE" run
  say "waiting for the callout to be ready"
  for _ in $(seq 1 60); do
    if podman exec "$POD-callout" /usr/local/bin/nats-oidc-callout health >/dev/null 2>&1; then
      cat >&2 <<EOF
ready. Config: $CONFIG_DIR/config.toml (reloaded when it changes).
  TOKEN=\$($0 token ana admin)
  nats --server nats://127.0.0.1:4222 --user ana --password "\$TOKEN" pub orders.new hello
  # without the nats CLI: nats-server's verdict on each publish and subscription
  $(try_command) --server nats://127.0.0.1:4222 --user ana --pub orders.new --sub 'orders.>'
EOF
      return 0
    fi
    sleep 1
  done
  podman logs "$POD-callout" >&2 || true
  die "the callout did not become ready (its log is above)"
}

# How the ready message runs `try` (the token in NATS_PASSWORD, out of
# the process list): the binary, or the image on the host's network.
try_command() {
  if [ -n "$NATS_OIDC_CALLOUT_BIN" ]; then
    echo "NATS_PASSWORD=\"\$TOKEN\" $NATS_OIDC_CALLOUT_BIN try"
  else
    echo "podman run --rm --network host -e NATS_PASSWORD=\"\$TOKEN\" $IMAGE try"
  fi
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

reload() {
  podman kill --signal HUP "$POD-callout" >/dev/null
  say "sent SIGHUP to $POD-callout"
}

down() {
  if podman pod exists "$POD"; then
    podman pod rm -f "$POD" >/dev/null
    say "pod $POD removed"
  else
    say "no pod $POD"
  fi
}

purge() {
  need_podman
  down
  local secret id mine
  for secret in "$SECRET_PREFIX-issuer" "$SECRET_PREFIX-xkey"; do
    mine=$(recorded "$secret")
    if id=$(secret_id "$secret"); then
      if [ -n "$mine" ] && [ "$id" = "${mine%% *}" ]; then
        podman secret rm "$secret" >/dev/null
      else
        say "podman secret $secret was not created by pod.sh: left alone"
      fi
    fi
  done
  rm -rf "$STATE"
  say "keys, config and pod.sh's secrets removed"
}

case "${1:-up}" in
  up) up ;;
  render) render ;;
  token) shift; token "$@" ;;
  status) status ;;
  logs) shift; logs "$@" ;;
  reload) reload ;;
  down) down ;;
  purge) purge ;;
  *) die "usage: $0 up|token [user] [roles]|status|logs [callout|nats|issuer]|reload|down|purge|render" ;;
esac
