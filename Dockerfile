# syntax=docker/dockerfile:1
#
# Images of raft-sidecar, raft-operator and raft-example-daemon, from one build of the workspace.
#
# Every runtime stage holds all three binaries in /usr/local/bin (one build, one layer shared by
# the images); the stages differ only in their entrypoint:
#
#   docker build -t raft-sidecar:0.1.0 .                                   # default (last) stage
#   docker build -t raft-operator:0.1.0 --target operator .
#   docker build -t raft-example-daemon:0.1.0 --target example-daemon .
#
# or build a single image and choose the binary with the container's `command`:
#
#   docker build -t raft-consensus:0.1.0 --target runtime .
#   # Pod spec: command: ["/usr/local/bin/raft-operator"], args: ["run"]
#
# The operator creates sidecar containers with `args: ["run"]` and the image's entrypoint, so the
# sidecar image (RAFT_OPERATOR_SIDECAR_IMAGE, the chart's sidecarImage) must be the default
# stage, whose entrypoint is raft-sidecar. The chart runs the operator with an explicit
# command (/usr/local/bin/raft-operator), so either the operator stage or the runtime stage works.
#
# Runtime: distroless cc (glibc, libgcc_s, libstdc++ for RocksDB's C++), no shell, user nonroot
# (65532:65532), the UID the operator's StatefulSets run the sidecar as (runAsUser and fsGroup).
#
# BuildKit is needed (cache mounts). A cold build compiles RocksDB: ~10 minutes on 2 cores.

# TODO: pin both base images, and the `# syntax=docker/dockerfile:1` frontend above, by digest
# (`<tag>@sha256:<digest>`, so a rebuild uses exactly the image reviewed), with the digest of the
# multi-platform index read from the registry itself, e.g.
#   docker buildx imagetools inspect rust:1-bookworm --format '{{json .Manifest.Digest}}'
# and updated deliberately (Renovate or Dependabot). Not done yet: no image registry was reachable
# where this was written, and a digest copied from elsewhere cannot be checked to be the current
# multi-platform image of these tags. Meanwhile --build-arg RUST_IMAGE=…@sha256:… pins a build.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# bindgen (librocksdb-sys) needs libclang; the C++ toolchain comes with the image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libclang-dev clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binaries are
# copied out of the cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p raft-sidecar -p raft-operator -p raft-example-daemon \
    && mkdir -p /out \
    && cp target/release/raft-sidecar target/release/raft-operator target/release/raft-example-daemon /out/

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/raft-sidecar /out/raft-operator /out/raft-example-daemon /usr/local/bin/
USER 65532:65532

FROM runtime AS operator
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/raft-operator"]
CMD ["run"]

FROM runtime AS example-daemon
ENTRYPOINT ["/usr/local/bin/raft-example-daemon"]

# Default stage (last): the sidecar.
FROM runtime AS sidecar
# peer (Raft transport), api (127.0.0.1 only in the operator's pods), admin (probes, metrics)
EXPOSE 7070 7080 7090
ENTRYPOINT ["/usr/local/bin/raft-sidecar"]
CMD ["run"]
