//! The IAM documents SSH needs, filled in for one account, and the requests
//! doctor evaluates against a principal's policies to tell whether it has
//! them. Both come from here so that what `sm-ssh policy` prints is exactly
//! what `sm-ssh doctor` checks.
//!
//! The documents follow the sagemaker-ssh-helper IAM setup: the SageMaker
//! execution role registers the container as a managed instance tagged with
//! its owner's `aws:userid` (`SSHOwner`), and a user may only open sessions
//! on instances they own. The team variant (`--team-tag KEY`) replaces
//! per-user ownership by ABAC on a tag: roles and users carry `KEY=<team>`,
//! activations must carry the creating role's team, and a user reaches every
//! instance of their own team and no other.

use serde_json::{json, Value};

use super::eval::Request;

/// The policy name the setup guide uses for the execution role's policy.
pub const SERVER_POLICY_NAME: &str = "SSHSageMakerServerPolicy";
/// The policy name the setup guide uses for the user's policy.
pub const CLIENT_POLICY_NAME: &str = "SSHSageMakerClientPolicy";

/// The instance tag naming the user a SageMaker instance belongs to.
pub const OWNER_TAG: &str = "SSHOwner";

/// Where the documents apply.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    pub account: String,
    /// The `KEY` of `--team-tag KEY`.
    pub team_tag: Option<String>,
}

/// Resuming and ending one's own sessions, whatever they were started on:
/// the statement every client policy ends with.
pub fn resume_and_end_own_sessions(partition: &str, account: &str) -> serde_json::Value {
    serde_json::json!({
        "Sid": "ResumeAndEndOwnSessions",
        "Effect": "Allow",
        "Action": ["ssm:ResumeSession", "ssm:TerminateSession"],
        "Resource": format!("arn:{partition}:ssm:*:{account}:session/*"),
        "Condition": {"StringLike": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}
    })
}

#[cfg(test)]
impl Scope {
    /// The scope the policy tests use: account 123456789012 in `aws`.
    pub fn example(team: Option<&str>) -> Scope {
        Scope {
            partition: "aws".into(),
            account: "123456789012".into(),
            team_tag: team.map(Into::into),
        }
    }
}

/// The partition of an ARN (`arn:aws-cn:…` → `aws-cn`), `aws` when unclear.
pub fn partition_of(arn: &str) -> &str {
    arn.split(':')
        .nth(1)
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
}

/// The partition of a region name.
pub fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

const AGENT_ACTIONS: [&str; 10] = [
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
    "ssm:ListAssociations",
    "ssm:ListInstanceAssociations",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
];

const CLIENT_READ_ACTIONS: [&str; 4] = [
    "logs:GetQueryResults",
    "ssm:DescribeInstanceInformation",
    "ssm:ListTagsForResource",
    "ssm:GetCommandInvocation",
];

/// The trust policy of the execution role: SageMaker runs it, and SSM
/// assumes it for the managed instance the container registers as.
pub fn trust() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole"
            },
            {
                "Effect": "Allow",
                "Principal": {"Service": "ssm.amazonaws.com"},
                "Action": "sts:AssumeRole"
            }
        ]
    })
}

/// The services the execution role must trust.
pub const TRUSTED_SERVICES: [&str; 2] = ["sagemaker.amazonaws.com", "ssm.amazonaws.com"];

/// The statements KMS-encrypted sessions need (plugin `streaming.go`
/// GenerateDataKey, agent `blockcipher.go` Decrypt): the first in the users'
/// policy, the second in the instance's (execution) role.
pub fn kms(key_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "UsersEncryptSessionsWithTheKey",
                "Effect": "Allow",
                "Action": "kms:GenerateDataKey",
                "Resource": key_arn
            },
            {
                "Sid": "InstanceRoleDecryptsSessionKeys",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": key_arn
            }
        ]
    })
}

fn managed_instances(scope: &Scope) -> String {
    format!(
        "arn:{}:ssm:*:{}:managed-instance/mi-*",
        scope.partition, scope.account
    )
}

pub(crate) fn team_condition(operator_key: &str, key: &str) -> Value {
    json!({ "StringEquals": { format!("{operator_key}/{key}"): format!("${{aws:PrincipalTag/{key}}}") } })
}

