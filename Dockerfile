# Builds the logferry-agent and logferry-shipper binaries into one small image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins -p logferry-agent -p logferry-shipper

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/logferry-agent /src/target/release/logferry-shipper /usr/local/bin/
USER 65534:65534
