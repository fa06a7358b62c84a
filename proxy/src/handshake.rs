//! The client side of the session handshake (protocol §4.3, §6.1).

use serde_json::Value;

use crate::payload::{
    action_status, action_type, HandshakeRequest, HandshakeResponse, ProcessedClientAction,
    SessionTypeParameters,
};

/// The ClientVersion we report. Above 1.1.70 the agent runs smux for
/// `LocalPortForwarding`; above 1.2.331.0 it turns its smux keep-alive off (so the
/// idle timeout works). 1.2.707.0 is the last plugin release whose websocket
/// upgrade was unsigned, which is the behaviour we implement.
pub const CLIENT_VERSION: &str = "1.2.707.0";

/// Agents newer than this accept smux for port forwarding.
const MUX_AGENT_VERSION: &str = "3.0.196.0";
/// Agents run smux only for clients reporting at least this version.
const MUX_CLIENT_VERSION: &str = "1.1.70";
/// Agents up to this version may run smux with its keep-alive on (the plugin's
/// `TCPMultiplexingWithSmuxKeepAliveDisabledAfterThisAgentVersion`).
const KEEPALIVE_AGENT_VERSION: &str = "3.1.1511.0";

/// Whether the client must send smux NOPs on a mux session with this agent:
/// agents 3.0.222.0 to 3.1.1445 close an smux session after 30 s without a
/// frame. The plugin's rule (`muxportforwarding.go`, `initialize`): keep-alive
/// unless the agent is newer than 3.1.1511.0 (an unparsable version keeps it).
pub fn agent_needs_keepalive(agent_version: &str) -> bool {
    !version_greater(agent_version, KEEPALIVE_AGENT_VERSION)
}

/// How the byte stream of the session is to be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionMode {
    /// Raw bytes to one fixed port (AWS-StartSSHSession: no `type` property).
    Stream,
    /// `LocalPortForwarding` with an agent too old for smux: one connection at a
    /// time, `DisconnectToPort` between connections.
    BasicPort,
    /// `LocalPortForwarding` over an smux v1 session.
    MuxPort,
}

/// What answering a HandshakeRequest produced.
#[derive(Clone, Debug, PartialEq)]
pub struct HandshakeOutcome {
    /// The HandshakeResponse payload to send.
    pub response: Vec<u8>,
    /// The agreed mode, or why the session cannot go on.
    pub result: Result<SessionMode, String>,
    pub agent_version: String,
}

/// Answers a HandshakeRequest: `SessionType` `Port` succeeds, every other action
/// is reported Unsupported (status 3) and makes the outcome an error.
pub fn answer(request: &HandshakeRequest, client_version: &str) -> HandshakeOutcome {
    let mut processed = Vec::new();
    let mut errors = Vec::new();
    let mut mode = None;
    for action in &request.requested_client_actions {
        let verdict = if action.action_type == action_type::SESSION_TYPE {
            session_type(
                &action.action_parameters,
                &request.agent_version,
                client_version,
            )
        } else if action.action_type == action_type::KMS_ENCRYPTION {
            Err("KMS encryption is not supported for port and SSH sessions".to_owned())
        } else {
            Err(format!(
                "handshake action {:?} is not supported",
                action.action_type
            ))
        };
        let (status, error) = match verdict {
            Ok(m) => {
                mode = Some(m);
                (action_status::SUCCESS, String::new())
            }
            Err(e) => {
                errors.push(e.clone());
                (action_status::UNSUPPORTED, e)
            }
        };
        processed.push(ProcessedClientAction {
            action_type: action.action_type.clone(),
            action_status: status,
            action_result: Value::Null,
            error,
        });
    }
    let result = match (mode, errors.is_empty()) {
        (Some(mode), true) => Ok(mode),
        (None, true) => Err("the agent requested no session type".to_owned()),
        (_, false) => Err(errors.join("; ")),
    };
    let response = HandshakeResponse {
        client_version: client_version.to_owned(),
        processed_client_actions: processed,
        errors: (!errors.is_empty()).then_some(errors),
    };
    HandshakeOutcome {
        response: serde_json::to_vec(&response).expect("handshake response serialises"),
        result,
        agent_version: request.agent_version.clone(),
    }
}

fn session_type(
    parameters: &Value,
    agent_version: &str,
    client_version: &str,
) -> Result<SessionMode, String> {
    let parameters: SessionTypeParameters = serde_json::from_value(parameters.clone())
        .map_err(|e| format!("malformed SessionType parameters: {e}"))?;
    if parameters.session_type != "Port" {
        return Err(format!(
            "session type {:?} is not supported (only Port sessions: SSH and port forwarding)",
            parameters.session_type
        ));
    }
    let forwarding =
        parameters.properties.get("type").and_then(Value::as_str) == Some("LocalPortForwarding");
    Ok(if !forwarding {
        SessionMode::Stream
    } else if version_greater(agent_version, MUX_AGENT_VERSION)
        && !version_greater(MUX_CLIENT_VERSION, client_version)
    {
        // The agent also decides by the ClientVersion we report: below 1.1.70 it runs basic.
        SessionMode::MuxPort
    } else {
        SessionMode::BasicPort
    })
}

