//! Numeric kernels both PromQL engines call: plain functions over values, unit-tested beside
//! them.

pub(crate) mod histogram_stats;
