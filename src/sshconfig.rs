//! The OpenSSH side: the `Host *.sagemaker` block of `~/.ssh/config`, its
//! idempotent installation, and the same options as `-o` arguments for
//! `connect`.
//!
//! Host keys: ssh cannot learn the instance id behind a host name, so the
//! block pins keys by host name in sm-ssh's own known-hosts file
//! (`UserKnownHostsFile`, `StrictHostKeyChecking accept-new`, unhashed so the
//! proxy can forget a name whose instance changed; see `known_hosts`).
//! `connect` knows the id and passes `HostKeyAlias=<instance id>`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub const BEGIN: &str = "# >>> sm-ssh >>>";
pub const END: &str = "# <<< sm-ssh <<<";

/// Keep-alives: SSM drops idle sessions after 20 minutes by default, and a
/// dead tunnel is noticed within two minutes.
const KEEPALIVE: [(&str, &str); 2] = [("ServerAliveInterval", "15"), ("ServerAliveCountMax", "8")];

/// What the block points at.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Absolute path of the sm-ssh binary.
    pub exe: PathBuf,
    /// sm-ssh's private key.
    pub identity: PathBuf,
    /// sm-ssh's known-hosts file.
    pub known_hosts: PathBuf,
}

impl Paths {
    /// This binary, and the key and known-hosts file in the data directory.
    pub fn current() -> anyhow::Result<Paths> {
        let exe = std::env::current_exe().context("finding the path of this sm-ssh binary")?;
        let exe = fs::canonicalize(&exe).unwrap_or(exe);
        Ok(Paths {
            exe,
            identity: crate::keys::identity_path()?,
            known_hosts: crate::keys::known_hosts_path()?,
        })
    }
}

/// The marked block, ending with a newline. `proxy_flags` are global flags
/// baked into the ProxyCommand (e.g. `--profile dev`).
pub fn block(paths: &Paths, proxy_flags: &[String]) -> String {
    let mut proxy = shell_quote(&paths.exe.to_string_lossy());
    for flag in proxy_flags {
        proxy.push(' ');
        proxy.push_str(&shell_quote(flag));
    }
    let mut lines = vec![
        format!(
            "{BEGIN} managed by `sm-ssh config install`; edits between the markers are replaced"
        ),
        "Host *.studio.sagemaker *.space.sagemaker".to_string(),
        "    User sagemaker-user".to_string(),
        "Host *.sagemaker".to_string(),
        "    User root".to_string(),
        format!(
            "    ProxyCommand {} proxy --user %r %h",
            percent_escape(&proxy)
        ),
    ];
    for (key, value) in common_options(paths) {
        lines.push(format!("    {key} {value}"));
    }
    // Back to all hosts, so global options that followed the block's old
    // position keep applying everywhere.
    lines.push("Host *".to_string());
    lines.push(END.to_string());
    lines.join("\n") + "\n"
}

/// Options shared by the config block and `connect`.
fn common_options(paths: &Paths) -> Vec<(&'static str, String)> {
    let mut options = vec![
        ("IdentityFile", config_quote(&paths.identity)),
        ("IdentitiesOnly", "yes".to_string()),
        ("UserKnownHostsFile", config_quote(&paths.known_hosts)),
        ("StrictHostKeyChecking", "accept-new".to_string()),
        ("HashKnownHosts", "no".to_string()),
        ("PasswordAuthentication", "no".to_string()),
        ("ConnectTimeout", "120".to_string()),
    ];
    for (key, value) in KEEPALIVE {
        options.push((key, value.to_string()));
    }
    options
}

/// The same options as arguments for `ssh`: `-o Key=Value` pairs, ready for
/// `Command::args`. `host_key_alias` pins the host key under that name (the
/// instance id); `user` is the login user unless ssh is told otherwise.
pub fn ssh_options(paths: &Paths, user: &str, host_key_alias: Option<&str>) -> Vec<String> {
    let mut options = vec![("User", user.to_string())];
    options.extend(common_options(paths));
    if let Some(alias) = host_key_alias {
        options.push(("HostKeyAlias", alias.to_string()));
    }
    options
        .into_iter()
        .flat_map(|(key, value)| ["-o".to_string(), format!("{key}={value}")])
        .collect()
}

/// `~/.ssh/config`.
pub fn default_config_path() -> anyhow::Result<PathBuf> {
    let home = dirs::home_dir().context("cannot find the home directory; pass --file")?;
    Ok(home.join(".ssh").join("config"))
}

/// What `install` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    /// The block was already there, identical.
    Unchanged,
    /// Written; the previous file (if any) saved at `backup`.
    Written { backup: Option<PathBuf> },
}

/// `text` with the marked block replaced by `block`, or with `block` first
/// when absent (first match wins in ssh_config, so it goes before any
/// catch-all `Host *`).
pub fn with_block(text: &str, block: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let begin = lines.iter().position(|l| l.trim_end().starts_with(BEGIN));
    let end = lines.iter().position(|l| l.trim_end() == END);
    match (begin, end) {
        (Some(begin), Some(end)) if begin < end => {
            let mut out: String = lines[..begin].concat();
            out.push_str(block);
            out.push_str(&lines[end + 1..].concat());
            Ok(out)
        }
        (None, None) => {
            if text.is_empty() {
                Ok(block.to_string())
            } else {
                Ok(format!("{block}\n{text}"))
            }
        }
        _ => bail!(
            "the file has a damaged sm-ssh block (a `{BEGIN}` or `{END}` marker without the \
             other); remove what is left of it and run `sm-ssh config install` again"
        ),
    }
}

