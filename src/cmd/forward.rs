//! `sm-ssh forward`: local port forwarding to the target without ssh.

use std::process::ExitCode;
use std::str::FromStr;

use crate::cli::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `<name>.<kind>.sagemaker`, `mi-…` or another target `sm-ssh list` shows.
    pub target: String,
    /// `[bind:]LOCAL:[host:]REMOTE`: listen on LOCAL and forward to REMOTE on the
    /// instance (or to host:REMOTE as seen from it). Repeatable.
    #[arg(short = 'L', long = "local", value_name = "SPEC", required = true)]
    pub forwards: Vec<Spec>,
    /// Spread connections over N sessions (port-forwarding documents only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub sessions: u16,
    /// The Session Manager document to use (default: the best one IAM allows).
    #[arg(long, value_enum)]
    pub document: Option<Document>,
}

pub async fn run(_args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`sm-ssh forward` is not implemented yet")
}

/// The documents that can carry a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Document {
    /// One session per connection, to localhost only: works under the
    /// sagemaker-ssh-helper client policy.
    #[value(name = "AWS-StartSSHSession")]
    Ssh,
    /// Connections share sessions through smux (localhost targets).
    #[value(name = "AWS-StartPortForwardingSession")]
    PortForwarding,
    /// Connections share sessions through smux (any host the instance reaches).
    #[value(name = "AWS-StartPortForwardingSessionToRemoteHost")]
    PortForwardingToRemoteHost,
}

impl Document {
    pub fn name(self) -> &'static str {
        match self {
            Document::Ssh => "AWS-StartSSHSession",
            Document::PortForwarding => "AWS-StartPortForwardingSession",
            Document::PortForwardingToRemoteHost => "AWS-StartPortForwardingSessionToRemoteHost",
        }
    }
}

/// One `-L [bind:]LOCAL:[host:]REMOTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub bind: String,
    pub local_port: u16,
    /// `None`: the instance itself (localhost).
    pub host: Option<String>,
    pub remote_port: u16,
}

impl FromStr for Spec {
    type Err = String;

    fn from_str(text: &str) -> Result<Spec, String> {
        let fields = split_fields(text)
            .ok_or_else(|| format!("`{text}`: unbalanced [ ] around an IPv6 address"))?;
        let (bind, local, host, remote) = match fields.as_slice() {
            [local, remote] => (None, local, None, remote),
            [local, host, remote] => (None, local, Some(host), remote),
            [bind, local, host, remote] => (Some(bind), local, Some(host), remote),
            _ => {
                return Err(format!(
                    "`{text}` is not a forward; expected [bind:]LOCAL:[host:]REMOTE, e.g. 8888:localhost:8888"
                ))
            }
        };
        let port = |what: &str, value: &str| {
            value.parse::<u16>().map_err(|_| {
                format!("`{text}`: {what} port `{value}` is not a number from 0 to 65535")
            })
        };
        let local_port = port("local", local)?;
        let remote_port = port("remote", remote)?;
        if remote_port == 0 {
            return Err(format!("`{text}`: the remote port cannot be 0"));
        }
        let bind = match bind.map(String::as_str) {
            None | Some("") | Some("localhost") => "127.0.0.1".to_owned(),
            Some("*") => "0.0.0.0".to_owned(),
            Some(other) => other.to_owned(),
        };
        let host = host
            .filter(|h| !h.is_empty() && !is_loopback_name(h))
            .cloned();
        Ok(Spec {
            bind,
            local_port,
            host,
            remote_port,
        })
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bind = if self.bind.contains(':') {
            format!("[{}]", self.bind)
        } else {
            self.bind.clone()
        };
        let host = self.host.as_deref().unwrap_or("localhost");
        write!(
            f,
            "{bind}:{} -> {host}:{}",
            self.local_port, self.remote_port
        )
    }
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host == "127.0.0.1" || host == "::1"
}

/// Splits on `:` outside `[…]`, dropping the brackets.
fn split_fields(text: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut in_brackets = false;
    for c in text.chars() {
        match c {
            '[' if !in_brackets => in_brackets = true,
            ']' if in_brackets => in_brackets = false,
            '[' | ']' => return None,
            ':' if !in_brackets => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    (!in_brackets).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        text.parse().unwrap()
    }

    #[test]
    fn forms_of_a_forward() {
        assert_eq!(
            spec("8888:8889"),
            Spec {
                bind: "127.0.0.1".into(),
                local_port: 8888,
                host: None,
                remote_port: 8889
            }
        );
        assert_eq!(spec("8888:localhost:8888").host, None);
        assert_eq!(
            spec("0:db.internal:5432").host.as_deref(),
            Some("db.internal")
        );
        assert_eq!(spec("*:80:localhost:8080").bind, "0.0.0.0");
        let v6 = spec("[::1]:80:[fd00::5]:8080");
        assert_eq!(
            (v6.bind.as_str(), v6.host.as_deref()),
            ("::1", Some("fd00::5"))
        );
        assert_eq!(v6.to_string(), "[::1]:80 -> fd00::5:8080");
    }

    #[test]
    fn bad_forwards_are_explained() {
        for bad in [
            "",
            "80",
            "a:80",
            "80:b",
            "80:x:70000",
            "1:2:3:4:5",
            "80:x:0",
            "[::1:80:90",
        ] {
            let error = bad.parse::<Spec>().unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }
    }
}
