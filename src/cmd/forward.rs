//! `sm-ssh forward`: local port forwarding to the target without ssh.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use sm_ssh_proxy::{
    bridge, BasicSession, MuxPool, MuxSession, MuxStream, Options, SessionControl, StreamTarget,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLock;

use crate::aws;
use crate::cli::Global;
use crate::error::{exit, Failure};
use crate::path::{self, Purpose};
use crate::port::{self, OpenError, Opened};
use crate::resolve::ResolveArgs;
use crate::session::Sessions;
use crate::target::Target;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `<name>.<kind>.sagemaker`, `mi-…` or another target `sm-ssh list` shows.
    pub target: String,
    /// `[bind:]LOCAL:[host:]REMOTE`: listen on LOCAL and forward to REMOTE on the
    /// instance (or to host:REMOTE as seen from it). Repeatable.
    #[arg(short = 'L', long = "local", value_name = "SPEC", required = true)]
    pub forwards: Vec<Spec>,
    /// Spread connections over N sessions (port-forwarding documents only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub sessions: u16,
    /// The Session Manager document to use (default: the best one IAM allows).
    #[arg(long, value_enum)]
    pub document: Option<Document>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    check_documents(&args)?;
    let target = Target::parse(&args.target)?;
    let options = crate::session::data_channel_options()?;
    let sdk = aws::load(global).await;
    let path = path::select(&target);
    let reach = path.resolve(&sdk, &target, &args.resolve.options()).await?;
    if path == path::Path::Space {
        return super::forward_ssh::run(&reach, &args.forwards, global).await;
    }
    // Port-forwarding documents are the SSM API's (the ssm and native paths).
    let sessions = Arc::new(Sessions::new(aws_sdk_ssm::Client::new(&sdk), &sdk));
    let context = Arc::new(Context {
        sessions,
        options,
        instance_id: reach.session_target.clone(),
        label: args.target.clone(),
        live: Mutex::default(),
    });
    // Ctrl-C is ours from here on: a SIGINT right after the first
    // "forwarding" line (a script or test that read it) must not kill us
    // before the sessions are terminated.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    // Bind every port first: a taken port fails before any session starts.
    let mut listeners = Vec::new();
    for spec in &args.forwards {
        let listener = TcpListener::bind((spec.bind.as_str(), spec.local_port))
            .await
            .map_err(|e| {
                Failure::new(
                    exit::USAGE,
                    format!("cannot listen on {}:{}: {e}", spec.bind, spec.local_port),
                )
            })?;
        listeners.push((spec.clone(), listener));
    }
    // Forwards to the same destination share their sessions.
    let mut backends: HashMap<(Option<String>, u16), Arc<Backend>> = HashMap::new();
    let mut accepting = tokio::task::JoinSet::new();
    let result = async {
        for (spec, listener) in listeners {
            let key = (spec.host.clone(), spec.remote_port);
            let backend = match backends.get(&key) {
                Some(backend) => backend.clone(),
                None => {
                    let backend = Arc::new(
                        Backend::choose(&context, &spec, args.document, args.sessions).await?,
                    );
                    backends.insert(key, backend.clone());
                    backend
                }
            };
            let local = listener.local_addr()?;
            eprintln!(
                "forwarding {local} -> {} on {} ({})",
                spec.destination(),
                context.instance_id,
                backend.describe()
            );
            accepting.spawn(accept_loop(listener, backend, context.clone()));
        }
        eprintln!("sm-ssh: press Ctrl-C to stop");
        tokio::select! {
            _ = interrupt.recv() => Ok(()),
            Some(ended) = accepting.join_next() => {
                ended.context("a forward's task failed")?
            }
        }
    }
    .await;
    accepting.abort_all();
    // Every session we opened ends with TerminateSession, whatever happened.
    let closing = backends
        .into_values()
        .map(|backend| async move { backend.close().await });
    futures_util::future::join_all(closing).await;
    context.terminate_live().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Rejects document choices that cannot carry the forwards asked for.
