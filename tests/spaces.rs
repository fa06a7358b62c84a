//! Studio spaces end to end: the real OpenSSH client through `sm-ssh proxy`
//! to the SSH server in a seeded space of the fake (`sagemaker:StartSession`
//! on the space ARN), every name form, the errors of a stopped, disabled or
//! full space, `sm-ssh space enable`, InternalFailure retries after an app
//! start, and host keys across app restarts.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{assert_exit, seed_with, Env, ACCOUNT, REGION};
use sm_ssh_integration::sagemaker::{App, Domain, Space};

const DOMAIN: &str = "d-abc123example";
const HOST: &str = "demo.d-abc123example.space.sagemaker";

fn arn(space: &str) -> String {
    format!("arn:aws:sagemaker:{REGION}:{ACCOUNT}:space/{DOMAIN}/{space}")
}

/// Dummy credentials for the test's own SDK clients.
fn test_credentials() -> aws_sdk_sagemaker::config::Credentials {
    aws_sdk_sagemaker::config::Credentials::new("testing", "testing", None, None, "spaces-tests")
}

fn space(name: &str) -> Space {
    Space {
        domain_id: DOMAIN.into(),
        name: name.into(),
        instance_type: "ml.m5.large".into(),
        ..Space::default()
    }
}

/// A fake with one domain and the given spaces.
fn start(spaces: Vec<Space>) -> World {
    let mut seed = seed_with(vec![]);
    seed.sagemaker.domains = vec![Domain {
        id: DOMAIN.into(),
        ..Domain::default()
    }];
    seed.sagemaker.spaces = spaces;
    let env = Env::start(seed);
    let config = env.install_config();
    World { env, config }
}

struct World {
    env: Env,
    /// The installed `Host *.sagemaker` block.
    config: PathBuf,
}

impl World {
    /// OpenSSH with the installed config block, `options` and the fake's
    /// environment, running `command` on `host`.
    fn ssh_with(&self, options: &[&str], host: &str, command: &str) -> Command {
        let mut ssh = Command::new("ssh");
        common::isolate(&mut ssh, self.env.home());
        ssh.env("SM_SSH_HOME", self.env.data_dir());
        ssh.env("AWS_ENDPOINT_URL", self.env.fake.endpoint());
        for (key, value) in self.env.fake.env() {
            ssh.env(key, value);
        }
        ssh.arg("-F").arg(&self.config);
        ssh.args(["-o", "BatchMode=yes"]);
        ssh.args(options);
        ssh.args([host, command]);
        ssh.stdin(Stdio::null());
        ssh
    }

    fn ssh(&self, host: &str, command: &str) -> Command {
        self.ssh_with(&[], host, command)
    }

    /// For names outside `*.sagemaker` (ARNs, Toolkit host names): the
    /// ProxyCommand a Toolkit user's block would point at sm-ssh.
    fn ssh_any(&self, host: &str, command: &str) -> Command {
        let proxy = format!(
            "ProxyCommand={} proxy --user %r %n",
            env!("CARGO_BIN_EXE_sm-ssh")
        );
        let known_hosts = format!(
            "UserKnownHostsFile={}",
            self.env.data_dir().join("known_hosts").display()
        );
        let options = [
            "-o",
            &proxy,
            "-o",
            "User=sagemaker-user",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            &known_hosts,
        ];
        self.ssh_with(&options, host, command)
    }

    fn events(&self, action: &str) -> Vec<Option<String>> {
        self.env
            .fake
            .events()
            .into_iter()
            .filter(|e| e.action == action)
            .map(|e| e.error)
            .collect()
    }
}

fn run(mut command: Command) -> Output {
    command.output().expect("ssh runs")
}

#[test]
fn openssh_runs_a_command_and_moves_5_mb_both_ways_without_a_key_push() {
    let world = start(vec![space("demo")]);
    let output = run(world.ssh_with(
        &["-v"],
        HOST,
        "echo hello from space; echo HOME=${HOME-unset}",
    ));
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stdout.contains("hello from space"), "{stdout}");
    // The space's server sets no HOME for exec requests.
    assert!(stdout.contains("HOME=unset"), "{stdout}");
    assert!(stderr.contains("remote software version Go"), "{stderr}");
    assert!(
        stderr.contains("Authenticated to") && stderr.contains("using \"none\""),
        "{stderr}"
    );
    assert!(
        world.events("ssm:SendCommand").is_empty(),
        "no key is pushed"
    );
    assert_eq!(world.events("sagemaker:StartSession"), vec![None]);

    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    let mut up = world.ssh(HOST, "cat > upload.bin && wc -c < upload.bin");
    up.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = up.spawn().expect("ssh starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn({
        let data = data.clone();
        move || std::io::Write::write_all(&mut stdin, &data)
    });
    let output = child.wait_with_output().expect("ssh ends");
    writer.join().unwrap().expect("upload written");
    let (stdout, _) = assert_exit(&output, 0);
    assert_eq!(stdout.trim(), "5000000");
    let output = run(world.ssh(HOST, "cat upload.bin"));
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stdout == data,
        "the download differs from the upload"
    );
}