/// The execution role's policy (`SSHSageMakerServerPolicy`).
pub fn server(scope: &Scope, role_arn: &str) -> Value {
    let mut statements = vec![
        json!({
            "Sid": "PassThisRoleToSsmOnly",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}}
        }),
        json!({
            "Sid": "TagNewActivationsOnly",
            "Effect": "Allow",
            "Action": "ssm:AddTagsToResource",
            "Resource": role_arn
        }),
    ];
    let mut agent: Vec<&str> = AGENT_ACTIONS.to_vec();
    match &scope.team_tag {
        None => agent.push("ssm:CreateActivation"),
        Some(key) => {
            let mut statement = json!({
                "Sid": "ActivateForOwnTeamOnly",
                "Effect": "Allow",
                "Action": "ssm:CreateActivation",
                "Resource": "*",
            });
            statement["Condition"] = team_condition("aws:RequestTag", key);
            statements.push(statement);
        }
    }
    agent.sort_unstable();
    statements.push(json!({
        "Sid": "SsmAgent",
        "Effect": "Allow",
        "Action": agent,
        "Resource": "*"
    }));
    let mut update = json!({
        "Sid": "UpdateOwnedInstances",
        "Effect": "Allow",
        "Action": "ssm:UpdateInstanceInformation",
        "Resource": managed_instances(scope),
        "Condition": {"StringLike": {format!("ssm:resourceTag/{OWNER_TAG}"): "*"}}
    });
    if let Some(key) = &scope.team_tag {
        update["Condition"]["StringEquals"] =
            team_condition("ssm:resourceTag", key)["StringEquals"].clone();
    }
    statements.push(update);
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The user's policy (`SSHSageMakerClientPolicy`).
pub fn client(scope: &Scope) -> Value {
    let (partition, account) = (&scope.partition, &scope.account);
    let reach = match &scope.team_tag {
        None => json!({"StringEquals": {format!("ssm:resourceTag/{OWNER_TAG}"): "${aws:userid}"}}),
        Some(key) => team_condition("ssm:resourceTag", key),
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FindInstancesAndCommandResults",
                "Effect": "Allow",
                "Action": CLIENT_READ_ACTIONS,
                "Resource": "*"
            },
            {
                "Sid": if scope.team_tag.is_some() { "ReachOwnTeamInstancesOnly" } else { "ReachOwnInstancesOnly" },
                "Effect": "Allow",
                "Action": ["ssm:SendCommand", "ssm:StartSession"],
                "Resource": managed_instances(scope),
                "Condition": reach
            },
            {
                "Sid": "TerminateOwnSessions",
                "Effect": "Allow",
                "Action": "ssm:TerminateSession",
                "Resource": format!("arn:{partition}:ssm:*:{account}:session/*"),
                "Condition": {"StringLike": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}
            },
            {
                "Sid": "SshSessionDocument",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": format!("arn:{partition}:ssm:*::document/AWS-StartSSHSession")
            },
            {
                "Sid": "KeyPushDocument",
                "Effect": "Allow",
                "Action": "ssm:SendCommand",
                "Resource": format!("arn:{partition}:ssm:*::document/AWS-RunShellScript")
            },
            {
                "Sid": "FindEndpointInstancesInLogs",
                "Effect": "Allow",
                "Action": "logs:StartQuery",
                "Resource": format!("arn:{partition}:logs:*:{account}:log-group:/aws/sagemaker/*")
            }
        ]
    })
}

/// Who a requirement is evaluated for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `aws:userid` of the user who will connect (the instance's owner).
    pub user_id: String,
    /// Tags of the principal (`aws:PrincipalTag/<key>`).
    pub tags: Vec<(String, String)>,
}

/// What a request probe expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// SSH needs this request to be allowed.
    Allowed,
    /// Allowing this request is a security gap (warned about, not failed).
    Denied,
}

/// One request doctor evaluates, with why it matters.
#[derive(Debug, Clone)]
pub struct Requirement {
    pub request: Request,
    pub expect: Expect,
    pub why: &'static str,
}

const SOMEONE_ELSE: &str = "AROAEXAMPLEOTHERUSER:someone-else";

fn instance_arn(scope: &Scope, region: &str) -> String {
    format!(
        "arn:{}:ssm:{region}:{}:managed-instance/mi-0123456789abcdef0",
        scope.partition, scope.account
    )
}

/// Adds the tags an instance of `principal`'s team carries (team variant),
/// or of another team when `own` is false.
fn with_team(request: Request, scope: &Scope, principal: &Principal, own: bool) -> Request {
    let mut request = with_principal_tags(request, principal);
    if let Some(key) = &scope.team_tag {
        let team = principal
            .tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        match (own, team) {
            (true, Some(team)) => request.set(&format!("ssm:resourceTag/{key}"), team),
            (false, _) => request.set(&format!("ssm:resourceTag/{key}"), "another-team"),
            (true, None) => {}
        }
    }
    request
}

