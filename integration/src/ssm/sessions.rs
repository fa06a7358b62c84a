//! StartSession, ResumeSession and TerminateSession: the control half of a
//! Session Manager session. The data plane redeems the tokens issued here.
//! Each session's record (owner, reason, start and end) is what
//! DescribeSessions (`history.rs`) reports.

use std::collections::{BTreeMap, HashSet};

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{
    access_denied, check_action, check_run_on, input, now, recorded, ApiError, ApiResult, Event,
};
use crate::server::AppState;
use crate::world::{PingStatus, Session, SessionDocument, SessionRecord, SharedWorld, World};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartInput {
    target: String,
    document_name: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionInput {
    session_id: String,
}

/// The document StartSession uses when none is named.
const DEFAULT_DOCUMENT: &str = "SSM-SessionManagerRunShell";

pub(super) fn start(state: &AppState, body: &[u8]) -> ApiResult {
    let req: StartInput = input(body)?;
    let document = req
        .document_name
        .clone()
        .unwrap_or_else(|| DEFAULT_DOCUMENT.to_string());
    let mut world = state.world();
    let result = start_in(&mut world, state.port, &req, &document);
    if let Some(id) = result.as_ref().ok().and_then(|v| v["SessionId"].as_str()) {
        record_end_when_over(&state.world, &world, id);
    }
    let event = Event {
        resource: Some(&req.target),
        document: Some(&document),
        reason: req.reason.as_deref(),
        error: None,
    };
    recorded(&mut world, "ssm:StartSession", event, result)
}

fn start_in(world: &mut World, port: u16, req: &StartInput, document: &str) -> ApiResult {
    if let Some(reason) = &req.reason {
        let n = reason.chars().count();
        if n == 0 || n > 256 {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value at 'reason' failed to satisfy constraint: \
                 Member must have length between 1 and 256 (was {n})"
            )));
        }
    }
    check_run_on(world, "ssm:StartSession", &req.target, document)?;
    if world.faults.throttle_start_session > 0 {
        world.faults.throttle_start_session -= 1;
        return Err(ApiError::new("ThrottlingException", "Rate exceeded"));
    }
    let properties = match world.documents.get(document) {
        Some(custom) if req.parameters.is_empty() => custom.properties.clone(),
        Some(_) => {
            return Err(ApiError::new(
                "InvalidParameters",
                format!("Document {document} takes no parameters in the fake."),
            ))
        }
        None => substitute(document, &req.parameters)?,
    };
    // Session Manager serves hybrid (`mi-…`) nodes only on the advanced tier.
    if req.target.starts_with("mi-") && world.activation_tier == "standard" {
        return Err(ApiError::new(
            "BadRequest",
            "Enable advanced-instances tier to use Session Manager with your on-premises instances",
        ));
    }
    match world.instances.get(&req.target) {
        Some(i)
            if i.ping_status == PingStatus::Online
                && crate::sagemaker::native_reachable(world, i) => {}
        _ => {
            return Err(ApiError::new(
                "TargetNotConnected",
                format!("{} is not connected.", req.target),
            ))
        }
    }
    let (id, token) = open_session(world, &req.target, document, properties, req.reason.clone());
    Ok(session_reply(world, &id, &token, port))
}

/// Creates a session on `target` with its first token; returns both. The
/// SageMaker API's StartSession opens its sessions here too.
pub(crate) fn open_session(
    world: &mut World,
    target: &str,
    document: &str,
    properties: Value,
    reason: Option<String>,
) -> (String, String) {
    let id = format!("{}-{}", session_prefix(&world.identity.arn), hex17());
    let token = new_token();
    let (terminated, _) = watch::channel(false);
    world.sessions.insert(
        id.clone(),
        Session {
            id: id.clone(),
            target: target.to_string(),
            document: document.to_string(),
            properties,
            unused_tokens: HashSet::from([token.clone()]),
            terminated,
            started: std::time::Instant::now(),
        },
    );
    let record = SessionRecord {
        target: target.to_string(),
        document: document.to_string(),
        owner: world.identity.clone(),
        reason,
        started: now(),
        ended: None,
        connected: false,
    };
    world.session_records.insert(id.clone(), record);
    (id, token)
}

