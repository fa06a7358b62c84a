//! `sm-ssh cp`: copy files to or from a target over N sessions at once, like
//! scp, with progress, SHA-256 verification and resume (see docs/cp.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::HumanBytes;

use super::forward::Document;
use crate::cli::Global;
use crate::copy::engine::{self, Settings};
use crate::copy::fleet::{self, Endpoint, Fleet, Worker};
use crate::copy::plan::{self, Direction, Operand, RemoteSpec};
use crate::copy::progress::Progress;
use crate::error::{exit, Failure};
use crate::keypush::PushKey;
use crate::path;
use crate::resolve::ResolveArgs;
use crate::session::Sessions;
use crate::ssh_client::{HostKeyCheck, Login};
use crate::target::Target;
use crate::{aws, keys};

/// The exit status of a copy stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;
/// Sessions tried for planning before the copy fails.
const SETUP_ATTEMPTS: u32 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Copy directories and everything under them.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Sessions to copy over at once (default: from the total size, 1 below
    /// 2 MiB up to 8 from 64 MiB).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=32))]
    pub sessions: Option<u16>,
    /// The Session Manager document to carry SSH (default: port forwarding
    /// when IAM allows it, else AWS-StartSSHSession).
    #[arg(long, value_enum)]
    pub document: Option<Document>,
    /// No progress bar and no summary line; errors only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Login user (default: root, or sagemaker-user for Studio); `user@` in the operand wins.
    #[arg(long)]
    pub user: Option<String>,
    /// Port of sshd on the instance.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// When to install our public key on the instance with SendCommand.
    #[arg(long, value_enum, default_value_t)]
    pub push_key: PushKey,
    /// Bytes per range (default: chosen per file); for tests.
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub range_size: Option<u64>,
    #[command(flatten)]
    pub resolve: ResolveArgs,
    /// Sources, then the destination; one side is `[user@]<target>:<path>`.
    #[arg(value_name = "SRC… DST", num_args = 2.., required = true)]
    pub paths: Vec<String>,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let (sources, dest) = args.paths.split_at(args.paths.len() - 1);
    let sources: Vec<Operand> = sources.iter().map(|s| Operand::parse(s)).collect();
    let dest = Operand::parse(&dest[0]);
    let (direction, remote) = sides(&sources, &dest)?;
    let options = crate::session::data_channel_options()?;
    let (sessions, endpoint) = open_target(global, &remote, &args).await?;
    let instance_id = endpoint.instance_id.clone();
    let fleet = Arc::new(Fleet::new(
        sessions,
        options,
        endpoint,
        args.document,
        direction == Direction::Download,
    ));
    let copy = Copy {
        sources: &sources,
        dest: &dest,
        direction,
        host: remote.target.clone(),
        instance_id,
        args: &args,
    };
    let (first, early, settings, prepared) = set_up(&fleet, &copy).await?;
    let total = prepared.total_bytes();
    let progress = Arc::new(Progress::new(total, args.quiet));
    let copying = engine::run(
        fleet.clone(),
        first,
        early,
        prepared,
        &settings,
        progress.clone(),
    );
    let result = tokio::select! {
        result = copying => result,
        _ = tokio::signal::ctrl_c() => {
            progress.abandon();
            fleet.terminate_all().await;
            return Err(Failure::new(
                INTERRUPTED,
                format!(
                    "interrupted after {} of {}; every session was terminated. \
                     Run the same command again to resume",
                    HumanBytes(progress.moved()),
                    HumanBytes(total)
                ),
            )
            .into());
        }
    };
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            progress.abandon();
            fleet.terminate_all().await;
            return Err(error);
        }
    };
    let document = fleet.document().await.unwrap_or(Document::Ssh).name();
    progress.finish(|seconds| {
        format!(
            "sm-ssh: copied {} file{}, {} in {seconds:.1} s ({}/s moved) over {} session{} ({document}); SHA-256 verified",
            summary.files,
            if summary.files == 1 { "" } else { "s" },
            HumanBytes(summary.bytes),
            HumanBytes((summary.moved as f64 / seconds.max(0.001)) as u64),
            settings.sessions,
            if settings.sessions == 1 { "" } else { "s" },
        )
    });
    Ok(ExitCode::SUCCESS)
}

