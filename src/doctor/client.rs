//! Check 5: the caller's own permissions to find instances, push a key and
//! open sessions — and whether they reach other users' instances too.

use aws_config::SdkConfig;

use super::identity::Me;
use super::report::Check;
use super::role::Evaluation;
use super::{iam, simulate, Failure, Options};
use crate::policy::documents::{self, Principal, Scope};
use crate::policy::eval::Policy;

/// The IAM principal behind a caller ARN.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Root,
    User(String),
    Role(String),
    Other,
}

pub(super) fn kind_of(arn: &str) -> Kind {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or("");
    if resource == "root" {
        return Kind::Root;
    }
    match resource.split_once('/') {
        Some(("user", path)) => Kind::User(iam::name_from_arn(path).to_owned()),
        Some(("assumed-role", rest)) => {
            Kind::Role(rest.split('/').next().unwrap_or(rest).to_owned())
        }
        Some(("role", path)) => Kind::Role(iam::name_from_arn(path).to_owned()),
        _ => Kind::Other,
    }
}

pub async fn check(sdk: &SdkConfig, me: &Me, region: &str, options: &Options) -> Check {
    let client = aws_sdk_iam::Client::new(sdk);
    let scope = Scope {
        partition: documents::partition_of(&me.arn).to_owned(),
        account: me.account.clone(),
        team_tag: options.team_tag.clone(),
    };
    let team = options
        .team_tag
        .as_ref()
        .map(|key| format!(" --team-tag {key}"))
        .unwrap_or_default();
    let document = format!("\"$(sm-ssh policy client --account {}{team})\"", me.account);
    let (policies, tags, fix, source) = match kind_of(&me.arn) {
        Kind::Root => {
            return Check::warn(
                "client-policy",
                "you are the account's root user: everything is allowed",
                "connect as an IAM user or role with the client policy: sm-ssh policy client",
            )
        }
        Kind::Other => {
            return Check::skip(
                "client-policy",
                format!("cannot read the policies of {} (not an IAM user or role)", me.arn),
            )
        }
        Kind::User(name) => match iam::user_policies(&client, &name).await {
            Ok((policies, tags)) => (
                policies,
                tags,
                format!(
                    "aws iam put-user-policy --user-name {name} --policy-name {} --policy-document {document}",
                    documents::CLIENT_POLICY_NAME
                ),
                me.arn.clone(),
            ),
            Err(failure) => return failure.skip("client-policy"),
        },
        Kind::Role(name) => match role_policies(&client, &name).await {
            Ok((policies, tags, arn)) => (
                policies,
                tags,
                format!(
                    "aws iam put-role-policy --role-name {name} --policy-name {} --policy-document {document}",
                    documents::CLIENT_POLICY_NAME
                ),
                arn,
            ),
            Err(failure) => return failure.skip("client-policy"),
        },
    };
    let principal = Principal {
        user_id: me.user_id.clone(),
        tags,
    };
    let requirements = documents::client_requirements(&scope, region, &principal);
    // The simulator takes the role, not the assumed-role session.
    let simulation = simulate::run(sdk, &source, &requirements).await;
    Evaluation::of(&policies, &requirements).into_check("client-policy", &me.arn, fix, &simulation)
}

/// A role's policies, tags and ARN.
pub(super) async fn role_policies(
    client: &aws_sdk_iam::Client,
    name: &str,
) -> Result<(Vec<Policy>, Vec<(String, String)>, String), Failure> {
    let role = iam::role(client, name).await?;
    let policies = iam::role_policies(client, name).await?;
    Ok((policies, role.tags, role.arn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_from_caller_arns() {
        assert_eq!(kind_of("arn:aws:iam::1:root"), Kind::Root);
        assert_eq!(
            kind_of("arn:aws:iam::1:user/team/alice"),
            Kind::User("alice".into())
        );
        assert_eq!(
            kind_of("arn:aws:sts::1:assumed-role/Developer/alice@example.com"),
            Kind::Role("Developer".into())
        );
        assert_eq!(kind_of("arn:aws:sts::1:federated-user/bob"), Kind::Other);
    }
}
