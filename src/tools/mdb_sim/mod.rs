//! `agegate mdb-sim`: a vending machine controller (VMC) simulated on the MDB bus against
//! the real daemon, its real pipeline and models, on recorded scenes. The daemon runs as
//! on the device, with the AVD's own thread on an in-memory bus; the simulator drives the
//! standard's initialization and verification sessions with random but legal timing and
//! checks what the machine would rely on: every DRAVS answered, an approval only after an
//! ALLOW decision of that session, none for a child, an empty scene or an attack, aborts
//! honoured, JUST RESET after every RESET. One JSON line per session, then a summary.

mod scenes;
mod session;
mod vmc;

pub use scenes::{parse_spec, Scene, SceneKind, SceneSource};
pub use session::{run_sessions, Outcome, SimSettings, Summary};
pub use vmc::{BusFigures, Reply, ReplyTimes, Vmc};

use std::collections::HashMap;
use std::sync::mpsc::Receiver;

use crate::daemon::Event;
use crate::domain::Decision;

/// What the daemon's event lines told the simulator: the sessions it opened, in order,
/// their decisions, and what each VMC session was answered.
#[derive(Debug, Default)]
pub struct Observed {
    pub verified: Vec<u16>,
    pub decisions: HashMap<u16, Decision>,
    pub answers: HashMap<u16, &'static str>,
}

impl Observed {
    /// Takes in every event that has come.
    pub fn drain(&mut self, events: &Receiver<Event>) {
        while let Ok(event) = events.try_recv() {
            match event {
                Event::MdbRx {
                    request: crate::daemon::events::VmcRequestFields::Verify { id, .. },
                    ..
                } => {
                    self.verified.push(id);
                    self.decisions.remove(&id);
                    self.answers.remove(&id);
                }
                Event::Decision { id, decision, .. } => {
                    self.decisions.insert(id, decision);
                }
                Event::MdbTx { id, answer, .. } => {
                    self.answers.insert(id, answer);
                }
                _ => {}
            }
        }
    }
}
