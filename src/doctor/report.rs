//! The outcome of doctor: one line per check, with a fix for every FAIL and
//! WARN, as text for people and as JSON (schema 1, documented in
//! docs/admin-guide.md) for scripts.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One check's outcome. `id` is stable (scripts match on it); `region` is set
/// for checks that run once per region.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, detail: impl Into<String>) -> Check {
        Check::new(id, Status::Pass, detail, None)
    }

    pub fn skip(id: &'static str, detail: impl Into<String>) -> Check {
        Check::new(id, Status::Skip, detail, None)
    }

    pub fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(id, Status::Warn, detail, Some(fix.into()))
    }

    pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(id, Status::Fail, detail, Some(fix.into()))
    }

    /// A check the caller may not run: SKIP naming the permission it needs.
    pub fn denied(id: &'static str, permission: &str) -> Check {
        Check::skip(
            id,
            format!("not allowed to call {permission} (AccessDenied); grant it to run this check"),
        )
    }

    fn new(
        id: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            id,
            status,
            region: None,
            detail: detail.into(),
            fix,
        }
    }

    pub fn in_region(mut self, region: &str) -> Check {
        self.region = Some(region.into());
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Version of this JSON shape.
    pub schema: u32,
    pub account: Option<String>,
    pub region: Option<String>,
    pub exit_code: u8,
    pub checks: Vec<Check>,
}

/// Exit code when a check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when the AWS checks could not run at all (no credentials).
pub const EXIT_NO_CREDENTIALS: u8 = 2;

impl Report {
    pub fn new(
        account: Option<String>,
        region: Option<String>,
        checks: Vec<Check>,
        credentials: bool,
    ) -> Report {
        let exit_code = if !credentials {
            EXIT_NO_CREDENTIALS
        } else if checks.iter().any(|c| c.status == Status::Fail) {
            EXIT_FAILED
        } else {
            0
        };
        Report {
            schema: 1,
            account,
            region,
            exit_code,
            checks,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let name = match &check.region {
                Some(region) => format!("{} ({region})", check.id),
                None => check.id.to_string(),
            };
            out.push_str(&format!(
                "{}  {name}: {}\n",
                check.status.label(),
                check.detail
            ));
            if let Some(fix) = &check.fix {
                for (index, line) in fix.lines().enumerate() {
                    let lead = if index == 0 {
                        "      fix: "
                    } else {
                        "           "
                    };
                    out.push_str(lead);
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        let count = |status| self.checks.iter().filter(|c| c.status == status).count();
        out.push_str(&format!(
            "\n{} passed, {} warnings, {} failed, {} skipped",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        ));
        out.push_str(match self.exit_code {
            0 => ": nothing blocks SSH.\n",
            EXIT_NO_CREDENTIALS => ": no usable AWS credentials, the AWS checks could not run.\n",
            _ => ": fix the failed checks above.\n",
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let pass = || Check::pass("identity", "ok");
        assert_eq!(
            Report::new(
                None,
                None,
                vec![pass(), Check::warn("region", "w", "f")],
                true
            )
            .exit_code,
            0
        );
        assert_eq!(
            Report::new(
                None,
                None,
                vec![pass(), Check::fail("ssm-tier", "x", "f")],
                true
            )
            .exit_code,
            1
        );
        assert_eq!(
            Report::new(None, None, vec![Check::fail("identity", "x", "f")], false).exit_code,
            2
        );
    }

    #[test]
    fn text_and_json_shapes() {
        let report = Report::new(
            Some("1".into()),
            Some("eu-west-1".into()),
            vec![Check::fail(
                "ssm-tier",
                "standard tier",
                "aws ssm update-service-setting\nsecond line",
            )
            .in_region("eu-west-1")],
            true,
        );
        let text = report.to_text();
        assert!(text.starts_with("FAIL  ssm-tier (eu-west-1): standard tier\n      fix: aws ssm update-service-setting\n           second line\n"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["exit_code"], 1);
        assert_eq!(json["checks"][0]["status"], "fail");
        assert_eq!(json["checks"][0]["region"], "eu-west-1");
        assert_eq!(json["checks"][0]["id"], "ssm-tier");
    }
}
