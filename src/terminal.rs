//! The local terminal of `sm-ssh shell` and `sm-ssh exec --interactive`:
//! raw mode (restored on drop, so on every return, error and unwinding
//! panic), the window size, and keystrokes read on a thread of their own.

use std::io::Read;

use bytes::Bytes;
use rustix::termios::{self, OptionalActions, Termios};
use sm_ssh_proxy::payload::Size;
use tokio::sync::mpsc;

/// The plugin's size when the terminal reports none (`shellsession.go`).
const DEFAULT_SIZE: Size = Size {
    cols: 300,
    rows: 100,
};
/// The plugin's stdin read size (`StdinBufferLimit`).
const READ_CHUNK: usize = 1024;

/// Whether stdin is a terminal (then the session gets raw mode and sizes).
pub fn stdin_is_terminal() -> bool {
    termios::isatty(std::io::stdin())
}

/// Raw mode on stdin until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode: every key, Ctrl-C, Ctrl-\ and Ctrl-Z included,
    /// reaches the remote terminal as a byte.
    pub fn enter() -> std::io::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The terminal's size (stdout's, as the plugin asks), or the plugin's default.
pub fn size() -> Size {
    [
        termios::tcgetwinsize(std::io::stdout()),
        termios::tcgetwinsize(std::io::stdin()),
    ]
    .into_iter()
    .flatten()
    .find(|w| w.ws_col > 0 && w.ws_row > 0)
    .map_or(DEFAULT_SIZE, |w| Size {
        cols: u32::from(w.ws_col),
        rows: u32::from(w.ws_row),
    })
}

/// Reads stdin on a plain thread (a blocking read cannot be cancelled, and
/// one in tokio's pool would hold the runtime open at exit) and sends each
/// read of at most 1024 bytes to `tx`; `eof` is sent after the last one.
pub fn spawn_stdin_reader(tx: mpsc::Sender<Bytes>, eof: Option<u8>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return;
                    }
                }
            }
        }
        if let Some(byte) = eof {
            let _ = tx.blocking_send(Bytes::copy_from_slice(&[byte]));
        }
    });
}
