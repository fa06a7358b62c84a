//! The real OpenSSH client through `sm-ssh proxy` as its ProxyCommand, to a
//! real sshd behind a seeded instance of the fake: remote commands, the key
//! push on the first connection only, and scp of 20 MB both ways.
//!
//! sshd runs as the test's user, so the login user is that user (root where
//! CI runs); `proxy --user %r` pushes the key to the same user's home.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_exit, seed_with, training_instance, Env};
use sha2::{Digest, Sha256};
use sm_ssh_integration::openssh::OpenSshServer;
use sm_ssh_integration::world::{Faults, Pacing};

pub const INSTANCE: &str = "mi-0a1b2c3d4e5f60718";
pub const HOST: &str = "my-job.training.sagemaker";

/// A fake with one training job whose port 22 is a real sshd.
pub struct SshWorld {
    pub env: Env,
    pub sshd: OpenSshServer,
    pub sandbox: PathBuf,
}

impl SshWorld {
    pub fn start(pacing: Pacing) -> SshWorld {
        let mut seed = seed_with(vec![]);
        seed.pacing = pacing;
        let env = Env::start(seed);
        let sandbox = env
            .fake
            .add_instance(training_instance(INSTANCE, "my-job", 1_700_000_000))
            .expect("instance added");
        let sshd = OpenSshServer::start(&sandbox).expect("sshd starts (install openssh-server)");
        env.fake.map_port(INSTANCE, 22, sshd.addr());
        SshWorld { env, sshd, sandbox }
    }

    /// `program` (ssh or scp) with the same environment as sm-ssh, its own
    /// known-hosts file, and `sm-ssh proxy` as ProxyCommand.
    pub fn openssh(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        common::isolate(&mut command, self.env.home());
        command.env("SM_SSH_HOME", self.env.data_dir());
        command.env("AWS_ENDPOINT_URL", self.env.fake.endpoint());
        for (key, value) in self.env.fake.env() {
            command.env(key, value);
        }
        let proxy = format!("{} proxy --user %r %h", env!("CARGO_BIN_EXE_sm-ssh"));
        let known_hosts = self.env.home().join("known_hosts");
        command.args(["-F", "/dev/null", "-o", "BatchMode=yes"]);
        command.arg("-o").arg(format!("ProxyCommand={proxy}"));
        command
            .arg("-o")
            .arg(format!("IdentityFile={}", self.identity().display()));
        command.args(["-o", "IdentitiesOnly=yes"]);
        command
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()));
        command.args(["-o", "StrictHostKeyChecking=accept-new"]);
        command.stdin(Stdio::null());
        command
    }

    /// sm-ssh's key (ssh loads identities as it starts, so make it first).
    pub fn identity(&self) -> PathBuf {
        self.env.data_dir().join("id_ed25519")
    }

    pub fn ensure_identity(&self) {
        let config = self.env.home().join("ssh_config");
        let output = self.env.run([
            "config".as_ref(),
            "install".as_ref(),
            "--file".as_ref(),
            config.as_os_str(),
        ]);
        assert_exit(&output, 0);
        assert!(self.identity().exists());
    }

    /// `ssh <me>@my-job.training.sagemaker <command>`.
    pub fn ssh(&self, command: &str) -> Output {
        let output = self
            .openssh("ssh")
            .arg(format!("{}@{HOST}", me()))
            .arg(command)
            .output()
            .expect("ssh runs");
        if !output.status.success() {
            eprintln!("sshd log:\n{}", self.sshd.log());
        }
        output
    }

    pub fn send_commands(&self) -> usize {
        self.env
            .fake
            .events()
            .iter()
            .filter(|e| e.action == "ssm:SendCommand" && e.error.is_none())
            .count()
    }
}

