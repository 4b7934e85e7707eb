# Multi-stage build: compile in the Rust image, ship a small Debian runtime that runs as non-root.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin vipd --bin vipd-bench \
 && strip target/release/vipd target/release/vipd-bench

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin vipd
COPY --from=build /src/target/release/vipd /usr/local/bin/vipd
COPY --from=build /src/target/release/vipd-bench /usr/local/bin/vipd-bench
USER 10001:10001
# Service ports below 1024 need CAP_NET_BIND_SERVICE; --manage-addresses needs CAP_NET_ADMIN
# (grant with `docker run --cap-add NET_ADMIN`; the process then still runs as uid 10001).
ENTRYPOINT ["/usr/local/bin/vipd"]
CMD ["run", "--apps", "/etc/vipd/apps.json"]
