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
    checks.push(network(&client, &info).await);
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
    checks.push(
        if info.image.contains(":image/sagemaker-distribution")
            || info.image.contains(":image-version/sagemaker-distribution")
        {
            Check::pass(
                "space-image",
                format!(
                    "SageMaker Distribution ({}); remote access needs 2.7 or newer",
                    info.image
                ),
            )
        } else {
            Check::warn(
                "space-image",
                format!(
                    "custom image {}",
                    if info.image.is_empty() {
                        "-"
                    } else {
                        &info.image
                    }
                ),
                "custom images need curl or wget, unzip, tar and gzip for remote access",
            )
        },
    );
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
    let requirements = requirements(&scope, info, &caller);
    let team = options
        .team_tag
        .as_ref()
        .map(|key| format!(" --team-tag {key}"))
        .unwrap_or_default();
    let fix = format!(
        "aws iam {fix_target} --policy-name SSHSageMakerSpacePolicy --policy-document \"$(sm-ssh policy space --account {}{team})\"",
        me.account
    );
    let simulation = simulate::run(sdk, &source, &requirements).await;
    Evaluation::of(&policies, &requirements).into_check(
        "space-start-session",
        &me.arn,
        fix,
        &simulation,
    )
}

/// Who asks: the request context IAM would see.
struct Caller<'a> {
    user_id: &'a str,
    /// `aws:username`, for IAM users only.
    username: Option<&'a str>,
    tags: &'a [(String, String)],
}

/// StartSession on the space must be allowed; on another user's (or team's)
/// space it should not be. Studio tags a space with its owner's profile ARN.
fn requirements(scope: &Scope, info: &SpaceInfo, caller: &Caller) -> Vec<Requirement> {
    let profile = |owner: &str| {
        format!(
            "arn:{}:sagemaker:{}:{}:user-profile/{}/{owner}",
            scope.partition,
            info.arn.split(':').nth(3).unwrap_or("*"),
            scope.account,
            info.domain
        )
    };
    let mut own = Request::new("sagemaker:StartSession", &info.arn).with(
        "sagemaker:ResourceTag/sagemaker:user-profile-arn",
        &profile(&info.owner),
    );
    let other_arn = format!("{}-of-someone-else", info.arn);
    let mut other = Request::new("sagemaker:StartSession", &other_arn).with(
        "sagemaker:ResourceTag/sagemaker:user-profile-arn",
        &profile("someone-else"),
    );
    for request in [&mut own, &mut other] {
        request.set("aws:userid", caller.user_id);
        if let Some(username) = caller.username {
            request.set("aws:username", username);
        }
    }
    for (key, value) in caller.tags {
        own.set(&format!("aws:PrincipalTag/{key}"), value);
        other.set(&format!("aws:PrincipalTag/{key}"), value);
        if Some(key) == scope.team_tag.as_ref() {
            own.set(&format!("sagemaker:ResourceTag/{key}"), value);
            other.set(&format!("sagemaker:ResourceTag/{key}"), "another-team");
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

/// VPC-only domains reach SSM through interface endpoints only.
async fn network(client: &aws_sdk_sagemaker::Client, info: &SpaceInfo) -> Check {
    let domain = match client
        .describe_domain()
        .domain_id(&info.domain)
        .send()
        .await
    {
        Ok(domain) => domain,
        Err(error) => {
            return Failure::from_sdk("sagemaker:DescribeDomain", error).skip("space-network")
        }
    };
    let access = domain
        .app_network_access_type()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    if access == "VpcOnly" {
        Check::warn(
            "space-network",
            format!(
                "domain {} is VpcOnly (VPC {}): the space registers with SSM and carries the session through VPC endpoints",
                info.domain,
                domain.vpc_id().unwrap_or("-")
            ),
            "give the domain's subnets interface endpoints for ssm and ssmmessages (com.amazonaws.<region>.ssm, .ssmmessages), their policy allowing ssm:CreateActivation, ssm:RegisterManagedInstance and ssmmessages:*",
        )
    } else {
        Check::pass(
            "space-network",
            format!(
                "domain {} reaches SSM over the internet ({access})",
                info.domain
            ),
        )
    }
}
