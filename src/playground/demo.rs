//! The demo world: a fake AWS seeded with one SageMaker training job whose
//! managed instance runs the embedded SSH server, and one Studio space
//! (`demo.space.sagemaker`) with remote access on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssm::config::Credentials;
use sm_ssh_integration::server::FakeAws;
use sm_ssh_integration::sshd::{EmbeddedSshServer, SshdConfig};
use sm_ssh_integration::world::{Identity, Instance, Pacing, Seed};

use super::account::{self, Broken};

const REGION: &str = "us-east-1";
const JOB: &str = "demo";

/// A running demo: stops everything when dropped.
pub struct Demo {
    // The SSH server goes first: its sessions run in the fake's sandbox.
    pub sshd: EmbeddedSshServer,
    pub fake: FakeAws,
    pub instance_id: String,
    pub sandbox: PathBuf,
    /// A private folder for this run (sm-ssh's data dir, ssh files).
    pub scratch: tempfile::TempDir,
}

impl Demo {
    /// The demo in a well-configured account.
    pub async fn start() -> anyhow::Result<Demo> {
        Demo::start_with(None).await
    }

    /// The demo in an account set up as the admin guide says, or broken.
    pub async fn start_with(broken: Option<Broken>) -> anyhow::Result<Demo> {
        let setup = account::setup(broken);
        let identity = setup.identity;
        let instance_id = random_instance_id();
        let seed = Seed {
            region: REGION.into(),
            instances: vec![training_instance(&instance_id, &identity)],
            pacing: Pacing::Realistic,
            identity,
            activation_tier: setup.tier.into(),
            iam: setup.iam,
            sagemaker: sm_ssh_integration::sagemaker::Seed {
                notebook_instances: setup.notebooks,
                notebook_lifecycle_configs: setup.lifecycle_configs,
                ..demo_studio()
            },
            ..Seed::default()
        };
        let fake = FakeAws::start(seed)
            .await
            .context("cannot start the fake AWS")?;
        let sandbox = fake
            .sandbox(&instance_id)
            .context("the fake gave the demo instance no sandbox")?;
        // Where the key push writes, seen from outside the sandbox.
        let etc_ssh = sandbox.join("etc/ssh");
        let sshd = EmbeddedSshServer::start(SshdConfig::new(
            vec![
                etc_ssh.join("authorized_keys"),
                etc_ssh.join("authorized_keys.d"),
            ],
            sandbox.join("home"),
        ))
        .await
        .context("cannot start the embedded SSH server")?;
        fake.map_port(&instance_id, 22, sshd.addr());
        let scratch = tempfile::Builder::new()
            .prefix("sm-ssh-playground-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        Ok(Demo {
            sshd,
            fake,
            instance_id,
            sandbox,
            scratch,
        })
    }

    /// The SDK configuration of this process's own calls: the fake's
    /// endpoint, its region, dummy credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.fake.region()))
            .endpoint_url(self.fake.endpoint())
            .credentials_provider(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "sm-ssh-playground",
            ))
            .load()
            .await
    }

    /// The environment of child processes (`sm-ssh proxy`, `ssh`): the fake's
    /// endpoints and dummy credentials, and no AWS configuration files.
    pub fn child_env(&self, data_dir: &Path) -> Vec<(String, String)> {
        let mut env = self.fake.env();
        let none = self.scratch.path().join("no-aws-config");
        env.push((
            "AWS_CONFIG_FILE".into(),
            none.join("config").display().to_string(),
        ));
        env.push((
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            none.join("credentials").display().to_string(),
        ));
        env.push((crate::keys::HOME_ENV.into(), data_dir.display().to_string()));
        env
    }

    /// Variables of the user's environment that would send a child's AWS
    /// calls elsewhere than the fake.
    pub fn leaking_env() -> Vec<String> {
        std::env::vars_os()
            .map(|(key, _)| key.to_string_lossy().into_owned())
            .filter(|key| key.starts_with("AWS_"))
            .collect()
    }

    /// `demo.training.sagemaker ssh-ed25519 …` for a known_hosts file.
    pub fn known_hosts_line(&self) -> String {
        self.sshd.known_hosts_line(super::DEMO_HOST)
    }
}

/// The demo's Studio domain, with one running space whose remote access is on.
pub const DEMO_DOMAIN: &str = "d-demo0playgrnd";

fn demo_studio() -> sm_ssh_integration::sagemaker::Seed {
    use sm_ssh_integration::sagemaker::{Domain, Seed, Space};
    Seed {
        domains: vec![Domain {
            id: DEMO_DOMAIN.into(),
            name: "playground".into(),
            ..Domain::default()
        }],
        spaces: vec![Space {
            domain_id: DEMO_DOMAIN.into(),
            name: "demo".into(),
            instance_type: "ml.m5.large".into(),
            ..Space::default()
        }],
        ..Seed::default()
    }
}

/// A fresh `mi-` id each run, so that a pushed-key record from an earlier
/// run never stands for a key this run's empty sandbox does not hold.
fn random_instance_id() -> String {
    let n: u128 = rand::random();
    format!("mi-{:017x}", n & ((1u128 << 68) - 1))
}

/// The tags sagemaker-ssh-helper's container side puts on its instance.
fn training_instance(id: &str, identity: &Identity) -> Instance {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let tags: BTreeMap<String, String> = [
        ("SSHOwner", identity.user_id.clone()),
        ("SSHResourceName", JOB.to_string()),
        (
            "SSHResourceArn",
            format!(
                "arn:aws:sagemaker:{REGION}:{}:training-job/{JOB}",
                identity.account
            ),
        ),
        ("SSHTimestamp", now.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Instance {
        id: id.into(),
        tags,
        registration_date: now as f64,
        last_ping: now as f64,
        computer_name: "algo-1".into(),
        ..Instance::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_look_like_managed_instances_and_differ() {
        let (a, b) = (random_instance_id(), random_instance_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.starts_with("mi-"));
            assert!(id[3..].chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
