//! Which files go where: the operands (`<target>:<path>` on one side, like
//! scp), the destination rules of `cp`/`scp` (into a directory, or to a new
//! name), `-r` trees on either side, and each file's ranges.

use std::path::{Path, PathBuf};

use crate::error::{exit, Failure};

use super::fleet::Worker;
use super::remote;

/// One command-line operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    Local(PathBuf),
    Remote(RemoteSpec),
}

/// `[user@]target:path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    pub user: Option<String>,
    pub target: String,
    /// As typed; empty means the login directory.
    pub path: String,
}

/// Targets Session Manager names with a colon inside (`sagemaker-cluster:…`).
const NATIVE_PREFIXES: [&str; 4] = [
    "sagemaker-cluster:",
    "sagemaker-training-job:",
    "sagemaker-endpoint:",
    "ecs:",
];

impl Operand {
    /// scp's rule: a colon before any slash makes a remote operand; a path
    /// starting with `/` or `.` is always local.
    pub fn parse(text: &str) -> Operand {
        if text.starts_with('/') || text.starts_with('.') {
            return Operand::Local(text.into());
        }
        let (user, rest) = match text.split_once('@') {
            Some((user, rest)) if !user.contains(['/', ':']) => (Some(user.to_owned()), rest),
            _ => (None, text),
        };
        let skip = NATIVE_PREFIXES
            .iter()
            .find(|p| rest.starts_with(*p))
            .map_or(0, |p| p.len());
        match rest[skip..].find(':').map(|i| i + skip) {
            Some(colon) if !rest[..colon].contains('/') && colon > 0 => {
                Operand::Remote(RemoteSpec {
                    user,
                    target: rest[..colon].to_owned(),
                    path: rest[colon + 1..].to_owned(),
                })
            }
            _ => Operand::Local(text.into()),
        }
    }
}

/// Which way the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
}

/// One file to copy.
#[derive(Clone, Debug)]
pub struct Item {
    pub local: PathBuf,
    pub remote: String,
    /// The source's size and modification time (seconds), for resume.
    pub size: u64,
    pub mtime: i64,
    /// Permission bits given to an uploaded file.
    pub mode: u32,
}

/// Everything a copy does.
#[derive(Debug)]
pub struct Plan {
    pub direction: Direction,
    /// Directories to create on the receiving side first (-r), parents first.
    pub dirs: Vec<String>,
    pub items: Vec<Item>,
}

fn usage(message: String) -> anyhow::Error {
    Failure::new(exit::USAGE, message).into()
}

fn failure(message: String) -> anyhow::Error {
    Failure::new(exit::FAILURE, message).into()
}

/// `dir/name` for a remote directory.
fn remote_join(dir: &str, name: &str) -> String {
    match dir.trim_end_matches('/') {
        "" if dir.starts_with('/') => format!("/{name}"),
        "" => name.to_owned(),
        base => format!("{base}/{name}"),
    }
}

fn remote_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
}

fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| usage(format!("{}: the name is not UTF-8", path.display())))
}

/// The mode of a received file whose source's mode is not known.
const DEFAULT_MODE: u32 = 0o644;

/// Permission bits from the far side's octal `stat` output.
fn octal_mode(text: &str) -> u32 {
    u32::from_str_radix(text, 8).map_or(DEFAULT_MODE, |m| m & 0o777)
}

/// What `remote::probe` said.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File { size: u64, mtime: i64, mode: u32 },
    Other,
    Missing,
}

async fn probe(worker: &Worker, host: &str, path: &str) -> anyhow::Result<Kind> {
    let out = worker.check(&remote::probe(path), host, path).await?;
    let mut words = out.split_whitespace();
    Ok(match words.next() {
        Some("d") => Kind::Dir,
        Some("f") => {
            let size = words.next().and_then(|w| w.parse().ok());
            let mtime = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let mode = words.next().map_or(DEFAULT_MODE, octal_mode);
            match size {
                Some(size) => Kind::File { size, mtime, mode },
                None => return Err(failure(format!("{host}:{path}: cannot read its size"))),
            }
        }
        Some("o") => Kind::Other,
        _ => Kind::Missing,
    })
}

