//! The attribution check: notebook instances (and running training jobs)
//! that share one execution role all call AWS as
//! `assumed-role/<role>/SageMaker`, so CloudTrail cannot tell which one did
//! what. PASS when no role is shared, or when each shared role can assume
//! itself and its notebooks carry a lifecycle configuration that re-assumes
//! it under their own name (`sm-ssh policy attribution`); WARN otherwise,
//! with that fix filled in; SKIP naming the permission it could not use
//! (when the training jobs cannot be listed, the notebooks' WARN still
//! stands, saying the jobs were not checked).

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_sagemaker::types::TrainingJobStatus;

use super::report::Check;
use super::{iam, role, Failure};
use crate::policy::attribution;
use crate::policy::eval::{evaluate, Decision, Request};

const ID: &str = "attribution";

/// A notebook instance and what attribution needs of it.
struct Notebook {
    name: String,
    lifecycle_config: Option<String>,
}

/// Who runs as one execution role.
#[derive(Default)]
struct Sharing {
    notebooks: Vec<Notebook>,
    jobs: Vec<String>,
}

impl Sharing {
    fn count(&self) -> usize {
        self.notebooks.len() + self.jobs.len()
    }

    fn names(&self) -> String {
        let mut parts = Vec::new();
        if !self.notebooks.is_empty() {
            let names: Vec<&str> = self.notebooks.iter().map(|n| n.name.as_str()).collect();
            parts.push(format!("notebook instances {}", names.join(", ")));
        }
        if !self.jobs.is_empty() {
            parts.push(format!("running training jobs {}", self.jobs.join(", ")));
        }
        parts.join(" and ")
    }
}

pub async fn check(sdk: &SdkConfig, region: &str) -> Check {
    let sagemaker = aws_sdk_sagemaker::Client::new(sdk);
    let mut roles = match notebooks_by_role(&sagemaker).await {
        Ok(roles) => roles,
        Err(failure) => return failure.skip(ID),
    };
    // Without the jobs a PASS cannot be given, but the notebooks' gaps stand.
    let jobs_unread = add_jobs(&sagemaker, &mut roles).await.err();
    let unread_note = |failure: &Failure| match failure {
        Failure::Denied(permission) => {
            format!("running training jobs not checked: {permission} is denied")
        }
        Failure::NotFound(message) | Failure::Other(message) => {
            format!("running training jobs not checked: {message}")
        }
    };
    let shared: Vec<(&String, &Sharing)> = roles.iter().filter(|(_, s)| s.count() > 1).collect();
    if shared.is_empty() {
        if let Some(failure) = jobs_unread {
            return failure.skip(ID);
        }
        return Check::pass(
            ID,
            format!(
                "no two notebook instances or running training jobs in {region} share an \
                 execution role ({} role(s) in use), so CloudTrail tells them apart",
                roles.len()
            ),
        );
    }
    let client = aws_sdk_iam::Client::new(sdk);
    let mut gaps = Vec::new();
    let mut fixes = Vec::new();
    let mut fine = Vec::new();
    for (role_arn, sharing) in shared {
        let missing = match missing(&client, &sagemaker, role_arn, sharing).await {
            Ok(missing) => missing,
            Err(failure) => return failure.skip(ID),
        };
        if missing.is_empty() {
            fine.push(format!("{} share {role_arn}", sharing.names()));
            continue;
        }
        gaps.push(format!(
            "{} in {region} share {role_arn}: CloudTrail shows all their calls as {}/SageMaker and cannot \
             tell them apart ({})",
            sharing.names(),
            assumed_role(role_arn),
            missing.join("; ")
        ));
        fixes.push(fix(role_arn, sharing, region));
    }
    if gaps.is_empty() {
        if let Some(failure) = jobs_unread {
            return failure.skip(ID);
        }
        return Check::pass(
            ID,
            format!(
                "{}; each role can assume itself and every notebook's lifecycle configuration \
                 re-assumes it under the notebook's name",
                fine.join("; ")
            ),
        );
    }
    if let Some(failure) = &jobs_unread {
        gaps.push(unread_note(failure));
    }
    Check::warn(ID, gaps.join("; "), fixes.join("\n"))
}

