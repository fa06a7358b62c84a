//! The Studio space path: SageMaker's own remote access. A space is named
//! `<space>.<domain>.space.sagemaker`, `<space>.space.sagemaker`, by ARN or
//! by the AWS Toolkit's host names; DescribeSpace and DescribeApp say whether
//! it can be reached; `sagemaker:StartSession` on the space ARN opens the
//! data channel to the SSH server the platform runs in the space, which lets
//! `sagemaker-user` in without a key. Host keys are pinned per space and
//! expected to change only when the app was recreated (its creation time).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sagemaker::error::ProvideErrorMetadata;
use aws_sdk_sagemaker::types::{AppType, FeatureStatus};
use sm_ssh_proxy::{ControlError, SessionControl, StreamTarget};

use super::{Detail, KeyInstall, Liveness, Path, Pin, Purpose, Reach};
use crate::error::{exit, AwsError, AwsProblem, Failure};
use crate::session::{Sessions, StartError};
use crate::target::{SpaceTarget, Target};

/// The user the space's server lets in.
pub const USER: &str = "sagemaker-user";
/// The app a space runs (the name the Studio UI and the Toolkit give it).
pub const APP_NAME: &str = "default";
/// Instance types with less than 8 GiB of memory, which remote access refuses
/// (SageMaker developer guide, remote access prerequisites).
pub const TOO_SMALL: [&str; 5] = [
    "ml.t3.medium",
    "ml.c7i.large",
    "ml.c6i.large",
    "ml.c6id.large",
    "ml.c5.large",
];
/// StartSession attempts while the space registers after its app started
/// (the Toolkit makes 3, 1 s × 1.5ⁿ apart; we wait a little longer).
const START_ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What DescribeSpace and DescribeApp said about a space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceInfo {
    pub arn: String,
    pub domain: String,
    pub space: String,
    /// `JupyterLab` or `CodeEditor`.
    pub app_type: String,
    pub remote_access: bool,
    pub instance_type: String,
    /// The image version ARN (or the image ARN when no version is set), of
    /// the running app when there is one, else the space's default.
    pub image: String,
    /// `SageMakerImageVersionAlias`: the image's release (SemVer, `3.0.0`).
    pub image_alias: Option<String>,
    pub owner: String,
    /// `InService`, `Pending`, `Deleted`, …; `None` when the space has no app.
    pub app_status: Option<String>,
    /// Epoch milliseconds.
    pub app_created_ms: Option<i64>,
}

impl SpaceInfo {
    /// `<space>.<domain>.space.sagemaker`.
    pub fn host_name(&self) -> String {
        format!("{}.{}.space.sagemaker", self.space, self.domain)
    }

