//! CloudWatch Logs, the part the native endpoint path reads:
//! DescribeLogStreams (`Logs_20140328` JSON 1.1, camelCase fields) on the
//! log groups `/aws/sagemaker/Endpoints/<name>` of the seeded endpoints.
//! Their streams are derived from the endpoints: `<variant>/<instance-id>`
//! for each instance (SageMaker developer guide, "Log Amazon SageMaker AI
//! events with Amazon CloudWatch"), `<variant>/<instance-id>/<container>`
//! for each container of a multi-container variant, and
//! `<variant>/<instance-id>/ssm` where SSM access is on (the SSM agent's
//! stream, "Access containers through SSM"). Logs Insights (the helper's
//! registration lines) stays with moto in the tests that need it.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::paging::{self, Refusal};
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

/// Where SageMaker puts an endpoint's logs.
pub const ENDPOINT_GROUP_PREFIX: &str = "/aws/sagemaker/Endpoints/";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamsInput {
    log_group_name: String,
    #[serde(default)]
    log_stream_name_prefix: Option<String>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// Answers one CloudWatch Logs call.
pub(crate) fn handle(state: &AppState, operation: &str, body: &[u8]) -> ApiResult {
    match operation {
        "DescribeLogStreams" => describe_streams(state, body),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("the fake CloudWatch Logs does not implement {other}"),
        )),
    }
}

/// The streams of a group, sorted by name; `None` when the group does not exist.
fn streams(world: &World, group: &str) -> Option<Vec<String>> {
    let name = group.strip_prefix(ENDPOINT_GROUP_PREFIX)?;
    let endpoint = world.sagemaker.endpoints.iter().find(|e| e.name == name)?;
    let mut streams = Vec::new();
    for variant in &endpoint.variants {
        for id in &variant.instance_ids {
            streams.push(format!("{}/{id}", variant.name));
            for container in &variant.containers {
                streams.push(format!("{}/{id}/{container}", variant.name));
            }
            if variant.ssm_access {
                streams.push(format!("{}/{id}/ssm", variant.name));
            }
        }
    }
    streams.sort();
    Some(streams)
}

fn describe_streams(state: &AppState, body: &[u8]) -> ApiResult {
    let req: StreamsInput = input(body)?;
    let mut world = state.world();
    let group_arn = format!(
        "arn:aws:logs:{}:{}:log-group:{}:*",
        world.region, world.identity.account, req.log_group_name
    );
    let result = (|| {
        check_action(&world, "logs:DescribeLogStreams", &group_arn)?;
        let all = streams(&world, &req.log_group_name).ok_or_else(|| {
            ApiError::new(
                "ResourceNotFoundException",
                "The specified log group does not exist.",
            )
        })?;
        let prefix = req.log_stream_name_prefix.unwrap_or_default();
        let matching: Vec<&String> = all.iter().filter(|s| s.starts_with(&prefix)).collect();
        let (page, next) = paging::page(matching, req.limit, 1..=50, 50, req.next_token.as_deref())
            .map_err(|refusal| {
                let message = match refusal {
                    Refusal::Size { value, .. } => format!(
                        "1 validation error detected: Value '{value}' at 'limit' failed to satisfy \
                         constraint: Member must have value less than or equal to 50"
                    ),
                    Refusal::Token => "The specified nextToken is invalid.".into(),
                };
                ApiError::new("InvalidParameterException", message)
            })?;
        let now_ms = (crate::ssm::now() * 1000.0) as i64;
        let listed: Vec<Value> = page
            .iter()
            .map(|name| {
                json!({
                    "logStreamName": name,
                    "creationTime": now_ms - 3_600_000,
                    "firstEventTimestamp": now_ms - 3_600_000,
                    "lastEventTimestamp": now_ms - 1_000,
                    "lastIngestionTime": now_ms,
                    "arn": format!("arn:aws:logs:{}:{}:log-group:{}:log-stream:{name}", world.region, world.identity.account, req.log_group_name),
                    "storedBytes": 0,
                })
            })
            .collect();
        let mut answer = json!({ "logStreams": listed });
        if let Some(next) = next {
            answer["nextToken"] = json!(next);
        }
        Ok(answer)
    })();
    recorded(
        &mut world,
        "logs:DescribeLogStreams",
        Event::on(&group_arn),
        result,
    )
}
