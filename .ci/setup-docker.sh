#!/usr/bin/env bash
# Installs and starts what the integration tests need: a Docker engine (dockerd from Debian's
# docker.io package) and gVisor (runsc), registered with the --network=none argument it needs here.
# Idempotent: does nothing that is already done. Must run as root.
set -euo pipefail

log() { printf '[setup-docker] %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v runsc >/dev/null 2>&1 || need_pkgs+=(runsc)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
[ -x /bin/busybox ] && /bin/busybox --help 2>&1 | grep -q 'static' || dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

mkdir -p /etc/docker
want='{"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none"]}}}'
restart=0
if [ ! -f /etc/docker/daemon.json ] || ! grep -q runsc /etc/docker/daemon.json; then
  printf '%s\n' "$want" > /etc/docker/daemon.json
  restart=1
fi

if docker info >/dev/null 2>&1 && [ "$restart" = 1 ]; then
  log "restarting dockerd to register runsc"
  pkill -x dockerd || true
  for _ in $(seq 1 50); do pgrep -x dockerd >/dev/null || break; sleep 0.2; done
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  # containerd is started by dockerd itself when not running.
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
fi
docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; tail -30 /var/log/dockerd.log >&2; exit 1; }
log "docker $(docker version --format '{{.Server.Version}}') up; runtimes: $(docker info --format '{{range $k,$v := .Runtimes}}{{$k}} {{end}}')"
