//! The JSON bodies carried by frames and the OpenDataChannel text message.
//! Field names and order follow the Go encoders of the plugin and the agent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Flag values carried in a `payload_type::FLAG` payload as a big-endian u32.
pub mod flag {
    pub const DISCONNECT_TO_PORT: u32 = 1;
    pub const TERMINATE_SESSION: u32 = 2;
    pub const CONNECT_TO_PORT_ERROR: u32 = 3;
}

/// Encodes a flag payload.
pub fn flag_payload(flag: u32) -> [u8; 4] {
    flag.to_be_bytes()
}

/// Decodes a flag payload; `None` unless it is exactly four bytes.
pub fn parse_flag(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.try_into().ok()?))
}

/// The first (text) websocket message a client sends: its credentials.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OpenDataChannel {
    #[serde(rename = "MessageSchemaVersion")]
    pub message_schema_version: String,
    #[serde(rename = "RequestId")]
    pub request_id: String,
    #[serde(rename = "TokenValue")]
    pub token_value: String,
    #[serde(rename = "ClientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(
        rename = "ClientVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_version: Option<String>,
}

/// `acknowledge` payload. Receivers match on the sequence number only.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acknowledge {
    #[serde(rename = "AcknowledgedMessageType")]
    pub message_type: String,
    #[serde(rename = "AcknowledgedMessageId")]
    pub message_id: String,
    #[serde(rename = "AcknowledgedMessageSequenceNumber")]
    pub sequence_number: i64,
    #[serde(rename = "IsSequentialMessage")]
    pub is_sequential: bool,
}

/// `channel_closed` payload, sent by the service when the session is over.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ChannelClosed {
    #[serde(rename = "MessageId", default)]
    pub message_id: String,
    #[serde(rename = "CreatedDate", default)]
    pub created_date: String,
    #[serde(rename = "DestinationId", default)]
    pub destination_id: String,
    #[serde(rename = "SessionId", default)]
    pub session_id: String,
    #[serde(rename = "MessageType", default)]
    pub message_type: String,
    #[serde(rename = "SchemaVersion", default)]
    pub schema_version: i64,
    #[serde(rename = "Output", default)]
    pub output: String,
}

/// One action the agent asks the client to perform during the handshake.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestedClientAction {
    #[serde(rename = "ActionType")]
    pub action_type: String,
    #[serde(rename = "ActionParameters", default)]
    pub action_parameters: Value,
}

/// HandshakeRequest (agent to client, payload type 5).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HandshakeRequest {
    #[serde(rename = "AgentVersion")]
    pub agent_version: String,
    #[serde(rename = "RequestedClientActions", default)]
    pub requested_client_actions: Vec<RequestedClientAction>,
}

/// ActionStatus values of a processed client action.
pub mod action_status {
    pub const SUCCESS: i64 = 1;
    pub const FAILED: i64 = 2;
    pub const UNSUPPORTED: i64 = 3;
}

/// The action types the agent may request.
pub mod action_type {
    pub const SESSION_TYPE: &str = "SessionType";
    pub const KMS_ENCRYPTION: &str = "KMSEncryption";
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessedClientAction {
    #[serde(rename = "ActionType")]
    pub action_type: String,
    #[serde(rename = "ActionStatus")]
    pub action_status: i64,
    // Go's decoder (the agent's) leaves absent fields at their zero value;
    // some clients omit these two when they are empty.
    #[serde(rename = "ActionResult", default)]
    pub action_result: Value,
    #[serde(rename = "Error", default)]
    pub error: String,
}

/// HandshakeResponse (client to agent, payload type 6).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HandshakeResponse {
    #[serde(rename = "ClientVersion")]
    pub client_version: String,
    #[serde(rename = "ProcessedClientActions")]
    pub processed_client_actions: Vec<ProcessedClientAction>,
    #[serde(rename = "Errors")]
    pub errors: Option<Vec<String>>,
}

