//! From a target to the managed instance to open a session to.
//!
//! SageMaker targets: one DescribeInstanceInformation filtered by the tags
//! `SSHOwner` and `SSHResourceName`; if that finds nothing, the owner's
//! instances' `SSHResourceArn` tags (ListTagsForResource, concurrent); if that
//! finds nothing, the agent's registration line in CloudWatch Logs (always
//! the way for endpoints, whose tags name nothing). Online instances come
//! first, then the newest. `mi-…`/`i-…` ids are checked as they are. These
//! are the internals of `path::ssm`.

pub mod candidate;
pub mod logs;
pub mod ssm;
mod wait;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;

use crate::cache::Cache;
use crate::error::{exit, AwsError, AwsProblem};
use crate::target::{Kind, SageMakerTarget, Target};
use candidate::Candidate;

/// The resolution options of `proxy`, `connect` and `forward` (flatten it
/// into their clap `Args`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResolveArgs {
    /// Whose instances to consider: `any`, or an `aws:userid` (the SSHOwner
    /// tag value). Default: yours, from sts:GetCallerIdentity.
    #[arg(long, value_name = "any|USERID")]
    pub owner: Option<String>,
    /// Pick node N (1-based) of a multi-node job; nodes are the Online
    /// instances in order of host name (algo-1, algo-2, …), an endpoint's
    /// instances in order of variant and instance id.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub node: Option<u32>,
    /// Wait until the instance is Online, at most SECONDS (default 300).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "300")]
    pub wait: Option<u64>,
    /// Resolve afresh and keep nothing for later (also SM_SSH_NO_CACHE=1).
    /// By default `proxy` and `connect` reuse what they learnt for 10 minutes.
    #[arg(long)]
    pub no_cache: bool,
    /// The container of a multi-container endpoint variant reached through
    /// SSM access (default: the first, e.g. container_0).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
}

impl ResolveArgs {
    pub fn options(&self) -> ResolveOptions {
        ResolveOptions {
            owner: Owner::parse(self.owner.as_deref()),
            node: self.node.map(|n| n as usize),
            wait: self.wait.map(Duration::from_secs),
            container: self.container.clone(),
        }
    }
}

/// Whose instances resolution considers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Owner {
    /// The caller's `aws:userid`.
    #[default]
    Caller,
    Any,
    Id(String),
}

impl Owner {
    pub fn parse(text: Option<&str>) -> Owner {
        match text {
            None => Owner::Caller,
            Some(any) if any.eq_ignore_ascii_case("any") => Owner::Any,
            Some(id) => Owner::Id(id.to_string()),
        }
    }

    /// The `SSHOwner` value to filter on (None for any owner); asks STS for
    /// the caller's id.
    pub async fn user_id(&self, sdk: &SdkConfig) -> Result<Option<String>, AwsError> {
        match self {
            Owner::Any => Ok(None),
            Owner::Id(id) => Ok(Some(id.clone())),
            Owner::Caller => caller_user_id(sdk, None).await.map(Some),
        }
    }
}

/// The caller's `aws:userid`: from the cache when it holds one for these
/// credentials, else from STS (and then kept there).
async fn caller_user_id(sdk: &SdkConfig, cache: Option<&Cache>) -> Result<String, AwsError> {
    if let Some(id) = cache.and_then(Cache::user_id) {
        return Ok(id);
    }
    let id = ssm::caller_user_id(&aws_sdk_sts::Client::new(sdk)).await?;
    if let Some(cache) = cache {
        cache.set_user_id(&id);
    }
    Ok(id)
}

#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    pub owner: Owner,
    /// 1-based node of a multi-node job.
    pub node: Option<usize>,
    /// Poll until Online for at most this long.
    pub wait: Option<Duration>,
    /// An endpoint container (`--container`).
    pub container: Option<String>,
}

/// The instance to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The StartSession target: `mi-…`, `i-…`, or a native target unchanged.
    pub instance_id: String,
    /// `Online`: resolution fails otherwise.
    pub ping_status: String,
    pub kind: Option<Kind>,
    /// The login user ssh should use unless told otherwise.
    pub default_user: &'static str,
    /// The target as the user named it (host name form).
    pub name: String,
    /// The instance's host name (e.g. `algo-1`), when SSM reports it.
    pub computer_name: String,
    /// What SSM said about the instance.
    pub instance: Candidate,
}

