//! The warm-path cache: what an earlier `proxy` or `connect` learnt, so that
//! a reconnect within minutes makes one API call (StartSession).
//!
//! One JSON file per scope (profile, region, SSM and STS endpoints) in the
//! user's cache directory (`~/.cache/sm-ssh`, or `$SM_SSH_HOME/cache`):
//! - the caller's `aws:userid`, kept while the credentials' access key id is
//!   the same (a new login or rotated key asks STS again);
//! - name → instance resolutions, for [`RESOLUTION_TTL`], with the same
//!   credentials only.
//!
//! Nothing secret is stored: access key ids only as a hash, no tokens. The
//! file is written atomically (a temporary file renamed over it, mode 0600);
//! a missing, unreadable or other-version file is an empty cache.
//! `--no-cache` or `SM_SSH_NO_CACHE=1` bypasses it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::resolve::candidate::Candidate;

/// How long a resolution is trusted: long enough for IDE reconnects, short
/// enough that a new run of a job is found soon (a vanished instance is
/// noticed at once: StartSession says TargetNotConnected).
pub const RESOLUTION_TTL: Duration = Duration::from_secs(600);

/// Set to anything but `0` or empty: resolve afresh, read and write no cache.
pub const NO_CACHE_VAR: &str = "SM_SSH_NO_CACHE";