#[test]
fn every_name_form_reaches_the_space() {
    let world = start(vec![space("demo")]);
    let encoded = arn("demo").replace(':', "_._").replace('/', "__");
    let forms = [
        (HOST.to_string(), false),
        ("demo.space.sagemaker".to_string(), false),
        (arn("demo"), true),
        (format!("sm_lc_{encoded}"), true),
        (format!("sm_dl_{encoded}"), true),
    ];
    for (name, outside_block) in forms {
        let command = if outside_block {
            world.ssh_any(&name, "echo reached")
        } else {
            world.ssh(&name, "echo reached")
        };
        let (stdout, _) = assert_exit(&run(command), 0);
        assert_eq!(stdout.trim(), "reached", "{name}");
    }
}

#[test]
fn a_short_name_in_two_domains_asks_for_the_domain() {
    let mut seed = seed_with(vec![]);
    seed.sagemaker.domains = vec![
        Domain {
            id: DOMAIN.into(),
            ..Domain::default()
        },
        Domain {
            id: "d-other".into(),
            ..Domain::default()
        },
    ];
    seed.sagemaker.spaces = vec![
        space("shared"),
        Space {
            domain_id: "d-other".into(),
            ..space("shared")
        },
    ];
    let env = Env::start(seed);
    let (_, stderr) = assert_exit(&env.run(["proxy", "shared.space.sagemaker"]), 3);
    assert!(
        stderr.contains("2 domains have a space named shared"),
        "{stderr}"
    );
    assert!(
        stderr.contains("shared.d-other.space.sagemaker"),
        "{stderr}"
    );
    let (_, stderr) = assert_exit(&env.run(["proxy", "nope.space.sagemaker"]), 3);
    assert!(stderr.contains("no space named nope"), "{stderr}");
}