/// Adds or updates the block in the ssh config file at `path`, keeping the
/// rest of the file as it is and a backup of the previous version
/// (`<file>.sm-ssh.bak`).
pub fn install(path: &Path, block: &str) -> anyhow::Result<Installed> {
    // Write through a symlink (dotfile managers link ~/.ssh/config).
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let existing = match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let updated = with_block(existing.as_deref().unwrap_or(""), block)
        .with_context(|| format!("updating {}", path.display()))?;
    if existing.as_deref() == Some(updated.as_str()) {
        return Ok(Installed::Unchanged);
    }
    if let Some(dir) = path.parent() {
        crate::keys::create_private_dir(dir)?;
    }
    let backup = match &existing {
        Some(text) => {
            let backup = PathBuf::from(format!("{}.sm-ssh.bak", path.display()));
            fs::write(&backup, text).with_context(|| format!("writing {}", backup.display()))?;
            restrict(&backup)?;
            Some(backup)
        }
        None => None,
    };
    let temp = PathBuf::from(format!(
        "{}.sm-ssh.tmp{}",
        path.display(),
        std::process::id()
    ));
    {
        let mut file =
            fs::File::create(&temp).with_context(|| format!("writing {}", temp.display()))?;
        file.write_all(updated.as_bytes())?;
        file.sync_all()?;
    }
    // ssh refuses a config file others can write; keep it the user's own.
    restrict(&temp)?;
    fs::rename(&temp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(Installed::Written { backup })
}

fn restrict(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    let _ = path;
    Ok(())
}

/// A path for ssh_config: double-quoted when it has spaces, `%` doubled
/// because ssh expands `%` tokens in these options.
fn config_quote(path: &Path) -> String {
    let text = percent_escape(&path.to_string_lossy());
    if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    }
}

fn percent_escape(text: &str) -> String {
    text.replace('%', "%%")
}

/// Quotes a word for `/bin/sh`, which runs ProxyCommand.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            exe: "/opt/sm ssh/bin/sm-ssh".into(),
            identity: "/home/u/.local/share/sm-ssh/id_ed25519".into(),
            known_hosts: "/home/u/.local/share/sm-ssh/known_hosts".into(),
        }
    }

    #[test]
    fn block_has_studio_user_first_and_the_proxy_command() {
        let block = block(&paths(), &["--profile".into(), "dev".into()]);
        let studio = block.find("Host *.studio.sagemaker").unwrap();
        let all = block.find("Host *.sagemaker\n").unwrap();
        assert!(studio < all);
        assert!(block.contains(
            "    ProxyCommand '/opt/sm ssh/bin/sm-ssh' --profile dev proxy --user %r %h\n"
        ));
        assert!(block.contains("    IdentityFile /home/u/.local/share/sm-ssh/id_ed25519\n"));
        assert!(block.contains("    StrictHostKeyChecking accept-new\n"));
        assert!(block.contains("    ServerAliveInterval 15\n    ServerAliveCountMax 8\n"));
        assert!(block.starts_with(BEGIN));
        assert!(block.ends_with(&format!("Host *\n{END}\n")));
    }

    #[test]
    fn ssh_options_are_o_pairs() {
        let options = ssh_options(&paths(), "root", Some("mi-0123456789abcdef0"));
        assert_eq!(options[0], "-o");
        assert_eq!(options[1], "User=root");
        assert!(options.contains(&"HostKeyAlias=mi-0123456789abcdef0".to_string()));
        assert!(options.contains(&"IdentitiesOnly=yes".to_string()));
        assert!(options.chunks(2).all(|pair| pair[0] == "-o"));
    }

    #[test]
    fn paths_with_spaces_and_percent_are_quoted() {
        assert_eq!(config_quote(Path::new("/a b/%k")), "\"/a b/%%k\"");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("/usr/bin/sm-ssh"), "/usr/bin/sm-ssh");
    }

    #[test]
    fn with_block_prepends_once_then_replaces_in_place() {
        let original = "Host work\n    User me\n";
        let first = with_block(original, "# >>> sm-ssh >>> v1\nA\n# <<< sm-ssh <<<\n").unwrap();
        assert!(first.starts_with("# >>> sm-ssh >>> v1\n"));
        assert!(first.ends_with(original));
        let second = with_block(&first, "# >>> sm-ssh >>> v2\nB\n# <<< sm-ssh <<<\n").unwrap();
        assert_eq!(
            second,
            format!("# >>> sm-ssh >>> v2\nB\n# <<< sm-ssh <<<\n\n{original}")
        );
        assert!(with_block("# >>> sm-ssh >>>\nHost x\n", "b").is_err());
        assert_eq!(with_block("", "b\n").unwrap(), "b\n");
    }

    #[test]
    fn install_twice_keeps_one_block_the_rest_and_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/config");
        let block = block(&paths(), &[]);
        assert_eq!(
            install(&path, &block).unwrap(),
            Installed::Written { backup: None }
        );
        assert_eq!(install(&path, &block).unwrap(), Installed::Unchanged);
        let rest = "Host *\n    ForwardAgent no\n";
        let text = fs::read_to_string(&path).unwrap() + rest;
        fs::write(&path, &text).unwrap();
        let newer = block.replace("ServerAliveInterval 15", "ServerAliveInterval 20");
        let Installed::Written {
            backup: Some(backup),
        } = install(&path, &newer).unwrap()
        else {
            panic!("expected a backup");
        };
        assert_eq!(fs::read_to_string(backup).unwrap(), text);
        let now = fs::read_to_string(&path).unwrap();
        assert_eq!(now.matches(BEGIN).count(), 1);
        assert!(now.contains("ServerAliveInterval 20"));
        assert!(now.ends_with(rest));
    }
}
