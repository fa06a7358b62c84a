//! `sm-ssh list`: the SSH-enabled instances (registered by
//! sagemaker-ssh-helper, tagged `SSHOwner`), the Studio spaces, and the host
//! name to give ssh. One DescribeInstanceInformation (paged) and concurrent
//! ListTagsForResource calls; ListSpaces and ListApps for the spaces (see
//! `list_spaces`); ListClusters, DescribeCluster and ListClusterNodes for
//! HyperPod nodes (see `list_nodes`); training jobs with remote debugging and
//! endpoints with SSM access (`list_native`). Given a whole target
//! name, it runs the resolution `connect` and `ssh` use and shows the one
//! instance they would reach (or fails as they would).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;

use crate::cli::Global;
use crate::error::{exit, Failure};
use crate::path::hyperpod::{self, NodeInfo};
use crate::path::sagemaker_native::NativeInfo;
use crate::path::space::{self, SpaceInfo};
use crate::path::{self, endpoint, training, Detail, Reach};
use crate::resolve::candidate::{tagged_resource, Candidate};
use crate::resolve::{format_epoch, region_name, ssm, Owner, ResolveArgs};
use crate::target::{Target, TargetError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only instances whose host name, name or instance id contains this
    /// text, or matches it as a glob (`*`, `?`). A whole target name
    /// (`my-job.training.sagemaker`, `mi-…`) shows the instance `connect`
    /// would use.
    pub pattern: Option<String>,
    /// Print JSON (an array of objects, fields as documented) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub resolve: ResolveArgs,
}

/// One line of the listing; the JSON form is an array of these.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    /// What to give ssh / `sm-ssh connect`.
    pub host: String,
    /// Job, endpoint, notebook or app name; null when the tags name nothing.
    pub name: Option<String>,
    /// `training`, …, `studio`, or `space`.
    pub kind: Option<String>,
    pub instance_id: String,
    pub ping_status: String,
    /// RFC 3339.
    pub last_ping: Option<String>,
    /// RFC 3339: the SSHTimestamp tag, else SSM's registration date.
    pub registered: Option<String>,
    pub computer_name: String,
    pub owner: Option<String>,
    pub resource_arn: Option<String>,
    /// HyperPod nodes only: the cluster and instance group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_group: Option<String>,
    /// HyperPod nodes only: the Session Manager target sessions start on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_target: Option<String>,
    /// Spaces only: `SpaceSettings.RemoteAccess` is ENABLED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_access: Option<bool>,
    /// How sm-ssh reaches it: `helper` (an instance sagemaker-ssh-helper
    /// registered), `space`, `hyperpod` (a HyperPod node's own target),
    /// `remote-debug` (a training job's own target), `ssm-access` (an
    /// endpoint container's own target), `native` (a target string as given).
    pub path: &'static str,
    #[serde(skip)]
    last_ping_secs: Option<i64>,
    #[serde(skip)]
    registered_secs: Option<i64>,
}

impl Row {
    fn new(candidate: Candidate) -> Row {
        let resource = tagged_resource(&candidate.tags);
        let registered_secs = Some(candidate.timestamp()).filter(|t| *t > 0);
        let tag = |key: &str| candidate.tags.get(key).filter(|v| !v.is_empty()).cloned();
        Row {
            host: resource
                .as_ref()
                .map(|r| r.host_name())
                .unwrap_or_else(|| candidate.instance_id.clone()),
            name: resource.as_ref().map(|r| r.name.clone()),
            kind: resource.as_ref().map(|r| r.kind.to_string()),
            remote_access: None,
            cluster: None,
            instance_group: None,
            session_target: None,
            path: "helper",
            owner: tag("SSHOwner"),
            resource_arn: tag("SSHResourceArn"),
            last_ping: candidate.last_ping.map(rfc3339),
            registered: registered_secs.map(rfc3339),
            last_ping_secs: candidate.last_ping,
            registered_secs,
            instance_id: candidate.instance_id,
            ping_status: candidate.ping_status,
            computer_name: candidate.computer_name,
        }
    }

    /// The row of what a whole target name reaches.
    fn from_reach(reach: Reach) -> Row {
        match reach.detail {
            Detail::Ssm(candidate) => Row::new(candidate),
            // SSM does not describe native targets.
            Detail::Native => Row {
                path: "native",
                ..Row::new(Candidate {
                    instance_id: reach.session_target,
                    ping_status: "Unknown".into(),
                    ..Candidate::default()
                })
            },
            Detail::Space(info) => Row::space(&info),
            Detail::HyperPod(node) => Row::node(&node),
            Detail::SageMaker(info) => Row::native(&reach.name, &info, reach.session_target),
        }
    }

