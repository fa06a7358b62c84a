//! Shared harness of the end-to-end tests: a fake AWS on loopback, the real
//! `sm-ssh` binary run with the fake's endpoints and a private HOME, and
//! helpers to seed SageMaker-style managed instances.
//!
//! Each test file includes it with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

pub mod credentials;
pub mod ssh;

use sm_ssh_integration::server::FakeAws;
use sm_ssh_integration::world::{Identity, Instance, PingStatus, Seed};

pub const REGION: &str = "eu-west-1";
pub const ACCOUNT: &str = "123456789012";

/// A fake AWS serving on 127.0.0.1 from its own tokio runtime, plus a private
/// HOME for the binary. Everything stops when it is dropped.
pub struct Env {
    pub fake: FakeAws,
    pub home: tempfile::TempDir,
    /// Extra variables for every command (e.g. moto's endpoints).
    pub extra_env: Vec<(String, String)>,
    // Dropped last so the fake's tasks can shut down on it.
    runtime: tokio::runtime::Runtime,
}

impl Env {
    /// Starts the fake with `seed` (its region defaults to [`REGION`]).
    pub fn start(mut seed: Seed) -> Env {
        if seed.region.is_empty() {
            seed.region = REGION.into();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the fake");
        let fake = runtime
            .block_on(FakeAws::start(seed))
            .expect("the fake AWS starts");
        Env {
            fake,
            home: tempfile::tempdir().expect("temporary HOME"),
            extra_env: Vec::new(),
            runtime,
        }
    }

    /// The private HOME of the binary (`~/.ssh` lives here).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// sm-ssh's data directory (key, known hosts), via `SM_SSH_HOME`.
    pub fn data_dir(&self) -> PathBuf {
        self.home.path().join("sm-ssh-data")
    }

    /// `sm-ssh <args>` with the fake's endpoints, dummy credentials, the
    /// private HOME and data dir, and no inherited AWS or sm-ssh settings.
    pub fn sm_ssh<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sm-ssh"));
        command.args(args);
        isolate(&mut command, self.home.path());
        command.env("SM_SSH_HOME", self.data_dir());
        // Services the fake does not serve still go to loopback, never AWS.
        command.env("AWS_ENDPOINT_URL", self.fake.endpoint());
        for (key, value) in self.fake.env() {
            command.env(key, value);
        }
        for (key, value) in &self.extra_env {
            command.env(key, value);
        }
        command
    }

    /// `sm-ssh config install --file <HOME>/ssh_config` (which also makes
    /// sm-ssh's key, which ssh loads as it starts); returns the file.
    pub fn install_config(&self) -> PathBuf {
        let config = self.home().join("ssh_config");
        let output = self.run([
            "config".as_ref(),
            "install".as_ref(),
            "--file".as_ref(),
            config.as_os_str(),
        ]);
        assert_exit(&output, 0);
        config
    }

    /// Runs `sm-ssh <args>` to completion with stdin closed.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.sm_ssh(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("sm-ssh runs")
    }

    /// Adds (or replaces) an instance while the fake runs.
    pub fn add_instance(&self, instance: Instance) {
        self.fake.add_instance(instance).expect("instance added");
    }

    /// Changes an instance's ping status while the fake runs.
    pub fn set_ping_status(&self, instance_id: &str, status: PingStatus) {
        self.fake.set_ping_status(instance_id, status);
    }

    /// Points CloudWatch Logs at `endpoint` (a moto server).
    pub fn use_logs_endpoint(&mut self, endpoint: &str) {
        self.extra_env.push((
            "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS".into(),
            endpoint.to_string(),
        ));
    }

    /// The tokio runtime the fake runs on, for tests that need async helpers.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }
}

/// Clears what could leak from the developer's or CI's environment into the
/// binary: AWS profiles and credentials, sm-ssh logging, the real HOME (so
/// `~/.aws` and `~/.ssh` are the test's own).
pub fn isolate(command: &mut Command, home: &Path) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        // A developer's proxy settings would route the fake's traffic too.
        let proxy = key.to_ascii_lowercase().ends_with("_proxy");
        if key.starts_with("AWS_") || key.starts_with("SM_SSH_") || proxy {
            command.env_remove(&key);
        }
    }
    command
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Each run resolves afresh, as tests expect; tests/round_trips.rs
        // removes it to test the warm-path cache.
        .env("SM_SSH_NO_CACHE", "1")
        .env_remove("RUST_LOG");
}

/// The caller identity the fake reports by default (its `user_id` is the
/// `SSHOwner` value of instances the caller owns).
pub fn caller() -> Identity {
    Identity::default()
}

