//! Local evaluation of IAM identity policies: does this set of documents allow
//! one request? Enough of the IAM language for the SSH prerequisites: action
//! and resource wildcards, `NotAction`/`NotResource`, Allow/Deny, policy
//! variables (`${aws:userid}`, `${aws:PrincipalTag/team}`), and the string,
//! ARN, Bool and Null condition operators with `IfExists` and the
//! `ForAnyValue:`/`ForAllValues:` qualifiers. Permission boundaries, SCPs and
//! session policies are out of scope (doctor says so).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde_json::Value;

/// One identity policy, named for messages (`inline:SSHSageMakerServerPolicy`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    statements: Vec<Statement>,
}

#[derive(Debug, Clone)]
struct Statement {
    allow: bool,
    actions: Matcher,
    resources: Matcher,
    /// operator → key → values.
    conditions: Vec<(String, String, Vec<String>)>,
}

/// `Action` or `NotAction` (likewise for resources); absent means everything.
#[derive(Debug, Clone)]
struct Matcher {
    negated: bool,
    patterns: Vec<String>,
}

/// What IAM would decide for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

/// One API request to evaluate: `context` holds the condition keys
/// (`aws:userid`, `ssm:resourceTag/SSHOwner`, …), matched case-insensitively.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub action: String,
    pub resource: String,
    context: BTreeMap<String, Vec<String>>,
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Request {
        Request {
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Request {
        self.set(key, value);
        self
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.context
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value.into());
    }

    /// The condition keys (lower-cased) and their values, e.g. to hand them
    /// to IAM's policy simulator.
    pub fn context(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.context
            .iter()
            .map(|(key, values)| (key.as_str(), values.as_slice()))
    }

    fn values(&self, key: &str) -> Option<&[String]> {
        self.context
            .get(&key.to_ascii_lowercase())
            .map(Vec::as_slice)
    }
}

impl Policy {
    /// Parses a policy document (already URL-decoded).
    pub fn parse(name: &str, document: &str) -> anyhow::Result<Policy> {
        let value: Value = serde_json::from_str(document)
            .with_context(|| format!("policy {name} is not valid JSON"))?;
        Policy::from_value(name, &value)
    }

    pub fn from_value(name: &str, document: &Value) -> anyhow::Result<Policy> {
        let statements = match document.get("Statement") {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(single @ Value::Object(_)) => vec![single],
            _ => bail!("policy {name} has no Statement"),
        };
        let statements = statements
            .into_iter()
            .map(parse_statement)
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("policy {name}"))?;
        Ok(Policy {
            name: name.into(),
            statements,
        })
    }
}

fn parse_statement(statement: &Value) -> anyhow::Result<Statement> {
    let allow = match statement.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        other => bail!("a statement has Effect {other:?}, not Allow or Deny"),
    };
    let mut conditions = Vec::new();
    if let Some(block) = statement.get("Condition") {
        let block = block.as_object().context("Condition is not an object")?;
        for (operator, keys) in block {
            let keys = keys
                .as_object()
                .context("a condition operator maps to no keys")?;
            for (key, values) in keys {
                conditions.push((operator.clone(), key.clone(), strings(values)));
            }
        }
    }
    Ok(Statement {
        allow,
        actions: matcher(statement, "Action", "NotAction"),
        resources: matcher(statement, "Resource", "NotResource"),
        conditions,
    })
}

fn matcher(statement: &Value, positive: &str, negative: &str) -> Matcher {
    match (statement.get(positive), statement.get(negative)) {
        (Some(values), _) => Matcher {
            negated: false,
            patterns: strings(values),
        },
        (None, Some(values)) => Matcher {
            negated: true,
            patterns: strings(values),
        },
        (None, None) => Matcher {
            negated: false,
            patterns: vec!["*".into()],
        },
    }
}

/// A string, number, bool or an array of them, as strings.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::String(text) => vec![text.clone()],
        Value::Null => Vec::new(),
        other => vec![other.to_string()],
    }
}

