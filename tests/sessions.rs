//! `sm-ssh sessions` end to end: two identities (told apart by their access
//! keys) hold port-forwarding sessions to the same training job's instance
//! through the fake; each sees their own, `--owner any` both, `--history`
//! the ended ones, `terminate` ends one and leaves the other, and denied
//! DescribeSessions and TerminateSession say what stopped them.

mod common;

use common::*;
use serde_json::Value;
use sm_ssh_integration::world::{Identity, Seed};

const MI: &str = "mi-0123456789abcdef0";
const JOB: &str = "shared-job";
const BOB_KEY: &str = "AKIDEXAMPLEBOBKEY";

fn bob() -> Identity {
    Identity {
        arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/Developer/bob"),
        user_id: "AROAEXAMPLEDEVELOPER:bob".into(),
        account: ACCOUNT.into(),
    }
}

fn env() -> Env {
    Env::start(Seed {
        identities: [(BOB_KEY.to_string(), bob())].into(),
        instances: vec![training_instance(MI, JOB, 1_700_000_000)],
        ..seed_with(vec![])
    })
}

/// Runs `f` with bob's access key in every command it makes.
fn as_bob<T>(env: &mut Env, f: impl FnOnce(&Env) -> T) -> T {
    env.extra_env
        .push(("AWS_ACCESS_KEY_ID".into(), BOB_KEY.into()));
    let out = f(env);
    env.extra_env.pop();
    out
}

