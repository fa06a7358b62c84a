//! The workers of a copy: each is one Session Manager session carrying one
//! in-process SSH connection (russh). The session is a port-forwarding
//! session to sshd's port (one smux stream) when IAM allows the document and
//! the agent speaks smux, an AWS-StartSSHSession otherwise. Every session
//! opened is remembered until it is closed, so that Ctrl-C can end them all.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng;
use sm_ssh_proxy::{
    bridge, MuxSession, Options, SessionControl, SessionEnd, SessionError, StreamTarget,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cmd::forward::Document;
use crate::error::{exit, AwsError, Failure};
use crate::session::Sessions;
use crate::ssh_client::{Connection, Login, Pipe, Refused};

use super::remote;

/// At most this many sessions and SSH logins being set up at once: sshd's
/// default `MaxStartups 10:30:100` starts dropping unauthenticated
/// connections beyond 10, and 8 at once was slower in the benchmark
/// (docs/benchmarks.md, "`sm-ssh cp`: tried and not kept").
const CONCURRENT_SETUPS: usize = 4;
/// StartSession attempts when the service throttles.
const START_ATTEMPTS: u32 = 6;
/// Long-lived channels (followers, source hashes) one connection may hold, of sshd's 10.
const LONG_CHANNELS: usize = 4;
/// How long a closing session may take before TerminateSession is called directly.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// Where the workers go.
pub struct Endpoint {
    pub instance_id: String,
    /// What the user named (for StartSession's Reason).
    pub label: String,
    /// sshd's port on the instance.
    pub port: u16,
    pub login: Login,
}

/// Starts and ends workers' sessions.
pub struct Fleet {
    sessions: Arc<Sessions>,
    options: Options,
    endpoint: Endpoint,
    /// `--document`, or the choice made by the first worker.
    document: tokio::sync::Mutex<Option<Document>>,
    setups: Semaphore,
    live: Mutex<HashSet<String>>,
    /// Workers start their range server as soon as they are connected.
    downloads: bool,
}

/// Why a worker could not be connected.
#[derive(Debug)]
pub struct ConnectError {
    pub error: anyhow::Error,
    /// Trying again cannot help (denied, key refused): stop the copy.
    pub fatal: bool,
}

/// One session and its SSH connection.
pub struct Worker {
    ssh: Connection,
    carrier: Carrier,
    session_id: String,
    /// Channels this connection holds for whole-file hashes (copy/whole.rs,
    /// and a download's source hash).
    long_channels: Arc<AtomicUsize>,
    /// The far side's range server (downloads), once started.
    ranges: tokio::sync::Mutex<Server>,
}

/// A worker's [`remote::range_server`].
#[derive(Default)]
enum Server {
    #[default]
    NotStarted,
    /// With the channel's place, held while it runs.
    Running { pipe: Pipe, _place: ChannelPlace },
    /// It failed or could not start: ranges go one command each.
    Unavailable,
}

enum Carrier {
    Bridge(JoinHandle<Result<SessionEnd, SessionError>>),
    Mux(MuxSession),
}

/// A connection's place for a long-lived channel, given back on drop.
pub struct ChannelPlace(Arc<AtomicUsize>);

impl Drop for ChannelPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a remote command did.
pub struct Outcome {
    pub status: u32,
    pub stderr: Vec<u8>,
}

impl Outcome {
    /// The far side's refusal about `host:path` (its complaint), if the command failed.
    pub fn refused(&self, host: &str, path: &str) -> Option<Failure> {
        (self.status != 0).then(|| {
            Failure::new(
                exit::FAILURE,
                format!("{host}:{path}: {}", remote::complaint(&self.stderr)),
            )
        })
    }
}

impl Fleet {
    pub fn new(
        sessions: Arc<Sessions>,
        options: Options,
        endpoint: Endpoint,
        document: Option<Document>,
        downloads: bool,
    ) -> Fleet {
        Fleet {
            sessions,
            options,
            endpoint,
            document: tokio::sync::Mutex::new(document),
            setups: Semaphore::new(CONCURRENT_SETUPS),
            live: Mutex::default(),
            downloads,
        }
    }

    /// The document the workers use (once the first one is connected).
    pub async fn document(&self) -> Option<Document> {
        *self.document.lock().await
    }

    /// A new worker. The first call decides the document: port forwarding
    /// unless IAM denies it or the agent cannot multiplex, then SSH sessions.
    pub async fn connect(&self) -> Result<Worker, ConnectError> {
        let _permit = self.setups.acquire().await.expect("never closed");
        let mut chosen = self.document.lock().await;
        if let Some(document) = *chosen {
            drop(chosen);
            return self
                .connect_with(document)
                .await
                .map_err(Failed::into_connect_error);
        }
        // The first worker decides, holding the lock so the others wait for it.
        let document = Document::PortForwarding;
        let result = self.connect_with(document).await;
        let fallback = match &result {
            Err(Failed::Denied(_)) => {
                format!("IAM denies {}", document.name())
            }
            Err(Failed::NoMux(reason)) => {
                format!("{} cannot multiplex here ({reason})", document.name())
            }
            _ => {
                if result.is_ok() {
                    *chosen = Some(document);
                }
                return result.map_err(Failed::into_connect_error);
            }
        };
        eprintln!("sm-ssh: {fallback}; using {}", Document::Ssh.name());
        *chosen = Some(Document::Ssh);
        drop(chosen);
        self.connect_with(Document::Ssh)
            .await
            .map_err(Failed::into_connect_error)
    }

    async fn connect_with(&self, document: Document) -> Result<Worker, Failed> {
        let target = self.start(document).await?;
        let session_id = target.session_id.clone();
        self.live.lock().expect("live").insert(session_id.clone());
        let opened = self.open(document, target).await;
        let (ssh, carrier) = match opened {
            Ok(pair) => pair,
            Err(failed) => {
                let _ = self.sessions.terminate(&session_id).await;
                self.forget(&session_id);
                return Err(failed);
            }
        };
        let worker = Worker {
            ssh,
            carrier,
            session_id,
            long_channels: Arc::default(),
            ranges: tokio::sync::Mutex::default(),
        };
        if self.downloads {
            worker.serve_ranges().await;
        }
        Ok(worker)
    }

    /// StartSession, backing off while the service throttles.
    async fn start(&self, document: Document) -> Result<StreamTarget, Failed> {
        let mut parameters = vec![("portNumber", self.endpoint.port.to_string())];
        if document == Document::PortForwardingToRemoteHost {
            parameters.push(("host", "localhost".to_owned()));
        }
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            let started = self
                .sessions
                .start(
                    &self.endpoint.instance_id,
                    &self.endpoint.label,
                    document.name(),
                    &parameters,
                )
                .await;
            match started {
                Ok(target) => return Ok(target),
                Err(error) if Sessions::is_denied(&error) => return Err(Failed::Denied(error)),
                Err(error) if error.is_transient() && attempt < START_ATTEMPTS => {
                    tracing::info!(attempt, "StartSession throttled; backing off");
                    let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                    tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(Failed::Fatal(error.into())),
            }
        }
        unreachable!("the loop returns")
    }

    /// The session's byte stream, and SSH logged in over it.
    async fn open(
        &self,
        document: Document,
        target: StreamTarget,
    ) -> Result<(Connection, Carrier), Failed> {
        let retry = |e: anyhow::Error| Failed::Retry(e);
        if document == Document::Ssh {
            let (near, far) = tokio::io::duplex(256 << 10);
            let (reader, writer) = tokio::io::split(far);
            let task = tokio::spawn(bridge(
                target,
                self.sessions.clone(),
                self.options.clone(),
                reader,
                writer,
            ));
            let ssh = self.login(near).await?;
            return Ok((ssh, Carrier::Bridge(task)));
        }
        let session =
            match MuxSession::connect(target, self.sessions.clone(), self.options.clone()).await {
                Ok(session) => session,
                Err(SessionError::Unsupported(reason)) => return Err(Failed::NoMux(reason)),
                Err(error) => return Err(retry(error.into())),
            };
        let stream = match session.open_stream().await {
            Ok(stream) => stream,
            Err(error) => {
                let _ = session.close().await;
                return Err(retry(error.into()));
            }
        };
        match self.login(stream).await {
            Ok(ssh) => Ok((ssh, Carrier::Mux(session))),
            Err(failed) => {
                let _ = session.close().await;
                Err(failed)
            }
        }
    }

    async fn login<S>(&self, stream: S) -> Result<Connection, Failed>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Connection::over_stream(stream, &self.endpoint.login)
            .await
            .map_err(|error| {
                if error.is::<Refused>() {
                    Failed::Fatal(error)
                } else {
                    Failed::Retry(error.context("SSH over the session failed"))
                }
            })
    }

    fn forget(&self, session_id: &str) {
        self.live.lock().expect("live").remove(session_id);
    }

    /// Ends `worker`'s SSH connection and its session.
    pub async fn close(&self, worker: Worker) {
        let Worker {
            ssh,
            carrier,
            session_id,
            ..
        } = worker;
        let closing = async {
            let _ = ssh.close().await;
            match carrier {
                Carrier::Bridge(task) => task.await.ok().and_then(Result::ok),
                Carrier::Mux(session) => session.close().await.ok(),
            }
        };
        match tokio::time::timeout(CLOSE_LIMIT, closing).await {
            Ok(Some(end)) => {
                tracing::debug!(session = %session_id, stats = ?end.stats, "session closed");
            }
            _ => {
                let _ = self.sessions.terminate(&session_id).await;
            }
        }
        self.forget(&session_id);
    }

    /// TerminateSession on every session still open (Ctrl-C).
    pub async fn terminate_all(&self) {
        let ids: Vec<String> = self.live.lock().expect("live").drain().collect();
        let calls = ids.iter().map(|id| self.sessions.terminate(id));
        for result in futures_util::future::join_all(calls).await {
            if let Err(error) = result {
                eprintln!("sm-ssh: {error}");
            }
        }
    }
}

