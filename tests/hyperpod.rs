//! HyperPod nodes end to end: `<node>.<group>.<cluster>.hyperpod.sagemaker`
//! resolved through the fake's DescribeCluster and paged ListClusterNodes,
//! sm-ssh's key written by an AWS-StartNonInteractiveCommand session, and
//! the real OpenSSH client logging in to a real sshd behind the node's
//! `sagemaker-cluster:…` target. Also the errors for names that reach
//! nothing, `list --json`, `doctor --cluster` and `policy hyperpod`.

mod common;

use common::{assert_exit, me, seed_with, text, Env, ACCOUNT};
use serde_json::Value;
use sm_ssh_integration::iam::{Account, Role};
use sm_ssh_integration::openssh::OpenSshServer;
use sm_ssh_integration::sagemaker::{Cluster, ClusterNode, InstanceGroup};
use std::path::PathBuf;
use std::process::Command;

const CLUSTER: &str = "ml-cluster";
const CLUSTER_ID: &str = "abc123def456";
/// The node the tests log in to: the 2nd running worker, on page 2 of
/// ListClusterNodes (the spares launched before it fill page 1).
const NODE: &str = "i-0ccc000000000c003";
const NODE_HOST: &str = "ip-10-1-0-3";
const SPARES: usize = 120;

fn node(id: &str, group: &str, status: &str, launch: f64, host: &str) -> ClusterNode {
    ClusterNode {
        instance_id: id.into(),
        group: group.into(),
        status: status.into(),
        private_dns_hostname: format!("{host}.eu-west-1.compute.internal"),
        launch_time: launch,
    }
}

fn group(name: &str) -> InstanceGroup {
    InstanceGroup {
        name: name.into(),
        ..InstanceGroup::default()
    }
}

fn slurm_cluster() -> Cluster {
    let mut nodes = vec![
        node(
            "i-0aaa000000000a001",
            "workers",
            "Running",
            200.0,
            "ip-10-1-0-1",
        ),
        node(
            "i-0bbb000000000b002",
            "workers",
            "Pending",
            250.0,
            "ip-10-1-0-2",
        ),
        node(NODE, "workers", "Running", 300.0, NODE_HOST),
        node(
            "i-0ddd000000000d004",
            "controller",
            "Running",
            100.0,
            "ip-10-1-0-4",
        ),
    ];
    nodes.extend((0..SPARES).map(|i| {
        node(
            &format!("i-0eee{i:013x}"),
            "spares",
            "Running",
            i as f64,
            &format!("ip-10-2-{}-{}", i / 200, i % 200),
        )
    }));
    Cluster {
        name: CLUSTER.into(),
        id: CLUSTER_ID.into(),
        orchestrator: "Slurm".into(),
        instance_groups: vec![group("controller"), group("workers"), group("spares")],
        nodes,
        ..Cluster::default()
    }
}

fn eks_cluster() -> Cluster {
    Cluster {
        name: "eks-cluster".into(),
        id: "eks000000001".into(),
        orchestrator: "Eks".into(),
        instance_groups: vec![group("gpu")],
        nodes: vec![node(
            "i-0fff000000000f001",
            "gpu",
            "Running",
            100.0,
            "ip-10-3-0-1",
        )],
        creation_time: 1_700_000_500.0,
        ..Cluster::default()
    }
}

/// The caller's role with `document` as its inline policy.
fn caller_role(document: Value) -> Account {
    let mut role = Role {
        name: "Developer".into(),
        trust: serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")}, "Action": "sts:AssumeRole"}]
        }),
        ..Role::default()
    };
    role.policies
        .inline
        .insert("SSHHyperPodPolicy".into(), document);
    Account {
        roles: vec![role],
        ..Account::default()
    }
}

/// The fake with both clusters, the node's sshd, and sm-ssh's key and config.
struct World {
    env: Env,
    sshd: OpenSshServer,
    sandbox: PathBuf,
}

impl World {
    fn start() -> World {
        let mut seed = seed_with(Vec::new());
        seed.sagemaker.clusters = vec![slurm_cluster(), eks_cluster()];
        let policy = Command::new(env!("CARGO_BIN_EXE_sm-ssh"))
            .args(["policy", "hyperpod", "--account", ACCOUNT])
            .output()
            .unwrap();
        seed.iam = caller_role(serde_json::from_slice(&policy.stdout).unwrap());
        let env = Env::start(seed);
        let cluster = slurm_cluster();
        let target = cluster
            .nodes
            .iter()
            .find(|n| n.instance_id == NODE)
            .unwrap();
        let instance = cluster.node_instance(target);
        let id = instance.id.clone();
        let sandbox = env.fake.add_instance(instance).unwrap();
        let sshd = OpenSshServer::start(&sandbox).expect("sshd starts (install openssh-server)");
        env.fake.map_port(&id, 22, sshd.addr());
        let eks = eks_cluster();
        env.add_instance(eks.node_instance(&eks.nodes[0]));
        env.install_config();
        World { env, sshd, sandbox }
    }

