//! The wire format: blocks, commands, responses, words; transcripts from the sources.
//! The link and the session: `session_tests.rs`.

use super::block::{checksum, Block};
use super::command::{Command, Reader};
use super::response::Response;
use super::*;

fn parse_command(bytes: &[u8]) -> Result<Command, MdbError> {
    Command::parse(&Block::new_unchecked(bytes))
}

fn parse_response(bytes: &[u8]) -> Result<Response, MdbError> {
    Response::parse(&Block::new_unchecked(bytes))
}

/// `bytes` with their checksum appended.
pub(super) fn with_chk(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.push(checksum(bytes));
    out
}

#[test]
fn checksum_is_the_sum_without_carry() {
    assert_eq!(checksum(&[]), 0);
    assert_eq!(checksum(&[0x6A]), 0x6A);
    assert_eq!(checksum(&[0xFF, 0x02]), 0x01);
}

/// A DCM5 ID scanner's DRAVP answer as a VMC adapter logged it, checksum included
/// (blog.csdn.net/hbstart/article/details/140190380): the only transcript read whose
/// checksum could be checked, and it checks.
#[test]
fn dcm5_dravp_answer_transcript_parses_with_its_checksum() {
    let bytes = [0xFF, 0x05, 0x06, 0x00, 0x44, 0x52, 0x41, 0x56, 0x50, 0x87];
    assert_eq!(parse_response(&bytes), Ok(Response::Dravp { feature: 0 }));
    assert_eq!(
        Response::Dravp { feature: 0 }.emit().unwrap().as_slice(),
        bytes
    );
}

/// The same log's DRAVP command reads `6F FF 05 06 12 44 52 41 56 60`: the last byte is
/// neither the tag's "P" (50h) nor the checksum (08h), so the line is unreadable as
/// written. With "P" and its checksum it is DRAVP, age 18 — and so is the payment
/// terminal's example (17h FFh 05h 06h 12h "DRAVP", to the cashless address).
#[test]
fn dcm5_dravp_command_transcript_unreadable_last_byte_60h() {
    let logged = [0x6F, 0xFF, 0x05, 0x06, 0x12, 0x44, 0x52, 0x41, 0x56, 0x60];
    assert!(matches!(
        parse_command(&with_chk(&logged)),
        Err(MdbError::BadValue {
            field: "dravp_tag",
            value: 0x60
        })
    ));
    // Nor does 60h check as the checksum of the nine bytes before it.
    assert_eq!(
        parse_command(&logged),
        Err(MdbError::BadChecksum {
            received: 0x60,
            computed: 0xB8
        })
    );
    let mut fixed = logged;
    fixed[9] = b'P';
    let block = with_chk(&fixed);
    assert_eq!(block.last(), Some(&0x08));
    assert_eq!(parse_command(&block), Ok(Command::Dravp { age: 18 }));
}

/// The log says its second example, age byte 35h, asks for 43; 35h is 53. The byte is
/// the age in binary (12h = 18 in both sources).
#[test]
fn dcm5_age_35h_is_53_not_the_logged_43() {
    let block = Command::Dravp { age: 53 }.emit().unwrap();
    assert_eq!(block.get(4), Some(&0x35));
}

/// The DCM5 log's three DRAVS answers (its leading 68h is the adapter's address tag, and
/// it shows no checksum): no age found 00h 00h, too young 0Eh 10h, old enough 1Eh 10h.
/// agegate sends exactly these. The payment terminal's example approves with 9Fh 10h;
/// the two agree only in bit 4 (10h) of the first byte.
#[test]
fn approved_feature_bytes_follow_dcm5_not_senvend_9fh() {
    for (result, f1, f2) in [
        (VerificationResult::CouldNotVerify, 0x00, 0x00),
        (VerificationResult::NotApproved, 0x0E, 0x10),
        (VerificationResult::Approved, 0x1E, 0x10),
    ] {
        assert_eq!(result.feature_bytes(), (f1, f2));
        let logged = [0xFF, 0x06, 0x07, f1, f2, 0x44, 0x52, 0x41, 0x56, 0x53];
        assert_eq!(
            parse_response(&with_chk(&logged)),
            Ok(Response::Dravs {
                feature1: f1,
                feature2: f2
            })
        );
        assert_eq!(
            result == VerificationResult::Approved,
            f1 & 0x10 != 0,
            "{result:?}"
        );
    }
    let senvend = with_chk(&[0xFF, 0x06, 0x07, 0x9F, 0x10, b'D', b'R', b'A', b'V', b'S']);
    assert!(parse_response(&senvend).is_ok());
    assert_ne!(VerificationResult::Approved.feature_bytes().0, 0x9F);
}

