//! `sm-ssh plugin`, also run when the binary is called `session-manager-plugin`:
//! the AWS CLI's plugin convention, so `aws ssm start-session` works without
//! Amazon's plugin.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::cli::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What the AWS CLI passes: `<response JSON or AWS_SSM_START_SESSION_RESPONSE… variable>
    /// <region> StartSession <profile> <request JSON> <endpoint>`, or `--version`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub async fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`sm-ssh plugin` is not implemented yet")
}

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
    pub target: String,
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
}

/// The prefix of the environment variable that may carry the response.
const RESPONSE_VARIABLE: &str = "AWS_SSM_START_SESSION_RESPONSE";

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
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = r#"{"SessionId": "alice-0123", "TokenValue": "tok", "StreamUrl": "wss://h/v1/data-channel/alice-0123"}"#;
    const REQUEST: &str = r#"{"Target": "mi-0123", "DocumentName": "AWS-StartPortForwardingSession", "Parameters": {"portNumber": ["80"], "localPortNumber": ["0"]}}"#;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn start(invocation: Invocation) -> Start {
        match invocation {
            Invocation::Start(start) => *start,
            _ => panic!("not a start"),
        }
    }

    #[test]
    fn the_cli_conventions_parse() {
        assert!(matches!(
            parse(&args(&["--version"]), |_| None).unwrap(),
            Invocation::Version
        ));
        assert!(matches!(
            parse(&[], |_| None).unwrap(),
            Invocation::Installed
        ));
        let inline = start(
            parse(
                &args(&[
                    RESPONSE,
                    "eu-west-1",
                    "StartSession",
                    "",
                    REQUEST,
                    "https://ssm.eu-west-1.amazonaws.com",
                ]),
                |_| None,
            )
            .unwrap(),
        );
        assert_eq!(inline.response.session_id, "alice-0123");
        assert_eq!(inline.region, "eu-west-1");
        assert_eq!(inline.profile, None);
        assert_eq!(inline.request.target, "mi-0123");
        assert_eq!(inline.request.parameter("portNumber"), Some("80"));
        assert_eq!(
            inline.endpoint.as_deref(),
            Some("https://ssm.eu-west-1.amazonaws.com")
        );
        let by_name = start(
            parse(
                &args(&[
                    "AWS_SSM_START_SESSION_RESPONSE",
                    "us-east-1",
                    "StartSession",
                    "dev",
                    REQUEST,
                    "http://127.0.0.1:1",
                ]),
                |name| (name == "AWS_SSM_START_SESSION_RESPONSE").then(|| RESPONSE.to_owned()),
            )
            .unwrap(),
        );
        assert_eq!(by_name.response.token_value, "tok");
        assert_eq!(by_name.profile.as_deref(), Some("dev"));
        // The legacy four-argument form.
        let legacy = start(
            parse(
                &args(&[RESPONSE, "us-east-1", "StartSession", "dev"]),
                |_| None,
            )
            .unwrap(),
        );
        assert_eq!(legacy.request.target, "");
    }

    #[test]
    fn bad_invocations_are_explained() {
        let error = |words: &[&str]| parse(&args(words), |_| None).err().unwrap().to_string();
        assert!(error(&["x"]).contains("AWS CLI"));
        assert!(error(&[RESPONSE, "r", "ResumeSession", ""]).contains("only StartSession"));
        assert!(
            error(&["AWS_SSM_START_SESSION_RESPONSE_X", "r", "StartSession", ""])
                .contains("not set")
        );
        assert!(error(&["{", "r", "StartSession", ""]).contains("SessionId, TokenValue"));
    }
}
