//! `sm-ssh plugin`, also run when the binary is called `session-manager-plugin`:
//! the AWS CLI's plugin convention, so `aws ssm start-session` works without
//! Amazon's plugin.

use std::process::ExitCode;

use std::sync::{Arc, OnceLock};

use aws_config::{BehaviorVersion, Region};
use sm_ssh_proxy::{OpenSession, PortSession, SessionMode, StreamTarget, CLIENT_VERSION};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::shell;
pub use args::{parse, Invocation, Start, RESPONSE_VARIABLE};

mod args;
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
    let invocation = parse(&args.args, response_variable)
        .map_err(|e| Failure::new(exit::USAGE, format!("{e:#}")))?;
    let start = match invocation {
        Invocation::Version => {
            println!("{CLIENT_VERSION}");
            return Ok(ExitCode::SUCCESS);
        }
        Invocation::Installed => {
            println!(
                "sm-ssh is installed as session-manager-plugin. Use the AWS CLI to start a session \
                 (aws ssm start-session --target <id>)."
            );
            return Ok(ExitCode::SUCCESS);
        }
        Invocation::Start(start) => start,
    };
    let sdk = sdk_config(&start).await;
    let mut sessions = Sessions::new(ssm_client(&sdk, &start), &sdk);
    // The legacy four-argument call means an AWS CLI too old for KMS; the plugin
    // then refuses encryption (`streaming.go` `ProcessKMSEncryptionHandshakeAction`).
    if !start.legacy {
        sessions = sessions.with_kms(aws_sdk_kms::Client::new(&sdk));
    }
    let session_id = start.response.session_id.clone();
    tracing::debug!(%session_id, document = ?start.request.document_name, "plugin session");
    if let Some(target) = &start.request.target {
        sessions.set_target(&session_id, target);
    }
    let sessions = Arc::new(sessions);
    let target = StreamTarget {
        session_id: session_id.clone(),
        stream_url: start.response.stream_url.clone(),
        token: start.response.token_value.clone(),
    };
    let options = crate::session::data_channel_options()?;
    // The agent's handshake (or a shell's first output) says what the document is.
    let session = sm_ssh_proxy::open(target, sessions.clone(), options, None)
        .await
        .map_err(shell::session_failure)?;
    match session.mode() {
        SessionMode::Stream => {
            eprintln!("Starting session with SessionId: {session_id}");
            let end =
                sm_ssh_proxy::bridge_open(session, tokio::io::stdin(), tokio::io::stdout()).await?;
            if !end.output.trim().is_empty() {
                eprintln!("{}", end.output.trim());
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionMode::MuxPort | SessionMode::BasicPort => {
            forward_port(&start, session, sessions).await
        }
        SessionMode::Shell => {
            println!("\nStarting session with SessionId: {session_id}\n");
            let local = if crate::terminal::stdin_is_terminal() {
                shell::Local::Terminal
            } else {
                shell::Local::Plain
            };
            // The plugin exits 0 however the remote command ended.
            shell::run_open(session, sessions, local).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The SDK configuration the CLI asked for: its region and profile.
async fn sdk_config(start: &Start) -> aws_config::SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(start.region.clone()));
    if let Some(profile) = &start.profile {
        loader = loader.profile_name(profile);
    }
    loader.load().await
}

/// The SSM client for ResumeSession and TerminateSession, on the CLI's endpoint.
fn ssm_client(sdk: &aws_config::SdkConfig, start: &Start) -> aws_sdk_ssm::Client {
    let mut config = aws_sdk_ssm::config::Builder::from(sdk);
    if let Some(endpoint) = &start.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_ssm::Client::from_conf(config.build())
}

/// Port forwarding as the AWS CLI user expects it: listen on
/// `localPortNumber` (0: any) and carry every connection over the session.
async fn forward_port(
    start: &Start,
    session: OpenSession<Sessions>,
    sessions: Arc<Sessions>,
) -> anyhow::Result<ExitCode> {
    let port: u16 = match start.request.parameter("localPortNumber") {
        None | Some("") => 0,
        Some(text) => match text.parse() {
            Ok(port) => port,
            Err(_) => {
                session.abandon().await;
                return Err(Failure::new(
                    exit::USAGE,
                    format!("localPortNumber `{text}` is not a port number"),
                )
                .into());
            }
        },
    };
    let session_id = session.session_id().to_owned();
    let listener = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(e) => {
            session.abandon().await;
            return Err(Failure::new(
                exit::USAGE,
                format!("cannot listen on 127.0.0.1:{port}: {e}"),
            )
            .into());
        }
    };
    let options = crate::session::data_channel_options()?;
    let local = listener.local_addr()?;
    println!("Starting session with SessionId: {session_id}");
    println!("Port {} opened for sessionId {session_id}.", local.port());
    println!("Waiting for connections...");
    let session = match session.into_port()? {
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
    let mut connections = JoinSet::new();
    let serving = async {
        loop {
            let (socket, peer) = listener.accept().await?;
            let session = session.clone();
            let options = options.clone();
            connections.spawn(async move {
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
            // Forget the connections that are over.
            while connections.try_join_next().is_some() {}
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        result = serving => result,
        signal = tokio::signal::ctrl_c() => signal.map_err(Into::into),
    };
    // Every connection task holds the session: stop them all first, so the
    // session is ended once, by its owner (TerminateSession exactly once).
    connections.shutdown().await;
    let session = Arc::into_inner(session).expect("no connection task holds the session");
    session.close().await?;
    let _ = sessions;
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
    if args.get(1).is_some_and(|a| a == "plugin") {
        take_response_variable(&args[2..]);
    }
    args
}

/// The StartSession response read from the variable the CLI named, which is
/// then removed from the environment (as the plugin does in
/// `session.go` `ValidateInputAndStartSession`): the token must not reach
/// anything this process starts. Runs in `main` before any thread exists.
static TAKEN_RESPONSE: OnceLock<(String, String)> = OnceLock::new();

fn take_response_variable(args: &[std::ffi::OsString]) {
    let Some(name) = args
        .iter()
        .filter_map(|a| a.to_str())
        .find(|a| a.starts_with(RESPONSE_VARIABLE))
    else {
        return;
    };
    if let Ok(value) = std::env::var(name) {
        std::env::remove_var(name);
        let _ = TAKEN_RESPONSE.set((name.to_owned(), value));
    }
}

/// The value of the response variable `name`, taken out of the environment.
fn response_variable(name: &str) -> Option<String> {
    match TAKEN_RESPONSE.get() {
        Some((taken, value)) if taken == name => Some(value.clone()),
        _ => std::env::var(name).ok(),
    }
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
    fn the_response_variable_is_removed_once_read() {
        let name = "AWS_SSM_START_SESSION_RESPONSE_UNIT_TEST";
        std::env::set_var(name, RESPONSE);
        take_response_variable(&["x".into(), name.into()]);
        assert!(std::env::var(name).is_err(), "removed from the environment");
        assert_eq!(response_variable(name).as_deref(), Some(RESPONSE));
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