/// The SETUP answer's layout (01h, level, non-response time, options) is inferred from
/// the fields a VMC's source keeps for the AVD; the standard's table was not read.
#[test]
fn setup_response_layout_is_inferred_not_read() {
    let setup = Response::SetupData {
        level: 1,
        non_response_s: 5,
        options: 0,
    };
    assert_eq!(
        setup.emit().unwrap().as_slice(),
        [0x01, 0x01, 0x05, 0x00, 0x07]
    );
}

fn every_command() -> Vec<Command> {
    let mut rest = heapless::Vec::new();
    rest.extend_from_slice(&[16, 2, 1]).unwrap();
    vec![
        Command::Reset,
        Command::Poll,
        Command::Setup { vmc_level: 3, rest },
        Command::Setup {
            vmc_level: 1,
            rest: heapless::Vec::new(),
        },
        Command::Reader(Reader::Disable),
        Command::Reader(Reader::Enable),
        Command::Reader(Reader::Cancel),
        Command::RequestId { vmc_id: None },
        Command::RequestId {
            vmc_id: Some(*b"BEC000000000001    BE_ZENT5\x10\x10"),
        },
        Command::Dravp { age: 0 },
        Command::Dravp { age: 18 },
        Command::Dravp { age: 0xFF },
        Command::Dravs { y4: 0 },
    ]
}

fn every_response() -> Vec<Response> {
    vec![
        Response::JustReset,
        Response::SetupData {
            level: 1,
            non_response_s: 30,
            options: 0,
        },
        Response::PeripheralId {
            manufacturer: *b"SEN",
            serial: *b"123-456-789 ",
            model: *b"UX700       ",
            software_version: [0x01, 0x20],
        },
        Response::Dravp { feature: 0 },
        Response::Dravs {
            feature1: 0x1E,
            feature2: 0x10,
        },
    ]
}

#[test]
fn round_trip_every_command_and_response() {
    for command in every_command() {
        let bytes = command.emit().unwrap();
        let block = Block::new_unchecked(&bytes[..]);
        assert_eq!(block.check_checksum(), Ok(()));
        assert_eq!(block.first() & 0xF8, 0x68, "{command:?}");
        assert_eq!(Command::parse(&block), Ok(command.clone()));
    }
    for response in every_response() {
        let bytes = response.emit().unwrap();
        assert_eq!(parse_response(&bytes), Ok(response), "{bytes:02X?}");
    }
}

#[test]
fn known_command_bytes() {
    assert_eq!(Command::Reset.emit().unwrap().as_slice(), [0x68, 0x68]);
    assert_eq!(Command::Poll.emit().unwrap().as_slice(), [0x6A, 0x6A]);
    assert_eq!(
        Command::Dravs { y4: 0 }.emit().unwrap().as_slice(),
        with_chk(&[0x6F, 0xFF, 0x06, 0x06, 0x00, b'D', b'R', b'A', b'V', b'S'])
    );
    let id = Command::RequestId { vmc_id: None }.emit().unwrap();
    assert_eq!(id.as_slice(), [0x6F, 0x00, 0x6F]);
}

