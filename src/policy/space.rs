//! The connecting user's policy for Studio spaces (`sm-ssh policy space`):
//! find spaces and their apps, `sagemaker:StartSession` on one's own spaces
//! only, and the calls `sm-ssh space enable` makes. Per user, a space is
//! one's own when Studio's `sagemaker:user-profile-arn` tag names a profile
//! called like the IAM user; per team (`--team-tag KEY`), when the space's
//! KEY tag equals the principal's (the ABAC pattern of the SageMaker blog's
//! "Studio for teams" setup). Roles have no `aws:username`: for role
//! principals (SSO permission sets, federated roles) `--profile-tag KEY`
//! names the principal tag (a session tag from the identity provider, or a
//! tag on the role) that holds the caller's Studio user profile name.

use serde_json::{json, Value};

use super::documents::{team_condition, Scope};

/// Read-only calls sm-ssh makes to find a space and see whether it runs.
pub const READ_ACTIONS: [&str; 5] = [
    "sagemaker:ListDomains",
    "sagemaker:ListSpaces",
    "sagemaker:DescribeSpace",
    "sagemaker:ListApps",
    "sagemaker:DescribeApp",
];

/// What `sm-ssh space enable` changes.
pub const ENABLE_ACTIONS: [&str; 3] = [
    "sagemaker:UpdateSpace",
    "sagemaker:DeleteApp",
    "sagemaker:CreateApp",
];

/// The ARN pattern of every space in the account.
pub fn spaces(scope: &Scope) -> String {
    format!(
        "arn:{}:sagemaker:*:{}:space/*",
        scope.partition, scope.account
    )
}

/// Studio's tag on a private space: its owner's user profile ARN.
pub const OWNER_TAG: &str = "sagemaker:user-profile-arn";

/// Whose profile a per-user policy matches the owner tag against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// The IAM user's name (`${aws:username}`).
    Username,
    /// The principal tag `KEY` (`${aws:PrincipalTag/KEY}`), for roles.
    PrincipalTag(&'a str),
}

/// The condition that makes a space the caller's own.
pub fn own_space_condition(scope: &Scope, owner: Owner) -> Value {
    let variable = match owner {
        Owner::Username => "${aws:username}".to_string(),
        Owner::PrincipalTag(key) => format!("${{aws:PrincipalTag/{key}}}"),
    };
    match &scope.team_tag {
        Some(key) => team_condition("sagemaker:ResourceTag", key),
        None => json!({"StringLike": {
            format!("sagemaker:ResourceTag/{OWNER_TAG}"): format!(
                "arn:{}:sagemaker:*:{}:user-profile/*/{variable}",
                scope.partition, scope.account
            )
        }}),
    }
}

pub fn client(scope: &Scope, owner: Owner) -> Value {
    let (partition, account) = (&scope.partition, &scope.account);
    let own = own_space_condition(scope, owner);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FindSpacesAndApps",
                "Effect": "Allow",
                "Action": READ_ACTIONS,
                "Resource": "*"
            },
            {
                "Sid": if scope.team_tag.is_some() { "ConnectToOwnTeamSpacesOnly" } else { "ConnectToOwnSpacesOnly" },
                "Effect": "Allow",
                "Action": "sagemaker:StartSession",
                "Resource": spaces(scope),
                "Condition": own
            },
            {
                "Sid": "EnableRemoteAccessOnOwnSpaces",
                "Effect": "Allow",
                "Action": ENABLE_ACTIONS,
                "Resource": [
                    spaces(scope),
                    format!("arn:{partition}:sagemaker:*:{account}:app/*")
                ],
                "Condition": own
            },
            super::documents::resume_and_end_own_sessions(partition, account)
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(team: Option<&str>) -> Scope {
        Scope::example(team)
    }

    #[test]
    fn start_session_is_limited_to_own_spaces() {
        let document = client(&scope(None), Owner::Username);
        let start = &document["Statement"][1];
        assert_eq!(start["Action"], "sagemaker:StartSession");
        assert_eq!(
            start["Resource"],
            "arn:aws:sagemaker:*:123456789012:space/*"
        );
        assert!(start["Condition"]["StringLike"]
            ["sagemaker:ResourceTag/sagemaker:user-profile-arn"]
            .as_str()
            .unwrap()
            .ends_with("/${aws:username}"));
        let role = client(&scope(None), Owner::PrincipalTag("UserProfile"));
        assert_eq!(
            role["Statement"][1]["Condition"]["StringLike"]
                ["sagemaker:ResourceTag/sagemaker:user-profile-arn"],
            "arn:aws:sagemaker:*:123456789012:user-profile/*/${aws:PrincipalTag/UserProfile}"
        );
        let team = client(&scope(Some("Team")), Owner::Username);
        assert_eq!(
            team["Statement"][1]["Condition"]["StringEquals"]["sagemaker:ResourceTag/Team"],
            "${aws:PrincipalTag/Team}"
        );
    }
}
