//! Signed model bundles through the binary: `agegate bundle` packs the dev board's models
//! and policy, `install-bundle` installs them for a bundle board, which then runs them;
//! everything that must be refused leaves the installed set as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// A fleet key pair in `dir`: `fleet.key` (unencrypted, as `minisign -G -W` writes it) and
/// `fleet.pub`.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, minisign::KeyPair) {
    let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    write(&secret, &pair.sk.to_box(None).expect("sk box").to_string());
    write(&public, &pair.pk.to_box().expect("pk box").to_string());
    (secret, public, pair)
}

/// The dev board as a bundle board: `[models]` names the bundle folder and key instead of
/// the files, and the `[policy]` goes (the bundle carries it).
fn bundle_board(dir: &Path, name: &str, pubkey: &Path) -> PathBuf {
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).expect("dev board");
    let mut out = String::new();
    let mut section = "";
    for line in dev.lines() {
        if line.starts_with('[') {
            section = if line.starts_with("[models]") {
                "models"
            } else if line.starts_with("[policy") {
                "policy"
            } else {
                "other"
            };
            if section == "models" {
                out += &format!(
                    "[models]\nbundle = \"{}\"\nbundle_pubkey = \"{}\"\n",
                    dir.join("bundles").display(),
                    pubkey.display()
                );
                continue;
            }
        }
        if section == "models" || section == "policy" {
            continue;
        }
        let line = line
            .replace("name = \"dev\"", &format!("name = \"{name}\""))
            .replace("\"../", &format!("\"{}/", root().display()));
        out += &line;
        out.push('\n');
    }
    let path = dir.join(format!("{name}.toml"));
    write(&path, &out);
    path
}

fn run(args: &[&str]) -> Output {
    agegate()
        .args(args)
        .current_dir(root())
        .output()
        .expect("start agegate")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn pack_dev(dir: &Path, secret: &Path, label: &str) -> PathBuf {
    let out = dir.join(format!("{label}.agb"));
    let dev = root().join("boards/dev.toml");
    let o = run(&[
        "bundle",
        "--board",
        s(&dev),
        "--secret-key",
        s(secret),
        "--label",
        label,
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn install(bundle: &Path, board: &Path) -> Output {
    run(&["install-bundle", s(bundle), "--board", s(board)])
}

/// The bundle folder's entries, links with their targets: what must not change when an
/// install is refused.
fn listing(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("bundle root")
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().to_string_lossy().into_owned();
            match std::fs::read_link(e.path()) {
                Ok(t) => format!("{name} -> {}", t.display()),
                Err(_) => name,
            }
        })
        .collect();
    names.sort();
    names
}

fn refused(o: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(needle), "wanted `{needle}` in: {stderr}");
}

fn estimate(board: &Path) -> serde_json::Value {
    let photo = photo("grace_hopper.jpg");
    let o = run(&["estimate", "--board", s(board), s(&photo)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON line")
}

#[test]
fn an_installed_bundle_runs_as_the_board_it_was_packed_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public, _) = key_pair(dir.path(), "fleet");
    let board = bundle_board(dir.path(), "dev", &public);
    // No bundle yet: the board refuses to load, naming the key and what to do.
    refused(
        &run(&["estimate", "--board", s(&board), s(&photo("astronaut.jpg"))]),
        "models.bundle",
    );
    let bundle = pack_dev(dir.path(), &secret, "v2");
    let o = install(&bundle, &board);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(report["label"], "v2");
    assert!(report["previous"].is_null());
    let from_bundle = estimate(&board);
    let from_dev = estimate(&root().join("boards/dev.toml"));
    assert_eq!(from_bundle["faces"], from_dev["faces"]);
    assert_eq!(from_bundle["decision"], "ALLOW");
    // The daemon runs it too, on the bundled recording.
    let o = run(&["run", "--board", s(&board)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let decisions = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("\"event\":\"decision\""))
        .count();
    assert_eq!(decisions, 2, "{}", String::from_utf8_lossy(&o.stdout));
    // `hash` has nothing to pin on a bundle board.
    refused(&run(&["hash", s(&board)]), "signed bundle");
}

#[test]
fn what_must_be_refused_leaves_the_installed_set_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public, pair) = key_pair(dir.path(), "fleet");
    let (other_secret, other_public, _) = key_pair(dir.path(), "other");
    let board = bundle_board(dir.path(), "dev", &public);
    let good = pack_dev(dir.path(), &secret, "good");
    assert!(install(&good, &board).status.success());
    let bundles = dir.path().join("bundles");
    let before = listing(&bundles);
    let unchanged = |case: &str| assert_eq!(listing(&bundles), before, "{case}");

    // Signed with a key the board does not trust.
    refused(
        &install(&pack_dev(dir.path(), &other_secret, "rogue"), &board),
        "signature refused",
    );
    unchanged("another key");
    // --pubkey naming another key than the board's.
    refused(
        &run(&[
            "install-bundle",
            s(&good),
            "--board",
            s(&board),
            "--pubkey",
            s(&other_public),
        ]),
        "is not the key board",
    );
    unchanged("--pubkey of another key");
    // Truncated: cut in the middle of the age model, and just before the last member.
    let bytes = std::fs::read(&good).expect("bundle");
    for keep in [bytes.len() / 2, bytes.len() - 2048] {
        let cut = dir.path().join("cut.agb");
        std::fs::write(&cut, &bytes[..keep]).expect("write");
        let o = install(&cut, &board);
        assert_eq!(o.status.code(), Some(2), "cut at {keep} installed");
        unchanged(&format!("cut at {keep}"));
    }
    // Not a bundle at all.
    let junk = dir.path().join("junk.agb");
    write(&junk, "this is not a tar file\n");
    refused(&install(&junk, &board), "junk.agb");
    unchanged("junk");
    // Packed for another board.
    let other_board = bundle_board(dir.path(), "kiosk-7", &public);
    let o = run(&[
        "bundle",
        "--board",
        s(&root().join("boards/dev.toml")),
        "--secret-key",
        s(&secret),
        "--out",
        s(&dir.path().join("dev.agb")),
    ]);
    assert!(o.status.success());
    refused(
        &install(&dir.path().join("dev.agb"), &other_board),
        "is for board `dev`",
    );
    // Signed properly but failing the model contract: the detector in the age model's place.
    let detector = std::fs::read(detector_model()).expect("detector");
    let policy = "[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1.0\n";
    let contract = dir.path().join("contract.agb");
    agegate::bundle::pack(
        &agegate::bundle::Contents {
            board: "dev",
            label: "wrong model",
            detector: &detector,
            age: &detector,
            policy_toml: policy,
        },
        &pair.sk,
        &contract,
    )
    .expect("pack");
    refused(&install(&contract, &board), "contract");
    unchanged("a model failing its contract");
    // The set that stayed still runs.
    assert_eq!(estimate(&board)["decision"], "ALLOW");
}

