//! Check 4: the SageMaker execution role — found from `--role`, a training
//! job, a notebook instance or a Studio user profile — trusts SSM and
//! SageMaker, and its policies grant everything the server side needs.

use aws_config::SdkConfig;

use super::domain_vpc::DomainVpc;
use super::identity::Me;
use super::report::Check;
use super::simulate::{self, verdict, Simulation, PERMISSION};
use super::{iam, Failure, Options};
use crate::policy::documents::{self, Expect, Principal, Scope};
use crate::policy::eval::{evaluate, Decision, Policy};

/// Where the execution role comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Role(String),
    TrainingJob(String),
    Notebook(String),
    UserProfile { domain: String, profile: String },
}

/// How the target reaches the SSM endpoints.
#[derive(Debug, Clone)]
pub enum Network {
    /// Runs in SageMaker's network with internet access.
    Public,
    Notebook {
        subnet: String,
        security_groups: Vec<String>,
        direct_internet: bool,
    },
    Job {
        subnets: Vec<String>,
        security_groups: Vec<String>,
        isolated: bool,
    },
    /// A Studio user profile's apps: `vpc` is the domain's when it is
    /// `VpcOnly`, `None` when it has internet access.
    Studio {
        profile: String,
        vpc: Option<DomainVpc>,
    },
}

/// What was learnt about the target, or why nothing could be.
pub enum Target {
    None,
    Found {
        what: String,
        role_arn: String,
        network: Option<Network>,
    },
    Unknown(Check),
}

const NO_TARGET: &str = "give --role ARN, --job NAME, --notebook NAME, or --domain ID --user-profile NAME to check an execution role";

pub async fn resolve(sdk: &SdkConfig, source: Option<&Source>) -> Target {
    let Some(source) = source else {
        return Target::None;
    };
    let sagemaker = aws_sdk_sagemaker::Client::new(sdk);
    let found = match source {
        Source::Role(arn) => Ok(("--role".to_owned(), arn.clone(), None)),
        Source::TrainingJob(name) => training_job(&sagemaker, name).await,
        Source::Notebook(name) => notebook(&sagemaker, name).await,
        Source::UserProfile { domain, profile } => user_profile(&sagemaker, domain, profile).await,
    };
    match found {
        Ok((what, role_arn, network)) => Target::Found {
            what,
            role_arn,
            network,
        },
        Err(Failure::NotFound(message)) => {
            let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
            Target::Unknown(missing_source(source, &region, &message))
        }
        Err(failure) => Target::Unknown(failure.skip("role-trust")),
    }
}

/// A job, notebook or profile named on the command line that SageMaker does
/// not know: most often a typo or the wrong region.
fn missing_source(source: &Source, region: &str, message: &str) -> Check {
    let (what, find) = match source {
        Source::Role(_) => unreachable!("a role ARN is not looked up in SageMaker"),
        Source::TrainingJob(name) => (
            format!("training job {name}"),
            format!("aws sagemaker list-training-jobs --region {region} --name-contains {name}"),
        ),
        Source::Notebook(name) => (
            format!("notebook instance {name}"),
            format!(
                "aws sagemaker list-notebook-instances --region {region} --name-contains {name}"
            ),
        ),
        Source::UserProfile { domain, profile } => (
            format!("Studio user profile {profile} in domain {domain}"),
            format!(
                "aws sagemaker list-user-profiles --region {region} --domain-id-equals {domain}"
            ),
        ),
    };
    Check::fail(
        "role-trust",
        format!("{what} does not exist in {region} ({message}), so its execution role is unknown"),
        format!("check the name and region (--region): {find}"),
    )
}

type Found = Result<(String, String, Option<Network>), Failure>;

