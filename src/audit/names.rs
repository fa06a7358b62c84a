//! A session's target mapped back to the SageMaker resource it runs in, by
//! the first that works: an AWS-native target string
//! (`sagemaker-training-job:<job>_algo-1` → `<job>.training.sagemaker`), the
//! instance's sagemaker-ssh-helper tags (`SSHResourceArn`), or the name
//! sm-ssh wrote into the session's `Reason`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::stream::{self, StreamExt};

use crate::resolve::candidate::{tagged_resource, Resource};
use crate::target::{is_instance_id, Kind, SageMakerTarget, Target};

/// How many ListTagsForResource calls run at once.
const CONCURRENCY: usize = 8;

/// The resource an AWS-native target string names: training jobs
/// (`sagemaker-training-job:<job>_algo-<n>`) and inference endpoints
/// (`sagemaker-endpoint:<endpoint>_<variant>_<instance>[_<container>]`).
/// SageMaker names contain no `_`, so the name ends at the first one.
/// HyperPod clusters and ECS tasks have no `*.sagemaker` name.
pub fn native(target: &str) -> Option<SageMakerTarget> {
    let (kind, rest) = if let Some(rest) = target.strip_prefix("sagemaker-training-job:") {
        (Kind::Training, rest)
    } else if let Some(rest) = target.strip_prefix("sagemaker-endpoint:") {
        (Kind::Inference, rest)
    } else {
        return None;
    };
    let name = rest.split('_').next().filter(|n| !n.is_empty())?;
    Some(SageMakerTarget {
        kind,
        name: name.to_owned(),
        space: None,
        domain: None,
    })
}

/// The SageMaker name sm-ssh wrote into `Reason` (see `session::reason`).
pub fn from_reason(reason: &str) -> Option<SageMakerTarget> {
    match Target::parse(crate::session::label_of_reason(reason)?) {
        Ok(Target::SageMaker(target)) => Some(target),
        _ => None,
    }
}

fn from_resource(resource: Resource) -> SageMakerTarget {
    SageMakerTarget {
        kind: resource.kind,
        name: resource.name,
        space: resource.space,
        domain: resource.domain,
    }
}

/// Whether `found` is the resource `wanted` names (case-insensitive, as
/// resolution compares).
pub fn same(wanted: &SageMakerTarget, found: &SageMakerTarget) -> bool {
    Resource {
        kind: found.kind,
        name: found.name.clone(),
        space: found.space.clone(),
        domain: found.domain.clone(),
    }
    .matches(wanted)
}

/// The tags of each managed instance among `targets`, read concurrently.
/// Instances gone since (deregistered) or whose tags may not be read are
/// left out: the name then comes from the Reason, or is not known.
pub async fn instance_tags(
    ssm: &aws_sdk_ssm::Client,
    targets: &BTreeSet<String>,
) -> HashMap<String, BTreeMap<String, String>> {
    stream::iter(targets.iter().filter(|t| is_instance_id(t)))
        .map(|id| async move {
            match crate::resolve::ssm::tags(ssm, id).await {
                Ok(tags) => Some((id.clone(), tags)),
                Err(error) => {
                    tracing::debug!(instance = id, "no tags for the session's target: {error}");
                    None
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|found| async move { found })
        .collect()
        .await
}

/// The SageMaker resource of one session, given the tags read for its target.
pub fn name_of(
    target: &str,
    reason: Option<&str>,
    tags: &HashMap<String, BTreeMap<String, String>>,
) -> Option<SageMakerTarget> {
    native(target)
        .or_else(|| {
            tags.get(target)
                .and_then(tagged_resource)
                .map(from_resource)
        })
        .or_else(|| reason.and_then(from_reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(target: Option<SageMakerTarget>) -> Option<String> {
        target.map(|t| t.host_name())
    }

    #[test]
    fn native_targets_name_their_job_or_endpoint() {
        assert_eq!(
            host(native("sagemaker-training-job:my-job_algo-2")).as_deref(),
            Some("my-job.training.sagemaker")
        );
        assert_eq!(
            host(native(
                "sagemaker-endpoint:ep-1_AllTraffic_i-0123456789abcdef0"
            ))
            .as_deref(),
            Some("ep-1.inference.sagemaker")
        );
        assert_eq!(native("sagemaker-cluster:abc_workers-i-0123"), None);
        assert_eq!(native("ecs:cluster_task_container"), None);
        assert_eq!(native("sagemaker-training-job:_algo-1"), None);
    }

    #[test]
    fn tags_come_before_the_reason() {
        let reason = format!(
            "sm-ssh {}: other.notebook.sagemaker",
            env!("CARGO_PKG_VERSION")
        );
        let tags: HashMap<_, _> = [(
            "mi-0123456789abcdef0".to_string(),
            BTreeMap::from([(
                "SSHResourceArn".to_string(),
                "arn:aws:sagemaker:eu-west-1:1:training-job/job".to_string(),
            )]),
        )]
        .into();
        let name = |target: &str| host(name_of(target, Some(&reason), &tags));
        assert_eq!(
            name("mi-0123456789abcdef0").as_deref(),
            Some("job.training.sagemaker")
        );
        assert_eq!(
            name("mi-00000000000000001").as_deref(),
            Some("other.notebook.sagemaker")
        );
        assert_eq!(
            host(name_of("mi-00000000000000001", Some("by hand"), &tags)),
            None
        );
    }

    #[test]
    fn names_compare_without_case() {
        let wanted = native("sagemaker-training-job:My-Job_algo-1").unwrap();
        assert!(same(
            &wanted,
            &native("sagemaker-training-job:my-job_algo-2").unwrap()
        ));
        assert!(!same(
            &wanted,
            &native("sagemaker-endpoint:my-job_v_i-1").unwrap()
        ));
    }
}
