//! agegate: offline age gating for edge boards.
//!
//! The data walks one way, each stage in its own module:
//! [`capture`] (or [`photo`]) -> [`detect`] -> [`align`] -> [`estimate`] -> [`session`] /
//! [`decide`] -> [`actuate`] and [`serial`]. [`pipeline`] strings the model stages together
//! for one image; [`eval`] and [`crops`] run it over labelled manifests; [`daemon`] runs
//! the whole device loop. [`engine`] is the tract wrapper the model stages share;
//! [`config`] reads board files.

pub mod actuate;
pub mod align;
pub mod bench;
pub mod capture;
pub mod config;
pub mod crops;
pub mod daemon;
pub mod decide;
pub mod detect;
pub mod engine;
pub mod estimate;
pub mod eval;
pub mod jpeg;
pub mod manifest;
#[cfg(feature = "ort")]
pub mod ort_engine;
pub mod photo;
pub mod pipeline;
pub mod serial;
pub mod session;
pub mod warp;
