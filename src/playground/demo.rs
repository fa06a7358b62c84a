//! The demo world: a fake AWS seeded with one SageMaker training job whose
//! managed instance runs the embedded SSH server, one Studio space
//! (`demo.space.sagemaker`) with remote access on, a training job reached
//! by remote debugging (`debug-demo.training.sagemaker`, two hosts), an
//! endpoint with SSM access (`demo-endpoint.inference.sagemaker`), and one
//! HyperPod cluster (`demo`) whose node `1.workers.demo.hyperpod.sagemaker`
//! runs an SSH server reading the login user's `~/.ssh/authorized_keys`.

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
    /// The HyperPod node's SSH server.
    pub node_sshd: EmbeddedSshServer,
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
        let mut sagemaker = demo_sagemaker(&account::execution_role_arn(&identity.account));
        let ec2 = demo_network(&mut sagemaker, broken);
        let mut instances = vec![training_instance(&instance_id, &identity)];
        instances.extend(native_instances(&sagemaker));
        let seed = Seed {
            region: REGION.into(),
            instances,
            pacing: Pacing::Realistic,
            identity,
            activation_tier: setup.tier.into(),
            iam: setup.iam,
            sagemaker: sm_ssh_integration::sagemaker::Seed {
                notebook_instances: setup.notebooks,
                notebook_lifecycle_configs: setup.lifecycle_configs,
                ..sagemaker
            },
            ec2,
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
        let node_sshd = start_node(&fake).await?;
        let scratch = tempfile::Builder::new()
            .prefix("sm-ssh-playground-")
            .tempdir()
            .context("cannot create a temporary folder")?;
        Ok(Demo {
            sshd,
            node_sshd,
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

/// The job reached by remote debugging, and the endpoint by SSM access.
pub const DEBUG_JOB: &str = "debug-demo";
pub const DEMO_ENDPOINT: &str = "demo-endpoint";

fn demo_sagemaker(role_arn: &str) -> sm_ssh_integration::sagemaker::Seed {
    use sm_ssh_integration::sagemaker::{Domain, Endpoint, Seed, Space, TrainingJob, Variant};
    let job = |name: &str, instance_count: i32| TrainingJob {
        name: name.into(),
        role_arn: role_arn.into(),
        instance_count,
        remote_debug: true,
        ..TrainingJob::default()
    };
    Seed {
        training_jobs: vec![job(JOB, 1), job(DEBUG_JOB, 2)],
        endpoints: vec![Endpoint {
            name: DEMO_ENDPOINT.into(),
            variants: vec![Variant {
                instance_ids: vec!["i-0d3e4a1b2c5f60789".into()],
                ..Variant::default()
            }],
            ..Endpoint::default()
        }],
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
        clusters: vec![demo_cluster()],
        ..Seed::default()
    }
}

/// The demo domain's network: public, or for `--broken vpc-endpoints`
/// VpcOnly with an incomplete set of interface endpoints in its VPC.
fn demo_network(
    sagemaker: &mut sm_ssh_integration::sagemaker::Seed,
    broken: Option<Broken>,
) -> sm_ssh_integration::ec2::Seed {
    if broken != Some(Broken::VpcEndpoints) {
        return sm_ssh_integration::ec2::Seed::default();
    }
    let domain = &mut sagemaker.domains[0];
    domain.app_network_access_type = "VpcOnly".into();
    let mut endpoints = sm_ssh_integration::ec2::interface_endpoints(
        REGION,
        &domain.vpc_id,
        &["ssm", "sagemaker.api", "sagemaker.runtime"],
    );
    endpoints[2].private_dns_enabled = false;
    sm_ssh_integration::ec2::Seed {
        vpc_endpoints: endpoints,
        page_size: None,
    }
}

/// The demo's HyperPod cluster: a Slurm cluster with one running worker.
pub const DEMO_NODE_HOST: &str = "1.workers.demo.hyperpod.sagemaker";

fn demo_cluster() -> sm_ssh_integration::sagemaker::Cluster {
    use sm_ssh_integration::sagemaker::{Cluster, ClusterNode, InstanceGroup};
    Cluster {
        name: "demo".into(),
        id: "demo0cluster".into(),
        instance_groups: vec![InstanceGroup {
            name: "workers".into(),
            ..InstanceGroup::default()
        }],
        nodes: vec![ClusterNode {
            instance_id: "i-0de0000000000d001".into(),
            group: "workers".into(),
            private_dns_hostname: "ip-10-1-0-11.ec2.internal".into(),
            ..ClusterNode::default()
        }],
        ..Cluster::default()
    }
}

/// Seeds the demo node as the native target it is and starts its server,
/// which reads keys where the key install writes them.
async fn start_node(fake: &FakeAws) -> anyhow::Result<EmbeddedSshServer> {
    let cluster = demo_cluster();
    let instance = cluster.node_instance(&cluster.nodes[0]);
    let target = instance.id.clone();
    let sandbox = fake.add_instance(instance)?;
    let home = sandbox.join("home");
    let server = EmbeddedSshServer::start(SshdConfig::new(
        vec![home.join(".ssh/authorized_keys")],
        home,
    ))
    .await
    .context("cannot start the HyperPod node's SSH server")?;
    fake.map_port(&target, 22, server.addr());
    Ok(server)
}

/// The Session Manager targets of the remotely debuggable job's hosts and
/// the endpoint's container: a shell and port forwarding, no sshd.
fn native_instances(seed: &sm_ssh_integration::sagemaker::Seed) -> Vec<Instance> {
    let jobs = seed
        .training_jobs
        .iter()
        .filter(|j| j.name == DEBUG_JOB)
        .flat_map(|j| j.native_targets());
    let endpoints = seed.endpoints.iter().flat_map(|e| e.native_targets());
    jobs.chain(endpoints)
        .map(|id| Instance {
            id,
            native: true,
            computer_name: "localhost".into(),
            ..Instance::default()
        })
        .collect()
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