#[test]
fn parse_rejects_and_names_what_is_wrong() {
    assert_eq!(
        parse_command(&[0x6A, 0x6B]),
        Err(MdbError::BadChecksum {
            received: 0x6B,
            computed: 0x6A
        })
    );
    assert_eq!(
        parse_command(&[0x6A]),
        Err(MdbError::Truncated { need: 2, have: 1 })
    );
    assert_eq!(parse_command(&[0u8; 37]), Err(MdbError::Oversize(37)));
    assert_eq!(
        parse_command(&with_chk(&[0x12])),
        Err(MdbError::NotOurAddress(0x12))
    );
    assert_eq!(
        parse_command(&with_chk(&[0x6B])),
        Err(MdbError::UnknownCommand {
            command: 0x6B,
            sub: None
        })
    );
    assert_eq!(
        parse_command(&with_chk(&[0x6F, 0x01])),
        Err(MdbError::UnknownCommand {
            command: 0x6F,
            sub: Some(0x01)
        })
    );
    // CFGVP (diagnostic 07h), which one VMC's source sends after DRAVP: not implemented.
    let cfgvp = with_chk(&[0x6F, 0xFF, 0x07, 0x06, 0x00, b'C', b'F', b'G', b'V', b'P']);
    assert_eq!(
        parse_command(&cfgvp),
        Err(MdbError::UnknownCommand {
            command: 0x6F,
            sub: Some(0x07)
        })
    );
    assert_eq!(
        parse_command(&with_chk(&[0x6C, 0x03])),
        Err(MdbError::UnknownCommand {
            command: 0x6C,
            sub: Some(0x03)
        })
    );
    assert_eq!(
        parse_command(&with_chk(&[0x6A, 0x00])),
        Err(MdbError::BadLength {
            what: "POLL",
            expected: 1,
            len: 2
        })
    );
    let short_id = with_chk(&[0x6F, 0x00, b'B', b'E', b'C']);
    assert!(matches!(
        parse_command(&short_id),
        Err(MdbError::BadLength {
            what: "REQUEST ID",
            ..
        })
    ));
    let bad_len = with_chk(&[0x6F, 0xFF, 0x05, 0x07, 0x12, b'D', b'R', b'A', b'V', b'P']);
    assert_eq!(
        parse_command(&bad_len),
        Err(MdbError::BadValue {
            field: "diagnostic_length",
            value: 0x07
        })
    );
    let dravs_tag = with_chk(&[0x6F, 0xFF, 0x06, 0x06, 0x00, b'D', b'R', b'A', b'V', b'P']);
    assert_eq!(
        parse_command(&dravs_tag),
        Err(MdbError::BadValue {
            field: "dravs_tag",
            value: b'P'
        })
    );
    assert_eq!(
        parse_response(&with_chk(&[0x42])),
        Err(MdbError::UnknownResponse(0x42))
    );
    let bad_bcd = with_chk(&[&[0x09][..], b"SEN", &[b' '; 24], &[0x1A, 0x00]].concat());
    assert_eq!(
        parse_response(&bad_bcd),
        Err(MdbError::BadValue {
            field: "software_version",
            value: 0x1A
        })
    );
}

#[test]
fn block_accessors_never_panic_on_short_buffers() {
    for len in 0..4 {
        let bytes = [0x6F, 0xFF, 0x05];
        let block = Block::new_unchecked(&bytes[..len.min(3)]);
        let _ = (
            block.payload(),
            block.checksum(),
            block.first(),
            block.byte(9),
        );
        let _ = Command::parse(&block);
        let _ = Response::parse(&block);
    }
}

#[test]
fn words_in_the_stream_encoding() {
    for word in [
        Word::data(0x00),
        Word::with_mode(0x68),
        Word::with_mode(0xFF),
    ] {
        assert_eq!(Word::from_stream(word.to_stream()), Ok(word));
    }
    assert_eq!(Word::with_mode(0x6A).to_stream(), [0x01, 0x6A]);
    assert_eq!(Word::from_stream([2, 0x6A]), Err(MdbError::BadModeByte(2)));
}

#[test]
fn identity_is_space_filled_ascii_and_bcd() {
    let id = Identity::new("AGG", "42", "agegate", [0x01, 0x20]).unwrap();
    let settings = AvdSettings {
        identity: id,
        ..AvdSettings::default()
    };
    let mut avd = super::avd::Avd::new(settings);
    let handled = avd.handle(
        Command::RequestId { vmc_id: None },
        &mut Counters::default(),
    );
    let super::avd::Reply::Data(response, _) = handled.reply else {
        panic!("no data: {handled:?}")
    };
    let bytes = response.emit().unwrap();
    assert_eq!(&bytes[..4], b"\x09AGG");
    assert_eq!(&bytes[4..16], b"42          ");
    assert_eq!(&bytes[16..28], b"agegate     ");
    assert_eq!(&bytes[28..30], [0x01, 0x20]);
    assert_eq!(
        Identity::new("AGGX", "", "", [0, 0]),
        Err(MdbError::BadLength {
            what: "manufacturer",
            expected: 3,
            len: 4
        })
    );
    assert_eq!(
        Identity::new("AGG", "né", "", [0, 0]),
        Err(MdbError::BadValue {
            field: "serial",
            value: 0xC3
        })
    );
    assert_eq!(
        Identity::new("AGG", "", "", [0x0A, 0]),
        Err(MdbError::BadValue {
            field: "software_version",
            value: 0x0A
        })
    );
}
