//! Diagnostics: `-v` (debug) and `-vv` (trace) on stderr; `SM_SSH_LOG=<file>`
//! appends them to a file instead, because IDEs hide a ProxyCommand's stderr.
//! Nothing is ever written to stdout: in proxy mode it carries the tunnel.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// The variable naming the log file.
pub const LOG_FILE_ENV: &str = "SM_SSH_LOG";

/// The filter for `verbose` (count of `-v`), for a destination that is the
/// file (`to_file`, where at least debug is kept) or stderr.
fn filter(verbose: u8, to_file: bool) -> EnvFilter {
    let ours = match (verbose, to_file) {
        (0, false) => "warn",
        (0 | 1, _) => "debug",
        _ => "trace",
    };
    // Our crates at the chosen level; the AWS SDK and friends quieter
    // (their warnings are about things our own errors explain better).
    let others = match verbose {
        0 => "error",
        1 => "warn",
        _ => "debug",
    };
    EnvFilter::new(format!(
        "{others},sm_ssh={ours},sm_ssh_proxy={ours},sm_ssh_integration={ours}"
    ))
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
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter(verbose, true))
                    .with_writer(Mutex::new(file))
                    .with_ansi(false)
                    .try_init();
                return;
            }
            Err(error) => eprintln!(
                "sm-ssh: cannot open {LOG_FILE_ENV}={}: {error}; logging to stderr",
                path.display()
            ),
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(verbose, false))
        .with_writer(std::io::stderr)
        .try_init();
}
