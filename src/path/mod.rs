//! Access paths: the ways sm-ssh reaches a machine, one module each.
//!
//! Every path answers the same questions (how a name resolves, which API
//! starts the session, who logs in, whether and how a key gets there, how
//! host keys are pinned), so commands run `resolve → install_key → start →
//! pin host key` without knowing which path they are on. [`select`] is the
//! only `match` on the parsed name; [`Control`] is the one on the session API.
//!
//! - [`ssm`]: the helper's SSM managed instances, found by tags (`resolve/`
//!   holds its internals), and `mi-…`/`i-…` ids.
//! - [`native`]: AWS-native Session Manager targets passed through unchanged.
//! - [`space`]: Studio spaces through SageMaker's own remote access.
//! - [`hyperpod`]: HyperPod cluster nodes by cluster, group and node.
//! - [`training`], [`endpoint`]: training jobs and endpoints by name, on the
//!   helper's instance when there is one, else on SageMaker's own Session
//!   Manager targets (remote debugging, SSM access), which have no sshd
//!   ([`sagemaker_native`] holds what the two share).

pub mod endpoint;
pub mod hyperpod;
pub mod native;
pub mod sagemaker_native;
pub mod space;
pub mod ssm;
pub mod training;

use aws_config::SdkConfig;
use sm_ssh_proxy::{ControlError, SessionControl, StreamTarget};

use crate::keypush::PushKey;
use crate::resolve::ResolveOptions;
use crate::session::Sessions;
use crate::target::Target;

/// The access paths sm-ssh knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Ssm,
    Native,
    Space,
    HyperPod,
    /// `<job>.training.sagemaker`: the helper's instance, else remote debugging.
    Training,
    /// `<endpoint>.inference.sagemaker`: the helper's instance, else SSM access.
    Endpoint,
}

/// The path that reaches `target`.
pub fn select(target: &Target) -> Path {
    match target {
        Target::SageMaker(named) if named.kind == crate::target::Kind::Training => Path::Training,
        Target::SageMaker(named) if named.kind == crate::target::Kind::Inference => Path::Endpoint,
        Target::SageMaker(_) | Target::Instance(_) => Path::Ssm,
        Target::Native(_) => Path::Native,
        Target::Space(_) => Path::Space,
        Target::HyperPod(_) => Path::HyperPod,
    }
}

impl Path {
    /// Finds what `target` names and checks it can be reached now.
    pub async fn resolve(
        self,
        sdk: &SdkConfig,
        target: &Target,
        opts: &ResolveOptions,
    ) -> anyhow::Result<Reach> {
        match self {
            Path::Ssm => ssm::resolve(sdk, target, opts).await,
            Path::Native => Ok(native::reach_from(target)),
            Path::Space => space::resolve(sdk, target).await,
            Path::HyperPod => hyperpod::resolve(sdk, target).await,
            Path::Training | Path::Endpoint => {
                let once = sagemaker_native::helper_options(opts);
                let helper = crate::resolve::resolve(sdk, target, &once).await;
                self.after_helper(sdk, target, opts, helper).await
            }
        }
    }

    /// Whether the path looks for the helper's instance first (SSM, and the
    /// SageMaker paths that fall back to SageMaker's own targets): what the
    /// warm-path cache can keep.
    pub fn tries_helper(self) -> bool {
        matches!(self, Path::Ssm | Path::Training | Path::Endpoint)
    }

    /// Resolution given the helper lookup's outcome (made with
    /// [`sagemaker_native::helper_options`] on the fallback paths).
    pub async fn after_helper(
        self,
        sdk: &SdkConfig,
        target: &Target,
        opts: &ResolveOptions,
        helper: Result<crate::resolve::Resolved, crate::resolve::ResolveError>,
    ) -> anyhow::Result<Reach> {
        match self {
            Path::Training => training::after_helper(sdk, target, opts, helper).await,
            Path::Endpoint => endpoint::after_helper(sdk, target, opts, helper).await,
            _ => Ok(ssm::reach_from(helper?)),
        }
    }
}

/// What resolution found: everything the commands need to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub path: Path,
    /// What StartSession is given: an `mi-…`/`i-…` id, a native target, or
    /// a space ARN.
    pub session_target: String,
    /// The target as the user named it (host name form).
    pub name: String,
    /// The login user ssh should use unless told otherwise.
    pub default_user: &'static str,
    /// How our public key gets to the login user.
    pub key: KeyInstall,
    /// Under what host keys are pinned, and what says a new key is expected.
    pub pin: Pin,
    pub liveness: Liveness,
    /// What the path's API said, for `list` and `doctor`.
    pub detail: Detail,
    /// Whether an sshd is expected behind port 22. Without one, `connect`
    /// opens a Session Manager shell and `proxy` says what works instead.
    pub sshd: bool,
}

