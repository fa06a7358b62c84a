//! What the training-job and endpoint paths share once they leave the
//! helper's instances: SageMaker's own Session Manager targets
//! (`sagemaker-training-job:…`, `sagemaker-endpoint:…`), reached with
//! ssm:StartSession as any instance, with a shell and port forwarding but no
//! sshd, logged in as root; the one message when neither the helper nor the
//! native target works; and what IAM must allow for them.

use std::time::Duration;

use super::{Detail, KeyInstall, Liveness, Path, Pin, Reach};
use crate::error::{exit, AwsError, AwsProblem, Failure};
use crate::resolve::{ResolveError, ResolveOptions};

/// The user SageMaker's shell sessions run as in training and inference
/// containers (sagemaker-native-access reference §2, §4).
pub const USER: &str = "root";

/// The condition key IAM evaluates a native target's name under.
pub const TARGET_ID_KEY: &str = "ssm:resourceTag/aws:ssmmessages:target-id";

/// How often `--wait` asks SageMaker whether a job is training yet.
pub const POLL: Duration = Duration::from_secs(5);

/// What SageMaker said about the job host or endpoint container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeInfo {
    /// `training` or `inference`.
    pub kind: &'static str,
    /// The job or endpoint name.
    pub resource: String,
    /// The job's SecondaryStatus or the endpoint's status.
    pub status: String,
    /// `algo-<n>` or the EC2 instance id.
    pub node: String,
    pub container: Option<String>,
}

/// The reach of a native SageMaker target.
pub fn reach(path: Path, name: &str, session_target: String, info: NativeInfo) -> Reach {
    Reach {
        path,
        session_target: session_target.clone(),
        name: name.to_string(),
        default_user: USER,
        key: KeyInstall::Impossible("SageMaker's own Session Manager targets run no sshd"),
        pin: Pin {
            alias: session_target.clone(),
            binding: session_target,
        },
        liveness: Liveness::Running,
        detail: Detail::SageMaker(info),
        sshd: false,
    }
}

/// The options of the helper's lookup on a path that falls back to
/// SageMaker's own target: one look, since `--wait` waits on the fallback.
pub fn helper_options(opts: &ResolveOptions) -> ResolveOptions {
    ResolveOptions {
        wait: None,
        ..opts.clone()
    }
}

/// What the helper's lookup means for a path that can fall back.
pub enum Helper {
    /// The helper's instance: the SSM path.
    Found(Box<Reach>),
    /// Not found, and the native target may be tried; the reason is kept
    /// for the message when neither works.
    Fallback(ResolveError),
}

/// Sorts the helper lookup's outcome for `target`; `next` says (at `-v`)
/// what the path looks at when the helper has nothing.
pub fn helper_outcome(
    target: &crate::target::Target,
    helper: Result<crate::resolve::Resolved, ResolveError>,
    next: &str,
) -> anyhow::Result<Helper> {
    match helper {
        Ok(resolved) => {
            tracing::info!(instance = %resolved.instance_id, "{target}: the helper's managed instance (SSM path)");
            Ok(Helper::Found(Box::new(super::ssm::reach_from(resolved))))
        }
        Err(error) if may_fall_back(&error) => {
            tracing::info!(helper = %error.message(None).lines().next().unwrap_or_default(), "{target}: no helper instance; {next}");
            Ok(Helper::Fallback(error))
        }
        Err(error) => Err(error.into()),
    }
}

/// Whether the helper's lookup failing lets the native path be tried:
/// anything but missing credentials or region and an unreachable endpoint,
/// which fail both alike (and keep their own exit codes).
pub fn may_fall_back(error: &ResolveError) -> bool {
    !matches!(
        error,
        ResolveError::Aws(AwsError {
            problem: AwsProblem::Credentials | AwsProblem::Region | AwsProblem::Unreachable,
            ..
        })
    )
}

/// Why neither path reaches `name`: the helper's reason in short, then the
/// native one, which says what to do.
pub fn neither(name: &str, helper: &ResolveError, native: Failure) -> anyhow::Error {
    let helper = match helper {
        ResolveError::NotFound { .. } => "no sagemaker-ssh-helper instance is registered".into(),
        ResolveError::Offline {
            instance_id,
            ping_status,
            ..
        } => format!("the helper's instance {instance_id} is {ping_status}"),
        other => other
            .message(None)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    Failure::new(
        native.code,
        format!("cannot reach {name}: {helper}, and {}", native.message),
    )
    .into()
}

/// An AccessDenied from StartSession on a native target, with the condition
/// the caller's policy must satisfy.
pub fn explain_denial(target: &str, mut error: AwsError) -> AwsError {
    let kind = [
        "sagemaker-training-job:",
        "sagemaker-endpoint:",
        "sagemaker-cluster:",
    ]
    .into_iter()
    .find(|prefix| target.starts_with(*prefix));
    if let (AwsProblem::AccessDenied { .. }, Some(prefix)) = (&error.problem, kind) {
        error.detail = format!(
            "{}; on {target} ssm:StartSession must be allowed with the condition \
             {TARGET_ID_KEY} StringLike {prefix}* (`sm-ssh policy native` prints the statements)",
            error.detail
        );
    }
    error
}

/// A failure meaning: the resource exists but cannot take a session now.
pub fn blocked(message: String) -> Failure {
    Failure::new(exit::OFFLINE, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_name_the_condition() {
        let denied = AwsError {
            action: "ssm:StartSession",
            problem: AwsProblem::AccessDenied {
                action: "ssm:StartSession".into(),
            },
            detail: "AccessDeniedException: no".into(),
        };
        let explained = explain_denial("sagemaker-training-job:j_algo-1", denied.clone());
        assert!(explained.detail.contains(
            "ssm:resourceTag/aws:ssmmessages:target-id StringLike sagemaker-training-job:*"
        ));
        assert_eq!(
            explain_denial("mi-0123456789abcdef0", denied.clone()),
            denied
        );
    }
}