    /// A HyperPod node: named by its instance id, its status the node's.
    fn node(node: &NodeInfo) -> Row {
        Row {
            host: node.host(),
            name: Some(node.cluster.clone()),
            kind: Some("hyperpod".into()),
            instance_id: node.instance_id.clone(),
            ping_status: node.status.clone(),
            last_ping: None,
            registered: Some(node.launch_time).filter(|t| *t > 0).map(rfc3339),
            computer_name: node.host_name.clone(),
            owner: None,
            resource_arn: Some(node.cluster_arn.clone()),
            remote_access: None,
            cluster: Some(node.cluster.clone()),
            instance_group: Some(node.group.clone()),
            session_target: Some(node.session_target()),
            last_ping_secs: None,
            registered_secs: Some(node.launch_time).filter(|t| *t > 0),
            path: "hyperpod",
        }
    }

    /// A Studio space: its status is its app's.
    fn space(info: &SpaceInfo) -> Row {
        Row {
            host: info.host_name(),
            name: Some(info.space.clone()),
            kind: Some("space".into()),
            instance_id: String::new(),
            ping_status: info.app_status.clone().unwrap_or_else(|| "Stopped".into()),
            last_ping: None,
            registered: info.app_created_ms.map(|ms| rfc3339(ms / 1000)),
            computer_name: String::new(),
            owner: Some(info.owner.clone()).filter(|o| !o.is_empty()),
            resource_arn: Some(info.arn.clone()),
            remote_access: Some(info.remote_access),
            cluster: None,
            instance_group: None,
            session_target: None,
            path: "space",
            last_ping_secs: None,
            registered_secs: info.app_created_ms.map(|ms| ms / 1000),
        }
    }

    /// A training job's host or an endpoint's container, reached natively:
    /// `instance_id` holds the Session Manager target.
    fn native(host: &str, info: &NativeInfo, target: String) -> Row {
        Row {
            host: host.to_string(),
            name: Some(info.resource.clone()),
            kind: Some(info.kind.to_string()),
            instance_id: target,
            ping_status: info.status.clone(),
            last_ping: None,
            registered: None,
            computer_name: match &info.container {
                Some(container) => format!("{} {container}", info.node),
                None => info.node.clone(),
            },
            owner: None,
            resource_arn: None,
            remote_access: None,
            cluster: None,
            instance_group: None,
            session_target: None,
            path: if info.kind == "training" {
                "remote-debug"
            } else {
                "ssm-access"
            },
            last_ping_secs: None,
            registered_secs: None,
        }
    }

