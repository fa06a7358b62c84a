//! An SSH server embedded in the process, standing in for the `sshd` inside a
//! SageMaker container: public-key authentication against `authorized_keys`
//! files that SendCommand writes (re-read on every attempt, so a key pushed a
//! moment ago works at once), `exec` and `shell` with or without a
//! pseudo-terminal, exit status, `direct-tcpip` for `ssh -L`, and the `sftp`
//! subsystem (`crate::sftp`); any other subsystem is refused at once.
//!
//! Every login user runs commands as the user of this process: the server
//! stands in for a container where `root` and `sagemaker-user` both exist,
//! and records the user name each client authenticated as.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the embedded server is set up.
#[derive(Clone, Debug)]
pub struct SshdConfig {
    /// `authorized_keys` files, and folders whose every file is one
    /// (like `/etc/ssh/authorized_keys.d`). Missing paths hold no keys.
    pub authorized_keys: Vec<PathBuf>,
    /// Where commands and shells start, and their `HOME`.
    pub workdir: PathBuf,
    /// The shell for `shell` requests and for running `exec` commands (`-c`).
    pub shell: PathBuf,
    /// The host key; a fresh ed25519 key when `None`.
    pub host_key: Option<PrivateKey>,
    /// Users let in with the `none` method, without a key (the server in a
    /// Studio space, where the IAM-authenticated channel is the gate).
    pub none_auth_users: Vec<String>,
    /// The identification line (`SSH-2.0-Go`); russh's own when `None`.
    pub banner: Option<String>,
    /// Whether `exec` requests get `HOME` (the Studio space server sets none).
    pub exec_home: bool,
}

impl SshdConfig {
    pub fn new(authorized_keys: Vec<PathBuf>, workdir: impl Into<PathBuf>) -> Self {
        SshdConfig {
            authorized_keys,
            workdir: workdir.into(),
            shell: PathBuf::from("/bin/sh"),
            host_key: None,
            none_auth_users: Vec::new(),
            banner: None,
            exec_home: true,
        }
    }
}

/// A running embedded SSH server on `127.0.0.1`. Dropping it stops
/// listening, disconnects every client and kills the processes it started.
pub struct EmbeddedSshServer {
    addr: SocketAddr,
    host_key: PublicKey,
    users: Arc<Mutex<Vec<String>>>,
    shutdown: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl EmbeddedSshServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start(config: SshdConfig) -> io::Result<Self> {
        let host_key = match config.host_key.clone() {
            Some(key) => key,
            None => PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                .map_err(io::Error::other)?,
        };
        let host_public = host_key.public_key().clone();
        let server_config = Arc::new(russh::server::Config {
            keys: vec![host_key],
            // A refused key is answered at once: there is no password to guess.
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            nodelay: true,
            server_id: match &config.banner {
                Some(banner) => russh::SshId::Standard(banner.clone().into()),
                None => russh::server::Config::default().server_id,
            },
            ..Default::default()
        });
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let users = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            users: users.clone(),
        });
        let accept_loop = tokio::spawn(accept_loop(listener, server_config, shared, shutdown_rx));
        Ok(EmbeddedSshServer {
            addr,
            host_key: host_public,
            users,
            shutdown,
            accept_loop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host key clients should pin.
    pub fn host_public_key(&self) -> &PublicKey {
        &self.host_key
    }

    /// A `known_hosts` line for `host` with this server's key, e.g.
    /// `demo.training.sagemaker ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self, host: &str) -> String {
        let key = self
            .host_key
            .to_openssh()
            .expect("an ed25519 public key always encodes");
        format!("{host} {key}")
    }

    /// Stops listening and disconnects every client; returns once the
    /// listening socket is closed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.accept_loop).await;
    }

    /// The user names clients authenticated as, in order.
    pub fn authenticated_users(&self) -> Vec<String> {
        self.users.lock().expect("users lock").clone()
    }
}

impl Drop for EmbeddedSshServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.accept_loop.abort();
    }
}

