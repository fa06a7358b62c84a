//! `sm-ssh policy` end to end: the printed documents are valid JSON, say
//! what the IAM setup guide says (statement for statement, ignoring Sids),
//! and the team variant isolates teams by principal tags.
//! (That doctor passes on a role carrying them is tests/doctor.rs.)

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};
use sm_ssh_integration::world::{Identity, Seed};

const ROLE: &str = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole";

fn env() -> Env {
    Env::start(seed_with(Vec::new()))
}

/// `sm-ssh policy <args>`: exit 0 and one JSON document on stdout.
#[track_caller]
fn policy(env: &Env, args: &[&str]) -> Value {
    let output = env.run(["policy"].iter().chain(args));
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stderr.is_empty(), "{stderr}");
    let document: Value = serde_json::from_str(&stdout).expect("valid JSON on stdout");
    assert_eq!(document["Version"], "2012-10-17");
    document
}

/// A statement without its Sid, with its Action list sorted: what IAM
/// evaluates, whatever the order and names.
fn normalised(document: &Value) -> BTreeSet<String> {
    document["Statement"]
        .as_array()
        .expect("Statement is a list")
        .iter()
        .map(|statement| {
            let mut statement = statement.clone();
            let object = statement.as_object_mut().unwrap();
            object.remove("Sid");
            if let Some(Value::Array(actions)) = object.get_mut("Action") {
                actions.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                if actions.len() == 1 {
                    let only = actions[0].clone();
                    object.insert("Action".into(), only);
                }
            }
            statement.to_string()
        })
        .collect()
}

/// Every action a document allows.
fn actions(document: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for statement in document["Statement"].as_array().unwrap() {
        match &statement["Action"] {
            Value::String(action) => {
                out.insert(action.clone());
            }
            Value::Array(list) => out.extend(list.iter().map(|a| a.as_str().unwrap().to_owned())),
            other => panic!("unexpected Action {other}"),
        }
    }
    out
}

#[test]
fn trust_lets_sagemaker_and_ssm_assume_the_role() {
    let env = env();
    let trust = policy(&env, &["trust"]);
    let services: BTreeSet<&str> = trust["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|s| {
            assert_eq!(s["Effect"], "Allow");
            assert_eq!(s["Action"], "sts:AssumeRole");
        })
        .map(|s| s["Principal"]["Service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["sagemaker.amazonaws.com", "ssm.amazonaws.com"].into()
    );
}

/// The setup guide's SSHSageMakerServerPolicy for [`ROLE`].
fn guide_server_policy() -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Condition": {"StringEquals": {"iam:PassedToService": "ssm.amazonaws.com"}},
         "Action": "iam:PassRole", "Resource": ROLE, "Effect": "Allow"},
        {"Action": "ssm:AddTagsToResource", "Resource": ROLE, "Effect": "Allow"},
        {"Action": [
            "ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage",
            "ec2messages:GetMessages", "ec2messages:SendReply", "ssm:CreateActivation",
            "ssm:ListAssociations", "ssm:ListInstanceAssociations",
            "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"],
         "Resource": "*", "Effect": "Allow"},
        {"Condition": {"StringLike": {"ssm:resourceTag/SSHOwner": "*"}},
         "Action": ["ssm:UpdateInstanceInformation"],
         "Resource": "arn:aws:ssm:*:123456789012:managed-instance/mi-*", "Effect": "Allow"}
    ]})
}

/// The setup guide's SSHSageMakerClientPolicy for account 123456789012.
fn guide_client_policy(account: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Action": ["logs:GetQueryResults", "ssm:DescribeInstanceInformation",
                    "ssm:ListTagsForResource", "ssm:GetCommandInvocation"],
         "Resource": "*", "Effect": "Allow"},
        {"Condition": {"StringEquals": {"ssm:resourceTag/SSHOwner": "${aws:userid}"}},
         "Action": ["ssm:SendCommand", "ssm:StartSession"],
         "Resource": format!("arn:aws:ssm:*:{account}:managed-instance/mi-*"), "Effect": "Allow"},
        {"Condition": {"StringLike": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}},
         "Action": "ssm:TerminateSession",
         "Resource": format!("arn:aws:ssm:*:{account}:session/*"), "Effect": "Allow"},
        {"Action": "ssm:StartSession", "Resource": "arn:aws:ssm:*::document/AWS-StartSSHSession", "Effect": "Allow"},
        {"Action": "ssm:SendCommand", "Resource": "arn:aws:ssm:*::document/AWS-RunShellScript", "Effect": "Allow"},
        {"Action": "logs:StartQuery",
         "Resource": format!("arn:aws:logs:*:{account}:log-group:/aws/sagemaker/*"), "Effect": "Allow"}
    ]})
}

#[test]
fn server_is_the_setup_guides_policy_for_the_role() {
    let env = env();
    let server = policy(&env, &["server", "--role", ROLE]);
    assert_eq!(normalised(&server), normalised(&guide_server_policy()));
}

#[test]
fn client_is_the_setup_guides_policy_for_the_account() {
    let env = env();
    let client = policy(&env, &["client", "--account", "123456789012"]);
    assert_eq!(
        normalised(&client),
        normalised(&guide_client_policy("123456789012"))
    );
}

