# syntax=docker/dockerfile:1
# absa-scorer: scoring workers (`work`) on ONNX Runtime, loaded at run time from
# ORT_DYLIB_PATH (the `ort` crate's load-dynamic feature), taken from the PyPI
# onnxruntime wheel exactly as scripts/native.sh does. x86-64 (or whatever platform the
# wheel is downloaded for).
# Build from the repository root (BuildKit):
#   docker build -f docker/scorer.Dockerfile -t absa-scorer:0.1.0 .
ARG RUST_IMAGE=rust:1.95-bookworm
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# ort 2.0.0-rc.15 targets ONNX Runtime 1.31 (same pin as scripts/native.sh).
ARG ORT_VERSION=1.31.1

FROM ${RUST_IMAGE} AS build
WORKDIR /src
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
    cargo build --release --locked -p absa-scorer-worker --bin absa-scorer \
 && install -D -m 0755 target/release/absa-scorer /out/absa-scorer

# ONNX Runtime's shared library out of the onnxruntime wheel (no Python at run time).
FROM ${PYTHON_IMAGE} AS ort
ARG ORT_VERSION
RUN python -m pip download --no-cache-dir -q --no-deps --only-binary=:all: -d /wheel "onnxruntime==${ORT_VERSION}" \
 && mkdir /unpacked && cd /unpacked && python -m zipfile -e /wheel/*.whl . \
 && install -D -m 0644 onnxruntime/capi/libonnxruntime.so.${ORT_VERSION} /opt/onnxruntime/libonnxruntime.so.${ORT_VERSION}

FROM ${RUNTIME_IMAGE}
ARG ORT_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 absa \
 && useradd --system --uid 10001 --gid absa --home-dir /tmp --no-create-home --shell /usr/sbin/nologin absa
COPY --from=ort /opt/onnxruntime /opt/onnxruntime
COPY --from=build /out/absa-scorer /usr/local/bin/absa-scorer
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.${ORT_VERSION}
ENV HOME=/tmp
USER 10001:10001
ENTRYPOINT ["absa-scorer"]
CMD ["work"]