/// HandshakeComplete (agent to client, payload type 7).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandshakeComplete {
    #[serde(rename = "HandshakeTimeToComplete", default)]
    pub handshake_time_to_complete: i64,
    #[serde(rename = "CustomerMessage", default)]
    pub customer_message: String,
}

/// The parameters of a `SessionType` action.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionTypeParameters {
    #[serde(rename = "SessionType")]
    pub session_type: String,
    #[serde(rename = "Properties", default)]
    pub properties: Value,
}

/// Size (payload type 3, client to agent, never encrypted): the terminal's
/// columns and rows (agent `contracts/model.go` `SizeData`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Size {
    pub cols: u32,
    pub rows: u32,
}

/// The `KMSEncryption` action's parameters (agent `KMSEncryptionRequest`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KmsEncryptionRequest {
    #[serde(rename = "KMSKeyId")]
    pub kms_key_id: String,
    #[serde(rename = "Challenge", default)]
    pub challenge: String,
}

/// The `KMSEncryption` action's result (agent `KMSEncryptionResponse`; Go
/// encodes `[]byte` as standard base64).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KmsEncryptionResponse {
    #[serde(rename = "KMSCipherTextKey")]
    pub cipher_text_key: String,
    #[serde(rename = "KMSCipherTextHash")]
    pub cipher_text_hash: Option<String>,
}

/// EncChallengeRequest (8) and EncChallengeResponse (9): base64 of an
/// encrypted payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionChallenge {
    #[serde(rename = "Challenge")]
    pub challenge: String,
}

/// Parses an ExitCode payload (type 12): ASCII `EXIT_CODE: <n>` (agent
/// `shell.go` `sendExitCode`).
pub fn parse_exit_code(payload: &[u8]) -> Option<i32> {
    std::str::from_utf8(payload)
        .ok()?
        .trim()
        .strip_prefix("EXIT_CODE:")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledge_serialises_in_go_field_order() {
        let ack = Acknowledge {
            message_type: "input_stream_data".into(),
            message_id: "dd01e56b-ff48-483e-a508-b5f073f31b16".into(),
            sequence_number: 0,
            is_sequential: true,
        };
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16","AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}"#
        );
    }

    #[test]
    fn handshake_response_matches_the_plugin_shape() {
        let response = HandshakeResponse {
            client_version: "1.2.677.0".into(),
            processed_client_actions: vec![ProcessedClientAction {
                action_type: action_type::SESSION_TYPE.into(),
                action_status: action_status::SUCCESS,
                action_result: Value::Null,
                error: String::new(),
            }],
            errors: None,
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"ClientVersion":"1.2.677.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}"#
        );
    }

    #[test]
    fn handshake_response_without_result_or_error_parses() {
        let text = r#"{"ClientVersion":"1.2.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1}],"Errors":[]}"#;
        let response: HandshakeResponse = serde_json::from_str(text).unwrap();
        assert_eq!(
            response.processed_client_actions[0].action_result,
            Value::Null
        );
        assert_eq!(response.processed_client_actions[0].error, "");
    }

    #[test]
    fn size_and_exit_code_have_the_agent_shapes() {
        let size = Size { cols: 80, rows: 24 };
        assert_eq!(
            serde_json::to_string(&size).unwrap(),
            r#"{"cols":80,"rows":24}"#
        );
        assert_eq!(parse_exit_code(b"EXIT_CODE: 7"), Some(7));
        assert_eq!(parse_exit_code(b"EXIT_CODE: -1"), Some(-1));
        assert_eq!(parse_exit_code(b"exit 7"), None);
    }

    #[test]
    fn flags_round_trip() {
        assert_eq!(
            parse_flag(&flag_payload(flag::TERMINATE_SESSION)),
            Some(flag::TERMINATE_SESSION)
        );
        assert_eq!(parse_flag(&[0, 0, 2]), None);
    }
}
