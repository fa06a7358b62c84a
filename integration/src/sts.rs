//! STS in the AWS Query protocol: a form-encoded `POST /`
//! (`Action=GetCallerIdentity&Version=2011-06-15`) answered in XML.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::server::AppState;
use crate::ssm::{access_denied, record, Event};

const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// True when the body looks like a Query-protocol request.
pub(crate) fn is_query(body: &[u8]) -> bool {
    form_value(body, "Action").is_some()
}

pub(crate) fn handle(state: &AppState, body: &[u8]) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let action = form_value(body, "Action").unwrap_or_default();
    if action != "GetCallerIdentity" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("The fake STS does not implement {action}"),
            &request_id,
        );
    }
    let mut world = state.world();
    let denied = world
        .denials
        .actions
        .contains("sts:GetCallerIdentity")
        .then(|| access_denied(&world, "sts:GetCallerIdentity", "*"));
    record(
        &mut world,
        "sts:GetCallerIdentity",
        Event {
            error: denied.as_ref(),
            ..Event::default()
        },
    );
    if let Some(e) = denied {
        return error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            &e.message,
            &request_id,
        );
    }
    let id = &world.identity;
    let xml = format!(
        "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\">\n  <GetCallerIdentityResult>\n    \
         <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n  \
         </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  \
         </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
        escape(&id.arn),
        escape(&id.user_id),
        escape(&id.account)
    );
    xml_response(StatusCode::OK, xml)
}

fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let xml = format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\">\n  <Error>\n    <Type>Sender</Type>\n    \
         <Code>{code}</Code>\n    <Message>{}</Message>\n  </Error>\n  \
         <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        escape(message)
    );
    xml_response(status, xml)
}

fn xml_response(status: StatusCode, xml: String) -> Response {
    (status, [("content-type", "text/xml")], xml).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_form_fields() {
        let body = b"Action=GetCallerIdentity&Version=2011-06-15&X=a%2Fb+c%zz";
        assert_eq!(
            form_value(body, "Action").as_deref(),
            Some("GetCallerIdentity")
        );
        assert_eq!(form_value(body, "X").as_deref(), Some("a/b c%zz"));
        assert_eq!(form_value(body, "Missing"), None);
        assert!(!is_query(br#"{"Filters":[]}"#));
    }
}