    /// The image and its release alias, `-` when SageMaker names none.
    pub fn image_label(&self) -> String {
        match (self.image.as_str(), &self.image_alias) {
            ("", None) => "-".into(),
            (image, Some(alias)) => format!("{image} ({alias})"),
            (image, None) => image.into(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.app_status.as_deref() == Some("InService")
    }

    /// Why remote access cannot work now, with the fix; `None` when nothing
    /// that DescribeSpace and DescribeApp show blocks it.
    pub fn blocker(&self) -> Option<String> {
        let name = self.host_name();
        if !self.remote_access {
            return Some(format!(
                "remote access is not enabled on space {name}: run `sm-ssh space enable {name}` \
                 (UpdateSpace sets RemoteAccess=ENABLED, then the app restarts)"
            ));
        }
        if TOO_SMALL.contains(&self.instance_type.as_str()) {
            return Some(format!(
                "space {name} runs on {}, which has less than 8 GiB of memory and cannot take \
                 remote connections: pick a larger instance type for the space in Studio",
                self.instance_type
            ));
        }
        if !self.is_running() {
            let status = self.app_status.as_deref().unwrap_or("never started");
            return Some(format!(
                "space {name} is stopped (app {APP_NAME}: {status}): start it in Studio, or run \
                 `sm-ssh space enable {name} --yes`, which starts it"
            ));
        }
        None
    }
}

/// The reach of a described space, or why it cannot be reached now.
pub fn reach_from(name: &str, info: SpaceInfo) -> Result<Reach, Failure> {
    if let Some(blocker) = info.blocker() {
        return Err(Failure::new(exit::OFFLINE, blocker));
    }
    let created = info.app_created_ms.unwrap_or_default();
    Ok(Reach {
        path: Path::Space,
        session_target: info.arn.clone(),
        name: name.to_string(),
        default_user: USER,
        key: KeyInstall::NotNeeded("the space's server lets sagemaker-user in without a key"),
        pin: Pin {
            alias: info.arn.clone(),
            binding: format!("{} app-created {created}", info.arn),
        },
        liveness: Liveness::Running,
        detail: Detail::Space(info),
        sshd: true,
    })
}

/// The SDK configuration for the space's region (an ARN may name another).
pub fn config_for(sdk: &SdkConfig, target: &SpaceTarget) -> SdkConfig {
    match target.arn.as_deref().and_then(SpaceTarget::parse_arn) {
        Some((region, ..)) if sdk.region().map(|r| r.as_ref()) != Some(region.as_str()) => sdk
            .to_builder()
            .region(aws_types::region::Region::new(region))
            .build(),
        _ => sdk.clone(),
    }
}

pub async fn resolve(sdk: &SdkConfig, target: &Target) -> anyhow::Result<Reach> {
    let Target::Space(space) = target else {
        unreachable!("select() sends only spaces here");
    };
    let sdk = config_for(sdk, space);
    let client = aws_sdk_sagemaker::Client::new(&sdk);
    let info = describe(&client, space).await?;
    Ok(reach_from(&target.to_string(), info)?)
}

/// Finds the space (in every domain for the short form) and its app.
pub async fn describe(
    client: &aws_sdk_sagemaker::Client,
    target: &SpaceTarget,
) -> anyhow::Result<SpaceInfo> {
    let (domain, space) = match &target.domain {
        Some(domain) => (domain.clone(), target.space.clone()),
        None => find_domain(client, &target.space).await?,
    };
    let described = client
        .describe_space()
        .domain_id(&domain)
        .space_name(&space)
        .send()
        .await;
    let described = match described {
        Ok(described) => described,
        Err(error) if code(&error) == Some("ResourceNotFound") => {
            return Err(Failure::new(
                exit::NOT_FOUND,
                format!(
                    "no space {space} in domain {domain}: `sm-ssh list` shows your spaces \
                     (check the region with --region)"
                ),
            )
            .into())
        }
        Err(error) => return Err(AwsError::from_sdk("sagemaker:DescribeSpace", &error).into()),
    };
    let settings = described.space_settings();
    let app_type = settings
        .and_then(|s| s.app_type())
        .map(|t| t.as_str().to_string())
        .unwrap_or_else(|| "JupyterLab".into());
    let spec = settings.and_then(|s| {
        s.jupyter_lab_app_settings()
            .and_then(|a| a.default_resource_spec())
            .or_else(|| {
                s.code_editor_app_settings()
                    .and_then(|a| a.default_resource_spec())
            })
    });
    let mut info = SpaceInfo {
        arn: described.space_arn().unwrap_or_default().to_string(),
        domain: domain.clone(),
        space: space.clone(),
        remote_access: settings.and_then(|s| s.remote_access()) == Some(&FeatureStatus::Enabled),
        instance_type: spec
            .and_then(|s| s.instance_type())
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        image: spec.map(image_of).unwrap_or_default(),
        image_alias: spec.and_then(alias_of),
        owner: described
            .ownership_settings()
            .and_then(|o| o.owner_user_profile_name())
            .unwrap_or_default()
            .to_string(),
        app_type: app_type.clone(),
        ..SpaceInfo::default()
    };
    let app = client
        .describe_app()
        .domain_id(&domain)
        .space_name(&space)
        .app_type(AppType::from(app_type.as_str()))
        .app_name(APP_NAME)
        .send()
        .await;
    match app {
        Ok(app) => {
            info.app_status = app.status().map(|s| s.as_str().to_string());
            // What runs wins over the space's default for the next start.
            if let Some(spec) = app.resource_spec().filter(|s| !image_of(s).is_empty()) {
                info.image = image_of(spec);
                info.image_alias = alias_of(spec);
            }
            info.app_created_ms = app.creation_time().and_then(|t| t.to_millis().ok());
        }
        Err(error) if code(&error) == Some("ResourceNotFound") => {}
        Err(error) => return Err(AwsError::from_sdk("sagemaker:DescribeApp", &error).into()),
    }
    tracing::debug!(?info, "described the space");
    Ok(info)
}

/// The version ARN wins over the image ARN (ResourceSpec's API reference).
fn image_of(spec: &aws_sdk_sagemaker::types::ResourceSpec) -> String {
    spec.sage_maker_image_version_arn()
        .or(spec.sage_maker_image_arn())
        .unwrap_or_default()
        .to_string()
}

fn alias_of(spec: &aws_sdk_sagemaker::types::ResourceSpec) -> Option<String> {
    spec.sage_maker_image_version_alias()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

/// The domain of the one space called `name` among the caller's domains
/// (names are compared without case: ssh lowercases host names).
async fn find_domain(
    client: &aws_sdk_sagemaker::Client,
    name: &str,
) -> anyhow::Result<(String, String)> {
    let found: Vec<(String, String)> = list_spaces(client)
        .await?
        .into_iter()
        .filter(|info| info.space.eq_ignore_ascii_case(name))
        .map(|info| (info.domain, info.space))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "no space named {name} in your domains in this region: `sm-ssh list` shows \
                 your spaces (--region looks elsewhere)"
            ),
        )
        .into()),
        several => Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "{} domains have a space named {name}: name one, e.g. {}",
                several.len(),
                several
                    .iter()
                    .map(|(domain, space)| format!("{space}.{domain}.space.sagemaker"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        )
        .into()),
    }
}

