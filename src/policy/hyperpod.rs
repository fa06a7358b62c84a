//! The connecting user's policy for HyperPod nodes (`sm-ssh policy
//! hyperpod`): find clusters and their nodes, and `ssm:StartSession` on the
//! nodes' Session Manager targets (sm-ssh starts AWS-StartSSHSession and,
//! to install its key, AWS-StartNonInteractiveCommand there).
//!
//! The nodes are registered by SageMaker, so the session is allowed by the
//! target id (`ssm:resourceTag/aws:ssmmessages:target-id`, StringLike
//! `sagemaker-cluster:*`), as AWS documents it for remotely debuggable
//! training jobs' `sagemaker-training-job:*` targets; `--cluster-id`
//! narrows it to the nodes of the clusters named. Per team (`--team-tag
//! KEY`), the user may describe and list the nodes of the clusters whose
//! KEY tag equals theirs; the session condition cannot see cluster tags, so
//! give the team's cluster ids too for isolation at the session.

use serde_json::{json, Value};

use super::documents::{team_condition, Scope};

/// The calls that resolve a node name.
pub const DESCRIBE_ACTIONS: [&str; 2] = ["sagemaker:DescribeCluster", "sagemaker:ListClusterNodes"];
/// The documents sm-ssh starts on a node.
pub const DOCUMENTS: [&str; 2] = ["AWS-StartSSHSession", "AWS-StartNonInteractiveCommand"];
/// The condition key naming the Session Manager target of a session.
pub const TARGET_ID_KEY: &str = "ssm:resourceTag/aws:ssmmessages:target-id";

/// The target-id patterns of the nodes a user may reach.
pub fn node_patterns(cluster_ids: &[String]) -> Vec<String> {
    if cluster_ids.is_empty() {
        vec!["sagemaker-cluster:*".to_string()]
    } else {
        cluster_ids
            .iter()
            .map(|id| format!("sagemaker-cluster:{id}_*"))
            .collect()
    }
}

pub fn client(scope: &Scope, cluster_ids: &[String]) -> Value {
    let (partition, account) = (&scope.partition, &scope.account);
    let mut describe = json!({
        "Sid": "DescribeClustersAndNodes",
        "Effect": "Allow",
        "Action": DESCRIBE_ACTIONS,
        "Resource": format!("arn:{partition}:sagemaker:*:{account}:cluster/*")
    });
    if let Some(key) = &scope.team_tag {
        describe["Sid"] = json!("DescribeOwnTeamClustersAndNodes");
        describe["Condition"] = team_condition("aws:ResourceTag", key);
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FindClusters",
                "Effect": "Allow",
                "Action": "sagemaker:ListClusters",
                "Resource": "*"
            },
            describe,
            {
                "Sid": "SessionsOnClusterNodes",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": "*",
                "Condition": {"StringLike": {TARGET_ID_KEY: node_patterns(cluster_ids)}}
            },
            super::documents::resume_and_end_own_sessions(partition, account)
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::eval::{evaluate, Decision, Policy, Request};

    fn scope(team: Option<&str>) -> Scope {
        Scope::example(team)
    }

    fn start(target: &str, document: &str) -> Request {
        Request::new(
            "ssm:StartSession",
            &format!("arn:aws:ssm:eu-west-1::document/{document}"),
        )
        .with(TARGET_ID_KEY, target)
    }

    #[test]
    fn sessions_reach_cluster_nodes_only() {
        let policy =
            Policy::from_value("p", &client(&scope(None), &["abc123def456".into()])).unwrap();
        let node = "sagemaker-cluster:abc123def456_workers-i-0123";
        assert_eq!(
            evaluate(
                std::slice::from_ref(&policy),
                &start(node, "AWS-StartSSHSession")
            ),
            Decision::Allow
        );
        let other = "sagemaker-cluster:zzz999zzz999_workers-i-0123";
        assert_eq!(
            evaluate(
                std::slice::from_ref(&policy),
                &start(other, "AWS-StartSSHSession")
            ),
            Decision::ImplicitDeny
        );
        let job = "sagemaker-training-job:job_algo-1";
        assert_eq!(
            evaluate(&[policy], &start(job, "AWS-StartSSHSession")),
            Decision::ImplicitDeny
        );
        let team = client(&scope(Some("Team")), &[]);
        assert_eq!(
            team["Statement"][1]["Condition"]["StringEquals"]["aws:ResourceTag/Team"],
            "${aws:PrincipalTag/Team}"
        );
    }
}
