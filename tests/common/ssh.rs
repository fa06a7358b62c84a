//! The OpenSSH client through `sm-ssh proxy` to a real sshd behind a fake
//! instance, and the reproducible data the transfer tests move.

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use sm_ssh_integration::openssh::OpenSshServer;

use super::{me, training_instance, Env};

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A path quoted for the remote shell.
pub fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// A training job whose port 22 is a real sshd running as the test's user.
pub struct SshWorld {
    pub env: Env,
    pub sshd: OpenSshServer,
    host: String,
}

impl SshWorld {
    /// Adds training job `job` (instance `instance`) to `env`, starts its sshd
    /// and installs sm-ssh's key and config.
    pub fn start(env: Env, instance: &str, job: &str) -> SshWorld {
        let sandbox = env
            .fake
            .add_instance(training_instance(instance, job, 1_700_000_000))
            .expect("instance added");
        let sshd = OpenSshServer::start(&sandbox).expect("sshd starts (install openssh-server)");
        env.fake.map_port(instance, 22, sshd.addr());
        // ssh loads its identity as it starts, so sm-ssh's key must exist first.
        env.install_config();
        SshWorld {
            env,
            sshd,
            host: format!("{job}.training.sagemaker"),
        }
    }

    /// `ssh <me>@<job>.training.sagemaker <command>` through `sm-ssh proxy`,
    /// with sm-ssh's environment and key and a known-hosts file of its own.
    pub fn ssh(&self, command: &str) -> Command {
        self.ssh_via(Command::new("ssh"), command)
    }

    /// [`Self::ssh`] run by `launcher` (e.g. `unshare … ssh`), whose
    /// arguments so far end where ssh's begin.
    pub fn ssh_via(&self, mut ssh: Command, command: &str) -> Command {
        super::isolate(&mut ssh, self.env.home());
        ssh.env("SM_SSH_HOME", self.env.data_dir());
        ssh.env("AWS_ENDPOINT_URL", self.env.fake.endpoint());
        for (key, value) in self.env.fake.env() {
            ssh.env(key, value);
        }
        let proxy = format!("{} proxy --user %r %h", env!("CARGO_BIN_EXE_sm-ssh"));
        let identity = self.env.data_dir().join("id_ed25519");
        let known_hosts = self.env.home().join("known_hosts");
        ssh.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg("-o")
            .arg(format!("IdentityFile={}", identity.display()))
            .args(["-o", "IdentitiesOnly=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg(format!("{}@{}", me(), self.host))
            .arg(command);
        ssh
    }

    /// Panics with both streams, sshd's log and `context` unless `output` succeeded.
    #[track_caller]
    pub fn check(&self, output: &Output, what: &str, context: &str) {
        if !output.status.success() {
            panic!(
                "{what} failed ({})\n--- stderr\n{}\n--- sshd log\n{}\n--- context\n{context}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                self.sshd.log(),
            );
        }
    }

    /// Successful ResumeSession calls so far.
    pub fn resumes(&self) -> usize {
        self.env
            .fake
            .events()
            .iter()
            .filter(|e| e.action == "ssm:ResumeSession" && e.error.is_none())
            .count()
    }
}
