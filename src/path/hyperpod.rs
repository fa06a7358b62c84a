//! The HyperPod path: cluster nodes named
//! `<node>.<group>.<cluster>.hyperpod.sagemaker`, where `<node>` is the
//! instance id, the private DNS host name (`ip-10-1-2-3`) or a 1-based index
//! among the group's running nodes (oldest launch first, ties by instance
//! id). DescribeCluster and a paged ListClusterNodes find the node; its
//! Session Manager target is `sagemaker-cluster:<cluster-id>_<group>-<id>`.
//! Nodes run sshd, so SSH goes through AWS-StartSSHSession; SendCommand does
//! not reach them, so our key is written into the login user's
//! `~/.ssh/authorized_keys` by a non-interactive command session
//! (AWS-StartNonInteractiveCommand) once per node and key. Slurm nodes log
//! in as `ubuntu`, EKS nodes as `ec2-user`. Host keys are pinned per node.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sagemaker::error::ProvideErrorMetadata;
use bytes::Bytes;
use sm_ssh_proxy::payload::Size;
use sm_ssh_proxy::ShellIo;
use tokio::sync::mpsc;

use super::{Detail, KeyInstall, Liveness, Path, Pin, Reach};
use crate::error::{exit, AwsError, Failure};
use crate::keypush::{self, PushKey, State};
use crate::session::Sessions;
use crate::target::{HyperPodTarget, Target};

/// The login user of Slurm clusters' nodes (Ubuntu images).
pub const SLURM_USER: &str = "ubuntu";
/// The login user of EKS clusters' nodes (Amazon Linux images).
pub const EKS_USER: &str = "ec2-user";
/// The document of the key-install session (`sm-ssh exec`'s).
const COMMAND_DOCUMENT: &str = "AWS-StartNonInteractiveCommand";
/// The key-install script's exit status when the login user is missing.
const NO_SUCH_USER: i32 = 3;
/// A safety net: the script takes well under a second once started.
const INSTALL_LIMIT: Duration = Duration::from_secs(60);
/// ListClusterNodes' largest page.
const PAGE: i32 = 100;

/// One node, as DescribeCluster and ListClusterNodes describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub cluster: String,
    /// The last part of the cluster ARN.
    pub cluster_id: String,
    pub cluster_arn: String,
    /// `Slurm` or `Eks`.
    pub orchestrator: String,
    pub group: String,
    pub instance_id: String,
    pub instance_type: String,
    /// `InstanceStatus.Status`: `Running`, `Pending`, …
    pub status: String,
    /// The first label of `PrivateDnsHostname` (`ip-10-1-2-3`).
    pub host_name: String,
    /// Epoch seconds.
    pub launch_time: i64,
}

impl NodeInfo {
    /// The Session Manager target.
    pub fn session_target(&self) -> String {
        format!(
            "sagemaker-cluster:{}_{}-{}",
            self.cluster_id, self.group, self.instance_id
        )
    }

    /// `<instance-id>.<group>.<cluster>.hyperpod.sagemaker`: the name that
    /// keeps meaning this node when others come and go.
    pub fn host(&self) -> String {
        format!(
            "{}.{}.{}.hyperpod.sagemaker",
            self.instance_id, self.group, self.cluster
        )
    }

    pub fn is_running(&self) -> bool {
        self.status == "Running"
    }

    pub fn default_user(&self) -> &'static str {
        default_user(&self.orchestrator)
    }
}

/// The login user of a cluster's nodes.
pub fn default_user(orchestrator: &str) -> &'static str {
    if orchestrator == "Eks" {
        EKS_USER
    } else {
        SLURM_USER
    }
}

/// A cluster and all its nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub status: String,
    pub orchestrator: String,
    /// The instance groups DescribeCluster names.
    pub groups: Vec<String>,
    /// Every node, in index order: launch time, then instance id.
    pub nodes: Vec<NodeInfo>,
}

