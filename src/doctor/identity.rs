//! Checks 1 and 2: whose credentials these are, and which region is used and
//! where that came from.

use std::path::PathBuf;

use aws_config::SdkConfig;
use aws_sdk_sts::config::ProvideCredentials;

use super::report::Check;
use super::Options;

/// The caller, as STS reports it.
#[derive(Debug, Clone)]
pub struct Me {
    pub account: String,
    pub arn: String,
    /// `aws:userid`: the `SSHOwner` value of instances this caller owns.
    pub user_id: String,
}

pub struct Caller {
    pub check: Check,
    pub identity: Option<Me>,
}

const LOGIN_FIX: &str = "configure credentials: `aws configure` (access keys), \
`aws sso login --profile <profile>` (IAM Identity Center), or pass --profile <profile>";

pub async fn caller(sdk: &SdkConfig) -> Caller {
    let no_credentials = |detail: String| Caller {
        check: Check::fail("identity", detail, LOGIN_FIX),
        identity: None,
    };
    let Some(provider) = sdk.credentials_provider() else {
        return no_credentials("no AWS credentials are configured".into());
    };
    if let Err(error) = provider.provide_credentials().await {
        // One line per check: the chain's report spans several.
        let reason = crate::error::chain_line(&error);
        return no_credentials(format!("no usable AWS credentials: {reason}"));
    }
    let sts = aws_sdk_sts::Client::new(sdk);
    let output = match sts.get_caller_identity().send().await {
        Ok(output) => output,
        Err(error) => {
            let error = crate::error::AwsError::from_sdk("sts:GetCallerIdentity", &error);
            return no_credentials(format!(
                "STS GetCallerIdentity refused the credentials: {}",
                error.summary()
            ));
        }
    };
    let me = Me {
        account: output.account.unwrap_or_default(),
        arn: output.arn.unwrap_or_default(),
        user_id: output.user_id.unwrap_or_default(),
    };
    Caller {
        check: Check::pass(
            "identity",
            format!(
                "{} in account {}; instances you own carry SSHOwner={}",
                me.arn, me.account, me.user_id
            ),
        ),
        identity: Some(me),
    }
}

/// Check 2: the region, its source, and environment settings that silently
/// override the chosen profile.
pub fn region(options: &Options, sdk: &SdkConfig) -> Check {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let profile = options.profile.clone();
    let profile_name = profile.clone().unwrap_or_else(|| "default".into());
    let profile_region = profile_setting(&profile_name, "region");
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        return Check::fail(
            "region",
            "no region is configured",
            format!(
                "pass --region <region>, or `aws configure set region <region> --profile {profile_name}`"
            ),
        );
    };
    let source = if !options.regions.is_empty() {
        "--region".to_string()
    } else if env("AWS_REGION").is_some() {
        "AWS_REGION".to_string()
    } else if env("AWS_DEFAULT_REGION").is_some() {
        "AWS_DEFAULT_REGION".to_string()
    } else if profile_region.is_some() {
        format!("profile {profile_name}")
    } else {
        "the SDK's default chain".to_string()
    };
    let mut warnings = Vec::new();
    let mut fixes = Vec::new();
    if options.regions.is_empty() {
        if let (Some(from_env), Some(from_profile)) = (
            env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            &profile_region,
        ) {
            if &from_env != from_profile && profile.is_some() {
                warnings.push(format!(
                    "the environment's region {from_env} overrides profile {profile_name}'s region {from_profile}"
                ));
                fixes.push(format!(
                    "unset AWS_REGION AWS_DEFAULT_REGION, or pass --region {from_profile}"
                ));
            }
        }
    }
    if profile.is_some() && env("AWS_ACCESS_KEY_ID").is_some() {
        warnings.push(format!(
            "AWS_ACCESS_KEY_ID is set, so the environment's credentials are used, not profile {profile_name}'s"
        ));
        fixes.push("unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN".into());
    }
    let detail = format!("{region} (from {source})");
    if warnings.is_empty() {
        Check::pass("region", detail)
    } else {
        Check::warn(
            "region",
            format!("{detail}; {}", warnings.join("; ")),
            fixes.join("\n"),
        )
    }
}

/// A setting of a profile in the shared config file (`[default]` or
/// `[profile NAME]`), read the way the AWS CLI writes it.
fn profile_setting(profile: &str, key: &str) -> Option<String> {
    let path = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|home| home.join(".aws/config")))?;
    let text = std::fs::read_to_string(path).ok()?;
    setting_in(&text, profile, key)
}

fn setting_in(text: &str, profile: &str, key: &str) -> Option<String> {
    let wanted = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.split_whitespace().collect::<Vec<_>>().join(" ");
            inside = section == wanted || (profile == "default" && section == "profile default");
        } else if inside {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_owned());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_profile_settings() {
        let text = "[default]\nregion = us-east-1\n\n[profile  dev]\noutput=json\nregion=eu-west-1\n[sso-session x]\nregion=ap-south-1\n";
        assert_eq!(
            setting_in(text, "default", "region").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            setting_in(text, "dev", "region").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(setting_in(text, "x", "region"), None);
        assert_eq!(setting_in(text, "missing", "region"), None);
    }
}