/// Why resolution failed. `message` is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NotFound {
        target: String,
        owner: String,
        region: String,
        /// What was searched, for the message.
        searched: Vec<String>,
    },
    Offline {
        target: String,
        instance_id: String,
        ping_status: String,
        last_ping: Option<i64>,
        owner: String,
    },
    NoSuchNode {
        target: String,
        node: usize,
        nodes: Vec<(String, String)>,
    },
    WaitTimedOut {
        seconds: u64,
        last: Box<ResolveError>,
    },
    Aws(AwsError),
}

impl From<AwsError> for ResolveError {
    fn from(error: AwsError) -> Self {
        ResolveError::Aws(error)
    }
}

impl ResolveError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ResolveError::NotFound { .. } | ResolveError::NoSuchNode { .. } => exit::NOT_FOUND,
            ResolveError::Offline { .. } | ResolveError::WaitTimedOut { .. } => exit::OFFLINE,
            ResolveError::Aws(error) => error.exit_code(),
        }
    }

    pub fn message(&self, profile: Option<&str>) -> String {
        match self {
            ResolveError::NotFound {
                target,
                owner,
                region,
                searched,
            } => format!(
                "no SSM managed instance found for {target} in {region} (owner: {owner}).\n  \
                 Searched: {}.\n  \
                 Check that the resource is running and started sagemaker-ssh-helper (it registers \
                 the instance with SSM a minute or two after start), that you are in its region \
                 (--region), and that its SSHOwner tag is yours (--owner any to look at \
                 everyone's). `sm-ssh list --owner any` shows what is registered; `--wait` \
                 waits for it.",
                searched.join("; ")
            ),
            ResolveError::Offline {
                target,
                instance_id,
                ping_status,
                last_ping,
                owner,
            } => format!(
                "{target} resolves to {instance_id} (owner: {owner}), but its SSM agent is \
                 {ping_status}{}.\n  The job or app may have stopped, or its agent died; check \
                 its status and logs in the SageMaker console, or pass --wait to wait for it.",
                last_ping
                    .map(|t| format!(" (last ping {})", format_epoch(t)))
                    .unwrap_or_default()
            ),
            ResolveError::NoSuchNode {
                target,
                node,
                nodes,
            } => {
                let list: Vec<String> = nodes
                    .iter()
                    .enumerate()
                    .map(|(i, (computer, id))| format!("{} = {computer} ({id})", i + 1))
                    .collect();
                format!(
                    "{target} has {} node(s), so there is no node {node}: {}",
                    nodes.len(),
                    list.join(", ")
                )
            }
            ResolveError::WaitTimedOut { seconds, last } => format!(
                "gave up waiting after {seconds}s: {}",
                last.message(profile)
            ),
            ResolveError::Aws(error) => error.message(profile),
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(None))
    }
}

impl std::error::Error for ResolveError {}

/// Finds the instance behind `target`, waiting for it when `opts.wait` says
/// so. Fails unless it is Online. Native targets take `path::native`.
pub async fn resolve(
    sdk: &SdkConfig,
    target: &Target,
    opts: &ResolveOptions,
) -> Result<Resolved, ResolveError> {
    resolve_with(sdk, target, opts, None).await
}

/// [`resolve`], taking the caller's identity from `cache` when it has it.
/// Without it, sts:GetCallerIdentity and the search by name run at once:
/// the search filters on the SSHOwner tag's presence, and its value is
/// checked once the identity is known.
pub async fn resolve_with(
    sdk: &SdkConfig,
    target: &Target,
    opts: &ResolveOptions,
    cache: Option<&Cache>,
) -> Result<Resolved, ResolveError> {
    let ssm_client = aws_sdk_ssm::Client::new(sdk);
    let mut by_name = None;
    let owner_id = match (target, &opts.owner) {
        (Target::SageMaker(t), Owner::Caller)
            if t.kind != Kind::Inference && cache.and_then(Cache::user_id).is_none() =>
        {
            let search = ssm::describe(
                &ssm_client,
                vec![
                    ssm::filter("tag-key", &["SSHOwner"]),
                    ssm::filter("tag:SSHResourceName", &[&t.name]),
                ],
            );
            let (id, found) = tokio::join!(caller_user_id(sdk, cache), search);
            let id = id?;
            by_name = Some(found?);
            Some(id)
        }
        (Target::SageMaker(_), Owner::Caller) => Some(caller_user_id(sdk, cache).await?),
        (Target::SageMaker(_), owner) => owner.user_id(sdk).await?,
        _ => None,
    };
    let lookup = Lookup {
        ssm: ssm_client,
        logs: aws_sdk_cloudwatchlogs::Client::new(sdk),
        target,
        owner_id,
        node: opts.node,
        region: region_name(sdk),
        logs_since: AtomicU64::new(0),
        by_name: std::sync::Mutex::new(by_name),
    };
    match opts.wait {
        None => lookup.once().await,
        Some(limit) => wait::until_online(&lookup, limit).await,
    }
}