/// Every space the caller can list (ListSpaces, following NextToken), as
/// far as its summary says.
async fn list_spaces(client: &aws_sdk_sagemaker::Client) -> Result<Vec<SpaceInfo>, AwsError> {
    let mut found = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = client
            .list_spaces()
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sagemaker:ListSpaces", &e))?;
        found.extend(page.spaces().iter().map(|s| {
            let summary = s.space_settings_summary();
            SpaceInfo {
                domain: s.domain_id().unwrap_or_default().to_string(),
                space: s.space_name().unwrap_or_default().to_string(),
                app_type: summary
                    .and_then(|s| s.app_type())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                remote_access: summary.and_then(|s| s.remote_access())
                    == Some(&FeatureStatus::Enabled),
                owner: s
                    .ownership_settings_summary()
                    .and_then(|o| o.owner_user_profile_name())
                    .unwrap_or_default()
                    .to_string(),
                ..SpaceInfo::default()
            }
        }));
        match page.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_string()),
            _ => return Ok(found),
        }
    }
}

/// Every listable space with its app's status (ListSpaces, then ListApps).
pub async fn list(client: &aws_sdk_sagemaker::Client) -> Result<Vec<SpaceInfo>, AwsError> {
    let mut spaces = list_spaces(client).await?;
    if spaces.is_empty() {
        return Ok(spaces);
    }
    let mut next: Option<String> = None;
    loop {
        let page = client
            .list_apps()
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sagemaker:ListApps", &e))?;
        for app in page.apps() {
            let space = spaces.iter_mut().find(|s| {
                Some(s.domain.as_str()) == app.domain_id()
                    && Some(s.space.as_str()) == app.space_name()
                    && app.app_name() == Some(APP_NAME)
            });
            if let Some(space) = space {
                space.app_status = app.status().map(|s| s.as_str().to_string());
                space.app_created_ms = app.creation_time().and_then(|t| t.to_millis().ok());
                space.instance_type = app
                    .resource_spec()
                    .and_then(|r| r.instance_type())
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
            }
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_string()),
            _ => return Ok(spaces),
        }
    }
}