fn check_documents(args: &Args) -> anyhow::Result<()> {
    let remote = args.forwards.iter().find(|spec| spec.host.is_some());
    match (args.document, remote) {
        (Some(document @ (Document::Ssh | Document::PortForwarding)), Some(spec)) => {
            Err(Failure::new(
                exit::USAGE,
                format!(
                    "{} reaches only the instance itself, not {}; use --document {} (or leave --document out)",
                    document.name(),
                    spec.destination(),
                    Document::PortForwardingToRemoteHost.name()
                ),
            )
            .into())
        }
        _ => Ok(()),
    }
}

/// What every connection needs: who to start sessions on, and the
/// per-connection sessions still open (so Ctrl-C can terminate them).
struct Context {
    sessions: Arc<Sessions>,
    options: Options,
    instance_id: String,
    label: String,
    live: Mutex<HashSet<String>>,
}

impl Context {
    async fn start(
        &self,
        document: Document,
        spec: &Spec,
    ) -> Result<StreamTarget, crate::error::AwsError> {
        let purpose = match document {
            Document::Ssh => Purpose::Ssh {
                port: spec.remote_port,
            },
            _ => Purpose::Forward {
                document: document.name(),
                host: (document == Document::PortForwardingToRemoteHost)
                    .then(|| spec.host.as_deref().unwrap_or("localhost")),
                port: spec.remote_port,
                local_port: spec.local_port,
            },
        };
        let (document, parameters) = path::ssm::document(&purpose);
        self.sessions
            .start(&self.instance_id, &self.label, document, &parameters)
            .await
    }

    /// `n` sessions with `document`, started and connected concurrently; on a
    /// failure, ends those already started.
    async fn open(&self, document: Document, spec: &Spec, n: u16) -> Result<Opened, OpenError> {
        port::open(&self.sessions, &self.options, n, || {
            self.start(document, spec)
        })
        .await
    }

    async fn terminate_live(&self) {
        let ids: Vec<String> = self.live.lock().expect("live sessions").drain().collect();
        let calls = ids.iter().map(|id| self.sessions.terminate(id));
        for result in futures_util::future::join_all(calls).await {
            if let Err(error) = result {
                eprintln!("sm-ssh: {error}");
            }
        }
    }
}

/// How connections to one destination reach it.
enum Backend {
    /// Shared smux sessions (a port-forwarding document); taken out on close.
    Mux {
        document: Document,
        spec: Spec,
        sessions: u16,
        pool: RwLock<Option<MuxPool>>,
    },
    /// The agent has no smux: one connection at a time. Each listener serves
    /// its own session; the first one opened waits here for the first listener.
    Basic {
        document: Document,
        spec: Spec,
        first: std::sync::Mutex<Option<Box<BasicSession<Sessions>>>>,
    },
    /// One AWS-StartSSHSession per connection.
    PerConnection { spec: Spec },
}

