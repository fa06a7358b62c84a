//! Check 3: the SSM advanced-instances tier, without which Session Manager
//! refuses sessions to managed (`mi-…`) instances; `--fix` turns it on.

use aws_config::{Region, SdkConfig};

use super::identity::Me;
use super::report::Check;
use super::{Failure, Options};

const SETTING: &str = "/ssm/managed-instance/activation-tier";

/// What the advanced tier costs, shown before `--fix` changes it.
pub const COST_NOTE: &str = "The advanced-instances tier is billed per registered \
on-premises/managed instance: USD 0.00695 per instance-hour (about USD 5 per instance \
per month) while each SageMaker job, notebook or app with SSH is registered. Stale \
registrations keep costing until deregistered (see the managed-instances check).";

fn fix_command(me: &Me, region: &str) -> String {
    let partition = crate::policy::documents::partition_of(&me.arn);
    format!(
        "sm-ssh doctor --fix --region {region}\n\
         or: aws ssm update-service-setting --region {region} \
         --setting-id arn:{partition}:ssm:{region}:{}:servicesetting{SETTING} --setting-value advanced",
        me.account
    )
}

pub async fn check(sdk: &SdkConfig, me: &Me, region: &str, options: &Options) -> Check {
    let config = aws_sdk_ssm::config::Builder::from(sdk)
        .region(Region::new(region.to_owned()))
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(config);
    let value = match read(&ssm).await {
        Ok(value) => value,
        Err(failure) => return failure.skip("ssm-tier").in_region(region),
    };
    if value.eq_ignore_ascii_case("advanced") {
        return Check::pass("ssm-tier", "advanced-instances tier is on").in_region(region);
    }
    let missing = format!("the instance tier is {value}: Session Manager refuses sessions to SageMaker's managed instances");
    if !options.fix {
        return Check::fail("ssm-tier", missing, fix_command(me, region)).in_region(region);
    }
    eprintln!("{COST_NOTE}");
    if !confirmed(region, options.yes) {
        return Check::fail(
            "ssm-tier",
            format!("{missing}; not changed (no confirmation)"),
            format!(
                "confirm on a terminal, or add --yes\n{}",
                fix_command(me, region)
            ),
        )
        .in_region(region);
    }
    let update = ssm
        .update_service_setting()
        .setting_id(SETTING)
        .setting_value("advanced")
        .send()
        .await
        .map_err(|e| Failure::from_sdk("ssm:UpdateServiceSetting", e));
    if let Err(failure) = update {
        let reason = match failure {
            Failure::Denied(permission) => format!("not allowed to call {permission}"),
            Failure::NotFound(message) | Failure::Other(message) => message,
        };
        return Check::fail(
            "ssm-tier",
            format!("{missing}; turning on the advanced tier failed: {reason}"),
            format!("ask an administrator to run:\n{}", fix_command(me, region)),
        )
        .in_region(region);
    }
    match read(&ssm).await {
        Ok(value) if value.eq_ignore_ascii_case("advanced") => {
            Check::pass("ssm-tier", "advanced-instances tier turned on by --fix").in_region(region)
        }
        Ok(value) => Check::fail(
            "ssm-tier",
            format!("UpdateServiceSetting succeeded but the tier still reads {value}"),
            fix_command(me, region),
        )
        .in_region(region),
        Err(failure) => failure.skip("ssm-tier").in_region(region),
    }
}

async fn read(ssm: &aws_sdk_ssm::Client) -> Result<String, Failure> {
    let output = ssm
        .get_service_setting()
        .setting_id(SETTING)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("ssm:GetServiceSetting", e))?;
    output
        .service_setting
        .and_then(|s| s.setting_value)
        .ok_or_else(|| Failure::Other("GetServiceSetting answered without a value".into()))
}

/// `--yes`, or a "y" typed on a terminal.
fn confirmed(region: &str, yes: bool) -> bool {
    crate::prompt::confirm(
        &format!("Turn on the advanced-instances tier in {region}?"),
        yes,
    )
}