/// Evaluates `request` against every policy: an explicit Deny wins, then any
/// Allow, else the implicit deny.
pub fn evaluate(policies: &[Policy], request: &Request) -> Decision {
    let mut allowed = false;
    for statement in policies.iter().flat_map(|policy| &policy.statements) {
        if statement.applies(request) {
            if !statement.allow {
                return Decision::ExplicitDeny;
            }
            allowed = true;
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

impl Statement {
    fn applies(&self, request: &Request) -> bool {
        let action = self.actions.patterns.iter().any(|pattern| {
            glob(
                &pattern.to_ascii_lowercase(),
                &request.action.to_ascii_lowercase(),
            )
        });
        let resource = self.resources.patterns.iter().any(|pattern| {
            substitute(pattern, request).is_some_and(|pattern| glob(&pattern, &request.resource))
        });
        action != self.actions.negated
            && resource != self.resources.negated
            && self
                .conditions
                .iter()
                .all(|(operator, key, values)| condition(operator, key, values, request))
    }
}

/// One condition: `operator` applied to the request's values of `key` and
/// the policy's `expected` values.
fn condition(operator: &str, key: &str, expected: &[String], request: &Request) -> bool {
    let (qualifier, operator) = match operator.split_once(':') {
        Some((qualifier, rest)) => (Some(qualifier), rest),
        None => (None, operator),
    };
    let (operator, if_exists) = match operator.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (operator, false),
    };
    let actual = request.values(key);
    if operator == "Null" {
        let want_missing = expected.iter().any(|value| value == "true");
        return actual.is_none() == want_missing;
    }
    let Some(actual) = actual else {
        // A missing key satisfies IfExists and the negated operators only.
        return if_exists || operator.contains("Not");
    };
    let Some((negated, test)) = comparison(operator) else {
        // Unknown operators never grant (and never deny) anything here.
        return false;
    };
    let expected: Vec<String> = expected
        .iter()
        .filter_map(|value| substitute(value, request))
        .collect();
    let matches = |value: &String| expected.iter().any(|pattern| test(pattern, value));
    let outcome = |value: &String| matches(value) != negated;
    match qualifier {
        Some("ForAllValues") => actual.iter().all(outcome),
        _ if negated => actual.iter().all(outcome),
        _ => actual.iter().any(outcome),
    }
}

type Test = fn(&str, &str) -> bool;

/// The base test of an operator and whether it is negated.
fn comparison(operator: &str) -> Option<(bool, Test)> {
    let equals: Test = |pattern, value| pattern == value;
    let equals_ignore_case: Test = |pattern, value| pattern.eq_ignore_ascii_case(value);
    let like: Test = |pattern, value| glob(pattern, value);
    let boolean: Test = |pattern, value| pattern.eq_ignore_ascii_case(value);
    Some(match operator {
        "StringEquals" | "ArnEquals" => (false, equals),
        "StringNotEquals" | "ArnNotEquals" => (true, equals),
        "StringEqualsIgnoreCase" => (false, equals_ignore_case),
        "StringNotEqualsIgnoreCase" => (true, equals_ignore_case),
        "StringLike" | "ArnLike" => (false, like),
        "StringNotLike" | "ArnNotLike" => (true, like),
        "Bool" => (false, boolean),
        _ => return None,
    })
}

/// Replaces `${key}` policy variables with the request's value; `None` when a
/// variable has no value (the element then matches nothing, as in IAM).
fn substitute(text: &str, request: &Request) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 2..end];
        match name {
            "*" | "?" | "$" => out.push_str(name),
            _ => {
                let (key, default) = match name.split_once(", '") {
                    Some((key, default)) => (key.trim(), default.strip_suffix('\'')),
                    None => (name.trim(), None),
                };
                match request.values(key).and_then(<[String]>::first) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(default?),
                }
            }
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// IAM wildcards: `*` any run of characters, `?` exactly one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(document: Value) -> Vec<Policy> {
        vec![Policy::from_value("test", &document).unwrap()]
    }

    #[test]
    fn wildcards() {
        assert!(glob("*", ""));
        assert!(glob("ssm:*", "ssm:StartSession"));
        assert!(glob(
            "arn:aws:ssm:*:1:managed-instance/mi-*",
            "arn:aws:ssm:eu-west-1:1:managed-instance/mi-0a"
        ));
        assert!(!glob(
            "arn:aws:ssm:*:1:managed-instance/mi-*",
            "arn:aws:ssm:eu-west-1:2:managed-instance/mi-0a"
        ));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("*a*b", "xxaxxbxx"));
    }

    #[test]
    fn actions_are_case_insensitive_and_resources_are_not() {
        let policies = policy(
            json!({"Statement": {"Effect": "Allow", "Action": "SSM:startsession", "Resource": "arn:x/Doc"}}),
        );
        assert_eq!(
            evaluate(&policies, &Request::new("ssm:StartSession", "arn:x/Doc")),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&policies, &Request::new("ssm:StartSession", "arn:x/doc")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn deny_wins_and_not_action_inverts() {
        let policies = policy(json!({"Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "NotAction": ["ssm:Describe*"], "Resource": "*"}
        ]}));
        assert_eq!(
            evaluate(
                &policies,
                &Request::new("ssm:DescribeInstanceInformation", "*")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&policies, &Request::new("ssm:StartSession", "*")),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn owner_tag_condition_with_policy_variable() {
        let policies = policy(json!({"Statement": {
            "Effect": "Allow", "Action": "ssm:StartSession",
            "Resource": "arn:aws:ssm:*:1:managed-instance/mi-*",
            "Condition": {"StringEquals": {"ssm:resourceTag/SSHOwner": "${aws:userid}"}}
        }}));
        let request = |owner: Option<&str>| {
            let mut request =
                Request::new("ssm:StartSession", "arn:aws:ssm:r:1:managed-instance/mi-1")
                    .with("aws:userid", "AROA1:alice");
            if let Some(owner) = owner {
                request.set("ssm:ResourceTag/SSHOwner", owner);
            }
            request
        };
        assert_eq!(
            evaluate(&policies, &request(Some("AROA1:alice"))),
            Decision::Allow
        );
        assert_eq!(
            evaluate(&policies, &request(Some("AROA1:bob"))),
            Decision::ImplicitDeny
        );
        assert_eq!(evaluate(&policies, &request(None)), Decision::ImplicitDeny);
    }

    #[test]
    fn missing_variable_matches_nothing() {
        let policies = policy(json!({"Statement": {
            "Effect": "Allow", "Action": "ssm:StartSession", "Resource": "*",
            "Condition": {"StringEquals": {"ssm:resourceTag/team": "${aws:PrincipalTag/team}"}}
        }}));
        let request = Request::new("ssm:StartSession", "x").with("ssm:resourceTag/team", "");
        assert_eq!(evaluate(&policies, &request), Decision::ImplicitDeny);
        let request = request.with("aws:PrincipalTag/team", "");
        assert_eq!(evaluate(&policies, &request), Decision::Allow);
    }

    #[test]
    fn like_if_exists_negation_and_null() {
        let policies = policy(json!({"Statement": {
            "Effect": "Allow", "Action": "iam:PassRole", "Resource": "*",
            "Condition": {
                "StringLike": {"iam:PassedToService": "ssm.*"},
                "StringNotEqualsIfExists": {"aws:RequestTag/x": "bad"},
                "Null": {"aws:TokenIssueTime": "false"}
            }
        }}));
        let base = Request::new("iam:PassRole", "r").with("aws:TokenIssueTime", "now");
        assert_eq!(
            evaluate(
                &policies,
                &base
                    .clone()
                    .with("iam:PassedToService", "ssm.amazonaws.com")
            ),
            Decision::Allow
        );
        assert_eq!(
            evaluate(
                &policies,
                &base
                    .clone()
                    .with("iam:PassedToService", "ec2.amazonaws.com")
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(
                &policies,
                &base
                    .clone()
                    .with("iam:PassedToService", "ssm.amazonaws.com")
                    .with("aws:RequestTag/x", "bad")
            ),
            Decision::ImplicitDeny
        );
        let no_token =
            Request::new("iam:PassRole", "r").with("iam:PassedToService", "ssm.amazonaws.com");
        assert_eq!(evaluate(&policies, &no_token), Decision::ImplicitDeny);
    }

    #[test]
    fn unknown_operators_grant_nothing() {
        let policies = policy(json!({"Statement": {
            "Effect": "Allow", "Action": "*", "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
        }}));
        let request = Request::new("ssm:StartSession", "x").with("aws:SourceIp", "10.0.0.1");
        assert_eq!(evaluate(&policies, &request), Decision::ImplicitDeny);
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(Policy::parse("p", "{").is_err());
        assert!(Policy::parse("p", r#"{"Version":"2012-10-17"}"#).is_err());
        assert!(Policy::parse("p", r#"{"Statement":[{"Effect":"Maybe"}]}"#).is_err());
    }
}