#[test]
fn stopped_and_disabled_spaces_say_how_to_fix_it_and_space_enable_fixes_it() {
    let stopped = Space {
        app: Some(App {
            status: "Deleted".into(),
            ..App::default()
        }),
        ..space("stopped")
    };
    let disabled = Space {
        remote_access: false,
        app: Some(App {
            remote_access: false,
            ..App::default()
        }),
        ..space("demo")
    };
    let world = start(vec![stopped, disabled]);
    let (_, stderr) = assert_exit(&world.env.run(["proxy", "stopped.space.sagemaker"]), 4);
    assert!(
        stderr.contains("is stopped (app default: Deleted)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (_, stderr) = assert_exit(&world.env.run(["proxy", HOST]), 4);
    assert!(stderr.contains("remote access is not enabled"), "{stderr}");
    assert!(
        stderr.contains(&format!("sm-ssh space enable {HOST}")),
        "{stderr}"
    );
    let (stdout, _) = assert_exit(&world.env.run(["space", "status", HOST]), 4);
    assert!(stdout.contains("remote access  DISABLED"), "{stdout}");

    // Without a terminal or --yes, nothing changes.
    let (_, stderr) = assert_exit(&world.env.run(["space", "enable", HOST]), 2);
    assert!(stderr.contains("--yes"), "{stderr}");
    assert!(world.events("sagemaker:UpdateSpace").is_empty());

    let (_, stderr) = assert_exit(&world.env.run(["space", "enable", HOST, "--yes"]), 0);
    assert!(stderr.contains(&format!("ssh {HOST}")), "{stderr}");
    assert_eq!(world.events("sagemaker:UpdateSpace"), vec![None]);
    assert_eq!(world.events("sagemaker:DeleteApp"), vec![None]);
    assert_eq!(world.events("sagemaker:CreateApp"), vec![None]);
    let (stdout, _) = assert_exit(&world.env.run(["space", "status", HOST]), 0);
    assert!(stdout.contains(&format!("ready: ssh {HOST}")), "{stdout}");
    let (stdout, _) = assert_exit(&run(world.ssh(HOST, "echo enabled")), 0);
    assert_eq!(stdout.trim(), "enabled");
}

#[test]
fn the_eleventh_connection_is_refused_with_the_limit() {
    let world = start(vec![space("demo")]);
    let client = aws_sdk_sagemaker::Client::from_conf(
        aws_sdk_sagemaker::config::Builder::new()
            .behavior_version(aws_sdk_sagemaker::config::BehaviorVersion::latest())
            .region(aws_sdk_sagemaker::config::Region::new(REGION))
            .endpoint_url(world.env.fake.endpoint())
            .credentials_provider(test_credentials())
            .build(),
    );
    for _ in 0..10 {
        world
            .env
            .runtime()
            .block_on(
                client
                    .start_session()
                    .resource_identifier(arn("demo"))
                    .send(),
            )
            .expect("a session within the limit");
    }
    let (_, stderr) = assert_exit(&world.env.run(["proxy", HOST]), 7);
    assert!(
        stderr.contains("already has 10 remote connections"),
        "{stderr}"
    );
    assert_eq!(
        world.events("sagemaker:StartSession").last(),
        Some(&Some("ResourceLimitExceeded".to_string()))
    );
}

#[test]
fn internal_failures_right_after_an_app_start_are_retried() {
    let starting = Space {
        app: Some(App {
            failures_left: 2,
            ..App::default()
        }),
        ..space("demo")
    };
    let world = start(vec![starting]);
    let (stdout, _) = assert_exit(&run(world.ssh(HOST, "echo registered")), 0);
    assert_eq!(stdout.trim(), "registered");
    assert_eq!(
        world.events("sagemaker:StartSession"),
        vec![
            Some("InternalFailure".into()),
            Some("InternalFailure".into()),
            None
        ]
    );
}

#[test]
fn a_restart_brings_a_new_host_key_and_a_changed_key_without_one_is_refused() {
    let world = start(vec![space("demo")]);
    assert_exit(&run(world.ssh(HOST, "true")), 0);
    let pinned = std::fs::read_to_string(world.env.data_dir().join("known_hosts")).unwrap();
    assert!(pinned.contains(HOST), "{pinned}");

    // A restart: a new app, a new host key, accepted.
    assert_exit(
        &world
            .env
            .run(["space", "enable", HOST, "--restart", "--yes"]),
        0,
    );
    let (stdout, _) = assert_exit(&run(world.ssh(HOST, "echo after restart")), 0);
    assert_eq!(stdout.trim(), "after restart");
    let repinned = std::fs::read_to_string(world.env.data_dir().join("known_hosts")).unwrap();
    assert_ne!(pinned, repinned);

    // A new key while DescribeApp shows the same app: refused, as OpenSSH does.
    let created = {
        let world = world.env.fake.world();
        let world = world.lock().unwrap();
        world.sagemaker.spaces[0]
            .app
            .as_ref()
            .unwrap()
            .creation_time
    };
    assert_exit(
        &world
            .env
            .run(["space", "enable", HOST, "--restart", "--yes"]),
        0,
    );
    world.env.fake.with_space(DOMAIN, "demo", |s| {
        s.app.as_mut().unwrap().creation_time = created;
    });
    let output = run(world.ssh(HOST, "echo should not run"));
    let (stdout, stderr) = assert_exit(&output, 255);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{stderr}"
    );
}

#[test]
fn a_lost_websocket_resumes_and_ends_cleanly_when_the_session_cannot_be_resumed() {
    use sm_ssh_integration::world::Faults;
    let world = start(vec![space("demo")]);
    world.env.fake.set_faults(Faults {
        cut_every_ms: Some(300),
        ..Faults::default()
    });
    // ResumeSession brings the channel back: the command finishes.
    let (stdout, _) = assert_exit(&run(world.ssh(HOST, "sleep 1; echo survived")), 0);
    assert_eq!(stdout.trim(), "survived");
    assert!(world.events("ssm:ResumeSession").contains(&None));

    // The service refuses to resume: the proxy ends at once with the reason.
    world.env.fake.deny_action("ssm:ResumeSession", true);
    let output = run(world.ssh(HOST, "sleep 20; echo never"));
    let (stdout, stderr) = assert_exit(&output, 255);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("its session cannot be resumed"), "{stderr}");
}

/// The caller of a doctor run: an IAM user, or a session of a role with tags.
enum Caller {
    User,
    Role(Vec<(&'static str, &'static str)>),
}

/// The domain's network in a doctor run.
enum Network {
    Public,
    VpcOnly,
}

struct Case<'a> {
    spaces: Vec<Space>,
    network: Network,
    caller: Caller,
    policy: &'a str,
    args: &'a [&'a str],
}

