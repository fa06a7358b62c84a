//! Session Manager sessions through the SSM API: StartSession, ResumeSession
//! and TerminateSession.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sm_ssh_proxy::{ControlError, Options, SessionControl, StreamTarget};

use crate::error::{AwsError, AwsProblem};

/// Why StartSession failed. `forward` looks at `AccessDenied` to fall back
/// to another document; everything else reports it.
pub type StartError = AwsError;

/// The three session calls, on one SSM client.
#[derive(Clone, Debug)]
pub struct Sessions {
    ssm: aws_sdk_ssm::Client,
    /// Each session's latest StreamUrl, for a ResumeSession that returns none.
    urls: Arc<Mutex<HashMap<String, String>>>,
}

impl Sessions {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Sessions {
            ssm,
            urls: Arc::default(),
        }
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
        let output = request
            .send()
            .await
            .map_err(|error| AwsError::from_sdk("ssm:StartSession", &error))?;
        match (
            output.session_id(),
            output.token_value(),
            output.stream_url(),
        ) {
            (Some(id), Some(token), Some(url)) => {
                self.remember(id, url);
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

    fn remember(&self, session_id: &str, url: &str) {
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
                let message = error.message(None);
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

    async fn terminate(&self, session_id: &str) -> Result<(), ControlError> {
        self.ssm
            .terminate_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|error| {
                let error = AwsError::from_sdk("ssm:TerminateSession", &error);
                if session_is_gone(&error) {
                    ControlError::fatal(error.message(None))
                } else {
                    ControlError::retryable(error.message(None))
                }
            })?;
        Ok(())
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
    Ok(options)
}

fn parse_rate(value: &str) -> Option<Option<u32>> {
    match value.trim() {
        "unlimited" => Some(None),
        n => n.parse::<u32>().ok().filter(|&n| n > 0).map(Some),
    }
}

#[cfg(test)]
mod rate_tests {
    use super::parse_rate;

    #[test]
    fn rates_parse_as_messages_per_second_or_unlimited() {
        assert_eq!(parse_rate("1000"), Some(Some(1000)));
        assert_eq!(parse_rate(" unlimited "), Some(None));
        assert_eq!(parse_rate("0"), None);
        assert_eq!(parse_rate("fast"), None);
    }
}
