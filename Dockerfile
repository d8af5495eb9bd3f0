# The chatwire server. Untested here (no docker on the dev machines): a
# starting point. Build: docker build -t chatwire .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin chatwire

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/chatwire /usr/local/bin/chatwire
ENV HOST=0.0.0.0 PORT=3000
EXPOSE 3000
USER nobody
ENTRYPOINT ["/usr/local/bin/chatwire"]
