//! The CloudWatch Logs Insights fallback: the SSM agent inside the container
//! logs "Successfully registered the instance with AWS SSM using Managed
//! instance-id: mi-…" to the resource's log group. Endpoints carry no name in
//! their tags, so for them this is the only way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::QueryStatus;
use tokio::time::{sleep, Instant};

use crate::error::AwsError;
use crate::target::{Kind, SageMakerTarget};

pub const REGISTERED: &str =
    "Successfully registered the instance with AWS SSM using Managed instance-id";

/// How far back to search: jobs run at most 28 days.
const LOOKBACK: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a query may stay Scheduled or Running before we give up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

/// Where the agent's registration line lands for `target`: the log group,
/// and a log stream substring that narrows it to the resource.
pub fn location(target: &SageMakerTarget) -> (String, Option<String>) {
    let name = &target.name;
    match target.kind {
        // One group per endpoint; any variant's stream (not only AllTraffic).
        Kind::Inference => (format!("/aws/sagemaker/Endpoints/{name}"), None),
        Kind::Training => (
            "/aws/sagemaker/TrainingJobs".into(),
            Some(format!("{name}/")),
        ),
        Kind::Processing => (
            "/aws/sagemaker/ProcessingJobs".into(),
            Some(format!("{name}/")),
        ),
        Kind::Transform => (
            "/aws/sagemaker/TransformJobs".into(),
            Some(format!("{name}/")),
        ),
        Kind::Notebook => (
            "/aws/sagemaker/NotebookInstances".into(),
            Some(format!("{name}/")),
        ),
        Kind::Studio => ("/aws/sagemaker/studio".into(), Some(format!("/{name}"))),
    }
}

/// The Logs Insights query. Substring `like "…"` filters rather than
/// regular expressions; names are `[A-Za-z0-9-]` so need no escaping.
pub fn query(stream: Option<&str>) -> String {
    let mut query = String::from("fields @timestamp, @logStream, @message");
    if let Some(stream) = stream {
        query.push_str(&format!(" | filter @logStream like \"{stream}\""));
    }
    query.push_str(&format!(
        " | filter @message like \"{REGISTERED}\" | sort @timestamp desc | limit 20"
    ));
    query
}

/// The `mi-…` id in a registration line.
pub fn instance_id(message: &str) -> Option<String> {
    let rest = &message[message.find(REGISTERED)? + REGISTERED.len()..];
    let start = rest.find("mi-")?;
    let id: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    crate::target::is_instance_id(&id).then_some(id)
}

/// What the search found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Instance ids, newest registration first, without repeats.
    pub instance_ids: Vec<String>,
    /// Set when the search could not be completed (query failed, timed out,
    /// log group absent): said in the "not found" message.
    pub note: Option<String>,
}

/// Runs the query over the target's log group and waits for its results.
/// `since` (epoch seconds) narrows the window: Logs Insights bills by the
/// data scanned, and `--wait` only needs lines logged while it waits.
pub async fn search(
    logs: &aws_sdk_cloudwatchlogs::Client,
    target: &SageMakerTarget,
    since: Option<u64>,
) -> Result<Found, AwsError> {
    let (group, stream) = location(target);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start = (now - LOOKBACK).as_secs().max(since.unwrap_or(0));
    let started = logs
        .start_query()
        .log_group_name(&group)
        .start_time(start as i64)
        .end_time(now.as_secs() as i64 + 60)
        .query_string(query(stream.as_deref()))
        .limit(20)
        .send()
        .await;
    let query_id = match started {
        Ok(output) => output.query_id().unwrap_or_default().to_string(),
        Err(error) => {
            return match error.code() {
                Some("ResourceNotFoundException") => Ok(Found {
                    note: Some(format!("log group {group} does not exist")),
                    ..Found::default()
                }),
                // A log group younger than the start time.
                Some("MalformedQueryException") => Ok(Found {
                    note: Some(format!("Logs Insights rejected the query on {group}")),
                    ..Found::default()
                }),
                _ => Err(AwsError::from_sdk("logs:StartQuery", &error)),
            };
        }
    };
    tracing::debug!(%group, %query_id, "Logs Insights query started");
    let deadline = Instant::now() + QUERY_TIMEOUT;
    loop {
        let output = logs
            .get_query_results()
            .query_id(&query_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("logs:GetQueryResults", &e))?;
        let status = output.status().cloned();
        match status {
            Some(QueryStatus::Complete) => {
                let messages = output.results().iter().filter_map(|row| {
                    row.iter()
                        .find(|field| field.field() == Some("@message"))
                        .and_then(|field| field.value())
                });
                let mut found = Found::default();
                for id in messages.filter_map(instance_id) {
                    if !found.instance_ids.contains(&id) {
                        found.instance_ids.push(id);
                    }
                }
                return Ok(found);
            }
            Some(QueryStatus::Scheduled | QueryStatus::Running) if Instant::now() < deadline => {
                sleep(POLL).await;
            }
            Some(QueryStatus::Scheduled | QueryStatus::Running) => {
                let _ = logs.stop_query().query_id(&query_id).send().await;
                return Ok(Found {
                    note: Some(format!(
                        "the Logs Insights query on {group} did not finish within {}s",
                        QUERY_TIMEOUT.as_secs()
                    )),
                    ..Found::default()
                });
            }
            other => {
                return Ok(Found {
                    note: Some(format!(
                        "the Logs Insights query on {group} ended {}",
                        other.as_ref().map_or("without a status", |s| s.as_str())
                    )),
                    ..Found::default()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn target(host: &str) -> SageMakerTarget {
        match Target::parse(host).unwrap() {
            Target::SageMaker(target) => target,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn log_groups_per_kind() {
        assert_eq!(
            location(&target("ep.inference.sagemaker")),
            ("/aws/sagemaker/Endpoints/ep".into(), None)
        );
        assert_eq!(
            location(&target("job.training.sagemaker")),
            ("/aws/sagemaker/TrainingJobs".into(), Some("job/".into()))
        );
        assert_eq!(
            location(&target("job.transform.sagemaker")).0,
            "/aws/sagemaker/TransformJobs"
        );
    }

    #[test]
    fn query_filters_by_substring_newest_first() {
        let query = query(Some("job/"));
        assert!(query.contains("filter @logStream like \"job/\""));
        assert!(query.contains(&format!("filter @message like \"{REGISTERED}\"")));
        assert!(query.contains("sort @timestamp desc"));
    }

    #[test]
    fn instance_ids_are_taken_from_registration_lines() {
        let line = format!(
            "[sagemaker-ssh-helper][sm-setup-ssh][start-ssh] {REGISTERED}: mi-0123456789abcdef0\n"
        );
        assert_eq!(instance_id(&line).as_deref(), Some("mi-0123456789abcdef0"));
        assert_eq!(instance_id("mi-0123456789abcdef0"), None);
        assert_eq!(instance_id(&format!("{REGISTERED}: mi-zz")), None);
    }
}
