//! `sm-ssh shell`: an interactive shell on the target through a Session
//! Manager shell session (no sshd needed), and the session runner that
//! `exec` and the plugin mode share: the local terminal in raw mode, its
//! size at start and on every SIGWINCH, Ctrl-C / Ctrl-\ / Ctrl-Z passed on
//! as the plugin passes them, StdErr and the exit code kept apart.

use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use sm_ssh_proxy::payload::Size;
use sm_ssh_proxy::{
    shell_open, OpenSession, Predial, SessionError, ShellEnd, ShellIo, StreamTarget,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::cli::Global;
use crate::error::{exit, Failure};
use crate::path;
use crate::resolve::ResolveArgs;
use crate::session::Sessions;
use crate::target::Target;
use crate::{aws, terminal};

/// The default shell document (session type `Standard_Stream`).
pub const SHELL_DOCUMENT: &str = "SSM-SessionManagerRunShell";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The session document: another `Standard_Stream` document (e.g. one
    /// that sets a shell profile or a run-as user).
    #[arg(long, value_name = "NAME", default_value = SHELL_DOCUMENT)]
    pub document: String,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    /// `<name>.<kind>.sagemaker`, `mi-…`, `i-…` or another target `sm-ssh list` shows.
    pub target: String,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let local = if terminal::stdin_is_terminal() {
        Local::Terminal
    } else {
        Local::Plain
    };
    let end = start_and_run(
        global,
        &args.target,
        &args.resolve,
        &args.document,
        &[],
        local,
    )
    .await?;
    Ok(exit_status(&end))
}

/// How the local side of a shell session behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// stdin is a terminal: raw mode, sizes, keystrokes.
    Terminal,
    /// stdin is a pipe or file: its bytes as they come, Ctrl-D (EOT) at its
    /// end so that the remote shell sees the end of its input.
    Plain,
    /// A non-interactive command: stdin is not read (the agent gives the
    /// command none); only Ctrl-C and friends are passed on.
    Command,
}

/// Resolves `name` the way `sm-ssh proxy` does, starts `document` there and
/// runs the session to its end.
pub async fn start_and_run(
    global: &Global,
    name: &str,
    resolve_args: &ResolveArgs,
    document: &str,
    parameters: &[(&str, String)],
    local: Local,
) -> anyhow::Result<ShellEnd> {
    let target = Target::parse(name)?;
    let sdk = aws::load(global).await;
    let path = path::select(&target);
    if path == path::Path::Space {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "Studio spaces take SSH sessions only: use `sm-ssh connect {name}` (no Session \
                 Manager shell reaches a space)"
            ),
        )
        .into());
    }
    let reach = path.resolve(&sdk, &target, &resolve_args.options()).await?;
    start_on(
        &sdk,
        &reach.session_target,
        name,
        document,
        parameters,
        local,
    )
    .await
}

/// Starts `document` on a resolved session target and runs it to its end.
pub async fn start_on(
    sdk: &aws_config::SdkConfig,
    session_target: &str,
    label: &str,
    document: &str,
    parameters: &[(&str, String)],
    local: Local,
) -> anyhow::Result<ShellEnd> {
    let sessions = Arc::new(
        Sessions::new(aws_sdk_ssm::Client::new(sdk), sdk).with_kms(aws_sdk_kms::Client::new(sdk)),
    );
    let predial = crate::session::predial(sdk, None);
    let stream = sessions
        .start(session_target, label, document, parameters)
        .await?;
    tracing::info!(session_id = %stream.session_id, %session_target, document, "session started");
    run_target(stream, sessions, local, predial).await
}

/// Opens the data channel of a started session (through `predial`, when it
/// was dialled to its origin) and runs it as a shell.
pub async fn run_target(
    stream: StreamTarget,
    sessions: Arc<Sessions>,
    local: Local,
    predial: Option<Predial>,
) -> anyhow::Result<ShellEnd> {
    let options = crate::session::data_channel_options()?;
    let session = sm_ssh_proxy::open(stream, sessions.clone(), options, predial)
        .await
        .map_err(session_failure)?;
    run_open(session, sessions, local).await
}