impl ClusterInfo {
    /// The running nodes of `group`, in index order.
    pub fn running(&self, group: &str) -> Vec<&NodeInfo> {
        self.nodes
            .iter()
            .filter(|n| n.group == group && n.is_running())
            .collect()
    }
}

pub async fn resolve(sdk: &SdkConfig, target: &Target) -> anyhow::Result<Reach> {
    let Target::HyperPod(node) = target else {
        unreachable!("select() sends only HyperPod nodes here");
    };
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let cluster = describe(&client, &node.cluster).await?;
    Ok(reach_from(&target.to_string(), &cluster, node)?)
}

/// The reach of the node `target` names in `cluster`, or one line saying
/// what exists instead.
pub fn reach_from(
    name: &str,
    cluster: &ClusterInfo,
    target: &HyperPodTarget,
) -> Result<Reach, Failure> {
    let not_found = |message: String| Failure::new(exit::NOT_FOUND, message);
    let Some(group) = cluster
        .groups
        .iter()
        .find(|g| g.eq_ignore_ascii_case(&target.group))
    else {
        return Err(not_found(format!(
            "cluster {} has no instance group {}; its groups: {}",
            cluster.name,
            target.group,
            cluster.groups.join(", ")
        )));
    };
    let running = cluster.running(group);
    let by_index = target
        .node
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| running.get(i).copied());
    let node = by_index.or_else(|| {
        running.iter().copied().find(|n| {
            n.instance_id == target.node || n.host_name.eq_ignore_ascii_case(&target.node)
        })
    });
    let Some(node) = node else {
        let stopped = cluster.nodes.iter().find(|n| {
            n.group == *group
                && (n.instance_id == target.node || n.host_name.eq_ignore_ascii_case(&target.node))
        });
        let offered = if running.is_empty() {
            "none is running".to_string()
        } else {
            let nodes: Vec<String> = running
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{} {} {}", i + 1, n.instance_id, n.host_name))
                .collect();
            format!("running nodes: {}", nodes.join(", "))
        };
        return Err(match stopped {
            Some(n) => Failure::new(
                exit::OFFLINE,
                format!(
                    "node {} of group {group} in cluster {} is {}, not Running; {offered}",
                    n.instance_id, cluster.name, n.status
                ),
            ),
            None => not_found(format!(
                "no running node {} in group {group} of cluster {}; {offered}",
                target.node, cluster.name
            )),
        });
    };
    let session_target = node.session_target();
    Ok(Reach {
        path: Path::HyperPod,
        session_target: session_target.clone(),
        name: name.to_string(),
        default_user: node.default_user(),
        key: KeyInstall::CommandSession,
        sshd: true,
        pin: Pin {
            alias: session_target.clone(),
            binding: session_target,
        },
        liveness: Liveness::Running,
        detail: Detail::HyperPod(node.clone()),
    })
}