async fn training_job(sagemaker: &aws_sdk_sagemaker::Client, name: &str) -> Found {
    let job = sagemaker
        .describe_training_job()
        .training_job_name(name)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:DescribeTrainingJob", e))?;
    let role = job
        .role_arn
        .ok_or_else(|| Failure::Other(format!("training job {name} has no RoleArn")))?;
    let isolated = job.enable_network_isolation.unwrap_or(false);
    let network = match job.vpc_config {
        Some(vpc) => Network::Job {
            subnets: vpc.subnets.unwrap_or_default(),
            security_groups: vpc.security_group_ids.unwrap_or_default(),
            isolated,
        },
        None if isolated => Network::Job {
            subnets: Vec::new(),
            security_groups: Vec::new(),
            isolated,
        },
        None => Network::Public,
    };
    Ok((format!("training job {name}"), role, Some(network)))
}

async fn notebook(sagemaker: &aws_sdk_sagemaker::Client, name: &str) -> Found {
    let notebook = sagemaker
        .describe_notebook_instance()
        .notebook_instance_name(name)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:DescribeNotebookInstance", e))?;
    let role = notebook
        .role_arn
        .ok_or_else(|| Failure::Other(format!("notebook instance {name} has no RoleArn")))?;
    let direct_internet = notebook
        .direct_internet_access
        .map(|access| access.as_str().eq_ignore_ascii_case("Enabled"))
        .unwrap_or(true);
    let network = match notebook.subnet_id {
        Some(subnet) if !subnet.is_empty() => Network::Notebook {
            subnet,
            security_groups: notebook.security_groups.unwrap_or_default(),
            direct_internet,
        },
        _ => Network::Public,
    };
    Ok((format!("notebook instance {name}"), role, Some(network)))
}

async fn user_profile(sagemaker: &aws_sdk_sagemaker::Client, domain: &str, profile: &str) -> Found {
    let user = sagemaker
        .describe_user_profile()
        .domain_id(domain)
        .user_profile_name(profile)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:DescribeUserProfile", e))?;
    let described = sagemaker
        .describe_domain()
        .domain_id(domain)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("sagemaker:DescribeDomain", e))?;
    let none = || aws_sdk_sagemaker::types::UserSettings::builder().build();
    let own = user.user_settings.unwrap_or_else(none);
    let defaults = described.default_user_settings.unwrap_or_else(none);
    // Studio apps run with the profile's own settings where it has them and
    // the domain's defaults otherwise; the report says which one applied.
    let (what, role) = match (own.execution_role, defaults.execution_role) {
        (Some(role), _) => (format!("Studio user profile {profile} in domain {domain}"), role),
        (None, Some(role)) => (
            format!(
                "domain {domain}'s default user settings, as Studio user profile {profile} has no execution role of its own"
            ),
            role,
        ),
        (None, None) => {
            return Err(Failure::Other(format!(
                "neither user profile {profile} nor domain {domain} names an execution role"
            )))
        }
    };
    let vpc_only = described
        .app_network_access_type
        .is_some_and(|t| t.as_str() == "VpcOnly");
    let vpc = vpc_only.then(|| DomainVpc {
        domain: domain.to_owned(),
        vpc: described.vpc_id.unwrap_or_default(),
        subnets: described.subnet_ids.unwrap_or_default(),
        security_groups: own
            .security_groups
            .filter(|groups| !groups.is_empty())
            .or(defaults.security_groups)
            .unwrap_or_default(),
    });
    let network = Network::Studio {
        profile: profile.to_owned(),
        vpc,
    };
    Ok((what, role, Some(network)))
}

/// The trust and policy checks of the execution role.
pub async fn checks(
    sdk: &SdkConfig,
    me: &Me,
    region: &str,
    target: &Target,
    options: &Options,
) -> Vec<Check> {
    let (what, role_arn) = match target {
        Target::None => {
            return vec![
                Check::skip("role-trust", NO_TARGET),
                Check::skip("role-policy", NO_TARGET),
            ]
        }
        Target::Unknown(check) => {
            let mut policy = check.clone();
            policy.id = "role-policy";
            if policy.fix.is_some() {
                // One fix is enough: role-trust has it.
                policy = Check::skip(
                    "role-policy",
                    "the execution role is unknown (see role-trust)",
                );
            }
            return vec![check.clone(), policy];
        }
        Target::Found { what, role_arn, .. } => (what, role_arn),
    };
    let client = aws_sdk_iam::Client::new(sdk);
    let name = iam::name_from_arn(role_arn);
    let role = match iam::role(&client, name).await {
        Ok(role) => role,
        Err(Failure::NotFound(_)) => return missing_role(role_arn, what, options),
        Err(failure) => {
            return vec![
                failure.clone().skip("role-trust"),
                failure.skip("role-policy"),
            ]
        }
    };
    let trust = trust_check(&role, role_arn, what);
    let policy = match iam::role_policies(&client, &role.name).await {
        Ok(policies) => {
            let exec_role = ExecutionRole {
                arn: role_arn,
                tags: &role.tags,
                what,
            };
            policy_check(sdk, me, region, &exec_role, &policies, options).await
        }
        Err(failure) => failure.skip("role-policy"),
    };
    vec![trust, policy]
}