/// Stamps the session's end time once it is over, however it ends:
/// TerminateSession, or the agent closing it (`channel_closed`), both of
/// which set its `terminated` watch.
fn record_end_when_over(shared: &SharedWorld, world: &World, id: &str) {
    let Some(mut terminated) = world.sessions.get(id).map(|s| s.terminated.subscribe()) else {
        return;
    };
    let (shared, id) = (shared.clone(), id.to_owned());
    tokio::spawn(async move {
        // An error means the session is gone from the world: over as well.
        let _ = terminated.wait_for(|over| *over).await;
        let mut world = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = world.session_records.get_mut(&id) {
            record.ended.get_or_insert_with(now);
        }
    });
}

pub(super) fn resume(state: &AppState, body: &[u8]) -> ApiResult {
    let req: SessionInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        let session = session_for(&mut world, "ssm:ResumeSession", &req.session_id)?;
        if *session.terminated.borrow() {
            // No token: the plugin reads this as "the session timed out".
            return Ok(json!({ "SessionId": req.session_id }));
        }
        let token = new_token();
        session.unused_tokens.insert(token.clone());
        Ok(session_reply(&world, &req.session_id, &token, state.port))
    })();
    recorded(
        &mut world,
        "ssm:ResumeSession",
        Event::on(&req.session_id),
        result,
    )
}

pub(super) fn terminate(state: &AppState, body: &[u8]) -> ApiResult {
    let req: SessionInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_own_session(&world, &req.session_id)?;
        let session = session_for(&mut world, "ssm:TerminateSession", &req.session_id)?;
        session.unused_tokens.clear();
        session.terminated.send_replace(true);
        if let Some(record) = world.session_records.get_mut(&req.session_id) {
            record.ended.get_or_insert_with(now);
        }
        Ok(json!({ "SessionId": req.session_id }))
    })();
    recorded(
        &mut world,
        "ssm:TerminateSession",
        Event::on(&req.session_id),
        result,
    )
}

/// The session `id`, once the caller may run `action` on it.
fn session_for<'w>(
    world: &'w mut World,
    action: &str,
    id: &str,
) -> Result<&'w mut Session, ApiError> {
    check_action(world, action, &session_arn(world, id))?;
    world.sessions.get_mut(id).ok_or_else(|| {
        ApiError::new(
            "DoesNotExistException",
            format!("Session {id} does not exist."),
        )
    })
}

/// The client policy's `TerminateOwnSessions` condition,
/// `ssm:resourceTag/aws:ssmmessages:session-id = ${aws:userid}`: with
/// `enforce_owner_tag`, only the identity that started a session may end it.
fn check_own_session(world: &World, id: &str) -> Result<(), ApiError> {
    let owner = world.session_records.get(id).map(|r| &r.owner.user_id);
    match owner {
        Some(owner) if world.denials.enforce_owner_tag && *owner != world.identity.user_id => Err(
            access_denied(world, "ssm:TerminateSession", &session_arn(world, id)),
        ),
        _ => Ok(()),
    }
}

pub(super) fn session_arn(world: &World, id: &str) -> String {
    format!(
        "arn:aws:ssm:{}:{}:session/{id}",
        world.region, world.identity.account
    )
}

/// Where StreamUrls point: the fake's own port, unless a test chose another.
pub(crate) fn stream_endpoint(world: &World, port: u16) -> String {
    world
        .stream_endpoint
        .clone()
        .unwrap_or_else(|| format!("127.0.0.1:{port}"))
}

/// `ws://` or `wss://` and `stream_endpoint`: what a StreamUrl starts with.
pub(crate) fn stream_base(world: &World, port: u16) -> String {
    let scheme = if world.stream_tls { "wss" } else { "ws" };
    format!("{scheme}://{}", stream_endpoint(world, port))
}

