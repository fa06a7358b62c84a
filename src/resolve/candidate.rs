//! Managed instances that may be the target, and the pure rules that match,
//! order and pick them.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::target::{Kind, SageMakerTarget};

/// One managed instance as DescribeInstanceInformation (and, when fetched,
/// ListTagsForResource) reports it. Serialised in the warm-path cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub instance_id: String,
    /// `Online`, `ConnectionLost`, `Inactive`.
    pub ping_status: String,
    /// Epoch seconds.
    pub last_ping: Option<i64>,
    /// Epoch seconds.
    pub registered: Option<i64>,
    pub computer_name: String,
    /// Empty unless fetched.
    pub tags: BTreeMap<String, String>,
}

impl Candidate {
    pub fn is_online(&self) -> bool {
        self.ping_status == "Online"
    }

    /// When the instance was registered: the `SSHTimestamp` tag, else SSM's
    /// registration date.
    pub fn timestamp(&self) -> i64 {
        self.tags
            .get("SSHTimestamp")
            .and_then(|t| t.trim().parse().ok())
            .or(self.registered)
            .unwrap_or(0)
    }
}

/// The parts of a SageMaker ARN's resource an instance's `SSHResourceArn`
/// names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub name: String,
    /// Studio apps only.
    pub space: Option<String>,
    pub domain: Option<String>,
}

impl Resource {
    /// Parses `arn:<partition>:sagemaker:<region>:<account>:<type>/<name>`, or
    /// for Studio `…:app/<domain>/<space>/<app type>/<app>`.
    pub fn from_arn(arn: &str) -> Option<Resource> {
        let (_, _, resource) = crate::target::sagemaker_arn_parts(arn)?;
        let segments: Vec<&str> = resource.split('/').collect();
        let kind = Kind::from_arn_resource_type(segments[0])?;
        match (kind, segments.as_slice()) {
            (Kind::Studio, [_, domain, space, _app_type, app]) => Some(Resource {
                kind,
                name: app.to_string(),
                space: Some(space.to_string()),
                domain: Some(domain.to_string()),
            }),
            (Kind::Studio, _) => None,
            (_, [_, name]) if !name.is_empty() => Some(Resource {
                kind,
                name: name.to_string(),
                space: None,
                domain: None,
            }),
            _ => None,
        }
    }

    /// Whether this resource is the one the target names. Names compare
    /// without case: ssh lowercases host names and SageMaker lowercases ARNs.
    pub fn matches(&self, target: &SageMakerTarget) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        let optional = |wanted: &Option<String>, have: &Option<String>| match (wanted, have) {
            (Some(wanted), Some(have)) => same(wanted, have),
            (Some(_), None) => false,
            (None, _) => true,
        };
        self.kind == target.kind
            && same(&self.name, &target.name)
            && optional(&target.space, &self.space)
            && optional(&target.domain, &self.domain)
    }

    /// The host name to give ssh for this resource.
    pub fn host_name(&self) -> String {
        SageMakerTarget {
            kind: self.kind,
            name: self.name.clone(),
            space: self.space.clone(),
            domain: self.domain.clone(),
        }
        .host_name()
    }
}

/// The resource an instance's tags name, if any.
pub fn tagged_resource(tags: &BTreeMap<String, String>) -> Option<Resource> {
    Resource::from_arn(tags.get("SSHResourceArn")?)
}

/// Whether the tags say the instance runs in the resource the target names.
/// The `SSHResourceArn` tag decides; instances without one (endpoints are
/// tagged with an empty ARN) never match by tags.
pub fn tags_match(tags: &BTreeMap<String, String>, target: &SageMakerTarget) -> bool {
    tagged_resource(tags).is_some_and(|resource| resource.matches(target))
}

/// Online instances first, then the newest registration, then by id so the
/// order is total.
pub fn order(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        b.is_online()
            .cmp(&a.is_online())
            .then(b.timestamp().cmp(&a.timestamp()))
            .then(a.instance_id.cmp(&b.instance_id))
    });
}

/// The nodes of a multi-node job, for `--node N` (1-based): the Online
/// instances (all instances when none is Online), one per host name keeping
/// the newest, in natural order of host name (`algo-1`, `algo-2`, …,
/// `algo-10`).
pub fn nodes(candidates: &[Candidate]) -> Vec<Candidate> {
    let any_online = candidates.iter().any(Candidate::is_online);
    let mut newest: BTreeMap<String, Candidate> = BTreeMap::new();
    for candidate in candidates.iter().filter(|c| c.is_online() || !any_online) {
        let key = if candidate.computer_name.is_empty() {
            candidate.instance_id.clone()
        } else {
            candidate.computer_name.clone()
        };
        match newest.get(&key) {
            Some(kept) if kept.timestamp() >= candidate.timestamp() => {}
            _ => {
                newest.insert(key, candidate.clone());
            }
        }
    }
    let mut nodes: Vec<Candidate> = newest.into_values().collect();
    nodes.sort_by(|a, b| {
        natural_cmp(&a.computer_name, &b.computer_name).then(a.instance_id.cmp(&b.instance_id))
    });
    nodes
}

