# The escrow-sync image: the `escrow-sync` binary alone on a distroless base, run as a non-root
# user. Build it from the repository root:
#
#   docker build -t escrow-sync:0.1.0 .
#   docker run --rm -v "$PWD/escrow.toml:/etc/escrow-sync/escrow.toml:ro" escrow-sync:0.1.0 plan
#
# How to schedule it (EventBridge Scheduler -> ECS, cron) is in docs/operations.md.
# tests/packaging.rs lints this file; `docker build --check .` runs BuildKit's own checks.

# The toolchain of the build. The lockfile's AWS crates need Rust 1.94.1 or later.
ARG RUST_VERSION=1.95
# The builder's Debian must be the runtime's: the binary links the builder's glibc, and the
# distroless cc image of Debian 12 (bookworm) carries the same glibc (2.36).
ARG DEBIAN_RELEASE=bookworm

# --- builder: compiles the one binary (package escrow-sync-cli), nothing else of the workspace.
# aws-lc-sys (rustls' crypto) needs only a C compiler here: it ships pre-generated bindings and
# assembly for Linux x86_64 and aarch64 and builds with the `cc` crate, no cmake, clang or Go;
# the rust image's gcc and libc6-dev are enough.
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Every workspace member's manifest must be present for cargo to load the workspace;
# .dockerignore keeps target/ and .git out of the context.
COPY . .
# --locked: exactly the versions in Cargo.lock. The caches keep the registry and the target
# directory between builds (BuildKit); the binary is copied out of the cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p escrow-sync-cli --bin escrow-sync \
    && install -D -m 0755 target/release/escrow-sync /out/escrow-sync

# --- runtime: glibc, libgcc, CA certificates and tzdata, no shell, no package manager; the
# `nonroot` variant runs as uid 65532 with the home directory /home/nonroot.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="escrow-sync" \
      org.opencontainers.image.description="Keeps an offsite, append-only copy of an AWS account in a second account" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/escrow-sync /usr/local/bin/escrow-sync
# The config is mounted here (or point ESCROW_SYNC_CONFIG / --config elsewhere). Credentials
# come from the standard AWS chain: in ECS, the task role.
ENV ESCROW_SYNC_CONFIG=/etc/escrow-sync/escrow.toml
# Writable for DynamoDB dead-letter files; the run manifest spools in /tmp (TMPDIR).
WORKDIR /home/nonroot
USER nonroot:nonroot
# SIGTERM (docker stop, an ECS task stop) drains copies in flight for --drain-timeout, writes
# the manifest, releases the leases and exits 143: give the container more time than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/escrow-sync"]
CMD ["run"]