/// The answer of StartSession and ResumeSession; the StreamUrl presigned
/// when the world's data-channel policy says so.
fn session_reply(world: &World, id: &str, token: &str, port: u16) -> Value {
    let base = stream_base(world, port);
    let url = format!("{base}/v1/data-channel/{id}?role=publish_subscribe");
    json!({
        "SessionId": id,
        "TokenValue": token,
        "StreamUrl": world.stream_url(url),
    })
}

/// The session name prefix: the caller's name, the last part of its ARN.
fn session_prefix(arn: &str) -> String {
    let name = arn.rsplit('/').next().unwrap_or("session");
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.@-".contains(*c))
        .collect();
    if clean.is_empty() {
        "session".into()
    } else {
        clean
    }
}

fn hex17() -> String {
    let n: u128 = rand::rng().random();
    format!("{:032x}", n)[..17].to_string()
}

fn new_token() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 128)
}

/// A document parameter: its name, its default (None = required), and
/// whether the value is a port number (`local` allows 0).
struct Param {
    name: &'static str,
    default: Option<&'static str>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Port,
    LocalPort,
    Host,
}

/// Fills the document's `properties` from the request's parameters, as the
/// service does before the agent echoes them in its HandshakeRequest.
pub(crate) fn substitute(
    document: &str,
    parameters: &BTreeMap<String, Vec<String>>,
) -> Result<Value, ApiError> {
    let port = |default| Param {
        name: "portNumber",
        default: Some(default),
        kind: Kind::Port,
    };
    let local = Param {
        name: "localPortNumber",
        default: Some("0"),
        kind: Kind::LocalPort,
    };
    if let Some(properties) = shell_properties(document, parameters)? {
        return Ok(properties);
    }
    let (params, forwarding): (Vec<Param>, bool) = match document {
        "AWS-StartSSHSession" => (vec![port("22")], false),
        "AWS-StartPortForwardingSession" => (vec![port("80"), local], true),
        "AWS-StartPortForwardingSessionToRemoteHost" => (
            vec![
                Param {
                    name: "host",
                    default: None,
                    kind: Kind::Host,
                },
                port("80"),
                local,
            ],
            true,
        ),
        other => {
            return Err(ApiError::new(
                "InvalidDocument",
                format!(
                    "Document with name {other} does not exist, or the fake does not support it."
                ),
            ))
        }
    };
    if let Some(unknown) = parameters
        .keys()
        .find(|k| !params.iter().any(|p| p.name == k.as_str()))
    {
        return Err(ApiError::new(
            "InvalidParameters",
            format!("Parameter \"{unknown}\" is not defined in document {document}."),
        ));
    }
    let mut properties = BTreeMap::new();
    for p in &params {
        let value = match parameters.get(p.name).map(Vec::as_slice) {
            None => p.default.map(str::to_string).ok_or_else(|| {
                ApiError::new(
                    "InvalidParameters",
                    format!(
                        "Parameter \"{}\" is required by document {document}.",
                        p.name
                    ),
                )
            })?,
            Some([v]) => v.clone(),
            Some(_) => {
                return Err(ApiError::new(
                    "InvalidParameters",
                    format!("Parameter \"{}\" takes exactly one value.", p.name),
                ))
            }
        };
        if !valid(p.kind, &value) {
            return Err(ApiError::new(
                "InvalidParameters",
                format!(
                    "Parameter \"{}\" value \"{value}\" does not match the allowed pattern.",
                    p.name
                ),
            ));
        }
        properties.insert(p.name.to_string(), Value::String(value));
    }
    if forwarding {
        properties.insert("type".into(), Value::String("LocalPortForwarding".into()));
    }
    Ok(Value::Object(properties.into_iter().collect()))
}