/// `sm-ssh doctor --space <name> --json` with IAM on moto (the
/// caller, with `policy` attached) and SageMaker on the fake: each space
/// check's status and detail.
fn doctor_space(spaces: Vec<Space>, vpc_only: bool, policy: &str) -> Vec<(String, String)> {
    doctor_case(Case {
        spaces,
        network: if vpc_only {
            Network::VpcOnly
        } else {
            Network::Public
        },
        caller: Caller::User,
        policy,
        args: &[],
    })
}

fn doctor_case(case: Case) -> Vec<(String, String)> {
    use sm_ssh_integration::world::Identity;
    let moto = sm_ssh_integration::moto::MotoServer::start().expect("moto starts");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = |endpoint: String| {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(test_credentials()),
            )
            .build()
    };
    let sdk = config(moto.endpoint());
    let mut seed = seed_with(vec![]);
    let iam = aws_sdk_iam::Client::new(&sdk);
    seed.identity = match &case.caller {
        Caller::User => Identity {
            account: ACCOUNT.into(),
            arn: format!("arn:aws:iam::{ACCOUNT}:user/alice"),
            user_id: "AIDAEXAMPLEALICE".into(),
        },
        Caller::Role(_) => Identity {
            account: ACCOUNT.into(),
            arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/SpaceUser/alice"),
            user_id: "AROAEXAMPLESPACEUSER:alice".into(),
        },
    };
    seed.sagemaker.domains = vec![Domain {
        id: DOMAIN.into(),
        app_network_access_type: match case.network {
            Network::Public => "PublicInternetOnly",
            Network::VpcOnly => "VpcOnly",
        }
        .into(),
        ..Domain::default()
    }];
    seed.sagemaker.spaces = case.spaces;
    let mut env = Env::start(seed);
    env.extra_env
        .push(("AWS_ENDPOINT_URL_IAM".into(), moto.endpoint()));
    runtime.block_on(async {
        match &case.caller {
            Caller::User => {
                iam.create_user().user_name("alice").send().await.expect("user");
                iam.put_user_policy()
                    .user_name("alice")
                    .policy_name("spaces")
                    .policy_document(case.policy)
                    .send()
                    .await
                    .expect("policy");
            }
            Caller::Role(tags) => {
                let trust = format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole"}}]}}"#
                );
                let mut create = iam
                    .create_role()
                    .role_name("SpaceUser")
                    .assume_role_policy_document(trust);
                for (key, value) in tags {
                    create = create.tags(
                        aws_sdk_iam::types::Tag::builder()
                            .key(*key)
                            .value(*value)
                            .build()
                            .unwrap(),
                    );
                }
                create.send().await.expect("role");
                iam.put_role_policy()
                    .role_name("SpaceUser")
                    .policy_name("spaces")
                    .policy_document(case.policy)
                    .send()
                    .await
                    .expect("policy");
            }
        }
    });
    let mut args = vec!["doctor", "--space", HOST, "--json"];
    args.extend(case.args);
    let output = env.run(args);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("doctor prints JSON");
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["id"].as_str().unwrap_or_default().starts_with("space"))
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                format!(
                    "{} {} fix: {}",
                    c["status"].as_str().unwrap(),
                    c["detail"],
                    c["fix"]
                ),
            )
        })
        .collect()
}

fn status_of<'a>(checks: &'a [(String, String)], id: &str) -> &'a str {
    checks
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s.as_str())
        .unwrap_or_else(|| panic!("no {id} in {checks:?}"))
}

#[test]
fn doctor_checks_a_space_and_the_policy_sm_ssh_prints() {
    let env = Env::start(seed_with(vec![]));
    let output = env.run(["policy", "space", "--account", ACCOUNT]);
    let (policy, _) = assert_exit(&output, 0);
    drop(env);
    let checks = doctor_space(vec![space("demo")], false, &policy);
    for id in [
        "space-remote-access",
        "space-app",
        "space-instance-type",
        "space-image",
        "space-start-session",
        "space-network",
    ] {
        assert!(
            status_of(&checks, id).starts_with("pass"),
            "{id}: {checks:?}"
        );
    }

    // Disabled, too small, in a VPC-only domain, and anyone may reach any space.
    let everyone = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sagemaker:*","Resource":"*"}]}"#;
    let broken = Space {
        remote_access: false,
        instance_type: "ml.t3.medium".into(),
        ..space("demo")
    };
    let checks = doctor_space(vec![broken], true, everyone);
    assert!(
        status_of(&checks, "space-remote-access").starts_with("fail"),
        "{checks:?}"
    );
    assert!(
        status_of(&checks, "space-instance-type").starts_with("fail"),
        "{checks:?}"
    );
    // The fake's EC2 has no endpoints for the domain's VPC.
    let network = status_of(&checks, "space-network");
    assert!(
        network.starts_with("fail")
            && network.contains(&format!("com.amazonaws.{REGION}.ssmmessages: no endpoint"))
            && network.contains("create-vpc-endpoint"),
        "{network}"
    );
    let start = status_of(&checks, "space-start-session");
    assert!(
        start.starts_with("warn") && start.contains("any space"),
        "{start}"
    );
}

