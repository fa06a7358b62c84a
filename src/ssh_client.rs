//! sm-ssh's own SSH client: for machines without OpenSSH it runs one command
//! or an interactive shell over a ProxyCommand-style child process (normally
//! `sm-ssh proxy <target>`), whose stdin and stdout carry the SSH stream; `cp`
//! runs it over in-process session streams, many commands per connection.
//!
//! It does only what sm-ssh needs: public-key authentication with one key,
//! a pinned (or known_hosts) host key, session channels.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Who to log in as and what to trust.
pub struct Login {
    pub user: String,
    pub key: Arc<PrivateKey>,
    /// Which host key the server must present.
    pub host_key: HostKeyCheck,
}

/// How the server's host key is checked.
#[derive(Clone, Debug)]
pub enum HostKeyCheck {
    /// Exactly this key (the playground knows its server's key).
    Pinned(PublicKey),
    /// The key recorded for `alias` in `file`; an alias not yet there is
    /// learnt (ssh's `StrictHostKeyChecking accept-new`).
    KnownHosts { file: PathBuf, alias: String },
}

impl From<PublicKey> for HostKeyCheck {
    fn from(key: PublicKey) -> HostKeyCheck {
        HostKeyCheck::Pinned(key)
    }
}

/// An authenticated SSH connection over a proxy process or a stream.
pub struct Connection {
    handle: Handle<Verifier>,
    /// The proxy process carrying the stream, if any.
    proxy: Option<Child>,
}

impl Connection {
    /// Starts `proxy` (its stdin and stdout become the SSH stream; its stderr
    /// is left as the caller set it) and logs in.
    pub async fn over_proxy(mut proxy: Command, login: &Login) -> anyhow::Result<Connection> {
        let mut child = proxy
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the proxy command")?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        match login_over(tokio::io::join(stdout, stdin), login).await {
            Ok(handle) => Ok(Connection {
                handle,
                proxy: Some(child),
            }),
            Err(error) => {
                // The usual cause is the proxy giving up; say so with its status.
                let exited = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                match exited {
                    Some(status) if !status.success() => {
                        Err(error.context(format!("the proxy command failed ({status})")))
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// Logs in over `stream` (e.g. a Session Manager session's bytes).
    pub async fn over_stream<S>(stream: S, login: &Login) -> anyhow::Result<Connection>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handle = login_over(stream, login).await?;
        Ok(Connection {
            handle,
            proxy: None,
        })
    }

    /// Starts `command` and returns what runs it to the end: feeding it
    /// `input`, collecting its stdout, giving its exit status. The returned
    /// future owns the channel, so it can run on a task of its own while this
    /// connection carries other channels; it fails when the connection ends.
    pub async fn start(
        &self,
        command: &str,
        input: mpsc::Receiver<Vec<u8>>,
    ) -> anyhow::Result<
        impl std::future::Future<Output = anyhow::Result<(u32, Vec<u8>)>> + Send + 'static,
    > {
        let channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        Ok(async move {
            let mut stdout = Vec::new();
            let status = drive(channel, input, &mut stdout, tokio::io::sink(), None).await?;
            Ok((status, stdout))
        })
    }

    /// Starts `command` as a [`Pipe`]: a long-running command that is sent
    /// requests and answers them on its stdout, one after another.
    pub async fn pipe(&self, command: &str) -> anyhow::Result<Pipe> {
        let channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        let (reader, writer) = channel.split();
        Ok(Pipe {
            reader,
            writer,
            pending: Bytes::new(),
        })
    }

    /// Runs `command`, feeding it `stdin` and copying its output; returns its
    /// exit status.
    pub async fn exec(
        &self,
        command: &str,
        stdin: impl AsyncRead + Send + Unpin + 'static,
        stdout: impl AsyncWrite + Unpin,
        stderr: impl AsyncWrite + Unpin,
    ) -> anyhow::Result<u32> {
        let channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        drive(channel, reader_input(stdin), stdout, stderr, None).await
    }

    /// An interactive shell on this terminal: raw mode, window size changes
    /// followed, restored on the way out. Returns the shell's exit status.
    pub async fn interactive_shell(&self) -> anyhow::Result<u32> {
        let (cols, rows) = terminal_size();
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        let channel = self.handle.channel_open_session().await?;
        channel
            .request_pty(true, &term, cols, rows, 0, 0, &[])
            .await?;
        channel.request_shell(true).await?;
        let _raw = RawMode::enable()?;
        let resizes = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            .context("cannot watch the terminal size")?;
        drive(
            channel,
            terminal_input(),
            tokio::io::stdout(),
            tokio::io::stderr(),
            Some(resizes),
        )
        .await
    }

    /// Says goodbye and waits for the proxy to exit.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
        drop(self.handle);
        if let Some(proxy) = &mut self.proxy {
            let status = proxy.wait().await?;
            if !status.success() {
                tracing::debug!("proxy command exited with {status}");
            }
        }
        Ok(())
    }
}

async fn login_over<S>(stream: S, login: &Login) -> anyhow::Result<Handle<Verifier>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        ..Default::default()
    });
    let rejected = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        host_key: login.host_key.clone(),
        rejected: rejected.clone(),
    };
    let mut handle = match client::connect_stream(config, stream, verifier).await {
        Ok(handle) => handle,
        Err(error) => {
            if let Some(reason) = rejected.lock().expect("lock").take() {
                return Err(Refused(reason).into());
            }
            return Err(anyhow!(error).context("the SSH handshake failed"));
        }
    };
    let hash = handle.best_supported_rsa_hash().await?.flatten();
    let key = PrivateKeyWithHashAlg::new(login.key.clone(), hash.or(Some(HashAlg::Sha256)));
    let auth = handle
        .authenticate_publickey(login.user.clone(), key)
        .await
        .context("SSH authentication failed")?;
    if let russh::client::AuthResult::Failure {
        remaining_methods, ..
    } = &auth
    {
        // russh reports a connection that ended before the server answered
        // as a failure with no methods left (`wait_recv_reply`); a server
        // that refuses the key lists what else it accepts. A dead transport
        // is worth another connection, a refusal is not.
        if remaining_methods.is_empty() || handle.is_closed() {
            return Err(anyhow!("the connection closed during the SSH login"));
        }
    }
    if !auth.success() {
        return Err(Refused(format!(
            "the server refused the key {} for user {} (was the key pushed to the instance?)",
            login.key.public_key().fingerprint(HashAlg::Sha256),
            login.user
        ))
        .into());
    }
    Ok(handle)
}