    fn matches(&self, pattern: &str) -> bool {
        let mut fields = [
            Some(&self.host),
            self.name.as_ref(),
            Some(&self.instance_id),
        ]
        .into_iter()
        .flatten();
        if pattern.contains(['*', '?']) {
            fields.any(|field| glob(&pattern.to_ascii_lowercase(), &field.to_ascii_lowercase()))
        } else {
            let pattern = pattern.to_ascii_lowercase();
            fields.any(|field| field.to_ascii_lowercase().contains(&pattern))
        }
    }
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sdk = crate::aws::load(global).await;
    // A whole target name: show what `connect` and `ssh` would use.
    if let Some(target) = args
        .pattern
        .as_deref()
        .map(whole_target)
        .transpose()?
        .flatten()
    {
        let reach = path::select(&target)
            .resolve(&sdk, &target, &args.resolve.options())
            .await?;
        let mut row = Row::from_reach(reach);
        if let Target::HyperPod(named) = &target {
            row.host = named.host_name();
        }
        if let Target::SageMaker(named) = &target {
            row.host = named.host_name();
            row.name = Some(named.name.clone());
            row.kind = Some(named.kind.to_string());
        }
        print_rows(&[row], args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.resolve.node.is_some() || args.resolve.wait.is_some() {
        return Err(Failure::new(
            exit::USAGE,
            "--node and --wait need a whole target name, e.g. `sm-ssh list my-job.training.sagemaker --wait`",
        )
        .into());
    }
    let owner = Owner::parse(args.resolve.owner.as_deref());
    let owner_id = owner.user_id(&sdk).await?;
    let client = aws_sdk_ssm::Client::new(&sdk);
    let filter = match &owner_id {
        Some(id) => ssm::filter("tag:SSHOwner", &[id]),
        None => ssm::filter("tag-key", &["SSHOwner"]),
    };
    let instances = ssm::describe(&client, vec![filter]).await?;
    let instances = ssm::fetch_tags(&client, instances).await?;
    tracing::debug!(count = instances.len(), owner = ?owner_id, "listed SSH-enabled instances");
    let (spaces, nodes, natives) =
        tokio::join!(list_spaces(&sdk), list_nodes(&sdk), list_native(&sdk));
    let mut rows: Vec<Row> = instances
        .into_iter()
        .map(Row::new)
        .chain(spaces.iter().map(Row::space))
        .chain(nodes.iter().map(Row::node))
        .chain(natives)
        .filter(|row| args.pattern.as_deref().is_none_or(|p| row.matches(p)))
        .collect();
    sort(&mut rows);
    if rows.is_empty() && !args.json {
        let whose = match &owner_id {
            Some(id) => format!("with SSHOwner = {id}"),
            None => "of any owner".to_string(),
        };
        let matching = args
            .pattern
            .as_ref()
            .map(|p| format!(" matching `{p}`"))
            .unwrap_or_default();
        eprintln!(
            "No SSH-enabled instances {whose}{matching} in {}. Instances appear once a job or app \
             running sagemaker-ssh-helper registers with SSM; `--owner any` lists everyone's, \
             --region looks elsewhere.",
            region_name(&sdk)
        );
    } else {
        print_rows(&rows, args.json)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The spaces ListSpaces shows, with their apps from ListApps. Spaces are
/// an addition to the listing: when SageMaker refuses, one line says why
/// and the instances are still listed.
async fn list_spaces(sdk: &aws_config::SdkConfig) -> Vec<SpaceInfo> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    match space::list(&client).await {
        Ok(spaces) => spaces,
        Err(error) => {
            eprintln!("sm-ssh: Studio spaces not listed: {}", error.message(None));
            Vec::new()
        }
    }
}

/// Every HyperPod cluster's nodes (the running ones and the others, with
/// their status), an addition to the listing as spaces are.
async fn list_nodes(sdk: &aws_config::SdkConfig) -> Vec<NodeInfo> {
    let client = aws_sdk_sagemaker::Client::new(sdk);
    match hyperpod::list(&client).await {
        Ok(clusters) => clusters.into_iter().flat_map(|c| c.nodes).collect(),
        Err(error) => {
            let (_, message) = crate::error::describe(&error, None);
            eprintln!("sm-ssh: HyperPod nodes not listed: {message}");
            Vec::new()
        }
    }
}

/// Training jobs with remote debugging on and endpoints with SSM access, one
/// row per host or container. Like spaces, an addition: a refusal is one line.
async fn list_native(sdk: &aws_config::SdkConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    match training::debuggable(sdk).await {
        Ok(jobs) => {
            for job in jobs {
                let host = format!("{}.training.sagemaker", job.name);
                for node in 1..=job.instance_count {
                    let info = NativeInfo {
                        kind: "training",
                        resource: job.name.clone(),
                        status: job.secondary_status.clone(),
                        node: format!("algo-{node}"),
                        container: None,
                    };
                    rows.push(Row::native(&host, &info, job.target(node)));
                }
            }
        }
        Err(error) => eprintln!("sm-ssh: training jobs not listed: {}", error.summary()),
    }
    match endpoint::accessible(sdk).await {
        Ok(endpoints) => {
            for (endpoint, instances) in endpoints {
                let host = format!("{}.inference.sagemaker", endpoint.name);
                for instance in instances {
                    for (container, target) in instance.targets(&endpoint.name) {
                        let info = NativeInfo {
                            kind: "inference",
                            resource: endpoint.name.clone(),
                            status: endpoint.status.clone(),
                            node: instance.instance_id.clone(),
                            container,
                        };
                        rows.push(Row::native(&host, &info, target));
                    }
                }
            }
        }
        Err(error) => eprintln!(
            "sm-ssh: endpoints not listed: {}",
            crate::error::describe(&error, None).1
        ),
    }
    rows
}

fn print_rows(rows: &[Row], json: bool) -> anyhow::Result<()> {
    if json {
        let json = serde_json::to_string_pretty(rows).context("encoding JSON")?;
        println!("{json}");
    } else {
        print!("{}", table(rows, now()));
    }
    Ok(())
}

/// The target a pattern names, if it is meant as one: it parses, or it has
/// no glob characters and looks like a target (ends in `.sagemaker` or has a
/// `prefix:`), in which case the parse error is the answer. Partial
/// instance ids stay patterns.
fn whole_target(pattern: &str) -> Result<Option<Target>, TargetError> {
    match Target::parse(pattern) {
        Ok(target) => Ok(Some(target)),
        Err(error) => {
            let looks_like_target =
                pattern.trim_end_matches('.').ends_with(".sagemaker") || pattern.contains(':');
            if looks_like_target && !pattern.contains(['*', '?']) {
                Err(error)
            } else {
                Ok(None)
            }
        }
    }
}

/// By host name, then Online first, then newest.
fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        a.host
            .cmp(&b.host)
            .then((b.ping_status == "Online").cmp(&(a.ping_status == "Online")))
            .then(b.registered_secs.cmp(&a.registered_secs))
            .then(a.instance_id.cmp(&b.instance_id))
    });
}

