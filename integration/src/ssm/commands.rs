//! SendCommand (AWS-RunShellScript only) and GetCommandInvocation. Scripts
//! really run, in the instance's sandbox (see `sandbox`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_run_on, input, now, recorded, ApiError, ApiResult, Event};
use crate::sandbox::{self, Sandboxes};
use crate::server::AppState;
use crate::world::{Command, CommandStatus, Invocation, PingStatus, World};

const DOCUMENT: &str = "AWS-RunShellScript";
/// The real agent takes a moment to fetch a command; until then it is Pending.
const PICKUP: Duration = Duration::from_millis(100);
/// Right after SendCommand the real service answers InvocationDoesNotExist;
/// the fake does so to the first poll that comes this soon.
const NOT_YET_VISIBLE: Duration = Duration::from_secs(1);
/// The service keeps at most this many characters of each output stream.
const OUTPUT_LIMIT: usize = 24_000;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendInput {
    #[serde(default)]
    instance_ids: Vec<String>,
    #[serde(default)]
    targets: Vec<Target>,
    document_name: String,
    #[serde(default)]
    parameters: BTreeMap<String, Vec<String>>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    comment: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Target {
    key: String,
    #[serde(default)]
    values: Vec<String>,
}

/// What a spawned invocation needs.
struct Job {
    command_id: String,
    instance: String,
    script: String,
    sandbox: PathBuf,
    workdir: Option<PathBuf>,
    limit: Duration,
}

pub(super) fn send(state: &AppState, body: &[u8]) -> ApiResult {
    let req: SendInput = input(body)?;
    let mut world = state.world();
    let mut ids = req.instance_ids.clone();
    for t in &req.targets {
        if t.key == "InstanceIds" {
            ids.extend(t.values.iter().cloned());
        }
    }
    let result = send_in(&mut world, &state.sandboxes, &req, &ids);
    let event = Event {
        resource: ids.first().map(String::as_str),
        document: Some(&req.document_name),
        ..Event::default()
    };
    let (reply, jobs) = recorded(&mut world, "ssm:SendCommand", event, result)?;
    drop(world);
    for job in jobs {
        tokio::spawn(execute(state.clone(), job));
    }
    Ok(reply)
}

fn send_in(
    world: &mut World,
    sandboxes: &Sandboxes,
    req: &SendInput,
    ids: &[String],
) -> Result<(Value, Vec<Job>), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::validation(
            "Either InstanceIds or Targets (with key InstanceIds) must be given.",
        ));
    }
    for id in ids {
        check_run_on(world, "ssm:SendCommand", id, &req.document_name)?;
    }
    if req.document_name != DOCUMENT {
        return Err(ApiError::new(
            "InvalidDocument",
            format!(
                "Document {} does not exist, or the fake does not support it (only {DOCUMENT}).",
                req.document_name
            ),
        ));
    }
    let timeout = req.timeout_seconds.unwrap_or(3600);
    if !(30..=2_592_000).contains(&timeout) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{timeout}' at 'timeoutSeconds' failed to satisfy \
             constraint: Member must have value between 30 and 2592000"
        )));
    }
    let script = match req.parameters.get("commands") {
        Some(lines) if !lines.is_empty() => lines.join("\n"),
        _ => {
            return Err(ApiError::new(
                "InvalidParameters",
                "Parameter \"commands\" is required by document AWS-RunShellScript.",
            ))
        }
    };
    if let Some(unknown) = req
        .parameters
        .keys()
        .find(|k| !["commands", "workingDirectory", "executionTimeout"].contains(&k.as_str()))
    {
        return Err(ApiError::new(
            "InvalidParameters",
            format!("Parameter \"{unknown}\" is not defined in document {DOCUMENT}."),
        ));
    }
    let execution = match req.parameters.get("executionTimeout").map(Vec::as_slice) {
        None => 3600,
        Some([v]) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=172_800).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidParameters",
                    format!("Parameter \"executionTimeout\" value \"{v}\" does not match the allowed pattern."),
                )
            })?,
        Some(_) => {
            return Err(ApiError::new(
                "InvalidParameters",
                "Parameter \"executionTimeout\" takes exactly one value.",
            ))
        }
    };
    let bad: Vec<&String> = ids
        .iter()
        .filter(|id| {
            !world
                .instances
                .get(*id)
                .is_some_and(|i| !i.native && i.ping_status == PingStatus::Online)
        })
        .collect();
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|id| format!("[{id}]")).collect();
        return Err(ApiError::new(
            "InvalidInstanceId",
            format!(
                "Instances [{}] not in a valid state for account {}",
                list.join(", "),
                world.identity.account
            ),
        ));
    }
    let command_id = uuid::Uuid::new_v4().to_string();
    let requested = now();
    let mut invocations = BTreeMap::new();
    let mut jobs = Vec::new();
    for id in ids {
        let instance = world.instances.get_mut(id).expect("checked above");
        let sandbox = sandboxes.provision(instance).map_err(|e| {
            ApiError::new(
                "InternalServerError",
                format!("cannot prepare the sandbox of {id}: {e}"),
            )
        })?;
        let workdir = match req
            .parameters
            .get("workingDirectory")
            .and_then(|v| v.first())
        {
            Some(d) if !d.is_empty() => Some(PathBuf::from(sandbox::rewrite_etc_ssh(d, &sandbox))),
            _ => None,
        };
        invocations.insert(
            id.clone(),
            Invocation {
                status: CommandStatus::Pending,
                polls: 0,
                stdout: String::new(),
                stderr: String::new(),
                response_code: -1,
                started: None,
                ended: None,
            },
        );
        jobs.push(Job {
            command_id: command_id.clone(),
            instance: id.clone(),
            script: script.clone(),
            sandbox,
            workdir,
            limit: run_limit(timeout, execution),
        });
    }
    let command = Command {
        id: command_id.clone(),
        document: req.document_name.clone(),
        comment: req.comment.clone(),
        parameters: req.parameters.clone(),
        timeout_seconds: timeout,
        requested,
        requested_at: Instant::now(),
        invocations,
    };
    let reply = json!({ "Command": command_json(&command) });
    world.commands.insert(command_id, command);
    Ok((reply, jobs))
}

