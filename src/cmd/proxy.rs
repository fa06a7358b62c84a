//! `sm-ssh proxy`: ssh's ProxyCommand. Resolves the target on its access
//! path, installs our key if the path takes one, starts an SSH session and
//! bridges stdin/stdout to it. stdout carries only tunnel bytes; everything
//! else goes to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use sm_ssh_proxy::{bridge, SessionControl, SessionEnd, StreamTarget};

use crate::aws;
use crate::cli::Global;
use crate::keypush::PushKey;
use crate::path::{self, Control, Purpose};
use crate::resolve::ResolveArgs;
use crate::target::Target;

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
    let path = path::select(&target);
    let reach = path.resolve(&sdk, &target, &args.resolve.options()).await?;
    if !reach.sshd && args.port == 22 {
        let name = &args.target;
        return Err(crate::error::Failure::new(
            crate::error::exit::USAGE,
            format!(
                "{name} ({}) runs no SSH server: `sm-ssh connect {name}` or `sm-ssh shell {name}` \
                 opens a shell as {}, `sm-ssh forward {name} -L 6006:6006` forwards a port (a \
                 container running its own sshd: give its port, e.g. `Port 2222` in ssh_config)",
                reach.session_target, reach.default_user
            ),
        )
        .into());
    }
    // ssh pins host keys under %h: forget them when what is behind the name changed.
    path::pin_host_key(&args.target, &reach)?;
    let user = args.user.as_deref().unwrap_or(reach.default_user);
    path::install_key(&sdk, &reach, user, args.push_key).await?;
    let control = Arc::new(Control::new(&sdk, path));
    let label = args.label.as_deref().unwrap_or(&args.target);
    let stream = control
        .start(&reach, &Purpose::Ssh { port: args.port }, label)
        .await?;
    tracing::info!(session_id = %stream.session_id, target = %reach.session_target, "session started");
    let end = stdio_bridge(stream, control, "sm-ssh: ").await?;
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

/// Bridges this process's stdin/stdout to the session until it ends, then
/// shows on stderr, after `prefix`, what the agent said at the end.
pub async fn stdio_bridge(
    target: StreamTarget,
    sessions: Arc<impl SessionControl>,
    prefix: &str,
) -> anyhow::Result<SessionEnd> {
    let end = bridge(
        target,
        sessions,
        crate::session::data_channel_options()?,
        tokio::io::stdin(),
        tokio::io::stdout(),
    )
    .await?;
    if !end.output.trim().is_empty() {
        eprintln!("{prefix}{}", end.output.trim());
    }
    Ok(end)
}
