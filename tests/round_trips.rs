//! The API calls of `sm-ssh proxy <name>`, counted from the fake's event
//! log: cold (nothing cached) and warm (an IDE's reconnect within minutes:
//! StartSession only), a stale cache entry that must never fail a
//! connection, and the bypass. The harness sets SM_SSH_NO_CACHE for every
//! other test; these remove it.

mod common;

use std::process::{Command, Output, Stdio};

use common::ssh::SshWorld;
use common::{assert_exit, me, seed_with, training_instance, Env};
use sm_ssh_integration::world::{ApiEvent, PingStatus};

const INSTANCE: &str = "mi-0a1b2c3d4e5f60718";
const REPLACEMENT: &str = "mi-0ffeeffeeffeeffe1";
const JOB: &str = "my-job";
const HOST: &str = "my-job.training.sagemaker";

fn start() -> SshWorld {
    SshWorld::start(Env::start(seed_with(vec![])), INSTANCE, JOB)
}

/// `sm-ssh proxy --user <me> HOST` with the cache on and stdin closed: it
/// opens the session and ends it at EOF.
fn proxy(world: &SshWorld, extra: &[&str]) -> Output {
    let user = me();
    let mut args = vec!["proxy", "--user", &user];
    args.extend_from_slice(extra);
    args.push(HOST);
    cached(world.env.sm_ssh(args))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn cached(mut command: Command) -> Command {
    command.env_remove("SM_SSH_NO_CACHE");
    command
}

/// The calls made since `from` events, as actions.
fn calls_since(world: &SshWorld, from: usize) -> Vec<ApiEvent> {
    world.env.fake.events().into_iter().skip(from).collect()
}

fn count(events: &[ApiEvent], action: &str) -> usize {
    events.iter().filter(|e| e.action == action).count()
}

/// The actions up to and including the first successful StartSession: what
/// stands between ssh and the banner.
fn critical_path(events: &[ApiEvent]) -> Vec<&str> {
    let end = events
        .iter()
        .position(|e| e.action == "ssm:StartSession" && e.error.is_none())
        .expect("a session was started");
    events[..=end]
        .iter()
        .map(|e| e.action.as_str())
        // The key push runs beside StartSession; its polls are not in its way.
        .filter(|a| *a != "ssm:GetCommandInvocation")
        .collect()
}

#[test]
fn a_warm_proxy_makes_only_startsession() {
    let world = start();
    assert_exit(&proxy(&world, &[]), 0);
    let cold = calls_since(&world, 0);
    // Identity and search by name at once, the tags, the key push, the session.
    assert_eq!(count(&cold, "sts:GetCallerIdentity"), 1, "{cold:#?}");
    assert_eq!(count(&cold, "ssm:DescribeInstanceInformation"), 1);
    assert_eq!(count(&cold, "ssm:ListTagsForResource"), 1);
    assert_eq!(count(&cold, "ssm:SendCommand"), 1);
    assert_eq!(count(&cold, "ssm:StartSession"), 1);

    let before = world.env.fake.events().len();
    assert_exit(&proxy(&world, &[]), 0);
    let warm = calls_since(&world, before);
    assert_eq!(critical_path(&warm), ["ssm:StartSession"], "{warm:#?}");
    assert_eq!(
        warm.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["ssm:StartSession", "ssm:TerminateSession"]
    );

    // The cache holds no secret: no access key, no token.
    let cache = std::fs::read_dir(world.env.data_dir().join("cache"))
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(cache.contains(INSTANCE), "{cache}");
    assert!(
        !cache.contains("testing") && !cache.contains("Token"),
        "{cache}"
    );
}

#[test]
fn ssh_through_a_warm_proxy_skips_resolution_and_the_key_push() {
    let world = start();
    for round in ["cold", "warm"] {
        let before = world.env.fake.events().len();
        let output = cached(world.ssh("echo hello")).output().unwrap();
        world.check(&output, &format!("{round} ssh"), "");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
        let calls = calls_since(&world, before);
        if round == "warm" {
            assert_eq!(critical_path(&calls), ["ssm:StartSession"], "{calls:#?}");
            assert_eq!(count(&calls, "ssm:SendCommand"), 0);
        }
    }
}

#[test]
fn a_replaced_instance_in_the_cache_never_fails_a_connection() {
    let world = start();
    assert_exit(&cached(world.ssh("true")).output().unwrap(), 0);
    // The job's next run: a new instance; the cached one lost its agent.
    world
        .env
        .set_ping_status(INSTANCE, PingStatus::ConnectionLost);
    world
        .env
        .add_instance(training_instance(REPLACEMENT, JOB, 1_800_000_000));
    world.env.fake.map_port(REPLACEMENT, 22, world.sshd.addr());
    let before = world.env.fake.events().len();
    let output = cached(world.ssh("echo replaced")).output().unwrap();
    world.check(&output, "ssh after the replacement", "");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "replaced\n");
    let starts: Vec<(String, Option<String>)> = calls_since(&world, before)
        .into_iter()
        .filter(|e| e.action == "ssm:StartSession")
        .map(|e| (e.resource.unwrap_or_default(), e.error))
        .collect();
    assert_eq!(
        starts,
        [
            (INSTANCE.to_owned(), Some("TargetNotConnected".to_owned())),
            (REPLACEMENT.to_owned(), None)
        ]
    );
    // And the cache now names the replacement: the next one is warm again.
    let before = world.env.fake.events().len();
    assert_exit(&proxy(&world, &[]), 0);
    let calls = calls_since(&world, before);
    assert_eq!(critical_path(&calls), ["ssm:StartSession"], "{calls:#?}");
}

#[test]
fn an_instance_that_vanished_is_resolved_again_once_then_reported() {
    let world = start();
    assert_exit(&proxy(&world, &[]), 0);
    world.env.set_ping_status(INSTANCE, PingStatus::Inactive);
    let before = world.env.fake.events().len();
    let output = proxy(&world, &[]);
    let (_, stderr) = assert_exit(&output, 4);
    assert!(stderr.contains("Inactive"), "{stderr}");
    let calls = calls_since(&world, before);
    assert_eq!(count(&calls, "ssm:StartSession"), 1, "{calls:#?}");
    assert_eq!(count(&calls, "ssm:DescribeInstanceInformation"), 1);
}

#[test]
fn no_cache_and_its_variable_resolve_every_time() {
    let world = start();
    for run in 0..2 {
        assert_exit(&proxy(&world, &["--no-cache"]), 0);
        let output = world
            .env
            .sm_ssh(["proxy", "--user", &me(), HOST])
            .env("SM_SSH_NO_CACHE", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_exit(&output, 0);
        let calls = world.env.fake.events();
        assert_eq!(count(&calls, "sts:GetCallerIdentity"), 2 * (run + 1));
    }
    assert!(!world.env.data_dir().join("cache").exists());
}