/// `arn:aws:sagemaker:<REGION>:<ACCOUNT>:<resource>`.
pub fn sagemaker_arn(resource: &str) -> String {
    format!("arn:aws:sagemaker:{REGION}:{ACCOUNT}:{resource}")
}

/// A managed instance registered by sagemaker-ssh-helper inside a job or app:
/// tags SSHOwner, SSHResourceName, SSHResourceArn and SSHTimestamp, Online.
/// `resource` is the ARN's resource part, e.g. `training-job/my-job`.
pub fn sagemaker_instance(
    id: &str,
    owner: &str,
    name: &str,
    resource: &str,
    timestamp: u64,
) -> Instance {
    let tags: BTreeMap<String, String> = [
        ("SSHOwner", owner.to_string()),
        ("SSHResourceName", name.to_string()),
        ("SSHResourceArn", sagemaker_arn(resource)),
        ("SSHTimestamp", timestamp.to_string()),
        ("SSHCreator", "AROAEXAMPLEEXECUTION:SageMaker".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Instance {
        id: id.into(),
        tags,
        registration_date: timestamp as f64,
        last_ping: timestamp as f64 + 60.0,
        ..Instance::default()
    }
}

/// A training job's instance owned by the default caller.
pub fn training_instance(id: &str, job: &str, timestamp: u64) -> Instance {
    sagemaker_instance(
        id,
        &caller().user_id,
        job,
        &format!("training-job/{job}"),
        timestamp,
    )
}

/// A seed with the given instances and everything else at its default.
pub fn seed_with(instances: Vec<Instance>) -> Seed {
    Seed {
        region: REGION.into(),
        instances,
        // Session Manager needs it for the hybrid (`mi-…`) nodes tests use.
        activation_tier: "advanced".into(),
        ..Seed::default()
    }
}

/// The user the tests run as (the one the test sshd lets in).
pub fn me() -> String {
    let output = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8(output.stdout)
        .expect("a UTF-8 user name")
        .trim()
        .to_owned()
}

/// stdout and stderr as text, for assertions and failure messages.
/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound, so no server another test starts meanwhile can take
/// it, but never listening, so a connection attempt is reset at once.
pub fn refusing_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Panics with both streams unless the command exited with `code`.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = text(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

/// A running `sm-ssh forward`, the local ports it announced, and its stderr.
pub struct Forward {
    child: Child,
    pub ports: Vec<u16>,
    /// Everything the child wrote on stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Starts `sm-ssh forward` and reads its announcement of each forward from
/// stderr ("forwarding 127.0.0.1:PORT -> …").
pub fn start_forward(env: &Env, args: &[&str], forwards: usize) -> Forward {
    let mut child = env
        .sm_ssh(["forward"].iter().chain(args))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut ports = Vec::new();
    let mut stderr = Vec::new();
    while ports.len() < forwards {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            let status = child.wait().unwrap();
            panic!(
                "sm-ssh forward exited ({status}) before listening:\n{}",
                stderr.join("")
            );
        }
        if let Some(rest) = line.strip_prefix("forwarding ") {
            let local = rest.split_whitespace().next().unwrap();
            ports.push(local.rsplit(':').next().unwrap().parse().unwrap());
        }
        stderr.push(line);
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    let stderr = Arc::new(Mutex::new(stderr));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line + "\n");
        }
    });
    Forward {
        child,
        ports,
        stderr,
    }
}

impl Forward {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().concat()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ctrl-C, then the exit status and all of stderr.
    pub fn interrupt(self) -> (std::process::ExitStatus, String) {
        self.signal("INT")
    }

    /// `kill -<name>`, then the exit status and all of stderr.
    pub fn signal(mut self, name: &str) -> (std::process::ExitStatus, String) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        // The drain thread ends at EOF; give it the last lines.
        std::thread::sleep(std::time::Duration::from_millis(50));
        (status, self.stderr())
    }
}

impl Drop for Forward {
    // Never leave the child behind, whether the test passed or panicked.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AWS CLI the tests run (`SM_SSH_TEST_AWS_CLI`, set by scripts/test),
/// or None (the test then skips, saying so).
pub fn aws_cli() -> Option<PathBuf> {
    match std::env::var_os("SM_SSH_TEST_AWS_CLI") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            eprintln!("SM_SSH_TEST_AWS_CLI is unset (scripts/test sets it); skipping");
            None
        }
    }
}

/// A directory holding `session-manager-plugin` → the sm-ssh binary.
pub fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_sm-ssh"),
        dir.path().join("session-manager-plugin"),
    )
    .unwrap();
    dir
}

/// Incompressible, reproducible bytes (xorshift64 from `seed`).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 8);
    let mut state = seed | 1;
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}
