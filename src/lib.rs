//! agegate: offline age gating for edge boards.
//!
//! The data walks one way, each stage in its own module: [`capture`] (or [`photo`], both
//! through [`jpeg`]) -> [`detect`] -> [`align`] -> [`estimate`] -> [`session`] /
//! [`decide`] -> [`actuate`] and [`serial`]. [`domain`] holds the vocabulary they share
//! (verdicts, REFER reasons, age bands). [`pipeline`] strings the model stages together
//! for one image; [`daemon`] runs the whole device loop: a decision core without I/O and
//! the shell that feeds it; [`digest`] hashes what a board pins, [`bundle`] packs, checks
//! and installs signed model bundles. [`engine`] runs the ONNX graphs; [`config`] reads
//! board files, whose sections each subsystem validates itself ([`settings`]). [`mdb`] is
//! the vending machine bus (MDB/ICP) as an Age Verification Device, pure logic so far. [`tools`]
//! are what is built around the firmware (eval, crops, bench); [`telemetry`] tells an MQTT
//! broker what the unit does.
//!
//! Without the cargo feature `inference` (default on) there is no engine, no model stage
//! and no tool: the crate is the firmware's logic and parsers (what the fuzz targets
//! build).

pub mod actuate;
pub mod align;
pub mod bundle;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod detect;
pub mod digest;
pub mod domain;
pub mod engine;
pub mod estimate;
pub mod input_file;
pub mod jpeg;
pub mod liveness;
pub mod mdb;
mod numeric;
pub mod photo;
#[cfg(feature = "inference")]
pub mod pipeline;
pub mod quality;
pub mod serial;
pub mod session;
pub mod settings;
pub mod telemetry;
pub mod tools;
mod warp;
