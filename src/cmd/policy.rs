//! `sm-ssh policy`: the IAM documents SSH needs, filled in, as JSON on stdout
//! ready for `aws iam put-role-policy --policy-document "$(sm-ssh policy …)"`.

use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cli::Global;
use crate::policy::attribution;
use crate::policy::documents::{self, Scope};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub document: Document,
}

#[derive(Debug, clap::Subcommand)]
pub enum Document {
    /// The SageMaker execution role's policy (SSHSageMakerServerPolicy).
    Server {
        /// The execution role's ARN.
        #[arg(long, value_name = "ARN")]
        role: String,
        /// Team-isolating variant: activations carry the role's KEY tag.
        #[arg(long, value_name = "KEY")]
        team_tag: Option<String>,
    },
    /// The connecting user's policy (SSHSageMakerClientPolicy).
    Client {
        /// The account ID (default: the caller's, from STS).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Team-isolating variant: users reach the instances of their KEY tag's team.
        #[arg(long, value_name = "KEY")]
        team_tag: Option<String>,
    },
    /// The execution role's trust policy (SageMaker and SSM).
    Trust,
    /// The connecting user's policy for Studio spaces (sagemaker:StartSession).
    Space {
        /// The account ID (default: the caller's, from STS).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Team-isolating variant: users reach the spaces of their KEY tag's team.
        #[arg(long, value_name = "KEY", conflicts_with = "profile_tag")]
        team_tag: Option<String>,
        /// For role principals (SSO, federation): their KEY tag holds their
        /// Studio user profile name, which must own the space.
        #[arg(long, value_name = "KEY")]
        profile_tag: Option<String>,
    },
    /// The connecting user's policy for HyperPod nodes (ssm:StartSession on
    /// `sagemaker-cluster:*` targets).
    Hyperpod {
        /// The account ID (default: the caller's, from STS).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Only the nodes of these clusters (the id ending the cluster ARN; repeat).
        #[arg(long = "cluster-id", value_name = "ID")]
        cluster_ids: Vec<String>,
        /// Team variant: users describe the clusters of their KEY tag's team.
        #[arg(long, value_name = "KEY")]
        team_tag: Option<String>,
    },
    /// The connecting user's policy for training jobs with remote debugging
    /// and endpoints with SSM access (their own Session Manager targets).
    Native {
        /// The account ID (default: the caller's, from STS).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Per user: only jobs and endpoints named `<IAM user name>-…`.
        #[arg(long, conflicts_with = "team_tag")]
        per_user: bool,
        /// Per team: only jobs and endpoints named `<the KEY tag's value>-…`.
        #[arg(long, value_name = "KEY")]
        team_tag: Option<String>,
    },
    /// KMS-encrypted Session Manager sessions: kms:GenerateDataKey for the
    /// users, kms:Decrypt for the instance's role, on the preferences' key.
    Kms {
        /// The KMS key ARN of the Session Manager preferences.
        #[arg(long, value_name = "ARN")]
        key: String,
    },
    /// Telling apart in CloudTrail the notebooks that share an execution role:
    /// the role's permission to assume itself (default), its trust policy
    /// with itself added, or the notebook lifecycle script that re-assumes it
    /// under the notebook's name.
    Attribution {
        /// The shared execution role's ARN.
        #[arg(long, value_name = "ARN")]
        role: String,
        /// Which part to print.
        #[arg(long, value_enum, default_value_t = AttributionPart::Permission)]
        print: AttributionPart,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttributionPart {
    /// The identity policy: sts:AssumeRole on the role's own ARN.
    Permission,
    /// The trust policy: SageMaker, SSM and the role itself.
    Trust,
    /// The on-start script of the notebook lifecycle configuration.
    LifecycleScript,
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let document = match args.document {
        Document::Trust => documents::trust(),
        Document::Kms { key } => documents::kms(&key),
        Document::Attribution { role, print } => {
            account_of_role(&role)?;
            match print {
                AttributionPart::Permission => attribution::permission(&role),
                AttributionPart::Trust => attribution::trust(&role),
                AttributionPart::LifecycleScript => {
                    print!("{}", attribution::lifecycle_script(&role));
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Document::Server { role, team_tag } => {
            let account = account_of_role(&role)?;
            let scope = Scope {
                partition: documents::partition_of(&role).to_owned(),
                account,
                team_tag: checked_tag(team_tag, "--team-tag")?,
            };
            documents::server(&scope, &role)
        }
        Document::Client { account, team_tag } => {
            documents::client(&user_scope(account, team_tag, global).await?)
        }
        Document::Hyperpod {
            account,
            cluster_ids,
            team_tag,
        } => {
            if let Some(bad) = cluster_ids.iter().find(|id| {
                id.len() != 12
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            }) {
                bail!("--cluster-id {bad:?} is not a cluster id (the 12 lowercase letters and digits ending the cluster ARN)");
            }
            crate::policy::hyperpod::client(
                &user_scope(account, team_tag, global).await?,
                &cluster_ids,
            )
        }
        Document::Native {
            account,
            per_user,
            team_tag,
        } => crate::policy::native::client(&user_scope(account, team_tag, global).await?, per_user),
        Document::Space {
            account,
            team_tag,
            profile_tag,
        } => {
            use crate::policy::space::{client, Owner};
            let profile_tag = checked_tag(profile_tag, "--profile-tag")?;
            let owner = profile_tag
                .as_deref()
                .map_or(Owner::Username, Owner::PrincipalTag);
            client(&user_scope(account, team_tag, global).await?, owner)
        }
    };
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(ExitCode::SUCCESS)
}

/// The scope of a user's policy: the account given or the caller's.
async fn user_scope(
    account: Option<String>,
    team_tag: Option<String>,
    global: &Global,
) -> anyhow::Result<Scope> {
    let (account, partition) = match account {
        Some(account) => {
            if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                bail!("--account {account:?} is not a 12-digit AWS account ID");
            }
            let partition = global
                .region()
                .map(documents::partition_of_region)
                .unwrap_or("aws");
            (account, partition.to_owned())
        }
        None => caller_account(global).await?,
    };
    Ok(Scope {
        partition,
        account,
        team_tag: checked_tag(team_tag, "--team-tag")?,
    })
}

/// `arn:<partition>:iam::<account>:role/<path/name>` → account.
fn account_of_role(arn: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, "iam", "", account, resource]
            if account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.starts_with("role/")
                && resource.len() > 5 =>
        {
            Ok((*account).to_owned())
        }
        _ => bail!(
            "--role {arn:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>); \
             find it with `aws iam get-role --role-name <name> --query Role.Arn`"
        ),
    }
}

/// Tag keys go into condition keys and policy variables: keep them plain.
fn checked_tag(tag: Option<String>, flag: &str) -> anyhow::Result<Option<String>> {
    if let Some(key) = &tag {
        let valid = !key.is_empty()
            && key.len() <= 128
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.:=+-@".contains(c));
        if !valid {
            bail!("{flag} {key:?} is not a usable tag key (letters, digits and _.:=+-@)");
        }
    }
    Ok(tag)
}

async fn caller_account(global: &Global) -> anyhow::Result<(String, String)> {
    let sdk = crate::aws::load(global).await;
    let identity = aws_sdk_sts::Client::new(&sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|error| {
            let error = crate::error::AwsError::from_sdk("sts:GetCallerIdentity", &error);
            anyhow::anyhow!(
                "finding your account ID failed ({}); pass --account <id> instead",
                error.summary()
            )
        })?;
    let arn = identity.arn.unwrap_or_default();
    let account = identity
        .account
        .context("STS GetCallerIdentity answered without an account; pass --account <id>")?;
    Ok((account, documents::partition_of(&arn).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(
            account_of_role("arn:aws:iam::123456789012:role/service-role/Exec").unwrap(),
            "123456789012"
        );
        assert!(account_of_role("arn:aws:iam::123:role/x").is_err());
        assert!(account_of_role("arn:aws:iam::123456789012:user/x").is_err());
        assert!(account_of_role("Exec").is_err());
    }

    #[test]
    fn tag_keys() {
        assert!(checked_tag(Some("team".into()), "--team-tag").is_ok());
        assert!(checked_tag(Some("a}b".into()), "--team-tag").is_err());
        assert!(checked_tag(Some(String::new()), "--team-tag").is_err());
    }
}
