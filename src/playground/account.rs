//! The playground's AWS account on the IAM side: set up as the admin guide
//! says (so `sm-ssh doctor` passes every check), or broken in one way for
//! `sm-ssh playground --broken`, each way failing exactly one check.

use serde_json::{json, Value};
use sm_ssh_integration::iam::{Account, Group, ManagedPolicy, Policies, Role, User};
use sm_ssh_integration::sagemaker::{NotebookInstance, NotebookLifecycleConfig};
use sm_ssh_integration::world::Identity;

use crate::doctor::report::Status;
use crate::policy::attribution;
use crate::policy::documents::{self, Scope, CLIENT_POLICY_NAME, SERVER_POLICY_NAME};
use crate::policy::space::Owner;

/// The caller's role (the default identity is a session of it).
pub const DEVELOPER_ROLE: &str = "Developer";
/// The demo job's execution role, as the SageMaker console names it.
pub const EXECUTION_ROLE: &str = "AmazonSageMaker-ExecutionRole";
/// The admin guide's name of the space policy, the principal tag that
/// names a role's Studio user profile, and the demo space's owner.
const SPACE_POLICY_NAME: &str = "SSHSageMakerSpacePolicy";
const SPACE_PROFILE_TAG: &str = "UserProfile";
const SPACE_OWNER: &str = "alice";
/// An IAM user whose client policy comes through a group.
pub const CI_USER: &str = "ci-bot";
const CI_GROUP: &str = "ssh-users";

/// The ways `--broken` misconfigures the account, each failing one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Broken {
    /// The SSM advanced-instances tier is off (ssm-tier).
    StandardTier,
    /// The execution role does not trust ssm.amazonaws.com (role-trust).
    RoleTrust,
    /// The execution role lacks the server policy (role-policy).
    RolePolicy,
    /// The caller's role lacks the client policy (client-policy).
    ClientPolicy,
    /// A Deny statement takes ssm:StartSession away from the caller (client-policy).
    ExplicitDeny,
    /// The caller is IAM user ci-bot, whose group lacks the client policy (client-policy).
    GroupPolicy,
    /// The notebooks share the execution role, which cannot assume itself,
    /// so CloudTrail cannot tell them apart (attribution, a warning).
    SharedRole,
    /// The demo space's domain is VpcOnly and its VPC lacks the ssmmessages
    /// endpoint and has private DNS off on the SageMaker runtime's (space-network).
    VpcEndpoints,
}

impl Broken {
    pub const ALL: [Broken; 8] = [
        Broken::StandardTier,
        Broken::RoleTrust,
        Broken::RolePolicy,
        Broken::ClientPolicy,
        Broken::ExplicitDeny,
        Broken::GroupPolicy,
        Broken::SharedRole,
        Broken::VpcEndpoints,
    ];

    /// The id of the one doctor check this breaks.
    pub fn check(self) -> &'static str {
        match self {
            Broken::StandardTier => "ssm-tier",
            Broken::RoleTrust => "role-trust",
            Broken::RolePolicy => "role-policy",
            Broken::ClientPolicy | Broken::ExplicitDeny | Broken::GroupPolicy => "client-policy",
            Broken::SharedRole => "attribution",
            Broken::VpcEndpoints => "space-network",
        }
    }

    /// What that check says: attribution gaps are warnings, SSH still works.
    pub fn status(self) -> Status {
        match self {
            Broken::SharedRole => Status::Warn,
            _ => Status::Fail,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Broken::StandardTier => "standard-tier",
            Broken::RoleTrust => "role-trust",
            Broken::RolePolicy => "role-policy",
            Broken::ClientPolicy => "client-policy",
            Broken::ExplicitDeny => "explicit-deny",
            Broken::GroupPolicy => "group-policy",
            Broken::SharedRole => "shared-role",
            Broken::VpcEndpoints => "vpc-endpoints",
        }
    }
}

/// What the fake is seeded with besides the demo instance.
pub struct Setup {
    pub identity: Identity,
    pub iam: Account,
    /// The SSM activation tier.
    pub tier: &'static str,
    /// Notebook instances sharing the execution role, and their lifecycle
    /// configuration, for doctor's attribution check.
    pub notebooks: Vec<NotebookInstance>,
    pub lifecycle_configs: Vec<NotebookLifecycleConfig>,
}

/// The demo notebooks: they share the execution role, as in seed 000.
pub const NOTEBOOKS: [&str; 2] = ["demo-notebook-a", "demo-notebook-b"];

pub fn execution_role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/service-role/{EXECUTION_ROLE}")
}