fn code<E: ProvideErrorMetadata, R>(
    error: &aws_sdk_sagemaker::error::SdkError<E, R>,
) -> Option<&str> {
    match error {
        aws_sdk_sagemaker::error::SdkError::ServiceError(context) => context.err().code(),
        _ => None,
    }
}

/// sagemaker:StartSession for the space; ResumeSession and TerminateSession
/// go to SSM, which holds the session.
#[derive(Clone, Debug)]
pub struct SpaceSessions {
    sagemaker: aws_sdk_sagemaker::Client,
    ssm: Sessions,
}

impl SpaceSessions {
    pub fn new(sdk: &SdkConfig) -> SpaceSessions {
        SpaceSessions {
            sagemaker: aws_sdk_sagemaker::Client::new(sdk),
            ssm: Sessions::new(aws_sdk_ssm::Client::new(sdk), sdk),
        }
    }

    /// StartSession on the space ARN, retried with backoff while the service
    /// answers InternalFailure (the space registers asynchronously after its
    /// app starts).
    pub async fn start(
        &self,
        reach: &Reach,
        purpose: &Purpose<'_>,
    ) -> anyhow::Result<StreamTarget> {
        if let Purpose::Forward { .. } = purpose {
            return Err(Failure::new(
                exit::USAGE,
                "a Studio space's channel carries one SSH connection: forward ports over ssh \
                 (`sm-ssh forward` does that for spaces)",
            )
            .into());
        }
        let mut delay = FIRST_RETRY;
        for attempt in 1..=START_ATTEMPTS {
            let answer = self
                .sagemaker
                .start_session()
                .resource_identifier(&reach.session_target)
                .send()
                .await;
            let error = match answer {
                Ok(output) => {
                    let (Some(id), Some(url), Some(token)) = (
                        output.session_id(),
                        output.stream_url(),
                        output.token_value(),
                    ) else {
                        return Err(AwsError {
                            action: "sagemaker:StartSession",
                            problem: AwsProblem::Other,
                            detail: "the answer lacks SessionId, TokenValue or StreamUrl".into(),
                        }
                        .into());
                    };
                    self.ssm.remember(id, url);
                    return Ok(StreamTarget {
                        session_id: id.to_owned(),
                        stream_url: url.to_owned(),
                        token: token.to_owned(),
                    });
                }
                Err(error) => error,
            };
            let code = code(&error).unwrap_or_default().to_string();
            let aws = AwsError::from_sdk("sagemaker:StartSession", &error);
            if code == "InternalFailure" && attempt < START_ATTEMPTS {
                tracing::info!(
                    attempt,
                    ?delay,
                    "StartSession: InternalFailure (the space may still be registering); retrying"
                );
                tokio::time::sleep(delay).await;
                delay = delay.mul_f32(1.5);
                continue;
            }
            return Err(start_failure(&reach.name, &code, aws));
        }
        unreachable!("the last attempt returns")
    }
}