impl Backend {
    /// The first document IAM allows, in order of preference, unless forced.
    async fn choose(
        context: &Context,
        spec: &Spec,
        forced: Option<Document>,
        sessions: u16,
    ) -> anyhow::Result<Backend> {
        let candidates: Vec<Document> = match (forced, &spec.host) {
            (Some(document), _) => vec![document],
            (None, Some(_)) => vec![Document::PortForwardingToRemoteHost],
            (None, None) => vec![
                Document::PortForwarding,
                Document::PortForwardingToRemoteHost,
                Document::Ssh,
            ],
        };
        let mut denied = Vec::new();
        for document in candidates.iter().copied() {
            if document == Document::Ssh {
                if sessions > 1 {
                    eprintln!("sm-ssh: --sessions is ignored with AWS-StartSSHSession (one session per connection)");
                }
                return Ok(Backend::PerConnection { spec: spec.clone() });
            }
            let opened = match context.open(document, spec, sessions).await {
                Ok(opened) => opened,
                Err(OpenError::Start(error)) if Sessions::is_denied(&error) && forced.is_none() => {
                    tracing::info!(
                        document = document.name(),
                        "document denied; trying the next one"
                    );
                    denied.push(document.name());
                    continue;
                }
                Err(OpenError::Start(error)) => return Err(error.into()),
                Err(OpenError::Connect(error)) => {
                    return Err(anyhow::Error::new(error).context(format!(
                        "opening {} to {}",
                        document.name(),
                        context.instance_id
                    )))
                }
            };
            if !denied.is_empty() {
                eprintln!(
                    "sm-ssh: {} denied; using {}",
                    denied.join(" and "),
                    document.name()
                );
            }
            return Ok(match opened {
                Opened::Mux(opened) => Backend::Mux {
                    document,
                    spec: spec.clone(),
                    sessions,
                    pool: RwLock::new(Some(MuxPool::from_sessions(opened))),
                },
                Opened::Basic(session) => {
                    if sessions > 1 {
                        eprintln!("sm-ssh: --sessions is ignored: the agent on {} has no smux (3.0.196.0 or older)", context.instance_id);
                    }
                    Backend::Basic {
                        document,
                        spec: spec.clone(),
                        first: std::sync::Mutex::new(Some(session)),
                    }
                }
            });
        }
        Err(Failure::new(
            exit::ACCESS_DENIED,
            format!(
                "AWS denied StartSession with {} on {}, and no other document can reach {}. \
                 Ask for ssm:StartSession on one of them (see `sm-ssh policy`)",
                denied.join(" and "),
                context.instance_id,
                spec.destination()
            ),
        )
        .into())
    }

    fn describe(&self) -> String {
        match self {
            Backend::Mux { document, pool, .. } => {
                let n = pool
                    .try_read()
                    .ok()
                    .and_then(|pool| pool.as_ref().map(|p| p.sessions().len()))
                    .unwrap_or(0);
                format!(
                    "{}, {n} session{}",
                    document.name(),
                    if n == 1 { "" } else { "s" }
                )
            }
            Backend::Basic { document, .. } => format!(
                "{}, basic port forwarding: the agent has no smux, one connection at a time",
                document.name()
            ),
            Backend::PerConnection { .. } => {
                "AWS-StartSSHSession, one session per connection".to_owned()
            }
        }
    }

    async fn close(&self) {
        let Backend::Mux { pool, .. } = self else {
            return;
        };
        let Some(pool) = pool.write().await.take() else {
            return;
        };
        for result in pool.close().await {
            if let Err(error) = result {
                tracing::debug!(%error, "closing a port-forwarding session");
            }
        }
    }

    /// A stream on the pool; when every session of the pool has ended (idle
    /// timeout, closed by the service), starts a new pool first.
    async fn open_mux_stream(&self, context: &Context) -> anyhow::Result<MuxStream> {
        let Backend::Mux {
            document,
            spec,
            sessions,
            pool,
        } = self
        else {
            unreachable!("only called for smux backends");
        };
        let alive = |pool: &MuxPool| pool.sessions().iter().any(MuxSession::is_alive);
        {
            let guard = pool.read().await;
            let current = guard.as_ref().context("the forward is closing")?;
            if alive(current) {
                return Ok(current.open_stream().await?);
            }
        }
        let mut guard = pool.write().await;
        let current = guard.as_ref().context("the forward is closing")?;
        if !alive(current) {
            eprintln!(
                "sm-ssh: the sessions to {} ended; starting new ones",
                spec.destination()
            );
            let fresh = match context.open(*document, spec, *sessions).await? {
                Opened::Mux(fresh) => MuxPool::from_sessions(fresh),
                Opened::Basic(session) => {
                    let _ = session.close().await;
                    anyhow::bail!(
                        "the agent on {} no longer speaks smux; restart sm-ssh forward",
                        context.instance_id
                    );
                }
            };
            if let Some(old) = guard.replace(fresh) {
                old.close().await;
            }
        }
        let current = guard.as_ref().context("the forward is closing")?;
        Ok(current.open_stream().await?)
    }

