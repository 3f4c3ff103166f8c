//! The Age Verification Device's state machine: what it answers to each [`Command`] and
//! what it asks the rest of the firmware to do. No bus timing here (that is the link's),
//! no I/O.
//!
//! The session (docs/mdb.md "Session"): after a RESET the AVD answers the first POLL with
//! JUST RESET. DRAVP switches verification on with the required age (or off, with 00h or
//! FFh); DRAVS starts a verification, whose result goes out on a POLL. Data the AVD sends
//! on a POLL stays due until the VMC ACKs it, so a NAK, a lost answer or a RET never loses
//! a result (MDB §2 "Block Format": silence is a NAK).
//!
//! Fail closed: nothing but a verification result handed in through
//! [`Avd::verification_result`] makes an approval, and only for the verification running;
//! every abort (RESET, DRAVP off or with another age, READER disable or cancel, a new
//! DRAVS) drops the running one.

use super::command::{Command, Reader};
use super::response::{is_ascii_field, non_bcd, Response};
use super::{bump, Counters, MdbError};

/// How the AVD answers DRAVP; the standard allows both (docs/mdb.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DravpAnswer {
    /// The DRAVP answer instead of an ACK, at once.
    Immediate,
    /// ACK, then the DRAVP answer on the next POLL (what payment terminals that act as
    /// an AVD do, and VMCs must support).
    #[default]
    NextPoll,
}

/// What a verification found; handed in by the firmware, sent to the VMC on a POLL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationResult {
    Approved,
    NotApproved,
    /// No answer could be had (no face, a fault, a timeout): never an approval.
    CouldNotVerify,
}

impl VerificationResult {
    /// The DRAVS answer's two feature bytes. Taken from a DCM5 ID scanner's transcript
    /// (docs/mdb.md "Sources disagree": a payment terminal's example approves with 9Fh
    /// 10h); in both, bit 4 (10h) of the first byte is set only when approved.
    pub(crate) fn feature_bytes(self) -> (u8, u8) {
        match self {
            Self::Approved => (0x1E, 0x10),
            Self::NotApproved => (0x0E, 0x10),
            Self::CouldNotVerify => (0x00, 0x00),
        }
    }
}

/// The EXPANSION REQUEST ID answer's fields, as the standard formats them: ASCII, space
/// filled on the right, and the software version as two BCD bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    manufacturer: [u8; 3],
    serial: [u8; 12],
    model: [u8; 12],
    software_version: [u8; 2],
}

fn field<const N: usize>(name: &'static str, text: &str) -> Result<[u8; N], MdbError> {
    let bytes = text.as_bytes();
    if bytes.len() > N {
        return Err(MdbError::BadLength {
            what: name,
            expected: N,
            len: bytes.len(),
        });
    }
    if let Some(value) = is_ascii_field(bytes) {
        return Err(MdbError::BadValue { field: name, value });
    }
    let mut out = [b' '; N];
    out.iter_mut().zip(bytes).for_each(|(o, b)| *o = *b);
    Ok(out)
}

impl Identity {
    /// `software_version`: BCD, most significant byte first (`[0x01, 0x20]` is 1.20).
    pub fn new(
        manufacturer: &str,
        serial: &str,
        model: &str,
        software_version: [u8; 2],
    ) -> Result<Self, MdbError> {
        if let Some(value) = non_bcd(&software_version) {
            return Err(MdbError::BadValue {
                field: "software_version",
                value,
            });
        }
        Ok(Self {
            manufacturer: field("manufacturer", manufacturer)?,
            serial: field("serial", serial)?,
            model: field("model", model)?,
            software_version,
        })
    }

    fn response(&self) -> Response {
        Response::PeripheralId {
            manufacturer: self.manufacturer,
            serial: self.serial,
            model: self.model,
            software_version: self.software_version,
        }
    }
}

/// The AVD's settings (the daemon integration will read them from the board file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvdSettings {
    /// Feature level announced in the SETUP answer.
    pub level: u8,
    /// Seconds the VMC should keep retrying before it declares the AVD missing (SETUP).
    pub non_response_s: u8,
    /// Miscellaneous option bits announced in the SETUP answer.
    pub options: u8,
    pub identity: Identity,
    pub dravp_answer: DravpAnswer,
    /// The lowest required age the AVD verifies: a DRAVP below it is raised to it.
    pub min_request_age: u8,
}

impl Default for AvdSettings {
    fn default() -> Self {
        Self {
            level: 1,
            non_response_s: 5,
            options: 0,
            identity: Identity {
                manufacturer: *b"AGG",
                serial: *b"000000000000",
                model: *b"agegate     ",
                software_version: [0x00, 0x01],
            },
            dravp_answer: DravpAnswer::NextPoll,
            min_request_age: 18,
        }
    }
}

/// What the firmware is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Verify the customer in front of the machine is at least `required_age`.
    /// `replaced`: a verification was running and is dropped for this one.
    StartVerification { required_age: u8, replaced: bool },
    /// Stop the running verification; its result, if any comes, is dropped.
    AbortVerification { cause: AbortCause },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    /// RESET, or a bus reset.
    Reset,
    /// DRAVP with age 00h (off) or FFh (supported, will be switched on).
    AgeOff,
    /// DRAVP with another required age than the running verification's.
    AgeChanged,
    /// READER disable or cancel.
    Reader,
}

/// Something to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The VMC asked for `requested`; the AVD verifies `floor` instead.
    AgeRaised { requested: u8, floor: u8 },
}

/// What the AVD answers a command with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Ack,
    Data(Response, Due),
}

