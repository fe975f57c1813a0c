# syntax=docker/dockerfile:1
# absa-api: the HTTP API (`serve`), and `migrate`, which the Helm chart's hook Job runs.
# Build from the repository root (BuildKit):
#   docker build -f docker/api.Dockerfile -t absa-api:0.1.0 .
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Every workspace member's folder (the workspace only resolves with all manifests) and
# the migrations the binaries embed; nothing else of the build context.
COPY Cargo.toml Cargo.lock ./
# Compile-time query checks read .sqlx (config.toml: SQLX_OFFLINE); no database at build time.
COPY .cargo .cargo
COPY .sqlx .sqlx
COPY jobs jobs
COPY domain domain
COPY onnx onnx
COPY platform platform
COPY store store
COPY api api
COPY scheduler scheduler
COPY memory memory
COPY trainer trainer
COPY trainer-worker trainer-worker
COPY scorer scorer
COPY scorer-worker scorer-worker
COPY tests tests
COPY cli cli
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p absa-api --bin absa-api \
 && install -D -m 0755 target/release/absa-api /out/absa-api

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 absa \
 && useradd --system --uid 10001 --gid absa --home-dir /tmp --no-create-home --shell /usr/sbin/nologin absa
COPY --from=build /out/absa-api /usr/local/bin/absa-api
ENV HOME=/tmp
USER 10001:10001
ENV ABSA_HTTP__BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["absa-api"]
CMD ["serve"]