/// Whether `error`, from a worker's commands, is its session or SSH
/// connection failing (another session may do better) rather than a refusal
/// by the far side or a local problem, which are `Failure`s.
pub fn is_lost(error: &anyhow::Error) -> bool {
    error.downcast_ref::<Failure>().is_none()
}

/// How one connection attempt failed.
enum Failed {
    Denied(AwsError),
    NoMux(String),
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

impl Failed {
    fn into_connect_error(self) -> ConnectError {
        match self {
            Failed::Denied(error) => ConnectError {
                error: error.into(),
                fatal: true,
            },
            Failed::NoMux(reason) => ConnectError {
                error: Failure::new(exit::FAILURE, reason).into(),
                fatal: true,
            },
            Failed::Retry(error) => ConnectError {
                error,
                fatal: false,
            },
            Failed::Fatal(error) => ConnectError { error, fatal: true },
        }
    }
}

impl Worker {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Runs `script`, feeding it `stdin` and writing its stdout to `stdout`.
    /// An `Err` is the connection failing (or the local writer); a refusal
    /// by the far side is a non-zero status.
    pub async fn run(
        &self,
        script: &str,
        stdin: impl AsyncRead + Send + Unpin + 'static,
        stdout: impl AsyncWrite + Unpin,
    ) -> anyhow::Result<Outcome> {
        let mut stderr = Vec::new();
        let started = std::time::Instant::now();
        let status = self.ssh.exec(script, stdin, stdout, &mut stderr).await?;
        // The script's tail names the command (its start is the shared helpers).
        let tail = script
            .char_indices()
            .rev()
            .nth(47)
            .map_or(script, |(at, _)| &script[at..]);
        tracing::debug!(session = %self.session_id, status, ms = started.elapsed().as_millis() as u64, command = %tail, "remote command ran");
        Ok(Outcome { status, stderr })
    }