/// The aligned table, with a header line.
fn table(rows: &[Row], now: i64) -> String {
    let header = [
        "NAME",
        "KIND",
        "INSTANCE",
        "STATUS",
        "LAST PING",
        "AGE",
        "HOST",
    ];
    let mut lines: Vec<[String; 7]> = vec![header.map(String::from)];
    for row in rows {
        lines.push([
            row.name.clone().unwrap_or_else(|| "-".into()),
            row.kind.clone().unwrap_or_else(|| "-".into()),
            Some(row.instance_id.clone())
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| "-".into()),
            match row.remote_access {
                Some(false) => format!("{} (remote access off)", row.ping_status),
                _ => row.ping_status.clone(),
            },
            row.last_ping_secs
                .map(|t| format!("{} ago", span(now - t)))
                .unwrap_or_else(|| "-".into()),
            row.registered_secs
                .map(|t| span(now - t))
                .unwrap_or_else(|| "-".into()),
            row.host.clone(),
        ]);
    }
    aligned(&lines)
}

/// Rows of cells as left-aligned columns two spaces apart, one line each.
pub fn aligned<R: AsRef<[String]>>(lines: &[R]) -> String {
    let columns = lines.first().map_or(0, |l| l.as_ref().len());
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|l| l.as_ref()[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .as_ref()
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A duration in its largest unit: `45s`, `12m`, `3h`, `9d`.
fn span(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

fn rfc3339(secs: i64) -> String {
    format_epoch(secs)
        .trim_end_matches(" UTC")
        .replacen(' ', "T", 1)
        + "Z"
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `*` matches any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, arn: &str, status: &str, timestamp: i64) -> Candidate {
        Candidate {
            instance_id: id.into(),
            ping_status: status.into(),
            last_ping: Some(timestamp + 30),
            registered: Some(timestamp),
            computer_name: "algo-1".into(),
            tags: [
                ("SSHResourceArn".to_string(), arn.to_string()),
                ("SSHOwner".to_string(), "AROA:me".to_string()),
            ]
            .into(),
        }
    }

    #[test]
    fn rows_name_the_host_to_use() {
        let row = Row::new(candidate(
            "mi-1",
            "arn:aws:sagemaker:r:1:training-job/job",
            "Online",
            1_700_000_000,
        ));
        assert_eq!(row.host, "job.training.sagemaker");
        assert_eq!(row.kind.as_deref(), Some("training"));
        assert_eq!(row.registered.as_deref(), Some("2023-11-14T22:13:20Z"));
        let endpoint = Row::new(candidate("mi-2", "", "Online", 1));
        assert_eq!(endpoint.host, "mi-2");
        assert_eq!(endpoint.name, None);
        assert_eq!(endpoint.resource_arn, None);
    }

    #[test]
    fn table_is_aligned_with_ages() {
        let rows = vec![Row::new(candidate(
            "mi-0123456789abcdef0",
            "arn:aws:sagemaker:r:1:training-job/job",
            "Online",
            1000,
        ))];
        let text = table(&rows, 1000 + 7200);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME  KIND      INSTANCE"));
        assert!(lines[1].contains("1h ago"), "{text}");
        assert!(lines[1].contains("  2h  "), "{text}");
        assert!(lines[1].ends_with("job.training.sagemaker"));
        assert_eq!(lines[0].find("INSTANCE"), lines[1].find("mi-"));
    }

    #[test]
    fn patterns_are_substrings_or_globs() {
        let row = Row::new(candidate(
            "mi-1",
            "arn:aws:sagemaker:r:1:training-job/my-job",
            "Online",
            1,
        ));
        assert!(row.matches("my-j"));
        assert!(row.matches("*.training.*"));
        assert!(row.matches("MY-JOB"));
        assert!(!row.matches("*.processing.*"));
        assert!(!row.matches("other"));
        assert!(glob("a*c?", "abbbcd"));
        assert!(!glob("a*c", "abd"));
    }

    #[test]
    fn patterns_that_look_like_targets_must_be_targets() {
        assert!(matches!(
            whole_target("job.training.sagemaker"),
            Ok(Some(Target::SageMaker(_)))
        ));
        assert!(whole_target("job.lambda.sagemaker").is_err());
        assert!(matches!(whole_target("mi-0abc"), Ok(None)));
        assert!(matches!(whole_target("*.training.sagemaker"), Ok(None)));
        assert!(matches!(whole_target("my-job"), Ok(None)));
    }

    #[test]
    fn spans() {
        assert_eq!(span(5), "5s");
        assert_eq!(span(600), "10m");
        assert_eq!(span(90_000), "1d");
        assert_eq!(span(-3), "0s");
    }
}