/// One line with the fix for each way StartSession refuses a space.
pub fn start_failure(name: &str, code: &str, error: StartError) -> anyhow::Error {
    let detail = error.detail.clone();
    let failure = |code: u8, text: String| anyhow::Error::new(Failure::new(code, text));
    match (code, &error.problem) {
        (_, AwsProblem::AccessDenied { .. }) => failure(
            exit::ACCESS_DENIED,
            format!(
                "AWS denied sagemaker:StartSession on {name}: your IAM identity needs it on the \
                 space's ARN (`sm-ssh policy space` prints the statement; `sm-ssh doctor --space \
                 {name}` checks it). ({detail})"
            ),
        ),
        ("ResourceLimitExceeded", _) => failure(
            exit::AWS,
            format!(
                "space {name} already has 10 remote connections, the service's limit: close \
                 some (ssh sessions, IDE windows) and retry. ({detail})"
            ),
        ),
        ("ValidationException", _) => failure(
            exit::OFFLINE,
            format!(
                "SageMaker refused remote access to {name}: {}. `sm-ssh space status {name}` \
                 shows what blocks it; `sm-ssh space enable {name}` enables remote access and \
                 restarts the app.",
                detail.trim_start_matches("ValidationException: ")
            ),
        ),
        ("InternalFailure", _) => failure(
            exit::AWS,
            format!(
                "SageMaker kept answering InternalFailure for {name} after {START_ATTEMPTS} \
                 tries: the space may still be starting; retry in a minute. ({detail})"
            ),
        ),
        _ => error.into(),
    }
}

impl SessionControl for SpaceSessions {
    /// SSM's ResumeSession; when the service will not resume the session,
    /// the channel ends at once so ssh (and the IDE's reconnect) starts over.
    async fn resume(&self, session_id: &str) -> Result<StreamTarget, ControlError> {
        self.ssm.resume(session_id).await.map_err(|error| {
            ControlError::fatal(format!(
                "the connection to the space was lost and its session cannot be resumed ({error}); \
                 reconnect to start a new one"
            ))
        })
    }

    /// SSM's TerminateSession; a space user may lack ssm:TerminateSession,
    /// and the service ends an abandoned session itself.
    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        if let Err(error) = self.ssm.terminate(session_id).await {
            tracing::debug!(%error, session_id, "TerminateSession for a space session");
        }
        Ok(())
    }

    /// The same SigV4 upgrade as SSM's sessions (a presigned StreamUrl is sent as it is).
    async fn upgrade_headers(
        &self,
        stream_url: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        self.ssm.upgrade_headers(stream_url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> SpaceInfo {
        SpaceInfo {
            arn: "arn:aws:sagemaker:us-east-1:123456789012:space/d-abc/s".into(),
            domain: "d-abc".into(),
            space: "s".into(),
            app_type: "JupyterLab".into(),
            remote_access: true,
            instance_type: "ml.m5.large".into(),
            app_status: Some("InService".into()),
            app_created_ms: Some(1_700_000_000_000),
            ..SpaceInfo::default()
        }
    }

    #[test]
    fn a_running_enabled_space_is_reached_by_arn_without_a_key() {
        let reach = reach_from("s.d-abc.space.sagemaker", running()).unwrap();
        assert_eq!(reach.session_target, running().arn);
        assert_eq!(reach.default_user, "sagemaker-user");
        assert!(matches!(reach.key, KeyInstall::NotNeeded(_)));
        assert_eq!(reach.pin.alias, running().arn);
        assert!(reach.pin.binding.ends_with("app-created 1700000000000"));
    }

    #[test]
    fn blockers_name_the_fix() {
        let disabled = SpaceInfo {
            remote_access: false,
            ..running()
        };
        let error = reach_from("x", disabled).unwrap_err();
        assert!(error
            .message
            .contains("sm-ssh space enable s.d-abc.space.sagemaker"));
        let stopped = SpaceInfo {
            app_status: Some("Deleted".into()),
            ..running()
        };
        let error = reach_from("x", stopped).unwrap_err();
        assert!(error.message.contains("is stopped (app default: Deleted)"));
        assert_eq!(error.code, exit::OFFLINE);
        let small = SpaceInfo {
            instance_type: "ml.t3.medium".into(),
            ..running()
        };
        assert!(reach_from("x", small)
            .unwrap_err()
            .message
            .contains("8 GiB"));
    }
}
