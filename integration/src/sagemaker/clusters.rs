//! SageMaker HyperPod clusters: DescribeCluster, ListClusters and a paged
//! ListClusterNodes, shaped as the SageMaker API reference (and botocore's
//! `sagemaker/2017-07-24/service-2.json`) defines them. A cluster's nodes
//! are Session Manager targets `sagemaker-cluster:<cluster-id>_<group>-<id>`:
//! tests seed each as a native [`Instance`] ([`Cluster::node_instance`]).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::lists::{bad_token, name_contains};
use crate::paging::List;
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::{Instance, World};

/// A HyperPod cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Cluster {
    pub name: String,
    /// The last part of the ARN: 12 lowercase letters and digits.
    pub id: String,
    /// `InService`, `Creating`, `Updating`, `Failed`, …
    pub status: String,
    /// `Slurm` or `Eks`.
    pub orchestrator: String,
    pub instance_groups: Vec<InstanceGroup>,
    pub nodes: Vec<ClusterNode>,
    /// Epoch seconds.
    pub creation_time: f64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            name: String::new(),
            id: "abc123def456".into(),
            status: "InService".into(),
            orchestrator: "Slurm".into(),
            instance_groups: Vec::new(),
            nodes: Vec::new(),
            creation_time: 1_700_000_000.0,
        }
    }
}

/// An instance group of a cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceGroup {
    pub name: String,
    pub instance_type: String,
    pub execution_role: String,
}

impl Default for InstanceGroup {
    fn default() -> Self {
        InstanceGroup {
            name: String::new(),
            instance_type: "ml.g5.xlarge".into(),
            execution_role: "arn:aws:iam::123456789012:role/HyperPodExecutionRole".into(),
        }
    }
}

/// One node (EC2 instance) of an instance group.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterNode {
    /// `i-…`.
    pub instance_id: String,
    pub group: String,
    /// `InstanceStatus.Status`: `Running`, `Pending`, `ShuttingDown`, …
    pub status: String,
    /// `ip-10-1-2-3.ec2.internal`.
    pub private_dns_hostname: String,
    /// Epoch seconds.
    pub launch_time: f64,
}

impl Default for ClusterNode {
    fn default() -> Self {
        ClusterNode {
            instance_id: String::new(),
            group: String::new(),
            status: "Running".into(),
            private_dns_hostname: String::new(),
            launch_time: 1_700_000_100.0,
        }
    }
}

impl Cluster {
    /// The Session Manager target of `node`.
    pub fn node_target(&self, node: &ClusterNode) -> String {
        format!(
            "sagemaker-cluster:{}_{}-{}",
            self.id, node.group, node.instance_id
        )
    }

    /// The native target `node` is to Session Manager (no sshd until a test
    /// maps its port 22).
    pub fn node_instance(&self, node: &ClusterNode) -> Instance {
        Instance {
            id: self.node_target(node),
            native: true,
            resource_type: "EC2Instance".into(),
            computer_name: node
                .private_dns_hostname
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string(),
            ..Instance::default()
        }
    }
}

/// `arn:aws:sagemaker:<region>:<account>:cluster/<id>`.
pub fn cluster_arn(world: &World, cluster: &Cluster) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:cluster/{}",
        world.region, world.identity.account, cluster.id
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClusterInput {
    cluster_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListInput {
    name_contains: Option<String>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodesInput {
    cluster_name: String,
    #[serde(default)]
    instance_group_name_contains: Option<String>,
    #[serde(default)]
    max_results: Option<i64>,
    #[serde(default)]
    next_token: Option<String>,
    #[serde(default)]
    sort_order: Option<String>,
}

/// `ClusterName` takes a name or an ARN (`ClusterNameOrArn`).
fn find<'w>(world: &'w World, name_or_arn: &str) -> Result<&'w Cluster, ApiError> {
    world
        .sagemaker
        .clusters
        .iter()
        .find(|c| c.name == name_or_arn || cluster_arn(world, c) == name_or_arn)
        .ok_or_else(|| {
            // Chosen: the service's exact text for a missing cluster is not public.
            super::not_found(format!("Cluster with name or ARN {name_or_arn} not found"))
        })
}