struct Shared {
    config: SshdConfig,
    users: Arc<Mutex<Vec<String>>>,
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let socket = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(error) => {
                    tracing::warn!("embedded sshd: accept failed: {error}");
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let handler = Connection {
            shared: shared.clone(),
            user: None,
        };
        let config = config.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let session = match russh::server::run_stream(config, socket, handler).await {
                Ok(session) => session,
                Err(error) => {
                    tracing::debug!("embedded sshd: handshake failed: {error}");
                    return;
                }
            };
            let handle = session.handle();
            tokio::select! {
                _ = shutdown.changed() => {
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "server stopping".into(), String::new())
                        .await;
                }
                result = session => {
                    if let Err(error) = result {
                        tracing::debug!("embedded sshd: connection ended: {error}");
                    }
                }
            }
        });
    }
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    user: Option<String>,
}

impl Connection {
    /// Records a successful login as `user`.
    fn logged_in(&mut self, user: &str) -> Auth {
        self.user = Some(user.to_string());
        self.shared
            .users
            .lock()
            .expect("users lock")
            .push(user.to_string());
        Auth::Accept
    }

    fn is_authorized(&self, key: &PublicKey) -> bool {
        authorized_keys(&self.shared.config.authorized_keys)
            .iter()
            .any(|allowed| allowed.key_data() == key.key_data())
    }
}

/// Every key in the given files and folders, read now.
fn authorized_keys(sources: &[PathBuf]) -> Vec<PublicKey> {
    let mut files = Vec::new();
    for source in sources {
        if source.is_dir() {
            if let Ok(entries) = std::fs::read_dir(source) {
                let mut inside: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                inside.sort();
                files.extend(inside.into_iter().filter(|p| p.is_file()));
            }
        } else {
            files.push(source.clone());
        }
    }
    files
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| parse_authorized_keys(&text))
        .collect()
}

/// The keys of an `authorized_keys` text; lines that do not parse are skipped,
/// as sshd does. Options (`no-pty,command="…"`) are allowed and ignored.
fn parse_authorized_keys(text: &str) -> Vec<PublicKey> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            PublicKey::from_openssh(line)
                .or_else(|_| PublicKey::from_openssh(after_options(line)))
                .ok()
        })
        .collect()
}