/// `sm-ssh forward` holding one port-forwarding session to the job.
fn hold_session(env: &Env, owner_any: bool) -> Forward {
    let mut args = vec![
        format!("{JOB}.training.sagemaker"),
        "-L".into(),
        "0:8080".into(),
        "--document".into(),
        "AWS-StartPortForwardingSession".into(),
    ];
    if owner_any {
        args.extend(["--owner".into(), "any".into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_forward(env, &args, 1)
}

/// `sm-ssh sessions --json <args>`.
fn sessions(env: &Env, args: &[&str]) -> Vec<Value> {
    let output = env.run([&["sessions", "--json"], args].concat());
    let (stdout, _) = assert_exit(&output, 0);
    serde_json::from_str::<Value>(&stdout)
        .expect("sessions --json prints JSON")
        .as_array()
        .expect("an array")
        .clone()
}

fn field<'a>(rows: &'a [Value], name: &str) -> Vec<&'a str> {
    rows.iter()
        .map(|r| r[name].as_str().unwrap_or("-"))
        .collect()
}

#[test]
fn each_identity_sees_its_own_sessions_and_the_history_keeps_ended_ones() {
    let mut env = env();
    let alice_arn = caller().arn;
    let alices = hold_session(&env, false);
    let bobs = as_bob(&mut env, |env| hold_session(env, true));

    let mine = sessions(&env, &[]);
    assert_eq!(field(&mine, "owner"), [alice_arn.as_str()]);
    let row = &mine[0];
    assert_eq!(row["status"], "Connected");
    assert_eq!(row["target"], MI);
    assert_eq!(row["name"], "shared-job.training.sagemaker");
    assert_eq!(row["document"], "AWS-StartPortForwardingSession");
    assert_eq!(
        row["reason"],
        format!(
            "sm-ssh {}: shared-job.training.sagemaker",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(row["start"].as_str().unwrap().ends_with('Z'), "{row}");
    assert!(row["end"].is_null());
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "document",
            "end",
            "name",
            "owner",
            "reason",
            "session_id",
            "start",
            "status",
            "target"
        ]
    );

    let theirs = as_bob(&mut env, |env| sessions(env, &[]));
    assert_eq!(field(&theirs, "owner"), [bob().arn.as_str()]);
    let everyone = sessions(
        &env,
        &[
            "--owner",
            "any",
            "--target",
            "shared-job.training.sagemaker",
        ],
    );
    assert_eq!(
        field(&everyone, "session_id"),
        [
            theirs[0]["session_id"].as_str().unwrap(),
            mine[0]["session_id"].as_str().unwrap()
        ],
        "both, newest first"
    );
    assert_eq!(sessions(&env, &["--owner", &bob().arn]).len(), 1);
    assert!(sessions(&env, &["--target", "other.training.sagemaker"]).is_empty());
    assert_eq!(sessions(&env, &["--target", MI, "--since", "1h"]).len(), 1);

    // Ctrl-C ends alice's session with TerminateSession: it moves to History.
    let (status, stderr) = alices.interrupt();
    assert!(status.success(), "{stderr}");
    assert!(sessions(&env, &[]).is_empty());
    let ended = sessions(&env, &["--history"]);
    assert_eq!(
        field(&ended, "session_id"),
        [mine[0]["session_id"].as_str().unwrap()]
    );
    assert_eq!(ended[0]["status"], "Terminated");
    assert!(ended[0]["end"].as_str().unwrap() >= ended[0]["start"].as_str().unwrap());
    assert!(as_bob(&mut env, |env| sessions(env, &["--history"])).is_empty());

    // The table says the same, with an ENDED column.
    let output = env.run(["sessions", "--history"]);
    let (stdout, _) = assert_exit(&output, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("SESSION") && lines[0].contains("ENDED"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("Developer/alice") && lines[1].contains("shared-job.training.sagemaker"),
        "{stdout}"
    );
    drop(bobs);
}

#[test]
fn terminate_ends_one_session_and_the_other_survives() {
    let mut env = env();
    let _alices = hold_session(&env, false);
    let _bobs = as_bob(&mut env, |env| hold_session(env, true));
    let everyone = sessions(&env, &["--owner", "any"]);
    let id_of = |owner: &str| {
        let row = everyone.iter().find(|r| r["owner"] == owner).unwrap();
        row["session_id"].as_str().unwrap().to_owned()
    };
    let (alice_id, bob_id) = (id_of(&caller().arn), id_of(&bob().arn));

    // Without a terminal and without --yes, nothing happens.
    let output = env.run(["sessions", "terminate", &alice_id]);
    let (_, stderr) = assert_exit(&output, 2);
    assert!(stderr.contains("pass --yes"), "{stderr}");
    assert_eq!(sessions(&env, &["--owner", "any"]).len(), 2);

    let output = env.run(["sessions", "terminate", &alice_id, "--yes"]);
    let (stdout, stderr) = assert_exit(&output, 0);
    assert_eq!(stdout, format!("terminated {alice_id}\n"));
    assert!(
        stderr.contains(&alice_id) && stderr.contains("shared-job.training.sagemaker"),
        "{stderr}"
    );
    let left = sessions(&env, &["--owner", "any"]);
    assert_eq!(field(&left, "session_id"), [bob_id.as_str()]);
    assert_eq!(left[0]["status"], "Connected");

    // With the client policy's conditions, alice may not end bob's session.
    env.fake.enforce_owner_tag(true);
    let output = env.run(["sessions", "terminate", &bob_id, "--yes"]);
    let (_, stderr) = assert_exit(&output, 6);
    for part in [
        "AWS denied ssm:TerminateSession on session",
        &bob().arn,
        "ssm:resourceTag/aws:ssmmessages:session-id = ${aws:userid}",
        "arn:aws:ssm:*:123456789012:session/*",
    ] {
        assert!(stderr.contains(part), "no {part:?} in {stderr}");
    }
    assert!(!stderr.contains("ServiceError"), "{stderr}");
    assert_eq!(sessions(&env, &["--owner", "any"]).len(), 1);
    // Its owner may.
    let output = as_bob(&mut env, |env| {
        env.run(["sessions", "terminate", &bob_id, "--yes"])
    });
    assert_exit(&output, 0);
    assert!(sessions(&env, &["--owner", "any"]).is_empty());
}

#[test]
fn a_denied_describe_sessions_names_the_action_and_the_statement() {
    let env = env();
    env.fake.deny_action("ssm:DescribeSessions", true);
    let output = env.run(["sessions"]);
    let (stdout, stderr) = assert_exit(&output, 6);
    assert!(stdout.is_empty());
    assert!(
        stderr.starts_with("sm-ssh: AWS denied ssm:DescribeSessions"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains(r#"{"Effect": "Allow", "Action": "ssm:DescribeSessions", "Resource": "*"}"#),
        "{stderr}"
    );
    assert!(!stderr.contains("ServiceError"), "{stderr}");
}

#[test]
fn bad_options_are_usage_errors() {
    let env = env();
    let output = env.run(["sessions", "--owner", "alice"]);
    let (_, stderr) = assert_exit(&output, 2);
    assert!(
        stderr.contains("is not `me`, `any` or an IAM principal ARN"),
        "{stderr}"
    );
    let output = env.run(["sessions", "--since", "soon"]);
    let (_, stderr) = assert_exit(&output, 2);
    assert!(stderr.contains("is not a duration"), "{stderr}");
    let output = env.run(["sessions", "terminate", "nobody-0123", "--yes"]);
    let (_, stderr) = assert_exit(&output, 3);
    assert!(
        stderr.contains("there is no session nobody-0123"),
        "{stderr}"
    );
}

#[test]
fn every_page_is_read() {
    let env = env();
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new(REGION))
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(env.fake.endpoint())
            .build(),
    );
    // One more than sm-ssh's page of 200.
    env.runtime().block_on(async {
        for _ in 0..201 {
            let start = ssm
                .start_session()
                .target(MI)
                .document_name("AWS-StartSSHSession");
            start.send().await.expect("StartSession on the fake");
        }
    });
    let rows = sessions(&env, &[]);
    assert_eq!(rows.len(), 201);
    let calls = env.fake.events();
    let pages = calls.iter().filter(|e| e.action == "ssm:DescribeSessions");
    assert_eq!(pages.count(), 2, "200 sessions, then 1");
    let starts: Vec<&str> = field(&rows, "start");
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
}
