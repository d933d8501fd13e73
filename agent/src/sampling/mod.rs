//! Sampled mode: the governor that sizes bursts to the overhead budget, and the driver that opens and closes them.
pub mod governor;
pub mod bursts;
pub mod ceiling;
