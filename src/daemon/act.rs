//! Carrying out the core's actions: on the gate, the host line, the event log, the camera
//! and the service manager. A failure here is an input for the core, handled next.

use super::core::{Action, Input, Now};
use super::{events, Daemon, Event};
use crate::actuate::Indication;
use crate::domain::Decision;
use crate::serial::Message;

impl Daemon {
    pub(super) fn execute(&mut self, now: Now, action: Action) {
        match action {
            Action::Indicate(indication) => {
                // Once the event output has failed the core is about to fault: nothing
                // opens in between.
                let indication = match indication {
                    Indication::Decision(Decision::Allow) if self.output_failed => {
                        Indication::Fault
                    }
                    other => other,
                };
                if let Err(e) = self.parts.gate.show(indication, now.frame_ms) {
                    self.followups.push(Input::GpioError(e.to_string()));
                }
                self.report_pins(now.frame_ms);
            }
            Action::Send(message) => self.send(now, message),
            Action::AnswerVmc(answer) => self.answer_vmc(answer),
            Action::Emit(event) => {
                if matches!(event, Event::PolicyApplied { .. }) {
                    // Telemetry acks the policy once it is counted applied.
                    if let Some(mailbox) = &self.policies {
                        mailbox
                            .applied
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                self.emit(event)
            }
            Action::ReopenCamera => self.followups.push(match self.parts.source.reopen() {
                Ok(()) => Input::CameraReopened,
                Err(e) => Input::CameraStillLost(e.to_string()),
            }),
            Action::ReopenLink => {
                if let Some(link) = self.parts.link.as_mut() {
                    self.followups.push(match link.reopen() {
                        Ok(()) => Input::LinkRestored,
                        Err(e) => Input::LinkStillLost(e.to_string()),
                    });
                }
            }
            Action::ResetDecoder => self.decoder.reset(),
            Action::CheckModels => {
                if let Err(message) = self.parts.models.check(now.frame_ms) {
                    self.followups.push(Input::ModelFileChanged(message));
                }
            }
            // A backoff: wall time (core/mod.rs, "Two clocks").
            Action::Wait { ms } => self.parts.wall.sleep_ms(ms),
            Action::Ready => self.parts.watchdog.ready(),
            Action::Exit(exit) => {
                self.exit.get_or_insert(exit);
            }
        }
    }

    /// Encodes and sends one message; it is reported whether or not a line is attached.
    fn send(&mut self, now: Now, message: Message) {
        let bytes = match message.to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => return tracing::error!(?message, "cannot encode: {e}"),
        };
        self.emit(Event::SerialTx {
            t_ms: now.frame_ms,
            message: (&message).into(),
            hex: events::hex(&bytes),
        });
        if !self.core.link_up() {
            return;
        }
        if let Some(link) = self.parts.link.as_mut() {
            if let Err(e) = link.write_frame(&bytes) {
                self.followups.push(Input::LinkLost(e.to_string()));
            }
        }
    }

    /// Hands an event to the sink; the first failure becomes a fault, later events are
    /// dropped (they could not be printed either).
    fn emit(&mut self, event: Event) {
        if self.output_failed {
            return;
        }
        if let Err(e) = (self.events)(event) {
            self.output_failed = true;
            self.followups.push(Input::OutputClosed(e.to_string()));
        }
    }

    pub(super) fn report_pins(&mut self, now: u64) {
        let changes: heapless::Vec<_, 8> = self.parts.gate.drain_changes().take(8).collect();
        for change in changes {
            tracing::info!(line = ?change.line, active = change.active, "gpio");
            self.emit(Event::Pin { t_ms: now, change });
        }
    }
}