/// `sm-ssh policy space <args>` for this account.
fn space_policy(args: &[&str]) -> String {
    let env = Env::start(seed_with(vec![]));
    let mut all = vec!["policy", "space", "--account", ACCOUNT];
    all.extend(args);
    assert_exit(&env.run(all), 0).0
}

#[test]
fn doctor_checks_the_image_release() {
    let policy = space_policy(&[]);
    let old = Space {
        image_version_alias: "2.6.1".into(),
        ..space("demo")
    };
    let checks = doctor_case(Case {
        spaces: vec![old],
        network: Network::Public,
        caller: Caller::User,
        policy: &policy,
        args: &[],
    });
    let image = status_of(&checks, "space-image");
    assert!(
        image.starts_with("fail")
            && image.contains("2.6.1")
            && image.contains("SageMakerImageVersionAlias"),
        "{image}"
    );

    let custom = Space {
        image_arn: format!("arn:aws:sagemaker:{REGION}:{ACCOUNT}:image/team-image"),
        image_version_alias: String::new(),
        ..space("demo")
    };
    let checks = doctor_case(Case {
        spaces: vec![custom],
        network: Network::Public,
        caller: Caller::User,
        policy: &policy,
        args: &[],
    });
    let image = status_of(&checks, "space-image");
    assert!(
        image.starts_with("warn") && image.contains("curl or wget, unzip, tar and gzip"),
        "{image}"
    );
}

#[test]
fn role_callers_get_the_profile_tag_policy_and_doctor_checks_it() {
    let by_tag = space_policy(&["--profile-tag", "UserProfile"]);
    // The role session's UserProfile tag names the space's owner (alice).
    let checks = doctor_case(Case {
        spaces: vec![space("demo")],
        network: Network::Public,
        caller: Caller::Role(vec![("UserProfile", "alice")]),
        policy: &by_tag,
        args: &[],
    });
    let start = status_of(&checks, "space-start-session");
    assert!(start.starts_with("pass"), "{start}");

    // Named for someone else: not their space. The fix names the role variant.
    let checks = doctor_case(Case {
        spaces: vec![space("demo")],
        network: Network::Public,
        caller: Caller::Role(vec![("UserProfile", "bob")]),
        policy: &by_tag,
        args: &[],
    });
    let start = status_of(&checks, "space-start-session");
    assert!(
        start.starts_with("fail") && start.contains("--profile-tag UserProfile"),
        "{start}"
    );
}

#[test]
fn team_policies_match_the_spaces_own_tags() {
    let team = space_policy(&["--team-tag", "team"]);
    let tagged = Space {
        tags: [("team".to_string(), "ml".to_string())]
            .into_iter()
            .collect(),
        ..space("demo")
    };
    let case = |spaces| Case {
        spaces,
        network: Network::Public,
        caller: Caller::Role(vec![("team", "ml")]),
        policy: &team,
        args: &["--team-tag", "team"],
    };
    let checks = doctor_case(case(vec![tagged]));
    let start = status_of(&checks, "space-start-session");
    assert!(start.starts_with("pass"), "{start}");
    // The same space without the team's tag (ListTags shows Studio's only).
    let checks = doctor_case(case(vec![space("demo")]));
    let start = status_of(&checks, "space-start-session");
    assert!(start.starts_with("fail"), "{start}");
}

