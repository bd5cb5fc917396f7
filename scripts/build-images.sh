#!/usr/bin/env bash
# Builds the images execgate needs, without a registry when none answers:
#   execgate/base:bookworm     Debian bookworm base: pulled debian:bookworm-slim when a registry answers,
#                              else debootstrapped locally (with the sandbox tools already inside)
#   execgate/sandbox:latest    images/sandbox/Dockerfile on that base (the default sandbox image)
#   execgate/node:20-bookworm  the base plus this machine's node binary (only with --service)
#   execgate/execgate:latest   the service image from ./Dockerfile (only with --service)
# Idempotent: an image that exists is kept unless --rebuild is given.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=execgate/base:bookworm
SANDBOX=${EXECGATE_SANDBOX_IMAGE:-execgate/sandbox:latest}
NODE_BASE=execgate/node:20-bookworm
TOOLS="bash,coreutils,findutils,grep,sed,gawk,diffutils,patch,git,curl,ca-certificates,python3,jq,less,procps,xz-utils,unzip,file,make"
rebuild=0; service=0
for a in "$@"; do
  case "$a" in
    --rebuild) rebuild=1 ;;
    --service) service=1 ;;
    *) echo "usage: $0 [--rebuild] [--service]" >&2; exit 2 ;;
  esac
done
log() { printf '[images] %s\n' "$*" >&2; }
have() { [ "$rebuild" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

docker info >/dev/null 2>&1 || { log "no Docker engine answers (start dockerd, or run .ci/setup-docker.sh as root)"; exit 1; }

if ! have "$BASE"; then
  if timeout 30 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    log "registry answered: using debian:bookworm-slim as $BASE"
    docker tag debian:bookworm-slim "$BASE"
  else
    log "no registry: debootstrapping Debian bookworm (minbase + sandbox tools) into $BASE"
    command -v debootstrap >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    root=$(mktemp -d /tmp/execgate-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include="$TOOLS" bookworm "$root" http://deb.debian.org/debian >/tmp/execgate-debootstrap.log 2>&1 \
      || { tail -20 /tmp/execgate-debootstrap.log >&2; exit 1; }
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
    rm -rf "$root"; trap - EXIT
  fi
fi

if ! have "$SANDBOX"; then
  log "building $SANDBOX from images/sandbox/Dockerfile"
  docker build -q --network none --build-arg BASE="$BASE" -t "$SANDBOX" images/sandbox >/dev/null 2>/tmp/execgate-build.log \
    || docker build -q --build-arg BASE="$BASE" -t "$SANDBOX" images/sandbox >/dev/null \
    || { cat /tmp/execgate-build.log >&2; exit 1; }
fi

if [ "$service" = 1 ] && ! have execgate/execgate:latest; then
  log "building execgate/execgate:latest from ./Dockerfile"
  ctx=$(mktemp -d /tmp/execgate-ctx.XXXXXX)
  bash scripts/service-context.sh "$ctx"
  docker build -q --network none --build-arg BASE="$NODE_BASE" -t execgate/execgate:latest "$ctx" >/dev/null
  rm -rf "$ctx"
fi
log "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep '^execgate/' | tr '\n' ' ')"
