//! `SimulatePrincipalPolicy` over the seeded identity policies, following
//! IAM's documented evaluation logic for one account without SCPs,
//! permission boundaries or resource policies: a matching Deny wins, then a
//! matching Allow, else the implicit deny. Statements match on
//! `Action`/`NotAction` (case-insensitive wildcards), `Resource`/`NotResource`
//! (wildcards and `${…}` policy variables) and every `Condition`; the context
//! holds only the entries the caller passed, as in IAM.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::Value;

use super::xml::{Form, Xml};
use super::{Account, Failure};

/// IAM's `EvalDecision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    ExplicitDeny,
    ImplicitDeny,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::ExplicitDeny => "explicitDeny",
            Decision::ImplicitDeny => "implicitDeny",
        }
    }
}

/// Condition keys (lower-cased, as IAM compares key names) and their values.
pub type Context = BTreeMap<String, Vec<String>>;

/// The decision of `policies` (documents) for one action on one resource.
pub fn evaluate(policies: &[Value], action: &str, resource: &str, context: &Context) -> Decision {
    let statements = policies
        .iter()
        .flat_map(|document| match &document["Statement"] {
            Value::Array(list) => list.iter().collect::<Vec<_>>(),
            single @ Value::Object(_) => vec![single],
            _ => Vec::new(),
        });
    let mut decision = Decision::ImplicitDeny;
    for statement in statements {
        if !matches(statement, action, resource, context) {
            continue;
        }
        match statement["Effect"].as_str() {
            Some("Deny") => return Decision::ExplicitDeny,
            Some("Allow") => decision = Decision::Allowed,
            _ => {}
        }
    }
    decision
}

fn matches(statement: &Value, action: &str, resource: &str, context: &Context) -> bool {
    let action = action.to_ascii_lowercase();
    let action_hit = |patterns: &Value| {
        texts(patterns)
            .iter()
            .any(|p| wildcard(&p.to_ascii_lowercase(), &action))
    };
    let resource_hit = |patterns: &Value| {
        texts(patterns)
            .iter()
            .filter_map(|p| expand(p, context))
            .any(|p| wildcard(&p, resource))
    };
    let action_ok = match (statement.get("Action"), statement.get("NotAction")) {
        (Some(list), _) => action_hit(list),
        (None, Some(list)) => !action_hit(list),
        (None, None) => false,
    };
    let resource_ok = match (statement.get("Resource"), statement.get("NotResource")) {
        (Some(list), _) => resource_hit(list),
        (None, Some(list)) => !resource_hit(list),
        // Identity policies must name resources; IAM rejects them otherwise.
        (None, None) => false,
    };
    let conditions_ok = match statement.get("Condition") {
        None => true,
        Some(Value::Object(block)) => block.iter().all(|(operator, keys)| {
            keys.as_object().is_some_and(|keys| {
                keys.iter()
                    .all(|(key, wanted)| holds(operator, key, &texts(wanted), context))
            })
        }),
        Some(_) => false,
    };
    action_ok && resource_ok && conditions_ok
}

/// One condition key under one operator.
fn holds(operator: &str, key: &str, wanted: &[String], context: &Context) -> bool {
    let (set, operator) = match operator.split_once(':') {
        Some((set, operator)) => (Some(set), operator),
        None => (None, operator),
    };
    let if_exists = operator.ends_with("IfExists");
    let operator = operator.trim_end_matches("IfExists");
    let present = context.get(&key.to_ascii_lowercase());
    if operator == "Null" {
        let absent = present.is_none_or(|values| values.is_empty());
        return wanted.iter().any(|w| w.eq_ignore_ascii_case("true")) == absent;
    }
    let negated = operator.contains("Not");
    let values = match present {
        Some(values) if !values.is_empty() => values,
        // A missing key: true for IfExists, for negated operators, and for
        // ForAllValues (vacuously); false otherwise.
        _ => return if_exists || negated || set == Some("ForAllValues"),
    };
    let wanted: Vec<String> = wanted.iter().filter_map(|w| expand(w, context)).collect();
    let positive = match operator.replace("Not", "").as_str() {
        "StringEquals" | "ArnEquals" => |w: &str, v: &str| w == v,
        "StringEqualsIgnoreCase" | "Bool" => |w: &str, v: &str| w.eq_ignore_ascii_case(v),
        "StringLike" | "ArnLike" => |w: &str, v: &str| wildcard(w, v),
        // Operators this fake does not know never match.
        _ => return false,
    };
    // A value satisfies the condition when it matches one wanted value, or
    // (negated) none of them.
    let satisfied = |value: &String| wanted.iter().any(|w| positive(w, value)) != negated;
    match set {
        Some("ForAllValues") => values.iter().all(satisfied),
        Some("ForAnyValue") => values.iter().any(satisfied),
        // A single-valued key: negated operators need every value to miss.
        _ if negated => values.iter().all(satisfied),
        _ => values.iter().any(satisfied),
    }
}

/// A policy element as its list of strings.
fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(texts).collect(),
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

/// `${key}` and `${key, 'default'}` replaced from the context; `None` when a
/// key without default is missing (the element then matches nothing).
/// `${*}`, `${?}` and `${$}` stand for the literal characters.
fn expand(text: &str, context: &Context) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    loop {
        let Some(at) = rest.find("${") else {
            out.push_str(rest);
            return Some(out);
        };
        out.push_str(&rest[..at]);
        let inner_end = rest[at..].find('}')?;
        let inner = &rest[at + 2..at + inner_end];
        rest = &rest[at + inner_end + 1..];
        if matches!(inner, "*" | "?" | "$") {
            out.push_str(inner);
            continue;
        }
        let mut parts = inner.splitn(2, ',');
        let key = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let default = parts.next().map(|d| d.trim().trim_matches('\'').to_owned());
        match context.get(&key).and_then(|v| v.first()) {
            Some(value) => out.push_str(value),
            None => out.push_str(&default?),
        }
    }
}

