//! `<endpoint>.inference.sagemaker`: the helper's managed instance when it
//! registered one (the SSM path, through Logs Insights), else the endpoint's
//! own Session Manager targets
//! `sagemaker-endpoint:<endpoint>_<variant>_<instance-id>[_<container>]` on
//! variants with `EnableSSMAccess`. No SageMaker API lists an endpoint's
//! instances; its log group `/aws/sagemaker/Endpoints/<name>` does, one
//! stream `<variant>/<instance-id>` per instance, `…/<container>` per
//! container of a multi-container variant, and `…/ssm` once the SSM agent
//! runs there (DescribeLogStreams). `--node` picks an instance, in order of
//! variant and id; `--container` a container (default: the first).

use aws_config::SdkConfig;
use aws_sdk_sagemaker::error::ProvideErrorMetadata;

use super::sagemaker_native::{self as native, NativeInfo};
use super::{Path, Reach};
use crate::error::{exit, AwsError, Failure};
use crate::resolve::{self, ResolveOptions};
use crate::target::Target;

/// What DescribeEndpoint and DescribeEndpointConfig say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub status: String,
    /// The variants and whether each has `EnableSSMAccess`.
    pub variants: Vec<(String, bool)>,
}

impl Endpoint {
    fn ssm_variants(&self) -> Vec<&str> {
        self.variants
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Why no session can start on the endpoint, whatever its instances.
    pub fn blocker(&self) -> Option<String> {
        let name = &self.name;
        if !matches!(self.status.as_str(), "InService" | "Updating") {
            return Some(format!("endpoint {name} is {}, not InService", self.status));
        }
        if self.ssm_variants().is_empty() {
            return Some(format!(
                "SSM access is off on every production variant of endpoint {name}: update the \
                 endpoint with an endpoint configuration whose variants set EnableSSMAccess=true \
                 (the account must be allow-listed for it)"
            ));
        }
        None
    }
}

/// One instance of an SSM-enabled variant, as the log streams show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    pub variant: String,
    pub instance_id: String,
    /// Containers of a multi-container variant, by name; empty for one.
    pub containers: Vec<String>,
    /// The SSM agent's stream exists: the instance takes sessions.
    pub ssm: bool,
}

impl Instance {
    /// The Session Manager target of `container` (none for one container).
    pub fn target(&self, endpoint: &str, container: Option<&str>) -> String {
        let base = format!(
            "sagemaker-endpoint:{endpoint}_{}_{}",
            self.variant, self.instance_id
        );
        match container {
            Some(container) => format!("{base}_{container}"),
            None => base,
        }
    }

    /// Every target of the instance: one per container.
    pub fn targets(&self, endpoint: &str) -> Vec<(Option<String>, String)> {
        if self.containers.is_empty() {
            vec![(None, self.target(endpoint, None))]
        } else {
            self.containers
                .iter()
                .map(|c| (Some(c.clone()), self.target(endpoint, Some(c))))
                .collect()
        }
    }
}

/// The log group SageMaker writes an endpoint's logs to.
pub fn log_group(endpoint: &str) -> String {
    format!("/aws/sagemaker/Endpoints/{endpoint}")
}

/// DescribeEndpoint and DescribeEndpointConfig; `Ok(None)` when there is no
/// such endpoint.
pub async fn describe(
    client: &aws_sdk_sagemaker::Client,
    name: &str,
) -> Result<Option<Endpoint>, AwsError> {
    let endpoint = match client.describe_endpoint().endpoint_name(name).send().await {
        Ok(endpoint) => endpoint,
        Err(error)
            if error.code() == Some("ValidationException")
                && error
                    .message()
                    .is_some_and(|m| m.contains("Could not find")) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(AwsError::from_sdk("sagemaker:DescribeEndpoint", &error)),
    };
    let config = client
        .describe_endpoint_config()
        .endpoint_config_name(endpoint.endpoint_config_name().unwrap_or_default())
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sagemaker:DescribeEndpointConfig", &e))?;
    Ok(Some(Endpoint {
        name: endpoint.endpoint_name().unwrap_or(name).to_string(),
        status: endpoint
            .endpoint_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        variants: config
            .production_variants()
            .iter()
            .map(|v| {
                (
                    v.variant_name().unwrap_or_default().to_string(),
                    v.enable_ssm_access().unwrap_or(false),
                )
            })
            .collect(),
    }))
}

