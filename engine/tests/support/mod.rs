//! Shared helpers of the engine tests.
pub mod etcd_model;
pub mod generator;