/// Bumped when the layout changes; other versions read as empty.
const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    version: u32,
    #[serde(default)]
    identity: Option<CachedIdentity>,
    #[serde(default)]
    reaches: BTreeMap<String, CachedReach>,
    /// `scheme://host[:port]` of the last session's StreamUrl, for the early
    /// dial of the next (no path, no query: nothing of the session).
    #[serde(default)]
    stream_origin: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedIdentity {
    /// [`credentials_id`] of the credentials it was asked with.
    credentials: String,
    user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedReach {
    credentials: String,
    /// Epoch seconds of the resolution.
    at: u64,
    instance: Candidate,
}

/// The cache of one scope, loaded once per process; changes are written at once.
#[derive(Debug)]
pub struct Cache {
    file: PathBuf,
    /// Identifies the credentials in use (see [`credentials_id`]).
    credentials: String,
    contents: Mutex<Contents>,
}

/// Whether the environment asks to bypass the cache.
pub fn bypassed_by_env() -> bool {
    std::env::var(NO_CACHE_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A stable, non-secret name for credentials: a hash of the access key id.
pub fn credentials_id(access_key_id: &str) -> String {
    let digest = Sha256::digest(format!("sm-ssh access key {access_key_id}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where cache files live: `$SM_SSH_HOME/cache` when sm-ssh's data directory
/// is overridden (tests, self-contained installs), else the user's cache dir.
pub fn dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os(crate::keys::HOME_ENV).filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("cache"));
    }
    Some(dirs::cache_dir()?.join("sm-ssh"))
}

/// The file of a scope: everything that decides which account, region and
/// service endpoints the calls reach.
pub fn file_for(dir: &Path, scope: &[&str]) -> PathBuf {
    let digest = Sha256::digest(scope.join("\n").as_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("warm-{name}.json"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Cache {
    /// Loads `file` for credentials `credentials` (see [`credentials_id`]).
    pub fn load(file: PathBuf, credentials: String) -> Cache {
        let contents = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Contents>(&bytes).ok())
            .filter(|c| c.version == VERSION)
            .unwrap_or_default();
        Cache {
            file,
            credentials,
            contents: Mutex::new(contents),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contents> {
        self.contents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller's `aws:userid`, if asked with these credentials.
    pub fn user_id(&self) -> Option<String> {
        self.lock()
            .identity
            .as_ref()
            .filter(|i| i.credentials == self.credentials)
            .map(|i| i.user_id.clone())
    }

    pub fn set_user_id(&self, user_id: &str) {
        self.update(|c| {
            c.identity = Some(CachedIdentity {
                credentials: self.credentials.clone(),
                user_id: user_id.to_owned(),
            })
        });
    }

    /// The instance `key` resolved to less than [`RESOLUTION_TTL`] ago with
    /// these credentials.
    pub fn reach(&self, key: &str) -> Option<Candidate> {
        let contents = self.lock();
        let entry = contents.reaches.get(key)?;
        let fresh = now().saturating_sub(entry.at) < RESOLUTION_TTL.as_secs();
        (fresh && entry.credentials == self.credentials).then(|| entry.instance.clone())
    }

    /// Records that each of `keys` resolves to `instance` now; drops expired entries.
    pub fn set_reach(&self, keys: &[String], instance: &Candidate) {
        let at = now();
        self.update(|c| {
            c.reaches
                .retain(|_, e| at.saturating_sub(e.at) < RESOLUTION_TTL.as_secs());
            for key in keys {
                c.reaches.insert(
                    key.clone(),
                    CachedReach {
                        credentials: self.credentials.clone(),
                        at,
                        instance: instance.clone(),
                    },
                );
            }
        });
    }

    /// The origin of the last session's StreamUrl.
    pub fn stream_origin(&self) -> Option<String> {
        self.lock().stream_origin.clone()
    }

    /// Records the origin of `stream_url` (written only when it changed).
    pub fn set_stream_origin(&self, stream_url: &str) {
        let origin = crate::session::origin_of(stream_url);
        if origin.is_some() && self.lock().stream_origin != origin {
            self.update(|c| c.stream_origin = origin);
        }
    }

    /// Drops every resolution to `instance_id` (it is gone or not connected).
    pub fn forget_instance(&self, instance_id: &str) {
        self.update(|c| {
            c.reaches
                .retain(|_, e| e.instance.instance_id != instance_id);
        });
    }

    /// The same cache as another process may have changed it since.
    pub fn reloaded(&self) -> Cache {
        Cache::load(self.file.clone(), self.credentials.clone())
    }

    /// Changes the contents and writes them; a cache that cannot be written
    /// only costs the next connection its speed.
    fn update(&self, change: impl FnOnce(&mut Contents)) {
        let mut contents = self.lock();
        change(&mut contents);
        contents.version = VERSION;
        if let Err(error) = write_atomically(&self.file, &contents) {
            tracing::debug!(file = %self.file.display(), %error, "cannot write the cache");
        }
    }
}

fn write_atomically(file: &Path, contents: &Contents) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // NamedTempFile is created 0600; renaming keeps readers from ever seeing half a file.
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut temp, contents)?;
    temp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str) -> Candidate {
        Candidate {
            instance_id: id.into(),
            ping_status: "Online".into(),
            ..Candidate::default()
        }
    }

    #[test]
    fn entries_survive_a_reload_for_the_same_credentials_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_for(dir.path(), &["p", "eu-west-1", "http://ssm", "http://sts"]);
        let cache = Cache::load(file.clone(), credentials_id("AKIAONE"));
        cache.set_user_id("AIDAONE");
        cache.set_reach(&["job".into(), "mi-1".into()], &candidate("mi-1"));

        let again = Cache::load(file.clone(), credentials_id("AKIAONE"));
        assert_eq!(again.user_id().as_deref(), Some("AIDAONE"));
        assert_eq!(again.reach("job").unwrap().instance_id, "mi-1");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("AKIAONE"), "{text}");

        let other = Cache::load(file, credentials_id("AKIATWO"));
        assert_eq!(other.user_id(), None);
        assert!(other.reach("job").is_none());
    }

    #[test]
    fn forgetting_an_instance_drops_every_name_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::load(dir.path().join("c.json"), "x".into());
        cache.set_reach(&["job".into(), "mi-1".into()], &candidate("mi-1"));
        cache.set_reach(&["other".into()], &candidate("mi-2"));
        cache.forget_instance("mi-1");
        assert!(cache.reach("job").is_none() && cache.reach("mi-1").is_none());
        assert!(cache.reach("other").is_some());
    }

    #[test]
    fn old_entries_and_foreign_files_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        std::fs::write(&file, "not json").unwrap();
        let cache = Cache::load(file.clone(), "x".into());
        assert!(cache.reach("job").is_none());
        cache.set_reach(&["job".into()], &candidate("mi-1"));
        cache.update(|c| c.reaches.get_mut("job").unwrap().at -= RESOLUTION_TTL.as_secs());
        assert!(cache.reach("job").is_none());
        let mut contents: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        contents["version"] = 99.into();
        std::fs::write(&file, contents.to_string()).unwrap();
        let cache = Cache::load(file, "x".into());
        cache.set_user_id("AIDA");
        assert_eq!(cache.reloaded().user_id().as_deref(), Some("AIDA"));
    }
}
