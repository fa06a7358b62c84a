//! Session Manager sessions through the SSM API: StartSession, ResumeSession
//! and TerminateSession.

use aws_sdk_ssm::error::ProvideErrorMetadata;

/// What StartSession and ResumeSession hand back: the websocket and the
/// single-use token that opens it.
#[derive(Clone)]
pub struct Started {
    pub session_id: String,
    pub token_value: String,
    pub stream_url: String,
}

impl std::fmt::Debug for Started {
    // The token is a credential: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("session_id", &self.session_id)
            .field("stream_url", &self.stream_url)
            .finish_non_exhaustive()
    }
}

/// Why StartSession failed, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// IAM refused this document (or target): `forward` falls back to another document.
    #[error(
        "StartSession with {document} on {target} was denied: {message}. \
         The caller needs ssm:StartSession on the instance and on the document (see `sm-ssh policy`)"
    )]
    AccessDenied {
        document: String,
        target: String,
        message: String,
    },
    #[error(
        "{target} is not connected to Session Manager ({message}); \
         the instance may be stopped or its SSM agent offline"
    )]
    NotConnected { target: String, message: String },
    #[error("StartSession with {document} on {target} failed: {code}: {message}")]
    Other {
        document: String,
        target: String,
        code: String,
        message: String,
    },
}

/// The three session calls, on one SSM client.
#[derive(Clone, Debug)]
pub struct Sessions {
    ssm: aws_sdk_ssm::Client,
}

impl Sessions {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Sessions { ssm }
    }

    /// StartSession. `label` is what the user asked for (a `*.sagemaker` name
    /// or an id): it goes into `Reason` so CloudTrail shows who used sm-ssh for what.
    pub async fn start(
        &self,
        target: &str,
        label: &str,
        document: &str,
        parameters: &[(&str, String)],
    ) -> Result<Started, StartError> {
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
            let error = error.into_service_error();
            let code = error.code().unwrap_or("error").to_owned();
            let message = error.message().unwrap_or("no message").to_owned();
            if code.contains("AccessDenied") {
                StartError::AccessDenied {
                    document: document.to_owned(),
                    target: target.to_owned(),
                    message,
                }
            } else if code == "TargetNotConnected" {
                StartError::NotConnected {
                    target: target.to_owned(),
                    message,
                }
            } else {
                StartError::Other {
                    document: document.to_owned(),
                    target: target.to_owned(),
                    code,
                    message,
                }
            }
        })?;
        let missing = |field| StartError::Other {
            document: document.to_owned(),
            target: target.to_owned(),
            code: "InvalidResponse".into(),
            message: format!("StartSession returned no {field}"),
        };
        Ok(Started {
            session_id: output
                .session_id()
                .ok_or_else(|| missing("SessionId"))?
                .to_owned(),
            token_value: output
                .token_value()
                .ok_or_else(|| missing("TokenValue"))?
                .to_owned(),
            stream_url: output
                .stream_url()
                .ok_or_else(|| missing("StreamUrl"))?
                .to_owned(),
        })
    }

    /// ResumeSession. `Ok(None)` means the service has no token for us: the
    /// session timed out or was terminated.
    pub async fn resume(
        &self,
        session_id: &str,
    ) -> anyhow::Result<Option<(String, Option<String>)>> {
        let output = self
            .ssm
            .resume_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|error| {
                let error = error.into_service_error();
                anyhow::anyhow!(
                    "ResumeSession {session_id} failed: {}: {}",
                    error.code().unwrap_or("error"),
                    error.message().unwrap_or("no message")
                )
            })?;
        Ok(output.token_value().filter(|t| !t.is_empty()).map(|token| {
            let url = output
                .stream_url()
                .filter(|u| !u.is_empty())
                .map(str::to_owned);
            (token.to_owned(), url)
        }))
    }

    /// TerminateSession.
    pub async fn terminate(&self, session_id: &str) -> anyhow::Result<()> {
        self.ssm
            .terminate_session()
            .session_id(session_id)
            .send()
            .await
            .map_err(|error| {
                let error = error.into_service_error();
                anyhow::anyhow!(
                    "TerminateSession {session_id} failed: {}: {}",
                    error.code().unwrap_or("error"),
                    error.message().unwrap_or("no message")
                )
            })?;
        Ok(())
    }
}

/// StartSession's `Reason`: at most 256 characters.
fn reason(label: &str) -> String {
    let text = format!("sm-ssh {}: {label}", env!("CARGO_PKG_VERSION"));
    text.chars().take(256).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_the_tool_and_the_target_and_fits() {
        let r = reason("my-job.training.sagemaker");
        assert!(r.starts_with("sm-ssh "));
        assert!(r.ends_with(": my-job.training.sagemaker"));
        assert_eq!(reason(&"x".repeat(400)).chars().count(), 256);
    }

    #[test]
    fn debug_hides_the_token() {
        let started = Started {
            session_id: "alice-0123".into(),
            token_value: "SECRET-TOKEN".into(),
            stream_url: "wss://example/v1/data-channel/alice-0123".into(),
        };
        let text = format!("{started:?}");
        assert!(text.contains("alice-0123") && !text.contains("SECRET-TOKEN"));
    }
}