    /// Starts the range server now rather than with the first range, so
    /// that its shell start overlaps the copy's planning.
    async fn serve_ranges(&self) {
        self.start_server(&mut *self.ranges.lock().await).await;
    }

    /// Starts `server` if it has not been.
    async fn start_server(&self, server: &mut Server) {
        if !matches!(server, Server::NotStarted) {
            return;
        }
        let Some(place) = self.hold_channel() else {
            *server = Server::Unavailable;
            return;
        };
        *server = match self.ssh.pipe(&remote::range_server()).await {
            Ok(pipe) => Server::Running {
                pipe,
                _place: place,
            },
            Err(error) => {
                tracing::debug!(session = %self.session_id, error = %format!("{error:#}"), "range server did not start");
                Server::Unavailable
            }
        };
    }

    /// Sends `request` ([`remote::range_request`]) to this worker's range
    /// server, started if need be, writes the `len` bytes of its answer to
    /// `sink` and returns the far side's SHA-256 of them. `None` when the
    /// server cannot answer (not started, the file changed, a read failed,
    /// the connection is gone): the caller runs [`remote::read_range`]
    /// instead, which tells these apart, after rewinding `sink` (part of
    /// the range may have been written to it).
    pub async fn serve_range(
        &self,
        request: Vec<u8>,
        len: u64,
        sink: &mut (impl AsyncWrite + Unpin),
    ) -> Option<Option<String>> {
        let mut server = self.ranges.lock().await;
        self.start_server(&mut server).await;
        let Server::Running { pipe, .. } = &mut *server else {
            return None;
        };
        let answer = async {
            pipe.send(request).await?;
            pipe.copy_to(len, sink).await?;
            pipe.line(200).await
        };
        match answer.await {
            Ok(line) => Some(remote::digest(&line)),
            Err(error) => {
                tracing::debug!(session = %self.session_id, error = %format!("{error:#}"), "range server stopped");
                pipe.close().await;
                // The next range starts another: this one may have stopped
                // for this file alone.
                *server = Server::NotStarted;
                None
            }
        }
    }

