//! The `fileproxy` command: parses arguments and wires the library's parts together.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fileproxy::config::Config;
use tokio_util::sync::CancellationToken;

/// Authenticated edge proxy for HLS video.
#[derive(Parser)]
#[command(name = "fileproxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server; with no --config, the quick-start defaults.
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a signed playlist URL: "/a/b.m3u8?uid=U&expires=E&token=T".
    Sign {
        /// TOML configuration file (for auth.secret).
        #[arg(long)]
        config: PathBuf,
        /// Viewer uid.
        #[arg(long)]
        uid: String,
        /// Playlist path, e.g. /media/demo/index.m3u8.
        #[arg(long)]
        path: String,
        /// Seconds until the token expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Check a configuration file: exit 0, or 1 naming each bad key.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Sign {
            config,
            uid,
            path,
            ttl,
        } => sign(&config, &uid, &path, ttl),
        Command::CheckConfig { config } => check_config(&config),
    }
}

fn load_checked(path: Option<&Path>) -> Result<Config, ExitCode> {
    let cfg = Config::load(path).map_err(|e| {
        eprintln!("fileproxy: {e}");
        ExitCode::from(1)
    })?;
    cfg.validate().map_err(|e| {
        eprintln!("fileproxy: {e}");
        ExitCode::from(1)
    })?;
    Ok(cfg)
}

fn check_config(path: &Path) -> ExitCode {
    let cfg = match load_checked(Some(path)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = cfg.validate_secrets() {
        eprintln!("fileproxy: {e}");
        return ExitCode::from(1);
    }
    println!("{}: configuration OK", path.display());
    ExitCode::SUCCESS
}

fn sign(path: &Path, uid: &str, file: &str, ttl: u64) -> ExitCode {
    let cfg = match load_checked(Some(path)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.auth.secret.is_empty() {
        eprintln!("fileproxy: auth.secret is required to sign (set it in the file or FILEPROXY_AUTH__SECRET)");
        return ExitCode::from(1);
    }
    if uid.is_empty() || !file.starts_with('/') {
        eprintln!("fileproxy: --uid must be non-empty and --path must start with /");
        return ExitCode::from(1);
    }
    let now = fileproxy::clock::unix_secs();
    println!(
        "{}",
        fileproxy::access::token::sign_url(
            cfg.auth.secret.expose().as_bytes(),
            uid,
            file,
            ttl,
            now
        )
    );
    ExitCode::SUCCESS
}

fn serve(path: Option<&Path>) -> ExitCode {
    let mut cfg = match load_checked(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let quick_start = path.is_none();
    if quick_start {
        if let Err(e) = fileproxy::quickstart::apply(&mut cfg) {
            eprintln!("fileproxy: {e:#}");
            return ExitCode::from(1);
        }
    }
    if let Err(e) = cfg.validate().and_then(|_| cfg.validate_secrets()) {
        eprintln!("fileproxy: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = fileproxy::logging::init(&cfg.log) {
        eprintln!("fileproxy: {e:#}");
        return ExitCode::from(1);
    }
    match fileproxy::server::sockopt::raise_open_files_limit() {
        Ok(n) => tracing::debug!(limit = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fileproxy: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(fileproxy::serve::run(
        cfg,
        path.map(Path::to_path_buf),
        CancellationToken::new(),
        true,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fileproxy: {e:#}");
            ExitCode::from(1)
        }
    }
}
