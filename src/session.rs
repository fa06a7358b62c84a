//! Session Manager sessions through the SSM API: StartSession, ResumeSession
//! and TerminateSession, and the signature of each data-channel dial.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sm_ssh_proxy::crypto::{encryption_context, DataKey, KeyError, DATA_KEY_BYTES};
use sm_ssh_proxy::{ControlError, Options, Predial, SessionControl, StreamTarget};

use crate::error::{AwsError, AwsProblem};
use crate::signing::UpgradeSigner;

/// Why StartSession failed. `forward` looks at `AccessDenied` to fall back
/// to another document; everything else reports it.
pub type StartError = AwsError;

/// The three session calls, on one SSM client, and the upgrade signer with
/// the same configuration's credentials and region.
#[derive(Clone, Debug)]
pub struct Sessions {
    ssm: aws_sdk_ssm::Client,
    signer: Arc<UpgradeSigner>,
    /// Each session's latest StreamUrl, for a ResumeSession that returns none.
    urls: Arc<Mutex<HashMap<String, String>>>,
    /// For KMS-encrypted sessions: GenerateDataKey.
    kms: Option<aws_sdk_kms::Client>,
    /// Each session's StartSession target: the `aws:ssm:TargetId` of its data key.
    targets: Arc<Mutex<HashMap<String, String>>>,
}

impl Sessions {
    /// `sdk` is the configuration `ssm` was made from: its credentials sign the upgrades.
    pub fn new(ssm: aws_sdk_ssm::Client, sdk: &aws_types::SdkConfig) -> Self {
        Sessions {
            ssm,
            signer: Arc::new(UpgradeSigner::new(sdk)),
            urls: Arc::default(),
            kms: None,
            targets: Arc::default(),
        }
    }

    /// A non-secret name for the credentials the upgrades are signed with
    /// (resolved once here and reused for signing), for the warm-path cache.
    pub async fn credentials_id(&self) -> Option<String> {
        let credentials = self.signer.credentials().await.ok()?;
        Some(crate::cache::credentials_id(credentials.access_key_id()))
    }

    /// Lets sessions whose agent asks for KMS encryption get their data key.
    pub fn with_kms(mut self, kms: aws_sdk_kms::Client) -> Self {
        self.kms = Some(kms);
        self
    }

    /// Records the target of a session started elsewhere (by the AWS CLI).
    pub fn set_target(&self, session_id: &str, target: &str) {
        self.targets
            .lock()
            .expect("target map")
            .insert(session_id.to_owned(), target.to_owned());
    }

    /// StartSession. `label` is what the user asked for (a `*.sagemaker` name
    /// or an id): it goes into `Reason` so CloudTrail shows who used sm-ssh for what.
    pub async fn start(
        &self,
        target: &str,
        label: &str,
        document: &str,
        parameters: &[(&str, String)],
    ) -> Result<StreamTarget, StartError> {
        let mut request = self
            .ssm
            .start_session()
            .target(target)
            .document_name(document)
            .reason(reason(label));
        for (name, value) in parameters {
            request = request.parameters(*name, vec![value.clone()]);
        }
        let output = request.send().await.map_err(|error| {
            crate::path::sagemaker_native::explain_denial(
                target,
                AwsError::from_sdk("ssm:StartSession", &error),
            )
        })?;
        match (
            output.session_id(),
            output.token_value(),
            output.stream_url(),
        ) {
            (Some(id), Some(token), Some(url)) => {
                self.remember(id, url);
                self.set_target(id, target);
                Ok(StreamTarget {
                    session_id: id.to_owned(),
                    stream_url: url.to_owned(),
                    token: token.to_owned(),
                })
            }
            _ => Err(AwsError {
                action: "ssm:StartSession",
                problem: AwsProblem::Other,
                detail: "the answer lacks SessionId, TokenValue or StreamUrl".into(),
            }),
        }
    }

