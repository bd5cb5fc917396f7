#!/usr/bin/env bash
# Prepares a Docker build context for the service image (./Dockerfile) in DIR: this checkout's sources, a
# fresh dist/, and production node_modules. Containers here may not reach the npm registry, so the context
# carries node_modules built on this host (the Dockerfile uses them as they are); the native better-sqlite3
# addon is copied from this checkout, built for this same node binary (execgate/node:20-bookworm carries it).
# Also makes sure the base image execgate/node:20-bookworm exists.
#   scripts/service-context.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
ctx=${1:?usage: $0 DIR}
BASE=execgate/base:bookworm
NODE_BASE=execgate/node:20-bookworm
log() { printf '[service-context] %s\n' "$*" >&2; }

if ! docker image inspect "$NODE_BASE" >/dev/null 2>&1; then
  docker image inspect "$BASE" >/dev/null 2>&1 || { log "$BASE is missing: run npm run images"; exit 1; }
  log "building $NODE_BASE ($BASE + $(node --version))"
  nctx=$(mktemp -d); cp "$(command -v node)" "$nctx/node"
  printf 'FROM %s\nCOPY node /usr/local/bin/node\nCMD ["node"]\n' "$BASE" > "$nctx/Dockerfile"
  docker build -q --network none -t "$NODE_BASE" "$nctx" >/dev/null; rm -rf "$nctx"
fi

mkdir -p "$ctx"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$ctx"/ 2>/dev/null \
  || tar -c --exclude=node_modules --exclude=.git . | tar -C "$ctx" -x
rm -rf "$ctx/dist" "$ctx/.dockerignore"
npx tsc -p tsconfig.build.json --outDir "$ctx/dist"
(cd "$ctx" && npm ci --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error >/dev/null)
cp -a node_modules/better-sqlite3/build "$ctx/node_modules/better-sqlite3/build"
log "context ready in $ctx"
