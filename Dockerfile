# Multi-stage build: compile with the Rust toolchain, run on a slim Debian base.
#   docker build -t sipguard .
#   docker run --rm -v $PWD/sipguard.toml:/etc/sipguard/sipguard.toml:ro \
#     -v sipguard-state:/var/lib/sipguard \
#     -p 5060:5060/udp -p 5060:5060/tcp -p 127.0.0.1:9060:9060 sipguard
# In a container, listen on 0.0.0.0 (SIP) with server.advertise set to the address peers
# reach (0.0.0.0 alone is refused), and set [admin] listen = "0.0.0.0:9060" with a token: a
# non-loopback admin address without a token is refused. /var/lib/sipguard holds the secret;
# keep it on a volume so branches and dialog proofs survive a new container.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && printf 'fn main() {}\n' > benches/core.rs && cp benches/core.rs benches/screen.rs \
    && cargo build --release --locked && rm -rf src benches
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin sipguard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* && useradd --system --no-create-home sipguard \
    && install -d -m 0700 -o sipguard /var/lib/sipguard
COPY --from=build /src/target/release/sipguard /usr/local/bin/sipguard
USER sipguard
VOLUME /var/lib/sipguard
EXPOSE 5060/udp 5060/tcp 9060/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sipguard"]
CMD ["--config", "/etc/sipguard/sipguard.toml"]
