//! `sm-ssh cp`'s machinery: files split into ranges moved over N Session
//! Manager sessions at once, each carrying an in-process SSH connection,
//! verified with SHA-256 and resumable. See docs/cp.md.

pub mod engine;
pub mod fleet;
pub mod plan;
pub mod progress;
pub mod remote;
pub mod state;
pub mod whole;