/// A role named (or used by a job) that does not exist: it must be created
/// with the trust policy, then given the server policy.
fn missing_role(role_arn: &str, what: &str, options: &Options) -> Vec<Check> {
    let name = iam::name_from_arn(role_arn);
    let path = role_path(role_arn)
        .map(|path| format!(" --path {path}"))
        .unwrap_or_default();
    let detail = format!("{role_arn} (from {what}) does not exist");
    vec![
        Check::fail(
            "role-trust",
            detail.clone(),
            format!(
                "aws iam create-role --role-name {name}{path} \
                 --assume-role-policy-document \"$(sm-ssh policy trust)\""
            ),
        ),
        Check::fail("role-policy", detail, server_policy_fix(role_arn, options)),
    ]
}

/// The path of a role ARN (`…:role/service-role/X` → `/service-role/`), when
/// it has one.
fn role_path(arn: &str) -> Option<String> {
    let resource = arn.splitn(6, ':').nth(5)?.strip_prefix("role/")?;
    let (path, _) = resource.rsplit_once('/')?;
    Some(format!("/{path}/"))
}

/// The command giving the role the server policy.
fn server_policy_fix(role_arn: &str, options: &Options) -> String {
    let team = options
        .team_tag
        .as_ref()
        .map(|key| format!(" --team-tag {key}"))
        .unwrap_or_default();
    format!(
        "aws iam put-role-policy --role-name {} --policy-name {} \
         --policy-document \"$(sm-ssh policy server --role {role_arn}{team})\"",
        iam::name_from_arn(role_arn),
        documents::SERVER_POLICY_NAME
    )
}

fn trust_check(role: &iam::Role, role_arn: &str, what: &str) -> Check {
    let missing: Vec<&str> = documents::TRUSTED_SERVICES
        .iter()
        .copied()
        .filter(|service| !trusts(&role.trust, service))
        .collect();
    if missing.is_empty() {
        return Check::pass(
            "role-trust",
            format!(
                "{role_arn} (from {what}) trusts sagemaker.amazonaws.com and ssm.amazonaws.com"
            ),
        );
    }
    let trust = serde_json::to_string(&documents::trust()).expect("JSON");
    Check::fail(
        "role-trust",
        format!(
            "{role_arn} (from {what}) does not trust {}",
            missing.join(" and ")
        ),
        format!(
            "aws iam update-assume-role-policy --role-name {} --policy-document '{trust}'\n\
             (this replaces the trust policy: merge any other statements it has)",
            role.name
        ),
    )
}

/// Whether a trust policy lets `service` call sts:AssumeRole.
fn trusts(trust: &serde_json::Value, service: &str) -> bool {
    trusts_principal(trust, "Service", |name| name == service)
}

