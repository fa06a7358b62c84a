//! What the user names on the command line (or ssh passes as `%h`), parsed
//! into the kind of thing sm-ssh has to find.

use std::fmt;

/// The text every "bad target" error ends with.
pub const ACCEPTED_FORMS: &str = "accepted targets:
  <job>.training.sagemaker          a training job
  <job>.processing.sagemaker        a processing job
  <job>.transform.sagemaker         a batch transform job
  <endpoint>.inference.sagemaker    an inference endpoint
  <notebook>.notebook.sagemaker     a notebook instance
  <app>.<space>.<domain>.studio.sagemaker
                                    a Studio app (e.g. default.my-space.d-abc123.studio.sagemaker)
  <app>.studio.sagemaker            a Studio app in any of your spaces
  <space>.<domain>.space.sagemaker  a Studio space through SageMaker remote access
                                    (e.g. my-space.d-abc123.space.sagemaker)
  <space>.space.sagemaker           a Studio space, its name unique among your domains
  arn:aws:sagemaker:<region>:<account>:space/<domain>/<space>
                                    a Studio space by ARN
  sm_lc_…, sm_dl_…                  the AWS Toolkit's host names for a space
  <node>.<group>.<cluster>.hyperpod.sagemaker
                                    a HyperPod node: instance id, ip-10-1-2-3 or 1-based index
                                    (e.g. 1.workers.my-cluster.hyperpod.sagemaker)
  mi-0123456789abcdef0, i-0123456789abcdef0
                                    an SSM managed instance or EC2 instance id
  sagemaker-cluster:..., sagemaker-training-job:..., sagemaker-endpoint:..., ecs:...
                                    an AWS-native Session Manager target, passed unchanged";

/// The SageMaker resource kinds, named as in the host name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Training,
    Processing,
    Transform,
    Inference,
    Notebook,
    Studio,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Training,
        Kind::Processing,
        Kind::Transform,
        Kind::Inference,
        Kind::Notebook,
        Kind::Studio,
    ];

    /// The label in `<name>.<label>.sagemaker`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Training => "training",
            Kind::Processing => "processing",
            Kind::Transform => "transform",
            Kind::Inference => "inference",
            Kind::Notebook => "notebook",
            Kind::Studio => "studio",
        }
    }

    pub fn from_label(label: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.label() == label)
    }

    /// The resource type in the SageMaker ARN the instance is tagged with
    /// (`SSHResourceArn`). Endpoints are tagged with an empty ARN.
    pub fn arn_resource_type(self) -> Option<&'static str> {
        match self {
            Kind::Training => Some("training-job"),
            Kind::Processing => Some("processing-job"),
            Kind::Transform => Some("transform-job"),
            Kind::Notebook => Some("notebook-instance"),
            Kind::Studio => Some("app"),
            Kind::Inference => None,
        }
    }

    pub fn from_arn_resource_type(resource_type: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.arn_resource_type() == Some(resource_type))
    }

    /// The user ssh logs in as unless told otherwise: jobs and notebook
    /// instances run as root; Studio apps run as `sagemaker-user`.
    pub fn default_user(self) -> &'static str {
        match self {
            Kind::Studio => "sagemaker-user",
            _ => "root",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A SageMaker resource named by host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SageMakerTarget {
    pub kind: Kind,
    /// Job, endpoint, notebook instance or Studio app name.
    pub name: String,
    /// Studio only, from the long form.
    pub space: Option<String>,
    /// Studio only, from the long form.
    pub domain: Option<String>,
}

impl SageMakerTarget {
    /// The host name to give ssh for this resource.
    pub fn host_name(&self) -> String {
        match (&self.space, &self.domain) {
            (Some(space), Some(domain)) => {
                format!("{}.{space}.{domain}.{}.sagemaker", self.name, self.kind)
            }
            _ => format!("{}.{}.sagemaker", self.name, self.kind),
        }
    }
}

/// A Studio space, reached through SageMaker's own remote access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceTarget {
    pub space: String,
    /// The domain id, unless the short form left it to resolution.
    pub domain: Option<String>,
    /// The space ARN, when the name was one (or a Toolkit host name).
    pub arn: Option<String>,
}

