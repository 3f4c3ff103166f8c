//! The daemon's lines in: the host's serial line, the vending machine's MDB thread and
//! telemetry's policy mailbox, each read into the core as inputs.

use super::core::Input;
use super::Daemon;

/// A partial frame from the host after this much silence (wall clock) is dropped: a frame
/// takes 3 ms at 115200 baud.
const LINE_IDLE_MS: u64 = 100;

impl Daemon {
    /// The VMC's requests into the core; a thread that is gone is a fault that ends the run.
    pub(super) fn service_vmc(&mut self) {
        let Some(port) = &self.vmc else { return };
        let mut requests: heapless::Vec<crate::mdb::VmcRequest, 8> = heapless::Vec::new();
        let mut ended = false;
        // At most 8 a turn, the rest the next: a VMC sends one every few hundred ms.
        while !requests.is_full() {
            match port.requests.try_recv() {
                Ok(request) => {
                    let _ = requests.push(request);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        for request in requests {
            self.feed(Input::Vmc(request));
        }
        if ended {
            self.vmc = None;
            self.feed(Input::VmcLinkEnded("the MDB thread stopped".into()));
        }
    }

    pub(super) fn answer_vmc(&mut self, answer: crate::mdb::VmcAnswer) {
        let sent = self
            .vmc
            .as_ref()
            .is_some_and(|port| port.answers.send(answer).is_ok());
        if !sent {
            self.followups
                .push(Input::VmcLinkEnded("the MDB thread stopped".into()));
        }
    }

    /// A policy left in the mailbox goes to the core, which applies it between decisions.
    pub(super) fn take_offered_policy(&mut self) {
        let Some(mailbox) = &self.policies else {
            return;
        };
        let offered = mailbox
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(policy) = offered {
            self.feed(Input::PolicyOffered(policy));
        }
    }

    /// Reads the host line into the core; the line-idle timer runs on the wall clock.
    pub(super) fn service_link(&mut self) {
        let (Some(link), true) = (self.parts.link.as_mut(), self.core.link_up()) else {
            return;
        };
        let wall = self.parts.wall.now_ms();
        let mut inbox = std::mem::take(&mut self.inbox);
        let mut lost = None;
        let mut got_bytes = false;
        loop {
            match link.read_available(&mut self.rx) {
                Ok(0) => break,
                Ok(n) => {
                    got_bytes = true;
                    self.decoder
                        .feed(&self.rx[..n.min(self.rx.len())], |m| inbox.push(m));
                }
                Err(e) => {
                    lost = Some(e.to_string());
                    break;
                }
            }
        }
        if got_bytes {
            self.last_rx_wall_ms = wall;
        } else if self.decoder.pending() > 0
            && wall.saturating_sub(self.last_rx_wall_ms) > LINE_IDLE_MS
        {
            self.decoder.line_idle(|m| inbox.push(m));
        }
        for message in inbox.drain(..) {
            self.feed(Input::Host(message));
        }
        self.inbox = inbox;
        if let Some(e) = lost {
            self.feed(Input::LinkLost(e));
        }
    }
}