/// The instances of the endpoint's SSM-enabled variants, from its log
/// streams, in order of variant and instance id.
pub async fn instances(
    logs: &aws_sdk_cloudwatchlogs::Client,
    endpoint: &Endpoint,
) -> Result<Vec<Instance>, Failure> {
    let group = log_group(&endpoint.name);
    let mut names = Vec::new();
    let mut pages = logs
        .describe_log_streams()
        .log_group_name(&group)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            Err(error) if error.code() == Some("ResourceNotFoundException") => {
                return Err(native::blocked(format!(
                    "endpoint {}'s log group {group} does not exist, so its instances are unknown",
                    endpoint.name
                )))
            }
            Err(error) => {
                let error = AwsError::from_sdk("logs:DescribeLogStreams", &error);
                return Err(Failure::new(error.exit_code(), error.message(None)));
            }
        };
        names.extend(
            page.log_streams()
                .iter()
                .filter_map(|s| s.log_stream_name().map(str::to_string)),
        );
    }
    Ok(from_streams(&names, &endpoint.ssm_variants()))
}

/// Instances of `variants` from stream names, sorted.
fn from_streams(names: &[String], variants: &[&str]) -> Vec<Instance> {
    let mut found: Vec<Instance> = Vec::new();
    for name in names {
        let parts: Vec<&str> = name.split('/').collect();
        let (variant, id, rest) = match parts.as_slice() {
            [variant, id] => (*variant, *id, None),
            [variant, id, rest] => (*variant, *id, Some(*rest)),
            _ => continue,
        };
        if !variants.contains(&variant) || !crate::target::is_instance_id(id) {
            continue;
        }
        let index = match found
            .iter()
            .position(|i| i.variant == variant && i.instance_id == id)
        {
            Some(index) => index,
            None => {
                found.push(Instance {
                    variant: variant.into(),
                    instance_id: id.into(),
                    ..Instance::default()
                });
                found.len() - 1
            }
        };
        match rest {
            Some("ssm") => found[index].ssm = true,
            Some(container) => found[index].containers.push(container.into()),
            None => {}
        }
    }
    for instance in &mut found {
        instance.containers.sort();
    }
    found.sort_by(|a, b| (&a.variant, &a.instance_id).cmp(&(&b.variant, &b.instance_id)));
    found
}

/// Given the outcome of the helper's lookup (made with
/// [`native::helper_options`], by `Path::resolve` or the warm-path cache).
pub async fn after_helper(
    sdk: &SdkConfig,
    target: &Target,
    opts: &ResolveOptions,
    helper: Result<resolve::Resolved, resolve::ResolveError>,
) -> anyhow::Result<Reach> {
    let Target::SageMaker(named) = target else {
        unreachable!("select() sends only endpoints here");
    };
    let helper = match native::helper_outcome(target, helper, "looking for SSM access")? {
        native::Helper::Found(reach) => return Ok(*reach),
        native::Helper::Fallback(why) => why,
    };
    let name = target.to_string();
    let instances = match ssm_instances(sdk, &named.name).await {
        Ok(Some(found)) => found,
        // No such endpoint either: the helper's answer is all there is to say.
        Ok(None) if opts.wait.is_none() => {
            return Err(anyhow::Error::new(helper).context(format!(
                "there is no endpoint {} in {} (check the name and --region)",
                named.name,
                resolve::region_name(sdk)
            )))
        }
        Ok(None) => return super::ssm::resolve(sdk, target, opts).await,
        // --wait keeps its meaning: wait for the helper's instance.
        Err(why) if opts.wait.is_some() => {
            tracing::info!(why = %why.message, "SSM access cannot be used; waiting for the helper");
            return super::ssm::resolve(sdk, target, opts).await;
        }
        Err(why) => return Err(native::neither(&name, &helper, why)),
    };
    choose(&name, &instances.0, &instances.1, opts)
}

/// The endpoint and its instances that take sessions (None: no such
/// endpoint), or why there are none.
async fn ssm_instances(
    sdk: &SdkConfig,
    name: &str,
) -> Result<Option<(Endpoint, Vec<Instance>)>, Failure> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let endpoint = match describe(&client, name).await {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => return Ok(None),
        Err(error) => return Err(Failure::new(error.exit_code(), error.message(None))),
    };
    if let Some(blocker) = endpoint.blocker() {
        return Err(native::blocked(blocker));
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let instances: Vec<Instance> = instances(&logs, &endpoint)
        .await?
        .into_iter()
        .filter(|i| i.ssm)
        .collect();
    if instances.is_empty() {
        return Err(native::blocked(format!(
            "no instance of endpoint {name} runs the SSM agent yet (no <variant>/<instance>/ssm \
             stream in {})",
            log_group(name)
        )));
    }
    Ok(Some((endpoint, instances)))
}