impl SpaceTarget {
    /// `<space>.<domain>.space.sagemaker`, or the short form.
    pub fn host_name(&self) -> String {
        match &self.domain {
            Some(domain) => format!("{}.{domain}.space.sagemaker", self.space),
            None => format!("{}.space.sagemaker", self.space),
        }
    }

    /// `(region, account, domain, space)` of a space ARN.
    pub fn parse_arn(arn: &str) -> Option<(String, String, String, String)> {
        let (region, account, resource) = sagemaker_arn_parts(arn)?;
        let mut path = resource.split('/');
        let (Some("space"), Some(domain), Some(space), None) =
            (path.next(), path.next(), path.next(), path.next())
        else {
            return None;
        };
        let valid = !region.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && is_name(domain)
            && is_name(space);
        valid.then(|| (region.into(), account.into(), domain.into(), space.into()))
    }
}

/// `(region, account, resource)` of `arn:<partition>:sagemaker:<region>:<account>:<resource>`.
pub fn sagemaker_arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some("sagemaker"), Some(region), Some(account), Some(resource)) => {
            Some((region, account, resource))
        }
        _ => None,
    }
}

/// The AWS Toolkit's ssh host names for a space: `sm_lc_` (local
/// credentials) or `sm_dl_` (deep link), `smc_…` in Cursor, then the ARN
/// with `:` written `_._` and `/` written `__` (Toolkit `sshConfig.ts`).
const TOOLKIT_PREFIXES: [&str; 4] = ["sm_lc_", "sm_dl_", "smc_lc_", "smc_dl_"];

fn toolkit_arn(host: &str) -> Option<String> {
    let encoded = TOOLKIT_PREFIXES
        .iter()
        .find_map(|prefix| host.strip_prefix(prefix))?;
    Some(encoded.replace("_._", ":").replace("__", "/"))
}

/// A HyperPod cluster node, `<node>.<group>.<cluster>.hyperpod.sagemaker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HyperPodTarget {
    /// An instance id (`i-…`), a private DNS host name (`ip-10-1-2-3`) or a
    /// 1-based index among the group's running nodes.
    pub node: String,
    pub group: String,
    /// The cluster name.
    pub cluster: String,
}

impl HyperPodTarget {
    pub fn host_name(&self) -> String {
        format!(
            "{}.{}.{}.hyperpod.sagemaker",
            self.node, self.group, self.cluster
        )
    }
}

/// A parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    SageMaker(SageMakerTarget),
    /// A Studio space (`*.space.sagemaker`, a space ARN, a Toolkit host name).
    Space(SpaceTarget),
    /// A HyperPod node (`*.hyperpod.sagemaker`).
    HyperPod(HyperPodTarget),
    /// `mi-…` (SSM managed instance) or `i-…` (EC2 instance).
    Instance(String),
    /// `sagemaker-cluster:…`, `ecs:…` and the like: Session Manager knows
    /// these itself, so they go to StartSession unchanged.
    Native(String),
}

