//! What the numbers mean: static facts about PCs and types, the loop around an append, culprits and their fixes, whose code a frame is, rules of thumb.
pub mod appendloop;
pub mod facts;
pub mod culprits;
pub mod diagnose;
pub mod loops;
pub mod owner;
pub mod rows;
