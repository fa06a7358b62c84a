//! The CloudWatch Logs Insights fallback, with moto serving CloudWatch Logs
//! and the fake serving SSM and STS.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use common::*;
use sm_ssh_integration::moto::{MotoServer, MOTO_ENV};
use sm_ssh_integration::world::{Instance, PingStatus};

const REGISTERED: &str =
    "Successfully registered the instance with AWS SSM using Managed instance-id";

/// An instance tagged like sagemaker-ssh-helper tags endpoints: an owner,
/// and an empty name and ARN.
fn untagged(id: &str, owner: &str, status: PingStatus, registered: u64) -> Instance {
    Instance {
        id: id.into(),
        ping_status: status,
        tags: [
            ("SSHOwner".to_string(), owner.to_string()),
            ("SSHResourceName".to_string(), String::new()),
            ("SSHResourceArn".to_string(), String::new()),
        ]
        .into(),
        registration_date: registered as f64,
        ..Instance::default()
    }
}

/// Writes `lines` as (stream, message) events into `group` on moto.
async fn put_logs(endpoint: &str, group: &str, lines: &[(&str, String)]) {
    let config = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    let logs = aws_sdk_cloudwatchlogs::Client::from_conf(config);
    logs.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (i, (stream, message)) in lines.iter().enumerate() {
        let _ = logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(*stream)
            .send()
            .await;
        logs.put_log_events()
            .log_group_name(group)
            .log_stream_name(*stream)
            .log_events(
                InputLogEvent::builder()
                    .timestamp(now - 60_000 + i as i64 * 1000)
                    .message(message)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
}

fn registration(id: &str) -> String {
    format!("[sagemaker-ssh-helper][sm-setup-ssh][start-ssh] {REGISTERED}: {id}")
}

#[test]
fn endpoints_and_untagged_jobs_resolve_from_the_agents_registration_line() {
    if std::env::var_os(MOTO_ENV).is_none() {
        eprintln!("{MOTO_ENV} is not set (run scripts/test): skipping the moto test");
        return;
    }
    let moto = MotoServer::start().expect("moto starts");
    let me = caller().user_id;
    let mut env = Env::start(seed_with(vec![
        untagged(
            "mi-000000000000000e1",
            &me,
            PingStatus::ConnectionLost,
            1_700_000_000,
        ),
        untagged(
            "mi-000000000000000e2",
            &me,
            PingStatus::Online,
            1_700_000_100,
        ),
        untagged(
            "mi-000000000000000e3",
            "AROAEXAMPLEOTHER:bob",
            PingStatus::Online,
            1_700_000_200,
        ),
        untagged(
            "mi-000000000000000f1",
            &me,
            PingStatus::Online,
            1_700_000_000,
        ),
    ]));
    env.use_logs_endpoint(&moto.endpoint());
    env.runtime().block_on(async {
        put_logs(
            &moto.endpoint(),
            "/aws/sagemaker/Endpoints/my-ep",
            &[
                ("AllTraffic/i-0aaa", registration("mi-000000000000000e1")),
                ("AllTraffic/i-0aaa", "unrelated line".to_string()),
                ("Canary/i-0bbb", registration("mi-000000000000000e2")),
                ("AllTraffic/i-0ccc", registration("mi-000000000000000e3")),
                // Newest, but deregistered since: SSM no longer knows it.
                ("AllTraffic/i-0ddd", registration("mi-000000000000000dd")),
            ],
        )
        .await;
        put_logs(
            &moto.endpoint(),
            "/aws/sagemaker/TrainingJobs",
            &[
                (
                    "other-job/algo-1-1700000000",
                    registration("mi-000000000000000f2"),
                ),
                (
                    "log-job/algo-1-1700000000",
                    registration("mi-000000000000000f1"),
                ),
            ],
        )
        .await;
    });

    // Any variant's stream counts; the other owner's instance and the
    // offline one lose.
    let (stdout, _) = assert_exit(&env.run(["list", "my-ep.inference.sagemaker", "--json"]), 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["instance_id"], "mi-000000000000000e2", "{stdout}");
    assert_eq!(rows[0]["host"], "my-ep.inference.sagemaker");
    assert_eq!(rows[0]["kind"], "inference");

    // A training job whose instance carries no name: tags fail, logs find it
    // in the job's own stream only.
    let (stdout, _) = assert_exit(
        &env.run(["list", "log-job.training.sagemaker", "--json"]),
        0,
    );
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["instance_id"], "mi-000000000000000f1", "{stdout}");

    // An endpoint with no log group: not found, and the message says why.
    let output = env.run(["list", "no-such-ep.inference.sagemaker"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(
        stderr.contains("CloudWatch Logs /aws/sagemaker/Endpoints/no-such-ep"),
        "{stderr}"
    );
}
