//! `sm-ssh-bench`: measures sm-ssh and its peers against the fake AWS and
//! writes docs/benchmarks.md and its charts. Not part of the test suite.
//!
//! Run everything (about ten minutes on two cores):
//!     cargo run --release -p sm-ssh-bench -- --all

mod charts;
mod machine;
mod procfs;
mod report;
mod results;
mod stats;
mod tcp;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::results::Results;

#[derive(Debug, Parser)]
#[command(name = "sm-ssh-bench", about = "Benchmarks sm-ssh and its peers against the fake AWS")]
struct Args {
    /// Regenerate the report and charts from a saved results file, measuring nothing.
    #[arg(long, value_name = "RESULTS_JSON")]
    render_only: Option<PathBuf>,
    /// The report to update (only its generated block is replaced).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = workspace_root()?;
    let out = root.join(&args.out);
    let path = args
        .render_only
        .context("nothing to do: pass --render-only <results.json>")?;
    let results: Results = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    )?;
    publish(&root, &out, &results)
}

/// Writes the report, its charts and the raw results.
fn publish(root: &std::path::Path, out: &std::path::Path, results: &Results) -> anyhow::Result<()> {
    let dir = root.join("docs/benchmarks");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(results)?)?;
    draw_charts(&dir, results)?;
    report::write(out, results)?;
    eprintln!("sm-ssh-bench: wrote {}", out.display());
    Ok(())
}

fn draw_charts(dir: &std::path::Path, r: &Results) -> anyhow::Result<()> {
    use charts::Series;
    let mut loss: Vec<Series> = Vec::new();
    for l in &r.loss {
        let label = format!("{} {}", l.tool, l.direction.name());
        match loss.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push((l.loss_pct, l.mb_s.median)),
            None => loss.push(Series {
                label,
                points: vec![(l.loss_pct, l.mb_s.median)],
            }),
        }
    }
    if !loss.is_empty() {
        charts::line_chart(
            &dir.join("throughput-vs-loss.svg"),
            "Throughput vs frame loss (realistic pacing)",
            "frames dropped per direction (%)",
            "MB/s (median)",
            &loss,
        )?;
    }
    let mut setup: Vec<Series> = Vec::new();
    for s in &r.setup {
        let label = format!("{}: {}", s.tool, s.scenario);
        let point = (s.added_latency_ms as f64, s.wall_ms.median);
        match setup.iter_mut().find(|x| x.label == label) {
            Some(x) => x.points.push(point),
            None => setup.push(Series {
                label,
                points: vec![point],
            }),
        }
    }
    if !setup.is_empty() {
        charts::line_chart(
            &dir.join("setup-latency.svg"),
            "Setup latency vs latency added per API call and websocket frame",
            "added latency (ms)",
            "ms to first banner byte / to exit (median)",
            &setup,
        )?;
    }
    Ok(())
}

/// The workspace root: where this crate's parent manifest is.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("bench/ has no parent directory")?
        .to_path_buf())
}
