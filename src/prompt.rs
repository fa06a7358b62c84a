//! Asking before a change: a yes/no question on the terminal.

use std::io::{BufRead, IsTerminal, Write};

/// `--yes`, or "y" typed on a terminal; false when stdin is not a terminal.
pub fn confirm(question: &str, yes: bool) -> bool {
    if yes {
        return true;
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if stdin.lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes")
}