/// How a key reaches the login user's authorised keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyInstall {
    /// SSM SendCommand writes it (`keypush`).
    SendCommand,
    /// A non-interactive command session writes it (SendCommand does not
    /// reach the target).
    CommandSession,
    /// Not needed: the server lets the login user in without one.
    NotNeeded(&'static str),
    /// Not possible on this path; the reason is shown when a key is asked for.
    Impossible(&'static str),
}

/// The host-key pin: ssh pins keys under a stable `alias`; `binding` names
/// what is behind the host name now, and a changed binding means a new host
/// key is expected (see `known_hosts::rebind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub alias: String,
    pub binding: String,
}

/// Whether the machine can take a session now, as far as its API says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// SSM reports the agent Online.
    Online,
    /// Nothing describes it (native targets): StartSession will tell.
    Unknown,
    /// Its API shows it running (a space's app InService).
    Running,
}

/// Path-specific facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// What SSM said about the instance.
    Ssm(crate::resolve::candidate::Candidate),
    Native,
    Space(space::SpaceInfo),
    HyperPod(hyperpod::NodeInfo),
    /// A training job's host or an endpoint's container, reached natively.
    SageMaker(sagemaker_native::NativeInfo),
}

/// What a session is for; each path maps it to its document or API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// One SSH connection to sshd on `port`.
    Ssh { port: u16 },
    /// A port-forwarding session with the `document` `forward` chose, to
    /// `host:port` as seen from the machine (`None`: the machine itself).
    Forward {
        document: &'a str,
        host: Option<&'a str>,
        port: u16,
        local_port: u16,
    },
}

/// The session API behind a path: starts sessions, and resumes and ends
/// them for the data channel ([`SessionControl`]).
#[derive(Clone, Debug)]
pub enum Control {
    Ssm(Sessions),
    Space(space::SpaceSessions),
}

impl Control {
    pub fn new(sdk: &SdkConfig, path: Path) -> Control {
        match path {
            Path::Ssm | Path::Native | Path::HyperPod | Path::Training | Path::Endpoint => {
                Control::Ssm(Sessions::new(aws_sdk_ssm::Client::new(sdk), sdk))
            }
            Path::Space => Control::Space(space::SpaceSessions::new(sdk)),
        }
    }

    /// Starts a session on `reach` for `purpose`; `label` goes into the
    /// call's `Reason` where the API has one.
    pub async fn start(
        &self,
        reach: &Reach,
        purpose: &Purpose<'_>,
        label: &str,
    ) -> anyhow::Result<StreamTarget> {
        match self {
            Control::Ssm(sessions) => Ok(ssm::start(sessions, reach, purpose, label).await?),
            Control::Space(sessions) => sessions.start(reach, purpose).await,
        }
    }
}

impl SessionControl for Control {
    async fn resume(&self, session_id: &str) -> Result<StreamTarget, ControlError> {
        match self {
            Control::Ssm(sessions) => sessions.resume(session_id).await,
            Control::Space(sessions) => sessions.resume(session_id).await,
        }
    }

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        match self {
            Control::Ssm(sessions) => sessions.terminate(session_id).await,
            Control::Space(sessions) => sessions.terminate(session_id).await,
        }
    }

    async fn upgrade_headers(
        &self,
        stream_url: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        match self {
            Control::Ssm(sessions) => sessions.upgrade_headers(stream_url).await,
            Control::Space(sessions) => sessions.upgrade_headers(stream_url).await,
        }
    }
}

/// Installs our key for `user` unless `mode` or the path says not to.
pub async fn install_key(
    sdk: &SdkConfig,
    reach: &Reach,
    user: &str,
    mode: PushKey,
) -> anyhow::Result<()> {
    if mode == PushKey::Never {
        return Ok(());
    }
    match reach.key {
        KeyInstall::SendCommand => ssm::push_key(sdk, reach, user, mode).await,
        KeyInstall::CommandSession => hyperpod::install_key(sdk, reach, user, mode).await,
        KeyInstall::NotNeeded(why) => {
            tracing::debug!(target = %reach.name, why, "no key to install");
            Ok(())
        }
        KeyInstall::Impossible(why) => {
            tracing::debug!(target = %reach.name, why, "no key to install");
            Ok(())
        }
    }
}

/// Forgets the host key pinned under `host` when what is behind it changed
/// (ssh pins keys under `%h`, or under the alias `connect` gives it).
pub fn pin_host_key(host: &str, reach: &Reach) -> anyhow::Result<()> {
    if host != reach.pin.binding {
        crate::known_hosts::rebind(host, &reach.pin.binding)?;
    }
    Ok(())
}