#[test]
fn rollback_returns_to_the_previous_bundle_and_tampering_stops_the_board() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public, _) = key_pair(dir.path(), "fleet");
    let board = bundle_board(dir.path(), "dev", &public);
    refused(
        &run(&["rollback", "--board", s(&board)]),
        "no previous bundle",
    );
    let first = pack_dev(dir.path(), &secret, "first");
    // The second bundle carries a stricter policy, from a file as calibrate writes one.
    let strict = dir.path().join("strict.toml");
    write(
        &strict,
        "[policy]\nlegal_age = 21\nchallenge_age = 30\nk_sigma = 1.0\n",
    );
    let second = dir.path().join("second.agb");
    let o = run(&[
        "bundle",
        "--board",
        s(&root().join("boards/dev.toml")),
        "--policy",
        s(&strict),
        "--secret-key",
        s(&secret),
        "--label",
        "second",
        "--out",
        s(&second),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id_of = |o: Output| -> String {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        v["installed"]
            .as_str()
            .or(v["current"].as_str())
            .expect("id")
            .to_string()
    };
    let first_id = id_of(install(&first, &board));
    let second_id = id_of(install(&second, &board));
    assert_ne!(first_id, second_id);
    let policy = || agegate::config::Board::load(&board).expect("board").policy;
    assert_eq!(policy().legal_age(), 21.0);
    assert_eq!(id_of(run(&["rollback", "--board", s(&board)])), first_id);
    assert_eq!(policy().legal_age(), 18.0);
    // Back again: rollback swaps the two.
    assert_eq!(id_of(run(&["rollback", "--board", s(&board)])), second_id);

    // Tampering with the installed files: the board refuses to load, naming what changed.
    let current = dir.path().join("bundles/current");
    let policy_file = current.join("policy.toml");
    let signed_policy = std::fs::read(&policy_file).expect("policy");
    write(
        &policy_file,
        "[policy]\nlegal_age = 18\nchallenge_age = 18\nk_sigma = 1.0\n",
    );
    refused(
        &run(&["estimate", "--board", s(&board), s(&photo("astronaut.jpg"))]),
        "policy.toml",
    );
    std::fs::write(&policy_file, signed_policy).expect("restore");
    let age = current.join("age.onnx");
    let mut model = std::fs::read(&age).expect("age model");
    let last = model.len() - 1;
    model[last] ^= 1;
    std::fs::write(&age, model).expect("write");
    refused(
        &run(&["estimate", "--board", s(&board), s(&photo("astronaut.jpg"))]),
        "age.onnx",
    );
}

#[test]
fn a_board_names_its_files_or_a_bundle_never_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = |models: &str| {
        let text = format!(
            "name = \"x\"\n[models]\n{models}\n[policy]\nlegal_age = 18\nchallenge_age = 25\n"
        );
        agegate::config::Board::parse(&text, &dir.path().join("x.toml"))
            .expect_err("refused")
            .to_string()
    };
    let err = board("bundle = \"b\"\nbundle_pubkey = \"k.pub\"\ndetector = \"d.onnx\"");
    assert!(
        err.contains("models.bundle") && err.contains("models.detector"),
        "{err}"
    );
    let err = board("bundle = \"b\"");
    assert!(err.contains("models.bundle_pubkey"), "{err}");
    let err = board("bundle_pubkey = \"k.pub\"\ndetector = \"d.onnx\"\nage = \"a.onnx\"");
    assert!(err.contains("without models.bundle"), "{err}");
    let err = board("age = \"a.onnx\"");
    assert!(
        err.contains("models.detector") && err.contains("missing"),
        "{err}"
    );
    // A key file that is not a key.
    write(&dir.path().join("k.pub"), "not a key\n");
    let err = board("bundle = \"b\"\nbundle_pubkey = \"k.pub\"");
    assert!(err.contains("not a minisign public key"), "{err}");
}

