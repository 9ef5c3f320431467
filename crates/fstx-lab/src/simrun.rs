//! `fstx-lab powercut` without the kernel stack: the same contenders run on the
//! in-process simulator (`fstx-sim`), whose persistence model is weaker than
//! any real filesystem's, crashed after every storage call.

use std::process::ExitCode;

use fstx_cli::Failure;

use crate::experiment::Contender;

/// The simulator workloads that stand for a contender (`None`: the
/// contender's writer does not go through fstx's storage seam, so the
/// simulator cannot run it).
fn workloads(contender: Contender) -> Option<&'static [&'static str]> {
    match contender {
        Contender::Fstx => Some(&["replace/durable", "update/durable", "txn"]),
        // temp + rename + fsync(dir), no fsync of the temp file
        Contender::Seed2002 => Some(&["replace/durable+no_file_sync"]),
        Contender::NoFlush => Some(&["replace/durable+no_file_sync+no_dir_sync"]),
        Contender::InPlace => None,
        Contender::CommitBeforeData => Some(&["txn+commit_before_data_write"]),
    }
}

/// Runs the experiment on the simulator: `workers * seconds` seeds of each
/// workload (at least `workers`), every crash point, sampled crash states.
pub(crate) fn run(
    workers: usize,
    seconds: f64,
    contenders: &[Contender],
    seed: u64,
) -> Result<ExitCode, Failure> {
    // At least one seed per worker, more for longer runs (`seconds` > 0 was checked).
    #[allow(clippy::cast_sign_loss)]
    let seeds = workers as u64 * (seconds.max(1.0).ceil() as u64);
    println!(
        "\nPower-cut experiment on the in-process simulator (weakest persistence model), {seeds} seeds per workload\n"
    );
    println!(
        "{:<19} {:>9} {:>9} {:>8}  verdict",
        "writer", "states", "distinct", "violat."
    );
    let mut fstx_failed = false;
    let mut examples = Vec::new();
    for &contender in contenders {
        let Some(names) = workloads(contender) else {
            println!(
                "{:<19} {:>9} {:>9} {:>8}  not modelled: it bypasses fstx's storage seam",
                contender.name(),
                "-",
                "-",
                "-"
            );
            continue;
        };
        // The simulator models the unsafe recipes with planted flush bugs
        // (`+no_file_sync`...), a storage wrapper of the simulator crate.
        let built: Vec<_> = names
            .iter()
            .map(|name| fstx_sim::workloads::by_name(name).expect("a known workload"))
            .collect();
        let mut total = fstx_sim::Report::default();
        for workload in &built {
            for s in 0..seeds {
                let cfg = fstx_sim::Config::new(seed.wrapping_mul(1_000_003).wrapping_add(s));
                total.merge(fstx_sim::explore(workload.as_ref(), &cfg));
            }
        }
        let verdict = if total.violation_count == 0 {
            "every state old-or-new, acknowledged data present".to_string()
        } else {
            "crash states lost or corrupted data".to_string()
        };
        println!(
            "{:<19} {:>9} {:>9} {:>8}  {verdict}",
            contender.name(),
            total.states_checked,
            total.distinct.len(),
            total.violation_count
        );
        if contender == Contender::Fstx && total.violation_count > 0 {
            fstx_failed = true;
        }
        if let Some(v) = total.violations.first() {
            examples.push(format!(
                "- {} ({}): {} ({})\n  replay it: {}",
                contender.name(),
                contender.describe(),
                v.message,
                v.phase,
                v.replay_command()
            ));
        }
    }
    if !examples.is_empty() {
        println!("\nWhat the power cut did to each writer:");
        for e in &examples {
            println!("{e}");
        }
    }
    if fstx_failed {
        return Err(Failure::new(
            "fstx itself failed a crash state: see the report above",
        ));
    }
    Ok(ExitCode::SUCCESS)
}
