//! Quick start (`fileproxy serve` with no file): the bundled sample media folder as the
//! origin, the in-process store, and random secrets printed once to the terminal.

use std::path::PathBuf;

use anyhow::Context;
use rand::RngCore;

use crate::config::{Config, Secret};

/// Name of the sample media folder shipped in the repository.
pub const SAMPLE_DIR: &str = "sample-media";

/// Fills the quick-start defaults into `cfg` (keeping anything set by environment
/// variables) and prints the generated secrets once.
pub fn apply(cfg: &mut Config) -> anyhow::Result<()> {
    let defaults = Config::default();
    if cfg.origin.url == defaults.origin.url {
        let dir = find_sample_media().context(
            "quick start: sample-media folder not found; run from the repository root or set FILEPROXY_ORIGIN__URL",
        )?;
        cfg.origin.url = format!("file://{}", dir.display())
            .parse()
            .map_err(|why| anyhow::anyhow!("quick start: sample-media folder {dir:?}: {why}"))?;
    }
    let mut generated = Vec::new();
    for (name, slot) in [
        ("auth.secret", &mut cfg.auth.secret),
        ("auth.whitelist_api_key", &mut cfg.auth.whitelist_api_key),
        ("auth.admin_token", &mut cfg.auth.admin_token),
    ] {
        if slot.is_empty() {
            let token = random_token();
            *slot = Secret::from(token.as_str());
            generated.push((name, token));
        }
    }
    println!("FileProxy quick start");
    println!("  listen:  http://{}", cfg.server.listen);
    println!("  origin:  {}", cfg.origin.url);
    println!("  store:   {}", cfg.store.url);
    for (name, value) in &generated {
        println!("  {name:<24} {value}   (generated for this run only)");
    }
    Ok(())
}

/// A 32-byte random token, URL-safe base64.
pub fn random_token() -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn find_sample_media() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from(SAMPLE_DIR)];
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/fileproxy → repository root.
        for up in exe.ancestors().skip(1).take(4) {
            candidates.push(up.join(SAMPLE_DIR));
        }
    }
    candidates.push(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sample-media"
    )));
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .and_then(|p| p.canonicalize().ok())
}
