//! What a dial takes from its environment, end to end with `sm-ssh proxy`
//! bridging its stdin/stdout to a session whose port 22 is a TCP echo:
//!
//! - temporary credentials from a `credential_process` that expire during the
//!   session (the fake mints them and refuses expired ones), while the fake
//!   cuts the websocket with `1000 Bye` every few seconds: every ResumeSession
//!   and signed redial uses fresh credentials, and with none to be had the
//!   session ends with one clear message naming the login to run;
//! - an HTTP proxy (Debian's tinyproxy, started here on loopback with its own
//!   configuration): the API calls and the websocket go through it, proven by
//!   its log, in upper- or lowercase variables, and `NO_PROXY` bypasses it;
//!   the early dial during StartSession (warm path) goes through it as well,
//!   and so does doctor's EC2 call, which is not made with an SDK client of its own.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::credentials::{expiring_profile, use_expiring_profile};
use common::{seed_with, Env};
use sm_ssh_integration::world::{Faults, Instance, Pacing};
use tokio::net::TcpListener;

const INSTANCE: &str = "mi-0c4ed0c4ed0c4ed00";
/// A generous bound on every wait, so a broken build fails instead of hanging.
const SAFETY: Duration = Duration::from_secs(120);

/// A fake cutting each websocket after `cut_every_ms`, whose instance's port
/// 22 is a TCP echo.
fn echo_env(cut_every_ms: Option<u64>) -> Env {
    let mut seed = seed_with(vec![]);
    seed.pacing = Pacing::Unconstrained;
    seed.faults = Faults {
        cut_every_ms,
        ..Faults::default()
    };
    let env = Env::start(seed);
    let echo = env.runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    });
    let mut instance = Instance {
        id: INSTANCE.into(),
        ..Instance::default()
    };
    instance.ports.insert(22, echo);
    env.add_instance(instance);
    env
}

/// A running `sm-ssh proxy`: lines written to it come back from the echo.
struct Tunnel {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
}

impl Tunnel {
    fn start(mut command: Command) -> Tunnel {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sm-ssh runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            sink.lock().unwrap().push_str(&text);
        });
        Tunnel {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr,
        }
    }

    /// Sends `line` and reads it back; `None` once the tunnel has ended.
    fn echo(&mut self, line: &str) -> Option<String> {
        let stdin = self.stdin.as_mut()?;
        stdin.write_all(format!("{line}\n").as_bytes()).ok()?;
        stdin.flush().ok()?;
        let mut back = String::new();
        match self.stdout.read_line(&mut back) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(back.trim_end().to_owned()),
        }
    }

    /// Closes stdin (which ends the session) and waits for the exit.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let status = self.child.wait().unwrap();
        // The stderr thread ends at EOF, which the exit implies.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stderr)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy_command(env: &Env) -> Command {
    env.sm_ssh(["proxy", "--push-key", "never", INSTANCE])
}

// ------------------------------------------------------------ credentials --

/// `sm-ssh proxy` with the expiring profile and no static keys.
fn expiring_command(env: &Env) -> Command {
    let mut command = proxy_command(env);
    use_expiring_profile(env, &mut command);
    command
}

