//! Board files, in two stages: [`RawBoard`] is the TOML as written (unknown keys refused),
//! [`Board`] the validated result with every path resolved and every number checked, so a
//! bad board file fails at start with the key named.
//!
//! Relative paths in a board file are relative to the file's own folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::{CameraFormat, CaptureSettings, SourceSettings};
use crate::decide::{Policy, PolicyError};
use crate::detect::DetectorSettings;
use crate::engine::{Engine, RuntimeSettings};
use crate::session::{OtherFaces, SessionSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("board file {path}: cannot read it: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("board file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("board file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoard {
    pub name: String,
    pub models: RawModels,
    pub policy: RawPolicy,
    #[serde(default)]
    pub detector: RawDetector,
    pub capture: Option<RawCapture>,
    pub serial: Option<RawSerial>,
    pub gpio: Option<RawGpio>,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub runtime: RawRuntime,
}

/// `[runtime]`: the inference engine and its threads.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// "tract" (default) or "onnxruntime" (a build with feature `ort` or `tensorrt`).
    pub engine: Option<String>,
    /// Threads one inference may use (default 1).
    pub threads: Option<usize>,
}

/// `[capture]`: where `agegate run` gets frames.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    /// "camera", "image-dir", "mjpeg-file", "yuyv-file" or "y4m-file".
    pub source: String,
    pub device: Option<PathBuf>,
    pub path: Option<PathBuf>,
    pub format: Option<CameraFormat>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    #[serde(rename = "loop")]
    pub looped: Option<bool>,
    /// Largest frame decoded, in pixels (default 7680 x 4320).
    pub max_pixels: Option<u64>,
}

/// `[serial]`: the line to the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    /// "port" or "none".
    pub kind: String,
    pub path: Option<PathBuf>,
    pub baud: Option<u32>,
}

/// `[gpio]`: relay and LEDs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpio {
    /// "rppal", "cdev" or "log".
    pub backend: String,
    pub relay: String,
    #[serde(default)]
    pub relay_active_low: bool,
    pub relay_pulse_ms: Option<u64>,
    pub led_allow: Option<String>,
    pub led_deny: Option<String>,
    pub led_refer: Option<String>,
    #[serde(default)]
    pub leds_active_low: bool,
}

/// `[session]`: the decision window (defaults in `SessionSettings::default`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    /// "request" (the host sends REQUEST) or "face" (a face in view starts a decision).
    pub trigger: Option<String>,
    pub min_frames: Option<usize>,
    pub max_frames: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub iou_threshold: Option<f32>,
    pub lost_face_ms: Option<u64>,
    /// "refer" (default) or "ignore": another face in view.
    pub other_faces: Option<OtherFaces>,
    pub other_face_min_px: Option<f32>,
}

/// `[daemon]`: the frame loop's timings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub heartbeat_ms: Option<u64>,
    pub model_check_ms: Option<u64>,
    pub reopen_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub max_bad_frames: Option<u32>,
    pub max_model_errors: Option<u32>,
    pub model_hash_ms: Option<u64>,
}

