//! StartSession on a Studio space: the same SessionId/StreamUrl/TokenValue
//! triple as ssm:StartSession, for a session in the same world, to the
//! space's SSH server on its instance. The StreamUrl carries a
//! `cell-number`, as the service's does.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{space_arn, space_instance_id};
use crate::server::AppState;
use crate::ssm::sessions::{open_session, substitute};
use crate::ssm::{access_denied, check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

/// Remote connections a space takes at once (the Toolkit's error page).
pub const CONNECTION_LIMIT: usize = 10;

/// Instance types with less than 8 GiB of memory, which remote access refuses.
const TOO_SMALL: [&str; 5] = [
    "ml.t3.medium",
    "ml.c7i.large",
    "ml.c6i.large",
    "ml.c6id.large",
    "ml.c5.large",
];

/// The document the session is given: a Port session to the server's port 22.
const DOCUMENT: &str = "AWS-StartSSHSession";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartInput {
    resource_identifier: String,
}

pub(super) fn start(state: &AppState, body: &[u8]) -> ApiResult {
    let req: StartInput = input(body)?;
    let mut world = state.world();
    let result = start_in(&mut world, state.port, &req.resource_identifier);
    recorded(
        &mut world,
        "sagemaker:StartSession",
        Event::on(&req.resource_identifier),
        result,
    )
}

/// `(domain, space)` of a space ARN in this world's region and account.
fn parse_arn(world: &World, arn: &str) -> Option<(String, String)> {
    let prefix = format!(
        "arn:aws:sagemaker:{}:{}:space/",
        world.region, world.identity.account
    );
    let (domain, space) = arn.strip_prefix(&prefix)?.split_once('/')?;
    (!domain.is_empty() && !space.is_empty() && !space.contains('/'))
        .then(|| (domain.to_string(), space.to_string()))
}

fn start_in(world: &mut World, port: u16, arn: &str) -> ApiResult {
    check_action(world, "sagemaker:StartSession", arn)?;
    let Some((domain, name)) = parse_arn(world, arn) else {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{arn}' at 'resourceIdentifier' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             arn:aws[a-z\\-]*:sagemaker:[a-z0-9\\-]*:[0-9]{{12}}:space/.*"
        )));
    };
    if world
        .sagemaker
        .denied_spaces
        .contains(&format!("{domain}/{name}"))
    {
        return Err(access_denied(world, "sagemaker:StartSession", arn));
    }
    let space = super::find_space(world, &domain, &name)?;
    if TOO_SMALL.contains(&space.instance_type.as_str()) {
        return Err(ApiError::validation(format!(
            "Remote access is not supported for instance type {}: use an instance type with at \
             least 8 GiB of memory",
            space.instance_type
        )));
    }
    if !space.remote_access {
        return Err(ApiError::validation(format!(
            "Remote access is not enabled for space {name}"
        )));
    }
    let app = match &mut space.app {
        Some(app) if app.status == "InService" => app,
        app => {
            let status = app.as_ref().map_or("not started", |a| a.status.as_str());
            return Err(ApiError::validation(format!(
                "Space {name} is not running (app status: {status}); start the space first"
            )));
        }
    };
    if !app.remote_access {
        return Err(ApiError::validation(format!(
            "Remote access is not enabled for the running app of space {name}; restart the space \
             to apply the RemoteAccess setting"
        )));
    }
    if app.failures_left > 0 {
        app.failures_left -= 1;
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalFailure",
            message: "The request processing has failed because of an unknown error, exception \
                      or failure."
                .into(),
        });
    }
    let instance_id = space_instance_id(&space_arn(world, &domain, &name));
    let active = world
        .sessions
        .values()
        .filter(|s| s.target == instance_id && !*s.terminated.borrow())
        .count();
    if active >= CONNECTION_LIMIT {
        return Err(ApiError::new(
            "ResourceLimitExceeded",
            format!(
                "Space {name} has reached the limit of {CONNECTION_LIMIT} active remote access \
                 connections"
            ),
        ));
    }
    let parameters = BTreeMap::from([("portNumber".to_string(), vec!["22".to_string()])]);
    let properties = substitute(DOCUMENT, &parameters)?;
    let (id, token) = open_session(world, &instance_id, DOCUMENT, properties, None);
    let base = crate::ssm::sessions::stream_base(world, port);
    Ok(reply(&id, &token, &base))
}

fn reply(id: &str, token: &str, base: &str) -> Value {
    json!({
        "SessionId": id,
        "TokenValue": token,
        "StreamUrl": format!(
            "{base}/v1/data-channel/{id}?role=publish_subscribe&cell-number=AAEAAQ"
        ),
    })
}
