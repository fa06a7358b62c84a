//! `sm-ssh proxy`: ssh's ProxyCommand. Resolves the target, pushes our key if
//! needed, starts an AWS-StartSSHSession and bridges stdin/stdout to it.
//! stdout carries only tunnel bytes; everything else goes to stderr.

use std::process::ExitCode;
use std::sync::Arc;

use sm_ssh_proxy::{bridge, SessionEnd, StreamTarget};

use crate::cli::Global;
use crate::keypush::{self, PushKey};
use crate::resolve::{self, ResolveArgs, Resolved};
use crate::session::Sessions;
use crate::target::Target;
use crate::{aws, keys, known_hosts};

pub const SSH_DOCUMENT: &str = "AWS-StartSSHSession";
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
    let resolved = resolve::resolve(&sdk, &target, &args.resolve.options()).await?;
    if args.target != resolved.instance_id {
        // ssh pins host keys under %h: forget them when the name moved to a new instance.
        known_hosts::rebind(&args.target, &resolved.instance_id)?;
    }
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let user = args.user.as_deref().unwrap_or(resolved.default_user);
    push_key(&ssm, &target, &resolved, user, args.push_key).await?;
    let sessions = Arc::new(Sessions::new(ssm));
    let label = args.label.as_deref().unwrap_or(&args.target);
    let stream = sessions
        .start(
            &resolved.instance_id,
            label,
            SSH_DOCUMENT,
            &[("portNumber", args.port.to_string())],
        )
        .await?;
    tracing::info!(session_id = %stream.session_id, instance_id = %resolved.instance_id, "session started");
    let end = stdio_bridge(stream, sessions, "sm-ssh: ").await?;
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
    sessions: Arc<Sessions>,
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

/// Installs our key on the instance unless `mode` or the state file says not
/// to. Native targets (`sagemaker-cluster:…`) take no SendCommand: skipped.
pub async fn push_key(
    ssm: &aws_sdk_ssm::Client,
    target: &Target,
    resolved: &Resolved,
    user: &str,
    mode: PushKey,
) -> anyhow::Result<()> {
    if mode == PushKey::Never || matches!(target, Target::Native(_)) {
        return Ok(());
    }
    let identity = keys::Identity::ensure()?;
    let state = keypush::default_state_file(&keys::data_dir()?);
    let outcome = keypush::ensure(
        ssm,
        &resolved.instance_id,
        user,
        &identity.public_key_line(),
        mode,
        &state,
    )
    .await?;
    tracing::debug!(?outcome, instance_id = %resolved.instance_id, "key push");
    Ok(())
}
