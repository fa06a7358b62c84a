//! The fake AWS the harness measures against: one SageMaker-style managed
//! instance whose port 22 is a banner server and port 9000 the checked
//! sink/source, and the environment every measured process runs in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sm_ssh_integration::openssh::OpenSshServer;
use sm_ssh_integration::server::FakeAws;
use sm_ssh_integration::world::{Faults, Identity, Instance, Pacing, Seed};

use crate::network::{Host, Network};
use crate::tcp;

pub const REGION: &str = "eu-west-1";
pub const INSTANCE: &str = "mi-0b0e0c0a0b0e0c0a1";
pub const JOB: &str = "bench-job";
/// The instance behind which a real sshd runs, for `ssh <fqdn> true`.
pub const SSH_INSTANCE: &str = "mi-0b0e0c0a0b0e0c0a2";
pub const SSH_JOB: &str = "bench-ssh";
/// The port on the instance that reaches the sink/source.
pub const TARGET_PORT: u16 = 9000;

pub fn fqdn() -> String {
    format!("{JOB}.training.sagemaker")
}

pub struct Fixture {
    pub fake: FakeAws,
    pub home: tempfile::TempDir,
    // Held for their lifetime: what the instance's ports reach.
    _banner: tcp::Server,
    _target: tcp::Server,
    /// Variables every measured process gets (the fake's endpoints, dummy
    /// credentials, the private HOME).
    pub env: Vec<(String, String)>,
    /// `env` before `enter` put the network's endpoints in.
    direct_env: Option<Vec<(String, String)>>,
}

impl Fixture {
    pub async fn start() -> anyhow::Result<Fixture> {
        let banner = tcp::banner_server().await?;
        let target = tcp::bench_target().await?;
        let identity = Identity::default();
        let instance = Instance {
            id: INSTANCE.into(),
            tags: job_tags(&identity, JOB)?,
            ports: BTreeMap::from([(22, banner.addr), (TARGET_PORT, target.addr)]),
            ..Instance::default()
        };
        let seed = Seed {
            region: REGION.into(),
            identity,
            instances: vec![instance],
            // Session Manager needs it for hybrid (`mi-…`) nodes.
            activation_tier: "advanced".into(),
            ..Seed::default()
        };
        let fake = FakeAws::start(seed).await?;
        let home = tempfile::tempdir()?;
        let h = home.path();
        let mut env: Vec<(String, String)> = vec![
            ("HOME".into(), path(h)),
            ("XDG_DATA_HOME".into(), path(&h.join(".local/share"))),
            ("XDG_CONFIG_HOME".into(), path(&h.join(".config"))),
            ("XDG_CACHE_HOME".into(), path(&h.join(".cache"))),
            ("SM_SSH_HOME".into(), path(&h.join("sm-ssh-data"))),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_DEFAULT_REGION".into(), REGION.into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), path(&h.join(".aws/config"))),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                path(&h.join(".aws/credentials")),
            ),
        ];
        env.extend(fake.env());
        Ok(Fixture {
            fake,
            home,
            _banner: banner,
            _target: target,
            env,
            direct_env: None,
        })
    }

    /// A command with the fixture's environment and nothing inherited from
    /// the caller's AWS or sm-ssh settings.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("AWS_")
                || key.starts_with("SM_SSH_")
                || key.starts_with("SSL_CERT_")
                || key == "RUST_LOG"
            {
                command.env_remove(&key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.kill_on_drop(true);
        command
    }

    /// Sends measured processes, API calls and data channel alike, through
    /// `net` until `leave`.
    pub fn enter(&mut self, net: &Network) {
        self.direct_env.get_or_insert_with(|| self.env.clone());
        self.env.extend(net.env());
        self.fake
            .set_stream_endpoint(Some(net.authority(Host::Messages)));
        self.fake.set_stream_tls(true);
    }

    /// Back to the fake's own plain HTTP port.
    pub fn leave(&mut self) {
        if let Some(env) = self.direct_env.take() {
            self.env = env;
        }
        self.fake.set_stream_endpoint(None);
        self.fake.set_stream_tls(false);
    }

    /// A new, empty cache directory (`XDG_CACHE_HOME`) in the private HOME.
    pub fn cache_dir(&self) -> anyhow::Result<tempfile::TempDir> {
        Ok(tempfile::tempdir_in(self.home())?)
    }

    /// Empties sm-ssh's warm-path cache, which lives in its data directory
    /// (`$SM_SSH_HOME/cache`) since that is set; the pushed-key record
    /// beside it stays, so a cold run is a first connection with the key
    /// already on the instance.
    pub fn forget_sm_ssh_cache(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(self.home().join("sm-ssh-data/cache")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Sets pacing and faults for the sessions started from now on.
    pub fn conditions(&self, pacing: Pacing, faults: Faults) {
        self.fake.set_pacing(pacing);
        self.fake.set_faults(faults);
    }

    /// API calls the fake has answered so far.
    pub fn api_calls(&self) -> usize {
        self.fake.events().len()
    }

    /// Websockets the fake has cut so far (the `cut_every_ms` fault).
    pub fn cuts(&self) -> u64 {
        let world = self.fake.world();
        let stats = world.lock().expect("world lock").data_plane.stats();
        stats.cuts
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// A second instance, job `SSH_JOB`, whose port 22 is Debian's sshd
    /// reading the keys SendCommand writes into the instance's sandbox; and an
    /// ssh config in the private HOME that reaches `*.sagemaker` through
    /// `<sm_ssh> proxy %h` as a user would set it up. Returns the config.
    pub fn add_openssh_instance(&self, sm_ssh: &Path) -> anyhow::Result<(OpenSshServer, PathBuf)> {
        let identity = Identity::default();
        let sandbox = self.fake.add_instance(Instance {
            id: SSH_INSTANCE.into(),
            tags: job_tags(&identity, SSH_JOB)?,
            ..Instance::default()
        })?;
        let sshd = OpenSshServer::start(&sandbox)?;
        self.fake.map_port(SSH_INSTANCE, 22, sshd.addr());
        // A new sshd is a rebuilt instance (an earlier part of the run had
        // one): forget its host key and that our key was pushed to it.
        for file in ["known_hosts", "pushed-keys"] {
            let path = self.home().join("sm-ssh-data").join(file);
            if let Ok(text) = std::fs::read_to_string(&path) {
                let kept: String = text
                    .lines()
                    .filter(|l| !l.contains(SSH_INSTANCE))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(&path, kept)?;
            }
        }
        let config = self.home().join("ssh_config");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            &config,
            format!(
                "Host *.sagemaker\n  ProxyCommand {} proxy %h\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 User {user}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                sm_ssh.display(),
                self.home().join("sm-ssh-data/id_ed25519").display()
            ),
        )?;
        Ok((sshd, config))
    }
}

/// The tags sagemaker-ssh-helper's server side puts on a training job's instance.
fn job_tags(identity: &Identity, job: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    Ok(BTreeMap::from([
        ("SSHOwner".to_string(), identity.user_id.clone()),
        ("SSHResourceName".to_string(), job.to_string()),
        (
            "SSHResourceArn".to_string(),
            format!(
                "arn:aws:sagemaker:{REGION}:{}:training-job/{job}",
                identity.account
            ),
        ),
        ("SSHTimestamp".to_string(), now.to_string()),
    ]))
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A loopback port that was free a moment ago, for tools that need one named.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where cargo puts release binaries of this workspace.
pub fn release_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release")
}