/// What is copied, as the command line said.
struct Copy<'a> {
    sources: &'a [Operand],
    dest: &'a Operand,
    direction: Direction,
    host: String,
    instance_id: String,
    args: &'a Args,
}

/// The first worker, with the copy planned and prepared on it, and the
/// other workers' sessions being opened meanwhile when their number is known
/// before planning. A session lost meanwhile (killed, dropped) is replaced
/// and the work done again; a refusal or a local problem is final.
async fn set_up(
    fleet: &Arc<Fleet>,
    copy: &Copy<'_>,
) -> anyhow::Result<(Worker, Vec<engine::Early>, Settings, engine::Prepared)> {
    let mut early = Vec::new();
    let result = set_up_first(fleet, copy, &mut early).await;
    match result {
        Ok((first, settings, prepared)) => Ok((first, early, settings, prepared)),
        Err(error) => {
            early.iter().for_each(|e| e.abort());
            fleet.terminate_all().await;
            Err(error)
        }
    }
}

async fn set_up_first(
    fleet: &Arc<Fleet>,
    copy: &Copy<'_>,
    early: &mut Vec<engine::Early>,
) -> anyhow::Result<(Worker, Settings, engine::Prepared)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let first = match fleet.connect().await {
            Ok(first) => first,
            Err(error) if error.fatal || attempt >= SETUP_ATTEMPTS => return Err(error.error),
            Err(error) => {
                tracing::info!(error = %format!("{:#}", error.error), attempt, "the first session could not be opened");
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                continue;
            }
        };
        if attempt == 1 {
            // The first connection chose the document; the others can start.
            let others = sessions_before_planning(copy).map_or(0, |n| n - 1);
            early.extend((0..others).map(|_| {
                let fleet = fleet.clone();
                tokio::spawn(async move { fleet.connect().await })
            }));
        }
        let ready = async {
            let plan = plan_with(&first, copy).await?;
            let settings = settings_for(&plan, copy)?;
            let prepared = engine::prepare(&first, plan, &settings).await?;
            anyhow::Ok((settings, prepared))
        };
        match ready.await {
            Ok((settings, prepared)) => return Ok((first, settings, prepared)),
            Err(error) => {
                let session = first.session_id().to_owned();
                fleet.close(first).await;
                if !fleet::is_lost(&error) || attempt >= SETUP_ATTEMPTS {
                    return Err(error);
                }
                eprintln!(
                    "sm-ssh: session {session} failed while planning the copy ({}); trying another",
                    crate::error::describe(&error, None).1
                );
            }
        }
    }
}

/// Lists what the copy moves, with `first`.
async fn plan_with(first: &Worker, copy: &Copy<'_>) -> anyhow::Result<plan::Plan> {
    let remote_path = |path: &str| {
        if path.is_empty() {
            ".".to_owned()
        } else {
            path.to_owned()
        }
    };
    let recursive = copy.args.recursive;
    match (copy.dest, copy.direction) {
        (Operand::Remote(spec), Direction::Upload) => {
            let locals: Vec<PathBuf> = copy
                .sources
                .iter()
                .map(|s| match s {
                    Operand::Local(path) => path.clone(),
                    Operand::Remote(_) => unreachable!("checked by sides"),
                })
                .collect();
            plan::upload(
                first,
                &copy.host,
                &locals,
                &remote_path(&spec.path),
                recursive,
            )
            .await
        }
        (Operand::Local(path), _) => {
            let remotes: Vec<String> = copy
                .sources
                .iter()
                .map(|s| match s {
                    Operand::Remote(spec) => remote_path(&spec.path),
                    Operand::Local(_) => unreachable!("checked by sides"),
                })
                .collect();
            plan::download(first, &copy.host, &remotes, path, recursive).await
        }
        _ => unreachable!("checked by sides"),
    }
}

