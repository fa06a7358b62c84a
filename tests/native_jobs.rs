//! Training jobs with remote debugging and endpoints with SSM access,
//! reached by name on SageMaker's own Session Manager targets (no sshd, no
//! helper): `connect` opening a shell or running a command, `forward` to a
//! port, `proxy` refusing with what works, the clear errors (remote
//! debugging off, not training, network isolation, IAM), an endpoint with
//! two instances and two containers, `list --json`, doctor, policy and
//! `debug enable`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;

use common::{assert_exit, seed_with, text, Env, ACCOUNT};
use sm_ssh_integration::sagemaker::{Endpoint, TrainingJob, Variant};
use sm_ssh_integration::world::{Instance, Seed};

const JOB: &str = "trainer";
const ENDPOINT: &str = "ep";
const INSTANCES: [&str; 2] = ["i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"];

fn job(name: &str) -> TrainingJob {
    TrainingJob {
        name: name.into(),
        instance_count: 2,
        remote_debug: true,
        ..TrainingJob::default()
    }
}

fn native(id: &str) -> Instance {
    Instance {
        id: id.into(),
        native: true,
        ..Instance::default()
    }
}

/// A debuggable job with two hosts, three jobs that cannot be debugged, and
/// an endpoint with two instances of two containers each; no helper
/// instances at all.
fn seed() -> Seed {
    let mut seed = seed_with(Vec::new());
    let jobs = vec![
        job(JOB),
        TrainingJob {
            remote_debug: false,
            ..job("plain")
        },
        TrainingJob {
            secondary_status: "Starting".into(),
            ..job("early")
        },
        TrainingJob {
            network_isolation: true,
            ..job("isolated")
        },
        TrainingJob {
            remote_debug: false,
            status: "Completed".into(),
            secondary_status: "Completed".into(),
            ..job("done")
        },
    ];
    let endpoint = Endpoint {
        name: ENDPOINT.into(),
        variants: vec![Variant {
            instance_ids: INSTANCES.map(String::from).into(),
            containers: vec!["container_0".into(), "container_1".into()],
            ..Variant::default()
        }],
        ..Endpoint::default()
    };
    seed.instances = jobs[0]
        .native_targets()
        .into_iter()
        .chain(endpoint.native_targets())
        .map(|id| native(&id))
        .collect();
    seed.sagemaker.training_jobs = jobs;
    seed.sagemaker.endpoints = vec![endpoint];
    seed
}

