//! `sm-ssh proxy`: ssh's ProxyCommand. Resolves the target on its access
//! path (through the warm-path cache), installs our key if the path takes
//! one while the session is set up, and bridges stdin/stdout to it once both
//! are done. stdout carries only tunnel bytes; everything else goes to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use sm_ssh_proxy::{bridge_open, OpenSession, SessionEnd};

use crate::aws;
use crate::cli::Global;
use crate::keypush::PushKey;
use crate::path::{self, Control, Purpose};
use crate::resolve::ResolveArgs;
use crate::target::Target;
use crate::warm::{self, Warm};

/// How the agent's `channel_closed` says the target port refused it.
const NO_LISTENER: &str = "Unable to connect to specified port";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port of sshd on the instance (ssh's %p).
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// When to install our public key on the instance with SendCommand.
    #[arg(long, value_enum, default_value_t)]
    pub push_key: PushKey,
    /// Login user whose authorized_keys receive the key (default: root, or
    /// sagemaker-user for Studio).
    #[arg(long)]
    pub user: Option<String>,
    /// The name to record in StartSession's Reason (default: the target).
    #[arg(long, hide = true)]
    pub label: Option<String>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    /// ssh's %h: `<name>.<kind>.sagemaker`, `mi-…` or another target `sm-ssh list` shows.
    pub target: String,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.target)?;
    let sdk = aws::load(global).await;
    let control = Arc::new(Control::new(&sdk, path::select(&target)));
    let warm = Warm::open(&sdk, global, &target, &args.resolve, &control).await;
    let label = args.label.as_deref().unwrap_or(&args.target);
    let purpose = Purpose::Ssh { port: args.port };
    let mut fresh = false;
    let session = loop {
        let (reach, cached) = warm.reach(fresh).await?;
        if !reach.sshd && args.port == 22 {
            return Err(no_sshd(&args.target, &reach));
        }
        // ssh pins host keys under %h: forget them when what is behind the name changed.
        path::pin_host_key(&args.target, &reach)?;
        let user = args.user.as_deref().unwrap_or(reach.default_user);
        let key = (user, args.push_key);
        match warm
            .open_session(&control, &reach, &purpose, label, key)
            .await
        {
            Ok(session) => break session,
            // A stale cache never fails a connection: resolve again, once.
            Err(error) if cached && warm::is_stale(&error) => {
                warm.forget(&reach);
                fresh = true;
            }
            Err(error) => return Err(error),
        }
    };
    let end = stdio_bridge_open(session, "sm-ssh: ").await?;
    tracing::debug!(stats = ?end.stats, "session over");
    if end.output.contains(NO_LISTENER) {
        // The agent could not reach sshd: say what works without one.
        eprintln!(
            "sm-ssh: nothing listens on port {} of {} (no SSH server there?); \
             `sm-ssh shell {}` opens a shell without one",
            args.port, args.target, args.target
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Bridges this process's stdin/stdout to an open session until it ends,
/// then shows on stderr, after `prefix`, what the agent said at the end.
async fn stdio_bridge_open(
    session: OpenSession<Control>,
    prefix: &str,
) -> anyhow::Result<SessionEnd> {
    let end = bridge_open(session, tokio::io::stdin(), tokio::io::stdout()).await?;
    if !end.output.trim().is_empty() {
        eprintln!("{prefix}{}", end.output.trim());
    }
    Ok(end)
}

/// The refusal for a path without an SSH server, naming what works there.
fn no_sshd(name: &str, reach: &path::Reach) -> anyhow::Error {
    crate::error::Failure::new(
        crate::error::exit::USAGE,
        format!(
            "{name} ({}) runs no SSH server: `sm-ssh connect {name}` or `sm-ssh shell {name}` \
             opens a shell as {}, `sm-ssh forward {name} -L 6006:6006` forwards a port (a \
             container running its own sshd: give its port, e.g. `Port 2222` in ssh_config)",
            reach.session_target, reach.default_user
        ),
    )
    .into()
}