/// DescribeCluster and every page of ListClusterNodes. A name that is not a
/// cluster's is looked up without case among ListClusters (ssh lowercases
/// host names); when that fails too, the error lists the clusters.
pub async fn describe(
    client: &aws_sdk_sagemaker::Client,
    name: &str,
) -> anyhow::Result<ClusterInfo> {
    let described = match client.describe_cluster().cluster_name(name).send().await {
        Ok(described) => described,
        Err(error) if error.code() == Some("ResourceNotFound") => {
            let names = list_names(client).await?;
            match names.iter().find(|n| n.eq_ignore_ascii_case(name)) {
                Some(found) if found != name => {
                    return Box::pin(describe(client, found)).await;
                }
                _ => {
                    let known = if names.is_empty() {
                        "there are none in this region (--region looks elsewhere)".to_string()
                    } else {
                        format!("clusters: {}", names.join(", "))
                    };
                    return Err(Failure::new(
                        exit::NOT_FOUND,
                        format!("no HyperPod cluster {name}; {known}"),
                    )
                    .into());
                }
            }
        }
        Err(error) => return Err(AwsError::from_sdk("sagemaker:DescribeCluster", &error).into()),
    };
    let arn = described.cluster_arn().unwrap_or_default().to_string();
    let orchestrator = match described.orchestrator() {
        Some(o) if o.eks().is_some() => "Eks",
        _ => "Slurm",
    };
    let mut cluster = ClusterInfo {
        name: described.cluster_name().unwrap_or(name).to_string(),
        id: arn.rsplit('/').next().unwrap_or_default().to_string(),
        arn,
        status: described
            .cluster_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        orchestrator: orchestrator.to_string(),
        groups: described
            .instance_groups()
            .iter()
            .filter_map(|g| g.instance_group_name().map(str::to_string))
            .collect(),
        nodes: Vec::new(),
    };
    let mut next: Option<String> = None;
    loop {
        let page = client
            .list_cluster_nodes()
            .cluster_name(&cluster.arn)
            .max_results(PAGE)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sagemaker:ListClusterNodes", &e))?;
        for summary in page.cluster_node_summaries() {
            cluster.nodes.push(NodeInfo {
                cluster: cluster.name.clone(),
                cluster_id: cluster.id.clone(),
                cluster_arn: cluster.arn.clone(),
                orchestrator: cluster.orchestrator.clone(),
                group: summary
                    .instance_group_name()
                    .unwrap_or_default()
                    .to_string(),
                instance_id: summary.instance_id().unwrap_or_default().to_string(),
                instance_type: summary
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                status: summary
                    .instance_status()
                    .and_then(|s| s.status())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                host_name: summary
                    .private_dns_hostname()
                    .and_then(|h| h.split('.').next())
                    .unwrap_or_default()
                    .to_string(),
                launch_time: summary.launch_time().map(|t| t.secs()).unwrap_or_default(),
            });
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_string()),
            _ => break,
        }
    }
    cluster
        .nodes
        .sort_by(|a, b| (a.launch_time, &a.instance_id).cmp(&(b.launch_time, &b.instance_id)));
    tracing::debug!(cluster = %cluster.name, nodes = cluster.nodes.len(), "described the cluster");
    Ok(cluster)
}

/// Every cluster name ListClusters shows.
async fn list_names(client: &aws_sdk_sagemaker::Client) -> Result<Vec<String>, AwsError> {
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = client
            .list_clusters()
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sagemaker:ListClusters", &e))?;
        names.extend(
            page.cluster_summaries()
                .iter()
                .filter_map(|c| c.cluster_name().map(str::to_string)),
        );
        match page.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_string()),
            _ => return Ok(names),
        }
    }
}

/// Every cluster with its nodes, for `list`.
pub async fn list(client: &aws_sdk_sagemaker::Client) -> anyhow::Result<Vec<ClusterInfo>> {
    let mut clusters = Vec::new();
    for name in list_names(client).await? {
        clusters.push(describe(client, &name).await?);
    }
    Ok(clusters)
}

/// Writes our key into `user`'s `~/.ssh/authorized_keys` on the node through
/// a non-interactive command session, unless the state file says it is
/// there already.
pub async fn install_key(
    sdk: &SdkConfig,
    reach: &Reach,
    user: &str,
    mode: PushKey,
) -> anyhow::Result<()> {
    let identity = crate::keys::Identity::ensure()?;
    let key = keypush::normalise_key(&identity.public_key_line())?;
    let fingerprint = keypush::fingerprint(&key);
    // The same key is one entry per login user: another --user needs its own.
    let entry = format!("{}/{user}", reach.session_target);
    let state = keypush::default_state_file(&crate::keys::data_dir()?);
    if mode == PushKey::Auto && State::load(&state)?.contains(&entry, &fingerprint) {
        tracing::debug!(node = %reach.session_target, user, "key already installed");
        return Ok(());
    }
    tracing::info!(node = %reach.session_target, user, %fingerprint, "installing the SSH key through a command session");
    let text = script(user, &key);
    let command =
        shlex::try_join(["sh", "-c", text.as_str()]).expect("the script holds no NUL byte");
    let outcome = tokio::time::timeout(INSTALL_LIMIT, run_command(sdk, reach, &command)).await;
    let (code, stdout, stderr) = outcome.map_err(|_| {
        Failure::new(
            exit::FAILURE,
            format!(
                "installing the SSH key on {} did not finish within {}s",
                reach.name,
                INSTALL_LIMIT.as_secs()
            ),
        )
    })??;
    tracing::debug!(?code, stdout = %stdout.trim(), "key install session over");
    match code {
        Some(0) => {}
        Some(NO_SUCH_USER) => {
            return Err(Failure::new(
                exit::FAILURE,
                format!(
                    "user {user} does not exist on {}: pass --user NAME (or User in ssh config); \
                     Slurm nodes log in as {SLURM_USER}, EKS nodes as {EKS_USER}",
                    reach.name
                ),
            )
            .into())
        }
        other => {
            let status = other.map_or("no exit status".to_string(), |c| format!("exit {c}"));
            return Err(Failure::new(
                exit::FAILURE,
                format!(
                    "installing the SSH key for {user} on {} failed ({status}): {}",
                    reach.name,
                    stderr.trim()
                ),
            )
            .into());
        }
    }
    State::record(&state, &entry, &fingerprint)?;
    Ok(())
}

