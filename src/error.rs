//! Errors the user sees: one place that turns failures (AWS SDK errors above
//! all) into a clear message and a documented exit code. The codes are listed
//! in docs/user-guide.md ("Exit codes").

use std::fmt;
use std::process::ExitCode;

use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

use crate::cli::Global;

/// Documented exit codes. `connect` also passes ssh's own exit status through.
pub mod exit {
    /// Anything not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad command line or target name (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// No instance matches the target.
    pub const NOT_FOUND: u8 = 3;
    /// The instance exists but is not Online (or `--wait` ran out).
    pub const OFFLINE: u8 = 4;
    /// AWS credentials or region are missing, invalid or expired.
    pub const CREDENTIALS: u8 = 5;
    /// AWS denied a call (IAM).
    pub const ACCESS_DENIED: u8 = 6;
    /// AWS could not be reached or answered with another error.
    pub const AWS: u8 = 7;
}

/// An error with a message meant for the user and an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// What went wrong with an AWS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsProblem {
    /// IAM denied `action` (parsed from AWS's message when it names it).
    AccessDenied { action: String },
    /// Credentials missing, invalid or expired.
    Credentials,
    /// No region configured.
    Region,
    /// The endpoint could not be reached (network, proxy, DNS, timeout).
    Unreachable,
    /// Throttled, or any other service error.
    Other,
}

/// A failed AWS call: the IAM action attempted and AWS's (redacted) words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub action: &'static str,
    pub problem: AwsProblem,
    pub detail: String,
}