    /// Carries one accepted connection to the destination.
    async fn serve(&self, context: &Context, socket: TcpStream) -> anyhow::Result<()> {
        match self {
            Backend::Mux { .. } => {
                let stream = self.open_mux_stream(context).await?;
                port::carry(socket, stream, &context.options).await?;
                Ok(())
            }
            Backend::Basic { .. } => unreachable!("basic forwards accept in serve_basic"),
            Backend::PerConnection { spec } => {
                let target = context.start(Document::Ssh, spec).await?;
                let id = target.session_id.clone();
                context
                    .live
                    .lock()
                    .expect("live sessions")
                    .insert(id.clone());
                let (reader, writer) = socket.into_split();
                let ended = bridge(
                    target,
                    context.sessions.clone(),
                    context.options.clone(),
                    reader,
                    writer,
                )
                .await;
                context.live.lock().expect("live sessions").remove(&id);
                ended?;
                Ok(())
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    backend: Arc<Backend>,
    context: Arc<Context>,
) -> anyhow::Result<()> {
    if let Backend::Basic { .. } = &*backend {
        return serve_basic(listener, &backend, &context).await;
    }
    loop {
        let (socket, peer) = listener.accept().await.context("accepting a connection")?;
        let _ = socket.set_nodelay(true);
        let backend = backend.clone();
        let context = context.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "connection accepted");
            if let Err(error) = backend.serve(&context, socket).await {
                eprintln!(
                    "sm-ssh: connection from {peer}: {}",
                    crate::error::describe(&error, None).1
                );
            }
        });
    }
}

/// Basic port forwarding on one listener: its session serves the
/// connections one at a time; when the service ends it, the next connection
/// starts a new one. Ctrl-C aborts this task and `terminate_live` ends the
/// session.
async fn serve_basic(
    listener: TcpListener,
    backend: &Backend,
    context: &Context,
) -> anyhow::Result<()> {
    let Backend::Basic {
        document,
        spec,
        first,
    } = backend
    else {
        unreachable!("only called for basic backends");
    };
    let mut session = first.lock().expect("first session").take();
    loop {
        let mut waiting = None;
        let current = match session.take() {
            Some(current) => current,
            None => {
                let (socket, _) = listener.accept().await.context("accepting a connection")?;
                waiting = Some(socket);
                match context.open(*document, spec, 1).await? {
                    Opened::Basic(current) => current,
                    Opened::Mux(sessions) => {
                        for session in sessions {
                            let _ = session.close().await;
                        }
                        anyhow::bail!(
                            "the agent on {} now speaks smux; restart sm-ssh forward",
                            context.instance_id
                        );
                    }
                }
            }
        };
        let id = current.session_id().to_owned();
        context
            .live
            .lock()
            .expect("live sessions")
            .insert(id.clone());
        let ended = current
            .serve(&listener, waiting, std::future::pending())
            .await;
        context.live.lock().expect("live sessions").remove(&id);
        let end = ended?;
        let why = if end.output.is_empty() {
            String::new()
        } else {
            format!(" ({})", end.output)
        };
        eprintln!(
            "sm-ssh: the session to {} ended{why}; the next connection starts a new one",
            spec.destination()
        );
    }
}

/// The documents that can carry a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Document {
    /// One session per connection, to localhost only: works under the
    /// sagemaker-ssh-helper client policy.
    #[value(name = "AWS-StartSSHSession")]
    Ssh,
    /// Connections share sessions through smux (localhost targets).
    #[value(name = "AWS-StartPortForwardingSession")]
    PortForwarding,
    /// Connections share sessions through smux (any host the instance reaches).
    #[value(name = "AWS-StartPortForwardingSessionToRemoteHost")]
    PortForwardingToRemoteHost,
}

impl Document {
    pub fn name(self) -> &'static str {
        match self {
            Document::Ssh => "AWS-StartSSHSession",
            Document::PortForwarding => "AWS-StartPortForwardingSession",
            Document::PortForwardingToRemoteHost => "AWS-StartPortForwardingSessionToRemoteHost",
        }
    }
}