#[test]
fn keygen_makes_keys_bundle_signs_with_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public) = (dir.path().join("fleet.key"), dir.path().join("fleet.pub"));
    let password = dir.path().join("pw");
    write(&password, "correct horse\n");
    let keygen = |pw: Option<&Path>| {
        let mut args = vec![
            "keygen",
            "--secret-key",
            s(&secret),
            "--public-key",
            s(&public),
        ];
        if let Some(pw) = pw {
            args.extend(["--password-file", s(pw)]);
        }
        run(&args)
    };
    let o = keygen(Some(&password));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let made = std::fs::read(&secret).expect("secret key");
    refused(&keygen(None), "never overwritten");
    assert_eq!(
        std::fs::read(&secret).expect("secret key"),
        made,
        "the key was overwritten"
    );
    let out = dir.path().join("b.agb");
    let dev = root().join("boards/dev.toml");
    let pack = |pw: Option<&Path>| {
        let mut args = vec![
            "bundle",
            "--board",
            s(&dev),
            "--secret-key",
            s(&secret),
            "--out",
            s(&out),
        ];
        if let Some(pw) = pw {
            args.extend(["--password-file", s(pw)]);
        }
        run(&args)
    };
    // A key made with a password needs it; nothing prompts.
    refused(&pack(None), "--password-file");
    let wrong = dir.path().join("wrong");
    write(&wrong, "battery staple\n");
    refused(&pack(Some(&wrong)), "secret key");
    assert!(!out.exists(), "a refused signing wrote a bundle");
    let o = pack(Some(&password));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let board = bundle_board(dir.path(), "dev", &public);
    let o = install(&out, &board);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `current` under `root` names a complete bundle: its signature, policy and both model
/// files check.
fn assert_current_complete(root: &Path, public: &Path, case: &str) {
    let key = agegate::bundle::read_public_key(public).expect("key");
    let installed = agegate::bundle::open_current(root, &key)
        .unwrap_or_else(|e| panic!("{case}: {e}; {:?}", listing(root)));
    for (file, pin) in [
        (installed.detector(), installed.detector_sha256),
        (installed.age(), installed.age_sha256),
    ] {
        let found = agegate::digest::Sha256::of_file(&file)
            .unwrap_or_else(|e| panic!("{case}: {}: {e}; {:?}", file.display(), listing(root)));
        assert_eq!(found, pin, "{case}: {}", file.display());
    }
}

#[test]
fn reinstalling_a_bundle_over_its_damaged_folder_repairs_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public, _) = key_pair(dir.path(), "fleet");
    let board = bundle_board(dir.path(), "dev", &public);
    let (first, second) = (
        pack_dev(dir.path(), &secret, "first"),
        pack_dev(dir.path(), &secret, "second"),
    );
    let installed = |bundle: &Path| -> String {
        let o = install(bundle, &board);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        v["installed"].as_str().expect("id").to_string()
    };
    let first_id = installed(&first);
    installed(&second);
    // The first bundle, now `previous`, loses its age model; installing it again must not
    // point `current` at what is left.
    let bundles = dir.path().join("bundles");
    std::fs::remove_file(bundles.join(&first_id).join("age.onnx")).expect("remove");
    assert_eq!(installed(&first), first_id);
    assert_current_complete(&bundles, &public, "reinstalled over a damaged folder");
    assert_eq!(estimate(&board)["decision"], "ALLOW");
}

/// Holds an exclusive flock on `path` until dropped, as an install at work does.
struct HeldLock {
    _file: std::fs::File,
}