/// One resolution attempt's inputs.
struct Lookup<'a> {
    ssm: aws_sdk_ssm::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    target: &'a Target,
    owner_id: Option<String>,
    node: Option<usize>,
    region: String,
    /// Epoch seconds from which later Logs Insights queries search (0: the
    /// whole look-back); set by `--wait` after its first attempt.
    logs_since: AtomicU64,
    /// The search by name made alongside GetCallerIdentity, for the first attempt.
    by_name: std::sync::Mutex<Option<Vec<Candidate>>>,
}

impl Lookup<'_> {
    fn owner_text(&self) -> String {
        match (&self.owner_id, self.target) {
            (_, Target::Instance(_)) => "not checked for an instance id".into(),
            (Some(id), _) => format!("SSHOwner = {id}"),
            (None, _) => "any".into(),
        }
    }

    /// Finds the instance and fails unless it is Online.
    async fn once(&self) -> Result<Resolved, ResolveError> {
        let chosen = self.find().await?;
        if !chosen.is_online() {
            return Err(ResolveError::Offline {
                target: self.target.to_string(),
                instance_id: chosen.instance_id,
                ping_status: chosen.ping_status,
                last_ping: chosen.last_ping,
                owner: self.owner_text(),
            });
        }
        Ok(Resolved {
            instance_id: chosen.instance_id.clone(),
            ping_status: chosen.ping_status.clone(),
            kind: self.target.kind(),
            default_user: self.target.default_user(),
            name: self.target.to_string(),
            computer_name: chosen.computer_name.clone(),
            instance: chosen,
        })
    }

    /// The best candidate, Online or not.
    async fn find(&self) -> Result<Candidate, ResolveError> {
        let (mut candidates, searched) = match self.target {
            Target::Instance(id) => {
                let found =
                    ssm::describe(&self.ssm, vec![ssm::filter("InstanceIds", &[id])]).await?;
                (found, vec![format!("SSM instance {id}")])
            }
            Target::SageMaker(target) => self.sagemaker(target).await?,
            Target::Native(_) | Target::Space(_) | Target::HyperPod(_) => {
                unreachable!("native targets and spaces take their own paths")
            }
        };
        if candidates.is_empty() {
            return Err(ResolveError::NotFound {
                target: self.target.to_string(),
                owner: self.owner_text(),
                region: self.region.clone(),
                searched,
            });
        }
        candidate::order(&mut candidates);
        tracing::debug!(
            target = %self.target,
            candidates = ?candidates.iter().map(|c| (&c.instance_id, &c.ping_status)).collect::<Vec<_>>(),
            "resolution candidates, best first"
        );
        match self.node {
            None => Ok(candidates.swap_remove(0)),
            Some(node) => {
                let nodes = candidate::nodes(&candidates);
                nodes
                    .get(node - 1)
                    .cloned()
                    .ok_or_else(|| ResolveError::NoSuchNode {
                        target: self.target.to_string(),
                        node,
                        nodes: nodes
                            .into_iter()
                            .map(|c| (c.computer_name, c.instance_id))
                            .collect(),
                    })
            }
        }
    }

    /// The candidates whose SSHOwner tag is the owner's (all for any owner).
    fn owned(&self, candidates: Vec<Candidate>) -> Vec<Candidate> {
        match &self.owner_id {
            Some(owner) => candidates
                .into_iter()
                .filter(|c| c.tags.get("SSHOwner") == Some(owner))
                .collect(),
            None => candidates,
        }
    }

    /// The candidates for a SageMaker target, and what was searched.
    async fn sagemaker(
        &self,
        target: &SageMakerTarget,
    ) -> Result<(Vec<Candidate>, Vec<String>), AwsError> {
        let mut searched = Vec::new();
        let owner_filter = || match &self.owner_id {
            Some(id) => ssm::filter("tag:SSHOwner", &[id]),
            None => ssm::filter("tag-key", &["SSHOwner"]),
        };
        if target.kind != Kind::Inference {
            // The tags hold the exact name; ssh may have lowercased it, which
            // the ARN comparison below forgives.
            let prefetched = self.by_name.lock().expect("search by name").take();
            let by_name = match prefetched {
                Some(found) => found,
                None => {
                    ssm::describe(
                        &self.ssm,
                        vec![
                            owner_filter(),
                            ssm::filter("tag:SSHResourceName", &[&target.name]),
                        ],
                    )
                    .await?
                }
            };
            let tagged = ssm::fetch_tags(&self.ssm, by_name).await?;
            let matching = self.owned(keep_matching(tagged, target));
            searched.push(format!(
                "instances tagged SSHResourceName = {}",
                target.name
            ));
            if !matching.is_empty() {
                return Ok((matching, searched));
            }
            let owned = ssm::describe(&self.ssm, vec![owner_filter()]).await?;
            tracing::debug!(
                count = owned.len(),
                "matching SSHResourceArn of the owner's instances"
            );
            let tagged = ssm::fetch_tags(&self.ssm, owned).await?;
            let matching = keep_matching(tagged, target);
            searched.push(format!(
                "SSHResourceArn of every instance with {}",
                self.owner_text()
            ));
            if !matching.is_empty() {
                return Ok((matching, searched));
            }
        }
        let (group, _) = logs::location(target);
        let since = match self.logs_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(since),
        };
        let found = match logs::search(&self.logs, target, since).await {
            Ok(found) => found,
            // Only a fallback for these kinds: say why it did not help.
            Err(error) if target.kind != Kind::Inference => logs::Found {
                note: Some(match &error.problem {
                    AwsProblem::AccessDenied { action } => format!("{action} denied"),
                    _ => format!("{} failed: {}", error.action, error.detail),
                }),
                ..logs::Found::default()
            },
            Err(error) => return Err(error),
        };
        searched.push(match &found.note {
            Some(note) => format!("CloudWatch Logs {group} ({note})"),
            None => format!("CloudWatch Logs {group}"),
        });
        if found.instance_ids.is_empty() {
            return Ok((Vec::new(), searched));
        }
        let mut candidates = ssm::describe_ids(&self.ssm, &found.instance_ids).await?;
        if let Some(owner) = &self.owner_id {
            let tagged = ssm::fetch_tags(&self.ssm, candidates).await?;
            candidates = tagged
                .into_iter()
                .filter(|c| c.tags.get("SSHOwner") == Some(owner))
                .collect();
        }
        // Newest log line first: give registrations the log's order where SSM
        // has no registration date.
        for candidate in &mut candidates {
            if candidate.registered.is_none() {
                let rank = found
                    .instance_ids
                    .iter()
                    .position(|id| *id == candidate.instance_id)
                    .unwrap_or(0);
                candidate.registered = Some(-(rank as i64));
            }
        }
        Ok((candidates, searched))
    }
}

