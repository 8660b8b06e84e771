# logferry's container image (manifests/base/daemonset.yaml runs it):
#
#   docker build -t logferry:0.1.0 .
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

# --- build ------------------------------------------------------------------------
# The builder's Debian release is the final image's (bookworm), so the binary never
# needs a newer glibc than the one it runs with.
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the build reads: BuildKit then sends only these paths of the context, not
# target/ or bench-data/. tests/ and benches/ because Cargo.toml declares targets there.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY benches ./benches
# The release profile keeps line tables (debug = 1) for profiling; the image keeps the
# symbols only: enough for a readable backtrace, at a fraction of the size.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/logferry /out/logferry

# --- run --------------------------------------------------------------------------
# glibc and nothing to configure. No shell is needed at run time (the entrypoint is
# exec form); the CA bundle is the builder's, for TLS to the AWS endpoints.
FROM debian:bookworm-slim
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/logferry /usr/local/bin/logferry
LABEL org.opencontainers.image.title="logferry" \
      org.opencontainers.image.description="Node-level Kubernetes log shipper" \
      org.opencontainers.image.licenses="MIT"
# The DaemonSet runs it as uid 0 with every capability dropped (the container logs are
# root's and not world-readable); see the comment in manifests/base/daemonset.yaml.
# /metrics, /healthz, /readyz
EXPOSE 9180
ENTRYPOINT ["/usr/local/bin/logferry"]
CMD ["run", "--config", "/etc/logferry/logferry.toml"]
