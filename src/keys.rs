//! sm-ssh's own SSH identity: one ed25519 key in its data directory, made in
//! process (no ssh-keygen), private file mode 0600. Its public half is what
//! the key push authorises on instances.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};

/// Overrides the data directory (tests, several identities side by side).
pub const HOME_ENV: &str = "SM_SSH_HOME";
const KEY_FILE: &str = "id_ed25519";
const KNOWN_HOSTS_FILE: &str = "known_hosts";
const COMMENT: &str = "sm-ssh";

/// `$SM_SSH_HOME`, else the platform data directory + `sm-ssh`
/// (`~/.local/share/sm-ssh` on Linux, `~/Library/Application Support/sm-ssh`
/// on macOS).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let base = dirs::data_dir().context(
        "cannot tell where to keep sm-ssh's key: no home directory; set SM_SSH_HOME to a directory",
    )?;
    Ok(base.join("sm-ssh"))
}

/// The private key's path (the public key is next to it, `.pub`).
pub fn identity_path() -> anyhow::Result<PathBuf> {
    Ok(data_dir()?.join(KEY_FILE))
}

/// sm-ssh's own known-hosts file, so pinned instance host keys never mix
/// with `~/.ssh/known_hosts`.
pub fn known_hosts_path() -> anyhow::Result<PathBuf> {
    Ok(data_dir()?.join(KNOWN_HOSTS_FILE))
}

/// The identity, loaded or created.
#[derive(Clone, Debug)]
pub struct Identity {
    path: PathBuf,
    key: PrivateKey,
}

impl Identity {
    /// Loads the key from the data directory, creating it the first time.
    pub fn ensure() -> anyhow::Result<Identity> {
        Identity::ensure_at(&identity_path()?)
    }

    /// Loads the key at `path`, creating it (and its directory) if absent.
    pub fn ensure_at(path: &Path) -> anyhow::Result<Identity> {
        if !path.exists() {
            create(path)?;
        }
        let key = PrivateKey::read_openssh_file(path)
            .with_context(|| format!("reading sm-ssh's key {}", path.display()))?;
        if key.is_encrypted() {
            bail!(
                "{} is encrypted; sm-ssh needs its own unencrypted key there (move it away and \
                 sm-ssh makes a new one)",
                path.display()
            );
        }
        Ok(Identity {
            path: path.to_path_buf(),
            key,
        })
    }

    /// The private key file, for ssh's `IdentityFile`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key itself, for an in-process SSH client.
    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// `ssh-ed25519 AAAA… sm-ssh`: one authorized_keys line.
    pub fn public_key_line(&self) -> String {
        let mut public = self.key.public_key().clone();
        public.set_comment(COMMENT);
        public.to_openssh().expect("an ed25519 key encodes")
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }
}

/// Writes a new key pair: the private key through a file created with mode
/// 0600 and renamed into place, so a half-written key is never read.
fn create(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .context("the key path has no parent directory")?;
    create_private_dir(dir)?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    key.set_comment(COMMENT);
    let pem = key
        .to_openssh(LineEnding::LF)
        .context("encoding the new key")?;
    let temp = path.with_extension(format!(
        "tmp{}-{:x}",
        std::process::id(),
        rand::rng().next_u64()
    ));
    {
        let mut file =
            private_file(&temp).with_context(|| format!("creating {}", temp.display()))?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
    }
    // A link fails if the key exists: when several sm-ssh processes start
    // at once (an IDE opening connections), one key wins and all use it.
    let linked = match fs::hard_link(&temp, path) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Err(error),
        // File systems without hard links: a plain rename, racy but working.
        Err(_) if !path.exists() => fs::rename(&temp, path),
        other => other,
    };
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("storing the new key as {}", path.display()))
        }
    }
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the public key")?
        + "\n";
    fs::write(path.with_extension("pub"), public)
        .with_context(|| format!("writing {}.pub", path.display()))?;
    tracing::info!(path = %path.display(), "created sm-ssh's ed25519 key");
    Ok(())
}

/// Creates `dir` (mode 0700 on Unix) if it does not exist.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_stable_and_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/id_ed25519");
        let first = Identity::ensure_at(&path).unwrap();
        let again = Identity::ensure_at(&path).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert!(first.fingerprint().starts_with("SHA256:"));
        let line = first.public_key_line();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" sm-ssh"), "{line}");
        let public = fs::read_to_string(path.with_extension("pub")).unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        let other = Identity::ensure_at(&dir.path().join("other")).unwrap();
        assert_ne!(other.fingerprint(), first.fingerprint());
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        let fingerprints: Vec<String> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| Identity::ensure_at(&path).unwrap().fingerprint()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(fingerprints.iter().all(|f| *f == fingerprints[0]));
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "only the key and its .pub remain");
    }

    #[test]
    fn a_garbage_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        fs::write(&path, "not a key").unwrap();
        let error = Identity::ensure_at(&path).unwrap_err();
        assert!(format!("{error:#}").contains(&path.display().to_string()));
    }
}
