//! Telling apart the notebook instances (and jobs) that share one execution
//! role in CloudTrail. By default each one's calls are made as
//! `assumed-role/<role>/SageMaker`, whatever the instance. The fix (AWS
//! Knowledge Center, "identify which SageMaker notebook instance made an API
//! call"): let the role assume itself, and have a start-up script re-assume
//! it with the instance's own name as the session name, so CloudTrail shows
//! `assumed-role/<role>/<notebook>`.

use serde_json::{json, Value};

use super::documents;

/// The Sid of the permission and trust statements.
pub const SID: &str = "AssumeItselfForAttribution";
/// The inline policy name the fix uses.
pub const POLICY_NAME: &str = "SSHAttributionSelfAssume";

/// The identity policy letting the role call sts:AssumeRole on itself.
pub fn permission(role_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": SID,
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": role_arn
        }]
    })
}

/// The execution role's trust policy (SageMaker and SSM, see
/// `documents::trust`) plus the role itself: IAM roles do not trust
/// themselves implicitly.
pub fn trust(role_arn: &str) -> Value {
    let mut trust = documents::trust();
    let statements = trust["Statement"]
        .as_array_mut()
        .expect("the trust policy has a statement list");
    statements.push(json!({
        "Sid": SID,
        "Effect": "Allow",
        "Principal": {"AWS": role_arn},
        "Action": "sts:AssumeRole"
    }));
    trust
}

/// The notebook lifecycle configuration's on-start script: the AWS CLI and
/// SDKs of `ec2-user` then assume `role_arn` with the notebook's name as
/// the session name. The config file is root's and immutable, so with root
/// access disabled the notebook's users cannot undo it.
pub fn lifecycle_script(role_arn: &str) -> String {
    format!(
        r#"#!/bin/bash
# Written by `sm-ssh policy attribution`: the notebook's AWS calls appear in
# CloudTrail as assumed-role/<role>/<notebook name> instead of .../SageMaker.
set -euo pipefail
metadata=/opt/ml/metadata/resource-metadata.json
field() {{ python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$metadata" "$1"; }}
name=$(field ResourceName)
region=$(field ResourceArn | cut -d: -f4)
config=/home/ec2-user/.aws/config
mkdir -p /home/ec2-user/.aws
if [ -e "$config" ]; then chattr -i "$config"; fi
cat > "$config" <<CONFIG
[default]
region = $region
role_arn = {role_arn}
credential_source = Ec2InstanceMetadata
role_session_name = $name
sts_regional_endpoints = regional
CONFIG
chown root:root "$config"
chmod 644 "$config"
chattr +i "$config"
"#
    )
}

/// Whether a lifecycle script re-assumes the role under the instance's
/// name (the `role_session_name` line of an AWS config).
pub fn script_reassumes(script: &str) -> bool {
    script.contains("role_session_name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::eval::{evaluate, Decision, Policy, Request};

    const ROLE: &str = "arn:aws:iam::123456789012:role/service-role/Exec";

    #[test]
    fn the_permission_lets_the_role_assume_itself_only() {
        let policies = vec![Policy::from_value("p", &permission(ROLE)).unwrap()];
        let assume = |arn: &str| evaluate(&policies, &Request::new("sts:AssumeRole", arn));
        assert_eq!(assume(ROLE), Decision::Allow);
        assert_eq!(
            assume("arn:aws:iam::123456789012:role/Other"),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn the_trust_keeps_the_services_and_adds_the_role() {
        let text = trust(ROLE).to_string();
        for principal in ["sagemaker.amazonaws.com", "ssm.amazonaws.com", ROLE] {
            assert!(text.contains(principal), "{text}");
        }
    }

    #[test]
    fn the_script_names_the_role_and_the_session() {
        let script = lifecycle_script(ROLE);
        assert!(script.starts_with("#!/bin/bash\n"));
        assert!(script.contains(&format!("role_arn = {ROLE}\n")));
        assert!(script.contains("role_session_name = $name\n"));
        assert!(script_reassumes(&script));
        assert!(!script_reassumes("#!/bin/bash\npip install x\n"));
    }
}