fn target_arn(world: &World, name_or_arn: &str) -> String {
    if name_or_arn.starts_with("arn:") {
        name_or_arn.to_string()
    } else {
        format!(
            "arn:aws:sagemaker:{}:{}:cluster/{name_or_arn}",
            world.region, world.identity.account
        )
    }
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ClusterInput = input(body)?;
    let mut world = state.world();
    let arn = target_arn(&world, &req.cluster_name);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeCluster", &arn)?;
        let cluster = find(&world, &req.cluster_name)?;
        let groups: Vec<Value> = cluster
            .instance_groups
            .iter()
            .map(|group| {
                let count = cluster
                    .nodes
                    .iter()
                    .filter(|n| n.group == group.name && n.status == "Running")
                    .count();
                let target = cluster
                    .nodes
                    .iter()
                    .filter(|n| n.group == group.name)
                    .count();
                json!({
                    "InstanceGroupName": group.name,
                    "InstanceType": group.instance_type,
                    "CurrentCount": count,
                    "TargetCount": target,
                    "Status": "InService",
                    "ExecutionRole": group.execution_role,
                    "ThreadsPerCore": 1,
                    "LifeCycleConfig": {
                        "SourceS3Uri": "s3://sagemaker-lifecycle/scripts/",
                        "OnCreate": "on_create.sh",
                    },
                })
            })
            .collect();
        let orchestrator = match cluster.orchestrator.as_str() {
            "Eks" => json!({"Eks": {"ClusterArn": format!(
                "arn:aws:eks:{}:{}:cluster/{}-eks",
                world.region, world.identity.account, cluster.name
            )}}),
            _ => json!({"Slurm": {}}),
        };
        Ok(json!({
            "ClusterArn": cluster_arn(&world, cluster),
            "ClusterName": cluster.name,
            "ClusterStatus": cluster.status,
            "CreationTime": cluster.creation_time,
            "InstanceGroups": groups,
            "Orchestrator": orchestrator,
            "NodeRecovery": "Automatic",
        }))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeCluster",
        Event::on(&arn),
        result,
    )
}

/// Both lists page 1 to 100 items (the model's range), 100 without
/// MaxResults (chosen).
const CLUSTERS: List = List {
    key: "ClusterSummaries",
    sizes: 1..=100,
    default: 100,
    bad_token,
};
const NODES: List = List {
    key: "ClusterNodeSummaries",
    ..CLUSTERS
};

pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ListInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListClusters", "*")?;
        let mut clusters: Vec<&Cluster> = world
            .sagemaker
            .clusters
            .iter()
            .filter(|c| name_contains(&c.name, req.name_contains.as_deref()))
            .collect();
        clusters.sort_by(|a, b| a.creation_time.total_cmp(&b.creation_time));
        CLUSTERS.answer(clusters, req.max_results, req.next_token.as_deref(), |c| {
            json!({
                "ClusterArn": cluster_arn(&world, c),
                "ClusterName": c.name,
                "CreationTime": c.creation_time,
                "ClusterStatus": c.status,
            })
        })
    })();
    recorded(&mut world, "sagemaker:ListClusters", Event::on("*"), result)
}

pub(super) fn list_nodes(state: &AppState, body: &[u8]) -> ApiResult {
    let req: NodesInput = input(body)?;
    let mut world = state.world();
    let arn = target_arn(&world, &req.cluster_name);
    let result = (|| {
        check_action(&world, "sagemaker:ListClusterNodes", &arn)?;
        let cluster = find(&world, &req.cluster_name)?;
        let mut nodes: Vec<&ClusterNode> = cluster
            .nodes
            .iter()
            .filter(|n| name_contains(&n.group, req.instance_group_name_contains.as_deref()))
            .collect();
        // SortBy defaults to CREATION_TIME (the API reference); the order of
        // equal times is not public: the fake breaks ties by instance id.
        nodes.sort_by(|a, b| {
            a.launch_time
                .total_cmp(&b.launch_time)
                .then(a.instance_id.cmp(&b.instance_id))
        });
        if req.sort_order.as_deref() == Some("Descending") {
            nodes.reverse();
        }
        NODES.answer(nodes, req.max_results, req.next_token.as_deref(), |n| {
            let instance_type = cluster
                .instance_groups
                .iter()
                .find(|g| g.name == n.group)
                .map(|g| g.instance_type.clone())
                .unwrap_or_default();
            let mut summary = json!({
                "InstanceGroupName": n.group,
                "InstanceId": n.instance_id,
                "InstanceType": instance_type,
                "LaunchTime": n.launch_time,
                "InstanceStatus": { "Status": n.status },
            });
            if !n.private_dns_hostname.is_empty() {
                summary["PrivateDnsHostname"] = json!(n.private_dns_hostname);
            }
            summary
        })
    })();
    recorded(
        &mut world,
        "sagemaker:ListClusterNodes",
        Event::on(&arn),
        result,
    )
}