/// Every notebook instance, by execution role.
async fn notebooks_by_role(
    sagemaker: &aws_sdk_sagemaker::Client,
) -> Result<BTreeMap<String, Sharing>, Failure> {
    let mut roles: BTreeMap<String, Sharing> = BTreeMap::new();
    let notebooks = sagemaker
        .list_notebook_instances()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:ListNotebookInstances", e))?;
    for summary in notebooks {
        let name = summary.notebook_instance_name.unwrap_or_default();
        let notebook = sagemaker
            .describe_notebook_instance()
            .notebook_instance_name(&name)
            .send()
            .await
            .map_err(|e| Failure::from_sdk("sagemaker:DescribeNotebookInstance", e))?;
        let Some(role) = notebook.role_arn else {
            continue;
        };
        let lifecycle_config = notebook
            .notebook_instance_lifecycle_config_name
            .filter(|n| !n.is_empty());
        roles.entry(role).or_default().notebooks.push(Notebook {
            name,
            lifecycle_config,
        });
    }
    Ok(roles)
}

/// Every running training job, added to the users of its execution role.
async fn add_jobs(
    sagemaker: &aws_sdk_sagemaker::Client,
    roles: &mut BTreeMap<String, Sharing>,
) -> Result<(), Failure> {
    let jobs = sagemaker
        .list_training_jobs()
        .status_equals(TrainingJobStatus::InProgress)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:ListTrainingJobs", e))?;
    for summary in jobs {
        let name = summary.training_job_name.unwrap_or_default();
        let job = sagemaker
            .describe_training_job()
            .training_job_name(&name)
            .send()
            .await
            .map_err(|e| Failure::from_sdk("sagemaker:DescribeTrainingJob", e))?;
        if let Some(role) = job.role_arn {
            roles.entry(role).or_default().jobs.push(name);
        }
    }
    Ok(())
}

/// What keeps the users of `role_arn` apart in CloudTrail and is missing.
async fn missing(
    client: &aws_sdk_iam::Client,
    sagemaker: &aws_sdk_sagemaker::Client,
    role_arn: &str,
    sharing: &Sharing,
) -> Result<Vec<String>, Failure> {
    let name = iam::name_from_arn(role_arn);
    let role = iam::role(client, name).await?;
    let policies = iam::role_policies(client, name).await?;
    let mut missing = Vec::new();
    if evaluate(&policies, &Request::new("sts:AssumeRole", role_arn)) != Decision::Allow {
        missing.push("its policies do not allow sts:AssumeRole on itself".to_owned());
    }
    let account = role_arn.split(':').nth(4).unwrap_or_default();
    let root = format!(
        "arn:{}:iam::{account}:root",
        crate::policy::documents::partition_of(role_arn)
    );
    let trusted = role::trusts_principal(&role.trust, "AWS", |principal| {
        principal == role_arn || principal == root || principal == account || principal == "*"
    });
    if !trusted {
        missing.push("its trust policy does not trust the role itself".to_owned());
    }
    for notebook in &sharing.notebooks {
        match &notebook.lifecycle_config {
            None => missing.push(format!(
                "notebook {} has no lifecycle configuration",
                notebook.name
            )),
            Some(config) => {
                if !reassumes(sagemaker, config).await? {
                    missing.push(format!(
                        "the lifecycle configuration {config} of notebook {} does not set \
                         role_session_name",
                        notebook.name
                    ));
                }
            }
        }
    }
    Ok(missing)
}

/// Whether the lifecycle configuration's on-start script re-assumes the role.
async fn reassumes(sagemaker: &aws_sdk_sagemaker::Client, name: &str) -> Result<bool, Failure> {
    let config = sagemaker
        .describe_notebook_instance_lifecycle_config()
        .notebook_instance_lifecycle_config_name(name)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:DescribeNotebookInstanceLifecycleConfig", e))?;
    Ok(config.on_start().iter().any(|hook| {
        let content = hook.content().unwrap_or_default();
        let script = aws_smithy_types::base64::decode(content)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|_| content.to_owned());
        attribution::script_reassumes(&script)
    }))
}