/// Runs `sm-ssh <args>` with `input` piped into stdin.
fn piped(env: &Env, args: &[&str], input: &str) -> std::process::Output {
    let mut child = env
        .sm_ssh(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn started_on(env: &Env) -> Vec<(String, String)> {
    env.fake
        .events()
        .into_iter()
        .filter(|e| e.action == "ssm:StartSession" && e.error.is_none())
        .map(|e| {
            (
                e.resource.unwrap_or_default(),
                e.document.unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn connect_opens_a_shell_on_the_node_asked_as_root() {
    let env = Env::start(seed());
    let host = format!("{JOB}.training.sagemaker");
    let output = piped(
        &env,
        &["-v", "connect", &host, "--node", "2"],
        "echo shell-$((6*7))\n",
    );
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stdout.contains("shell-42"), "{stdout}\n{stderr}");
    assert!(stderr.contains("as root"), "{stderr}");
    assert!(
        stderr.contains("remote debugging"),
        "-v names the path: {stderr}"
    );
    let target = format!("sagemaker-training-job:{JOB}_algo-2");
    assert!(
        started_on(&env)
            .iter()
            .any(|(t, d)| t.ends_with(&target) && d == "SSM-SessionManagerRunShell"),
        "{:?}",
        started_on(&env)
    );
    // A command runs as `exec` runs it, with its exit status.
    let output = env.run(["connect", &host, "--", "sh", "-c", "echo out; exit 3"]);
    let (stdout, _) = assert_exit(&output, 3);
    assert!(stdout.contains("out"), "{stdout}");
    // ssh options need ssh.
    let output = env.run(["connect", &host, "-L", "8080:localhost:80"]);
    let (_, stderr) = assert_exit(&output, 2);
    assert!(stderr.contains("sm-ssh forward"), "{stderr}");
}

#[test]
fn forward_reaches_a_port_on_a_debuggable_job() {
    let env = Env::start(seed());
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = echo.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = echo.accept().unwrap();
        let mut buffer = [0u8; 64];
        let n = socket.read(&mut buffer).unwrap();
        socket.write_all(&buffer[..n]).unwrap();
    });
    env.fake
        .map_port(&format!("sagemaker-training-job:{JOB}_algo-1"), 6006, addr);
    let host = format!("{JOB}.training.sagemaker");
    let forward = common::start_forward(&env, &[&host, "-L", "0:6006"], 1);
    let mut local = std::net::TcpStream::connect(("127.0.0.1", forward.ports[0])).unwrap();
    local.write_all(b"tensorboard").unwrap();
    let mut back = [0u8; 11];
    local.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"tensorboard");
    server.join().unwrap();
    assert!(
        forward.stderr().contains("AWS-StartPortForwardingSession"),
        "{}",
        forward.stderr()
    );
}

#[test]
fn proxy_says_what_works_without_sshd() {
    let env = Env::start(seed());
    let host = format!("{JOB}.training.sagemaker");
    let output = env.run(["proxy", &host]);
    let (stdout, stderr) = assert_exit(&output, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!("sm-ssh connect {host}")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("sm-ssh shell {host}")), "{stderr}");
}

#[test]
fn jobs_that_cannot_be_debugged_say_why_in_one_message() {
    let env = Env::start(seed());
    for (name, expected) in [
        ("plain", "sm-ssh debug enable plain"),
        ("early", "SecondaryStatus Starting"),
        ("isolated", "network isolation"),
    ] {
        let output = env.run(["connect", &format!("{name}.training.sagemaker")]);
        let (_, stderr) = assert_exit(&output, 4);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(
            stderr.contains("no sagemaker-ssh-helper instance"),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("Error {"), "{name}: {stderr}");
    }
    let output = env.run(["connect", "nosuch.training.sagemaker"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(
        stderr.contains("there is no training job nosuch"),
        "{stderr}"
    );
    let output = env.run([
        "connect",
        &format!("{JOB}.training.sagemaker"),
        "--node",
        "3",
    ]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(stderr.contains("algo-1 to algo-2"), "{stderr}");
}

#[test]
fn denied_sessions_name_the_action_and_condition() {
    let env = Env::start(seed());
    env.fake.deny_action("ssm:StartSession", true);
    let output = env.run(["connect", &format!("{JOB}.training.sagemaker")]);
    let (_, stderr) = assert_exit(&output, 6);
    assert!(stderr.contains("ssm:StartSession"), "{stderr}");
    assert!(
        stderr.contains(
            "ssm:resourceTag/aws:ssmmessages:target-id StringLike sagemaker-training-job:*"
        ),
        "{stderr}"
    );
}

#[test]
fn an_endpoint_with_two_instances_and_two_containers() {
    let env = Env::start(seed());
    let host = format!("{ENDPOINT}.inference.sagemaker");
    let output = env.run([
        "connect",
        &host,
        "--node",
        "2",
        "--container",
        "container_1",
        "--",
        "echo",
        "in-container",
    ]);
    let (stdout, _) = assert_exit(&output, 0);
    assert!(stdout.contains("in-container"), "{stdout}");
    let expected = format!(
        "sagemaker-endpoint:{ENDPOINT}_AllTraffic_{}_container_1",
        INSTANCES[1]
    );
    assert!(
        started_on(&env).iter().any(|(t, _)| t.ends_with(&expected)),
        "{:?}",
        started_on(&env)
    );
    // The default: node 1, the first container.
    let output = env.run(["list", &host, "--json"]);
    let (stdout, _) = assert_exit(&output, 0);
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        rows[0]["instance_id"],
        format!(
            "sagemaker-endpoint:{ENDPOINT}_AllTraffic_{}_container_0",
            INSTANCES[0]
        )
    );
    assert_eq!(rows[0]["path"], "ssm-access");
    let output = env.run(["connect", &host, "--container", "nope"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(stderr.contains("container_0, container_1"), "{stderr}");
    let output = env.run(["connect", &host, "--node", "3"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(stderr.contains("2 instance(s)"), "{stderr}");
}

#[test]
fn list_json_shows_debuggable_jobs_and_endpoint_containers() {
    let env = Env::start(seed());
    let output = env.run(["list", "--json"]);
    let (stdout, stderr) = assert_exit(&output, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let of = |host: &str| -> Vec<&serde_json::Value> {
        rows.iter().filter(|r| r["host"] == host).collect()
    };
    let jobs = of("trainer.training.sagemaker");
    assert_eq!(jobs.len(), 2, "{stdout}\n{stderr}");
    assert_eq!(jobs[0]["path"], "remote-debug");
    assert_eq!(jobs[0]["kind"], "training");
    assert_eq!(jobs[0]["ping_status"], "Training");
    assert_eq!(jobs[1]["computer_name"], "algo-2");
    // Jobs with remote debugging off are not debuggable.
    assert!(of("plain.training.sagemaker").is_empty());
    let containers = of("ep.inference.sagemaker");
    assert_eq!(containers.len(), 4, "{stdout}");
    assert!(containers.iter().all(|r| r["path"] == "ssm-access"));
}

#[test]
fn doctor_checks_remote_debugging_and_ssm_access() {
    let env = Env::start(seed());
    let checks = |args: &[&str]| -> Vec<(String, String)> {
        let output = env.run(["doctor", "--json"].iter().chain(args));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?}", text(&output)));
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let status = |checks: &[(String, String)], id: &str| {
        checks
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no {id} in {checks:?}"))
    };
    let good = checks(&["--job", JOB]);
    for id in [
        "remote-debug",
        "remote-debug-status",
        "remote-debug-network",
    ] {
        assert_eq!(status(&good, id), "pass", "{id}: {good:?}");
    }
    assert_eq!(status(&checks(&["--job", "plain"]), "remote-debug"), "warn");
    assert_eq!(
        status(&checks(&["--job", "early"]), "remote-debug-status"),
        "warn"
    );
    assert_eq!(
        status(&checks(&["--job", "isolated"]), "remote-debug-network"),
        "fail"
    );
    let endpoint = checks(&["--endpoint", ENDPOINT]);
    assert_eq!(status(&endpoint, "endpoint-ssm-access"), "pass");
    assert_eq!(status(&endpoint, "endpoint-instances"), "pass");
}

#[test]
fn policy_native_limits_sessions_by_target_id() {
    let env = Env::start(seed());
    for (args, pattern) in [
        (vec![], "sagemaker-training-job:*"),
        (vec!["--per-user"], "sagemaker-endpoint:${aws:username}-*"),
        (
            vec!["--team-tag", "team"],
            "sagemaker-training-job:${aws:PrincipalTag/team}-*",
        ),
    ] {
        let output = env.run(
            ["policy", "native", "--account", ACCOUNT]
                .into_iter()
                .chain(args.iter().copied()),
        );
        let (stdout, _) = assert_exit(&output, 0);
        let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let sessions = document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "SessionsOnJobsAndEndpoints")
            .unwrap();
        let patterns =
            &sessions["Condition"]["StringLike"]["ssm:resourceTag/aws:ssmmessages:target-id"];
        assert!(
            patterns.as_array().unwrap().iter().any(|p| p == pattern),
            "{stdout}"
        );
    }
}

#[test]
fn debug_enable_turns_remote_debugging_on_after_confirmation() {
    let env = Env::start(seed());
    // Not on a terminal and no --yes: nothing changes.
    let output = env.run(["debug", "enable", "plain"]);
    let (_, stderr) = assert_exit(&output, 2);
    assert!(stderr.contains("--yes"), "{stderr}");
    let output = env.run(["debug", "enable", "plain.training.sagemaker", "--yes"]);
    assert_exit(&output, 0);
    let on = env.fake.world().lock().unwrap().sagemaker.training_jobs[1].remote_debug;
    assert!(on);
    let events: Vec<String> = env.fake.events().into_iter().map(|e| e.action).collect();
    assert!(events.contains(&"sagemaker:UpdateTrainingJob".to_string()));
    // SageMaker refuses outside Downloading and Training: so does sm-ssh, first.
    let output = env.run(["debug", "enable", "done", "--yes"]);
    let (_, stderr) = assert_exit(&output, 1);
    assert!(stderr.contains("Downloading or Training"), "{stderr}");
}

#[test]
fn an_endpoint_with_more_instances_than_one_page_of_log_streams() {
    // DescribeLogStreams answers 50 streams a page: 55 instances take two.
    let mut seed = seed();
    let ids: Vec<String> = (0..55).map(|k| format!("i-0{k:016x}")).collect();
    let endpoint = Endpoint {
        name: "wide".into(),
        variants: vec![Variant {
            instance_ids: ids.clone(),
            ..Variant::default()
        }],
        ..Endpoint::default()
    };
    seed.instances
        .extend(endpoint.native_targets().iter().map(|id| native(id)));
    seed.sagemaker.endpoints.push(endpoint);
    let env = Env::start(seed);
    let host = "wide.inference.sagemaker";
    let output = env.run(["connect", host, "--node", "56"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(stderr.contains("55 instance(s)"), "{stderr}");
    let output = env.run(["connect", host, "--node", "55", "--", "echo", "last"]);
    let (stdout, _) = assert_exit(&output, 0);
    assert!(stdout.contains("last"), "{stdout}");
    assert!(
        started_on(&env).iter().any(|(t, _)| t.ends_with(&ids[54])),
        "{:?}",
        started_on(&env)
    );
}