/// The user the tests run as (and so the user sshd can log in).
pub fn me() -> String {
    let output = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn ssh_runs_a_command_and_pushes_the_key_only_once() {
    let world = SshWorld::start(Pacing::Realistic);
    world.ensure_identity();
    let first = world.ssh("echo hello from $(whoami)");
    let (stdout, _) = assert_exit(&first, 0);
    assert_eq!(stdout, format!("hello from {}\n", me()));
    assert_eq!(
        world.send_commands(),
        1,
        "the first connection pushes the key"
    );
    let authorized =
        std::fs::read_to_string(world.sandbox.join("etc/ssh/authorized_keys")).unwrap();
    assert_eq!(authorized.matches("sm-ssh").count(), 1);

    // The second connection skips SendCommand, even where it is now denied.
    world.env.fake.deny_action("ssm:SendCommand", true);
    let second = world.ssh("echo again");
    let (stdout, _) = assert_exit(&second, 0);
    assert_eq!(stdout, "again\n");
    assert_eq!(world.send_commands(), 1);

    // The session's Reason names sm-ssh and the host for CloudTrail.
    let reasons: Vec<String> = world
        .env
        .fake
        .events()
        .into_iter()
        .filter(|e| e.action == "ssm:StartSession")
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("sm-ssh") && r.ends_with(HOST)),
        "{reasons:?}"
    );
}

#[test]
fn push_key_always_pushes_again_without_duplicating_the_line() {
    let world = SshWorld::start(Pacing::Realistic);
    world.ensure_identity();
    for _ in 0..2 {
        let output = world
            .env
            .run(["proxy", "--push-key", "always", "--user", &me(), HOST]);
        // stdin is closed: the proxy pushes, opens the session and ends at EOF.
        assert_exit(&output, 0);
    }
    assert_eq!(world.send_commands(), 2);
    let authorized =
        std::fs::read_to_string(world.sandbox.join("etc/ssh/authorized_keys")).unwrap();
    assert_eq!(authorized.matches("sm-ssh").count(), 1, "{authorized}");
}

#[test]
fn scp_copies_20_mb_both_ways_intact() {
    let world = SshWorld::start(Pacing::Unconstrained);
    world.ensure_identity();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("upload.bin");
    // Incompressible, reproducible content.
    let mut data = Vec::with_capacity(20 << 20);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while data.len() < 20 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::write(&local, &data).unwrap();
    let remote = dir.path().join("on-the-instance.bin");
    let back = dir.path().join("download.bin");

    let target = |path: &Path| format!("{}@{HOST}:{}", me(), path.display());
    let up = world
        .openssh("scp")
        .arg(&local)
        .arg(target(&remote))
        .output()
        .unwrap();
    assert_exit(&up, 0);
    let down = world
        .openssh("scp")
        .arg(target(&remote))
        .arg(&back)
        .output()
        .unwrap();
    assert_exit(&down, 0);
    let expected = sha256(&local);
    assert_eq!(sha256(&remote), expected);
    assert_eq!(sha256(&back), expected);
}

#[test]
fn websocket_cuts_are_invisible_to_ssh() {
    let world = SshWorld::start(Pacing::Unconstrained);
    world.ensure_identity();
    // Push the key on a quiet channel first; then cut every websocket often.
    assert_exit(&world.ssh("true"), 0);
    world.env.fake.set_faults(Faults {
        cut_every_ms: Some(300),
        ..Faults::default()
    });
    // The output comes in five parts 300 ms apart, so the session lasts past
    // several cuts however fast the machine moves the bytes.
    let output =
        world.ssh("for i in 1 2 3 4 5; do head -c 600000 /dev/zero | tr '\\0' x; sleep 0.3; done");
    assert_eq!(output.status.code(), Some(0));
    let expected = Sha256::digest(vec![b'x'; 3_000_000]);
    assert_eq!(
        Sha256::digest(&output.stdout),
        expected,
        "{} bytes arrived",
        output.stdout.len()
    );
    let resumes = world
        .env
        .fake
        .events()
        .iter()
        .filter(|e| e.action == "ssm:ResumeSession" && e.error.is_none())
        .count();
    assert!(resumes > 0, "the websocket was never cut");
}
