# Berth: the `berth` host with its built-in users and orders components.
#
#   docker build -t berth .
#   docker run -p 8080:8080 -v berth-data:/data berth
#
# The build stage compiles everything from source with the toolchain pinned
# in rust-toolchain.toml (host plus the wasm32-wasip2 guests, which build.rs
# builds and embeds). The result is one static, stripped binary; the runtime
# image holds that binary, an empty /data and an empty /tmp, and nothing else:
# no shell, no package manager, no libc to patch.

FROM docker.io/library/debian:bookworm-slim AS build

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# rustup, pinned and checked; it then installs the toolchain that
# rust-toolchain.toml names.
ARG RUSTUP_VERSION=1.28.2
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH
RUN set -eu; \
    arch="$(uname -m)"; \
    case "$arch" in \
        x86_64) sha256=20a06e644b0d9bd2fbdbfd52d42540bdde820ea7df86e92e533c073da0cdd43c ;; \
        aarch64) sha256=e3853c5a252fca15252d07cb23a1bdd9377a8c6f3efa01531109281ae47f841c ;; \
        *) echo "unsupported architecture: $arch" >&2; exit 1 ;; \
    esac; \
    curl --proto '=https' --tlsv1.2 -fsSL -o /tmp/rustup-init \
        "https://static.rust-lang.org/rustup/archive/${RUSTUP_VERSION}/${arch}-unknown-linux-gnu/rustup-init"; \
    echo "$sha256  /tmp/rustup-init" | sha256sum -c -; \
    chmod +x /tmp/rustup-init; \
    /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain none; \
    rm /tmp/rustup-init

WORKDIR /src
# The toolchain gets its own layer, reused until rust-toolchain.toml changes.
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustc --version

COPY . .

# A static binary (glibc, static-pie), so the runtime image needs no libc.
# `--target` keeps crt-static off build scripts and proc macros, which must
# stay dynamic. The cache mounts keep the crates and the target directory
# between builds, and out of the image. Cargo decides what to rebuild from
# file times, and the context's files may be older than the cached build
# (an archive, another checkout): touching them rebuilds the project's own
# crates and guests every time, and reuses only the compiled dependencies.
# No debug info: the binary is stripped anyway, and skipping it saves time.
# The `dist` profile (whole-program LTO) is the one the benchmarks measure.
RUN --mount=type=cache,id=berth-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=berth-target,target=/src/target,sharing=locked \
    set -eu; \
    find . -path ./target -prune -o -type f -exec touch {} +; \
    target="$(rustc -vV | sed -n 's/^host: //p')"; \
    RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_DIST_DEBUG=false \
        cargo build --profile dist --locked --target "$target" --bin berth; \
    mkdir -p /out/rootfs/tmp /out/data; \
    cp "target/$target/dist/berth" /out/rootfs/berth; \
    strip /out/rootfs/berth; \
    if readelf -l /out/rootfs/berth | grep -q 'program interpreter'; then \
        echo "berth is dynamically linked" >&2; exit 1; \
    fi; \
    /out/rootfs/berth --version; \
    chmod 1777 /out/rootfs/tmp; \
    chown 10001:10001 /out/data

FROM scratch
# /berth, and /tmp writable by anyone (sticky) for SQLite's temporary files.
# Copying the folder that holds tmp keeps its mode; copying tmp itself would
# not.
COPY --from=build /out/rootfs/ /
COPY --from=build --chown=10001:10001 /out/data /data
# Not root. Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["/berth"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data", "/data"]