#[test]
fn list_tags_shows_studios_owner_tag_and_add_tags_adds_to_it() {
    let world = start(vec![
        space("demo"),
        Space {
            owner: String::new(),
            ..space("shared")
        },
    ]);
    let client = aws_sdk_sagemaker::Client::from_conf(
        aws_sdk_sagemaker::config::Builder::new()
            .behavior_version(aws_sdk_sagemaker::config::BehaviorVersion::latest())
            .region(aws_sdk_sagemaker::config::Region::new(REGION))
            .endpoint_url(world.env.fake.endpoint())
            .credentials_provider(test_credentials())
            .build(),
    );
    world.env.runtime().block_on(async {
        let tags = |arn: String| {
            let client = client.clone();
            async move {
                let listed = client
                    .list_tags()
                    .resource_arn(arn)
                    .send()
                    .await
                    .expect("ListTags");
                listed
                    .tags()
                    .iter()
                    .map(|t| {
                        let (key, value) =
                            (t.key().unwrap_or_default(), t.value().unwrap_or_default());
                        (key.to_string(), value.to_string())
                    })
                    .collect::<Vec<_>>()
            }
        };
        let owner = (
            "sagemaker:user-profile-arn".to_string(),
            format!("arn:aws:sagemaker:{REGION}:{ACCOUNT}:user-profile/{DOMAIN}/alice"),
        );
        assert!(tags(arn("demo")).await.contains(&owner));
        assert!(
            tags(arn("shared")).await.is_empty(),
            "a shared space has no owner tag"
        );
        let tag = |key: &str| {
            aws_sdk_sagemaker::types::Tag::builder()
                .key(key)
                .value("ml")
                .build()
        };
        client
            .add_tags()
            .resource_arn(arn("demo"))
            .tags(tag("team"))
            .send()
            .await
            .expect("AddTags");
        let now = tags(arn("demo")).await;
        assert!(
            now.contains(&owner) && now.contains(&("team".into(), "ml".into())),
            "{now:?}"
        );
        let reserved = client
            .add_tags()
            .resource_arn(arn("demo"))
            .tags(tag("aws:team"))
            .send()
            .await
            .expect_err("aws: keys are reserved");
        assert_eq!(
            aws_sdk_sagemaker::error::ProvideErrorMetadata::code(&reserved),
            Some("ValidationException")
        );
    });
}