    /// Takes one of this connection's places for a long-lived channel, or
    /// `None` when all are taken: sshd allows 10 channels per connection
    /// (`MaxSessions`), and ranges need theirs. The place is given back
    /// when the returned guard is dropped.
    pub fn hold_channel(&self) -> Option<ChannelPlace> {
        let taken = self.long_channels.fetch_add(1, Ordering::AcqRel);
        if taken >= LONG_CHANNELS {
            self.long_channels.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ChannelPlace(self.long_channels.clone()))
    }

    /// Starts `script` with its stdin fed from `input`; the returned future
    /// runs it to the end (status and stdout) and may be spawned.
    pub async fn start(
        &self,
        script: &str,
        input: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> anyhow::Result<
        impl std::future::Future<Output = anyhow::Result<(u32, Vec<u8>)>> + Send + 'static,
    > {
        self.ssh.start(script, input).await
    }

    /// Starts `script` as a [`Pipe`], for requests and answers.
    pub async fn pipe(&self, script: &str) -> anyhow::Result<Pipe> {
        self.ssh.pipe(script).await
    }

    /// Runs `script` with no input and returns its stdout; a non-zero status
    /// is a failure about `host:path`, with the far side's complaint.
    pub async fn check(&self, script: &str, host: &str, path: &str) -> anyhow::Result<String> {
        let mut stdout = Vec::new();
        let outcome = self
            .run(script, tokio::io::empty(), &mut stdout)
            .await
            .with_context(|| format!("{host}:{path}"))?;
        if let Some(refusal) = outcome.refused(host, path) {
            return Err(refusal.into());
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    }
}