/// `arn:aws:iam::1:role/service-role/X` → `arn:aws:sts::1:assumed-role/X`.
fn assumed_role(role_arn: &str) -> String {
    let partition = crate::policy::documents::partition_of(role_arn);
    let account = role_arn.split(':').nth(4).unwrap_or_default();
    format!(
        "arn:{partition}:sts::{account}:assumed-role/{}",
        iam::name_from_arn(role_arn)
    )
}

/// The commands of seed 000's fix, filled in for one role and its users.
fn fix(role_arn: &str, sharing: &Sharing, region: &str) -> String {
    let name = iam::name_from_arn(role_arn);
    let policy = |part: &str| format!("\"$(sm-ssh policy attribution --role {role_arn}{part})\"");
    let config = format!("sm-ssh-attribution-{name}");
    let mut lines = vec![
        format!("let {name} assume itself (permission, then trust; merge any other trust statements it has):"),
        format!(
            "aws iam put-role-policy --role-name {name} --policy-name {} --policy-document {}",
            attribution::POLICY_NAME,
            policy("")
        ),
        format!(
            "aws iam update-assume-role-policy --role-name {name} --policy-document {}",
            policy(" --print trust")
        ),
    ];
    if !sharing.notebooks.is_empty() {
        lines.push("give each notebook the lifecycle configuration that re-assumes the role under its own name (root access off, so users cannot undo it):".into());
        lines.push(format!(
            "aws sagemaker create-notebook-instance-lifecycle-config --region {region} \
             --notebook-instance-lifecycle-config-name {config} --on-start Content=\"$(sm-ssh policy \
             attribution --role {role_arn} --print lifecycle-script | base64 -w0)\""
        ));
        for notebook in &sharing.notebooks {
            lines.push(format!(
                "aws sagemaker stop-notebook-instance --region {region} --notebook-instance-name {0}; \
                 aws sagemaker wait notebook-instance-stopped --region {region} --notebook-instance-name {0}; \
                 aws sagemaker update-notebook-instance --region {region} --notebook-instance-name {0} \
                 --lifecycle-config-name {config} --root-access Disabled; \
                 aws sagemaker start-notebook-instance --region {region} --notebook-instance-name {0}",
                notebook.name
            ));
        }
    }
    if !sharing.jobs.is_empty() {
        lines.push(format!(
            "training jobs: have the entry point re-assume {name} with role_session_name = \
             $TRAINING_JOB_NAME (credential_source = EcsContainer), see docs/admin-guide.md \
             \"Auditing SSH access\""
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_is_filled_in() {
        let sharing = Sharing {
            notebooks: vec![
                Notebook {
                    name: "nb-1".into(),
                    lifecycle_config: None,
                },
                Notebook {
                    name: "nb-2".into(),
                    lifecycle_config: None,
                },
            ],
            jobs: vec!["job-1".into()],
        };
        let role = "arn:aws:iam::123456789012:role/service-role/Exec";
        let fix = fix(role, &sharing, "eu-west-1");
        assert!(fix.contains(&format!(
            "aws iam put-role-policy --role-name Exec --policy-name SSHAttributionSelfAssume \
             --policy-document \"$(sm-ssh policy attribution --role {role})\""
        )));
        assert!(fix.contains(
            "--notebook-instance-name nb-2 --lifecycle-config-name sm-ssh-attribution-Exec"
        ));
        assert!(fix.contains("$TRAINING_JOB_NAME"));
        assert_eq!(
            sharing.names(),
            "notebook instances nb-1, nb-2 and running training jobs job-1"
        );
        assert_eq!(
            assumed_role(role),
            "arn:aws:sts::123456789012:assumed-role/Exec"
        );
    }
}