/// Whether a trust policy lets a principal of type `key` (`Service`, `AWS`)
/// whose name passes `wanted` call sts:AssumeRole.
pub(super) fn trusts_principal(
    trust: &serde_json::Value,
    key: &str,
    wanted: impl Fn(&str) -> bool,
) -> bool {
    let statements = match &trust["Statement"] {
        serde_json::Value::Array(list) => list.clone(),
        single @ serde_json::Value::Object(_) => vec![single.clone()],
        _ => return false,
    };
    statements.iter().any(|statement| {
        let allows = statement["Effect"] == "Allow";
        let action = match &statement["Action"] {
            serde_json::Value::String(a) => vec![a.clone()],
            serde_json::Value::Array(list) => list
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let assumes = action
            .iter()
            .any(|a| crate::policy::eval::glob(&a.to_ascii_lowercase(), "sts:assumerole"));
        let named = match &statement["Principal"][key] {
            serde_json::Value::String(s) => wanted(s),
            serde_json::Value::Array(list) => list.iter().filter_map(|s| s.as_str()).any(&wanted),
            _ => false,
        };
        allows && assumes && named
    })
}

/// The execution role as the policy check needs it.
struct ExecutionRole<'a> {
    arn: &'a str,
    tags: &'a [(String, String)],
    /// Where the role came from (`--role`, `training job X`, …).
    what: &'a str,
}

async fn policy_check(
    sdk: &SdkConfig,
    me: &Me,
    region: &str,
    role: &ExecutionRole<'_>,
    policies: &[Policy],
    options: &Options,
) -> Check {
    let scope = Scope {
        partition: documents::partition_of(role.arn).to_owned(),
        account: me.account.clone(),
        team_tag: options.team_tag.clone(),
    };
    let owner = Principal {
        user_id: me.user_id.clone(),
        tags: role.tags.to_vec(),
    };
    let requirements = documents::server_requirements(&scope, region, role.arn, &owner);
    let outcome = Evaluation::of(policies, &requirements);
    let simulation = simulate::run(sdk, role.arn, &requirements).await;
    let fix = server_policy_fix(role.arn, options);
    let subject = format!("{} (from {})", role.arn, role.what);
    outcome.into_check("role-policy", &subject, fix, &simulation)
}

/// The requirements a set of policies misses, and the ones it grants but
/// should not.
pub struct Evaluation {
    missing: Vec<String>,
    gaps: Vec<String>,
    /// Each requirement's `action on resource` and the local decision.
    local: Vec<(String, Decision)>,
    /// The policies whose Deny takes a needed permission away.
    denied_by: Vec<String>,
}

impl Evaluation {
    pub fn of(policies: &[Policy], requirements: &[documents::Requirement]) -> Evaluation {
        let mut missing = Vec::new();
        let mut gaps = Vec::new();
        let mut local = Vec::new();
        let mut denied_by = Vec::new();
        for requirement in requirements {
            let decision = evaluate(policies, &requirement.request);
            let what = format!(
                "{} on {}",
                requirement.request.action, requirement.request.resource
            );
            let line = format!("{what} ({})", requirement.why);
            local.push((what, decision));
            match (requirement.expect, decision) {
                (Expect::Allowed, Decision::ImplicitDeny) => missing.push(line),
                (Expect::Allowed, Decision::ExplicitDeny) => {
                    let by = policies
                        .iter()
                        .find(|p| {
                            evaluate(std::slice::from_ref(p), &requirement.request)
                                == Decision::ExplicitDeny
                        })
                        .map(|p| p.name.as_str())
                        .unwrap_or("a policy");
                    if !denied_by.iter().any(|name| name == by) {
                        denied_by.push(by.to_owned());
                    }
                    missing.push(format!("{line}, denied explicitly by {by}"))
                }
                (Expect::Denied, Decision::Allow) => gaps.push(line),
                _ => {}
            }
        }
        Evaluation {
            missing,
            gaps,
            local,
            denied_by,
        }
    }