#[test]
fn connect_and_forward_reach_the_space_over_ssh() {
    use std::io::{Read, Write};
    let world = start(vec![space("demo")]);
    let (stdout, _) = assert_exit(
        &world
            .env
            .run(["connect", "demo.space.sagemaker", "echo", "via-connect"]),
        0,
    );
    assert_eq!(stdout.trim(), "via-connect");
    let pinned = std::fs::read_to_string(world.env.data_dir().join("known_hosts")).unwrap();
    assert!(
        pinned.starts_with(&arn("demo")),
        "connect pins under the ARN: {pinned}"
    );
    assert!(world.events("ssm:SendCommand").is_empty());

    // A TCP service next to the space, forwarded over SSH's own forwarding.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut socket in service.incoming().flatten() {
            let mut buf = [0u8; 64];
            let n = socket.read(&mut buf).unwrap_or(0);
            let _ = socket.write_all(&[b"echo:", &buf[..n]].concat());
        }
    });
    let local_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut forward = world
        .env
        .sm_ssh([
            "forward",
            HOST,
            "-L",
            &format!("{local_port}:127.0.0.1:{service_port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for ssh's listener (up to a minute as a safety net).
    let mut reply = Vec::new();
    for _ in 0..600 {
        if let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", local_port)) {
            socket.write_all(b"ping").unwrap();
            let _ = socket.read_to_end(&mut reply);
            if !reply.is_empty() {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Its ssh child ends with the session, when the fake stops.
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(reply, b"echo:ping");
}

/// The pids of `parent`'s children, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so read after its ')'.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == parent {
            children.push(pid);
        }
    }
    children
}

/// Sends "ping" to the forwarded port until the service's echo comes back
/// (ssh opens its listener after the login; a minute as a safety net).
fn echo_through(port: u16) -> Vec<u8> {
    use std::io::{Read, Write};
    for _ in 0..600 {
        if let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            socket.write_all(b"ping").unwrap();
            let mut reply = Vec::new();
            let _ = socket.read_to_end(&mut reply);
            if !reply.is_empty() {
                return reply;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the forward on port {port} never answered");
}

#[test]
fn killing_forward_to_a_space_stops_its_ssh_at_once() {
    use std::io::{Read, Write};
    let world = start(vec![space("demo")]);
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut socket in service.incoming().flatten() {
            let mut buf = [0u8; 64];
            let n = socket.read(&mut buf).unwrap_or(0);
            let _ = socket.write_all(&[b"echo:", &buf[..n]].concat());
        }
    });
    for (signal, code) in [("TERM", 143), ("INT", 130), ("HUP", 129)] {
        let local_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let forward = common::start_forward(
            &world.env,
            &[
                HOST,
                "-L",
                &format!("{local_port}:127.0.0.1:{service_port}"),
            ],
            1,
        );
        assert_eq!(echo_through(local_port), b"echo:ping", "{signal}");
        let ssh = children_of(forward.pid());
        assert_eq!(ssh.len(), 1, "{signal}: forward runs one ssh: {ssh:?}");
        let (status, stderr) = forward.signal(signal);
        assert_eq!(status.code(), Some(code), "{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("SIG{signal}: forwarding stopped")),
            "{signal}: {stderr}"
        );
        // forward waited for its ssh: it is gone, and so is its listener.
        assert!(
            !std::path::Path::new(&format!("/proc/{}", ssh[0])).exists(),
            "{signal}: ssh {} outlived forward",
            ssh[0]
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", local_port)).is_err(),
            "{signal}: port {local_port} still open"
        );
    }
}

/// The VPC and subnets of the VpcOnly domain the network checks below seed.
const VPC: &str = "vpc-0aa11bb22cc33dd44";
const SUBNETS: [&str; 2] = ["subnet-0aaa", "subnet-0bbb"];

/// What `doctor --space` says of the network of a VpcOnly domain whose VPC
/// has `endpoints`, with everything on the fake: `(status, detail, fix)`,
/// and how many DescribeVpcEndpoints calls it took.
fn network_check(
    endpoints: Vec<sm_ssh_integration::ec2::VpcEndpoint>,
    deny: bool,
) -> (String, String, String, usize) {
    let ec2 = sm_ssh_integration::ec2::Seed {
        vpc_endpoints: endpoints,
        page_size: None,
    };
    network_check_in(VPC, ec2, deny, &[])
}

/// [`network_check`] for the domain's VPC `vpc`, with `extra_env` set.
fn network_check_in(
    vpc: &str,
    ec2: sm_ssh_integration::ec2::Seed,
    deny: bool,
    extra_env: &[(&str, &str)],
) -> (String, String, String, usize) {
    let mut seed = seed_with(vec![]);
    seed.sagemaker.domains = vec![Domain {
        id: DOMAIN.into(),
        app_network_access_type: "VpcOnly".into(),
        vpc_id: vpc.into(),
        subnet_ids: SUBNETS.iter().map(|s| s.to_string()).collect(),
        ..Domain::default()
    }];
    seed.sagemaker.spaces = vec![space("demo")];
    seed.ec2 = ec2;
    if deny {
        seed.denials
            .actions
            .insert("ec2:DescribeVpcEndpoints".into());
    }
    let mut env = Env::start(seed);
    env.extra_env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let output = env.run(["doctor", "--space", HOST, "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("doctor prints JSON");
    let check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == "space-network")
        .expect("a space-network check")
        .clone();
    let text = |field: &str| check[field].as_str().unwrap_or_default().to_string();
    let calls = env
        .fake
        .events()
        .iter()
        .filter(|e| e.action == "ec2:DescribeVpcEndpoints")
        .count();
    (text("status"), text("detail"), text("fix"), calls)
}

fn endpoints_for(services: &[&str]) -> Vec<sm_ssh_integration::ec2::VpcEndpoint> {
    sm_ssh_integration::ec2::interface_endpoints(REGION, VPC, services)
}

const ALL: [&str; 4] = ["ssm", "ssmmessages", "sagemaker.api", "sagemaker.runtime"];

#[test]
fn doctor_passes_a_vpc_only_domain_with_its_interface_endpoints() {
    // Another VPC's endpoints do not count; a gateway endpoint is no matter.
    let mut endpoints = endpoints_for(&ALL);
    endpoints.push(sm_ssh_integration::ec2::VpcEndpoint {
        id: "vpce-0ffffffffffffffff".into(),
        vpc_id: "vpc-0other".into(),
        service_name: format!("com.amazonaws.{REGION}.ssmmessages"),
        ..Default::default()
    });
    let (status, detail, _, calls) = network_check(endpoints, false);
    assert_eq!(status, "pass", "{detail}");
    for service in ALL {
        assert!(
            detail.contains(&format!("com.amazonaws.{REGION}.{service}")),
            "{detail}"
        );
    }
    assert_eq!(calls, 1);
}

#[test]
fn doctor_pages_through_the_vpc_endpoints() {
    let ec2 = sm_ssh_integration::ec2::Seed {
        vpc_endpoints: endpoints_for(&ALL),
        page_size: Some(1),
    };
    let (status, detail, _, calls) = network_check_in(VPC, ec2, false, &[]);
    assert_eq!(status, "pass", "{detail}");
    assert_eq!(calls, 4, "one endpoint a page");
}

#[test]
fn doctor_names_the_missing_and_unusable_endpoints_with_their_fixes() {
    let mut endpoints = endpoints_for(&["ssm", "sagemaker.api", "sagemaker.runtime"]);
    endpoints[0].state = "pending".into();
    endpoints[2].private_dns_enabled = false;
    let dns_off = endpoints[2].id.clone();
    let (status, detail, fix, _) = network_check(endpoints, false);
    assert_eq!(status, "fail", "{detail}");
    let name = |service: &str| format!("com.amazonaws.{REGION}.{service}");
    assert!(
        detail.contains(&format!("{}: no endpoint", name("ssmmessages"))),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "{}: endpoint {dns_off} has private DNS off",
            name("sagemaker.runtime")
        )),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("{}: endpoint vpce-", name("ssm")))
            && detail.contains("is pending"),
        "{detail}"
    );
    assert!(!detail.contains(&name("sagemaker.api")), "{detail}");
    assert!(detail.contains("NAT gateway"), "{detail}");
    let subnets = SUBNETS.join(" ");
    for service in ["ssmmessages", "ssm"] {
        let create = format!(
            "aws ec2 create-vpc-endpoint --region {REGION} --vpc-endpoint-type Interface --vpc-id {VPC} \
             --service-name {} --subnet-ids {subnets} --private-dns-enabled",
            name(service)
        );
        assert!(fix.lines().any(|l| l == create), "{create} in {fix}");
    }
    assert!(
        fix.contains(&format!("aws ec2 modify-vpc-endpoint --region {REGION} --vpc-endpoint-id {dns_off} --private-dns-enabled")),
        "{fix}"
    );
    assert!(
        !fix.contains(&format!("--service-name {}", name("sagemaker.api"))),
        "{fix}"
    );
}

