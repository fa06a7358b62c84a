//! Loading AWS configuration: the standard credential chain, with `--profile`
//! and `--region` taking precedence over the environment.

use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::cli::Global;

/// The SDK configuration for this invocation. Endpoints come from the usual
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, which is how
/// tests and the playground point sm-ssh at the fake.
pub async fn load(global: &Global) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &global.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = global.region() {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let sdk = loader.load().await;
    crate::error::remember_endpoints(&sdk);
    sdk
}