/// The account as the admin guide sets it up, then broken as asked.
pub fn setup(broken: Option<Broken>) -> Setup {
    let mut identity = Identity::default();
    let account = identity.account.clone();
    let scope = Scope {
        partition: "aws".into(),
        account: account.clone(),
        team_tag: None,
    };
    let exec_arn = execution_role_arn(&account);
    let client = documents::client(&scope);
    let managed_client = format!("arn:aws:iam::{account}:policy/{CLIENT_POLICY_NAME}");
    let mut developer = Role {
        name: DEVELOPER_ROLE.into(),
        trust: json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "sts:AssumeRole"}]}),
        policies: inline(CLIENT_POLICY_NAME, client.clone()),
        // Studio spaces, per user (admin guide, "Studio spaces"): the demo
        // space's owner is the profile the role's tag names.
        tags: [(SPACE_PROFILE_TAG.to_owned(), SPACE_OWNER.to_owned())]
            .into_iter()
            .collect(),
        ..Role::default()
    };
    developer.policies.inline.insert(
        SPACE_POLICY_NAME.into(),
        crate::policy::space::client(&scope, Owner::PrincipalTag(SPACE_PROFILE_TAG)),
    );
    // The attribution fix applied: the role may assume itself.
    let mut execution = Role {
        name: EXECUTION_ROLE.into(),
        path: Some("/service-role/".into()),
        trust: attribution::trust(&exec_arn),
        policies: inline(SERVER_POLICY_NAME, documents::server(&scope, &exec_arn)),
        ..Role::default()
    };
    execution.policies.inline.insert(
        attribution::POLICY_NAME.into(),
        attribution::permission(&exec_arn),
    );
    let mut group = Group {
        name: CI_GROUP.into(),
        policies: Policies {
            attached: vec![managed_client.clone()],
            ..Policies::default()
        },
        ..Group::default()
    };
    let user = User {
        name: CI_USER.into(),
        groups: vec![CI_GROUP.into()],
        ..User::default()
    };
    let mut tier = "advanced";
    match broken {
        // The network side: the demo's Studio domain (demo.rs).
        None | Some(Broken::VpcEndpoints) => {}
        Some(Broken::StandardTier) => tier = "standard",
        Some(Broken::RoleTrust) => {
            execution.trust["Statement"]
                .as_array_mut()
                .expect("the trust policy lists statements")
                .retain(|s| s["Principal"]["Service"] != "ssm.amazonaws.com");
        }
        Some(Broken::RolePolicy) => {
            execution.policies.inline.remove(SERVER_POLICY_NAME);
        }
        Some(Broken::ClientPolicy) => developer.policies = Policies::default(),
        Some(Broken::ExplicitDeny) => {
            developer.policies.inline.insert(
                "DenyStartSession".into(),
                json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny",
                    "Action": "ssm:StartSession", "Resource": "*"}]}),
            );
        }
        Some(Broken::SharedRole) => {
            execution.policies.inline.remove(attribution::POLICY_NAME);
            execution.trust = documents::trust();
        }
        Some(Broken::GroupPolicy) => {
            group.policies = Policies::default();
            identity = Identity {
                arn: format!("arn:aws:iam::{account}:user/{CI_USER}"),
                user_id: "AIDAEXAMPLECIBOT".into(),
                account: account.clone(),
            };
        }
    }
    Setup {
        identity,
        iam: Account {
            roles: vec![developer, execution],
            users: vec![user],
            groups: vec![group],
            policies: vec![ManagedPolicy {
                arn: managed_client,
                document: client,
            }],
        },
        tier,
        notebooks: NOTEBOOKS
            .iter()
            .map(|name| NotebookInstance {
                name: (*name).into(),
                role_arn: exec_arn.clone(),
                lifecycle_config: lifecycle_config_name(),
                ..NotebookInstance::default()
            })
            .collect(),
        lifecycle_configs: vec![NotebookLifecycleConfig {
            name: lifecycle_config_name(),
            on_start: attribution::lifecycle_script(&exec_arn),
            ..NotebookLifecycleConfig::default()
        }],
    }
}

/// The name doctor's attribution fix gives the configuration.
fn lifecycle_config_name() -> String {
    format!("sm-ssh-attribution-{EXECUTION_ROLE}")
}

fn inline(name: &str, document: Value) -> Policies {
    Policies {
        inline: [(name.to_owned(), document)].into_iter().collect(),
        attached: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::documents::{client_requirements, server_requirements, Principal};
    use crate::policy::eval::{evaluate, Decision, Policy};
    use sm_ssh_integration::iam;

    /// The fake's SimulatePrincipalPolicy and doctor's local evaluation
    /// decide every requirement alike, for every principal of every seed.
    #[test]
    fn the_fake_simulator_agrees_with_the_local_evaluator_on_every_seed() {
        let mut compared = 0;
        for broken in std::iter::once(None).chain(Broken::ALL.map(Some)) {
            let setup = setup(broken);
            let account = &setup.identity.account;
            let scope = Scope {
                partition: "aws".into(),
                account: account.clone(),
                team_tag: None,
            };
            let principal = Principal {
                user_id: setup.identity.user_id.clone(),
                tags: Vec::new(),
            };
            let exec_arn = execution_role_arn(account);
            let mut requirements = server_requirements(&scope, "us-east-1", &exec_arn, &principal);
            requirements.extend(client_requirements(&scope, "us-east-1", &principal));
            let principals = [
                exec_arn.clone(),
                format!("arn:aws:iam::{account}:role/{DEVELOPER_ROLE}"),
                format!("arn:aws:iam::{account}:user/{CI_USER}"),
            ];
            for arn in principals {
                let documents = setup.iam.principal_policies(&arn).expect("seeded");
                let local: Vec<Policy> = documents
                    .iter()
                    .map(|(name, doc)| Policy::from_value(name, doc).expect("parses"))
                    .collect();
                let values: Vec<Value> = documents.into_iter().map(|(_, d)| d).collect();
                for requirement in &requirements {
                    let request = &requirement.request;
                    let context = request
                        .context()
                        .map(|(k, v)| (k.to_owned(), v.to_vec()))
                        .collect();
                    let fake = iam::evaluate(&values, &request.action, &request.resource, &context);
                    let expected = match evaluate(&local, request) {
                        Decision::Allow => iam::Decision::Allowed,
                        Decision::ExplicitDeny => iam::Decision::ExplicitDeny,
                        Decision::ImplicitDeny => iam::Decision::ImplicitDeny,
                    };
                    assert_eq!(
                        fake, expected,
                        "{broken:?} {arn}: {} on {}",
                        request.action, request.resource
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 100, "only {compared} cases");
    }
}