/// Runs an established shell session until it ends; the terminal is
/// restored whatever happens, SIGTERM and SIGHUP included (they end the
/// session with TerminateSession).
pub async fn run_open(
    session: OpenSession<Sessions>,
    sessions: Arc<Sessions>,
    local: Local,
) -> anyhow::Result<ShellEnd> {
    let session_id = session.session_id().to_owned();
    if !session.customer_message().is_empty() {
        eprintln!("{}", session.customer_message());
    }
    let (input_tx, input_rx) = mpsc::channel::<Bytes>(16);
    let (size_tx, size_rx) = mpsc::channel::<Size>(4);
    let raw = match local {
        Local::Terminal => Some(terminal::RawMode::enter().map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("cannot put the terminal in raw mode: {e}"),
            )
        })?),
        Local::Plain | Local::Command => None,
    };
    match local {
        Local::Terminal => terminal::spawn_stdin_reader(input_tx.clone(), None),
        Local::Plain => terminal::spawn_stdin_reader(input_tx.clone(), Some(EOT)),
        Local::Command => {}
    }
    let _ = size_tx.try_send(terminal::size());
    if local == Local::Terminal {
        forward_resizes(size_tx)?;
    }
    forward_control_signals(input_tx)?;
    let io = ShellIo {
        input: input_rx,
        sizes: size_rx,
        stdout: tokio::io::stdout(),
        stderr: tokio::io::stderr(),
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let outcome = tokio::select! {
        result = shell_open(session, io) => Some(result),
        _ = term.recv() => None,
        _ = hangup.recv() => None,
    };
    drop(raw);
    let Some(result) = outcome else {
        let _ = sm_ssh_proxy::SessionControl::terminate(&*sessions, &session_id).await;
        return Err(Failure::new(
            exit::FAILURE,
            format!("stopped by a signal; session {session_id} terminated"),
        )
        .into());
    };
    let end = result.map_err(session_failure)?;
    if local != Local::Command {
        let output = end.output.trim();
        if output.is_empty() {
            eprintln!("\r\nExiting session with sessionId: {session_id}.");
        } else {
            eprintln!("\r\nSessionId: {session_id} : {output}");
        }
    }
    Ok(end)
}

/// Ctrl-D: what the end of a piped stdin becomes on the remote terminal.
const EOT: u8 = 0x04;

/// SIGWINCH → a Size message with the new size.
fn forward_resizes(tx: mpsc::Sender<Size>) -> std::io::Result<()> {
    let mut winch = signal(SignalKind::window_change())?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if tx.send(terminal::size()).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// SIGINT, SIGQUIT and SIGTSTP become the bytes 0x03, 0x1c and 0x1a, as the
/// plugin sends them (`sessionutil/control_signals_unix.go`); in raw mode the
/// keys arrive as those bytes already, this covers signals sent otherwise.
fn forward_control_signals(tx: mpsc::Sender<Bytes>) -> std::io::Result<()> {
    for (kind, byte) in [
        (SignalKind::interrupt(), 0x03u8),
        (SignalKind::quit(), 0x1c),
        (
            SignalKind::from_raw(rustix::process::Signal::TSTP.as_raw()),
            0x1a,
        ),
    ] {
        let mut signals = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                if tx.send(Bytes::copy_from_slice(&[byte])).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// The process's exit status: the remote command's when the agent sent one.
pub fn exit_status(end: &ShellEnd) -> ExitCode {
    match end.exit_code {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(exit::FAILURE)),
        None => ExitCode::SUCCESS,
    }
}

/// A failed session as one clear line and an exit code.
pub fn session_failure(error: SessionError) -> anyhow::Error {
    let (code, message) = match error {
        SessionError::Kms(why) => (exit::ACCESS_DENIED, why),
        SessionError::Closed(why) if why.contains("Unable to retrieve data key") => (
            exit::ACCESS_DENIED,
            format!(
                "the agent could not decrypt this session's KMS data key: the instance's role \
                 needs kms:Decrypt on the Session Manager KMS key (`sm-ssh policy kms --key <key>` prints the \
                 statement) (agent: {why})"
            ),
        ),
        other => (exit::FAILURE, other.to_string()),
    };
    Failure::new(code, message).into()
}
