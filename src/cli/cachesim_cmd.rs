//! `grok1-quant cachesim`: replay a routing trace (`--trace`) under each replacement policy and
//! Belady's optimal, at several capacities (in experts).

use super::common::read_text;
use super::CliResult;
use crate::cache::sim::{accesses, belady, parse_trace, simulate, Granularity};
use crate::cache::PolicyKind;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CachesimArgs {
    /// A trace written by --trace (JSON lines).
    pub trace: PathBuf,
    /// Capacities in experts, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub capacity: Vec<usize>,
    /// token: every (token, layer) is a step (one-token decode); batch: every (batch, layer)
    /// touches the batch's distinct experts once (what the batched forward pass does).
    #[arg(long, default_value = "token", value_parser = parse_granularity)]
    pub granularity: Granularity,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_granularity(s: &str) -> Result<Granularity, String> {
    match s {
        "token" => Ok(Granularity::Token),
        "batch" => Ok(Granularity::Batch),
        o => Err(format!("unknown granularity '{o}' (known: token, batch)")),
    }
}

#[derive(serde::Serialize)]
struct Row {
    capacity: usize,
    accesses: usize,
    lru: f64,
    lfu: f64,
    belady: f64,
}

pub fn run(a: CachesimArgs) -> CliResult {
    let trace = parse_trace(&read_text(&a.trace)?)?;
    if trace.is_empty() {
        return Err(format!("{}: empty trace", a.trace.display()).into());
    }
    let (acc, n_exp) = accesses(&trace, a.granularity);
    let units = trace.iter().map(|r| r.layer).max().unwrap_or(0) + 1;
    let rate = |h: u64| h as f64 / acc.len().max(1) as f64;
    let rows: Vec<Row> = a
        .capacity
        .iter()
        .map(|&c| Row {
            capacity: c,
            accesses: acc.len(),
            lru: rate(simulate(&acc, c, PolicyKind::Lru)),
            lfu: rate(simulate(&acc, c, PolicyKind::Lfu)),
            belady: rate(belady(&acc, c)),
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{}: {} records, {} layers × {} experts = {} units, {} accesses ({:?} granularity)",
        a.trace.display(),
        trace.len(),
        units,
        n_exp,
        units * n_exp,
        acc.len(),
        a.granularity
    );
    println!("| capacity | LRU hit rate | LFU hit rate | Belady (optimal) |");
    println!("|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} |",
            r.capacity, r.lru, r.lfu, r.belady
        );
    }
    Ok(())
}