impl HeldLock {
    fn take(path: &Path) -> Self {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .expect("lock file");
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(
            locked,
            0,
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self { _file: file }
    }
}

#[test]
fn installs_take_turns_on_the_bundle_root_and_current_stays_complete() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, public, _) = key_pair(dir.path(), "fleet");
    let board = bundle_board(dir.path(), "dev", &public);
    let bundles = [
        pack_dev(dir.path(), &secret, "a"),
        pack_dev(dir.path(), &secret, "b"),
    ];
    assert!(install(&bundles[0], &board).status.success());
    let bundle_root = dir.path().join("bundles");
    let before = listing(&bundle_root);

    // While the root is locked, an install waits (saying so) and changes nothing.
    let held = HeldLock::take(&bundle_root.join(agegate::bundle::LOCK_FILE));
    let mut child = agegate()
        .args(["install-bundle", s(&bundles[1]), "--board", s(&board)])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agegate");
    // Kept open to the end: the install may still write to it.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let waiting = stderr
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("waiting for it"));
    assert!(
        waiting.is_some(),
        "the install did not wait for the lock: {:?}",
        child.wait_with_output().map(|o| o.status)
    );
    assert_eq!(
        listing(&bundle_root),
        before,
        "changed while the root was locked"
    );
    drop(held);
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success(), "{o:?}");
    drop(stderr);
    assert_current_complete(&bundle_root, &public, "after the wait");

    // Two at once, over and over on the same root: both succeed, `current` complete.
    for round in 0..4 {
        let children: Vec<_> = bundles
            .iter()
            .map(|b| {
                agegate()
                    .args(["install-bundle", s(b), "--board", s(&board)])
                    .current_dir(root())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start agegate")
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().expect("wait");
            assert!(o.status.success(), "round {round}: {o:?}");
        }
        assert_current_complete(&bundle_root, &public, &format!("round {round}"));
    }
}

/// Runs `agegate install-bundle FILE`, failing the test if it has not ended within 60 s (a
/// FIFO would block a reader forever).
fn install_within_a_minute(bundle: &Path, board: &Path) -> Output {
    let mut child = agegate()
        .args(["install-bundle", s(bundle), "--board", s(board)])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start agegate");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "install-bundle {} still running after 60 s",
                bundle.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn a_bundle_is_read_from_a_regular_file_of_bounded_size_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, public, _) = key_pair(dir.path(), "fleet");
    let board = bundle_board(dir.path(), "dev", &public);
    let fifo = dir.path().join("fifo.agb");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.expect("mkfifo").success());
    let huge = dir.path().join("huge.agb");
    // Sparse: past the whole file's bound without using the disk.
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(agegate::bundle::MAX_BUNDLE_BYTES + 1))
        .expect("sparse file");
    let bound = format!(
        "more than {} MiB, the most a bundle may have",
        agegate::bundle::MAX_BUNDLE_BYTES >> 20
    );
    for (path, what) in [
        (fifo, "is a FIFO, not a regular file"),
        (
            PathBuf::from("/dev/zero"),
            "is a character device, not a regular file",
        ),
        (
            dir.path().to_path_buf(),
            "is a directory, not a regular file",
        ),
        (huge, bound.as_str()),
    ] {
        let o = install_within_a_minute(&path, &board);
        refused(&o, what);
        refused(&o, s(&path));
    }
}

#[test]
fn a_hostile_tar_is_refused_before_it_is_buffered_and_its_names_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, public, _) = key_pair(dir.path(), "fleet");
    let board = bundle_board(dir.path(), "dev", &public);
    // One tar header (the body it claims is not there: it must not be read).
    let one_header = |name: &str, size: u64, kind: tar::EntryType| -> PathBuf {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).expect("a short name");
        header.set_size(size);
        header.set_entry_type(kind);
        header.set_cksum();
        let path = dir.path().join("hostile.agb");
        std::fs::write(&path, header.as_bytes()).expect("write");
        path
    };
    use tar::EntryType::{GNULongName, Regular, XHeader};
    for (name, kind, what) in [
        ("PaxHeaders/age.onnx", XHeader, "a PAX extended header"),
        ("././@LongLink", GNULongName, "a GNU long-name header"),
        ("age.onnx", Regular, "before the signed manifest"),
        ("manifest.json", Regular, "more than the 65536"),
    ] {
        refused(&install(&one_header(name, 1 << 30, kind), &board), what);
    }
    // A name that would rewrite the terminal's last line into an "installed" report.
    let forged = "x\x1b[1A\x1b[2K\r{\"installed\":\"0\"}";
    let o = install(&one_header(forged, 1, Regular), &board);
    refused(&o, "unexpected member `x\\u{1b}[1A\\u{1b}[2K\\r{");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.trim_end().chars().any(char::is_control),
        "{stderr:?}"
    );
}