/// One `-L [bind:]LOCAL:[host:]REMOTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub bind: String,
    pub local_port: u16,
    /// `None`: the instance itself (localhost).
    pub host: Option<String>,
    pub remote_port: u16,
}

impl FromStr for Spec {
    type Err = String;

    fn from_str(text: &str) -> Result<Spec, String> {
        let fields = split_fields(text)
            .ok_or_else(|| format!("`{text}`: unbalanced [ ] around an IPv6 address"))?;
        let (bind, local, host, remote) = match fields.as_slice() {
            [local, remote] => (None, local, None, remote),
            [local, host, remote] => (None, local, Some(host), remote),
            [bind, local, host, remote] => (Some(bind), local, Some(host), remote),
            _ => {
                return Err(format!(
                    "`{text}` is not a forward; expected [bind:]LOCAL:[host:]REMOTE, e.g. 8888:localhost:8888"
                ))
            }
        };
        let port = |what: &str, value: &str| {
            value.parse::<u16>().map_err(|_| {
                format!("`{text}`: {what} port `{value}` is not a number from 0 to 65535")
            })
        };
        let local_port = port("local", local)?;
        let remote_port = port("remote", remote)?;
        if remote_port == 0 {
            return Err(format!("`{text}`: the remote port cannot be 0"));
        }
        let bind = match bind.map(String::as_str) {
            None | Some("") | Some("localhost") => "127.0.0.1".to_owned(),
            Some("*") => "0.0.0.0".to_owned(),
            Some(other) => other.to_owned(),
        };
        let host = host
            .filter(|h| !h.is_empty() && !is_loopback_name(h))
            .cloned();
        Ok(Spec {
            bind,
            local_port,
            host,
            remote_port,
        })
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bind = if self.bind.contains(':') {
            format!("[{}]", self.bind)
        } else {
            self.bind.clone()
        };
        let host = self.host.as_deref().unwrap_or("localhost");
        write!(
            f,
            "{bind}:{} -> {host}:{}",
            self.local_port, self.remote_port
        )
    }
}

impl Spec {
    /// `host:port` as seen from the instance.
    pub fn destination(&self) -> String {
        format!(
            "{}:{}",
            self.host.as_deref().unwrap_or("localhost"),
            self.remote_port
        )
    }
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host == "127.0.0.1" || host == "::1"
}

/// Splits on `:` outside `[…]`, dropping the brackets.
fn split_fields(text: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut in_brackets = false;
    for c in text.chars() {
        match c {
            '[' if !in_brackets => in_brackets = true,
            ']' if in_brackets => in_brackets = false,
            '[' | ']' => return None,
            ':' if !in_brackets => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    (!in_brackets).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        text.parse().unwrap()
    }

    #[test]
    fn forms_of_a_forward() {
        assert_eq!(
            spec("8888:8889"),
            Spec {
                bind: "127.0.0.1".into(),
                local_port: 8888,
                host: None,
                remote_port: 8889
            }
        );
        assert_eq!(spec("8888:localhost:8888").host, None);
        assert_eq!(
            spec("0:db.internal:5432").host.as_deref(),
            Some("db.internal")
        );
        assert_eq!(spec("*:80:localhost:8080").bind, "0.0.0.0");
        let v6 = spec("[::1]:80:[fd00::5]:8080");
        assert_eq!(
            (v6.bind.as_str(), v6.host.as_deref()),
            ("::1", Some("fd00::5"))
        );
        assert_eq!(v6.to_string(), "[::1]:80 -> fd00::5:8080");
    }

    #[test]
    fn bad_forwards_are_explained() {
        for bad in [
            "",
            "80",
            "a:80",
            "80:b",
            "80:x:70000",
            "1:2:3:4:5",
            "80:x:0",
            "[::1:80:90",
        ] {
            let error = bad.parse::<Spec>().unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }
    }
}
