//! `doctor --space`: what SageMaker remote access to one Studio space needs.
//! The space's own settings (remote access, app, instance type, image) from
//! DescribeSpace and DescribeApp; the caller's `sagemaker:StartSession` on
//! its ARN, locally evaluated and simulated, and whether the caller could
//! reach someone else's space too; the domain's network (VPC-only domains
//! need the SSM endpoints).

use aws_config::SdkConfig;

use super::client::{kind_of, role_policies, Kind};
use super::identity::Me;
use super::report::Check;
use super::role::Evaluation;
use super::{iam, simulate, Failure, Options};
use crate::path::space::{self, SpaceInfo, TOO_SMALL};
use crate::policy::documents::{self, Expect, Requirement, Scope};
use crate::policy::eval::Request;
use crate::policy::space::OWNER_TAG;
use crate::target::Target;

pub async fn checks(sdk: &SdkConfig, me: &Me, name: &str, options: &Options) -> Vec<Check> {
    let target = match Target::parse(name) {
        Ok(Target::Space(target)) => target,
        _ => {
            return vec![Check::fail(
                "space",
                format!("{name} is not a Studio space name"),
                "name it <space>.<domain>.space.sagemaker, <space>.space.sagemaker or by its ARN",
            )]
        }
    };
    let sdk = space::config_for(sdk, &target);
    let client = aws_sdk_sagemaker::Client::new(&sdk);
    let info = match space::describe(&client, &target).await {
        Ok(info) => info,
        Err(error) => {
            return vec![Check::skip(
                "space",
                crate::error::describe(&error, options.profile.as_deref()).1,
            )]
        }
    };
    let mut checks = settings(&info);
    checks.push(start_session(&sdk, me, &info, options).await);
    checks.push(super::space_network::check(&sdk, &client, &info).await);
    checks
}

/// Remote access, app, instance type and image, from what SageMaker said.
fn settings(info: &SpaceInfo) -> Vec<Check> {
    let name = info.host_name();
    let mut checks = vec![if info.remote_access {
        Check::pass(
            "space-remote-access",
            format!("{name}: RemoteAccess is ENABLED"),
        )
    } else {
        Check::fail(
            "space-remote-access",
            format!("{name}: RemoteAccess is DISABLED"),
            format!("sm-ssh space enable {name}"),
        )
    }];
    checks.push(if info.is_running() {
        Check::pass(
            "space-app",
            format!("{name}: app {} is InService", space::APP_NAME),
        )
    } else {
        Check::fail(
            "space-app",
            format!(
                "{name}: app {} is {}",
                space::APP_NAME,
                info.app_status.as_deref().unwrap_or("not started")
            ),
            format!("start the space in Studio, or: sm-ssh space enable {name} --yes"),
        )
    });
    checks.push(if TOO_SMALL.contains(&info.instance_type.as_str()) {
        Check::fail(
            "space-instance-type",
            format!(
                "{name} runs on {}, under 8 GiB of memory",
                info.instance_type
            ),
            "give the space an instance type with 8 GiB or more (e.g. ml.t3.large) in Studio",
        )
    } else {
        Check::pass(
            "space-instance-type",
            format!("{name} runs on {}", info.instance_type),
        )
    });
    checks.push(super::space_image::check(info));
    checks
}

/// The caller's sagemaker:StartSession on this space, and on another user's.
async fn start_session(sdk: &SdkConfig, me: &Me, info: &SpaceInfo, options: &Options) -> Check {
    let scope = Scope {
        partition: documents::partition_of(&me.arn).to_owned(),
        account: me.account.clone(),
        team_tag: options.team_tag.clone(),
    };
    let client = aws_sdk_iam::Client::new(sdk);
    let kind = kind_of(&me.arn);
    let username = match &kind {
        Kind::User(name) => Some(name.clone()),
        _ => None,
    };
    let (policies, tags, source, fix_target) = match kind {
        Kind::User(name) => match iam::user_policies(&client, &name).await {
            Ok((policies, tags)) => (
                policies,
                tags,
                me.arn.clone(),
                format!("put-user-policy --user-name {name}"),
            ),
            Err(failure) => return failure.skip("space-start-session"),
        },
        Kind::Role(name) => match role_policies(&client, &name).await {
            Ok((policies, tags, arn)) => (
                policies,
                tags,
                arn,
                format!("put-role-policy --role-name {name}"),
            ),
            Err(failure) => return failure.skip("space-start-session"),
        },
        Kind::Root | Kind::Other => {
            return Failure::Other(format!("cannot read the policies of {}", me.arn))
                .skip("space-start-session")
        }
    };
    let caller = Caller {
        user_id: &me.user_id,
        username: username.as_deref(),
        tags: &tags,
    };
    let sagemaker = aws_sdk_sagemaker::Client::new(sdk);
    let (space_tags, tags_note) =
        space_tags(&sagemaker, info, profile_arn(&scope, info, &info.owner)).await;
    let requirements = requirements(&scope, info, &caller, &space_tags);
    let team = options
        .team_tag
        .as_ref()
        .map(|key| format!(" --team-tag {key}"))
        .unwrap_or_default();
    // Roles have no aws:username: their per-user variant matches a principal tag.
    let (profile_tag, tag_step) = match (&username, &options.team_tag) {
        (None, None) => (
            format!(" --profile-tag {PROFILE_TAG}"),
            format!(
                "; then tag the role (or have your identity provider pass the session tag) \
                 {PROFILE_TAG}=<your Studio user profile name>"
            ),
        ),
        _ => (String::new(), String::new()),
    };
    let fix = format!(
        "aws iam {fix_target} --policy-name SSHSageMakerSpacePolicy --policy-document \"$(sm-ssh policy space --account {}{team}{profile_tag})\"{tag_step}",
        me.account
    );
    let simulation = simulate::run(sdk, &source, &requirements).await;
    let mut check = Evaluation::of(&policies, &requirements).into_check(
        "space-start-session",
        &me.arn,
        fix,
        &simulation,
    );
    if let Some(note) = tags_note {
        check.detail.push_str(&format!(" ({note})"));
    }
    check
}

