//! The tools around the firmware, not the firmware: labelled manifests, the evaluation
//! over them (`agegate eval`), training crops made by the runtime itself (`agegate
//! crops`) and the stage benchmark (`agegate bench`). The device loop never calls them.

#[cfg(feature = "inference")]
pub mod calibrate;
pub mod degrade;
pub mod manifest;
pub mod stats;

#[cfg(feature = "inference")]
pub mod bench;
#[cfg(feature = "inference")]
pub mod crops;
#[cfg(feature = "inference")]
pub mod eval;
#[cfg(feature = "inference")]
pub mod mdb_sim;
