//! What `proxy`, `connect`, `forward` and the plugin say, and exit with, when
//! something is wrong: one row per failure, each in a fresh fake.

mod common;

use std::collections::BTreeMap;

use common::{assert_exit, sagemaker_instance, seed_with, training_instance, Env};
use sm_ssh_integration::world::{Faults, PingStatus};

const INSTANCE: &str = "mi-0a1b2c3d4e5f60718";
const HOST: &str = "my-job.training.sagemaker";

struct Case {
    name: &'static str,
    /// Changes the fake (or the command's environment) before the command runs.
    setup: fn(&mut Env),
    args: &'static [&'static str],
    code: i32,
    /// Every one of these must be in stderr.
    says: &'static [&'static str],
}

fn nothing(_: &mut Env) {}

/// `http://127.0.0.1:PORT` where nothing listens, for as long as this test
/// binary runs (the port stays held, so no other test's server takes it).
fn closed_endpoint() -> String {
    let (socket, port) = common::refusing_port();
    std::mem::forget(socket);
    format!("http://127.0.0.1:{port}")
}

/// What Rust's Debug output of an SDK error looks like; never for users.
const DEBUG_FORMS: [&str; 8] = [
    "DispatchFailure(",
    "ConnectorError {",
    "{ source:",
    "ServiceError(",
    "TimeoutError(",
    "ResponseError(",
    "ConstructionFailure(",
    "kind: ",
];

fn debug_forms(text: &str) -> Vec<&'static str> {
    DEBUG_FORMS
        .into_iter()
        .filter(|form| text.contains(form))
        .collect()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "malformed name",
            setup: nothing,
            args: &["proxy", "my job!.training.sagemaker"],
            code: 2,
            says: &["accepted targets"],
        },
        Case {
            name: "unknown kind of SageMaker name",
            setup: nothing,
            args: &["connect", "my-job.gizmo.sagemaker"],
            code: 2,
            says: &["accepted targets"],
        },
        Case {
            name: "unknown target",
            setup: nothing,
            args: &["proxy", "no-such-job.training.sagemaker"],
            code: 3,
            says: &["no SSM managed instance found for no-such-job.training.sagemaker"],
        },
        Case {
            name: "instance owned by someone else",
            setup: |env| {
                env.add_instance(sagemaker_instance(
                    INSTANCE,
                    "AROAOTHERPERSON:bob",
                    "my-job",
                    "training-job/my-job",
                    1_700_000_000,
                ))
            },
            args: &["proxy", HOST],
            code: 3,
            says: &["no SSM managed instance found", "--owner any"],
        },
        Case {
            name: "someone else's instance under the SSHOwner policy condition",
            setup: |env| {
                env.add_instance(sagemaker_instance(
                    INSTANCE,
                    "AROAOTHERPERSON:bob",
                    "my-job",
                    "training-job/my-job",
                    1_700_000_000,
                ));
                env.fake.enforce_owner_tag(true);
            },
            args: &["proxy", "--owner", "any", HOST],
            code: 6,
            says: &["ssm:SendCommand", "--push-key never"],
        },
        Case {
            name: "offline instance",
            setup: |env| {
                env.add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000));
                env.set_ping_status(INSTANCE, PingStatus::ConnectionLost);
            },
            args: &["proxy", HOST],
            code: 4,
            says: &["ConnectionLost"],
        },
        Case {
            name: "denied StartSession",
            setup: |env| {
                env.add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000));
                env.fake.deny_action("ssm:StartSession", true);
            },
            args: &["proxy", "--push-key", "never", HOST],
            code: 6,
            says: &["ssm:StartSession", "sm-ssh policy"],
        },
        Case {
            name: "denied SendCommand",
            setup: |env| {
                env.add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000));
                env.fake.deny_action("ssm:SendCommand", true);
            },
            args: &["connect", HOST, "true"],
            code: 6,
            says: &["ssm:SendCommand", "pushing the SSH key", "--push-key never"],
        },
        Case {
            name: "failing key push",
            setup: |env| {
                env.add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000));
                // mkdir of authorized_keys.d fails on the instance: a file is in the way.
                let sandbox = env.fake.sandbox(INSTANCE).unwrap();
                std::fs::write(sandbox.join("etc/ssh/authorized_keys.d"), "").unwrap();
            },
            args: &["proxy", HOST],
            code: 1,
            says: &["pushing the SSH key to", "Failed", "authorized_keys.d"],
        },
        Case {
            name: "refused token",
            setup: |env| {
                env.add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000));
                env.fake.set_faults(Faults {
                    refuse_token: true,
                    ..Faults::default()
                });
            },
            args: &["proxy", "--push-key", "never", HOST],
            code: 1,
            says: &["refused the session token"],
        },
        Case {
            name: "bad forward",
            setup: nothing,
            args: &["forward", INSTANCE, "-L", "80:web:notaport"],
            code: 2,
            says: &["`80:web:notaport`", "remote port"],
        },
        Case {
            name: "unreachable SSM endpoint",
            setup: |env| {
                env.extra_env
                    .push(("AWS_ENDPOINT_URL_SSM".into(), closed_endpoint()));
            },
            args: &["proxy", HOST],
            code: 7,
            says: &[
                "could not reach AWS for ssm:DescribeInstanceInformation at http://127.0.0.1:",
                "nothing accepts connections there",
            ],
        },
        Case {
            name: "unreachable STS endpoint",
            setup: |env| {
                env.add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000));
                env.extra_env
                    .push(("AWS_ENDPOINT_URL_STS".into(), closed_endpoint()));
            },
            // Finding the caller's own instances asks STS who the caller is.
            args: &["proxy", HOST],
            code: 7,
            says: &["could not reach AWS for sts:GetCallerIdentity at http://127.0.0.1:"],
        },
        Case {
            name: "plugin called by hand",
            setup: nothing,
            args: &["plugin", "hello"],
            code: 2,
            says: &["AWS CLI"],
        },
    ]
}