    pub(crate) fn remember(&self, session_id: &str, url: &str) {
        self.urls
            .lock()
            .expect("stream url map")
            .insert(session_id.to_owned(), url.to_owned());
    }

    /// Whether a StartSession failure is IAM refusing it.
    pub fn is_denied(error: &StartError) -> bool {
        matches!(error.problem, AwsProblem::AccessDenied { .. })
    }
}

impl SessionControl for Sessions {
    /// ResumeSession. No token in the answer means the session timed out or
    /// was terminated: not worth retrying.
    async fn resume(&self, session_id: &str) -> Result<StreamTarget, ControlError> {
        let output = self
            .ssm
            .resume_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|error| {
                let error = AwsError::from_sdk("ssm:ResumeSession", &error);
                let message = error.message(profile().as_deref());
                match error.problem {
                    AwsProblem::Other if !session_is_gone(&error) => {
                        ControlError::retryable(message)
                    }
                    _ => ControlError::fatal(message),
                }
            })?;
        let Some(token) = output.token_value().filter(|t| !t.is_empty()) else {
            return Err(ControlError::fatal(format!(
                "session {session_id} has ended (ResumeSession returned no token)"
            )));
        };
        let stream_url = match output.stream_url().filter(|u| !u.is_empty()) {
            Some(url) => {
                self.remember(session_id, url);
                url.to_owned()
            }
            None => self
                .urls
                .lock()
                .expect("stream url map")
                .get(session_id)
                .cloned()
                .ok_or_else(|| ControlError::fatal("ResumeSession returned no StreamUrl"))?,
        };
        Ok(StreamTarget {
            session_id: session_id.to_owned(),
            stream_url,
            token: token.to_owned(),
        })
    }

    /// GenerateDataKey as the plugin calls it (`streaming.go`
    /// `ProcessKMSEncryptionHandshakeAction`): 64 bytes, context SessionId and TargetId.
    async fn data_key(&self, session_id: &str, key_id: &str) -> Result<DataKey, KeyError> {
        let Some(kms) = &self.kms else {
            return Err(KeyError::Unsupported(
                "KMS encryption is not available here".to_owned(),
            ));
        };
        let target = self
            .targets
            .lock()
            .expect("target map")
            .get(session_id)
            .cloned()
            .unwrap_or_default();
        let mut request = kms
            .generate_data_key()
            .key_id(key_id)
            .number_of_bytes(DATA_KEY_BYTES as i32);
        for (key, value) in encryption_context(session_id, &target) {
            request = request.encryption_context(key, value);
        }
        let output = request.send().await.map_err(|error| {
            KeyError::Failed(kms_failure(
                key_id,
                &AwsError::from_sdk("kms:GenerateDataKey", &error),
            ))
        })?;
        match (output.ciphertext_blob, output.plaintext) {
            (Some(ciphertext), Some(plaintext)) => Ok(DataKey {
                ciphertext: ciphertext.into_inner(),
                plaintext: plaintext.into_inner(),
            }),
            _ => Err(KeyError::Failed(format!(
                "kms:GenerateDataKey on KMS key {key_id} returned no data key"
            ))),
        }
    }

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        self.ssm
            .terminate_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|error| {
                let error = AwsError::from_sdk("ssm:TerminateSession", &error);
                if session_is_gone(&error) {
                    ControlError::fatal(error.message(profile().as_deref()))
                } else {
                    ControlError::retryable(error.message(profile().as_deref()))
                }
            })?;
        Ok(())
    }

    async fn upgrade_headers(
        &self,
        stream_url: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        self.signer.headers(stream_url).await
    }
}

/// The profile in use, for the login hint of credential errors (`--profile`
/// reaches here as AWS_PROFILE only when set that way).
pub fn profile() -> Option<String> {
    std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty())
}

