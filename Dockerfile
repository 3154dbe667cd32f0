# syntax=docker/dockerfile:1
#
# Quiver container image. Build and run (the same commands as README.md, "Build and deploy";
# deploy/validate.py checks that they stay equal):
#
#   docker build -t quiver .
#   docker run -d --name quiver -p 9201:9201 -v quiver-data:/data quiver
#
# Stage 1 builds with the toolchain the project is developed and tested with. There is no
# rust-toolchain.toml, so the version is pinned here: rustc 1.95 (Cargo.toml's
# rust-version = "1.94" is the minimum; edition 2024). Pin the images by digest for
# reproducible production builds.
ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The slim Rust image has gcc and libc headers, which ring and zstd-sys need; TLS is rustls,
# so no OpenSSL. .dockerignore keeps target/, data and the deploy kit out of the context.
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit); the binary is
# copied out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --bin quiver \
    && install -D -m 0755 target/release/quiver /out/quiver

# Stage 2: a minimal Debian of the same release (same glibc as the build stage).
FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: S3 over HTTPS verifies the store with the system roots
# (rustls-native-certs). Nothing else is installed: the health check below uses bash,
# which the base already has, instead of adding curl or wget.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 quiver \
    && useradd --system --uid 10001 --gid quiver --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin quiver \
    && mkdir -p /data \
    && chown quiver:quiver /data
COPY --from=build /out/quiver /usr/local/bin/quiver

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
# WAL, format VERSION, instance id, and blocks unless --storage-url points to a bucket.
# A named volume starts out owned by the quiver user; a bind-mounted host directory must be
# writable by uid 10001.
VOLUME ["/data"]
EXPOSE 9201
# Quiver stops on SIGTERM: it finishes in-flight requests within --shutdown-grace-period
# (30 s by default), syncs every WAL and exits 0. Give `docker stop` more than that:
# `docker stop -t 60` (compose: stop_grace_period; Kubernetes: terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM

# /-/healthy answers 200 as soon as the listener is bound (readiness is /-/ready). The base
# has neither curl nor wget, and quiver has no client subcommand, so bash's /dev/tcp sends
# one plain HTTP/1.1 request and the status line must say 200. It assumes the default
# listen port and plain HTTP: with --tls-cert-file or another --listen port, override
# HEALTHCHECK (or use the orchestrator's probes, as deploy/kubernetes does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9201 && printf 'GET /-/healthy HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r status <&3 && [[ $status == *' 200 '* ]]"]

# Other subcommands work too: `docker run --rm -v quiver-data:/data quiver sql --data-dir /data "SELECT 1"`.
ENTRYPOINT ["/usr/local/bin/quiver"]
CMD ["serve", "--data-dir", "/data", "--listen", "0.0.0.0:9201"]
