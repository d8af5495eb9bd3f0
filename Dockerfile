# The chatwire server (tokio), with the embedded store in a volume.
#
#   docker build -t chatwire .
#   (umask 077 && openssl rand -hex 32 > chatwire-jwt-secret)   # once; keep it
#   docker run -d --name chatwire -p 127.0.0.1:3000:3000 -v chatwire-data:/var/lib/chatwire \
#     -e JWT_SECRET="$(cat chatwire-jwt-secret)" chatwire
#
# The same JWT_SECRET at every start keeps tokens valid across restarts
# (docs/OPERATING.md, "The container image").
#
# The runtime stage takes /usr/local/bin/chatwire from the `build` stage. A
# build context named `build` replaces that stage (BuildKit and buildah), so
# the runtime stage can be built around a binary built elsewhere (for Debian
# bookworm's glibc) without the rust image:
#   podman build --target runtime --build-context build=<dir with usr/local/bin/chatwire> .
# scripts/container-test.sh does that with a debug build, on a base image of
# its own (RUNTIME_BASE), and runs the image with podman.
ARG RUNTIME_BASE=debian:bookworm-slim

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin chatwire \
    && install -m 0755 target/release/chatwire /usr/local/bin/chatwire

FROM ${RUNTIME_BASE} AS runtime
# No packages: rusqlite's SQLite is compiled in, the MongoDB driver's TLS
# roots are compiled in (webpki-roots), and the health check is the binary's
# own `--healthcheck` (a GET /ready over loopback), so no curl.
RUN groupadd --gid 10001 chatwire \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/chatwire \
        --no-create-home --shell /usr/sbin/nologin chatwire \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/chatwire
COPY --from=build /usr/local/bin/chatwire /usr/local/bin/chatwire
ENV DATABASE_URL=/var/lib/chatwire \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /var/lib/chatwire
# A named volume starts as a copy of this directory: owned by chatwire. A
# bind-mounted host directory must be writable by uid 10001.
VOLUME ["/var/lib/chatwire"]
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/chatwire", "--healthcheck"]
# chatwire handles SIGTERM itself (it runs as PID 1): it stops accepting,
# finishes the store writes under way and closes every session, all within
# SHUTDOWN_TIMEOUT_MS (8 s by default, inside the 10 s `docker stop` waits
# before SIGKILL), then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/chatwire"]