    /// The check: the local verdict, with the simulator's where it differs
    /// (it sees SCPs and permission boundaries; the local evaluation does not).
    pub fn into_check(
        self,
        id: &'static str,
        subject: &str,
        fix: String,
        simulation: &Simulation,
    ) -> Check {
        let disagreements: Vec<String> = match &simulation.decisions {
            Ok(decisions) => self
                .local
                .iter()
                .zip(decisions)
                .filter(|((_, local), simulated)| {
                    (*local == Decision::Allow) != (**simulated == Decision::Allow)
                })
                .map(|((what, local), simulated)| {
                    format!(
                        "{what}: local evaluation {}, SimulatePrincipalPolicy {}",
                        verdict(*local),
                        verdict(*simulated)
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let skipped = match &simulation.decisions {
            Ok(_) => String::new(),
            Err(reason) => format!(
                " (SimulatePrincipalPolicy skipped: {reason}; it needs {PERMISSION}, without which \
                 SCPs and permission boundaries are not seen)"
            ),
        };
        let disagree = if disagreements.is_empty() {
            String::new()
        } else {
            format!(
                "; SimulatePrincipalPolicy, which also applies SCPs and permission boundaries, \
                 disagrees with the local evaluation of the identity policies: {}",
                disagreements.join("; ")
            )
        };
        if !self.missing.is_empty() {
            // A Deny overrides every Allow: adding the policy alone fixes nothing.
            let fix = if self.denied_by.is_empty() {
                fix
            } else {
                format!(
                    "remove or narrow the Deny statements of {} (a Deny overrides any Allow); \
                     if permissions are still missing then:\n{fix}",
                    self.denied_by.join(", ")
                )
            };
            return Check::fail(
                id,
                format!(
                    "{subject} is not allowed: {}{disagree}{skipped}",
                    self.missing.join("; ")
                ),
                fix,
            );
        }
        if !disagreements.is_empty() {
            return Check::warn(
                id,
                format!(
                    "{subject}: SimulatePrincipalPolicy, which also applies SCPs and permission \
                     boundaries, disagrees with the local evaluation of the identity policies: {}",
                    disagreements.join("; ")
                ),
                format!(
                    "find the service control policy or permission boundary that decides:\n\
                     aws iam simulate-principal-policy --policy-source-arn {} --action-names {}",
                    simulation.principal,
                    disputed_actions(&disagreements)
                ),
            );
        }
        if !self.gaps.is_empty() {
            return Check::warn(
                id,
                format!(
                    "{subject} is allowed more than SSH needs: {}{skipped}",
                    self.gaps.join("; ")
                ),
                format!("replace the broader statements with the recommended policy:\n{fix}"),
            );
        }
        let how = match &simulation.decisions {
            Ok(_) => "identity policies evaluated locally, confirmed by SimulatePrincipalPolicy"
                .to_owned(),
            Err(reason) => format!(
                "identity policies evaluated locally; SimulatePrincipalPolicy skipped: {reason}; \
                 it needs {PERMISSION}, without which SCPs and permission boundaries are not seen"
            ),
        };
        Check::pass(
            id,
            format!("{subject} has every permission SSH needs ({how})"),
        )
    }
}

/// The distinct actions of `action on resource: …` lines, space-separated.
fn disputed_actions(disagreements: &[String]) -> String {
    let mut actions: Vec<&str> = Vec::new();
    for line in disagreements {
        let action = line.split(' ').next().unwrap_or(line);
        if !actions.contains(&action) {
            actions.push(action);
        }
    }
    actions.join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn role_paths() {
        assert_eq!(
            role_path("arn:aws:iam::1:role/service-role/Exec").as_deref(),
            Some("/service-role/")
        );
        assert_eq!(
            role_path("arn:aws:iam::1:role/a/b/Exec").as_deref(),
            Some("/a/b/")
        );
        assert_eq!(role_path("arn:aws:iam::1:role/Exec"), None);
    }

    #[test]
    fn trust_statements() {
        let both = documents::trust();
        assert!(trusts(&both, "ssm.amazonaws.com"));
        assert!(trusts(&both, "sagemaker.amazonaws.com"));
        let list = json!({"Statement": {"Effect": "Allow", "Action": ["sts:AssumeRole"], "Principal": {"Service": ["sagemaker.amazonaws.com"]}}});
        assert!(trusts(&list, "sagemaker.amazonaws.com"));
        assert!(!trusts(&list, "ssm.amazonaws.com"));
        let deny = json!({"Statement": [{"Effect": "Deny", "Action": "sts:*", "Principal": {"Service": "ssm.amazonaws.com"}}]});
        assert!(!trusts(&deny, "ssm.amazonaws.com"));
    }
}