    /// `ssh <me>@<host> <command>` with `ProxyCommand sm-ssh proxy --user %r %h`.
    fn ssh(&self, host: &str, command: &str) -> std::process::Output {
        let mut ssh = Command::new("ssh");
        common::isolate(&mut ssh, self.env.home());
        ssh.env("SM_SSH_HOME", self.env.data_dir());
        ssh.env("AWS_ENDPOINT_URL", self.env.fake.endpoint());
        for (key, value) in self.env.fake.env() {
            ssh.env(key, value);
        }
        let proxy = format!("{} proxy --user %r %h", env!("CARGO_BIN_EXE_sm-ssh"));
        ssh.args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg("-o")
            .arg(format!(
                "IdentityFile={}",
                self.env.data_dir().join("id_ed25519").display()
            ))
            .args(["-o", "IdentitiesOnly=yes"])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.env.home().join("known_hosts").display()
            ))
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg(format!("{}@{host}", me()))
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// Sessions StartSession opened with `document`.
    fn sessions(&self, document: &str) -> usize {
        let world = self.env.fake.world();
        let world = world.lock().unwrap();
        world
            .session_records
            .values()
            .filter(|r| r.document == document)
            .count()
    }

    fn authorized_keys(&self) -> String {
        std::fs::read_to_string(self.sandbox.join("home/.ssh/authorized_keys")).unwrap_or_default()
    }
}

fn host(node: &str, group: &str) -> String {
    format!("{node}.{group}.{CLUSTER}.hyperpod.sagemaker")
}

#[test]
fn ssh_by_every_node_form_installs_the_key_once() {
    let world = World::start();
    for form in ["2", NODE, NODE_HOST] {
        let output = world.ssh(&host(form, "workers"), "echo hello-from-node");
        let (stdout, stderr) = text(&output);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{form}: {stderr}\nsshd: {}",
            world.sshd.log()
        );
        assert_eq!(stdout.trim(), "hello-from-node", "{form}");
    }
    let public = std::fs::read_to_string(world.env.data_dir().join("id_ed25519.pub")).unwrap();
    let blob = public.split_whitespace().nth(1).unwrap();
    let keys = world.authorized_keys();
    assert_eq!(keys.matches(blob).count(), 1, "{keys}");
    assert_eq!(world.sessions("AWS-StartNonInteractiveCommand"), 1);
    assert_eq!(world.sessions("AWS-StartSSHSession"), 3);

    // Installing again on purpose leaves the file as it was.
    let output = world.env.run([
        "connect",
        "--push-key",
        "always",
        "--user",
        &me(),
        &host("2", "workers"),
        "--",
        "echo",
        "again",
    ]);
    let (stdout, stderr) = assert_exit(&output, 0);
    assert_eq!(stdout.trim(), "again");
    assert!(
        stderr.contains(&format!("as {}", me())),
        "the login user is not shown: {stderr}"
    );
    assert_eq!(world.sessions("AWS-StartNonInteractiveCommand"), 2);
    assert_eq!(world.authorized_keys(), keys);
}

#[test]
fn names_that_reach_no_running_node_say_what_exists() {
    let world = World::start();
    let cases = [
        ("1.workers.nope.hyperpod.sagemaker".to_string(), 3, "no HyperPod cluster nope; clusters: ml-cluster, eks-cluster"),
        (host("1", "gpus"), 3, "has no instance group gpus; its groups: controller, workers, spares"),
        (
            host("3", "workers"),
            3,
            "no running node 3 in group workers of cluster ml-cluster; running nodes: 1 i-0aaa000000000a001 ip-10-1-0-1, 2 i-0ccc000000000c003 ip-10-1-0-3",
        ),
        (host("ip-10-1-0-2", "workers"), 4, "node i-0bbb000000000b002 of group workers in cluster ml-cluster is Pending, not Running"),
    ];
    for (name, code, says) in cases {
        let output = world.env.run(["proxy", "--user", "x", &name]);
        let (stdout, stderr) = assert_exit(&output, code);
        assert!(stdout.is_empty(), "{name}: {stdout}");
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
    }
    // EKS nodes log in as ec2-user, who is not a user of the test machine.
    if Command::new("getent")
        .args(["passwd", "ec2-user"])
        .status()
        .unwrap()
        .success()
    {
        eprintln!("ec2-user exists here; not checking the missing-user error");
        return;
    }
    let output = world
        .env
        .run(["proxy", "1.gpu.eks-cluster.hyperpod.sagemaker"]);
    let (_, stderr) = assert_exit(&output, 1);
    assert!(
        stderr.contains(
            "user ec2-user does not exist on 1.gpu.eks-cluster.hyperpod.sagemaker: pass --user"
        ),
        "{stderr}"
    );
}