fn command_json(c: &Command) -> Value {
    json!({
        "CommandId": c.id,
        "DocumentName": c.document,
        "DocumentVersion": "$DEFAULT",
        "Comment": c.comment,
        "Parameters": c.parameters,
        "InstanceIds": c.invocations.keys().collect::<Vec<_>>(),
        "Targets": [],
        "RequestedDateTime": c.requested,
        "Status": "Pending",
        "StatusDetails": "Pending",
        "TimeoutSeconds": c.timeout_seconds,
        "TargetCount": c.invocations.len(),
        "CompletedCount": 0,
        "ErrorCount": 0,
        "DeliveryTimedOutCount": 0,
        "MaxConcurrency": "50",
        "MaxErrors": "0",
    })
}

/// Runs one invocation and records each step of its status walk.
async fn execute(state: AppState, job: Job) {
    tokio::time::sleep(PICKUP).await;
    let update = |f: &dyn Fn(&mut Invocation)| {
        let mut world = state.world();
        if let Some(inv) = world
            .commands
            .get_mut(&job.command_id)
            .and_then(|c| c.invocations.get_mut(&job.instance))
        {
            f(inv);
        }
    };
    update(&|inv| {
        inv.status = CommandStatus::InProgress;
        inv.started = Some(now());
    });
    let dir = job
        .workdir
        .clone()
        .unwrap_or_else(|| job.sandbox.join("home"));
    let outcome = sandbox::run(&job.script, &job.sandbox, &dir, job.limit).await;
    update(&|inv| {
        inv.ended = Some(now());
        match &outcome {
            Ok(o) => {
                inv.stdout = truncate(&o.stdout);
                inv.stderr = truncate(&o.stderr);
                (inv.status, inv.response_code) = match o.exit_code {
                    Some(0) => (CommandStatus::Success, 0),
                    Some(code) => (CommandStatus::Failed, code),
                    None => (CommandStatus::TimedOut, -1),
                };
            }
            Err(e) => {
                inv.stderr = format!("failed to run the script: {e}");
                inv.status = CommandStatus::Failed;
                inv.response_code = 1;
            }
        }
    });
}