#[test]
fn bad_inputs_fail_with_a_clear_message_and_exit_code() {
    let mut failures = BTreeMap::new();
    for case in cases() {
        let mut env = Env::start(seed_with(vec![]));
        (case.setup)(&mut env);
        let output = env.run(case.args);
        let (stdout, stderr) = common::text(&output);
        let debug = debug_forms(&stderr);
        assert!(debug.is_empty(), "{}: {debug:?} in {stderr}", case.name);
        let code_ok = output.status.code() == Some(case.code);
        let missing: Vec<_> = case.says.iter().filter(|s| !stderr.contains(**s)).collect();
        // In proxy mode stdout belongs to ssh: errors never go there.
        if !code_ok || !missing.is_empty() || !stdout.is_empty() {
            failures.insert(
                case.name,
                format!(
                    "exit {:?} (want {}), missing {missing:?}\nstdout: {stdout}\nstderr: {stderr}",
                    output.status.code(),
                    case.code
                ),
            );
        }
        // Never a token or secret key in what the user sees.
        assert!(!stderr.contains("testing"), "{}: {stderr}", case.name);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// doctor with IAM, STS or SSM unreachable: each check that cannot run says
/// so in one readable line naming the endpoint, in text and JSON alike.
#[test]
fn doctor_names_an_unreachable_endpoint_without_debug_output() {
    for service in ["IAM", "STS", "SSM"] {
        let mut env = Env::start(seed_with(vec![]));
        let endpoint = closed_endpoint();
        env.extra_env
            .push((format!("AWS_ENDPOINT_URL_{service}"), endpoint.clone()));
        for args in [&["doctor"][..], &["doctor", "--json"][..]] {
            let output = env.run(args);
            let (stdout, stderr) = common::text(&output);
            let all = format!("{stdout}{stderr}");
            let debug = debug_forms(&all);
            assert!(debug.is_empty(), "{service} {args:?}: {debug:?} in {all}");
            assert!(
                all.contains(&format!("at {endpoint}: nothing accepts connections there")),
                "{service} {args:?}: {all}"
            );
        }
    }
}

/// The data channel's websocket is dead (nothing listens at StreamUrl): the
/// plugin gives up with a clear message.
#[test]
fn dead_websocket_is_reported() {
    let env = Env::start(seed_with(vec![]));
    // Held until the end: a freed port could be taken by another test's fake,
    // whose data channel then refuses the token "t" instead.
    let (_closed, port) = common::refusing_port();
    let response = format!(
        r#"{{"SessionId":"alice-0123456789abcdef0","TokenValue":"t","StreamUrl":"ws://127.0.0.1:{port}/v1/data-channel/alice-0123456789abcdef0"}}"#
    );
    let request = format!(r#"{{"Target":"{INSTANCE}","DocumentName":"AWS-StartSSHSession"}}"#);
    let output = env.run([
        "plugin",
        &response,
        "eu-west-1",
        "StartSession",
        "",
        &request,
        &env.fake.endpoint(),
    ]);
    let (_, stderr) = assert_exit(&output, 1);
    assert!(stderr.contains("websocket"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}