fn with_principal_tags(mut request: Request, principal: &Principal) -> Request {
    for (key, value) in &principal.tags {
        request.set(&format!("aws:PrincipalTag/{key}"), value);
    }
    request
}

/// What the execution role `role_arn` must be allowed to do in `region`,
/// for instances owned by `owner` (its tags are the role's tags).
pub fn server_requirements(
    scope: &Scope,
    region: &str,
    role_arn: &str,
    owner: &Principal,
) -> Vec<Requirement> {
    let mut out = vec![
        Requirement {
            request: Request::new("iam:PassRole", role_arn)
                .with("iam:PassedToService", "ssm.amazonaws.com"),
            expect: Expect::Allowed,
            why: "the container passes its role to SSM for the managed instance",
        },
        Requirement {
            request: Request::new("iam:PassRole", role_arn)
                .with("iam:PassedToService", "ec2.amazonaws.com"),
            expect: Expect::Denied,
            why: "the role should be passable to SSM only",
        },
        Requirement {
            request: Request::new("ssm:AddTagsToResource", role_arn),
            expect: Expect::Allowed,
            why: "tags the activation with SSHOwner and the job's name",
        },
    ];
    let mut activation = Request::new("ssm:CreateActivation", "*");
    if let Some(key) = &scope.team_tag {
        if let Some((_, team)) = owner.tags.iter().find(|(k, _)| k == key) {
            activation.set(&format!("aws:RequestTag/{key}"), team);
        }
    }
    out.push(Requirement {
        request: with_principal_tags(activation, owner),
        expect: Expect::Allowed,
        why: "registers the container as a managed instance",
    });
    for action in AGENT_ACTIONS {
        out.push(Requirement {
            request: Request::new(action, "*"),
            expect: Expect::Allowed,
            why: "the SSM agent's control and data channels",
        });
    }
    let update = Request::new(
        "ssm:UpdateInstanceInformation",
        &instance_arn(scope, region),
    )
    .with(&format!("ssm:resourceTag/{OWNER_TAG}"), &owner.user_id);
    out.push(Requirement {
        request: with_team(update, scope, owner, true),
        expect: Expect::Allowed,
        why: "the agent reports its instance as online",
    });
    out
}