impl AwsError {
    /// Classifies an SDK error of the call `action` (e.g. `ssm:StartSession`).
    pub fn from_sdk<E, R>(action: &'static str, error: &SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + 'static,
    {
        // The SDK's structures are for developers: shown with -v only.
        tracing::debug!("{action}: {}", redact(&format!("{error:?}")));
        let full = chain_line(error);
        let (code, message) = match error {
            SdkError::ServiceError(context) => (
                context.err().code().unwrap_or_default().to_string(),
                context.err().message().unwrap_or_default().to_string(),
            ),
            _ => (String::new(), String::new()),
        };
        let detail = if code.is_empty() {
            full.clone()
        } else {
            redact(&format!("{code}: {message}"))
        };
        let mut problem = classify(&code, &message, &full, action);
        if problem == AwsProblem::Other
            && matches!(
                error,
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
            )
        {
            problem = AwsProblem::Unreachable;
        }
        AwsError {
            action,
            problem,
            detail,
        }
    }

    /// Whether trying again later may help: throttling, server trouble, an
    /// unreachable endpoint.
    pub fn is_transient(&self) -> bool {
        const CODES: [&str; 6] = [
            "Throttling",
            "ThrottlingException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "InternalServerError",
            "ServiceUnavailable",
        ];
        self.problem == AwsProblem::Unreachable
            || (self.problem == AwsProblem::Other
                && CODES
                    .iter()
                    .any(|code| self.detail.starts_with(&format!("{code}:"))))
    }

    pub fn exit_code(&self) -> u8 {
        match self.problem {
            AwsProblem::AccessDenied { .. } => exit::ACCESS_DENIED,
            AwsProblem::Credentials | AwsProblem::Region => exit::CREDENTIALS,
            AwsProblem::Unreachable | AwsProblem::Other => exit::AWS,
        }
    }

    /// The message for the user; `profile` makes the login hint exact.
    pub fn message(&self, profile: Option<&str>) -> String {
        match &self.problem {
            AwsProblem::AccessDenied { action } => format!(
                "AWS denied {action}: your IAM identity is not allowed to call it.\n  \
                 ({})\n  Run `sm-ssh doctor` to see which permissions are missing, and \
                 `sm-ssh policy` for the policy to attach.",
                self.detail
            ),
            AwsProblem::Credentials => {
                let login = match profile {
                    Some(profile) => format!("aws sso login --profile {profile}"),
                    None => "aws sso login --profile <profile>".to_string(),
                };
                format!(
                    "AWS credentials are missing, invalid or expired ({} failed: {}).\n  \
                     Log in with `{login}` (or `aws configure`), or pick a profile with \
                     --profile / AWS_PROFILE, then retry.",
                    self.action, self.detail
                )
            }
            AwsProblem::Region => format!(
                "no AWS region is configured ({} needs one).\n  Pass --region <region>, \
                 set AWS_REGION, or set `region` in the profile (~/.aws/config).",
                self.action
            ),
            AwsProblem::Unreachable => format!(
                "{}.\n  Check the network, HTTPS_PROXY, and the region; inside a VPC without \
                 internet access the SSM and STS endpoints need VPC endpoints.",
                self.summary()
            ),
            AwsProblem::Other => self.summary(),
        }
    }

    /// One line: what failed and AWS's words, or for an unreachable
    /// endpoint, which one and the likely cause.
    pub fn summary(&self) -> String {
        match &self.problem {
            AwsProblem::Unreachable => format!(
                "could not reach AWS for {} at {}: {} ({})",
                self.action,
                endpoint_of(self.action),
                likely_cause(&self.detail),
                self.detail
            ),
            _ => format!("{} failed: {}", self.action, self.detail),
        }
    }
}

/// The region and endpoint override of this invocation's SDK configuration,
/// for naming endpoints in messages.
static CONFIG: std::sync::OnceLock<(Option<String>, Option<String>)> = std::sync::OnceLock::new();

/// Remembers where the SDK sends calls (see [`endpoint_of`]).
pub fn remember_endpoints(sdk: &aws_config::SdkConfig) {
    let _ = CONFIG.set((
        sdk.region().map(|r| r.to_string()),
        sdk.endpoint_url().map(str::to_owned),
    ));
}

/// Where the SDK sends the calls of `action` (`ssm:StartSession` → SSM):
/// the `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL` override when one
/// is set, else the service's public endpoint in the region.
pub fn endpoint_of(action: &str) -> String {
    let service = action.split(':').next().unwrap_or(action);
    let (variable, host) = match service {
        "ssm" => ("SSM", "ssm.{region}.amazonaws.com"),
        "sts" => ("STS", "sts.{region}.amazonaws.com"),
        "iam" => ("IAM", "iam.amazonaws.com"),
        "logs" => ("CLOUDWATCH_LOGS", "logs.{region}.amazonaws.com"),
        "sagemaker" => ("SAGEMAKER", "api.sagemaker.{region}.amazonaws.com"),
        _ => ("", "{service}.{region}.amazonaws.com"),
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (region, configured) = CONFIG.get().cloned().unwrap_or_default();
    if let Some(url) = env(&format!("AWS_ENDPOINT_URL_{variable}"))
        .or(configured)
        .or_else(|| env("AWS_ENDPOINT_URL"))
    {
        return url;
    }
    let region = region
        .or_else(|| env("AWS_REGION"))
        .unwrap_or_else(|| "<region>".into());
    let host = host
        .replace("{region}", &region)
        .replace("{service}", service);
    format!("https://{host}")
}

/// The likely cause of a connection failure, from its error text.
fn likely_cause(detail: &str) -> &'static str {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("identity resolver") {
        // The SDK gave up waiting for credentials, before any connection.
        "the credentials took too long to load (a slow credential_process, SSO or metadata service)"
    } else if lower.contains("connection refused") {
        "nothing accepts connections there"
    } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
        "the host name does not resolve"
    } else if lower.contains("certificate") || lower.contains("tls") {
        "the TLS connection failed (an intercepting proxy needs its CA in SSL_CERT_FILE)"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "no answer in time (a firewall, or a proxy that HTTPS_PROXY should name)"
    } else {
        "the connection failed"
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(None))
    }
}

impl std::error::Error for AwsError {}