/// How long a delivered script may run. `TimeoutSeconds` is the delivery
/// timeout (how long the command may wait for the agent, immediate here), not
/// the run time: that is AWS-RunShellScript's `executionTimeout` (default 3600 s).
fn run_limit(_delivery_timeout: u64, execution_timeout: u64) -> Duration {
    Duration::from_secs(execution_timeout)
}

fn truncate(s: &str) -> String {
    s.chars().take(OUTPUT_LIMIT).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InvocationInput {
    command_id: String,
    instance_id: String,
}

pub(super) fn get_invocation(state: &AppState, body: &[u8]) -> ApiResult {
    let req: InvocationInput = input(body)?;
    let mut world = state.world();
    let result = get_in(&mut world, &req);
    recorded(
        &mut world,
        "ssm:GetCommandInvocation",
        Event::on(&req.instance_id),
        result,
    )
}

fn get_in(world: &mut World, req: &InvocationInput) -> ApiResult {
    super::check_action(world, "ssm:GetCommandInvocation", "*")?;
    let missing = || ApiError::new("InvocationDoesNotExist", "");
    let command = world
        .commands
        .get_mut(&req.command_id)
        .ok_or_else(missing)?;
    let fresh = command.requested_at.elapsed() < NOT_YET_VISIBLE;
    let (document, comment) = (command.document.clone(), command.comment.clone());
    let inv = command
        .invocations
        .get_mut(&req.instance_id)
        .ok_or_else(missing)?;
    inv.polls += 1;
    if inv.polls == 1 && fresh {
        return Err(missing());
    }
    let (status, details) = match inv.status {
        CommandStatus::Pending => ("Pending", "Pending"),
        CommandStatus::InProgress => ("InProgress", "InProgress"),
        CommandStatus::Success => ("Success", "Success"),
        CommandStatus::Failed => ("Failed", "Failed"),
        CommandStatus::TimedOut => ("TimedOut", "ExecutionTimedOut"),
    };
    let elapsed = match (inv.started, inv.ended) {
        (Some(s), Some(e)) => duration_text(e - s),
        _ => String::new(),
    };
    Ok(json!({
        "CommandId": req.command_id,
        "InstanceId": req.instance_id,
        "Comment": comment,
        "DocumentName": document,
        "DocumentVersion": "1",
        "PluginName": "aws:runShellScript",
        "ResponseCode": inv.response_code,
        "ExecutionStartDateTime": inv.started.map(iso8601).unwrap_or_default(),
        "ExecutionElapsedTime": elapsed,
        "ExecutionEndDateTime": inv.ended.map(iso8601).unwrap_or_default(),
        "Status": status,
        "StatusDetails": details,
        "StandardOutputContent": inv.stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": inv.stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": { "CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false },
    }))
}

/// `PT1.234S`, the form the service uses for ExecutionElapsedTime.
fn duration_text(seconds: f64) -> String {
    format!("PT{:.3}S", seconds.max(0.0))
}

/// Epoch seconds as `2024-05-01T12:00:00.123Z`.
fn iso8601(epoch: f64) -> String {
    let millis = (epoch * 1000.0) as i64;
    let (secs, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_seconds_does_not_bound_the_run() {
        assert_eq!(run_limit(30, 3600), Duration::from_secs(3600));
        assert_eq!(run_limit(600, 5), Duration::from_secs(5));
    }

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000.5), "2023-11-14T22:13:20.500Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00.000Z");
    }
}