#[test]
fn list_json_shows_every_node_with_its_path() {
    let world = World::start();
    let output = world.env.run(["list", "--json"]);
    let (stdout, _) = assert_exit(&output, 0);
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let nodes: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "hyperpod").collect();
    assert_eq!(nodes.len(), 4 + SPARES + 1, "{stdout}");
    let row = nodes
        .iter()
        .find(|r| r["instance_id"] == NODE)
        .expect("the node is listed");
    assert_eq!(row["host"], host(NODE, "workers"));
    assert_eq!(row["cluster"], CLUSTER);
    assert_eq!(row["instance_group"], "workers");
    assert_eq!(row["ping_status"], "Running");
    assert_eq!(row["computer_name"], NODE_HOST);
    assert_eq!(
        row["session_target"],
        format!("sagemaker-cluster:{CLUSTER_ID}_workers-{NODE}")
    );
    let pending = nodes
        .iter()
        .find(|r| r["instance_id"] == "i-0bbb000000000b002")
        .unwrap();
    assert_eq!(pending["ping_status"], "Pending");

    let output = world.env.run(["list", "--json", &host("2", "workers")]);
    let (stdout, _) = assert_exit(&output, 0);
    let rows: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["instance_id"], NODE);
    assert_eq!(rows[0]["host"], host("2", "workers"));
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

#[test]
fn doctor_checks_the_cluster_its_nodes_and_the_session_permission() {
    let world = World::start();
    let output = world.env.run(["doctor", "--json", "--cluster", CLUSTER]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(check(&report, "cluster")["status"], "pass", "{report}");
    let nodes = check(&report, "cluster-nodes");
    assert_eq!(nodes["status"], "warn", "{report}");
    assert!(nodes["detail"].as_str().unwrap().contains("workers 2/3"));
    assert!(nodes["detail"]
        .as_str()
        .unwrap()
        .contains("i-0bbb000000000b002 (workers) Pending"));
    assert_eq!(
        check(&report, "cluster-start-session")["status"],
        "pass",
        "{report}"
    );

    // Without the node statement, StartSession is missing.
    world.env.fake.world().lock().unwrap().iam = caller_role(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}]
    }));
    let output = world.env.run(["doctor", "--json", "--cluster", CLUSTER]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let start = check(&report, "cluster-start-session");
    assert_eq!(start["status"], "fail", "{report}");
    assert!(
        start["fix"]
            .as_str()
            .unwrap()
            .contains("sm-ssh policy hyperpod"),
        "{start}"
    );

    let output = world.env.run(["doctor", "--json", "--cluster", "nope"]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(check(&report, "cluster")["status"], "fail");
}

#[test]
fn policy_allows_sessions_on_the_clusters_nodes() {
    let env = Env::start(seed_with(Vec::new()));
    let output = env.run([
        "policy",
        "hyperpod",
        "--account",
        ACCOUNT,
        "--cluster-id",
        CLUSTER_ID,
        "--team-tag",
        "Team",
    ]);
    let (stdout, _) = assert_exit(&output, 0);
    let document: Value = serde_json::from_str(&stdout).unwrap();
    let statements = document["Statement"].as_array().unwrap();
    let sessions = statements
        .iter()
        .find(|s| s["Action"] == "ssm:StartSession")
        .unwrap();
    assert_eq!(
        sessions["Condition"]["StringLike"]["ssm:resourceTag/aws:ssmmessages:target-id"],
        serde_json::json!([format!("sagemaker-cluster:{CLUSTER_ID}_*")])
    );
    assert!(stdout.contains("${aws:PrincipalTag/Team}"));
    let output = env.run([
        "policy",
        "hyperpod",
        "--account",
        ACCOUNT,
        "--cluster-id",
        "ml-cluster",
    ]);
    let (_, stderr) = assert_exit(&output, 1);
    assert!(stderr.contains("is not a cluster id"), "{stderr}");
}
