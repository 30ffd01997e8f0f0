# Builds the logferry-agent and logferry-shipper binaries into one small image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins -p logferry-agent -p logferry-shipper

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/logferry-agent /src/target/release/logferry-shipper /usr/local/bin/
# Directories the compose stack mounts volumes on: a fresh named volume takes the owner of
# its mount point, so the unprivileged user can write the certificates, audit log and spool.
RUN mkdir -p /ca /shipper-certs /agent-certs /keys /etc/logferry/certs /etc/logferry/keys /var/lib/logferry/spool \
    && chown -R 65534:65534 /ca /shipper-certs /agent-certs /keys /var/lib/logferry
USER 65534:65534
