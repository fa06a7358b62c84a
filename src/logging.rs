//! Diagnostics: `-v` (debug) and `-vv` (trace) on stderr; `SM_SSH_LOG=<file>`
//! appends them to a file instead, because IDEs hide a ProxyCommand's stderr.
//! Nothing is ever written to stdout: in proxy mode it carries the tunnel.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

/// The variable naming the log file.
pub const LOG_FILE_ENV: &str = "SM_SSH_LOG";

/// The filter for `verbose` (count of `-v`), for a destination that is the
/// file (`to_file`, where at least debug is kept) or stderr.
fn filter(verbose: u8, to_file: bool) -> Targets {
    let ours = match (verbose, to_file) {
        (0, false) => LevelFilter::WARN,
        (0 | 1, _) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // Our crates at the chosen level; the AWS SDK and friends quieter
    // (their warnings are about things our own errors explain better).
    let others = match verbose {
        0 => LevelFilter::ERROR,
        1 => LevelFilter::WARN,
        _ => LevelFilter::DEBUG,
    };
    Targets::new()
        .with_default(others)
        .with_targets(["sm_ssh", "sm_ssh_proxy", "sm_ssh_integration"].map(|t| (t, ours)))
}

/// Installs the global subscriber. A log file that cannot be opened is
/// reported on stderr and logging falls back to stderr.
pub fn init(verbose: u8) {
    let file = std::env::var_os(LOG_FILE_ENV)
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    if let Some(path) = file {
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => {
                let layer = tracing_subscriber::fmt::layer()
                    .with_writer(Mutex::new(file))
                    .with_ansi(false);
                let _ = tracing_subscriber::registry()
                    .with(layer)
                    .with(filter(verbose, true))
                    .try_init();
                return;
            }
            Err(error) => eprintln!(
                "sm-ssh: cannot open {LOG_FILE_ENV}={}: {error}; logging to stderr",
                path.display()
            ),
        }
    }
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter(verbose, false))
        .try_init();
}
