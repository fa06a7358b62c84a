//! Name resolution through the real binary and the fake AWS:
//! `sm-ssh list <target>` runs the same resolution as `connect` and `proxy`.

mod common;

use std::time::Duration;

use common::*;
use sm_ssh_integration::world::{ApiEvent, Identity, PingStatus};

const OTHER_OWNER: &str = "AROAEXAMPLEOTHER:bob";

/// The instance id `list <target> --json` resolved to.
fn resolved_id(env: &Env, args: &[&str]) -> String {
    let output = env.run(args);
    let (stdout, _) = assert_exit(&output, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(rows.as_array().unwrap().len(), 1, "{stdout}");
    rows[0]["instance_id"].as_str().unwrap().to_string()
}

fn calls(events: &[ApiEvent], action: &str) -> usize {
    events.iter().filter(|e| e.action == action).count()
}

#[test]
fn your_instance_is_chosen_over_a_newer_one_of_another_owner() {
    let env = Env::start(seed_with(vec![
        training_instance("mi-00000000000000001", "shared-job", 1_700_000_000),
        sagemaker_instance(
            "mi-00000000000000002",
            OTHER_OWNER,
            "shared-job",
            "training-job/shared-job",
            1_700_000_500,
        ),
    ]));
    let target = "shared-job.training.sagemaker";
    assert_eq!(
        resolved_id(&env, &["list", target, "--json"]),
        "mi-00000000000000001"
    );
    assert_eq!(
        resolved_id(&env, &["list", target, "--json", "--owner", "any"]),
        "mi-00000000000000002"
    );
    assert_eq!(
        resolved_id(&env, &["list", target, "--json", "--owner", OTHER_OWNER]),
        "mi-00000000000000002"
    );
    // The default owner comes from STS; `--owner` skips the call.
    let events = env.fake.events();
    assert_eq!(calls(&events, "sts:GetCallerIdentity"), 1);
}

#[test]
fn online_first_then_newest_and_kind_must_match() {
    let mut processing = sagemaker_instance(
        "mi-0000000000000000f",
        &caller().user_id,
        "job",
        "processing-job/job",
        1_700_009_000,
    );
    processing.computer_name = "algo-1".into();
    let mut newest_offline = training_instance("mi-00000000000000003", "job", 1_700_003_000);
    newest_offline.ping_status = PingStatus::ConnectionLost;
    let env = Env::start(seed_with(vec![
        training_instance("mi-00000000000000001", "job", 1_700_001_000),
        training_instance("mi-00000000000000002", "job", 1_700_002_000),
        newest_offline,
        processing,
    ]));
    assert_eq!(
        resolved_id(&env, &["list", "job.training.sagemaker", "--json"]),
        "mi-00000000000000002"
    );
    assert_eq!(
        resolved_id(&env, &["list", "job.processing.sagemaker", "--json"]),
        "mi-0000000000000000f"
    );
}

#[test]
fn arn_fallback_finds_a_name_ssh_lowercased() {
    // SageMaker names keep their case in SSHResourceName but not in ARNs,
    // and ssh lowercases host names.
    let env = Env::start(seed_with(vec![
        sagemaker_instance(
            "mi-0000000000000000a",
            &caller().user_id,
            "My-Job",
            "training-job/my-job",
            1_700_000_000,
        ),
        training_instance("mi-0000000000000000b", "unrelated", 1_700_000_000),
        training_instance("mi-0000000000000000c", "another", 1_700_000_000),
    ]));
    assert_eq!(
        resolved_id(&env, &["list", "my-job.training.sagemaker", "--json"]),
        "mi-0000000000000000a"
    );
    let events = env.fake.events();
    // One filtered describe by name (empty), one of the owner's instances,
    // then each instance's tags once.
    assert_eq!(calls(&events, "ssm:DescribeInstanceInformation"), 2);
    assert_eq!(calls(&events, "ssm:ListTagsForResource"), 3);
}

#[test]
fn studio_apps_resolve_by_app_space_and_domain() {
    let app = |id: &str, space: &str, ts: u64| {
        sagemaker_instance(
            id,
            &caller().user_id,
            "default",
            &format!("app/d-abc123/{space}/JupyterLab/default"),
            ts,
        )
    };
    let env = Env::start(seed_with(vec![
        app("mi-000000000000000a1", "alice-space", 1_700_000_000),
        app("mi-000000000000000b2", "team-space", 1_700_000_100),
    ]));
    assert_eq!(
        resolved_id(
            &env,
            &[
                "list",
                "default.alice-space.d-abc123.studio.sagemaker",
                "--json"
            ]
        ),
        "mi-000000000000000a1"
    );
    // The short form takes the newest app of that name in any space.
    assert_eq!(
        resolved_id(&env, &["list", "default.studio.sagemaker", "--json"]),
        "mi-000000000000000b2"
    );
    let output = env.run(["list", "default.other.d-abc123.studio.sagemaker"]);
    assert_exit(&output, 3);
}

#[test]
fn node_picks_one_node_of_a_multi_node_job_in_host_name_order() {
    let node = |id: &str, host: &str| {
        let mut instance = training_instance(id, "big", 1_700_000_000);
        instance.computer_name = host.into();
        instance
    };
    let env = Env::start(seed_with(vec![
        node("mi-00000000000000010", "algo-10"),
        node("mi-00000000000000002", "algo-2"),
        node("mi-00000000000000001", "algo-1"),
    ]));
    let target = "big.training.sagemaker";
    assert_eq!(
        resolved_id(&env, &["list", target, "--json", "--node", "1"]),
        "mi-00000000000000001"
    );
    assert_eq!(
        resolved_id(&env, &["list", target, "--json", "--node", "3"]),
        "mi-00000000000000010"
    );
    let output = env.run(["list", target, "--node", "4"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(stderr.contains("no node 4"), "{stderr}");
    assert!(
        stderr.contains("2 = algo-2 (mi-00000000000000002)"),
        "{stderr}"
    );
}

#[test]
fn an_offline_instance_is_an_error_naming_target_instance_and_owner() {
    let mut instance = training_instance("mi-0000000000000000d", "gone", 1_700_000_000);
    instance.ping_status = PingStatus::ConnectionLost;
    let env = Env::start(seed_with(vec![instance]));
    let output = env.run(["list", "gone.training.sagemaker"]);
    let (stdout, stderr) = assert_exit(&output, 4);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("gone.training.sagemaker"), "{stderr}");
    assert!(stderr.contains("mi-0000000000000000d"), "{stderr}");
    assert!(stderr.contains("ConnectionLost"), "{stderr}");
    assert!(
        stderr.contains(&format!("SSHOwner = {}", caller().user_id)),
        "{stderr}"
    );
    assert!(stderr.contains("--wait"), "{stderr}");
}

#[test]
fn nothing_found_says_what_was_searched_and_what_to_check() {
    let env = Env::start(seed_with(vec![sagemaker_instance(
        "mi-0000000000000000e",
        OTHER_OWNER,
        "theirs",
        "training-job/theirs",
        1_700_000_000,
    )]));
    let output = env.run(["list", "theirs.training.sagemaker"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(
        stderr.contains(&format!("theirs.training.sagemaker in {REGION}")),
        "{stderr}"
    );
    assert!(stderr.contains(&caller().user_id), "{stderr}");
    assert!(stderr.contains("SSHResourceName = theirs"), "{stderr}");
    // The fake serves no CloudWatch Logs: the fallback says why it did not help.
    assert!(
        stderr.contains("CloudWatch Logs /aws/sagemaker/TrainingJobs"),
        "{stderr}"
    );
    assert!(stderr.contains("--owner any"), "{stderr}");
}

#[test]
fn instance_ids_and_native_targets() {
    let mut offline = training_instance("mi-0000000000000000f", "x", 1_700_000_000);
    offline.ping_status = PingStatus::Inactive;
    let env = Env::start(seed_with(vec![
        training_instance("mi-00000000000000001", "x", 1_700_000_000),
        offline,
    ]));
    assert_eq!(
        resolved_id(&env, &["list", "mi-00000000000000001", "--json"]),
        "mi-00000000000000001"
    );
    assert_exit(&env.run(["list", "mi-0000000000000000f"]), 4);
    assert_exit(&env.run(["list", "mi-00000000000000099"]), 3);
    assert_eq!(
        resolved_id(
            &env,
            &["list", "sagemaker-training-job:my-job_algo-1", "--json"]
        ),
        "sagemaker-training-job:my-job_algo-1"
    );
}

#[test]
fn wait_polls_until_the_instance_comes_online() {
    let mut instance = training_instance("mi-00000000000000077", "starting", 1_700_000_000);
    instance.ping_status = PingStatus::ConnectionLost;
    let env = Env::start(seed_with(vec![instance]));
    let child = env
        .sm_ssh([
            "list",
            "starting.training.sagemaker",
            "--json",
            "--wait",
            "120",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Flip the status only once the binary has seen it offline.
    while calls(&env.fake.events(), "ssm:DescribeInstanceInformation") == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    env.set_ping_status("mi-00000000000000077", PingStatus::Online);
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stdout.contains("mi-00000000000000077"), "{stdout}");
    // Not a terminal: no spinner.
    assert!(!stderr.contains("waiting for"), "{stderr}");
    assert!(calls(&env.fake.events(), "ssm:DescribeInstanceInformation") >= 2);
}

#[test]
fn wait_gives_up_with_the_last_reason() {
    let mut instance = training_instance("mi-00000000000000078", "stuck", 1_700_000_000);
    instance.ping_status = PingStatus::ConnectionLost;
    let env = Env::start(seed_with(vec![instance]));
    let output = env.run(["list", "stuck.training.sagemaker", "--wait", "1"]);
    let (_, stderr) = assert_exit(&output, 4);
    assert!(stderr.contains("gave up waiting after 1s"), "{stderr}");
    assert!(stderr.contains("ConnectionLost"), "{stderr}");
}

#[test]
fn access_denied_names_the_action_and_suggests_doctor() {
    let env = Env::start(seed_with(vec![training_instance(
        "mi-00000000000000001",
        "job",
        1_700_000_000,
    )]));
    env.fake
        .deny_action("ssm:DescribeInstanceInformation", true);
    let output = env.run(["list", "job.training.sagemaker"]);
    let (_, stderr) = assert_exit(&output, 6);
    assert!(
        stderr.contains("AWS denied ssm:DescribeInstanceInformation"),
        "{stderr}"
    );
    assert!(stderr.contains("sm-ssh doctor"), "{stderr}");
}

#[test]
fn missing_credentials_and_region_say_how_to_fix_them() {
    let env = Env::start(seed_with(Vec::new()));
    let mut command = env.sm_ssh(["--profile", "dev", "list"]);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    std::fs::create_dir_all(env.home().join(".aws")).unwrap();
    std::fs::write(
        env.home().join(".aws/config"),
        "[profile dev]\nregion = eu-west-1\n",
    )
    .unwrap();
    let output = command.output().unwrap();
    let (_, stderr) = assert_exit(&output, 5);
    assert!(stderr.contains("aws sso login --profile dev"), "{stderr}");
    assert!(!stderr.contains("testing"), "{stderr}");

    let mut command = env.sm_ssh(["list"]);
    command
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION");
    let output = command.output().unwrap();
    let (_, stderr) = assert_exit(&output, 5);
    assert!(stderr.contains("--region"), "{stderr}");
    assert!(stderr.contains("AWS_REGION"), "{stderr}");
}

#[test]
fn a_changed_caller_identity_changes_the_default_owner() {
    let env = Env::start(seed_with(vec![sagemaker_instance(
        "mi-00000000000000005",
        OTHER_OWNER,
        "job",
        "training-job/job",
        1_700_000_000,
    )]));
    assert_exit(&env.run(["list", "job.training.sagemaker"]), 3);
    env.fake.set_identity(Identity {
        user_id: OTHER_OWNER.into(),
        ..Identity::default()
    });
    assert_eq!(
        resolved_id(&env, &["list", "job.training.sagemaker", "--json"]),
        "mi-00000000000000005"
    );
}

#[test]
fn wait_shows_a_spinner_only_on_a_terminal() {
    let mut instance = training_instance("mi-00000000000000079", "slow", 1_700_000_000);
    instance.ping_status = PingStatus::ConnectionLost;
    let env = Env::start(seed_with(vec![instance]));
    // util-linux `script` (Debian's essential bsdutils) runs the binary on a
    // pseudo-terminal and copies what it writes.
    let mut command = std::process::Command::new("script");
    command.args(["-qec"]).arg(format!(
        "{} list slow.training.sagemaker --wait 1",
        env!("CARGO_BIN_EXE_sm-ssh")
    ));
    command.arg("/dev/null");
    let configured = env.sm_ssh(Vec::<&str>::new());
    for (key, value) in configured.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let output = command.stdin(std::process::Stdio::null()).output().unwrap();
    let terminal = String::from_utf8_lossy(&output.stdout);
    assert!(
        terminal.contains(
            "waiting for slow.training.sagemaker (mi-00000000000000079 is ConnectionLost)"
        ),
        "{terminal}"
    );
    assert!(terminal.contains("gave up waiting after 1s"), "{terminal}");
}

#[test]
fn wait_finds_an_instance_that_registers_while_waiting() {
    let env = Env::start(seed_with(Vec::new()));
    let child = env
        .sm_ssh(["list", "late.training.sagemaker", "--json", "--wait", "120"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Register only once the binary has searched and found nothing.
    while calls(&env.fake.events(), "ssm:DescribeInstanceInformation") < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    env.add_instance(training_instance(
        "mi-00000000000000088",
        "late",
        1_700_000_000,
    ));
    let output = child.wait_with_output().unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    assert!(stdout.contains("mi-00000000000000088"), "{stdout}");
}
