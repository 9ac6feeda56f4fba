# jobforge-server: the HTTP API, the console and the workers in one binary, on a distroless
# base (no shell, no package manager), as a non-root user. Build with the locked dependencies:
#
#   docker build -t jobforge-server .          (or: buildah bud -t jobforge-server .)
#
# Configuration is by environment (every flag has one; `jobforge-server --help` lists them):
# DATABASE_URL selects PostgreSQL, REDIS_URL Redis, both Redis delivery beside a PostgreSQL
# state; neither runs the in-memory engine. See docs/deploy.md.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The sources (.dockerignore keeps out target/, .git/ and node_modules/).
COPY . .
# rustls throughout: no OpenSSL to build against. The features of the server image:
# PostgreSQL, Redis, the HTTP API and console, mimalloc, OpenTelemetry (OTEL_* variables).
RUN cargo build --release --locked --bin jobforge-server \
        --features http,postgres,redis,mimalloc,otel \
    && install -D -m 0755 target/release/jobforge-server /out/jobforge-server

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="jobforge-server" \
      org.opencontainers.image.description="jobforge's HTTP API, operator console and workers" \
      org.opencontainers.image.source="https://github.com/jobforge/jobforge" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      dev.jobforge.env.backends="DATABASE_URL (PostgreSQL), REDIS_URL (Redis); neither: in-memory" \
      dev.jobforge.env.roles="JOBFORGE_NO_WORKERS=true (API only), JOBFORGE_WORKERS_ONLY=true (workers only)" \
      dev.jobforge.env.auth="JOBFORGE_API_KEY_HASHES or JOBFORGE_API_KEYS_FILE, JOBFORGE_JWT_* (required on a public address)" \
      dev.jobforge.env.otel="OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ... (spans per attempt and job metrics over OTLP/HTTP)"
COPY --from=build /out/jobforge-server /usr/local/bin/jobforge-server
# Listen on every interface inside the container; the server refuses a public address
# without authentication, so configure keys (or JWT) as docs/AUTHENTICATION.md says.
ENV JOBFORGE_BIND=0.0.0.0:8080 \
    JOBFORGE_CONCURRENCY=64 \
    JOBFORGE_QUEUES=default \
    RUST_LOG=jobforge=info,tower_http=warn
EXPOSE 8080
# 65532 is the distroless base's `nonroot` user (numeric, so any host resolves it).
USER 65532:65532
# No shell or curl in the image: the binary asks its own /health (exit 0 on a 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/jobforge-server", "health"]
ENTRYPOINT ["/usr/local/bin/jobforge-server"]