#[test]
fn doctor_warns_naming_ec2_describe_vpc_endpoints_when_denied() {
    let (status, detail, fix, calls) = network_check(endpoints_for(&ALL), true);
    assert_eq!(status, "warn", "{detail}");
    assert!(
        detail.contains("not allowed to call ec2:DescribeVpcEndpoints"),
        "{detail}"
    );
    assert!(fix.starts_with("grant ec2:DescribeVpcEndpoints"), "{fix}");
    assert!(
        fix.contains("describe-vpc-endpoints") && fix.contains("create-vpc-endpoint"),
        "{fix}"
    );
    // One line, no SDK debug output, no credentials.
    assert!(
        !detail.contains('\n') && !detail.contains("ErrorMetadata") && !detail.contains("testing"),
        "{detail}"
    );
    assert_eq!(calls, 1, "a denial is not retried");
}

/// moto's EC2 (`AWS_ENDPOINT_URL_EC2`), its endpoints made with the AWS CLI:
/// doctor reads moto's answer as it reads the fake's.
#[test]
fn doctor_reads_motos_vpc_endpoints() {
    let Some(aws) = common::aws_cli() else {
        return;
    };
    let moto = sm_ssh_integration::moto::MotoServer::start().expect("moto starts");
    let endpoint = moto.endpoint();
    let cli = |args: &[&str]| -> String {
        let output = Command::new(&aws)
            .args([
                "--region",
                REGION,
                "--endpoint-url",
                &endpoint,
                "--output",
                "text",
                "ec2",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("the AWS CLI runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let vpc = cli(&[
        "create-vpc",
        "--cidr-block",
        "10.0.0.0/16",
        "--query",
        "Vpc.VpcId",
    ]);
    let create = |service: &str, dns: &str| {
        cli(&[
            "create-vpc-endpoint",
            "--vpc-endpoint-type",
            "Interface",
            "--vpc-id",
            &vpc,
            "--service-name",
            &format!("com.amazonaws.{REGION}.{service}"),
            dns,
            "--query",
            "VpcEndpoint.VpcEndpointId",
        ])
    };
    create("ssm", "--private-dns-enabled");
    create("ssmmessages", "--private-dns-enabled");
    let dns_off = create("sagemaker.api", "--no-private-dns-enabled");
    let (status, detail, fix, _) = network_check_in(
        &vpc,
        sm_ssh_integration::ec2::Seed::default(),
        false,
        &[("AWS_ENDPOINT_URL_EC2", &endpoint)],
    );
    assert_eq!(status, "fail", "{detail}");
    let name = |service: &str| format!("com.amazonaws.{REGION}.{service}");
    assert!(
        detail.contains(&format!(
            "{}: endpoint {dns_off} has private DNS off",
            name("sagemaker.api")
        )) && detail.contains(&format!("{}: no endpoint", name("sagemaker.runtime"))),
        "{detail}"
    );
    assert!(!detail.contains(&format!("{}:", name("ssm"))), "{detail}");
    assert!(
        !detail.contains(&format!("{}:", name("ssmmessages"))),
        "{detail}"
    );
    assert!(fix.contains(&format!("--vpc-id {vpc}")), "{fix}");
}
