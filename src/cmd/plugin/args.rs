//! The AWS CLI's plugin-mode arguments, parsed without I/O: kept apart from
//! `plugin.rs` so the fuzz targets can reach it (`src/lib.rs` includes this
//! file; the binary uses it through `cmd::plugin`).

use anyhow::{bail, Context};
use serde::Deserialize;

/// The StartSession response the CLI hands over.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    pub session_id: String,
    pub token_value: String,
    pub stream_url: String,
}

/// The StartSession request the CLI made (the parts we act on).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    /// The StartSession target: the `aws:ssm:TargetId` of a KMS data key.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub document_name: Option<String>,
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, Vec<String>>,
}

impl Request {
    /// The first value of a document parameter.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    }
}

/// A parsed invocation.
pub enum Invocation {
    Version,
    /// No arguments: what the real plugin answers to an installation check.
    Installed,
    Start(Box<Start>),
}

pub struct Start {
    pub response: Response,
    pub region: String,
    pub profile: Option<String>,
    pub request: Request,
    pub endpoint: Option<String>,
    /// The four-argument form of AWS CLIs too old for KMS encryption.
    pub legacy: bool,
}

/// The prefix of the environment variable that may carry the response.
pub const RESPONSE_VARIABLE: &str = "AWS_SSM_START_SESSION_RESPONSE";

/// Parses the CLI's arguments. `env` looks up (and the caller then removes)
/// the variable named instead of the response JSON.
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Invocation> {
    match args {
        [] => return Ok(Invocation::Installed),
        [flag] if flag == "--version" || flag == "version" => return Ok(Invocation::Version),
        _ => {}
    }
    let (response, region, operation, profile, request, endpoint) = match args {
        [a, b, c] => (a, b, c, None, None, None),
        [a, b, c, d] => (a, b, c, Some(d), None, None),
        [a, b, c, d, e] => (a, b, c, Some(d), Some(e), None),
        [a, b, c, d, e, f, ..] => (a, b, c, Some(d), Some(e), Some(f)),
        _ => bail!(
            "unexpected arguments; session-manager-plugin is meant to be run by the AWS CLI: \
             `aws ssm start-session --target <id> …`"
        ),
    };
    if operation != "StartSession" {
        bail!("unsupported operation `{operation}`: only StartSession is supported");
    }
    let response_json = if response.starts_with(RESPONSE_VARIABLE) {
        env(response).with_context(|| {
            format!("the environment variable {response} that should hold the StartSession response is not set")
        })?
    } else {
        response.clone()
    };
    let response: Response = serde_json::from_str(&response_json).context(
        "the StartSession response is not JSON with SessionId, TokenValue and StreamUrl",
    )?;
    let request: Request = match request {
        Some(json) if !json.trim().is_empty() => serde_json::from_str(json)
            .context("the StartSession request parameters are not valid JSON")?,
        _ => Request::default(),
    };
    Ok(Invocation::Start(Box::new(Start {
        response,
        region: region.clone(),
        profile: profile.filter(|p| !p.is_empty()).cloned(),
        request,
        endpoint: endpoint.filter(|e| !e.is_empty()).cloned(),
        legacy: args.len() == 4,
    })))
}