/// The rest of a line after its options field, which ends at the first
/// blank outside double quotes.
fn after_options(line: &str) -> &str {
    let mut quoted = false;
    for (at, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return line[at..].trim_start(),
            _ => {}
        }
    }
    ""
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        if !self.shared.config.none_auth_users.iter().any(|u| u == user) {
            return Ok(Auth::reject());
        }
        Ok(self.logged_in(user))
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.is_authorized(offer.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !self.is_authorized(key.public_key) {
            return Ok(Auth::reject());
        }
        Ok(self.logged_in(user))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let context = ProcessContext {
            user: self.user.clone().unwrap_or_else(|| "root".into()),
            workdir: self.shared.config.workdir.clone(),
            shell: self.shared.config.shell.clone(),
            exec_home: self.shared.config.exec_home,
        };
        tokio::spawn(serve_session_channel(channel, session.handle(), context));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let host = host_to_connect.to_string();
        let Ok(port) = u16::try_from(port_to_connect) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        // Dial outside the session loop so a slow target does not stall it.
        tokio::spawn(async move {
            match TcpStream::connect((host.as_str(), port)).await {
                Ok(mut target) => {
                    reply.accept().await;
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut target).await;
                }
                Err(error) => {
                    tracing::debug!("embedded sshd: direct-tcpip to {host}:{port}: {error}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    /// `sftp` is served by the channel's task; any other name is refused now,
    /// as sshd does for a subsystem it has no `Subsystem` line for.
    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == crate::sftp::SUBSYSTEM {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

/// What a started process needs to know about its login.
struct ProcessContext {
    user: String,
    workdir: PathBuf,
    shell: PathBuf,
    exec_home: bool,
}

/// A terminal requested with `pty-req`.
struct PtyRequest {
    term: String,
    size: pty_process::Size,
}

/// Where the client's bytes go once a process runs.
enum Input {
    Pipe(tokio::process::ChildStdin),
    Pty(pty_process::OwnedWritePty),
}

/// Serves one `session` channel: collects `pty-req` and `env`, starts the
/// process on `exec` or `shell`, feeds it the client's data, and reports its
/// exit status.
async fn serve_session_channel(channel: Channel<Msg>, handle: Handle, context: ProcessContext) {
    let id = channel.id();
    let (mut reader, writer) = channel.split();
    let writer = Arc::new(writer);
    let mut pty: Option<PtyRequest> = None;
    let mut input: Option<Input> = None;
    let mut process: Option<JoinHandle<()>> = None;
    while let Some(message) = reader.wait().await {
        match message {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => {
                pty = Some(PtyRequest {
                    term,
                    size: terminal_size(col_width, row_height),
                });
            }
            ChannelMsg::Exec { command, .. } if process.is_none() => {
                let command = String::from_utf8_lossy(&command).into_owned();
                let started = start(&context, Some(&command), pty.as_ref(), writer.clone());
                (input, process) = started_or_report(started, &writer).await;
            }
            ChannelMsg::RequestSubsystem { name, .. }
                if process.is_none() && name == crate::sftp::SUBSYSTEM =>
            {
                crate::sftp::serve(reader, &writer, context.workdir.clone()).await;
                break;
            }
            ChannelMsg::RequestShell { .. } if process.is_none() => {
                let started = start(&context, None, pty.as_ref(), writer.clone());
                (input, process) = started_or_report(started, &writer).await;
            }
            ChannelMsg::Data { data } => {
                let written = match input.as_mut() {
                    Some(Input::Pipe(stdin)) => stdin.write_all(&data).await,
                    Some(Input::Pty(pty)) => pty.write_all(&data).await,
                    None => Ok(()),
                };
                if written.is_err() {
                    input = None;
                }
            }
            ChannelMsg::Eof => {
                // A terminal has no end of input of its own: the shell ends on `exit`.
                if let Some(Input::Pipe(_)) = input {
                    input = None;
                }
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } => {
                if let Some(Input::Pty(pty)) = &input {
                    let _ = pty.resize(terminal_size(col_width, row_height));
                }
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    // The client went away: stop what it started (the child is killed on drop).
    if let Some(process) = process {
        process.abort();
    }
    let _ = handle.close(id).await;
}

fn terminal_size(cols: u32, rows: u32) -> pty_process::Size {
    let clamp = |n: u32, default: u16| match u16::try_from(n) {
        Ok(0) | Err(_) => default,
        Ok(n) => n,
    };
    pty_process::Size::new(clamp(rows, 24), clamp(cols, 80))
}

type Started = io::Result<(Input, JoinHandle<()>)>;

/// The input and relay task of a started process; on failure, tells the
/// client as sshd does (a message on stderr and status 127).
async fn started_or_report(
    started: Started,
    writer: &ChannelWriteHalf<Msg>,
) -> (Option<Input>, Option<JoinHandle<()>>) {
    match started {
        Ok((input, process)) => (Some(input), Some(process)),
        Err(error) => {
            let message = format!("embedded sshd: cannot start the shell: {error}\r\n");
            let _ = writer.extended_data_bytes(1, message.into_bytes()).await;
            let _ = writer.exit_status(127).await;
            let _ = writer.eof().await;
            let _ = writer.close().await;
            (None, None)
        }
    }
}

/// Starts the shell (or `shell -c command`) and a task that relays its output
/// and exit status to the channel.
fn start(
    context: &ProcessContext,
    command: Option<&str>,
    pty: Option<&PtyRequest>,
    writer: Arc<ChannelWriteHalf<Msg>>,
) -> Started {
    let mut args: Vec<&str> = Vec::new();
    if let Some(command) = command {
        args.extend(["-c", command]);
    }
    let mut env = environment(context, pty.map(|p| p.term.as_str()));
    if command.is_some() && !context.exec_home {
        env.retain(|(name, _)| name != "HOME");
    }
    match pty {
        Some(pty) => {
            let (terminal, pts) = pty_process::open().map_err(io::Error::other)?;
            terminal.resize(pty.size).map_err(io::Error::other)?;
            let child = pty_process::Command::new(&context.shell)
                .args(&args)
                .env_clear()
                .envs(env)
                .current_dir(&context.workdir)
                .kill_on_drop(true)
                .spawn(pts)
                .map_err(io::Error::other)?;
            let (output, input) = terminal.into_split();
            let task = tokio::spawn(relay_terminal(child, output, writer));
            Ok((Input::Pty(input), task))
        }
        None => {
            let mut child = tokio::process::Command::new(&context.shell)
                .args(&args)
                .env_clear()
                .envs(env)
                .current_dir(&context.workdir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().expect("piped stdin");
            let task = tokio::spawn(relay_pipes(child, writer));
            Ok((Input::Pipe(stdin), task))
        }
    }
}

/// The environment of a login on a fresh container: nothing of this process
/// but `PATH` (in particular none of its AWS credentials).
fn environment(context: &ProcessContext, term: Option<&str>) -> Vec<(String, String)> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOME".to_string(), context.workdir.display().to_string()),
        ("USER".to_string(), context.user.clone()),
        ("LOGNAME".to_string(), context.user.clone()),
        ("SHELL".to_string(), context.shell.display().to_string()),
    ];
    if let Some(term) = term {
        env.push(("TERM".to_string(), term.to_string()));
    }
    env
}

async fn relay_pipes(mut child: Child, writer: Arc<ChannelWriteHalf<Msg>>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out = relay(stdout, writer.clone(), None);
    let err = relay(stderr, writer.clone(), Some(1));
    let (status, _, _) = tokio::join!(child.wait(), out, err);
    finish(status, &writer).await;
}

async fn relay_terminal(
    mut child: Child,
    mut output: pty_process::OwnedReadPty,
    writer: Arc<ChannelWriteHalf<Msg>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut exited = None;
    loop {
        // Once the shell has exited, a background job may still hold the
        // terminal open: drain what is there, then stop.
        let read = if exited.is_some() {
            match tokio::time::timeout(Duration::from_millis(100), output.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                status = child.wait() => {
                    exited = Some(status);
                    continue;
                }
                read = output.read(&mut buf) => read,
            }
        };
        match read {
            // EIO: every process on the terminal has closed it.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if writer.data_bytes(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
    let status = match exited {
        Some(status) => status,
        None => child.wait().await,
    };
    finish(status, &writer).await;
}

async fn relay(
    mut from: impl AsyncRead + Unpin,
    writer: Arc<ChannelWriteHalf<Msg>>,
    ext: Option<u32>,
) {
    let mut to = writer.make_writer_ext(ext);
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.flush().await;
}

/// Exit status, then EOF and close, as sshd sends them.
async fn finish(status: io::Result<ExitStatus>, writer: &ChannelWriteHalf<Msg>) {
    let code = match status {
        Ok(status) => exit_code(status),
        Err(_) => 255,
    };
    let _ = writer.exit_status(code).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

fn exit_code(status: ExitStatus) -> u32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u32,
        (None, Some(signal)) => 128 + signal as u32,
        (None, None) => 255,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed25519(comment: &str) -> String {
        let mut key =
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).expect("key");
        key.set_comment(comment);
        key.public_key().to_openssh().expect("encode")
    }

    #[test]
    fn authorized_keys_skip_comments_and_garbage_and_keep_options() {
        let (alice, bob) = (ed25519("alice"), ed25519("bob"));
        let text = format!(
            "# a comment\n\nnot a key at all\nno-pty,command=\"echo hi\" {alice}\n  {bob}  \n"
        );
        let keys = parse_authorized_keys(&text);
        let comments: Vec<&str> = keys.iter().map(|k| k.comment().as_str_lossy()).collect();
        assert_eq!(comments, ["alice", "bob"]);
    }

    #[test]
    fn terminal_size_defaults_zero_and_oversized() {
        let size = format!("{:?}", terminal_size(0, 100_000));
        assert_eq!(size, format!("{:?}", pty_process::Size::new(24, 80)));
    }
}
