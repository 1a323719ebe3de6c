# syntax=docker/dockerfile:1
#
# The imagepush image: one binary for both roles. The Helm chart's Deployment runs
# `imagepush controller`; the worker Jobs the controller creates run `imagepush push`.
#
#   docker build -t imagepush:0.1.0 .
#
# The tag must match what the chart deploys (image.repository:image.tag, default
# imagepush:<appVersion>), and the worker image must be pullable in every namespace
# that has ImagePush resources.

# The toolchain the project is built and tested with (the code needs Rust >= 1.88).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
# Cache mounts keep the registry and the build directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin imagepush \
    && install -D -m 0755 target/release/imagepush /out/imagepush

# glibc, libgcc and CA certificates, no shell, no package manager; user 65532 ("nonroot").
# Bookworm on both sides: the binary links the builder's glibc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/imagepush /usr/local/bin/imagepush
USER 65532:65532
ENTRYPOINT ["imagepush"]
CMD ["--help"]
