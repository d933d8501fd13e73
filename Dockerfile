# gcprobe's image: `gcprobe node` for the DaemonSet in deploy/.
#
# Built through the project's own tooling: `cargo xtask build` installs the
# nightly toolchain (rust-src, for the BPF object's -Z build-std=core) and
# bpf-linker, exactly as on a developer's machine, then builds the agent
# with the BPF object embedded. The final image holds that one binary on a
# distroless base (glibc and libgcc, no shell, no package manager).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo xtask build && cp target/release/gcprobe /gcprobe

FROM gcr.io/distroless/cc-debian12
COPY --from=build /gcprobe /usr/local/bin/gcprobe
# Root inside the container with a handful of capabilities (see the
# DaemonSet): no ambient capabilities for other users in Kubernetes.
USER 0
EXPOSE 9466
ENTRYPOINT ["/usr/local/bin/gcprobe"]
CMD ["node", "--listen=0.0.0.0:9466", "--quiet"]