/// Local files to `dest` on the instance `host`.
pub async fn upload(
    worker: &Worker,
    host: &str,
    sources: &[PathBuf],
    dest: &str,
    recursive: bool,
) -> anyhow::Result<Plan> {
    let dest_kind = probe(worker, host, dest).await?;
    let into_dir = dest_kind == Kind::Dir;
    if !into_dir && (sources.len() > 1 || dest.ends_with('/')) {
        return Err(failure(format!(
            "{host}:{dest}: {}",
            if dest_kind == Kind::Missing {
                "No such directory"
            } else {
                "Not a directory"
            }
        )));
    }
    let mut plan = Plan {
        direction: Direction::Upload,
        dirs: Vec::new(),
        items: Vec::new(),
    };
    for source in sources {
        let meta =
            std::fs::metadata(source).map_err(|e| failure(format!("{}: {e}", source.display())))?;
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        let base = if into_dir {
            remote_join(dest, &name)
        } else {
            dest.to_owned()
        };
        if meta.is_dir() {
            if !recursive {
                return Err(usage(format!(
                    "{}: is a directory (add -r)",
                    source.display()
                )));
            }
            if !into_dir && matches!(dest_kind, Kind::File { .. } | Kind::Other) {
                return Err(failure(format!(
                    "{host}:{dest}: cannot overwrite a non-directory with the directory {}",
                    source.display()
                )));
            }
            plan.dirs.push(base.clone());
            walk_local(source, &base, &mut plan, &mut vec![dir_id(&meta)])?;
        } else if meta.is_file() {
            plan.items.push(local_item(source, base, &meta));
        } else {
            return Err(failure(format!("{}: not a regular file", source.display())));
        }
    }
    Ok(plan)
}

fn local_item(path: &Path, remote: String, meta: &std::fs::Metadata) -> Item {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    Item {
        local: path.to_owned(),
        remote,
        size: meta.len(),
        mtime: meta.mtime(),
        mode: meta.permissions().mode() & 0o777,
    }
}

/// A directory's identity, to notice a symbolic link leading back up.
fn dir_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// Adds `dir`'s tree under `remote`, following symbolic links as scp does;
/// a dangling link or one back to a directory above (`ancestors`) is
/// skipped with a warning.
fn walk_local(
    dir: &Path,
    remote: &str,
    plan: &mut Plan,
    ancestors: &mut Vec<(u64, u64)>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failure(format!("{}: {e}", dir.display())))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = utf8(Path::new(&entry.file_name()))?.to_owned();
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.is_symlink() => {
                eprintln!(
                    "sm-ssh: skipping {}: a dangling symbolic link",
                    path.display()
                );
                continue;
            }
            Err(e) => return Err(failure(format!("{}: {e}", path.display()))),
        };
        let target = remote_join(remote, &name);
        if meta.is_dir() {
            if ancestors.contains(&dir_id(&meta)) {
                eprintln!("sm-ssh: skipping {}: a symbolic link loop", path.display());
                continue;
            }
            plan.dirs.push(target.clone());
            ancestors.push(dir_id(&meta));
            walk_local(&path, &target, plan, ancestors)?;
            ancestors.pop();
        } else if meta.is_file() {
            plan.items.push(local_item(&path, target, &meta));
        } else {
            eprintln!("sm-ssh: skipping {}: not a regular file", path.display());
        }
    }
    Ok(())
}

/// Files on the instance `host` to the local `dest`.
pub async fn download(
    worker: &Worker,
    host: &str,
    sources: &[String],
    dest: &Path,
    recursive: bool,
) -> anyhow::Result<Plan> {
    let into_dir = dest.is_dir();
    let dest_text = dest.display().to_string();
    if !into_dir && (sources.len() > 1 || dest_text.ends_with('/')) {
        return Err(failure(format!(
            "{dest_text}: {}",
            if dest.exists() {
                "Not a directory"
            } else {
                "No such directory"
            }
        )));
    }
    let mut plan = Plan {
        direction: Direction::Download,
        dirs: Vec::new(),
        items: Vec::new(),
    };
    for source in sources {
        let base = if into_dir {
            dest.join(remote_name(source))
        } else {
            dest.to_owned()
        };
        match probe(worker, host, source).await? {
            Kind::Missing => {
                return Err(failure(format!(
                    "{host}:{source}: No such file or directory"
                )))
            }
            Kind::Other => return Err(failure(format!("{host}:{source}: not a regular file"))),
            Kind::File { size, mtime, mode } => plan.items.push(Item {
                local: base,
                remote: source.clone(),
                size,
                mtime,
                mode,
            }),
            Kind::Dir if !recursive => {
                return Err(usage(format!("{host}:{source}: is a directory (add -r)")))
            }
            Kind::Dir => {
                if base.exists() && !base.is_dir() {
                    return Err(failure(format!(
                        "{}: cannot overwrite a non-directory with the directory {host}:{source}",
                        base.display()
                    )));
                }
                let listing = worker
                    .check(&remote::list_tree(source), host, source)
                    .await?;
                plan.dirs.push(utf8(&base)?.to_owned());
                read_listing(&listing, source, &base, &mut plan)?;
            }
        }
    }
    Ok(plan)
}