/// What starts a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A REQUEST from the host (kiosk, vending machine).
    Request,
    /// A face in view (a door without a host); DECISIONs go out unsolicited.
    Face,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SerialSettings {
    None,
    Port { path: PathBuf, baud: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpioBackend {
    Rppal,
    Cdev,
    Log,
}

/// A GPIO line: a BCM number for `rppal`, a line name for `cdev` and `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSpec {
    Bcm(u8),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpioSettings {
    pub backend: GpioBackend,
    pub relay: PinSpec,
    pub relay_active_low: bool,
    pub relay_pulse_ms: u64,
    /// allow, deny, refer
    pub leds: [Option<PinSpec>; 3],
    pub leds_active_low: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    pub trigger: Trigger,
    pub session: SessionSettings,
    pub heartbeat_ms: u64,
    /// Size and modification time of the model files are compared this often.
    pub model_check_ms: u64,
    /// The model files' SHA-256 is recomputed this often (and whenever size or mtime
    /// change).
    pub model_hash_ms: u64,
    pub reopen_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Undecodable frames in a row that count as a camera fault.
    pub max_bad_frames: u32,
    /// Inference errors in a row after which the daemon exits for a restart.
    pub max_model_errors: u32,
    /// The lowest legal age a REQUEST may ask for (`[policy] min_request_age`, default
    /// the board's legal age): a host may raise the age, never lower it.
    pub min_request_age: f32,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            trigger: Trigger::Request,
            session: SessionSettings::default(),
            heartbeat_ms: 1_000,
            model_check_ms: 2_000,
            model_hash_ms: 60_000,
            reopen_backoff_ms: 250,
            max_backoff_ms: 8_000,
            max_bad_frames: 30,
            max_model_errors: 5,
            min_request_age: 18.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    pub detector: PathBuf,
    pub age: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub legal_age: f32,
    pub challenge_age: f32,
    pub k_sigma: f32,
    /// The lowest legal age a host's REQUEST may ask for (default: `legal_age`).
    pub min_request_age: Option<f32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub score_threshold: Option<f32>,
    pub merge_iou: Option<f32>,
    pub canvas_scales: Option<Vec<f32>>,
}

/// A validated board.
#[derive(Debug, Clone)]
pub struct Board {
    pub name: String,
    pub path: PathBuf,
    pub detector_model: PathBuf,
    pub age_model: PathBuf,
    pub policy: Policy,
    pub detector: DetectorSettings,
    /// `None` when the board file has no `[capture]` (enough for `estimate` and `eval`).
    pub capture: Option<CaptureSettings>,
    pub serial: SerialSettings,
    pub gpio: Option<GpioSettings>,
    pub daemon: DaemonSettings,
    pub runtime: RuntimeSettings,
}

impl Board {
    /// The most pixels an image may have to be decoded: `[capture] max_pixels`, also for
    /// the photo commands (`estimate`, `eval`, `crops`).
    pub fn max_pixels(&self) -> u64 {
        self.capture
            .as_ref()
            .map_or(crate::jpeg::DEFAULT_MAX_PIXELS, |c| c.max_pixels)
    }

    /// Makes the board's recording play over and over (`agegate run --loop`). A camera, or
    /// no `[capture]` at all, cannot loop.
    pub fn loop_recording(&mut self) -> Result<(), String> {
        let Some(capture) = self.capture.as_mut() else {
            return Err("the board has no [capture] section".into());
        };
        match &mut capture.source {
            SourceSettings::Camera { .. } => Err("the board's source is a camera".into()),
            SourceSettings::ImageDir { looped, .. }
            | SourceSettings::MjpegFile { looped, .. }
            | SourceSettings::YuyvFile { looped, .. }
            | SourceSettings::Y4mFile { looped, .. } => {
                *looped = true;
                Ok(())
            }
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let raw: RawBoard = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::validate(raw, path)
    }

    pub fn validate(raw: RawBoard, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let existing_file = |key: &str, p: &Path| {
            let full = base.join(p);
            if full.is_file() {
                Ok(full)
            } else {
                Err(invalid(key, format!("no such file: {}", full.display())))
            }
        };
        let detector_model = existing_file("models.detector", &raw.models.detector)?;
        let age_model = existing_file("models.age", &raw.models.age)?;
        let policy = Policy::new(
            raw.policy.legal_age,
            raw.policy.challenge_age,
            raw.policy.k_sigma,
        )
        .map_err(|e| {
            let key = match e {
                PolicyError::LegalAge(_) => "policy.legal_age",
                PolicyError::ChallengeAge { .. } => "policy.challenge_age",
                PolicyError::Margin(_) => "policy.k_sigma",
            };
            invalid(key, e.to_string())
        })?;
        let min_request_age = raw.policy.min_request_age.unwrap_or(policy.legal_age());
        if !crate::decide::LEGAL_AGES.contains(&min_request_age) {
            return Err(invalid(
                "policy.min_request_age",
                format!("{min_request_age}: give a legal age from 10 to 30"),
            ));
        }
        let defaults = DetectorSettings::default();
        let score_threshold = raw
            .detector
            .score_threshold
            .unwrap_or(defaults.score_threshold);
        if !(score_threshold > 0.0 && score_threshold < 1.0) {
            return Err(invalid(
                "detector.score_threshold",
                format!("{score_threshold} is not in (0, 1)"),
            ));
        }
        let merge_iou = raw.detector.merge_iou.unwrap_or(defaults.merge_iou);
        if !(merge_iou > 0.0 && merge_iou < 1.0) {
            return Err(invalid(
                "detector.merge_iou",
                format!("{merge_iou} is not in (0, 1)"),
            ));
        }
        let canvas_scales = raw.detector.canvas_scales.unwrap_or(defaults.canvas_scales);
        if canvas_scales.is_empty()
            || canvas_scales
                .iter()
                .any(|s| !(s.is_finite() && *s >= 1.0 && *s <= 8.0))
        {
            return Err(invalid(
                "detector.canvas_scales",
                format!("{canvas_scales:?}: give one or more scales between 1 and 8"),
            ));
        }
        if raw.name.trim().is_empty() {
            return Err(invalid("name", "is empty".into()));
        }
        let capture = raw
            .capture
            .map(|c| validate_capture(c, base, &invalid))
            .transpose()?;
        let serial = match raw.serial {
            None => SerialSettings::None,
            Some(s) => validate_serial(s, base, &invalid)?,
        };
        let gpio = raw.gpio.map(|g| validate_gpio(g, &invalid)).transpose()?;
        let mut daemon = validate_daemon(raw.session, raw.daemon, &invalid)?;
        daemon.min_request_age = min_request_age;
        let runtime = validate_runtime(raw.runtime, &invalid)?;
        Ok(Board {
            name: raw.name,
            path: path.to_path_buf(),
            detector_model,
            age_model,
            policy,
            detector: DetectorSettings {
                score_threshold,
                merge_iou,
                canvas_scales,
            },
            capture,
            serial,
            gpio,
            daemon,
            runtime,
        })
    }
}

/// The most threads a board may ask for: more than any board we support has cores.
pub const MAX_THREADS: usize = 64;

fn validate_runtime(raw: RawRuntime, invalid: &Invalid) -> Result<RuntimeSettings, ConfigError> {
    let engine =
        match raw.engine.as_deref() {
            None | Some("tract") => Engine::Tract,
            Some("onnxruntime") if cfg!(feature = "ort") => Engine::OnnxRuntime,
            Some("onnxruntime") => return Err(invalid(
                "runtime.engine",
                "\"onnxruntime\" needs an agegate built with `--features ort` (or `tensorrt` on \
                 Jetson); this one has tract only"
                    .into(),
            )),
            Some(other) => {
                return Err(invalid(
                    "runtime.engine",
                    format!("\"{other}\" is not an engine: give \"tract\" or \"onnxruntime\""),
                ))
            }
        };
    let threads = raw.threads.unwrap_or(1);
    check_threads(threads).map_err(|message| invalid("runtime.threads", message))?;
    Ok(RuntimeSettings { engine, threads })
}

/// A thread count a board file or `bench --threads` may give: 1 to [`MAX_THREADS`].
pub fn check_threads(threads: usize) -> Result<(), String> {
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(())
    } else {
        Err(format!("{threads} is not between 1 and {MAX_THREADS}"))
    }
}

type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn validate_capture(
    raw: RawCapture,
    base: &Path,
    invalid: &Invalid,
) -> Result<CaptureSettings, ConfigError> {
    let fps = raw.fps.unwrap_or(15);
    if !(1..=120).contains(&fps) {
        return Err(invalid("capture.fps", format!("{fps}: give 1 to 120")));
    }
    let looped = raw.looped.unwrap_or(false);
    let size = |default: (u32, u32)| -> Result<(u32, u32), ConfigError> {
        let (w, h) = (
            raw.width.unwrap_or(default.0),
            raw.height.unwrap_or(default.1),
        );
        if !(16..=7680).contains(&w) || w % 2 != 0 {
            return Err(invalid(
                "capture.width",
                format!("{w}: give an even width, 16 to 7680"),
            ));
        }
        if !(16..=4320).contains(&h) {
            return Err(invalid("capture.height", format!("{h}: give 16 to 4320")));
        }
        Ok((w, h))
    };
    let file = |must_be_dir: bool| -> Result<PathBuf, ConfigError> {
        let Some(p) = raw.path.as_ref() else {
            return Err(invalid(
                "capture.path",
                format!("missing; source `{}` reads a recording", raw.source),
            ));
        };
        let full = base.join(p);
        let ok = if must_be_dir {
            full.is_dir()
        } else {
            full.is_file()
        };
        if !ok {
            let what = if must_be_dir { "folder" } else { "file" };
            return Err(invalid(
                "capture.path",
                format!("no such {what}: {}", full.display()),
            ));
        }
        Ok(full)
    };
    let no = |key: &str| -> Result<(), ConfigError> {
        Err(invalid(
            key,
            format!("does not apply to source `{}`", raw.source),
        ))
    };
    if raw.source != "camera" && raw.device.is_some() {
        no("capture.device")?;
    }
    if raw.source != "camera" && raw.format.is_some() {
        no("capture.format")?;
    }
    let max_pixels = raw.max_pixels.unwrap_or(crate::jpeg::DEFAULT_MAX_PIXELS);
    if !(MIN_MAX_PIXELS..=MAX_MAX_PIXELS).contains(&max_pixels) {
        return Err(invalid(
            "capture.max_pixels",
            format!("{max_pixels}: give {MIN_MAX_PIXELS} to {MAX_MAX_PIXELS} pixels"),
        ));
    }
    let source = match raw.source.as_str() {
        "camera" => {
            if raw.path.is_some() || raw.looped.is_some() {
                no(if raw.path.is_some() {
                    "capture.path"
                } else {
                    "capture.loop"
                })?;
            }
            let Some(device) = raw.device.as_ref() else {
                return Err(invalid(
                    "capture.device",
                    "missing, e.g. \"/dev/video0\"".into(),
                ));
            };
            let device = base.join(device);
            if !device.exists() {
                return Err(invalid(
                    "capture.device",
                    format!(
                        "no such device: {} (is the camera plugged in? `v4l2-ctl --list-devices`)",
                        device.display()
                    ),
                ));
            }
            let (width, height) = size((640, 480))?;
            if u64::from(width) * u64::from(height) > max_pixels {
                return Err(invalid(
                    "capture.max_pixels",
                    format!("{max_pixels} is less than the camera's {width}x{height}"),
                ));
            }
            SourceSettings::Camera {
                device,
                format: raw.format.unwrap_or(CameraFormat::Mjpeg),
                width,
                height,
                fps,
            }
        }
        "image-dir" => SourceSettings::ImageDir {
            path: file(true)?,
            fps,
            looped,
        },
        "mjpeg-file" => SourceSettings::MjpegFile {
            path: file(false)?,
            fps,
            looped,
        },
        "y4m-file" => SourceSettings::Y4mFile {
            path: file(false)?,
            fps,
            looped,
        },
        "yuyv-file" => {
            if raw.width.is_none() || raw.height.is_none() {
                return Err(invalid(
                    "capture.width",
                    "raw YUYV needs width and height".into(),
                ));
            }
            let (width, height) = size((0, 0))?;
            SourceSettings::YuyvFile {
                path: file(false)?,
                width,
                height,
                fps,
                looped,
            }
        }
        other => {
            return Err(invalid(
                "capture.source",
                format!("`{other}`: give camera, image-dir, mjpeg-file, yuyv-file or y4m-file"),
            ))
        }
    };
    Ok(CaptureSettings { source, max_pixels })
}

/// `[capture] max_pixels` bounds: a 160 x 120 frame at least, 64 megapixels at most (about
/// 200 MB as RGB, beyond what the smallest board can spare).
const MIN_MAX_PIXELS: u64 = 160 * 120;
const MAX_MAX_PIXELS: u64 = 64 << 20;

fn validate_serial(
    raw: RawSerial,
    base: &Path,
    invalid: &Invalid,
) -> Result<SerialSettings, ConfigError> {
    match raw.kind.as_str() {
        "none" => {
            if raw.path.is_some() || raw.baud.is_some() {
                return Err(invalid(
                    "serial.path",
                    "serial.kind is \"none\": remove path and baud".into(),
                ));
            }
            Ok(SerialSettings::None)
        }
        "port" => {
            let Some(path) = raw.path else {
                return Err(invalid(
                    "serial.path",
                    "missing, e.g. \"/dev/ttyAMA0\"".into(),
                ));
            };
            let path = base.join(path);
            if !path.exists() {
                return Err(invalid(
                    "serial.path",
                    format!("no such device: {}", path.display()),
                ));
            }
            let baud = raw.baud.unwrap_or(115_200);
            if !(1_200..=4_000_000).contains(&baud) {
                return Err(invalid(
                    "serial.baud",
                    format!("{baud}: give 1200 to 4000000"),
                ));
            }
            Ok(SerialSettings::Port { path, baud })
        }
        other => Err(invalid(
            "serial.kind",
            format!("`{other}`: give port or none"),
        )),
    }
}

fn validate_gpio(raw: RawGpio, invalid: &Invalid) -> Result<GpioSettings, ConfigError> {
    let backend = match raw.backend.as_str() {
        "rppal" => GpioBackend::Rppal,
        "cdev" => GpioBackend::Cdev,
        "log" => GpioBackend::Log,
        other => {
            return Err(invalid(
                "gpio.backend",
                format!("`{other}`: give rppal, cdev or log"),
            ))
        }
    };
    let pin = |key: &str, text: &str| -> Result<PinSpec, ConfigError> {
        match backend {
            // BCM 0..=27 are the 40-pin header's GPIOs.
            GpioBackend::Rppal => match text.trim().parse::<u8>() {
                Ok(n) if n <= 27 => Ok(PinSpec::Bcm(n)),
                _ => Err(invalid(
                    key,
                    format!("`{text}`: rppal takes a BCM GPIO number, 0 to 27"),
                )),
            },
            GpioBackend::Cdev | GpioBackend::Log => {
                if text.trim().is_empty() {
                    Err(invalid(key, "empty line name (see `gpioinfo`)".into()))
                } else {
                    Ok(PinSpec::Name(text.trim().to_string()))
                }
            }
        }
    };
    let relay = pin("gpio.relay", &raw.relay)?;
    let leds = [
        raw.led_allow
            .as_deref()
            .map(|t| pin("gpio.led_allow", t))
            .transpose()?,
        raw.led_deny
            .as_deref()
            .map(|t| pin("gpio.led_deny", t))
            .transpose()?,
        raw.led_refer
            .as_deref()
            .map(|t| pin("gpio.led_refer", t))
            .transpose()?,
    ];
    let mut seen = vec![("gpio.relay", &relay)];
    for (key, spec) in ["gpio.led_allow", "gpio.led_deny", "gpio.led_refer"]
        .into_iter()
        .zip(&leds)
    {
        if let Some(spec) = spec {
            if let Some((other, _)) = seen.iter().find(|(_, s)| *s == spec) {
                return Err(invalid(key, format!("same line as {other}")));
            }
            seen.push((key, spec));
        }
    }
    let relay_pulse_ms = raw.relay_pulse_ms.unwrap_or(3_000);
    if !(100..=60_000).contains(&relay_pulse_ms) {
        return Err(invalid(
            "gpio.relay_pulse_ms",
            format!("{relay_pulse_ms}: give 100 to 60000"),
        ));
    }
    Ok(GpioSettings {
        backend,
        relay,
        relay_active_low: raw.relay_active_low,
        relay_pulse_ms,
        leds,
        leds_active_low: raw.leds_active_low,
    })
}

fn validate_daemon(
    session: RawSession,
    raw: RawDaemon,
    invalid: &Invalid,
) -> Result<DaemonSettings, ConfigError> {
    let d = DaemonSettings::default();
    let trigger = match session.trigger.as_deref() {
        None | Some("request") => Trigger::Request,
        Some("face") => Trigger::Face,
        Some(other) => {
            return Err(invalid(
                "session.trigger",
                format!("`{other}`: give request or face"),
            ))
        }
    };
    let session = SessionSettings {
        min_frames: session.min_frames.unwrap_or(d.session.min_frames),
        max_frames: session.max_frames.unwrap_or(d.session.max_frames),
        timeout_ms: session.timeout_ms.unwrap_or(d.session.timeout_ms),
        iou_threshold: session.iou_threshold.unwrap_or(d.session.iou_threshold),
        lost_face_ms: session.lost_face_ms.unwrap_or(d.session.lost_face_ms),
        other_faces: session.other_faces.unwrap_or(d.session.other_faces),
        other_face_min_px: session
            .other_face_min_px
            .unwrap_or(d.session.other_face_min_px),
    };
    session
        .validate()
        .map_err(|e| invalid(SessionSettings::key(&e), e.to_string()))?;
    let positive = |key: &str, v: Option<u64>, default: u64| -> Result<u64, ConfigError> {
        match v.unwrap_or(default) {
            0 => Err(invalid(key, "must be above 0".into())),
            v => Ok(v),
        }
    };
    let reopen_backoff_ms = positive(
        "daemon.reopen_backoff_ms",
        raw.reopen_backoff_ms,
        d.reopen_backoff_ms,
    )?;
    let max_backoff_ms = positive(
        "daemon.max_backoff_ms",
        raw.max_backoff_ms,
        d.max_backoff_ms,
    )?;
    if max_backoff_ms < reopen_backoff_ms {
        return Err(invalid(
            "daemon.max_backoff_ms",
            "must be at least reopen_backoff_ms".into(),
        ));
    }
    let at_most = |key: &str, v: u64, max: u64| -> Result<u64, ConfigError> {
        if v > max {
            Err(invalid(key, format!("{v}: give at most {max}")))
        } else {
            Ok(v)
        }
    };
    let count = |key: &str, v: Option<u32>, default: u32| -> Result<u32, ConfigError> {
        match v.unwrap_or(default) {
            // Zero would mean "fault before the first try"; it was once raised to 1
            // silently, which hid a typo.
            0 => Err(invalid(key, "must be at least 1".into())),
            v if v > 10_000 => Err(invalid(key, format!("{v}: give at most 10000"))),
            v => Ok(v),
        }
    };
    // The guard must notice a replaced model within a minute; hashing more than once a
    // second would cost frames.
    let model_check_ms = at_most(
        "daemon.model_check_ms",
        positive(
            "daemon.model_check_ms",
            raw.model_check_ms,
            d.model_check_ms,
        )?,
        60_000,
    )?;
    let model_hash_ms = raw.model_hash_ms.unwrap_or(d.model_hash_ms);
    if !(1_000..=3_600_000).contains(&model_hash_ms) {
        return Err(invalid(
            "daemon.model_hash_ms",
            format!("{model_hash_ms}: give 1000 to 3600000"),
        ));
    }
    Ok(DaemonSettings {
        trigger,
        session,
        heartbeat_ms: at_most(
            "daemon.heartbeat_ms",
            positive("daemon.heartbeat_ms", raw.heartbeat_ms, d.heartbeat_ms)?,
            60_000,
        )?,
        model_check_ms,
        model_hash_ms,
        reopen_backoff_ms,
        max_backoff_ms,
        max_bad_frames: count(
            "daemon.max_bad_frames",
            raw.max_bad_frames,
            d.max_bad_frames,
        )?,
        max_model_errors: count(
            "daemon.max_model_errors",
            raw.max_model_errors,
            d.max_model_errors,
        )?,
        min_request_age: d.min_request_age,
    })
}
