//! The connecting user's policy for SageMaker's own Session Manager targets
//! (`sm-ssh policy native`): training jobs with remote debugging
//! (`sagemaker-training-job:<job>_algo-<n>`) and endpoints with SSM access
//! (`sagemaker-endpoint:<endpoint>_…`). IAM sees a target's name under the
//! condition key `ssm:resourceTag/aws:ssmmessages:target-id` (SageMaker
//! developer guide, remote debugging); the statements limit StartSession to
//! these targets: any job and endpoint of the account by default, those named
//! `<user>-…` per user (`--per-user`, `${aws:username}`), or `<team>-…` per
//! team (`--team-tag KEY`, `${aws:PrincipalTag/KEY}`). The documents are
//! allowed apart, without the condition, which only targets carry. Also: the
//! reads sm-ssh resolves names with, and `sm-ssh debug enable`.

use serde_json::{json, Value};

use super::documents::{Requirement, Scope};
use super::eval::Request;
use crate::path::sagemaker_native::TARGET_ID_KEY;

/// What the execution role of a remotely debugged job needs: the SSM agent's
/// channels (developer guide, remote debugging, "IAM role").
pub const AGENT_ACTIONS: [&str; 4] = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
];

const READ_ACTIONS: [&str; 5] = [
    "sagemaker:DescribeEndpoint",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:DescribeTrainingJob",
    "sagemaker:ListEndpoints",
    "sagemaker:ListTrainingJobs",
];

/// The session documents sm-ssh opens on these targets.
pub const DOCUMENTS: [&str; 4] = [
    "SSM-SessionManagerRunShell",
    "AWS-StartNonInteractiveCommand",
    "AWS-StartInteractiveCommand",
    "AWS-StartPortForwardingSession",
];

/// The name prefix of the jobs and endpoints a user may reach.
fn prefix(scope: &Scope, per_user: bool) -> &'static str {
    match (&scope.team_tag, per_user) {
        (Some(_), _) => "team",
        (None, true) => "user",
        (None, false) => "any",
    }
}

/// `sagemaker-training-job:…` and `sagemaker-endpoint:…` patterns.
pub fn target_patterns(scope: &Scope, per_user: bool) -> [String; 2] {
    let name = match (prefix(scope, per_user), &scope.team_tag) {
        ("team", Some(key)) => format!("${{aws:PrincipalTag/{key}}}-*"),
        ("user", _) => "${aws:username}-*".to_string(),
        _ => "*".to_string(),
    };
    [
        format!("sagemaker-training-job:{name}"),
        format!("sagemaker-endpoint:{name}"),
    ]
}

pub fn client(scope: &Scope, per_user: bool) -> Value {
    let (partition, account) = (&scope.partition, &scope.account);
    let patterns = target_patterns(scope, per_user);
    let documents: Vec<String> = DOCUMENTS
        .iter()
        .map(|d| format!("arn:{partition}:ssm:*::document/{d}"))
        .collect();
    let training = patterns[0].trim_start_matches("sagemaker-training-job:");
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FindDebuggableJobsAndEndpoints",
                "Effect": "Allow",
                "Action": READ_ACTIONS,
                "Resource": "*"
            },
            {
                "Sid": "FindEndpointInstancesInLogStreams",
                "Effect": "Allow",
                "Action": "logs:DescribeLogStreams",
                "Resource": format!("arn:{partition}:logs:*:{account}:log-group:/aws/sagemaker/Endpoints/*")
            },
            {
                "Sid": "SessionsOnJobsAndEndpoints",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": "*",
                "Condition": {"StringLike": {(TARGET_ID_KEY): patterns}}
            },
            {
                "Sid": "ShellAndPortForwardingDocuments",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": documents
            },
            super::documents::resume_and_end_own_sessions(partition, account),
            {
                "Sid": "EnableRemoteDebugging",
                "Effect": "Allow",
                "Action": "sagemaker:UpdateTrainingJob",
                "Resource": format!("arn:{partition}:sagemaker:*:{account}:training-job/{training}")
            }
        ]
    })
}

/// What the execution role must be allowed for the agent in the container.
pub fn role_requirements() -> Vec<Requirement> {
    AGENT_ACTIONS
        .iter()
        .map(|action| Requirement {
            request: Request::new(action, "*"),
            expect: super::documents::Expect::Allowed,
            why: "the SSM agent SageMaker starts in the container opens its channels",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::eval::{evaluate, Decision, Policy};

    fn scope(team: Option<&str>) -> Scope {
        Scope::example(team)
    }

    fn start(target: &str) -> Request {
        Request::new("ssm:StartSession", "*")
            .with(TARGET_ID_KEY, target)
            .with("aws:username", "alice")
            .with("aws:PrincipalTag/team", "red")
    }

    #[test]
    fn sessions_reach_the_targets_the_variant_allows() {
        let any = vec![Policy::from_value("any", &client(&scope(None), false)).unwrap()];
        assert_eq!(
            evaluate(&any, &start("sagemaker-training-job:x_algo-1")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&any, &start("sagemaker-endpoint:ep_AllTraffic_i-1")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&any, &start("sagemaker-cluster:c_g-i-1")),
            Decision::ImplicitDeny
        );
        let own = vec![Policy::from_value("user", &client(&scope(None), true)).unwrap()];
        assert_eq!(
            evaluate(&own, &start("sagemaker-training-job:alice-x_algo-1")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&own, &start("sagemaker-training-job:bob-x_algo-1")),
            Decision::ImplicitDeny
        );
        let team = vec![Policy::from_value("team", &client(&scope(Some("team")), false)).unwrap()];
        assert_eq!(
            evaluate(&team, &start("sagemaker-endpoint:red-ep_AllTraffic_i-1")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&team, &start("sagemaker-endpoint:blue-ep_AllTraffic_i-1")),
            Decision::ImplicitDeny
        );
        let shell = Request::new(
            "ssm:StartSession",
            "arn:aws:ssm:us-east-1::document/SSM-SessionManagerRunShell",
        );
        assert_eq!(evaluate(&any, &shell), Decision::Allow);
    }
}
