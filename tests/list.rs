//! `sm-ssh list`: the table and the JSON, through the fake AWS.

mod common;

use common::*;
use sm_ssh_integration::world::PingStatus;

fn seeded() -> Env {
    let mut lost = training_instance("mi-0000000000000000b", "b-job", 1_700_000_100);
    lost.ping_status = PingStatus::ConnectionLost;
    lost.last_ping = 1_700_000_200.0;
    let mut endpoint = training_instance("mi-0000000000000000e", "", 1_700_000_300);
    endpoint.tags.insert("SSHResourceArn".into(), String::new());
    Env::start(seed_with(vec![
        training_instance("mi-0000000000000000a", "a-job", 1_700_000_000),
        lost,
        sagemaker_instance(
            "mi-0000000000000000c",
            &caller().user_id,
            "default",
            "app/d-abc/space-1/JupyterLab/default",
            1_700_000_000,
        ),
        sagemaker_instance(
            "mi-0000000000000000d",
            "AROAEXAMPLEOTHER:bob",
            "bobs-job",
            "processing-job/bobs-job",
            1_700_000_000,
        ),
        endpoint,
    ]))
}

#[test]
fn table_lists_your_instances_with_the_host_to_use() {
    let env = seeded();
    let output = env.run(["list"]);
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stderr.is_empty(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    let header: Vec<&str> = lines[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "KIND",
            "INSTANCE",
            "STATUS",
            "LAST PING",
            "AGE",
            "HOST"
        ]
    );
    // Sorted by host; every column starts where its header does.
    let hosts: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "a-job.training.sagemaker",
            "b-job.training.sagemaker",
            "default.space-1.d-abc.studio.sagemaker",
            "mi-0000000000000000e",
        ]
    );
    let column = lines[0].find("INSTANCE").unwrap();
    for line in &lines[1..] {
        assert_eq!(&line[column..column + 3], "mi-", "{stdout}");
    }
    assert!(lines[2].contains("ConnectionLost"), "{stdout}");
    assert!(lines[2].contains(" ago "), "{stdout}");
    assert!(!stdout.contains("bobs-job"), "{stdout}");
}

#[test]
fn owner_any_and_patterns() {
    let env = seeded();
    let (stdout, _) = assert_exit(&env.run(["list", "--owner", "any"]), 0);
    assert!(stdout.contains("bobs-job.processing.sagemaker"), "{stdout}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    let (stdout, _) = assert_exit(&env.run(["list", "*.training.*"]), 0);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let (stdout, _) = assert_exit(&env.run(["list", "b-j"]), 0);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let (stdout, stderr) = assert_exit(&env.run(["list", "nothing-like-this"]), 0);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("No SSH-enabled instances"), "{stderr}");
    assert!(stderr.contains("nothing-like-this"), "{stderr}");
    assert!(stderr.contains(REGION), "{stderr}");
}

#[test]
fn json_is_an_array_of_stable_objects() {
    let env = seeded();
    let (stdout, _) = assert_exit(&env.run(["list", "--json", "a-job"]), 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{
            "host": "a-job.training.sagemaker",
            "name": "a-job",
            "kind": "training",
            "instance_id": "mi-0000000000000000a",
            "ping_status": "Online",
            "last_ping": "2023-11-14T22:14:20Z",
            "registered": "2023-11-14T22:13:20Z",
            "computer_name": "algo-1",
            "owner": caller().user_id,
            "resource_arn": sagemaker_arn("training-job/a-job"),
            "path": "helper",
        }])
    );
    let (stdout, _) = assert_exit(&env.run(["list", "--json", "nothing-like-this"]), 0);
    assert_eq!(stdout.trim(), "[]");
    let (stdout, _) = assert_exit(&env.run(["list", "--json"]), 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let endpoint = &rows.as_array().unwrap()[3];
    assert_eq!(endpoint["host"], "mi-0000000000000000e");
    assert_eq!(endpoint["kind"], serde_json::Value::Null);
}

#[test]
fn many_instances_are_paged_and_tagged_once_each() {
    let instances = (0..120)
        .map(|i| training_instance(&format!("mi-{i:017x}"), &format!("job-{i}"), 1_700_000_000))
        .collect();
    let env = Env::start(seed_with(instances));
    let (stdout, _) = assert_exit(&env.run(["list", "--json"]), 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 120);
    let events = env.fake.events();
    let count = |action: &str| events.iter().filter(|e| e.action == action).count();
    assert_eq!(count("ssm:DescribeInstanceInformation"), 3);
    assert_eq!(count("ssm:ListTagsForResource"), 120);
}

#[test]
fn sm_ssh_log_sends_diagnostics_to_a_file_and_never_to_stdout() {
    let env = seeded();
    let log = env.home().join("sm-ssh.log");
    let output = env
        .sm_ssh(["-v", "list", "--json"])
        .env("SM_SSH_LOG", &log)
        .output()
        .unwrap();
    let (stdout, stderr) = assert_exit(&output, 0);
    serde_json::from_str::<serde_json::Value>(&stdout).expect("stdout is only the JSON");
    assert!(stderr.is_empty(), "{stderr}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("listed SSH-enabled instances"), "{logged}");
    assert!(!logged.contains("testing"), "credentials leaked: {logged}");

    // Without the variable, -v goes to stderr, and stdout stays clean.
    let output = env.run(["-v", "list", "a-job.training.sagemaker", "--json"]);
    let (stdout, stderr) = assert_exit(&output, 0);
    serde_json::from_str::<serde_json::Value>(&stdout).expect("stdout is only the JSON");
    assert!(stderr.contains("resolution candidates"), "{stderr}");
}