/// The principal tag `policy space --profile-tag` is shown with for roles.
const PROFILE_TAG: &str = "UserProfile";

/// The space's tags (ListTags), or Studio's owner tag when they cannot be
/// read, with a note saying so.
async fn space_tags(
    client: &aws_sdk_sagemaker::Client,
    info: &SpaceInfo,
    owner_profile: String,
) -> (Vec<(String, String)>, Option<String>) {
    let listed = client
        .list_tags()
        .resource_arn(&info.arn)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await;
    match listed {
        Ok(tags) => {
            let tags: Vec<(String, String)> = tags
                .into_iter()
                .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                .collect();
            let note = (!tags.iter().any(|(k, _)| k == OWNER_TAG)).then(|| {
                format!(
                    "the space has no {OWNER_TAG} tag, so per-user policies match no one: \
                     Studio tags the private spaces it creates; shared spaces need --team-tag policies"
                )
            });
            (tags, note)
        }
        Err(error) => {
            let failure = Failure::from_sdk("sagemaker:ListTags", error);
            let why = match failure {
                Failure::Denied(permission) => format!("{permission} is denied"),
                Failure::NotFound(message) | Failure::Other(message) => message,
            };
            (
                vec![(OWNER_TAG.to_string(), owner_profile)],
                Some(format!(
                    "{why}: assumed Studio's {OWNER_TAG} tag for the owner"
                )),
            )
        }
    }
}

/// Who asks: the request context IAM would see.
struct Caller<'a> {
    user_id: &'a str,
    /// `aws:username`, for IAM users only.
    username: Option<&'a str>,
    tags: &'a [(String, String)],
}

/// `arn:…:user-profile/<domain>/<owner>` in the space's region.
fn profile_arn(scope: &Scope, info: &SpaceInfo, owner: &str) -> String {
    format!(
        "arn:{}:sagemaker:{}:{}:user-profile/{}/{owner}",
        scope.partition,
        info.arn.split(':').nth(3).unwrap_or("*"),
        scope.account,
        info.domain
    )
}

/// StartSession on the space (with its tags) must be allowed; on another
/// user's (or team's) space it should not be: the same tags, but the owner
/// tag naming someone else's profile and the team tag another team.
fn requirements(
    scope: &Scope,
    info: &SpaceInfo,
    caller: &Caller,
    space_tags: &[(String, String)],
) -> Vec<Requirement> {
    let mut own = Request::new("sagemaker:StartSession", &info.arn);
    let other_arn = format!("{}-of-someone-else", info.arn);
    let mut other = Request::new("sagemaker:StartSession", &other_arn);
    for (key, value) in space_tags {
        let theirs = if key == OWNER_TAG {
            profile_arn(scope, info, "someone-else")
        } else if Some(key) == scope.team_tag.as_ref() {
            "another-team".to_string()
        } else {
            value.clone()
        };
        for prefix in ["sagemaker:ResourceTag", "aws:ResourceTag"] {
            own.set(&format!("{prefix}/{key}"), value);
            other.set(&format!("{prefix}/{key}"), &theirs);
        }
    }
    for request in [&mut own, &mut other] {
        request.set("aws:userid", caller.user_id);
        if let Some(username) = caller.username {
            request.set("aws:username", username);
        }
        for (key, value) in caller.tags {
            request.set(&format!("aws:PrincipalTag/{key}"), value);
        }
    }
    vec![
        Requirement {
            request: own,
            expect: Expect::Allowed,
            why: "opens the remote-access session to the space",
        },
        Requirement {
            request: other,
            expect: Expect::Denied,
            why: "any user could reach any space: condition StartSession on the space's owner (sm-ssh policy space)",
        },
    ]
}