/// What a user `principal` must be allowed to do in `region` to connect to
/// their own instances, and what they must not do to others'.
pub fn client_requirements(scope: &Scope, region: &str, principal: &Principal) -> Vec<Requirement> {
    let partition = &scope.partition;
    let mut out: Vec<Requirement> = CLIENT_READ_ACTIONS
        .iter()
        .map(|action| Requirement {
            request: Request::new(action, "*"),
            expect: Expect::Allowed,
            why: "finds instances and reads command results",
        })
        .collect();
    let instance = instance_arn(scope, region);
    for (action, why) in [
        ("ssm:StartSession", "opens the SSH session"),
        ("ssm:SendCommand", "pushes the public key"),
    ] {
        let own = Request::new(action, &instance)
            .with("aws:userid", &principal.user_id)
            .with(&format!("ssm:resourceTag/{OWNER_TAG}"), &principal.user_id);
        out.push(Requirement {
            request: with_team(own, scope, principal, true),
            expect: Expect::Allowed,
            why,
        });
        let others = Request::new(action, &instance)
            .with("aws:userid", &principal.user_id)
            .with(&format!("ssm:resourceTag/{OWNER_TAG}"), SOMEONE_ELSE);
        out.push(Requirement {
            request: with_team(others, scope, principal, false),
            expect: Expect::Denied,
            why: "without an ownership condition any user reaches any other user's instance",
        });
    }
    out.extend([
        Requirement {
            request: Request::new(
                "ssm:StartSession",
                &format!("arn:{partition}:ssm:{region}::document/AWS-StartSSHSession"),
            ),
            expect: Expect::Allowed,
            why: "the SSH session document",
        },
        Requirement {
            request: Request::new(
                "ssm:SendCommand",
                &format!("arn:{partition}:ssm:{region}::document/AWS-RunShellScript"),
            ),
            expect: Expect::Allowed,
            why: "the key-push document",
        },
        Requirement {
            request: Request::new(
                "ssm:TerminateSession",
                &format!(
                    "arn:{partition}:ssm:{region}:{}:session/{}-0123456789abcdef0",
                    scope.account, principal.user_id
                ),
            )
            .with("aws:userid", &principal.user_id)
            .with(
                "ssm:resourceTag/aws:ssmmessages:session-id",
                &principal.user_id,
            ),
            expect: Expect::Allowed,
            why: "ends the session when ssh exits",
        },
        Requirement {
            request: Request::new(
                "logs:StartQuery",
                &format!(
                    "arn:{partition}:logs:{region}:{}:log-group:/aws/sagemaker/Endpoints/example",
                    scope.account
                ),
            ),
            expect: Expect::Allowed,
            why: "finds inference endpoint instances in their logs",
        },
    ]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::policy::eval::{evaluate, Decision, Policy};

    const ROLE: &str = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole";

    fn scope(team: Option<&str>) -> Scope {
        Scope {
            partition: "aws".into(),
            account: "123456789012".into(),
            team_tag: team.map(str::to_owned),
        }
    }

    fn alice(team: Option<&str>) -> Principal {
        Principal {
            user_id: "AROAEXAMPLE:alice".into(),
            tags: team
                .map(|t| ("team".to_owned(), t.to_owned()))
                .into_iter()
                .collect(),
        }
    }

    fn actions(document: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for statement in document["Statement"].as_array().unwrap() {
            match &statement["Action"] {
                Value::String(action) => {
                    out.insert(action.clone());
                }
                Value::Array(list) => {
                    out.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()))
                }
                other => panic!("unexpected Action {other}"),
            }
        }
        out
    }

    fn required(requirements: &[Requirement]) -> BTreeSet<String> {
        requirements
            .iter()
            .filter(|r| r.expect == Expect::Allowed)
            .map(|r| r.request.action.clone())
            .collect()
    }

    fn check_all(document: &Value, requirements: &[Requirement]) {
        let policies = vec![Policy::from_value("doc", document).unwrap()];
        for requirement in requirements {
            let decision = evaluate(&policies, &requirement.request);
            let want = match requirement.expect {
                Expect::Allowed => Decision::Allow,
                Expect::Denied => Decision::ImplicitDeny,
            };
            assert_eq!(decision, want, "{:?}", requirement.request);
        }
    }

    #[test]
    fn documents_grant_exactly_what_is_required() {
        for team in [None, Some("team")] {
            let scope = scope(team);
            let owner = alice(team.map(|_| "a"));
            let server_doc = server(&scope, ROLE);
            let server_req = server_requirements(&scope, "eu-west-1", ROLE, &owner);
            assert_eq!(actions(&server_doc), required(&server_req));
            check_all(&server_doc, &server_req);

            let client_doc = client(&scope);
            let client_req = client_requirements(&scope, "eu-west-1", &owner);
            assert_eq!(actions(&client_doc), required(&client_req));
            check_all(&client_doc, &client_req);
        }
    }

    #[test]
    fn team_variant_isolates_teams() {
        let scope = scope(Some("team"));
        let policies = vec![Policy::from_value("c", &client(&scope)).unwrap()];
        let instance = "arn:aws:ssm:eu-west-1:123456789012:managed-instance/mi-1";
        let start = |team: &str| {
            Request::new("ssm:StartSession", instance)
                .with("aws:PrincipalTag/team", "a")
                .with("ssm:resourceTag/team", team)
        };
        assert_eq!(evaluate(&policies, &start("a")), Decision::Allow);
        assert_eq!(evaluate(&policies, &start("b")), Decision::ImplicitDeny);
        // A principal without the tag reaches nothing.
        let untagged = Request::new("ssm:StartSession", instance).with("ssm:resourceTag/team", "a");
        assert_eq!(evaluate(&policies, &untagged), Decision::ImplicitDeny);
    }

    #[test]
    fn partitions() {
        assert_eq!(partition_of("arn:aws-cn:iam::1:role/x"), "aws-cn");
        assert_eq!(partition_of("nonsense"), "aws");
        assert_eq!(partition_of_region("cn-north-1"), "aws-cn");
        assert_eq!(partition_of_region("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_of_region("eu-west-1"), "aws");
        let cn = Scope {
            partition: "aws-cn".into(),
            ..scope(None)
        };
        assert!(client(&cn)
            .to_string()
            .contains("arn:aws-cn:ssm:*::document/AWS-StartSSHSession"));
    }
}
