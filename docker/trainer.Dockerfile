# syntax=docker/dockerfile:1
# absa-trainer: training workers (`work`) on CUDA libtorch through tch. libtorch comes
# from the PyPI torch wheel (whose Linux x86-64 build is the CUDA 13 one) with the NVIDIA
# wheels it depends on, the way scripts/native.sh assembles the CPU libtorch, but with
# the CUDA libraries kept; LIBTORCH points at it at build time, and the binary gets an
# rpath to $LIBTORCH/lib (trainer/build.rs), so the same path exists in the runtime image.
# x86-64 only. Build from the repository root (BuildKit):
#   docker build -f docker/trainer.Dockerfile -t absa-trainer:0.1.0 .
ARG RUST_IMAGE=rust:1.95-bookworm
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# A CUDA 13 runtime for the driver-facing setup (NVIDIA_* variables, compat libraries).
# libtorch brings its own CUDA libraries from the wheels, so a -base- image works too.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
# tch 0.24 expects exactly this libtorch (same pin as scripts/native.sh).
ARG TORCH_VERSION=2.11.0

# 1. libtorch out of the torch wheel: /opt/libtorch/{include,lib} and the NVIDIA wheels'
#    libraries in /opt/nvidia, where torch's RUNPATH ($ORIGIN/../../nvidia/...) finds them.
FROM ${PYTHON_IMAGE} AS torch
ARG TORCH_VERSION
RUN python -m pip install --no-cache-dir -q --target /opt/py "torch==${TORCH_VERSION}" \
 && mkdir -p /opt/libtorch \
 && mv /opt/py/torch/include /opt/libtorch/include \
 && mv /opt/py/torch/lib /opt/libtorch/lib \
 && rm -f /opt/libtorch/lib/libtorch_python.so /opt/libtorch/lib/libshm.so /opt/libtorch/lib/*.a \
 && if [ -d /opt/py/torch.libs ]; then cp -a /opt/py/torch.libs/. /opt/libtorch/lib/; fi \
 && mv /opt/py/nvidia /opt/nvidia \
 && echo "${TORCH_VERSION}" > /opt/libtorch/build-version \
 && { echo /opt/libtorch/lib; find /opt/nvidia -type d -name lib; } > /opt/libtorch/ld.so.conf \
 && rm -rf /opt/py

# 2. The trainer, linked against CUDA libtorch (trainer/build.rs keeps libtorch_cuda.so).
FROM ${RUST_IMAGE} AS build
COPY --from=torch /opt/libtorch /opt/libtorch
COPY --from=torch /opt/nvidia /opt/nvidia
RUN cp /opt/libtorch/ld.so.conf /etc/ld.so.conf.d/libtorch.conf && ldconfig
ENV LIBTORCH=/opt/libtorch
# c10d's Gloo backend is in libtorch; its headers come from Debian (csrc/distributed.cpp).
RUN apt-get update && apt-get install -y --no-install-recommends libgloo-dev && rm -rf /var/lib/apt/lists/*
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
    ABSA_CUDA_INCLUDE="$(find /opt/nvidia -type d -name include | paste -sd:)" \
    cargo build --release --locked -p absa-trainer-worker --bin absa-trainer \
 && install -D -m 0755 target/release/absa-trainer /out/absa-trainer

# 3. Runtime: the CUDA image, libtorch and the NVIDIA libraries at the build's paths.
FROM ${CUDA_IMAGE}
COPY --from=torch /opt/libtorch/lib /opt/libtorch/lib
COPY --from=torch /opt/libtorch/ld.so.conf /etc/ld.so.conf.d/00-libtorch.conf
COPY --from=torch /opt/nvidia /opt/nvidia
# tcmalloc: the trainer preloads it where present (trainer/src/allocator.rs).
RUN apt-get update && apt-get install -y --no-install-recommends libtcmalloc-minimal4t64 && rm -rf /var/lib/apt/lists/*
RUN ldconfig \
 && groupadd --system --gid 10001 absa \
 && useradd --system --uid 10001 --gid absa --home-dir /tmp --no-create-home --shell /usr/sbin/nologin absa
COPY --from=build /out/absa-trainer /usr/local/bin/absa-trainer
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
ENV HOME=/tmp
USER 10001:10001
ENTRYPOINT ["absa-trainer"]
CMD ["work"]
