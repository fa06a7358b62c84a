//! The sidecar state of one file's copy, for resume: which ranges are done
//! and verified (with their SHA-256), kept in sm-ssh's data directory under a
//! name derived from what is copied where, and removed once the file is
//! complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::plan::{Direction, Item};

/// What a resumed copy must agree with, and what it may skip.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub size: u64,
    pub mtime: i64,
    pub range_size: u64,
    /// Range index → SHA-256 of its bytes, verified on both sides.
    pub done: BTreeMap<u64, String>,
}

/// Where one file's state lives.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path, direction: Direction, instance_id: &str, item: &Item) -> StateFile {
        let local = std::path::absolute(&item.local).unwrap_or_else(|_| item.local.clone());
        let key = format!(
            "{direction:?}\n{instance_id}\n{}\n{}",
            item.remote,
            local.display()
        );
        let name: String = Sha256::digest(key.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        StateFile {
            path: dir.join(format!("{name}.json")),
        }
    }

    /// The state of an earlier copy of the same source, if there is one.
    pub fn load(&self, item: &Item) -> Option<State> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let state: State = serde_json::from_str(&text).ok()?;
        (state.size == item.size && state.mtime == item.mtime && state.range_size > 0)
            .then_some(state)
    }

    /// Saves `state` (write then rename: a crash leaves the old or the new one).
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = self.path.with_extension("tmp");
        std::fs::write(&temp, serde_json::to_vec(state)?)?;
        std::fs::rename(&temp, &self.path)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_changed_source_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut item = Item {
            local: "/tmp/x".into(),
            remote: "/r/x".into(),
            size: 10,
            mtime: 5,
            mode: 0o644,
        };
        let file = StateFile::new(dir.path(), Direction::Upload, "mi-1", &item);
        let state = State {
            size: 10,
            mtime: 5,
            range_size: 4,
            done: [(1, "ab".to_owned())].into(),
        };
        file.save(&state).unwrap();
        assert_eq!(file.load(&item), Some(state));
        item.mtime = 6;
        assert_eq!(file.load(&item), None);
        file.remove();
        item.mtime = 5;
        assert_eq!(file.load(&item), None);
    }
}
