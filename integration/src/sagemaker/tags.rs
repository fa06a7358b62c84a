//! ListTags and AddTags on a space ARN. Studio tags the private spaces it
//! creates with their owner's user profile ARN (`sagemaker:user-profile-arn`,
//! the key the remote-access guide's ABAC policies match) and their domain
//! (`sagemaker:domain-arn`, chosen: the key is not documented for spaces);
//! a space seeded without an owner (a shared space) carries neither. Seeded
//! and added tags come after them. Keys starting with `aws:` are reserved
//! (AWS tagging rules) and refused. Other ARNs answer ResourceNotFound: only
//! spaces have tags here.

use serde::Deserialize;
use serde_json::{json, Value};

use super::domains::domain_arn;
use super::lists::bad_token;
use super::{not_found, space_arn, Space};
use crate::paging::List;
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

/// ListTags answers at most this many tags a page (the API's MaxResults default is 50).
const PAGE: i64 = 50;
const LIST: List = List {
    key: "Tags",
    sizes: 1..=PAGE,
    default: PAGE as usize,
    bad_token,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInput {
    resource_arn: String,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddInput {
    resource_arn: String,
    tags: Vec<Tag>,
}

/// Studio's tags on a space, then its own.
pub fn tags_of(world: &World, space: &Space) -> Vec<(String, String)> {
    let mut tags = Vec::new();
    if !space.owner.is_empty() {
        tags.push((
            "sagemaker:domain-arn".to_string(),
            domain_arn(world, &space.domain_id),
        ));
        tags.push((
            "sagemaker:user-profile-arn".to_string(),
            format!(
                "arn:aws:sagemaker:{}:{}:user-profile/{}/{}",
                world.region, world.identity.account, space.domain_id, space.owner
            ),
        ));
    }
    tags.extend(space.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    tags
}

/// The index of the space `arn` names.
fn space_index(world: &World, arn: &str) -> Result<usize, ApiError> {
    world
        .sagemaker
        .spaces
        .iter()
        .position(|s| space_arn(world, &s.domain_id, &s.name) == arn)
        .ok_or_else(|| not_found(format!("Resource '{arn}' does not exist.")))
}

pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ListInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListTags", &req.resource_arn)?;
        let index = space_index(&world, &req.resource_arn)?;
        let tags = tags_of(&world, &world.sagemaker.spaces[index]);
        // Any MaxResults is taken, at most PAGE a page.
        let size = req.max_results.map(|n| n.clamp(1, PAGE));
        LIST.answer(
            tags,
            size,
            req.next_token.as_deref(),
            |(key, value)| json!({ "Key": key, "Value": value }),
        )
    })();
    recorded(
        &mut world,
        "sagemaker:ListTags",
        Event::on(&req.resource_arn),
        result,
    )
}

pub(super) fn add(state: &AppState, body: &[u8]) -> ApiResult {
    let req: AddInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:AddTags", &req.resource_arn)?;
        let index = space_index(&world, &req.resource_arn)?;
        if let Some(tag) = req.tags.iter().find(|t| t.key.starts_with("aws:")) {
            return Err(ApiError::validation(format!(
                "Tag keys starting with 'aws:' are reserved for system use: {}",
                tag.key
            )));
        }
        let space = &mut world.sagemaker.spaces[index];
        for tag in &req.tags {
            space.tags.insert(tag.key.clone(), tag.value.clone());
        }
        let tags: Vec<Value> = req
            .tags
            .iter()
            .map(|t| json!({ "Key": t.key, "Value": t.value }))
            .collect();
        Ok(json!({ "Tags": tags }))
    })();
    recorded(
        &mut world,
        "sagemaker:AddTags",
        Event::on(&req.resource_arn),
        result,
    )
}
