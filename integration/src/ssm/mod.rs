//! The SSM API in the AWS JSON 1.1 protocol: `POST /` with
//! `X-Amz-Target: AmazonSSM.<Operation>`, JSON in and out, errors as HTTP 400
//! with `{"__type": code, "message": text}` (what aws-sdk-ssm reads).

mod commands;
mod history;
mod instances;
pub(crate) mod sessions;
mod settings;

pub(crate) use sessions::session_type;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::server::AppState;
use crate::world::{ApiEvent, World};

/// An error in the shape the real service returns.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new("ValidationException", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.code, "message": self.message });
        json_response(self.status, &body)
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amzn-requestid", &uuid::Uuid::new_v4().to_string()),
        ],
        body.to_string(),
    )
        .into_response()
}

pub(crate) type ApiResult = Result<Value, ApiError>;

/// Parses a request body into an operation's input shape.
pub(crate) fn input<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}" as &[u8]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new("SerializationException", format!("invalid request: {e}")))
}

/// Answers one SSM call.
pub(crate) async fn handle(state: &AppState, operation: &str, body: &[u8]) -> Response {
    let result = match operation {
        "DescribeInstanceInformation" => instances::describe(state, body),
        "ListTagsForResource" => instances::list_tags(state, body),
        "AddTagsToResource" => instances::add_tags(state, body),
        "RemoveTagsFromResource" => instances::remove_tags(state, body),
        "StartSession" => sessions::start(state, body),
        "ResumeSession" => sessions::resume(state, body),
        "TerminateSession" => sessions::terminate(state, body),
        "DescribeSessions" => history::describe(state, body),
        "SendCommand" => commands::send(state, body),
        "GetCommandInvocation" => commands::get_invocation(state, body),
        "GetServiceSetting" => settings::get(state, body),
        "UpdateServiceSetting" => settings::update(state, body),
        "CreateActivation" => settings::create_activation(state, body),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("the fake SSM does not implement {other}"),
        )),
    };
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

/// The ARN IAM evaluates for an action on a target.
pub(crate) fn target_arn(world: &World, target: &str) -> String {
    let (region, account) = (&world.region, &world.identity.account);
    if target.starts_with("i-") {
        format!("arn:aws:ec2:{region}:{account}:instance/{target}")
    } else {
        format!("arn:aws:ssm:{region}:{account}:managed-instance/{target}")
    }
}

pub(crate) fn document_arn(world: &World, document: &str) -> String {
    format!("arn:aws:ssm:{}::document/{document}", world.region)
}

/// The real service's wording for an action no policy allows.
pub(crate) fn access_denied(world: &World, action: &str, resource: &str) -> ApiError {
    ApiError::new(
        "AccessDeniedException",
        format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} \
             because no identity-based policy allows the {action} action",
            world.identity.arn
        ),
    )
}

/// Refuses `action` when it is denied as a whole.
pub(crate) fn check_action(world: &World, action: &str, resource: &str) -> Result<(), ApiError> {
    if world.denials.actions.contains(action) {
        Err(access_denied(world, action, resource))
    } else {
        Ok(())
    }
}

/// The checks StartSession and SendCommand share: the action, the document,
/// and the `ssm:resourceTag/SSHOwner = ${aws:userid}` condition.
pub(crate) fn check_run_on(
    world: &World,
    action: &str,
    target: &str,
    document: &str,
) -> Result<(), ApiError> {
    let resource = target_arn(world, target);
    check_action(world, action, &resource)?;
    if world.denials.documents.contains(document) {
        return Err(access_denied(world, action, &document_arn(world, document)));
    }
    if world.denials.enforce_owner_tag {
        let owner = world
            .instances
            .get(target)
            .and_then(|i| i.tags.get("SSHOwner"));
        if owner.map(String::as_str) != Some(world.identity.user_id.as_str()) {
            return Err(access_denied(world, action, &resource));
        }
    }
    Ok(())
}

/// Appends a CloudTrail-style record.
pub(crate) fn record(world: &mut World, action: &str, event: Event<'_>) {
    let caller = world.identity.arn.clone();
    world.events.push(ApiEvent {
        action: action.to_string(),
        caller,
        resource: event.resource.map(str::to_string),
        document: event.document.map(str::to_string),
        reason: event.reason.map(str::to_string),
        error: event.error.map(|e| e.code.to_string()),
    });
}

/// Records the call `action` with its outcome, and hands the outcome back.
pub(crate) fn recorded<T>(
    world: &mut World,
    action: &str,
    event: Event<'_>,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let error = result.as_ref().err();
    record(world, action, Event { error, ..event });
    result
}

#[derive(Default)]
pub(crate) struct Event<'a> {
    pub resource: Option<&'a str>,
    pub document: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub error: Option<&'a ApiError>,
}

impl<'a> Event<'a> {
    /// A call on one resource, with no document or reason.
    pub(crate) fn on(resource: &'a str) -> Self {
        Event {
            resource: Some(resource),
            ..Event::default()
        }
    }
}

/// SSM's answer to a token it did not issue (SSM API reference, the
/// `InvalidNextToken` error of the list operations).
pub(crate) fn bad_token() -> ApiError {
    ApiError::new("InvalidNextToken", "The specified token is not valid.")
}

/// Epoch seconds now.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
