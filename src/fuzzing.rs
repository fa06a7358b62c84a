//! Bodies of the binary's fuzz targets (not an API); see `proxy/src/fuzzing.rs`
//! for the engine's. Each panics when an invariant breaks.

use crate::plugin_args::{parse, Invocation};
use crate::target::Target;

/// The target-name parser: no panic, and what parses prints back to a name
/// that parses to the same target and is safe to hand to ssh (no whitespace
/// or control characters).
pub fn target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Target::parse(text) {
        Ok(target) => {
            let printed = target.to_string();
            assert!(
                !printed.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{printed:?} is not a safe host name"
            );
            assert_eq!(Target::parse(&printed).as_ref(), Ok(&target));
            let _ = (target.default_user(), target.kind());
        }
        Err(error) => assert_eq!(error.target, text),
    }
}

/// The token the plugin-args target puts in the responses it builds.
const TOKEN: &str = "fuzz-token-SECRET";

/// Plugin-mode arguments as the AWS CLI passes them: NUL-separated words, the
/// first (when it starts with `{`) completed into a StartSession response
/// carrying a token. No panic, and no error message ever shows the token.
pub fn plugin_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut words: Vec<String> = text.split('\0').map(str::to_owned).collect();
    if words.len() == 1 && words[0].is_empty() {
        words.clear();
    }
    if let Some(first) = words.first_mut() {
        if first.starts_with('{') {
            *first = response_with_token(&first[1..]);
        }
    }
    // The variable named instead of the response is set when the word count is even.
    let set = words.len().is_multiple_of(2);
    let env = |_: &str| set.then(|| response_with_token(""));
    match parse(&words, env) {
        Ok(Invocation::Start(start)) => {
            assert!(start.profile.as_deref() != Some(""));
            assert!(start.endpoint.as_deref() != Some(""));
        }
        Ok(_) => assert!(words.len() <= 1),
        Err(error) => {
            let message = format!("{error:#}");
            let echoed = words.iter().skip(1).any(|w| w.contains(TOKEN));
            assert!(
                echoed || !message.contains(TOKEN),
                "the token leaked: {message}"
            );
        }
    }
}

/// A StartSession response with [`TOKEN`], its closing brace replaced by `tail`.
fn response_with_token(tail: &str) -> String {
    format!(
        r#"{{"SessionId":"s-1","TokenValue":"{TOKEN}","StreamUrl":"wss://h/v1/data-channel/s-1"{tail}"#
    )
}