/// How many sessions the copy will use, when that is known before it is
/// planned: `--sessions`, or the default for an upload of files (not `-r`)
/// from their sizes here. The plan may need fewer; the extra ones are closed.
fn sessions_before_planning(copy: &Copy<'_>) -> Option<u16> {
    if let Some(n) = copy.args.sessions {
        return Some(n);
    }
    if copy.direction != Direction::Upload || copy.args.recursive {
        return None;
    }
    let mut total = 0;
    for source in copy.sources {
        let Operand::Local(path) = source else {
            return None;
        };
        total += std::fs::metadata(path).ok()?.len();
    }
    Some(plan::default_sessions(total))
}

fn settings_for(plan: &plan::Plan, copy: &Copy<'_>) -> anyhow::Result<Settings> {
    let total: u64 = plan.items.iter().map(|i| i.size).sum();
    Ok(Settings {
        sessions: copy
            .args
            .sessions
            .unwrap_or_else(|| plan::default_sessions(total)),
        range_size: copy.args.range_size,
        host: copy.host.clone(),
        instance_id: copy.instance_id.clone(),
        state_dir: keys::data_dir()?.join("cp"),
    })
}

/// Which way the copy goes, and the remote side: exactly one side names a
/// target, and every remote source names the same one.
fn sides(sources: &[Operand], dest: &Operand) -> anyhow::Result<(Direction, RemoteSpec)> {
    let usage = |message: &str| Failure::new(exit::USAGE, message.to_owned());
    let remotes: Vec<&RemoteSpec> = sources
        .iter()
        .filter_map(|s| match s {
            Operand::Remote(spec) => Some(spec),
            Operand::Local(_) => None,
        })
        .collect();
    match dest {
        Operand::Remote(spec) if remotes.is_empty() => Ok((Direction::Upload, spec.clone())),
        Operand::Remote(_) => Err(usage(
            "both sides are remote; sm-ssh cp copies between this machine and one target",
        )
        .into()),
        Operand::Local(_) if remotes.len() < sources.len() => Err(usage(
            "one side must be remote, as `<target>:<path>` (e.g. my-job.training.sagemaker:/opt/ml/model), and every source on the same side",
        )
        .into()),
        Operand::Local(_) => {
            let first = remotes[0];
            if remotes
                .iter()
                .any(|r| r.target != first.target || r.user != first.user)
            {
                return Err(usage("every remote source must be on the same target and user").into());
            }
            Ok((Direction::Download, first.clone()))
        }
    }
}

/// Resolution and the key push, as `proxy` does them: the sessions to use
/// and where the workers go.
async fn open_target(
    global: &Global,
    remote: &RemoteSpec,
    args: &Args,
) -> anyhow::Result<(Arc<Sessions>, Endpoint)> {
    let target = Target::parse(&remote.target)?;
    let sdk = aws::load(global).await;
    let path = path::select(&target);
    if path == path::Path::Space {
        // A space's channel carries its own SSH server's one stream: use scp through ssh.
        return Err(Failure::new(
            exit::USAGE,
            "sm-ssh cp does not reach Studio spaces yet; use `scp FILE SPACE.space.sagemaker:` through ssh",
        )
        .into());
    }
    let reach = path.resolve(&sdk, &target, &args.resolve.options()).await?;
    let user = remote
        .user
        .as_deref()
        .or(args.user.as_deref())
        .unwrap_or(reach.default_user)
        .to_owned();
    path::install_key(&sdk, &reach, &user, args.push_key).await?;
    let identity = keys::Identity::ensure()?;
    let login = Login {
        user,
        key: Arc::new(identity.private_key().clone()),
        host_key: HostKeyCheck::KnownHosts {
            file: keys::known_hosts_path()?,
            alias: reach.session_target.clone(),
        },
    };
    let endpoint = Endpoint {
        instance_id: reach.session_target,
        label: remote.target.clone(),
        port: args.port,
        login,
    };
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    Ok((Arc::new(Sessions::new(ssm, &sdk)), endpoint))
}