/// The target `--node` and `--container` pick.
fn choose(
    name: &str,
    endpoint: &Endpoint,
    instances: &[Instance],
    opts: &ResolveOptions,
) -> anyhow::Result<Reach> {
    let node = opts.node.unwrap_or(1);
    let listed = || {
        instances
            .iter()
            .enumerate()
            .map(|(i, instance)| {
                format!(
                    "{} = {} ({})",
                    i + 1,
                    instance.instance_id,
                    instance.variant
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(instance) = instances.get(node.wrapping_sub(1)) else {
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "endpoint {} has {} instance(s) with SSM access, so there is no node {node}: {}",
                endpoint.name,
                instances.len(),
                listed()
            ),
        )
        .into());
    };
    let container = match (&opts.container, instance.containers.first()) {
        (None, first) => first.cloned(),
        (Some(wanted), Some(_)) if instance.containers.contains(wanted) => Some(wanted.clone()),
        (Some(wanted), Some(_)) => {
            return Err(Failure::new(
                exit::NOT_FOUND,
                format!(
                    "{} has no container {wanted} on {}: its containers are {}",
                    endpoint.name,
                    instance.instance_id,
                    instance.containers.join(", ")
                ),
            )
            .into())
        }
        (Some(wanted), None) => {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "variant {} of {} runs one container: leave out --container {wanted}",
                    instance.variant, endpoint.name
                ),
            )
            .into())
        }
    };
    let session_target = instance.target(&endpoint.name, container.as_deref());
    tracing::info!(%session_target, "{name}: SSM access (SageMaker's own Session Manager target)");
    Ok(native::reach(
        Path::Endpoint,
        name,
        session_target,
        NativeInfo {
            kind: "inference",
            resource: endpoint.name.clone(),
            status: endpoint.status.clone(),
            node: instance.instance_id.clone(),
            container,
        },
    ))
}

/// The endpoints of the region with SSM access on, and their instances.
pub async fn accessible(sdk: &SdkConfig) -> Result<Vec<(Endpoint, Vec<Instance>)>, anyhow::Error> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(sdk);
    let pages = client
        .list_endpoints()
        .max_results(100)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| AwsError::from_sdk("sagemaker:ListEndpoints", &e))?;
    let names: Vec<String> = pages
        .iter()
        .flat_map(|page| page.endpoints())
        .filter_map(|e| e.endpoint_name().map(str::to_string))
        .collect();
    let mut found = Vec::new();
    for name in names {
        let Some(endpoint) = describe(&client, &name).await? else {
            continue;
        };
        if endpoint.blocker().is_some() {
            continue;
        }
        let instances = instances(&logs, &endpoint).await.unwrap_or_default();
        found.push((endpoint, instances.into_iter().filter(|i| i.ssm).collect()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_and_containers_come_from_stream_names() {
        let names: Vec<String> = [
            "AllTraffic/i-0bbbbbbbbbbbbbbbb",
            "AllTraffic/i-0bbbbbbbbbbbbbbbb/ssm",
            "AllTraffic/i-0aaaaaaaaaaaaaaaa",
            "AllTraffic/i-0aaaaaaaaaaaaaaaa/container_1",
            "AllTraffic/i-0aaaaaaaaaaaaaaaa/container_0",
            "AllTraffic/i-0aaaaaaaaaaaaaaaa/ssm",
            "Shadow/i-0cccccccccccccccc/ssm",
            "data-log",
        ]
        .map(String::from)
        .into();
        let found = from_streams(&names, &["AllTraffic"]);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].instance_id, "i-0aaaaaaaaaaaaaaaa");
        assert_eq!(found[0].containers, ["container_0", "container_1"]);
        assert!(found[0].ssm && found[1].ssm);
        assert_eq!(
            found[0].target("ep", Some("container_1")),
            "sagemaker-endpoint:ep_AllTraffic_i-0aaaaaaaaaaaaaaaa_container_1"
        );
        assert_eq!(
            found[1].targets("ep"),
            vec![(
                None,
                "sagemaker-endpoint:ep_AllTraffic_i-0bbbbbbbbbbbbbbbb".to_string()
            )]
        );
    }
}
