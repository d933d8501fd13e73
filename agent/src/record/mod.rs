//! `gcprobe record`'s file: everything a report needs, written as the
//! session runs, readable anywhere later (issue 6, in progress).
//!
//! This module so far holds the framing (see [`frame`]); the frame kinds and
//! their payloads come with `gcprobe record` and `gcprobe report FILE`.
pub mod frame;