/// One line for a failed GenerateDataKey: the action, the key, the fix.
pub fn kms_failure(key_id: &str, error: &AwsError) -> String {
    match error.problem {
        AwsProblem::AccessDenied { .. } => format!(
            "AWS denied kms:GenerateDataKey on KMS key {key_id}, which your Session Manager \
             preferences use to encrypt this session: allow kms:GenerateDataKey on that key \
             (`sm-ssh policy kms --key {key_id}` prints the statement) ({})",
            error.detail
        ),
        _ => format!(
            "kms:GenerateDataKey on KMS key {key_id} (this session is KMS-encrypted) failed: {}",
            error.detail
        ),
    }
}

/// The codes with which ResumeSession and TerminateSession refuse a session
/// that no longer exists (or never did): final, however often it is retried.
const GONE_CODES: [&str; 2] = ["DoesNotExistException", "InvalidParameters"];

fn session_is_gone(error: &AwsError) -> bool {
    GONE_CODES
        .iter()
        .any(|code| error.detail.starts_with(&format!("{code}:")))
}

/// StartSession's `Reason`: `sm-ssh <version>: <label>`, cut to the
/// service's 256 characters (docs/admin-guide.md, "Auditing SSH access").
fn reason(label: &str) -> String {
    let text = format!("sm-ssh {}: {label}", env!("CARGO_PKG_VERSION"));
    text.chars().take(256).collect()
}

/// The label in a `Reason` sm-ssh wrote (any version), if it wrote it.
pub fn label_of_reason(reason: &str) -> Option<&str> {
    let (version, label) = reason.strip_prefix("sm-ssh ")?.split_once(": ")?;
    let is_version = !version.is_empty() && !version.contains(char::is_whitespace);
    (is_version && !label.is_empty()).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_that_no_longer_exists_is_final() {
        let error = |detail: &str| AwsError {
            action: "ssm:ResumeSession",
            problem: AwsProblem::Other,
            detail: detail.to_owned(),
        };
        assert!(session_is_gone(&error(
            "DoesNotExistException: Session alice-0123 does not exist."
        )));
        assert!(session_is_gone(&error("InvalidParameters: bad session id")));
        assert!(!session_is_gone(&error(
            "ThrottlingException: Rate exceeded"
        )));
        assert!(!session_is_gone(&error("InternalServerError: oops")));
    }

    #[test]
    fn reason_names_the_tool_and_the_target_and_fits() {
        let r = reason("my-job.training.sagemaker");
        assert!(r.starts_with("sm-ssh "));
        assert!(r.ends_with(": my-job.training.sagemaker"));
        assert_eq!(reason(&"x".repeat(400)).chars().count(), 256);
        assert_eq!(label_of_reason(&r), Some("my-job.training.sagemaker"));
        assert_eq!(label_of_reason("sm-ssh: x"), None);
        assert_eq!(
            label_of_reason("Local user started SageMaker SSH Helper"),
            None
        );
    }
}

/// Starts the early dial of the next session's data channel (see
/// [`Predial`]) to `learned` (the last session's origin, from the cache), or
/// else to AWS's `ssmmessages` host of the region. With an endpoint override
/// (a fake, a VPC endpoint without private DNS) or FIPS endpoints the host
/// cannot be told in advance: nothing is dialled until it has been learnt.
/// A wrong guess costs one unused connection, never the session.
pub fn predial(sdk: &aws_types::SdkConfig, learned: Option<String>) -> Option<Predial> {
    let origin = learned.or_else(|| {
        let overridden = sdk.endpoint_url().is_some()
            || ["AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        if overridden || sdk.use_fips() == Some(true) {
            return None;
        }
        let region = sdk.region()?.as_ref().to_owned();
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        Some(format!("wss://ssmmessages.{region}.{suffix}"))
    })?;
    tracing::debug!(%origin, "dialling the data channel during StartSession");
    Predial::start(&origin)
}

/// `scheme://host[:port]` of a StreamUrl: what [`predial`] needs, without
/// the session id in its path or the query.
pub fn origin_of(stream_url: &str) -> Option<String> {
    let (scheme, rest) = stream_url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty() && matches!(scheme, "ws" | "wss"))
        .then(|| format!("{scheme}://{authority}"))
}

