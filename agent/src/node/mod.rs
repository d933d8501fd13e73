//! Node mode: every Go process on a host. Discovery of processes and their
//! binaries; the layer above every other, which it uses.
pub mod agent;
pub mod discover;
pub mod filter;
pub mod http;
pub mod ps;