#[test]
fn a_session_outlives_its_credentials_across_cuts() {
    // 20 s credentials, a `1000 Bye` every 5 s: the session runs until six
    // redials happened, well past the first credentials' expiry.
    let env = echo_env(Some(5000));
    expiring_profile(&env, 20);
    let mut tunnel = Tunnel::start(expiring_command(&env));
    let started = Instant::now();
    let stats = || env.fake.world().lock().unwrap().data_plane.stats();
    let mut n = 0;
    while stats().reconnects < 6 {
        assert!(started.elapsed() < SAFETY, "{:?}", stats());
        let line = format!("ping {n}");
        let back = tunnel.echo(&line);
        assert_eq!(
            back.as_deref(),
            Some(line.as_str()),
            "{}",
            tunnel.stderr.lock().unwrap()
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let world = env.fake.world();
    let (minted, first_expired) = {
        let world = world.lock().unwrap();
        let first = world.credentials.values().filter_map(|c| c.expires).min();
        (
            world.credentials.len(),
            first.is_some_and(|at| at < std::time::SystemTime::now()),
        )
    };
    assert!(
        first_expired,
        "the session did not outlive its first credentials"
    );
    assert!(
        minted >= 2,
        "credentials were not refreshed ({minted} minted)"
    );
    assert_eq!(stats().refused_upgrades, 0, "{:?}", stats());
    let refused: Vec<_> = env
        .fake
        .events()
        .into_iter()
        .filter(|e| e.error.is_some())
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    let (status, stderr) = tunnel.finish();
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn no_fresh_credentials_end_the_session_with_the_login_to_run() {
    let env = echo_env(Some(1500));
    let allow = expiring_profile(&env, 4);
    let mut tunnel = Tunnel::start(expiring_command(&env));
    assert_eq!(tunnel.echo("hello").as_deref(), Some("hello"));
    // The SSO session ends: credential_process fails from now on.
    std::fs::remove_file(&allow).unwrap();
    let started = Instant::now();
    let mut n = 0;
    while tunnel.echo(&format!("more {n}")).is_some() {
        assert!(started.elapsed() < SAFETY, "the tunnel never ended");
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, stderr) = tunnel.finish();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("credentials are missing, invalid or expired"),
        "{stderr}"
    );
    assert!(
        stderr.contains("aws sso login --profile expiring"),
        "{stderr}"
    );
    assert!(!stderr.contains("Error {"), "no Debug output: {stderr}");
}

// ------------------------------------------------------------------ proxy --

/// tinyproxy on a loopback port with its own configuration and log; stopped
/// when dropped.
struct Tinyproxy {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let config = dir.path().join("tinyproxy.conf");
        // No ConnectPort line: CONNECT may reach any port (the fake's is random).
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\n\
                 MaxClients 50\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy runs (scripts/test installs tinyproxy-bin)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < SAFETY, "tinyproxy never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tinyproxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The requests tinyproxy relayed so far ("CONNECT host:port HTTP/1.1",
    /// "POST http://… HTTP/1.1").
    fn requests(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once("]: Request (file descriptor ").map(|(_, r)| r))
            .filter_map(|r| r.split_once("): ").map(|(_, req)| req.to_owned()))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One echo through `sm-ssh proxy` run with `vars` set.
fn echo_with(env: &Env, vars: &[(&str, &str)]) {
    let mut command = proxy_command(env);
    for (key, value) in vars {
        command.env(key, value);
    }
    let mut tunnel = Tunnel::start(command);
    assert_eq!(
        tunnel.echo("through").as_deref(),
        Some("through"),
        "{}",
        tunnel.stderr.lock().unwrap()
    );
    let (status, stderr) = tunnel.finish();
    assert!(status.success(), "{status}\n{stderr}");
}

/// tinyproxy relayed the websocket (CONNECT to the fake) and the API calls
/// (absolute-form POSTs to it).
#[track_caller]
fn assert_went_through(env: &Env, proxy: &Tinyproxy) {
    let requests = proxy.requests();
    let fake = env.fake.addr().to_string();
    let connect = format!("CONNECT {fake} HTTP/1.1");
    let post = format!("POST http://{fake}/ HTTP/1.1");
    assert!(
        requests.contains(&connect),
        "the websocket did not go through the proxy: {requests:#?}"
    );
    assert!(
        requests.contains(&post),
        "the API calls did not go through the proxy: {requests:#?}"
    );
}

#[test]
fn api_calls_and_the_websocket_go_through_the_proxy() {
    let env = echo_env(None);
    let proxy = Tinyproxy::start();
    // The fake's API is http://, its data channel ws://: HTTP_PROXY covers both.
    echo_with(
        &env,
        &[("HTTP_PROXY", &proxy.url), ("HTTPS_PROXY", &proxy.url)],
    );
    assert_went_through(&env, &proxy);
}

#[test]
fn lowercase_variables_work_and_no_proxy_bypasses_the_proxy() {
    let env = echo_env(None);
    let proxy = Tinyproxy::start();
    echo_with(
        &env,
        &[("http_proxy", &proxy.url), ("no_proxy", "127.0.0.1")],
    );
    assert_eq!(
        proxy.requests(),
        Vec::<String>::new(),
        "NO_PROXY was not honoured"
    );
    echo_with(&env, &[("http_proxy", &proxy.url)]);
    assert_went_through(&env, &proxy);
}

/// doctor's DescribeVpcEndpoints (sent through the SDK's pipeline without
/// aws-sdk-ec2) takes the proxy and `AWS_ENDPOINT_URL_EC2` as the SDK's
/// clients do: its POST goes to `localhost`, the other calls to 127.0.0.1.
#[test]
fn doctors_ec2_call_goes_through_the_proxy() {
    use sm_ssh_integration::sagemaker::{Domain, Space};
    let mut seed = seed_with(vec![]);
    seed.sagemaker.domains = vec![Domain {
        app_network_access_type: "VpcOnly".into(),
        ..Domain::default()
    }];
    let domain = seed.sagemaker.domains[0].clone();
    seed.sagemaker.spaces = vec![Space {
        domain_id: domain.id.clone(),
        name: "demo".into(),
        instance_type: "ml.m5.large".into(),
        ..Space::default()
    }];
    seed.ec2.vpc_endpoints = sm_ssh_integration::ec2::interface_endpoints(
        common::REGION,
        &domain.vpc_id,
        &["ssm", "ssmmessages", "sagemaker.api", "sagemaker.runtime"],
    );
    let env = Env::start(seed);
    let proxy = Tinyproxy::start();
    let ec2 = format!("http://localhost:{}", env.fake.addr().port());
    let output = env
        .sm_ssh([
            "doctor",
            "--space",
            &format!("demo.{}.space.sagemaker", domain.id),
            "--json",
        ])
        .env("HTTP_PROXY", &proxy.url)
        .env("AWS_ENDPOINT_URL_EC2", &ec2)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let network = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "space-network")
        .expect("space-network")
        .clone();
    assert_eq!(network["status"], "pass", "{network}");
    let requests = proxy.requests();
    assert!(
        requests.contains(&format!("POST {ec2}/ HTTP/1.1")),
        "EC2 did not go through the proxy: {requests:#?}"
    );
}

/// With the warm-path cache on, the second `proxy` dials the data channel
/// while StartSession is in flight (the first learnt where it is): that
/// early dial goes through the proxy too, and carries the session, so each
/// session makes exactly one CONNECT.
#[test]
fn the_early_dial_goes_through_the_proxy_and_carries_the_session() {
    let env = echo_env(None);
    let proxy = Tinyproxy::start();
    let log = tempfile::tempdir().unwrap();
    let log = log.path().join("second.log");
    let cached = [("HTTP_PROXY", proxy.url.as_str()), ("SM_SSH_NO_CACHE", "0")];
    echo_with(&env, &cached);
    let logged = [cached[0], cached[1], ("SM_SSH_LOG", log.to_str().unwrap())];
    echo_with(&env, &logged);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("using the connection dialled during StartSession"),
        "{log}"
    );
    let connect = format!("CONNECT {} HTTP/1.1", env.fake.addr());
    let requests = proxy.requests();
    let connects = requests.iter().filter(|r| **r == connect).count();
    assert_eq!(connects, 2, "{requests:#?}");
}
