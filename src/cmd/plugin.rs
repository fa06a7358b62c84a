//! `sm-ssh plugin`, also run when the binary is called `session-manager-plugin`:
//! the AWS CLI's plugin convention, so `aws ssm start-session` works without
//! Amazon's plugin.

use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{bail, Context};
use aws_config::{BehaviorVersion, Region};
use serde::Deserialize;
use sm_ssh_proxy::{connect_port, PortSession, SessionControl, StreamTarget, CLIENT_VERSION};
use tokio::net::TcpListener;

use super::proxy;
use crate::cli::Global;
use crate::error::{exit, Failure};
use crate::session::Sessions;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What the AWS CLI passes: `<response JSON or AWS_SSM_START_SESSION_RESPONSE… variable>
    /// <region> StartSession <profile> <request JSON> <endpoint>`, or `--version`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub async fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let invocation = parse(&args.args, |name| std::env::var(name).ok())
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let start = match invocation {
        Invocation::Version => {
            println!("{CLIENT_VERSION}");
            return Ok(ExitCode::SUCCESS);
        }
        Invocation::Installed => {
            println!(
                "sm-ssh is installed as session-manager-plugin. Use the AWS CLI to start a session \
                 (aws ssm start-session --target <id> --document-name AWS-StartSSHSession)."
            );
            return Ok(ExitCode::SUCCESS);
        }
        Invocation::Start(start) => start,
    };
    let sessions = Arc::new(Sessions::new(ssm_client(&start).await));
    let target = StreamTarget {
        session_id: start.response.session_id.clone(),
        stream_url: start.response.stream_url.clone(),
        token: start.response.token_value.clone(),
    };
    let document = start
        .request
        .document_name
        .as_deref()
        .unwrap_or("SSM-SessionManagerRunShell");
    match document {
        proxy::SSH_DOCUMENT => {
            eprintln!("Starting session with SessionId: {}", target.session_id);
            proxy::stdio_bridge(target, sessions, "").await?;
            Ok(ExitCode::SUCCESS)
        }
        "AWS-StartPortForwardingSession" | "AWS-StartPortForwardingSessionToRemoteHost" => {
            forward_port(&start, target, sessions).await
        }
        other => {
            // The session exists already: end it rather than leave it open.
            let _ = sessions.terminate(&target.session_id).await;
            Err(Failure::new(
                exit::USAGE,
                format!(
                    "sm-ssh's session-manager-plugin supports AWS-StartSSHSession, \
                     AWS-StartPortForwardingSession and AWS-StartPortForwardingSessionToRemoteHost, \
                     not {other} (shell sessions need Amazon's session-manager-plugin)"
                ),
            )
            .into())
        }
    }
}

/// The SSM client for ResumeSession and TerminateSession: the CLI's region,
/// profile and endpoint.
async fn ssm_client(start: &Start) -> aws_sdk_ssm::Client {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(start.region.clone()));
    if let Some(profile) = &start.profile {
        loader = loader.profile_name(profile);
    }
    let sdk = loader.load().await;
    let mut config = aws_sdk_ssm::config::Builder::from(&sdk);
    if let Some(endpoint) = &start.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_ssm::Client::from_conf(config.build())
}

/// Port forwarding as the AWS CLI user expects it: listen on
/// `localPortNumber` (0: any) and carry every connection over the session.
async fn forward_port(
    start: &Start,
    target: StreamTarget,
    sessions: Arc<Sessions>,
) -> anyhow::Result<ExitCode> {
    let port: u16 = match start.request.parameter("localPortNumber") {
        None | Some("") => 0,
        Some(text) => text.parse().map_err(|_| {
            Failure::new(
                exit::USAGE,
                format!("localPortNumber `{text}` is not a port number"),
            )
        })?,
    };
    let session_id = target.session_id.clone();
    let options = crate::session::data_channel_options()?;
    // The mode comes from the agent's handshake: smux, or basic for agents
    // 3.0.196.0 and older.
    let session = connect_port(target, sessions.clone(), options.clone()).await?;
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            crate::port::close_all([session]).await;
            return Err(Failure::new(
                exit::USAGE,
                format!("cannot listen on 127.0.0.1:{port}: {e}"),
            )
            .into());
        }
    };
    let local = listener.local_addr()?;
    println!("Starting session with SessionId: {session_id}");
    println!("Port {} opened for sessionId {session_id}.", local.port());
    println!("Waiting for connections...");
    let session = match session {
        PortSession::Mux(session) => session,
        PortSession::Basic(basic) => {
            let interrupted = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let end = basic.serve(&listener, None, interrupted).await?;
            if !end.output.is_empty() {
                eprintln!("{}", end.output);
            }
            println!("\nExiting session with sessionId: {session_id}.");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let session = Arc::new(session);
    let serving = async {
        loop {
            let (socket, peer) = listener.accept().await?;
            let session = session.clone();
            let options = options.clone();
            tokio::spawn(async move {
                let result = async {
                    let stream = session.open_stream().await?;
                    crate::port::carry(socket, stream, &options).await?;
                    anyhow::Ok(())
                }
                .await;
                if let Err(error) = result {
                    eprintln!("sm-ssh: connection from {peer}: {error:#}");
                }
            });
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        result = serving => result,
        signal = tokio::signal::ctrl_c() => signal.map_err(Into::into),
    };
    if let Some(session) = Arc::into_inner(session) {
        session.close().await?;
    } else {
        sessions.terminate(&session_id).await?;
    }
    outcome?;
    println!("\nExiting session with sessionId: {session_id}.");
    Ok(ExitCode::SUCCESS)
}

/// The name the AWS CLI runs.
const PLUGIN_NAME: &str = "session-manager-plugin";

/// The command line to parse: when this binary runs as
/// `session-manager-plugin`, its arguments become `sm-ssh plugin -- …`.
pub fn argv() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let invoked_as = args
        .first()
        .map(std::path::Path::new)
        .and_then(|path| path.file_name())
        .map(|name| name.to_string_lossy().into_owned());
    if invoked_as.as_deref() == Some(PLUGIN_NAME) {
        let rest = args.split_off(1);
        args = ["sm-ssh", "plugin", "--"].map(Into::into).into();
        args.extend(rest);
    }
    args
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
        assert_eq!(
            inline.request.document_name.as_deref(),
            Some("AWS-StartPortForwardingSession")
        );
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
        assert_eq!(legacy.request.document_name, None);
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