/// Which piece of due POLL data a data block carries, cleared when the VMC ACKs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing to clear: an answer to the command itself (SETUP, REQUEST ID, ...).
    Nothing,
    JustReset,
    Dravp,
    Result,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    Idle,
    Running { age: u8 },
    Done(VerificationResult),
}

/// What handling one command gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handled {
    pub(crate) reply: Reply,
    pub(crate) event: Option<Event>,
    pub(crate) note: Option<Note>,
}

#[derive(Debug, Clone)]
pub(crate) struct Avd {
    settings: AvdSettings,
    just_reset: bool,
    /// The effective required age; `None`: verification off.
    age: Option<u8>,
    dravp_due: bool,
    verification: Verification,
}

impl Avd {
    pub(crate) fn new(settings: AvdSettings) -> Self {
        Self {
            settings,
            just_reset: true,
            age: None,
            dravp_due: false,
            verification: Verification::Idle,
        }
    }

    pub(crate) fn required_age(&self) -> Option<u8> {
        self.age
    }

    /// RESET and bus reset: everything back to power-on, JUST RESET due.
    pub(crate) fn reset(&mut self) -> Option<Event> {
        let running = matches!(self.verification, Verification::Running { .. });
        *self = Self::new(self.settings);
        running.then_some(Event::AbortVerification {
            cause: AbortCause::Reset,
        })
    }

    fn abort(&mut self, cause: AbortCause) -> Option<Event> {
        let running = matches!(self.verification, Verification::Running { .. });
        self.verification = Verification::Idle;
        running.then_some(Event::AbortVerification { cause })
    }

    pub(crate) fn handle(&mut self, command: Command, counters: &mut Counters) -> Handled {
        let mut handled = Handled {
            reply: Reply::Ack,
            event: None,
            note: None,
        };
        match command {
            Command::Reset => handled.event = self.reset(),
            Command::Setup { .. } => {
                let setup = Response::SetupData {
                    level: self.settings.level,
                    non_response_s: self.settings.non_response_s,
                    options: self.settings.options,
                };
                handled.reply = Reply::Data(setup, Due::Nothing);
            }
            Command::Poll => handled.reply = self.poll(),
            Command::Reader(Reader::Enable) => {}
            Command::Reader(Reader::Disable | Reader::Cancel) => {
                handled.event = self.abort(AbortCause::Reader);
            }
            Command::RequestId { .. } => {
                handled.reply = Reply::Data(self.settings.identity.response(), Due::Nothing);
            }
            Command::Dravp { age } => {
                let (event, note) = self.dravp(age, counters);
                handled.event = event;
                handled.note = note;
                handled.reply = match self.settings.dravp_answer {
                    DravpAnswer::Immediate => {
                        Reply::Data(Response::Dravp { feature: 0 }, Due::Nothing)
                    }
                    DravpAnswer::NextPoll => {
                        self.dravp_due = true;
                        Reply::Ack
                    }
                };
            }
            Command::Dravs { .. } => match self.age {
                None => bump(&mut counters.dravs_while_off),
                Some(age) => {
                    let replaced = matches!(self.verification, Verification::Running { .. });
                    self.verification = Verification::Running { age };
                    handled.event = Some(Event::StartVerification {
                        required_age: age,
                        replaced,
                    });
                }
            },
        }
        handled
    }

    fn dravp(&mut self, age: u8, counters: &mut Counters) -> (Option<Event>, Option<Note>) {
        if age == 0x00 || age == 0xFF {
            self.age = None;
            return (self.abort(AbortCause::AgeOff), None);
        }
        let floor = self.settings.min_request_age;
        let (effective, note) = if age < floor {
            bump(&mut counters.ages_raised);
            (
                floor,
                Some(Note::AgeRaised {
                    requested: age,
                    floor,
                }),
            )
        } else {
            (age, None)
        };
        self.age = Some(effective);
        let event = match self.verification {
            Verification::Running { age } if age != effective => self.abort(AbortCause::AgeChanged),
            _ => None,
        };
        (event, note)
    }

    /// The POLL answer: the oldest due data, or ACK. Nothing is cleared until the VMC ACKs
    /// it ([`Avd::acknowledged`]).
    fn poll(&self) -> Reply {
        if self.just_reset {
            Reply::Data(Response::JustReset, Due::JustReset)
        } else if self.dravp_due {
            Reply::Data(Response::Dravp { feature: 0 }, Due::Dravp)
        } else if let Verification::Done(result) = self.verification {
            let (feature1, feature2) = result.feature_bytes();
            Reply::Data(Response::Dravs { feature1, feature2 }, Due::Result)
        } else {
            Reply::Ack
        }
    }

    /// The VMC ACKed a data block carrying `due`.
    pub(crate) fn acknowledged(&mut self, due: Due) {
        match due {
            Due::Nothing => {}
            Due::JustReset => self.just_reset = false,
            Due::Dravp => self.dravp_due = false,
            Due::Result => {
                if matches!(self.verification, Verification::Done(_)) {
                    self.verification = Verification::Idle;
                }
            }
        }
    }

    /// Hands in the running verification's result. False (and counted) when none runs:
    /// it was aborted or never started, and the result must not reach the VMC.
    pub(crate) fn verification_result(
        &mut self,
        result: VerificationResult,
        counters: &mut Counters,
    ) -> bool {
        if let Verification::Running { .. } = self.verification {
            self.verification = Verification::Done(result);
            true
        } else {
            bump(&mut counters.stray_results);
            false
        }
    }
}