/// Turns `remote::list_tree`'s lines into directories and items.
fn read_listing(listing: &str, source: &str, base: &Path, plan: &mut Plan) -> anyhow::Result<()> {
    for line in listing.lines() {
        if let Some(rel) = line.strip_prefix("d ./") {
            plan.dirs.push(utf8(&base.join(rel))?.to_owned());
        } else if let Some(rest) = line.strip_prefix("f ") {
            let mut fields = rest.splitn(4, ' ');
            let (Some(size), Some(mtime), Some(mode), Some(rel)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let rel = rel.strip_prefix("./").unwrap_or(rel);
            plan.items.push(Item {
                local: base.join(rel),
                remote: remote_join(source, rel),
                size: size.parse().unwrap_or(0),
                mtime: mtime.parse().unwrap_or(0),
                mode: octal_mode(mode),
            });
        }
    }
    plan.dirs.sort();
    Ok(())
}

/// The range size for a file of `size` bytes over `sessions` sessions: two
/// ranges per session, in 64 KiB steps, between 1 MiB and 16 MiB.
pub fn range_size(size: u64, sessions: u64) -> u64 {
    const STEP: u64 = 64 << 10;
    let per = size.div_ceil(sessions.max(1) * 2).div_ceil(STEP) * STEP;
    per.clamp(1 << 20, 16 << 20)
}

/// How many ranges of `range_size` a file of `size` bytes has (at least one,
/// so that empty files are created too).
pub fn range_count(size: u64, range_size: u64) -> u64 {
    size.div_ceil(range_size).max(1)
}

/// The default number of sessions for `total` bytes.
pub fn default_sessions(total: u64) -> u16 {
    match total {
        t if t < 2 << 20 => 1,
        t if t < 16 << 20 => 2,
        t if t < 64 << 20 => 4,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(user: Option<&str>, target: &str, path: &str) -> Operand {
        Operand::Remote(RemoteSpec {
            user: user.map(Into::into),
            target: target.into(),
            path: path.into(),
        })
    }

    #[test]
    fn operands_follow_scp() {
        assert_eq!(
            Operand::parse("job.training.sagemaker:/data/x"),
            remote(None, "job.training.sagemaker", "/data/x")
        );
        assert_eq!(
            Operand::parse("ubuntu@mi-0123456789abcdef0:"),
            remote(Some("ubuntu"), "mi-0123456789abcdef0", "")
        );
        assert_eq!(
            Operand::parse("sagemaker-cluster:c_g-i-0a:/tmp/f"),
            remote(None, "sagemaker-cluster:c_g-i-0a", "/tmp/f")
        );
        assert_eq!(Operand::parse("a/b:c"), Operand::Local("a/b:c".into()));
        assert_eq!(Operand::parse("./x:y"), Operand::Local("./x:y".into()));
        assert_eq!(Operand::parse("plain"), Operand::Local("plain".into()));
    }

    #[test]
    fn ranges_scale_with_sessions_within_bounds() {
        assert_eq!(range_size(64 << 20, 16), 2 << 20);
        assert_eq!(range_size(64 << 20, 1), 16 << 20);
        assert_eq!(range_size(10, 8), 1 << 20);
        assert_eq!(range_count(0, 1 << 20), 1);
        assert_eq!(range_count((1 << 20) + 1, 1 << 20), 2);
        assert_eq!(remote_join("/", "a"), "/a");
        assert_eq!(remote_join("", "a"), "a");
        assert_eq!(remote_join("d/", "a"), "d/a");
        assert_eq!(remote_name("/x/y/"), "y");
    }

    #[test]
    fn listings_become_directories_and_files() {
        let mut plan = Plan {
            direction: Direction::Download,
            dirs: Vec::new(),
            items: Vec::new(),
        };
        let listing = "d .\nd ./sub\nf 5 17 750 ./sub/a b\n";
        read_listing(listing, "/r", Path::new("/l"), &mut plan).unwrap();
        assert_eq!(plan.dirs, ["/l/sub"]);
        assert_eq!(plan.items[0].remote, "/r/sub/a b");
        assert_eq!(plan.items[0].local, Path::new("/l/sub/a b"));
        assert_eq!(plan.items[0].size, 5);
        assert_eq!(plan.items[0].mode, 0o750);
    }
}