/// Compares strings with runs of digits compared as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (digits(a), digits(b));
                let trim = |s: &[u8]| -> Vec<u8> {
                    s.iter().copied().skip_while(|c| *c == b'0').collect()
                };
                let (ta, tb) = (trim(&a[..na]), trim(&b[..nb]));
                let ordering = ta.len().cmp(&tb.len()).then(ta.cmp(&tb));
                if ordering != Ordering::Equal {
                    return ordering;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn sagemaker(host: &str) -> SageMakerTarget {
        match Target::parse(host).unwrap() {
            Target::SageMaker(target) => target,
            other => panic!("{other:?}"),
        }
    }

    /// Whether an instance tagged with `arn` is the one `host` names.
    fn arn_matches(arn: &str, host: &str) -> bool {
        let tags = [("SSHResourceArn".to_string(), arn.to_string())].into();
        tags_match(&tags, &sagemaker(host))
    }

    fn candidate(id: &str, status: &str, timestamp: i64, computer: &str) -> Candidate {
        Candidate {
            instance_id: id.into(),
            ping_status: status.into(),
            registered: Some(timestamp),
            computer_name: computer.into(),
            ..Candidate::default()
        }
    }

    #[test]
    fn job_arns_match_by_kind_and_name() {
        let arn = "arn:aws:sagemaker:eu-west-1:555555555555:training-job/ssh-job";
        assert!(arn_matches(arn, "ssh-job.training.sagemaker"));
        assert!(arn_matches(arn, "SSH-Job.training.sagemaker"));
        assert!(!arn_matches(arn, "ssh-job.processing.sagemaker"));
        assert!(!arn_matches(arn, "ssh-jo.training.sagemaker"));
        assert!(!arn_matches(arn, "sh-job.training.sagemaker"));
        let nb = "arn:aws-cn:sagemaker:cn-north-1:1:notebook-instance/sagemaker-ssh-helper";
        assert!(arn_matches(nb, "sagemaker-ssh-helper.notebook.sagemaker"));
        assert!(!arn_matches("", "ep.inference.sagemaker"));
        assert!(!tags_match(
            &BTreeMap::new(),
            &sagemaker("j.training.sagemaker")
        ));
    }

    #[test]
    fn studio_arns_match_app_space_and_domain() {
        let arn = "arn:aws:sagemaker:eu-west-1:1:app/d-0123456789ab/my-space/JupyterLab/default";
        assert!(arn_matches(arn, "default.studio.sagemaker"));
        assert!(arn_matches(
            arn,
            "default.my-space.d-0123456789ab.studio.sagemaker"
        ));
        assert!(!arn_matches(
            arn,
            "default.other.d-0123456789ab.studio.sagemaker"
        ));
        assert!(!arn_matches(
            arn,
            "default.my-space.d-other.studio.sagemaker"
        ));
        assert!(!arn_matches(arn, "other.studio.sagemaker"));
        let resource = Resource::from_arn(arn).unwrap();
        assert_eq!(
            resource.host_name(),
            "default.my-space.d-0123456789ab.studio.sagemaker"
        );
    }

    #[test]
    fn malformed_arns_match_nothing() {
        for arn in [
            "",
            "arn:aws:s3:::bucket/training-job/x",
            "arn:aws:sagemaker:r:1:training-job",
            "arn:aws:sagemaker:r:1:training-job/",
            "arn:aws:sagemaker:r:1:endpoint/x",
            "arn:aws:sagemaker:r:1:app/d/space/default",
        ] {
            assert_eq!(Resource::from_arn(arn), None, "{arn}");
        }
    }

    #[test]
    fn online_first_then_newest() {
        let mut candidates = vec![
            candidate("mi-a", "ConnectionLost", 300, ""),
            candidate("mi-b", "Online", 100, ""),
            candidate("mi-c", "Online", 200, ""),
            candidate("mi-d", "Inactive", 400, ""),
        ];
        order(&mut candidates);
        let ids: Vec<&str> = candidates.iter().map(|c| c.instance_id.as_str()).collect();
        assert_eq!(ids, ["mi-c", "mi-b", "mi-d", "mi-a"]);
    }

    #[test]
    fn ssh_timestamp_tag_wins_over_registration_date() {
        let mut old = candidate("mi-old", "Online", 500, "");
        old.tags.insert("SSHTimestamp".into(), "100".into());
        let new = candidate("mi-new", "Online", 200, "");
        let mut candidates = vec![old, new];
        order(&mut candidates);
        assert_eq!(candidates[0].instance_id, "mi-new");
    }

    #[test]
    fn nodes_are_online_unique_and_in_natural_order() {
        let candidates = vec![
            candidate("mi-10", "Online", 100, "algo-10"),
            candidate("mi-2", "Online", 100, "algo-2"),
            candidate("mi-1-old", "Online", 50, "algo-1"),
            candidate("mi-1", "Online", 100, "algo-1"),
            candidate("mi-3", "ConnectionLost", 100, "algo-3"),
        ];
        let ids: Vec<String> = nodes(&candidates)
            .into_iter()
            .map(|c| c.instance_id)
            .collect();
        assert_eq!(ids, ["mi-1", "mi-2", "mi-10"]);
        let offline = vec![candidate("mi-3", "ConnectionLost", 100, "algo-3")];
        assert_eq!(nodes(&offline).len(), 1);
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("algo-2", "algo-10"), Ordering::Less);
        assert_eq!(natural_cmp("algo-10", "algo-10"), Ordering::Equal);
        assert_eq!(natural_cmp("algo-01", "algo-1"), Ordering::Equal);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
        assert_eq!(natural_cmp("algo", "algo-1"), Ordering::Less);
    }
}