/// An error and its sources as one redacted line, for any error the AWS SDK
/// or its credential chain returns: never the SDK's Debug structures.
pub fn chain_line(error: &(dyn std::error::Error + 'static)) -> String {
    redact(&chain_text(error))
}

/// The error and its sources, `: `-joined, first line only: the SDK's
/// Debug forms and multi-line provider lists help nobody.
fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        let line = text.lines().next().unwrap_or_default().trim();
        let line = line.trim_end_matches("Attempted:").trim();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(line)) {
            parts.push(line.to_string());
        }
        next = error.source();
    }
    parts.join(": ")
}

fn classify(code: &str, message: &str, full: &str, action: &str) -> AwsProblem {
    const CREDENTIAL_CODES: [&str; 7] = [
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "AuthFailure",
    ];
    if code.starts_with("AccessDenied") || code == "UnauthorizedOperation" {
        let action = denied_action(message).unwrap_or_else(|| action.to_string());
        return AwsProblem::AccessDenied { action };
    }
    if CREDENTIAL_CODES.contains(&code) {
        return AwsProblem::Credentials;
    }
    if !code.is_empty() {
        return AwsProblem::Other;
    }
    let lower = full.to_ascii_lowercase();
    if lower.contains("region") && (lower.contains("missing") || lower.contains("must be set")) {
        AwsProblem::Region
    } else if lower.contains("credential") || lower.contains("token") && lower.contains("expired") {
        AwsProblem::Credentials
    } else {
        AwsProblem::Other
    }
}

/// The IAM action in AWS's denial text: "… is not authorized to perform:
/// ssm:StartSession on resource: …".
pub fn denied_action(message: &str) -> Option<String> {
    let rest = &message[message.find("perform: ")? + "perform: ".len()..];
    let action: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
        .collect();
    action.contains(':').then_some(action)
}

