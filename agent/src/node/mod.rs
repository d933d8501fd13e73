//! Node mode: every Go process on a host. Discovery of processes and their
//! binaries; the layer above every other, which it uses.
pub mod discover;
pub mod ps;
