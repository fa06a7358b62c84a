//! The Query protocol's two halves for IAM: the form-encoded request (lists
//! as `Name.member.N`) and the XML answer
//! (`<ActionResponse><ActionResult>…</ActionResult><ResponseMetadata>`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::sts::{escape, percent_decode};

const NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// The creation date of every seeded entity.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// A request's form fields, in order.
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        let text = String::from_utf8_lossy(body);
        Form(
            text.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `prefix.member.1`, `prefix.member.2`, … until one is missing.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.numbered(&format!("{prefix}.member"))
    }

    /// `prefix.1`, `prefix.2`, … until one is missing (EC2's lists).
    pub fn numbered(&self, prefix: &str) -> Vec<String> {
        (1..)
            .map_while(|n| self.get(&format!("{prefix}.{n}")).map(str::to_owned))
            .collect()
    }
}

/// An XML fragment under construction.
#[derive(Default)]
pub struct Xml(String);

impl Xml {
    pub fn open(&mut self, tag: &str) {
        self.0.push_str(&format!("<{tag}>"));
    }

    pub fn close(&mut self, tag: &str) {
        self.0.push_str(&format!("</{tag}>"));
    }

    pub fn leaf(&mut self, tag: &str, text: &str) {
        self.0.push_str(&format!("<{tag}>{}</{tag}>", escape(text)));
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn ok(action: &str, result: &Xml) -> Response {
    let request_id = uuid::Uuid::new_v4();
    let xml = format!(
        "<{action}Response xmlns=\"{NAMESPACE}\"><{action}Result>{}</{action}Result>\
         <ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
         </{action}Response>\n",
        result.0
    );
    (StatusCode::OK, [("content-type", "text/xml")], xml).into_response()
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4();
    let xml = format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>Sender</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>\n",
        escape(message)
    );
    (status, [("content-type", "text/xml")], xml).into_response()
}

/// A policy document as IAM returns it: JSON, URL-encoded (RFC 3986).
pub fn encode_document(document: &serde_json::Value) -> String {
    let json = document.to_string();
    let mut out = String::with_capacity(json.len() * 2);
    for byte in json.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A stable IAM-style unique id (`AROA…`, `AIDA…`) for an ARN.
pub fn unique_id(prefix: &str, arn: &str) -> String {
    let digest = Sha256::digest(arn.as_bytes());
    let tail: String = digest
        .iter()
        .take(8)
        .map(|b| (b'A' + b % 26) as char)
        .chain(
            digest
                .iter()
                .skip(8)
                .take(9)
                .map(|b| (b'0' + b % 10) as char),
        )
        .collect();
    format!("{prefix}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_lists_and_documents() {
        let form = Form::parse(
            b"Action=X&ActionNames.member.1=ssm%3AA&ActionNames.member.2=b&ActionNames.member.4=c",
        );
        assert_eq!(form.get("Action"), Some("X"));
        assert_eq!(form.list("ActionNames"), ["ssm:A", "b"]);
        assert_eq!(
            encode_document(&serde_json::json!({"a": "b/c"})),
            "%7B%22a%22%3A%22b%2Fc%22%7D"
        );
        assert_eq!(unique_id("AROA", "x").len(), 21);
    }
}
