//! Events in: decoding ring-buffer records, the feed (the one way into the aggregator, recorded as ops) and the aggregator itself.
pub mod events;
pub mod feed;
pub mod ops;
pub mod aggregate;
pub mod cycles;
pub mod pauses;
pub mod history;