/// Masks anything in AWS-provided text that could be a secret: access key
/// ids, and long opaque tokens (session tokens, encoded authorization
/// messages).
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let key_id = word.len() == 20
            && (word.starts_with("AKIA") || word.starts_with("ASIA"))
            && word
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        let opaque = word.len() >= 40
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b));
        if key_id || opaque {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || "+/=_-".contains(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Prints `error` on stderr and returns its exit code.
pub fn report(error: &anyhow::Error, global: &Global) -> ExitCode {
    let (code, message) = describe(error, global.profile.as_deref());
    eprintln!("sm-ssh: {message}");
    ExitCode::from(code)
}

/// The exit code and message of any error, looking through its causes for
/// the errors that carry their own code.
pub fn describe(error: &anyhow::Error, profile: Option<&str>) -> (u8, String) {
    for cause in error.chain() {
        if let Some(aws) = cause.downcast_ref::<AwsError>() {
            return (aws.exit_code(), context_then(error, &aws.message(profile)));
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return (failure.code, context_then(error, &failure.message));
        }
        if let Some(target) = cause.downcast_ref::<crate::target::TargetError>() {
            return (exit::USAGE, context_then(error, &target.to_string()));
        }
        if let Some(resolve) = cause.downcast_ref::<crate::resolve::ResolveError>() {
            return (
                resolve.exit_code(),
                context_then(error, &resolve.message(profile)),
            );
        }
    }
    (exit::FAILURE, format!("{error:#}"))
}

/// The outer contexts of `error` (added with anyhow's `.context`), followed
/// by the coded error's own message.
fn context_then(error: &anyhow::Error, message: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let is_coded = cause.is::<AwsError>()
            || cause.is::<Failure>()
            || cause.is::<crate::target::TargetError>()
            || cause.is::<crate::resolve::ResolveError>();
        if is_coded {
            break;
        }
        parts.push(cause.to_string());
    }
    parts.push(message.to_string());
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_action_is_parsed_from_the_aws_message() {
        let message = "User: arn:aws:sts::123456789012:assumed-role/Dev/alice is not authorized \
                       to perform: ssm:StartSession on resource: arn:aws:ssm:eu-west-1:123456789012:\
                       managed-instance/mi-0123 because no identity-based policy allows the \
                       ssm:StartSession action";
        assert_eq!(denied_action(message).as_deref(), Some("ssm:StartSession"));
        assert_eq!(denied_action("Access denied"), None);
        assert_eq!(
            classify("AccessDeniedException", message, "", "ssm:Other"),
            AwsProblem::AccessDenied {
                action: "ssm:StartSession".into()
            }
        );
        assert_eq!(
            classify("AccessDeniedException", "denied", "", "logs:StartQuery"),
            AwsProblem::AccessDenied {
                action: "logs:StartQuery".into()
            }
        );
    }

    #[test]
    fn connection_failures_name_their_likely_cause() {
        // Seen in the soak on a starved machine: not a DNS problem.
        assert!(
            likely_cause("other: identity resolver timed out after 21.6s")
                .starts_with("the credentials took too long")
        );
        assert_eq!(
            likely_cause("dns error: failed to lookup address"),
            "the host name does not resolve"
        );
        assert_eq!(
            likely_cause("tcp connect error: Connection refused (os error 111)"),
            "nothing accepts connections there"
        );
    }

    #[test]
    fn credential_and_region_problems_are_recognised() {
        assert_eq!(
            classify(
                "ExpiredTokenException",
                "expired",
                "",
                "sts:GetCallerIdentity"
            ),
            AwsProblem::Credentials
        );
        assert_eq!(
            classify(
                "",
                "",
                "dispatch failure: an error occurred while loading credentials: no credentials",
                "ssm:DescribeInstanceInformation"
            ),
            AwsProblem::Credentials
        );
        assert_eq!(
            classify(
                "",
                "",
                "failed to construct request: invalid configuration: missing region",
                "ssm:DescribeInstanceInformation"
            ),
            AwsProblem::Region
        );
        assert_eq!(
            classify("ThrottlingException", "slow down", "", "ssm:X"),
            AwsProblem::Other
        );
    }

    #[test]
    fn messages_give_the_fix() {
        let denied = AwsError {
            action: "ssm:StartSession",
            problem: AwsProblem::AccessDenied {
                action: "ssm:StartSession".into(),
            },
            detail: "AccessDeniedException: no".into(),
        };
        assert!(denied.message(None).contains("sm-ssh doctor"));
        assert_eq!(denied.exit_code(), exit::ACCESS_DENIED);
        let credentials = AwsError {
            action: "sts:GetCallerIdentity",
            problem: AwsProblem::Credentials,
            detail: "expired".into(),
        };
        assert!(credentials
            .message(Some("dev"))
            .contains("aws sso login --profile dev"));
        assert_eq!(credentials.exit_code(), exit::CREDENTIALS);
    }

    #[test]
    fn throttling_and_unreachable_are_transient() {
        let error = |problem, detail: &str| AwsError {
            action: "ssm:DescribeInstanceInformation",
            problem,
            detail: detail.into(),
        };
        assert!(error(AwsProblem::Other, "ThrottlingException: Rate exceeded").is_transient());
        assert!(error(AwsProblem::Unreachable, "connect refused").is_transient());
        assert!(!error(AwsProblem::Other, "ValidationException: bad").is_transient());
        assert!(!error(AwsProblem::Credentials, "ThrottlingException: x").is_transient());
    }

    #[test]
    fn secrets_are_redacted() {
        let text = "key AKIAIOSFODNN7EXAMPLE token \
                    FwoGZXIvYXdzEJr//////////wEaDOMeLongSessionTokenValue1234567890abc= end";
        let redacted = redact(text);
        assert_eq!(redacted, "key <redacted> token <redacted> end");
        assert_eq!(
            redact("ssm:StartSession on mi-0123"),
            "ssm:StartSession on mi-0123"
        );
    }

    #[test]
    fn coded_errors_are_found_behind_context() {
        let error = anyhow::Error::new(Failure::new(exit::NOT_FOUND, "no such job"))
            .context("resolving x.training.sagemaker");
        let (code, message) = describe(&error, None);
        assert_eq!(code, exit::NOT_FOUND);
        assert_eq!(message, "resolving x.training.sagemaker: no such job");
        let (code, _) = describe(&anyhow::anyhow!("plain"), None);
        assert_eq!(code, exit::FAILURE);
    }
}
