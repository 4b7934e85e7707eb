# Multi-stage build: compile in the Rust image, ship a small Debian runtime that runs vipd as a
# non-root user with file capabilities. Base images are pinned by version (pin by digest,
# `image:tag@sha256:...`, for builds that must be byte-for-byte reproducible).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin vipd --bin vipd-bench \
 && strip target/release/vipd target/release/vipd-bench

FROM debian:12.12-slim
COPY --from=build /src/target/release/vipd /usr/local/bin/vipd
COPY --from=build /src/target/release/vipd-bench /usr/local/bin/vipd-bench
# File capabilities are set here, in the final stage, so no COPY can drop them. They are
# permitted-only (+p, not +ep): the kernel grants what the container's bounding set allows, and
# vipd raises its permitted set to effective at start (src/capabilities.rs). So the image starts
# under Docker's default set (CAP_NET_BIND_SERVICE: ports below 1024), and with
# `--cap-add NET_ADMIN` it can also `--manage-addresses`, still as uid 10001. (Docker gives a
# non-root user no ambient capabilities: without file capabilities `--cap-add` alone does nothing.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
 && setcap cap_net_bind_service,cap_net_admin+p /usr/local/bin/vipd \
 && apt-get purge -y --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin vipd
USER 10001:10001
# The admin server (/metrics, /readyz, the status page on /). It listens on 127.0.0.1 by default;
# publish it with `--admin-listen 0.0.0.0:61421` (VIPD_ADMIN_LISTEN) and a firewall, or reach it
# from the agent itself under `--network host`. Service ports and VIPs are the cluster's, so they
# cannot be listed here: vipd serves an agent only with `docker run --network host`.
EXPOSE 61421/tcp
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/vipd", "status", "--ready", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/vipd"]
CMD ["run", "--apps", "/etc/vipd/apps.json"]