/// The region calls go to, for messages.
pub fn region_name(sdk: &SdkConfig) -> String {
    sdk.region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "no region".into())
}

fn keep_matching(candidates: Vec<Candidate>, target: &SageMakerTarget) -> Vec<Candidate> {
    candidates
        .into_iter()
        .filter(|c| candidate::tags_match(&c.tags, target))
        .collect()
}

/// Epoch seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_epoch(secs: i64) -> String {
    aws_sdk_ssm::primitives::DateTime::from_secs(secs)
        .fmt(aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
        .map(|text| {
            text.trim_end_matches('Z')
                .replacen('T', " ", 1)
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string()
                + " UTC"
        })
        .unwrap_or_else(|_| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_parsing() {
        assert_eq!(Owner::parse(None), Owner::Caller);
        assert_eq!(Owner::parse(Some("ANY")), Owner::Any);
        assert_eq!(
            Owner::parse(Some("AROAX:bob")),
            Owner::Id("AROAX:bob".into())
        );
    }

    #[test]
    fn epochs_read_as_utc() {
        assert_eq!(format_epoch(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn messages_name_target_owner_and_next_step() {
        let error = ResolveError::NotFound {
            target: "x.training.sagemaker".into(),
            owner: "SSHOwner = AROA:me".into(),
            region: "eu-west-1".into(),
            searched: vec!["a".into(), "b".into()],
        };
        let text = error.message(None);
        assert!(text.contains("x.training.sagemaker in eu-west-1"));
        assert!(text.contains("SSHOwner = AROA:me"));
        assert!(text.contains("Searched: a; b"));
        assert!(text.contains("--owner any"));
        assert_eq!(error.exit_code(), exit::NOT_FOUND);
        let offline = ResolveError::Offline {
            target: "x.training.sagemaker".into(),
            instance_id: "mi-1".into(),
            ping_status: "ConnectionLost".into(),
            last_ping: Some(1_700_000_000),
            owner: "any".into(),
        };
        assert!(offline
            .message(None)
            .contains("ConnectionLost (last ping 2023-11-14"));
        assert_eq!(offline.exit_code(), exit::OFFLINE);
    }
}
