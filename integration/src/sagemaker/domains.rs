//! DescribeDomain, ListDomains and DescribeUserProfile.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{not_found, Domain};
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiResult, Event};
use crate::world::World;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DomainInput {
    domain_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserProfileInput {
    domain_id: String,
    user_profile_name: String,
}

pub(super) fn domain_arn(world: &World, id: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:domain/{id}",
        world.region, world.identity.account
    )
}

fn domain_json(world: &World, domain: &Domain) -> Value {
    json!({
        "DomainArn": domain_arn(world, &domain.id),
        "DomainId": domain.id,
        "DomainName": domain.name,
        "Status": "InService",
        "CreationTime": domain.creation_time,
        "LastModifiedTime": domain.creation_time,
        "Url": format!("https://{}.studio.{}.sagemaker.aws", domain.id, world.region),
    })
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: DomainInput = input(body)?;
    let mut world = state.world();
    let arn = domain_arn(&world, &req.domain_id);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeDomain", &arn)?;
        let domain = world
            .sagemaker
            .domains
            .iter()
            .find(|d| d.id == req.domain_id)
            .ok_or_else(|| not_found(format!("Domain '{arn}' does not exist.")))?;
        let mut answer = domain_json(&world, domain);
        answer["AuthMode"] = json!("IAM");
        answer["AppNetworkAccessType"] = json!(domain.app_network_access_type);
        answer["VpcId"] = json!(domain.vpc_id);
        answer["SubnetIds"] = json!(domain.subnet_ids);
        answer["DefaultUserSettings"] = json!({
            "ExecutionRole": domain.execution_role,
            "SecurityGroups": domain.security_groups,
        });
        Ok(answer)
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeDomain",
        Event::on(&arn),
        result,
    )
}

pub(super) fn list(state: &AppState, _body: &[u8]) -> ApiResult {
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListDomains", "*")?;
        let domains: Vec<Value> = world
            .sagemaker
            .domains
            .iter()
            .map(|d| domain_json(&world, d))
            .collect();
        Ok(json!({ "Domains": domains }))
    })();
    recorded(
        &mut world,
        "sagemaker:ListDomains",
        Event::default(),
        result,
    )
}

pub(super) fn describe_user_profile(state: &AppState, body: &[u8]) -> ApiResult {
    let req: UserProfileInput = input(body)?;
    let mut world = state.world();
    let arn = format!(
        "arn:aws:sagemaker:{}:{}:user-profile/{}/{}",
        world.region, world.identity.account, req.domain_id, req.user_profile_name
    );
    let result = (|| {
        check_action(&world, "sagemaker:DescribeUserProfile", &arn)?;
        let profile = world
            .sagemaker
            .user_profiles
            .iter()
            .find(|p| p.domain_id == req.domain_id && p.name == req.user_profile_name)
            .ok_or_else(|| not_found(format!("User profile '{arn}' does not exist.")))?;
        let mut settings = json!({ "SecurityGroups": profile.security_groups });
        if !profile.execution_role.is_empty() {
            settings["ExecutionRole"] = json!(profile.execution_role);
        }
        Ok(json!({
            "DomainId": profile.domain_id,
            "UserProfileArn": arn,
            "UserProfileName": profile.name,
            "Status": "InService",
            "UserSettings": settings,
        }))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeUserProfile",
        Event::on(&arn),
        result,
    )
}