/// Prefixes of the targets Session Manager resolves itself.
const NATIVE_PREFIXES: [&str; 4] = [
    "sagemaker-cluster:",
    "sagemaker-training-job:",
    "sagemaker-endpoint:",
    "ecs:",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{target}` is not a target sm-ssh understands: {reason}\n{ACCEPTED_FORMS}")]
pub struct TargetError {
    pub target: String,
    pub reason: String,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let bad = |reason: &str| TargetError {
            target: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(prefix) = NATIVE_PREFIXES.iter().find(|p| text.starts_with(*p)) {
            let rest = &text[prefix.len()..];
            if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("nothing valid follows the prefix"));
            }
            return Ok(Target::Native(text.to_string()));
        }
        if is_instance_id(text) {
            return Ok(Target::Instance(text.to_string()));
        }
        let arn = match toolkit_arn(text) {
            Some(arn) => Some(arn),
            None if text.starts_with("arn:") => Some(text.to_string()),
            None => None,
        };
        if let Some(arn) = arn {
            let (_, _, domain, space) = SpaceTarget::parse_arn(&arn).ok_or_else(|| {
                bad("it is not a space ARN (arn:aws:sagemaker:<region>:<account>:space/<domain>/<space>)")
            })?;
            return Ok(Target::Space(SpaceTarget {
                space,
                domain: Some(domain),
                arn: Some(arn),
            }));
        }
        // ssh passes host names through `%h` as typed, except that it
        // lowercases them; a trailing dot is a fully qualified name.
        let host = text.strip_suffix('.').unwrap_or(text);
        let Some(rest) = host.strip_suffix(".sagemaker") else {
            return Err(bad(
                "it is neither a *.sagemaker host name, an instance id nor a native target",
            ));
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let (kind_label, names) = labels.split_last().expect("split yields one item");
        if *kind_label == "space" {
            if let Some(label) = names.iter().find(|label| !is_name(label)) {
                return Err(bad(&format!(
                    "`{label}` is not a space or domain name (letters, digits and hyphens, at most 63)"
                )));
            }
            let (space, domain) =
                match names {
                    [space] => (space, None),
                    [space, domain] => (space, Some(domain.to_string())),
                    _ => return Err(bad(
                        "spaces are <space>.space.sagemaker or <space>.<domain>.space.sagemaker",
                    )),
                };
            return Ok(Target::Space(SpaceTarget {
                space: space.to_string(),
                domain,
                arn: None,
            }));
        }
        if *kind_label == "hyperpod" {
            if let Some(label) = names.iter().find(|label| !is_name(label)) {
                return Err(bad(&format!(
                    "`{label}` is not a node, instance group or cluster name (letters, digits and hyphens, at most 63)"
                )));
            }
            let [node, group, cluster] = names else {
                return Err(bad(
                    "HyperPod nodes are <node>.<group>.<cluster>.hyperpod.sagemaker",
                ));
            };
            return Ok(Target::HyperPod(HyperPodTarget {
                node: node.to_string(),
                group: group.to_string(),
                cluster: cluster.to_string(),
            }));
        }
        let kind = Kind::from_label(kind_label).ok_or_else(|| {
            bad(&format!(
                "`{kind_label}` is not a kind (training, processing, transform, inference, notebook, studio, space, hyperpod)"
            ))
        })?;
        if names.is_empty() {
            return Err(bad(&format!("the {kind} resource name is missing")));
        }
        if let Some(label) = names.iter().find(|label| !is_name(label)) {
            return Err(bad(&format!(
                "`{label}` is not a SageMaker name (letters, digits and hyphens, at most 63)"
            )));
        }
        let target = match (kind, names) {
            (_, [name]) => SageMakerTarget {
                kind,
                name: name.to_string(),
                space: None,
                domain: None,
            },
            (Kind::Studio, [app, space, domain]) => SageMakerTarget {
                kind,
                name: app.to_string(),
                space: Some(space.to_string()),
                domain: Some(domain.to_string()),
            },
            (Kind::Studio, _) => {
                return Err(bad(
                    "Studio hosts are <app>.studio.sagemaker or <app>.<space>.<domain>.studio.sagemaker",
                ))
            }
            _ => return Err(bad("SageMaker names contain no dots")),
        };
        Ok(Target::SageMaker(target))
    }

    /// The user ssh logs in as by default. Instances and native targets get
    /// root, as SageMaker containers do; `ssh user@…` or `-l` overrides it.
    pub fn default_user(&self) -> &'static str {
        match self {
            Target::SageMaker(target) => target.kind.default_user(),
            Target::Space(_) => "sagemaker-user",
            // Until DescribeCluster says which orchestrator (path/hyperpod.rs).
            Target::HyperPod(_) => "ubuntu",
            Target::Instance(_) | Target::Native(_) => "root",
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        match self {
            Target::SageMaker(target) => Some(target.kind),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::SageMaker(target) => f.write_str(&target.host_name()),
            Target::Space(SpaceTarget { arn: Some(arn), .. }) => f.write_str(arn),
            Target::Space(space) => f.write_str(&space.host_name()),
            Target::HyperPod(node) => f.write_str(&node.host_name()),
            Target::Instance(id) | Target::Native(id) => f.write_str(id),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = TargetError;
    fn from_str(text: &str) -> Result<Target, TargetError> {
        Target::parse(text)
    }
}

/// `mi-` or `i-` followed by 8 or more lowercase hex digits.
pub fn is_instance_id(text: &str) -> bool {
    let hex = text
        .strip_prefix("mi-")
        .or_else(|| text.strip_prefix("i-"))
        .unwrap_or("");
    hex.len() >= 8
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A SageMaker resource, space or domain name: `[A-Za-z0-9](-*[A-Za-z0-9])*`,
/// at most 63 characters.
fn is_name(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sagemaker(kind: Kind, name: &str) -> Target {
        Target::SageMaker(SageMakerTarget {
            kind,
            name: name.into(),
            space: None,
            domain: None,
        })
    }

    #[test]
    fn every_kind_parses_and_prints_back() {
        for kind in Kind::ALL {
            let host = format!("my-Job-1.{kind}.sagemaker");
            let target = Target::parse(&host).unwrap();
            assert_eq!(target, sagemaker(kind, "my-Job-1"));
            assert_eq!(target.to_string(), host);
        }
    }

    #[test]
    fn studio_long_form_keeps_space_and_domain() {
        let target = Target::parse("default.my-space.d-abc123.studio.sagemaker").unwrap();
        assert_eq!(
            target,
            Target::SageMaker(SageMakerTarget {
                kind: Kind::Studio,
                name: "default".into(),
                space: Some("my-space".into()),
                domain: Some("d-abc123".into()),
            })
        );
        assert_eq!(
            target.to_string(),
            "default.my-space.d-abc123.studio.sagemaker"
        );
        assert_eq!(target.default_user(), "sagemaker-user");
    }

    #[test]
    fn default_users() {
        assert_eq!(
            Target::parse("j.training.sagemaker")
                .unwrap()
                .default_user(),
            "root"
        );
        assert_eq!(
            Target::parse("nb.notebook.sagemaker")
                .unwrap()
                .default_user(),
            "root"
        );
        assert_eq!(
            Target::parse("app.studio.sagemaker")
                .unwrap()
                .default_user(),
            "sagemaker-user"
        );
        assert_eq!(
            Target::parse("mi-0123456789abcdef0")
                .unwrap()
                .default_user(),
            "root"
        );
    }

    #[test]
    fn instance_ids_and_native_targets_pass_unchanged() {
        for id in ["mi-0123456789abcdef0", "i-0abc1234def567890", "i-12345678"] {
            assert_eq!(Target::parse(id).unwrap(), Target::Instance(id.into()));
        }
        for native in [
            "sagemaker-cluster:abc123_workers-i-0123456789abcdef0",
            "sagemaker-training-job:my-job_algo-1",
            "sagemaker-endpoint:ep_AllTraffic_i-0123",
            "ecs:cluster_task_container",
        ] {
            let target = Target::parse(native).unwrap();
            assert_eq!(target, Target::Native(native.into()));
            assert_eq!(target.to_string(), native);
        }
    }

    #[test]
    fn every_space_form_parses() {
        let arn = "arn:aws:sagemaker:us-east-1:123456789012:space/d-abc123/my-space";
        let long = Target::parse("my-space.d-abc123.space.sagemaker").unwrap();
        let short = Target::parse("My-Space.space.sagemaker").unwrap();
        let by_arn = Target::parse(arn).unwrap();
        let toolkit = Target::parse(
            "sm_lc_arn_._aws_._sagemaker_._us-east-1_._123456789012_._space__d-abc123__my-space",
        )
        .unwrap();
        let deep_link = Target::parse(
            "sm_dl_arn_._aws_._sagemaker_._us-east-1_._123456789012_._space__d-abc123__my-space",
        )
        .unwrap();
        let space = |domain: Option<&str>, name: &str, arn: Option<&str>| {
            Target::Space(SpaceTarget {
                space: name.into(),
                domain: domain.map(Into::into),
                arn: arn.map(Into::into),
            })
        };
        assert_eq!(long, space(Some("d-abc123"), "my-space", None));
        assert_eq!(short, space(None, "My-Space", None));
        assert_eq!(by_arn, space(Some("d-abc123"), "my-space", Some(arn)));
        assert_eq!(toolkit, by_arn);
        assert_eq!(deep_link, by_arn);
        assert_eq!(long.to_string(), "my-space.d-abc123.space.sagemaker");
        assert_eq!(by_arn.to_string(), arn);
        assert_eq!(short.default_user(), "sagemaker-user");
        for bad in [
            "a.b.c.space.sagemaker",
            "bad_name.space.sagemaker",
            "arn:aws:sagemaker:us-east-1:123456789012:app/d-abc123/my-space",
            "arn:aws:sagemaker:us-east-1:1234:space/d-abc123/my-space",
            "sm_lc_nonsense",
        ] {
            let error = Target::parse(bad).expect_err(bad);
            assert!(error.to_string().contains(ACCEPTED_FORMS), "{bad}");
        }
    }

    #[test]
    fn hyperpod_nodes_parse_in_every_node_form() {
        for node in ["i-0123456789abcdef0", "ip-10-1-2-3", "2"] {
            let host = format!("{node}.workers.My-Cluster.hyperpod.sagemaker");
            let target = Target::parse(&host).unwrap();
            assert_eq!(
                target,
                Target::HyperPod(HyperPodTarget {
                    node: node.into(),
                    group: "workers".into(),
                    cluster: "My-Cluster".into(),
                })
            );
            assert_eq!(target.to_string(), host);
        }
        for bad in [
            "workers.c.hyperpod.sagemaker",
            "1.a.b.c.hyperpod.sagemaker",
            "1.bad_group.c.hyperpod.sagemaker",
        ] {
            let error = Target::parse(bad).expect_err(bad);
            assert!(error.to_string().contains(ACCEPTED_FORMS), "{bad}");
        }
    }

    #[test]
    fn a_trailing_dot_is_accepted() {
        assert_eq!(
            Target::parse("j.training.sagemaker.").unwrap(),
            sagemaker(Kind::Training, "j")
        );
    }

    #[test]
    fn bad_targets_explain_and_list_accepted_forms() {
        for bad in [
            "",
            "sagemaker",
            ".training.sagemaker",
            "training.sagemaker",
            "job.training",
            "job.lambda.sagemaker",
            "a.b.training.sagemaker",
            "a.b.studio.sagemaker",
            "a.b.c.d.studio.sagemaker",
            "bad_name.training.sagemaker",
            "-job.training.sagemaker",
            "mi-xyz",
            "i-123",
            "ecs:",
            "example.com",
        ] {
            let error = Target::parse(bad).expect_err(bad);
            let text = error.to_string();
            assert!(text.contains(ACCEPTED_FORMS), "{bad}: {text}");
            assert!(text.contains(&format!("`{bad}`")), "{bad}: {text}");
        }
    }

    #[test]
    fn kinds_map_to_arn_resource_types_and_back() {
        for kind in Kind::ALL {
            match kind.arn_resource_type() {
                Some(resource) => assert_eq!(Kind::from_arn_resource_type(resource), Some(kind)),
                None => assert_eq!(kind, Kind::Inference),
            }
        }
    }
}
