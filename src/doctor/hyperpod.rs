//! `doctor --cluster NAME`: what SSH to a HyperPod cluster's nodes needs.
//! The cluster and its nodes from DescribeCluster and ListClusterNodes (its
//! status, running nodes per group), and the caller's `ssm:StartSession` on
//! a node's target for the two documents sm-ssh starts there, locally
//! evaluated and simulated.

use aws_config::SdkConfig;

use super::client::{kind_of, role_policies, Kind};
use super::identity::Me;
use super::report::Check;
use super::role::Evaluation;
use super::{iam, simulate, Failure, Options};
use crate::path::hyperpod::{self, ClusterInfo};
use crate::policy::documents::{self, Expect, Requirement};
use crate::policy::eval::Request;
use crate::policy::hyperpod::{DOCUMENTS, TARGET_ID_KEY};

pub async fn checks(sdk: &SdkConfig, me: &Me, name: &str, options: &Options) -> Vec<Check> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let cluster = match hyperpod::describe(&client, name).await {
        Ok(cluster) => cluster,
        Err(error) => {
            let (_, message) = crate::error::describe(&error, options.profile.as_deref());
            return vec![Check::fail(
                "cluster",
                message,
                "name a cluster `sm-ssh list` shows (--region looks elsewhere)",
            )];
        }
    };
    let mut checks = vec![status(&cluster), nodes(&cluster)];
    checks.push(start_session(sdk, me, &cluster, options).await);
    checks
}

fn status(cluster: &ClusterInfo) -> Check {
    let what = format!(
        "cluster {} ({}, {}) is {}",
        cluster.name, cluster.id, cluster.orchestrator, cluster.status
    );
    if cluster.status == "InService" {
        Check::pass("cluster", what)
    } else {
        Check::warn(
            "cluster",
            what,
            "nodes take sessions once the cluster is InService; see its status in the SageMaker console",
        )
    }
}

/// Running nodes per group; the others named with their status.
fn nodes(cluster: &ClusterInfo) -> Check {
    let counts: Vec<String> = cluster
        .groups
        .iter()
        .map(|group| {
            let total = cluster.nodes.iter().filter(|n| &n.group == group).count();
            format!("{group} {}/{total}", cluster.running(group).len())
        })
        .collect();
    let idle: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| !n.is_running())
        .map(|n| format!("{} ({}) {}", n.instance_id, n.group, n.status))
        .collect();
    let detail = format!("running nodes per group: {}", counts.join(", "));
    if !cluster.nodes.iter().any(|n| n.is_running()) {
        Check::fail(
            "cluster-nodes",
            detail,
            "no node is Running: wait for the cluster's nodes, or add some to an instance group",
        )
    } else if idle.is_empty() {
        Check::pass("cluster-nodes", detail)
    } else {
        Check::warn(
            "cluster-nodes",
            format!("{detail}; not running: {}", idle.join(", ")),
            "only Running nodes take sessions; `sm-ssh list` shows the names to use",
        )
    }
}

/// The caller's ssm:StartSession on a node of this cluster, for each
/// document, and whether it also reaches targets that are not cluster nodes.
async fn start_session(
    sdk: &SdkConfig,
    me: &Me,
    cluster: &ClusterInfo,
    options: &Options,
) -> Check {
    let id = "cluster-start-session";
    let client = aws_sdk_iam::Client::new(sdk);
    let (policies, source, fix_target) = match kind_of(&me.arn) {
        Kind::User(name) => match iam::user_policies(&client, &name).await {
            Ok((policies, _)) => (
                policies,
                me.arn.clone(),
                format!("put-user-policy --user-name {name}"),
            ),
            Err(failure) => return failure.skip(id),
        },
        Kind::Role(name) => match role_policies(&client, &name).await {
            Ok((policies, _, arn)) => {
                (policies, arn, format!("put-role-policy --role-name {name}"))
            }
            Err(failure) => return failure.skip(id),
        },
        Kind::Root | Kind::Other => {
            return Failure::Other(format!("cannot read the policies of {}", me.arn)).skip(id)
        }
    };
    let partition = documents::partition_of(&me.arn);
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "*".into());
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.is_running())
        .or(cluster.nodes.first())
        .map(|n| n.session_target())
        .unwrap_or_else(|| format!("sagemaker-cluster:{}_group-i-0123456789abcdef0", cluster.id));
    let mut requirements: Vec<Requirement> = DOCUMENTS
        .iter()
        .map(|document| Requirement {
            request: Request::new(
                "ssm:StartSession",
                &format!("arn:{partition}:ssm:{region}::document/{document}"),
            )
            .with(TARGET_ID_KEY, &node),
            expect: Expect::Allowed,
            why: if *document == "AWS-StartSSHSession" {
                "opens the SSH session to the node"
            } else {
                "installs sm-ssh's key for the login user"
            },
        })
        .collect();
    requirements.push(Requirement {
        request: Request::new(
            "ssm:StartSession",
            &format!("arn:{partition}:ssm:{region}::document/AWS-StartSSHSession"),
        )
        .with(TARGET_ID_KEY, "ecs:other-cluster_task_container"),
        expect: Expect::Denied,
        why: "the node statement reaches targets that are not HyperPod nodes: condition it on the target id (sm-ssh policy hyperpod)",
    });
    let team = options
        .team_tag
        .as_ref()
        .map(|key| format!(" --team-tag {key}"))
        .unwrap_or_default();
    let fix = format!(
        "aws iam {fix_target} --policy-name SSHHyperPodPolicy --policy-document \"$(sm-ssh policy hyperpod --account {} --cluster-id {}{team})\"",
        me.account, cluster.id
    );
    let simulation = simulate::run(sdk, &source, &requirements).await;
    Evaluation::of(&policies, &requirements).into_check(id, &me.arn, fix, &simulation)
}