/// Runs `command` in an AWS-StartNonInteractiveCommand session on the node:
/// its exit code, stdout and stderr.
async fn run_command(
    sdk: &SdkConfig,
    reach: &Reach,
    command: &str,
) -> anyhow::Result<(Option<i32>, String, String)> {
    let sessions = Arc::new(
        Sessions::new(aws_sdk_ssm::Client::new(sdk), sdk).with_kms(aws_sdk_kms::Client::new(sdk)),
    );
    let stream = sessions
        .start(
            &reach.session_target,
            &reach.name,
            COMMAND_DOCUMENT,
            &[("command", command.to_string())],
        )
        .await?;
    // Nothing to type and no terminal: both channels closed from the start.
    let (_, input) = mpsc::channel::<Bytes>(1);
    let (_, sizes) = mpsc::channel::<Size>(1);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = ShellIo {
        input,
        sizes,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    let end = sm_ssh_proxy::shell(
        stream,
        sessions,
        crate::session::data_channel_options()?,
        io,
    )
    .await
    .map_err(crate::cmd::shell::session_failure)?;
    Ok((
        end.exit_code,
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    ))
}

/// The `sh` script that appends `key` to `user`'s authorized keys unless an
/// identical line is there. `key` holds only `[A-Za-z0-9+/=-]`, spaces and a
/// fixed comment (`normalise_key`), so single quotes suffice; the user name
/// is quoted.
fn script(user: &str, key: &str) -> String {
    let user = crate::cmd::connect::shell_quote(user);
    [
        "set -eu".to_string(),
        format!("key='{key}'"),
        format!("user={user}"),
        "if [ \"$user\" = \"$(id -un)\" ]; then home=\"${HOME:-}\"; \
         else home=\"$(getent passwd \"$user\" | cut -d: -f6)\"; fi"
            .into(),
        format!(
            "if [ -z \"$home\" ]; then echo \"no user $user\" >&2; exit {NO_SUCH_USER}; fi"
        ),
        "f=\"$home/.ssh/authorized_keys\"".into(),
        "mkdir -p \"$home/.ssh\"; touch \"$f\"".into(),
        "if grep -qxF \"$key\" \"$f\"; then echo 'sm-ssh: key already there'; exit 0; fi".into(),
        "if [ -s \"$f\" ] && [ -n \"$(tail -c 1 \"$f\")\" ]; then echo >> \"$f\"; fi".into(),
        "printf '%s\\n' \"$key\" >> \"$f\"".into(),
        "chmod 700 \"$home/.ssh\"; chmod 600 \"$f\"".into(),
        "if [ \"$(id -u)\" = 0 ] && [ \"$user\" != root ]; then chown -R \"$user\" \"$home/.ssh\"; fi"
            .into(),
        "echo 'sm-ssh: key installed'".into(),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, group: &str, status: &str, launch: i64, host: &str) -> NodeInfo {
        NodeInfo {
            cluster: "ml".into(),
            cluster_id: "abc123def456".into(),
            cluster_arn: "arn:aws:sagemaker:eu-west-1:123456789012:cluster/abc123def456".into(),
            orchestrator: "Slurm".into(),
            group: group.into(),
            instance_id: id.into(),
            instance_type: "ml.g5.xlarge".into(),
            status: status.into(),
            host_name: host.into(),
            launch_time: launch,
        }
    }

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "ml".into(),
            id: "abc123def456".into(),
            groups: vec!["controller".into(), "workers".into()],
            orchestrator: "Slurm".into(),
            nodes: vec![
                node("i-0aaa", "workers", "Running", 1, "ip-10-1-0-1"),
                node("i-0bbb", "workers", "Pending", 2, "ip-10-1-0-2"),
                node("i-0ccc", "workers", "Running", 3, "ip-10-1-0-3"),
            ],
            ..ClusterInfo::default()
        }
    }

    fn target(node: &str, group: &str) -> HyperPodTarget {
        HyperPodTarget {
            node: node.into(),
            group: group.into(),
            cluster: "ml".into(),
        }
    }

    #[test]
    fn every_node_form_reaches_the_same_node() {
        for form in ["2", "i-0ccc", "ip-10-1-0-3", "IP-10-1-0-3"] {
            let reach = reach_from("n", &cluster(), &target(form, "Workers")).unwrap();
            assert_eq!(
                reach.session_target, "sagemaker-cluster:abc123def456_workers-i-0ccc",
                "{form}"
            );
            assert_eq!(reach.pin.alias, reach.session_target);
            assert_eq!(reach.default_user, "ubuntu");
            assert_eq!(reach.key, KeyInstall::CommandSession);
        }
    }

    #[test]
    fn eks_nodes_log_in_as_ec2_user() {
        let mut eks = cluster();
        for n in &mut eks.nodes {
            n.orchestrator = "Eks".into();
        }
        let reach = reach_from("n", &eks, &target("1", "workers")).unwrap();
        assert_eq!(reach.default_user, "ec2-user");
    }

    #[test]
    fn unknown_names_list_what_exists() {
        let error = reach_from("n", &cluster(), &target("1", "gpu")).unwrap_err();
        assert_eq!(error.code, exit::NOT_FOUND);
        assert!(error.message.contains("its groups: controller, workers"));
        let error = reach_from("n", &cluster(), &target("3", "workers")).unwrap_err();
        assert!(
            error
                .message
                .contains("running nodes: 1 i-0aaa ip-10-1-0-1, 2 i-0ccc ip-10-1-0-3"),
            "{}",
            error.message
        );
        let error = reach_from("n", &cluster(), &target("i-0bbb", "workers")).unwrap_err();
        assert_eq!(error.code, exit::OFFLINE);
        assert!(error.message.contains("is Pending, not Running"));
        let error = reach_from("n", &cluster(), &target("1", "controller")).unwrap_err();
        assert!(error.message.contains("none is running"));
    }

    #[test]
    fn the_script_appends_a_key_once_for_the_running_user() {
        let home = tempfile::tempdir().unwrap();
        let me = String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOBnsOmFo4wvE0xd1Fv+VSG8HUbB0KZ5Xh0n7jt5RWg2 sm-ssh";
        let keys = home.path().join(".ssh/authorized_keys");
        std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
        std::fs::write(&keys, "ssh-rsa AAAAother other").unwrap();
        for _ in 0..2 {
            let status = std::process::Command::new("sh")
                .args(["-c", &script(me.trim(), key)])
                .env("HOME", home.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let text = std::fs::read_to_string(&keys).unwrap();
        assert_eq!(text, format!("ssh-rsa AAAAother other\n{key}\n"));
        let missing = std::process::Command::new("sh")
            .args(["-c", &script("no-such-user-sm-ssh", key)])
            .env("HOME", home.path())
            .status()
            .unwrap();
        assert_eq!(missing.code(), Some(NO_SUCH_USER));
    }
}
