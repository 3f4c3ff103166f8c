//! agegate: offline age gating for edge boards.
//!
//! The data walks one way, each stage in its own module:
//! photo/capture -> [`detect`] -> [`align`] -> [`estimate`] -> [`decide`] (-> actuate).
//! [`pipeline`] strings the stages together for one image; [`eval`] and [`crops`] run it
//! over labelled manifests. [`engine`] is the tract wrapper the model stages share.

pub mod align;
pub mod config;
pub mod crops;
pub mod decide;
pub mod detect;
pub mod engine;
pub mod estimate;
pub mod eval;
pub mod manifest;
pub mod photo;
pub mod pipeline;
pub mod serial;
pub mod session;
pub mod warp;