/// The server was reached and refused us (host key or user key): trying
/// again over another connection would not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks the server's host key against the login's policy.
struct Verifier {
    host_key: HostKeyCheck,
    /// Why the key was refused, for a clearer error than russh's.
    rejected: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            *self.rejected.lock().expect("lock") = Some(
                "the server presented a host certificate; sm-ssh expects a plain host key".into(),
            );
            return Ok(false);
        };
        let verdict = match &self.host_key {
            HostKeyCheck::Pinned(expected) if expected.key_data() == key.key_data() => Ok(()),
            HostKeyCheck::Pinned(expected) => Err(format!(
                "host key mismatch: the server presented {}, expected {}",
                key.fingerprint(HashAlg::Sha256),
                expected.fingerprint(HashAlg::Sha256)
            )),
            HostKeyCheck::KnownHosts { file, alias } => known_host(file, alias, key),
        };
        match verdict {
            Ok(()) => Ok(true),
            Err(reason) => {
                *self.rejected.lock().expect("lock") = Some(reason);
                Ok(false)
            }
        }
    }
}

/// Checks `key` against `alias`'s line in `file` (port 22: that is how ssh
/// records a `HostKeyAlias`), learning it when there is none.
fn known_host(file: &std::path::Path, alias: &str, key: &PublicKey) -> Result<(), String> {
    // Connections opened together must not each append the same new key.
    static FILE_LOCK: Mutex<()> = Mutex::new(());
    let _guard = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match russh::keys::check_known_hosts_path(alias, 22, key, file) {
        Ok(true) => Ok(()),
        Ok(false) => russh::keys::known_hosts::learn_known_hosts_path(alias, 22, key, file)
            .map_err(|e| {
                format!(
                    "cannot record the host key of {alias} in {}: {e}",
                    file.display()
                )
            }),
        Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
            "the host key of {alias} changed (it presented {}; {}:{line} holds another); \
             remove that line if the instance was rebuilt",
            key.fingerprint(HashAlg::Sha256),
            file.display()
        )),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// A remote command's stdin and stdout, for request and answer; its stderr
/// is dropped. Every read fails once the command has ended (or the
/// connection), so a caller never waits on a command that is gone.
pub struct Pipe {
    reader: russh::ChannelReadHalf,
    writer: russh::ChannelWriteHalf<client::Msg>,
    /// Stdout received and not yet taken.
    pending: Bytes,
}

impl Pipe {
    pub async fn send(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        Ok(self.writer.data_bytes(bytes).await?)
    }

    /// Closes the channel, ending the command wherever it is.
    pub async fn close(&self) {
        let _ = self.writer.close().await;
    }

