# The execgate service image. Multi-stage, runs as a non-root user.
#   docker build -t execgate/execgate .                       (with a registry: node:20-bookworm-slim)
#   npm run images -- --service                                (without one: local base, prebuilt node_modules)
# Run it as a sidecar with the Docker socket; see README "Running as a sidecar" for why the socket is
# root-equivalent and how to narrow it (socket proxy, rootless Docker, userns-remap).
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS build
WORKDIR /app
COPY . .
# A context that already holds production node_modules and dist/ (prepared on a host whose containers
# cannot reach the registry: scripts/build-images.sh --service) is used as is; otherwise build here.
RUN if [ ! -f dist/main.js ]; then \
      npm ci --no-audit --no-fund && npx tsc -p tsconfig.build.json && npm prune --omit=dev --no-audit --no-fund; \
    fi

FROM ${BASE}
WORKDIR /app
ENV NODE_ENV=production EXECGATE_CONFIG=/etc/execgate/config.yaml
# src/node-flags.ts (SERVICE_ENV): one glibc malloc arena for every thread, a smaller RSS.
ENV MALLOC_ARENA_MAX=1
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The store (SQLite, staged inputs, artifacts): mount a volume here; the owner carries over to a new volume.
RUN mkdir -p /var/lib/execgate && chown 10001:10001 /var/lib/execgate
VOLUME /var/lib/execgate
# Not root. To reach the Docker socket, add the socket's group at run time:
#   docker run --group-add "$(stat -c %g /var/run/docker.sock)" ...
USER 10001:10001
EXPOSE 8787
HEALTHCHECK --interval=10s --timeout=3s CMD ["node", "-e", "fetch('http://127.0.0.1:8787/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "--max-semi-space-size=2", "--liftoff-only", "--expose-gc", "/app/dist/main.js"]
CMD ["serve"]