/// The `sessionType` of each document the fake knows (the documents'
/// `sessionType` field; see docs/fake-aws.md).
pub(crate) fn session_type<'a>(
    documents: &'a BTreeMap<String, SessionDocument>,
    document: &str,
) -> &'a str {
    if let Some(custom) = documents.get(document) {
        return &custom.session_type;
    }
    builtin_session_type(document)
}

fn builtin_session_type(document: &str) -> &'static str {
    match document {
        DEFAULT_DOCUMENT => "Standard_Stream",
        "AWS-StartInteractiveCommand" => "InteractiveCommands",
        "AWS-StartNonInteractiveCommand" => "NonInteractiveCommands",
        _ => "Port",
    }
}

/// The properties of a shell document (agent `contracts/model.go`
/// `ShellProperties`): `linux.commands` from the `command` parameter, which
/// the two command documents require and the shell document does not take.
fn shell_properties(
    document: &str,
    parameters: &BTreeMap<String, Vec<String>>,
) -> Result<Option<Value>, ApiError> {
    let kind = builtin_session_type(document);
    if kind == "Port" {
        return Ok(None);
    }
    let allowed: &[&str] = if kind == "Standard_Stream" {
        &[]
    } else {
        &["command"]
    };
    if let Some(unknown) = parameters.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::new(
            "InvalidParameters",
            format!("Parameter \"{unknown}\" is not defined in document {document}."),
        ));
    }
    let commands = match parameters.get("command").map(Vec::as_slice) {
        None if allowed.is_empty() => String::new(),
        Some([command]) if !command.trim().is_empty() => command.clone(),
        _ => {
            return Err(ApiError::new(
                "InvalidParameters",
                format!("Parameter \"command\" is required by document {document}."),
            ))
        }
    };
    let mut linux = json!({"commands": commands, "runAsElevated": false});
    if kind == "NonInteractiveCommands" {
        linux["separateOutputStream"] = json!(true);
    }
    Ok(Some(json!({"linux": linux})))
}

fn valid(kind: Kind, value: &str) -> bool {
    let number = !value.is_empty()
        && value.len() <= 5
        && value.bytes().all(|b| b.is_ascii_digit())
        && !(value.len() > 1 && value.starts_with('0'));
    match kind {
        Kind::Port => number && value.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)),
        Kind::LocalPort => number && value.parse::<u32>().is_ok_and(|n| n <= 65535),
        Kind::Host => {
            !value.is_empty()
                && value.len() <= 253
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    #[test]
    fn ssh_document_has_no_type() {
        let p = substitute("AWS-StartSSHSession", &params(&[])).unwrap();
        assert_eq!(p.to_string(), r#"{"portNumber":"22"}"#);
    }

    #[test]
    fn port_forwarding_properties_are_sorted_with_type() {
        let p = substitute(
            "AWS-StartPortForwardingSessionToRemoteHost",
            &params(&[("host", "db.internal"), ("portNumber", "5432")]),
        )
        .unwrap();
        assert_eq!(
            p.to_string(),
            r#"{"host":"db.internal","localPortNumber":"0","portNumber":"5432","type":"LocalPortForwarding"}"#
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        for (doc, ps) in [
            ("AWS-StartSSHSession", params(&[("portNumber", "0")])),
            ("AWS-StartSSHSession", params(&[("portNumber", "70000")])),
            ("AWS-StartSSHSession", params(&[("bogus", "1")])),
            ("AWS-StartPortForwardingSessionToRemoteHost", params(&[])),
        ] {
            let e = substitute(doc, &ps).unwrap_err();
            assert_eq!(e.code, "InvalidParameters", "{doc} {ps:?}");
        }
        assert_eq!(
            substitute("Nope", &params(&[])).unwrap_err().code,
            "InvalidDocument"
        );
    }

    #[test]
    fn session_prefix_is_the_caller_name() {
        assert_eq!(
            session_prefix("arn:aws:sts::1:assumed-role/Dev/alice@example.com"),
            "alice@example.com"
        );
        assert_eq!(hex17().len(), 17);
    }
}