    /// Copies exactly the next `len` bytes of stdout to `sink`.
    pub async fn copy_to(
        &mut self,
        mut len: u64,
        sink: &mut (impl AsyncWrite + Unpin),
    ) -> anyhow::Result<()> {
        while len > 0 {
            let chunk = self.take(len).await?;
            len -= chunk.len() as u64;
            sink.write_all(&chunk).await?;
        }
        Ok(sink.flush().await?)
    }

    /// The next line of stdout (without its newline), of at most `limit` bytes.
    pub async fn line(&mut self, limit: usize) -> anyhow::Result<String> {
        let mut line = Vec::new();
        loop {
            let chunk = self.take(1).await?;
            if chunk[0] == b'\n' {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if line.len() == limit {
                return Err(anyhow!("the remote command's answer is not a line"));
            }
            line.push(chunk[0]);
        }
    }

    /// Up to `most` bytes of stdout, waiting for some.
    async fn take(&mut self, most: u64) -> anyhow::Result<Bytes> {
        while self.pending.is_empty() {
            match self.reader.wait().await {
                Some(ChannelMsg::Data { data }) => self.pending = data,
                // Not the exit status: sshd may send it before the last of
                // the command's output.
                Some(ChannelMsg::Close | ChannelMsg::Eof) | None => {
                    return Err(anyhow!("the remote command ended"))
                }
                Some(_) => {}
            }
        }
        let n = self
            .pending
            .len()
            .min(usize::try_from(most).unwrap_or(usize::MAX));
        Ok(self.pending.split_to(n))
    }
}

/// Bytes for the remote side, `None` once the input has ended.
type Input = mpsc::Receiver<Vec<u8>>;

fn reader_input(mut reader: impl AsyncRead + Send + Unpin + 'static) -> Input {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            if tx.send(buf[..n].to_vec()).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// The terminal's input, read on a thread of its own: a read blocked on the
/// keyboard must not keep the runtime from shutting down when the shell ends.
fn terminal_input() -> Input {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 4096];
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Relays one session channel until it closes; returns the exit status.
/// Input is sent by a future of its own beside the reader: a write waiting
/// for window space (which russh never ends when the connection drops) must
/// not keep the loop from seeing the channel close.
async fn drive(
    channel: russh::Channel<client::Msg>,
    input: Input,
    mut stdout: impl AsyncWrite + Unpin,
    mut stderr: impl AsyncWrite + Unpin,
    mut resizes: Option<tokio::signal::unix::Signal>,
) -> anyhow::Result<u32> {
    let (mut reader, writer) = channel.split();
    let sending = send_input(&writer, input);
    tokio::pin!(sending);
    let mut input_open = true;
    let mut status = None;
    loop {
        tokio::select! {
            message = reader.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    stderr
                        .write_all(format!("remote command killed by signal {signal_name:?}\n").as_bytes())
                        .await?;
                    status = Some(255);
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            sent = &mut sending, if input_open => {
                sent?;
                input_open = false;
            }
            Some(()) = async { resizes.as_mut()?.recv().await }, if resizes.is_some() => {
                let (cols, rows) = terminal_size();
                writer.window_change(cols, rows, 0, 0).await?;
            }
        }
    }
    status.ok_or_else(|| {
        anyhow!("the connection closed before the remote command reported its exit status")
    })
}

/// Sends all of `input`, then EOF.
async fn send_input(
    writer: &russh::ChannelWriteHalf<client::Msg>,
    mut input: Input,
) -> Result<(), russh::Error> {
    while let Some(bytes) = input.recv().await {
        writer.data_bytes(bytes).await?;
    }
    writer.eof().await
}

fn terminal_size() -> (u32, u32) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(size) if size.ws_col > 0 && size.ws_row > 0 => (size.ws_col.into(), size.ws_row.into()),
        _ => (80, 24),
    }
}