/// `*` matches any run of characters, `?` one character.
fn wildcard(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|skip| go(rest, &t[skip..])),
            Some((b'?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    // Multi-byte characters compare as their bytes; `?` then stands for a
    // byte, which policies of ASCII ARNs and keys never notice.
    go(pattern.as_bytes(), text.as_bytes())
}

/// The `SimulatePrincipalPolicy` result: one `EvaluationResults` member per
/// action and resource.
pub(super) fn answer(account: &Account, form: &Form, out: &mut Xml) -> Result<(), Failure> {
    let source = form.get("PolicySourceArn").unwrap_or_default();
    let policies = account.principal_policies(source).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "NoSuchEntity",
            format!("The principal {source} cannot be found."),
        )
    })?;
    let actions = form.list("ActionNames");
    if actions.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "1 validation error detected: Value null at 'actionNames' failed to satisfy constraint: Member must not be null".into(),
        ));
    }
    let mut resources = form.list("ResourceArns");
    if resources.is_empty() {
        resources.push("*".into());
    }
    let mut context = Context::new();
    for n in 1.. {
        let prefix = format!("ContextEntries.member.{n}");
        let Some(key) = form.get(&format!("{prefix}.ContextKeyName")) else {
            break;
        };
        context
            .entry(key.to_ascii_lowercase())
            .or_default()
            .extend(form.list(&format!("{prefix}.ContextKeyValues")));
    }
    let documents: Vec<Value> = policies.iter().map(|(_, d)| d.clone()).collect();
    out.open("EvaluationResults");
    for action in &actions {
        for resource in &resources {
            let decision = evaluate(&documents, action, resource, &context);
            out.open("member");
            out.leaf("EvalActionName", action);
            out.leaf("EvalResourceName", resource);
            out.leaf("EvalDecision", decision.as_str());
            out.open("MatchedStatements");
            for (id, document) in &policies {
                if decision != Decision::ImplicitDeny
                    && evaluate(std::slice::from_ref(document), action, resource, &context)
                        == decision
                {
                    out.open("member");
                    out.leaf("SourcePolicyId", id);
                    out.close("member");
                }
            }
            out.close("MatchedStatements");
            out.open("MissingContextValues");
            out.close("MissingContextValues");
            out.close("member");
        }
    }
    out.close("EvaluationResults");
    out.leaf("IsTruncated", "false");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context(pairs: &[(&str, &str)]) -> Context {
        let mut context = Context::new();
        for (k, v) in pairs {
            context
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.to_string());
        }
        context
    }

    #[test]
    fn deny_beats_allow_and_conditions_use_variables() {
        let allow = json!({"Statement": {"Effect": "Allow", "Action": "ssm:Start*",
            "Resource": "arn:aws:ssm:*:1:managed-instance/*",
            "Condition": {"StringEquals": {"ssm:resourceTag/SSHOwner": "${aws:userid}"}}}});
        let deny =
            json!({"Statement": [{"Effect": "Deny", "NotAction": "ssm:*", "Resource": "*"}]});
        let policies = [allow, deny];
        let instance = "arn:aws:ssm:eu-west-1:1:managed-instance/mi-1";
        let mine = context(&[("aws:userid", "A:me"), ("ssm:resourceTag/SSHOwner", "A:me")]);
        let theirs = context(&[("aws:userid", "A:me"), ("ssm:resourceTag/SSHOwner", "B")]);
        assert_eq!(
            evaluate(&policies, "SSM:StartSession", instance, &mine),
            Decision::Allowed
        );
        assert_eq!(
            evaluate(&policies, "ssm:StartSession", instance, &theirs),
            Decision::ImplicitDeny
        );
        assert_eq!(
            evaluate(&policies, "s3:GetObject", "*", &mine),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn missing_keys_if_exists_null_and_sets() {
        let none = Context::new();
        assert!(!holds("StringEquals", "k", &["v".into()], &none));
        assert!(holds("StringEqualsIfExists", "k", &["v".into()], &none));
        assert!(holds("StringNotEquals", "k", &["v".into()], &none));
        assert!(holds("Null", "k", &["true".into()], &none));
        assert!(holds(
            "ForAllValues:StringEquals",
            "k",
            &["v".into()],
            &none
        ));
        let two = context(&[("k", "a"), ("k", "b")]);
        assert!(holds("ForAnyValue:StringEquals", "k", &["b".into()], &two));
        assert!(!holds(
            "ForAllValues:StringEquals",
            "k",
            &["b".into()],
            &two
        ));
        assert!(holds(
            "ForAnyValue:StringNotEquals",
            "k",
            &["b".into()],
            &two
        ));
        assert!(holds("StringLike", "k", &["?".into()], &two));
    }

    #[test]
    fn wildcards_and_expansion() {
        assert!(wildcard(
            "arn:*:ssm:*:document/AWS-*",
            "arn:aws:ssm:eu:document/AWS-X"
        ));
        assert!(!wildcard("a?c", "ac"));
        let ctx = context(&[("aws:PrincipalTag/team", "red")]);
        assert_eq!(
            expand("t/${aws:principaltag/team}", &ctx).as_deref(),
            Some("t/red")
        );
        assert_eq!(expand("${missing, 'x'}${*}", &ctx).as_deref(), Some("x*"));
        assert_eq!(expand("${missing}", &ctx), None);
    }
}
