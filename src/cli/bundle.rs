//! The bundle commands: `bundle` packs and signs, `install-bundle` verifies and installs,
//! `rollback` returns to the previous bundle (the library's `bundle` module does the work).

use anyhow::{bail, Context, Result};

use agegate::bundle::{self, Contents};
use agegate::config::Board;
use agegate::decide::Policy;
use agegate::input_file;
use agegate::pipeline::Pipeline;

use super::{print_line, BundleArgs, InstallBundleArgs, KeygenArgs, Outcome, RollbackArgs};

/// Writes a new key pair. (Debian bookworm's minisign 0.11 writes password-less secret keys
/// without their checksum, which the minisign crate refuses as corrupted: this makes keys
/// both read.)
pub(super) fn keygen(args: KeygenArgs) -> Result<Outcome> {
    let pair = match &args.password_file {
        Some(path) => minisign::KeyPair::generate_encrypted_keypair(Some(read_password(path)?)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("cannot make a key pair: {e}"))?;
    let secret = pair
        .sk
        .to_box(Some("agegate bundle signing key"))
        .map_err(|e| anyhow::anyhow!("cannot encode the secret key: {e}"))?;
    let public = pair
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("cannot encode the public key: {e}"))?;
    for path in [&args.secret_key, &args.public_key] {
        if path.exists() {
            bail!(
                "{}: exists (a key is never overwritten)",
                bundle::escape_path(path)
            );
        }
    }
    // The secret key readable by its owner only.
    for (path, text, mode) in [
        (&args.secret_key, secret.to_string(), 0o600),
        (&args.public_key, public.to_string(), 0o644),
    ] {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("{}: cannot write it", bundle::escape_path(path)))?;
    }
    print_line(
        &serde_json::json!({
            "secret_key": args.secret_key,
            "public_key": args.public_key,
            "encrypted": args.password_file.is_some(),
        })
        .to_string(),
    )?;
    Ok(Outcome::Success)
}

fn read_password(path: &std::path::Path) -> Result<String> {
    let text = input_file::read_to_string(path, input_file::PASSWORD_FILE)?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub(super) fn pack(args: BundleArgs) -> Result<Outcome> {
    let mut board = Board::load_without_devices(&args.board)?;
    let policy_toml = match &args.policy {
        Some(path) => input_file::read_to_string(path, input_file::POLICY_FILE)?,
        None => board_policy_section(&args.board)?,
    };
    let policy = Policy::from_toml(&policy_toml)
        .map_err(|e| anyhow::anyhow!("the policy to bundle does not validate: {e}"))?;
    // The contract is checked before anything is signed: both models load on this build's
    // engine, the age model has what the policy's rule needs, the board's pins hold.
    board.policy = policy;
    Pipeline::from_board(&board)?;
    let read = |path: &std::path::Path| input_file::read(path, input_file::MODEL);
    let (detector, age) = (read(&board.detector_model)?, read(&board.age_model)?);
    let secret_key = read_secret_key(&args)?;
    let label = args.label.clone().unwrap_or_else(|| {
        format!(
            "{} models, age model {}",
            board.name,
            &agegate::digest::Sha256::of_bytes(&age).to_string()[..12]
        )
    });
    let contents = Contents {
        board: &board.name,
        label: &label,
        detector: &detector,
        age: &age,
        policy_toml: &policy_toml,
    };
    let manifest = bundle::pack(&contents, &secret_key, &args.out)?;
    print_line(&serde_json::json!({"bundle": args.out, "manifest": manifest}).to_string())?;
    Ok(Outcome::Success)
}

/// The board file's own `[policy]` table, as a `policy.toml` text.
fn board_policy_section(board_path: &std::path::Path) -> Result<String> {
    let text = input_file::read_to_string(board_path, input_file::BOARD_FILE)?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("board file {}", bundle::escape_path(board_path)))?;
    let Some(policy) = table.get("policy") else {
        bail!(
            "board file {} has no [policy] (its bundle carries it): give --policy FILE",
            bundle::escape_path(board_path)
        );
    };
    let mut section = toml::Table::new();
    section.insert("policy".into(), policy.clone());
    Ok(toml::to_string(&section)?)
}

fn read_secret_key(args: &BundleArgs) -> Result<minisign::SecretKey> {
    let path = &args.secret_key;
    let text = input_file::read_to_string(path, input_file::SECRET_KEY)?;
    let key = match &args.password_file {
        Some(pw_path) => minisign::SecretKey::from_box(text.into(), Some(read_password(pw_path)?)),
        None => minisign::SecretKeyBox::from_string(&text)
            .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key),
    };
    key.map_err(|e| {
        anyhow::anyhow!(
            "secret key {}: {e} (a key made with a password needs --password-file)",
            bundle::escape_path(path)
        )
    })
}

pub(super) fn install(args: InstallBundleArgs) -> Result<Outcome> {
    let target = Board::load_bundle_target(&args.board)?;
    let trusted = bundle::read_public_key(&target.pubkey)?;
    if let Some(given) = &args.pubkey {
        // The daemon checks the installed bundle with the board's key at every start: a
        // bundle signed for another key would install, then never run.
        let given_key = bundle::read_public_key(given)?;
        if given_key != trusted {
            bail!(
                "--pubkey {} is not the key board {} trusts (models.bundle_pubkey = {})",
                bundle::escape_path(given),
                bundle::escape_path(&args.board),
                bundle::escape_path(&target.pubkey)
            );
        }
    }
    let verified = bundle::read(&args.bundle, &trusted)?;
    verified.check_board(&args.bundle, &target.board)?;
    // One install or rollback at a time, from staging to pruning: another one's prune
    // would delete this one's staging folder or just-renamed bundle. A second run waits
    // (bounded, then refuses naming the lock file).
    let lock = bundle::RootLock::acquire(&target.root, bundle::LOCK_WAIT)?;
    let staged = bundle::stage(&verified, &lock)?;
    // The model contract, on this board's engine and settings, with the staged files: a
    // bundle that fails it is removed (dropping `staged`) and the running set stays.
    let board = Board::load_with_bundle(&args.board, staged.dir())?;
    Pipeline::from_board(&board).with_context(|| {
        format!(
            "bundle {}: refused, the models fail their contract",
            bundle::escape_path(&args.bundle)
        )
    })?;
    let id = staged.id().to_string();
    let previous = staged.commit()?;
    tracing::info!(bundle = %id, ?previous, "bundle installed");
    print_line(
        &serde_json::json!({
            "installed": id,
            "label": verified.manifest.label,
            "root": target.root,
            "previous": previous,
            "note": "restart the daemon to run it (systemctl restart agegate)",
        })
        .to_string(),
    )?;
    Ok(Outcome::Success)
}

pub(super) fn rollback(args: RollbackArgs) -> Result<Outcome> {
    let target = Board::load_bundle_target(&args.board)?;
    let key = bundle::read_public_key(&target.pubkey)?;
    let lock = bundle::RootLock::acquire(&target.root, bundle::LOCK_WAIT)?;
    let current = bundle::rollback(&lock, &key)?;
    print_line(
        &serde_json::json!({
            "current": current,
            "root": target.root,
            "note": "restart the daemon to run it (systemctl restart agegate)",
        })
        .to_string(),
    )?;
    Ok(Outcome::Success)
}