/// Component-wise numeric comparison, as the plugin does; unparsable parts count as 0.
pub fn version_greater(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let (a, b) = (parse(a), parse(b));
    let len = a.len().max(b.len());
    let pad = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
    for i in 0..len {
        match pad(&a, i).cmp(&pad(&b, i)) {
            std::cmp::Ordering::Greater => return true,
            std::cmp::Ordering::Less => return false,
            std::cmp::Ordering::Equal => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(agent: &str, actions: Value) -> HandshakeRequest {
        serde_json::from_value(json!({"AgentVersion": agent, "RequestedClientActions": actions}))
            .unwrap()
    }

    fn response(outcome: &HandshakeOutcome) -> Value {
        serde_json::from_slice(&outcome.response).unwrap()
    }

    #[test]
    fn ssh_document_is_a_stream_session() {
        let outcome = answer(
            &request(
                "3.3.1802.0",
                json!([{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"22"}}}]),
            ),
            CLIENT_VERSION,
        );
        assert_eq!(outcome.result, Ok(SessionMode::Stream));
        assert_eq!(
            response(&outcome),
            json!({"ClientVersion":"1.2.707.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null})
        );
    }

    #[test]
    fn port_forwarding_uses_mux_with_modern_agents_and_basic_with_old_ones() {
        let actions = json!([{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"localPortNumber":"0","portNumber":"8888","type":"LocalPortForwarding"}}}]);
        let modern = answer(&request("3.3.1802.0", actions.clone()), CLIENT_VERSION);
        assert_eq!(modern.result, Ok(SessionMode::MuxPort));
        let old = answer(&request("3.0.196.0", actions.clone()), CLIENT_VERSION);
        assert_eq!(old.result, Ok(SessionMode::BasicPort));
        let old_client = answer(&request("3.3.1802.0", actions.clone()), "1.0.0.0");
        assert_eq!(old_client.result, Ok(SessionMode::BasicPort));
        let threshold = answer(&request("3.3.1802.0", actions), "1.1.70.0");
        assert_eq!(threshold.result, Ok(SessionMode::MuxPort));
    }

    #[test]
    fn kms_request_is_answered_unsupported() {
        let outcome = answer(
            &request(
                "3.3.1802.0",
                json!([
                    {"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"portNumber":"22"}}},
                    {"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"arn:aws:kms:x","Challenge":"AAAA"}}
                ]),
            ),
            CLIENT_VERSION,
        );
        let error = outcome.result.clone().unwrap_err();
        assert!(error.contains("KMS"), "{error}");
        let body = response(&outcome);
        assert_eq!(body["ProcessedClientActions"][0]["ActionStatus"], 1);
        assert_eq!(body["ProcessedClientActions"][1]["ActionStatus"], 3);
        assert_eq!(
            body["ProcessedClientActions"][1]["ActionType"],
            "KMSEncryption"
        );
        assert_eq!(body["Errors"][0], error);
    }

    #[test]
    fn shell_sessions_and_unknown_actions_are_unsupported() {
        let shell = answer(
            &request(
                "3.3.1802.0",
                json!([{"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":{}}}]),
            ),
            CLIENT_VERSION,
        );
        assert!(shell.result.unwrap_err().contains("Standard_Stream"));
        let unknown = answer(
            &request(
                "3.3.1802.0",
                json!([{"ActionType":"Teleport","ActionParameters":{}}]),
            ),
            CLIENT_VERSION,
        );
        assert!(unknown.result.unwrap_err().contains("Teleport"));
        assert_eq!(
            serde_json::from_slice::<Value>(&unknown.response).unwrap()["ProcessedClientActions"]
                [0]["ActionStatus"],
            3
        );
    }

    #[test]
    fn keepalive_follows_the_plugins_agent_version_rule() {
        assert!(agent_needs_keepalive("3.0.222.0"));
        assert!(agent_needs_keepalive("3.1.1000.0"));
        assert!(agent_needs_keepalive("3.1.1511.0"));
        assert!(!agent_needs_keepalive("3.1.1511.1"));
        assert!(!agent_needs_keepalive("3.3.1802.0"));
        assert!(agent_needs_keepalive(""));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_greater("3.0.222.0", "3.0.196.0"));
        assert!(version_greater("10.0.0.0", "9.9.9.9"));
        assert!(!version_greater("3.0.196.0", "3.0.196.0"));
        assert!(!version_greater("3.0.99.0", "3.0.196.0"));
    }
}
