//! The `sftp` subsystem of the embedded SSH server (russh-sftp): what
//! OpenSSH's `sftp-server` does for `scp` (SFTP mode, OpenSSH 9's default),
//! `sftp` and SFTP libraries such as paramiko.
//!
//! Like `sftp-server`, it starts in the login's home (the instance's sandbox
//! home, where `exec` commands start too) and resolves relative paths there;
//! absolute paths mean what they mean to a shell on the same instance.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// The subsystem name OpenSSH clients request.
pub const SUBSYSTEM: &str = "sftp";

/// Serves SFTP on a session channel until the client closes it, then sends
/// exit status 0, EOF and close, as sshd does when `sftp-server` exits.
pub(crate) async fn serve(
    mut reader: ChannelReadHalf,
    writer: &ChannelWriteHalf<Msg>,
    home: PathBuf,
) {
    // russh-sftp reads and writes one stream; the channel is already split,
    // so a duplex pipe joins the two halves.
    let (mut ours, theirs) = tokio::io::duplex(256 * 1024);
    russh_sftp::server::run(theirs, Session::new(home)).await;
    let mut buf = vec![0u8; 64 * 1024];
    let mut client_open = true;
    loop {
        tokio::select! {
            message = reader.wait(), if client_open => match message {
                Some(ChannelMsg::Data { data }) => {
                    if ours.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    client_open = false;
                    let _ = ours.shutdown().await;
                }
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            },
            read = ours.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.data_bytes(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
    let _ = writer.exit_status(0).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

/// What an SFTP handle stands for.
enum Open {
    File(tokio::fs::File),
    /// A directory's entries not yet sent by READDIR.
    Dir(Vec<File>),
}

/// One client's SFTP session: its open handles.
struct Session {
    home: PathBuf,
    handles: HashMap<String, Open>,
    next_handle: u64,
}

impl Session {
    fn new(home: PathBuf) -> Session {
        Session {
            home,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.home.clone()
        } else {
            self.home.join(path)
        }
    }

    fn insert(&mut self, open: Open) -> String {
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        handle
    }

    fn file(&mut self, handle: &str) -> Result<&mut tokio::fs::File, StatusReply> {
        match self.handles.get_mut(handle) {
            Some(Open::File(file)) => Ok(file),
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en-US".into(),
    }
}

/// The status `sftp-server` answers for an errno (its `errno_to_portable`).
fn status(error: io::Error) -> StatusReply {
    let code = match error.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(error.to_string())
}

fn attributes(metadata: &std::fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(metadata.len()),
        uid: Some(metadata.uid()),
        gid: Some(metadata.gid()),
        // The mode carries the file type, as stat(2) gives it.
        permissions: Some(metadata.mode()),
        atime: Some(metadata.atime() as u32),
        mtime: Some(metadata.mtime() as u32),
        ..FileAttributes::default()
    }
}

/// The ATTRS answer to a STAT, LSTAT or FSTAT.
fn reply(id: u32, metadata: io::Result<std::fs::Metadata>) -> Result<Attrs, StatusReply> {
    let metadata = metadata.map_err(status)?;
    Ok(Attrs {
        id,
        attrs: attributes(&metadata),
    })
}

/// Applies SETSTAT/FSETSTAT attributes: size, permissions, times (owner
/// changes are not made: every login is this process's user).
fn set_attributes(file: &std::fs::File, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        file.set_len(size)?;
    }
    if let Some(mode) = attrs.permissions {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let (Some(atime), Some(mtime)) = (attrs.atime, attrs.mtime) {
        let at = |secs: u32| UNIX_EPOCH + Duration::from_secs(secs.into());
        let times = std::fs::FileTimes::new()
            .set_accessed(at(atime))
            .set_modified(at(mtime));
        file.set_times(times)?;
    }
    Ok(())
}

/// `path` made absolute against `home`, with `.` and `..` resolved as far as
/// the file system knows them (REALPATH of a file yet to be created works).
fn real_path(home: &Path, path: &str) -> PathBuf {
    let joined = if path.is_empty() {
        home.to_path_buf()
    } else {
        home.join(path)
    };
    if let Ok(real) = std::fs::canonicalize(&joined) {
        return real;
    }
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

impl russh_sftp::server::Handler for Session {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut options = tokio::fs::OpenOptions::new();
        options
            .read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE))
            .mode(attrs.permissions.map(|m| m & 0o7777).unwrap_or(0o666));
        if pflags.contains(OpenFlags::EXCLUDE) {
            options.create_new(true);
        } else {
            options.create(pflags.contains(OpenFlags::CREATE));
        }
        let file = options.open(self.path(&filename)).await.map_err(status)?;
        let handle = self.insert(Open::File(file));
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File(mut file)) => file.flush().await.map_err(status)?,
            Some(Open::Dir(_)) => {}
            None => return Err(StatusCode::Failure.with_message("invalid handle")),
        }
        Ok(ok(id))
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        file.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(status)?;
        let mut data = vec![0u8; len.min(256 * 1024) as usize];
        let mut filled = 0;
        while filled < data.len() {
            match file.read(&mut data[filled..]).await.map_err(status)? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(filled);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        file.seek(io::SeekFrom::Start(offset))
            .await
            .map_err(status)?;
        file.write_all(&data).await.map_err(status)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        reply(id, tokio::fs::symlink_metadata(self.path(&path)).await)
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        reply(id, tokio::fs::metadata(self.path(&path)).await)
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        reply(id, self.file(&handle)?.metadata().await)
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        // Only a size change needs the file open for writing.
        let file = std::fs::File::options()
            .read(attrs.size.is_none())
            .write(attrs.size.is_some())
            .open(self.path(&path))
            .map_err(status)?;
        set_attributes(&file, &attrs).map_err(status)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        file.flush().await.map_err(status)?;
        let file = file.try_clone().await.map_err(status)?.into_std().await;
        set_attributes(&file, &attrs).map_err(status)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let dir = self.path(&path);
        let mut entries = Vec::new();
        for name in [".", ".."] {
            if let Ok(metadata) = std::fs::metadata(dir.join(name)) {
                entries.push(File::new(name, attributes(&metadata)));
            }
        }
        for entry in std::fs::read_dir(&dir).map_err(status)?.flatten() {
            if let Ok(metadata) = std::fs::symlink_metadata(entry.path()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                entries.push(File::new(name, attributes(&metadata)));
            }
        }
        let handle = self.insert(Open::Dir(entries));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        // sftp-server sends at most 100 entries per READDIR.
        let Some(Open::Dir(entries)) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure.with_message("invalid handle"));
        };
        if entries.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        let files: Vec<File> = entries.drain(..entries.len().min(100)).collect();
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_file(self.path(&filename))
            .await
            .map_err(status)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let mode = attrs.permissions.map(|m| m & 0o7777).unwrap_or(0o777);
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(self.path(&path))
            .map_err(status)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        tokio::fs::remove_dir(self.path(&path))
            .await
            .map_err(status)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let real = real_path(&self.home, &path);
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (self.path(&oldpath), self.path(&newpath));
        // SFTP v3 renames never replace (sftp-server links, then unlinks).
        if tokio::fs::symlink_metadata(&to).await.is_ok() {
            return Err(StatusCode::Failure.with_message("the target exists"));
        }
        tokio::fs::rename(from, to).await.map_err(status)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = tokio::fs::read_link(self.path(&path))
            .await
            .map_err(status)?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH (and paramiko after it) send the target first, the reverse
        // of the draft's order; sftp-server reads them that way too.
        let (target, link) = (linkpath, targetpath);
        tokio::fs::symlink(target, self.path(&link))
            .await
            .map_err(status)?;
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_paths_resolve_against_home() {
        let home = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(home.path()).unwrap();
        assert_eq!(real_path(&home, "."), home);
        assert_eq!(real_path(&home, ""), home);
        assert_eq!(real_path(&home, "new/../file"), home.join("file"));
        assert_eq!(real_path(&home, "/"), PathBuf::from("/"));
    }
}