/// The environment variable that overrides the data channel's pacing.
pub const MAX_RATE_VAR: &str = "SM_SSH_MAX_RATE";

/// Options for every data channel this process opens. By default sends are
/// paced at the service's ceiling (1000 messages per second per session);
/// `SM_SSH_MAX_RATE` sets another rate in messages per second, or `unlimited`
/// (for a service or fake without that ceiling).
pub fn data_channel_options() -> anyhow::Result<Options> {
    let mut options = Options::default();
    if let Ok(value) = std::env::var(MAX_RATE_VAR) {
        options.pacing = parse_rate(&value).ok_or_else(|| {
            crate::error::Failure::new(
                crate::error::exit::USAGE,
                format!(
                    "{MAX_RATE_VAR}={value:?} is not a rate: give messages per second (e.g. 1000) or `unlimited`"
                ),
            )
        })?;
    }
    for (name, field) in [
        (PING_INTERVAL_VAR, &mut options.ping_interval),
        (PONG_TIMEOUT_VAR, &mut options.pong_timeout),
        (CONNECT_TIMEOUT_VAR, &mut options.connect_timeout),
    ] {
        if let Ok(value) = std::env::var(name) {
            *field = parse_seconds(&value).ok_or_else(|| {
                crate::error::Failure::new(
                    crate::error::exit::USAGE,
                    format!("{name}={value:?} is not a duration: give seconds (e.g. 20 or 2.5)"),
                )
            })?;
        }
    }
    if let Ok(value) = std::env::var(MAX_RECONNECTS_VAR) {
        options.max_reconnects = value.trim().parse().map_err(|_| {
            crate::error::Failure::new(
                crate::error::exit::USAGE,
                format!("{MAX_RECONNECTS_VAR}={value:?} is not a number of attempts"),
            )
        })?;
    }
    Ok(options)
}

/// The liveness and reconnect limits (docs/reliability.md): how often the
/// websocket is pinged, how long a pong may take before the socket counts as
/// dead, how long one redial may take, and how many redials one outage gets.
pub const PING_INTERVAL_VAR: &str = "SM_SSH_PING_INTERVAL";
pub const PONG_TIMEOUT_VAR: &str = "SM_SSH_PONG_TIMEOUT";
pub const CONNECT_TIMEOUT_VAR: &str = "SM_SSH_CONNECT_TIMEOUT";
pub const MAX_RECONNECTS_VAR: &str = "SM_SSH_MAX_RECONNECTS";

/// Positive seconds, fractions allowed.
fn parse_seconds(value: &str) -> Option<std::time::Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds > 0.0 && seconds.is_finite()).then(|| std::time::Duration::from_secs_f64(seconds))
}

fn parse_rate(value: &str) -> Option<Option<u32>> {
    match value.trim() {
        "unlimited" => Some(None),
        n => n.parse::<u32>().ok().filter(|&n| n > 0).map(Some),
    }
}

#[cfg(test)]
mod rate_tests {
    use super::{origin_of, parse_rate};

    #[test]
    fn origins_keep_scheme_host_and_port_only() {
        assert_eq!(
            origin_of("wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe&cell-number=AAAA").as_deref(),
            Some("wss://ssmmessages.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            origin_of("ws://127.0.0.1:4566/v1/x").as_deref(),
            Some("ws://127.0.0.1:4566")
        );
        assert_eq!(origin_of("https://example.com/"), None);
        assert_eq!(origin_of("wss:///x"), None);
    }

    #[test]
    fn rates_parse_as_messages_per_second_or_unlimited() {
        assert_eq!(parse_rate("1000"), Some(Some(1000)));
        assert_eq!(parse_rate(" unlimited "), Some(None));
        assert_eq!(parse_rate("0"), None);
        assert_eq!(parse_rate("fast"), None);
    }
}
