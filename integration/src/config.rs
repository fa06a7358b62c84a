//! The fake's config file: a JSON `Seed` (see `docs/fake-aws.md`).

use std::path::Path;

use anyhow::Context;

use crate::world::Seed;

/// Reads a seed from a JSON file; every field is optional.
pub fn load(path: &Path) -> anyhow::Result<Seed> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the fake's config file {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid config file {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<Seed> {
    let seed: Seed = serde_json::from_str(text)?;
    for instance in &seed.instances {
        anyhow::ensure!(!instance.id.is_empty(), "every instance needs an \"id\"");
    }
    Ok(seed)
}

/// `export NAME='value'` lines for a POSIX shell.
pub fn exports(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', "'\\''")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_partial_seed() {
        let seed = parse(
            r#"{"region":"eu-west-1","instances":[{"id":"mi-0123456789abcdef0",
                "ping_status":"ConnectionLost","tags":{"SSHOwner":"AIDA:me"},
                "ports":{"22":"127.0.0.1:2222"}}],
                "denials":{"documents":["AWS-StartPortForwardingSession"]},
                "pacing":{"mode":"unconstrained"}}"#,
        )
        .unwrap();
        assert_eq!(seed.region, "eu-west-1");
        let i = &seed.instances[0];
        assert_eq!(i.ping_status, crate::world::PingStatus::ConnectionLost);
        assert_eq!(i.resource_type, "ManagedInstance");
        assert_eq!(i.ports[&22].port(), 2222);
        assert!(seed
            .denials
            .documents
            .contains("AWS-StartPortForwardingSession"));
        assert_eq!(seed.pacing, crate::world::Pacing::Unconstrained);
        assert!(parse(r#"{"instances":[{}]}"#).is_err());
        assert!(parse(r#"{"regoin":"x"}"#).is_ok());
    }

    #[test]
    fn exports_quote_values() {
        let env = vec![("A".to_string(), "it's".to_string())];
        assert_eq!(exports(&env), "export A='it'\\''s'\n");
    }
}
