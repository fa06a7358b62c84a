//! What to tell a user whom IAM refused DescribeSessions or TerminateSession:
//! the action, the condition that most likely stopped it, and the statement
//! that would allow it. AWS's denial names the action but never the
//! condition, so the condition is inferred from the session's owner and the
//! client policy sm-ssh recommends (`sm-ssh policy client`).

use crate::error::{exit, AwsError, Failure};
use crate::policy::documents::CLIENT_POLICY_NAME;

/// The client policy's condition on ending sessions.
pub const OWN_SESSION_CONDITION: &str =
    "ssm:resourceTag/aws:ssmmessages:session-id = ${aws:userid}";

/// DescribeSessions refused: the SSH client policy does not grant it.
pub fn describe_sessions(error: &AwsError) -> Failure {
    Failure::new(
        exit::ACCESS_DENIED,
        format!(
            "AWS denied ssm:DescribeSessions, which listing sessions needs; the SSH client \
             policy ({CLIENT_POLICY_NAME}) does not grant it.\n  Add this statement to your \
             IAM policy (the action takes no resource ARN):\n  \
             {{\"Effect\": \"Allow\", \"Action\": \"ssm:DescribeSessions\", \"Resource\": \"*\"}}\n  \
             ({})",
            error.detail
        ),
    )
}

/// Who started the session being terminated, as far as is known.
pub enum Starter<'a> {
    /// The caller.
    Me,
    /// Someone else (their ARN).
    Other(&'a str),
    /// DescribeSessions could not say.
    Unknown,
}

/// TerminateSession refused to `caller` (an ARN) for session `id` of `account`.
pub fn terminate_session(
    error: &AwsError,
    id: &str,
    starter: Starter<'_>,
    caller: &str,
    account: &str,
) -> Failure {
    let partition = crate::policy::documents::partition_of(caller);
    let admin = format!(
        "{{\"Effect\": \"Allow\", \"Action\": \"ssm:TerminateSession\", \"Resource\": \
         \"arn:{partition}:ssm:*:{account}:session/*\"}}"
    );
    let why = match starter {
        Starter::Other(owner) => format!(
            "the session was started by {owner}, and the client policy ({CLIENT_POLICY_NAME}, \
             statement TerminateOwnSessions) allows ssm:TerminateSession only under the \
             condition {OWN_SESSION_CONDITION}, that is on sessions you started yourself.\n  \
             Ask its owner to end it, or an administrator whose policy has, without that \
             condition:\n  {admin}"
        ),
        Starter::Me => format!(
            "no policy of yours allows ssm:TerminateSession on your own sessions; the client \
             policy's TerminateOwnSessions statement does (condition {OWN_SESSION_CONDITION}): \
             see `sm-ssh policy client`"
        ),
        Starter::Unknown => format!(
            "its owner is unknown (DescribeSessions did not say); the client policy allows \
             ssm:TerminateSession only under the condition {OWN_SESSION_CONDITION} (sessions \
             you started). Ending others' sessions needs, without that condition:\n  {admin}"
        ),
    };
    Failure::new(
        exit::ACCESS_DENIED,
        format!(
            "AWS denied ssm:TerminateSession on session {id}: {why}\n  ({})",
            error.detail
        ),
    )
}