/// The terminal in raw mode for as long as this lives.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).context("stdin is not a terminal")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)
            .context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::Algorithm;
    use sm_ssh_integration::sshd::{EmbeddedSshServer, SshdConfig};

    fn new_key() -> Arc<PrivateKey> {
        Arc::new(
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).expect("key"),
        )
    }

    /// A server whose `authorized_keys` holds `key`.
    async fn server_for(dir: &std::path::Path, key: &PrivateKey) -> EmbeddedSshServer {
        let keys = dir.join("authorized_keys");
        std::fs::write(&keys, key.public_key().to_openssh().expect("encode")).expect("write");
        EmbeddedSshServer::start(SshdConfig::new(vec![keys], dir))
            .await
            .expect("start sshd")
    }

    fn login(key: &Arc<PrivateKey>, server: &EmbeddedSshServer) -> Login {
        Login {
            user: "sagemaker-user".into(),
            key: key.clone(),
            host_key: server.host_public_key().clone().into(),
        }
    }

    /// A ProxyCommand in its simplest form: bash bridging stdio to the port.
    fn proxy_to(server: &EmbeddedSshServer) -> Command {
        let mut proxy = Command::new("bash");
        proxy.arg("-c").arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{}; cat <&3 & cat >&3",
            server.port()
        ));
        proxy
    }

    #[tokio::test]
    async fn runs_a_command_over_a_proxy_process() {
        let dir = tempfile::tempdir().unwrap();
        let key = new_key();
        let server = server_for(dir.path(), &key).await;
        let connection = Connection::over_proxy(proxy_to(&server), &login(&key, &server))
            .await
            .expect("login");

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = connection
            .exec(
                "cat; echo done >&2; exit 4",
                &b"from stdin"[..],
                &mut out,
                &mut err,
            )
            .await
            .expect("exec");
        assert_eq!(status, 4);
        assert_eq!(out, b"from stdin");
        assert_eq!(err, b"done\n");
        assert_eq!(server.authenticated_users(), ["sagemaker-user"]);
        connection.close().await.expect("close");
    }

    /// The server stops granting window (its bytes are held back), the
    /// client's writes stall on the full window, and then the connection is
    /// cut: the command must end with an error rather than wait forever.
    #[tokio::test]
    async fn a_connection_cut_while_the_window_is_full_ends_the_command() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let key = new_key();
        let server = server_for(dir.path(), &key).await;
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let (near, far) = tokio::io::duplex(64 << 10);
        let sent = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicBool::new(false));
        let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
        let relay = {
            let (sent, held) = (sent.clone(), held.clone());
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = tokio::io::split(far);
                let (mut from_server, mut to_server) = tcp.into_split();
                let up = async {
                    let mut buf = vec![0; 16 << 10];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        sent.fetch_add(n as u64, Relaxed);
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    let mut buf = vec![0; 16 << 10];
                    while !held.load(Relaxed) {
                        match from_server.read(&mut buf).await {
                            Ok(n @ 1..) if to_client.write_all(&buf[..n]).await.is_ok() => {}
                            _ => return,
                        }
                    }
                    std::future::pending::<()>().await
                };
                // Either way out drops both sockets: the cut.
                tokio::select! {
                    () = up => {}
                    () = down => {}
                    _ = cut_rx => {}
                }
            })
        };
        let connection = Connection::over_stream(near, &login(&key, &server))
            .await
            .expect("login");
        let endless = tokio::io::repeat(7).take(1 << 30);
        let command = connection.exec(
            "cat >/dev/null",
            endless,
            tokio::io::sink(),
            tokio::io::sink(),
        );
        let control = async {
            while sent.load(Relaxed) < 256 << 10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            held.store(true, Relaxed);
            // Stalled: nothing more leaves the client for half a second.
            let mut last = 0;
            while sent.load(Relaxed) != last {
                last = sent.load(Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let _ = cut.send(());
            std::future::pending::<()>().await
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                outcome = command => outcome,
                () = control => unreachable!("control never ends"),
            }
        })
        .await
        .expect("the command ended once the connection was cut");
        let error = outcome.expect_err("no exit status after a cut");
        assert!(error.to_string().contains("closed"), "{error:#}");
        relay.await.unwrap();
    }

    #[tokio::test]
    async fn a_different_host_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = new_key();
        let server = server_for(dir.path(), &key).await;
        let mut wrong = login(&key, &server);
        wrong.host_key = new_key().public_key().clone().into();

        let error = Connection::over_proxy(proxy_to(&server), &wrong)
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("host key mismatch"), "{error:#}");
        assert!(server.authenticated_users().is_empty());
    }

    #[tokio::test]
    async fn a_key_the_server_does_not_know_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let server = server_for(dir.path(), &new_key()).await;
        let stranger = new_key();

        let error = Connection::over_proxy(proxy_to(&server), &login(&stranger, &server))
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("refused the key"), "{error:#}");
    }

    #[tokio::test]
    async fn a_proxy_that_fails_is_named_in_the_error() {
        let mut proxy = Command::new("sh");
        proxy.args(["-c", "exit 3"]);
        let key = new_key();
        let login = Login {
            user: "root".into(),
            key: key.clone(),
            host_key: key.public_key().clone().into(),
        };
        let error = Connection::over_proxy(proxy, &login)
            .await
            .err()
            .expect("fails");
        assert!(
            format!("{error:#}").contains("the proxy command failed"),
            "{error:#}"
        );
    }
}