#[test]
fn client_without_account_asks_sts() {
    let env = Env::start(Seed {
        identity: Identity {
            account: "210987654321".into(),
            arn: "arn:aws:sts::210987654321:assumed-role/Admin/bob".into(),
            user_id: "AROAEXAMPLEADMIN:bob".into(),
        },
        ..seed_with(Vec::new())
    });
    let client = policy(&env, &["client"]);
    assert_eq!(
        normalised(&client),
        normalised(&guide_client_policy("210987654321"))
    );

    // When STS refuses, the error says how to do without it.
    env.fake.deny_action("sts:GetCallerIdentity", true);
    let output = env.run(["policy", "client"]);
    let (stdout, stderr) = text(&output);
    assert_ne!(output.status.code(), Some(0));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("pass --account <id>"), "{stderr}");
}

#[test]
fn the_team_variant_conditions_on_principal_tags() {
    let env = env();
    let server = policy(&env, &["server", "--role", ROLE, "--team-tag", "team"]);
    let client = policy(
        &env,
        &["client", "--account", ACCOUNT, "--team-tag", "team"],
    );
    // The same actions as the per-user documents: doctor checks the same set.
    assert_eq!(actions(&server), actions(&guide_server_policy()));
    assert_eq!(actions(&client), actions(&guide_client_policy(ACCOUNT)));

    // The conditioned statement granting `action`.
    let statement_with = |document: &Value, action: &str| -> Value {
        document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                let listed = match &s["Action"] {
                    Value::Array(list) => list.iter().any(|a| a == action),
                    single => single == action,
                };
                listed && s.get("Condition").is_some()
            })
            .cloned()
            .unwrap_or_else(|| panic!("no conditioned statement for {action} in {document:#}"))
    };
    assert_eq!(
        statement_with(&server, "ssm:CreateActivation")["Condition"],
        json!({"StringEquals": {"aws:RequestTag/team": "${aws:PrincipalTag/team}"}})
    );
    assert_eq!(
        statement_with(&server, "ssm:UpdateInstanceInformation")["Condition"]["StringEquals"],
        json!({"ssm:resourceTag/team": "${aws:PrincipalTag/team}"})
    );
    let reach = statement_with(&client, "ssm:StartSession");
    assert_eq!(
        reach["Condition"],
        json!({"StringEquals": {"ssm:resourceTag/team": "${aws:PrincipalTag/team}"}})
    );
    assert_eq!(
        reach["Resource"],
        "arn:aws:ssm:*:123456789012:managed-instance/mi-*"
    );
    // No per-user ownership left in the team variant's reach.
    assert!(!reach.to_string().contains("aws:userid"), "{reach}");
}

#[test]
fn partitions_follow_the_role_and_region() {
    let env = env();
    let role = "arn:aws-cn:iam::123456789012:role/Exec";
    let server = policy(&env, &["server", "--role", role]);
    assert!(
        server
            .to_string()
            .contains("arn:aws-cn:ssm:*:123456789012:managed-instance/mi-*"),
        "{server}"
    );
    let client = policy(
        &env,
        &["--region", "cn-north-1", "client", "--account", ACCOUNT],
    );
    let text = client.to_string();
    assert!(
        text.contains("arn:aws-cn:ssm:*::document/AWS-StartSSHSession"),
        "{text}"
    );
    assert!(!text.contains("arn:aws:"), "{text}");
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let env = env();
    for (args, reason) in [
        (
            vec!["server", "--role", "AmazonSageMaker-ExecutionRole"],
            "is not an IAM role ARN",
        ),
        (
            vec!["server", "--role", "arn:aws:iam::123456789012:user/alice"],
            "is not an IAM role ARN",
        ),
        (
            vec!["client", "--account", "12345"],
            "is not a 12-digit AWS account ID",
        ),
        (
            vec!["server", "--role", ROLE, "--team-tag", "team}"],
            "is not a usable tag key",
        ),
    ] {
        let output = env.run(["policy"].iter().chain(&args));
        let (stdout, stderr) = text(&output);
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn space_policy_grants_start_session_on_own_spaces_and_the_enable_calls() {
    let env = env();
    let space = policy(&env, &["space", "--account", "123456789012"]);
    let granted = actions(&space);
    for action in [
        "sagemaker:StartSession",
        "sagemaker:DescribeSpace",
        "sagemaker:ListSpaces",
        "sagemaker:DescribeApp",
        "sagemaker:UpdateSpace",
        "sagemaker:CreateApp",
        "sagemaker:DeleteApp",
    ] {
        assert!(granted.contains(action), "{action} missing: {granted:?}");
    }
    let start = space["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Action"] == "sagemaker:StartSession")
        .unwrap();
    assert_eq!(
        start["Resource"],
        "arn:aws:sagemaker:*:123456789012:space/*"
    );
    assert!(
        start["Condition"].is_object(),
        "per-user isolation: {start}"
    );
    let team = policy(
        &env,
        &["space", "--account", "123456789012", "--team-tag", "Team"],
    );
    assert!(team.to_string().contains("sagemaker:ResourceTag/Team"));
    assert!(team.to_string().contains("${aws:PrincipalTag/Team}"));
}
