//! Faults: what closes the gate, what holds it closed, what ends the run.

use super::types::CameraDown;
use super::{
    Action, Backoff, Core, Exit, Faults, Now, Origin, Out, State, FAULT_REPORT_MS, HEALTHY_FRAMES,
};
use crate::actuate::Indication;
use crate::daemon::events::Event;
use crate::domain::ReferReason;
use crate::serial::{DeviceState, FaultCode, Message};

impl Core {
    pub(super) fn camera_lost(&mut self, now: Now, detail: &str, out: &mut Out) {
        tracing::error!("camera fault: {detail}");
        // A fault before the camera was healthy again continues the backoff where the
        // last one stopped.
        let delay = if self.good_frames_in_row >= HEALTHY_FRAMES {
            self.settings.reopen_backoff_ms
        } else {
            self.camera_delay_ms
        };
        self.good_frames_in_row = 0;
        self.bad_frames_in_row = 0;
        self.fault(now, FaultCode::CAMERA, detail, out);
        self.hold(|f| {
            f.camera = Some(CameraDown {
                backoff: Backoff::new(now.wall_ms, delay),
                reopened: false,
            })
        });
    }

    pub(super) fn link_lost(&mut self, now: Now, detail: &str, out: &mut Out) {
        tracing::error!("{detail}");
        self.stats.faults += 1;
        out.push(Action::Indicate(Indication::Fault));
        out.push(Action::Emit(Event::Fault {
            t_ms: now.frame_ms,
            code: FaultCode::SERIAL.0,
            detail: detail.to_string(),
            reported: false,
        }));
        // Nobody can be told about an open REQUEST: it is dropped, and the host hears FAULT
        // serial when the line is back.
        match &self.state {
            // The vending machine is on another line: it hears "could not verify".
            State::Deciding(w) if w.origin == Origin::Vmc => {
                let id = w.id;
                self.answer_refer(now, Origin::Vmc, id, ReferReason::Fault, out);
            }
            State::Deciding(w) => tracing::warn!(id = w.id, "request dropped with the serial line"),
            _ => {}
        }
        out.push(Action::ResetDecoder);
        let first = self.settings.reopen_backoff_ms;
        self.hold(|f| f.link = Some(Backoff::new(now.wall_ms, first)));
    }

    /// Every fault: relay off and fault LEDs, FAULT to the host (at most one per code per
    /// [`FAULT_REPORT_MS`] of wall time: a host's limit, which a replayed recording's clock,
    /// racing ahead while nothing is read, would not keep), the open REQUEST answered REFER. The caller decides whether
    /// the gate then holds ([`Self::hold`]) or the run ends ([`Self::exit`]).
    pub(super) fn fault(&mut self, now: Now, code: FaultCode, detail: &str, out: &mut Out) {
        self.report(now, code, detail, false, out);
    }

    /// [`Self::fault`]; `last_word` faults (the run ends) are always sent.
    pub(super) fn report(
        &mut self,
        now: Now,
        code: FaultCode,
        detail: &str,
        last_word: bool,
        out: &mut Out,
    ) {
        self.stats.faults += 1;
        tracing::error!(code = code.0, "fault: {detail}");
        out.push(Action::Indicate(Indication::Fault));
        let recent = !last_word
            && self
                .fault_sent
                .get(&code.0)
                .is_some_and(|&sent| now.wall_ms.saturating_sub(sent) < FAULT_REPORT_MS);
        out.push(Action::Emit(Event::Fault {
            t_ms: now.frame_ms,
            code: code.0,
            detail: detail.to_string(),
            reported: !recent,
        }));
        if !recent {
            // A full map (more codes than exist) only means this code is not limited.
            let _ = self.fault_sent.insert(code.0, now.wall_ms);
            out.push(Action::Send(Message::fault(code, detail)));
        }
        if let State::Deciding(w) = &self.state {
            let (origin, id) = (w.origin, w.id);
            self.answer_refer(now, origin, id, ReferReason::Fault, out);
        }
    }

    /// A fault that ends the run.
    pub(super) fn fatal(&mut self, now: Now, code: FaultCode, message: String, out: &mut Out) {
        self.report(now, code, &message, true, out);
        self.exit(Exit::Fault { code, message }, out);
    }

    pub(super) fn exit(&mut self, exit: Exit, out: &mut Out) {
        self.state = State::Stopping;
        out.push(Action::Exit(exit));
    }

    pub(super) fn faults_mut(&mut self) -> Option<&mut Faults> {
        match &mut self.state {
            State::Faulted(f) => Some(f),
            _ => None,
        }
    }

    /// Holds the gate in [`State::Faulted`] with `change` applied to its causes (the
    /// state becomes faulted if it was not).
    pub(super) fn hold(&mut self, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults_mut().copied().unwrap_or_default();
        change(&mut faults);
        if let State::Faulted(f) = &mut self.state {
            *f = faults;
        } else if !faults.is_clear() {
            self.state = State::Faulted(faults);
        }
    }

    /// Back to ready once no cause holds the gate.
    pub(super) fn clear_if_healthy(&mut self, out: &mut Out) {
        if matches!(&self.state, State::Faulted(f) if f.is_clear()) {
            self.state = State::Ready;
            out.push(Action::Indicate(Indication::Idle));
        }
    }

    pub(super) fn device_state(&self) -> DeviceState {
        match &self.state {
            State::Starting => DeviceState::Starting,
            State::Ready | State::CoolingDown(_) => DeviceState::Ready,
            State::Deciding(_) => DeviceState::Deciding,
            State::Faulted(_) | State::Stopping => DeviceState::Faulted,
        }
    }
}
