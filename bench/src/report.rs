//! The run's output: markdown tables and the SVG chart of the ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::contenders::{Batch, Replace};
use crate::physical::{Stretch, Syscalls};
use crate::stats::{median, min_max, Table};

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One timed table in markdown.
pub fn table_md(t: &Table) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "**{} — {}** on {}\n", t.workload, t.what, t.medium);
    let ratio_title = if t.baseline.is_empty() {
        String::new()
    } else if t.lower_is_better {
        format!(" | time ÷ {} (median of rounds)", t.baseline)
    } else {
        format!(" | {} ÷ {}'s (median of rounds)", t.unit, t.baseline)
    };
    let extra = t
        .extra
        .as_ref()
        .map(|e| format!(" | {e}"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "| contender | median {unit} | min–max {unit}{ratio_title}{extra} |",
        unit = t.unit
    );
    let cols = 3 + usize::from(!t.baseline.is_empty()) + usize::from(t.extra.is_some());
    let _ = writeln!(s, "|{}", "---|".repeat(cols));
    for r in &t.rows {
        let (lo, hi) = min_max(&r.samples);
        let ratio = if t.baseline.is_empty() {
            String::new()
        } else {
            format!(" | {:.2}×", r.ratio)
        };
        let extra = r
            .extra
            .as_ref()
            .map(|e| format!(" | {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {}–{}{ratio}{extra} |",
            r.name,
            fmt_num(median(&r.samples) * t.scale),
            fmt_num(lo * t.scale),
            fmt_num(hi * t.scale),
        );
    }
    s.push('\n');
    s
}

/// The syscall table.
pub fn syscalls_md(rows: &[Syscalls]) -> String {
    let mut s = String::from(
        "| contender | operation | syscalls per operation | the calls (per operation) |\n|---|---|---|---|\n",
    );
    for r in rows {
        let mut parts: Vec<(&String, &f64)> =
            r.by_name.iter().filter(|(_, v)| v.abs() >= 0.05).collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = parts
            .iter()
            .map(|(k, v)| {
                if (**v - v.round()).abs() < 0.05 {
                    format!("{k} {}", v.round())
                } else {
                    format!("{k} {v:.1}")
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} |",
            r.name,
            r.op,
            r.total,
            list.join(", ")
        );
    }
    s
}

/// Per-operation medians of the recorder's stretches, keyed by (fs, workload, name).
pub type PhysKey = (String, String, String);

/// Groups stretches and takes medians per operation.
pub fn phys_medians(st: &[Stretch]) -> BTreeMap<PhysKey, (f64, f64, f64, f64)> {
    let mut g: BTreeMap<PhysKey, Vec<&Stretch>> = BTreeMap::new();
    for s in st {
        g.entry((s.fs.clone(), s.workload.clone(), s.name.clone()))
            .or_default()
            .push(s);
    }
    g.into_iter()
        .map(|(k, v)| {
            let per = |f: &dyn Fn(&Stretch) -> f64| {
                median(&v.iter().map(|s| f(s) / s.ops as f64).collect::<Vec<_>>())
            };
            let m = (
                per(&|s| s.flushes as f64),
                per(&|s| s.bytes as f64),
                per(&|s| s.writes as f64),
                per(&|s| s.secs),
            );
            (k, m)
        })
        .collect()
}

/// Table order of a contender (the order of `Replace::ALL`, then `Batch::ALL`).
fn order(name: &str) -> usize {
    Replace::ALL
        .iter()
        .map(|c| c.name())
        .chain(Batch::ALL.iter().map(|c| c.name()))
        .position(|n| n == name)
        .unwrap_or(usize::MAX)
}

/// The recorder's counts as a markdown table; with times, each against the
/// workload's baseline (W1: hand-written, W3: batch syncfs).
pub fn phys_md(st: &[Stretch], with_time: bool) -> String {
    let med = phys_medians(st);
    let mut keys: Vec<&PhysKey> = med.keys().collect();
    keys.sort_by_key(|(fs, wl, name)| {
        let n: usize = wl
            .strip_prefix("w3-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (fs.clone(), n, order(name))
    });
    let mut s = String::new();
    if with_time {
        s.push_str(
            "| fs | workload | contender | flushes/op | KiB written/op | write requests/op | ms/op | time ÷ baseline |\n|---|---|---|---|---|---|---|---|\n",
        );
    } else {
        s.push_str("| fs | workload | contender | flushes/op | KiB written/op | write requests/op |\n|---|---|---|---|---|---|\n");
    }
    for k in keys {
        let (fs, wl, name) = k;
        let (fl, by, wr, secs) = med[k];
        let _ = write!(
            s,
            "| {fs} | {} | {name} | {fl:.1} | {:.1} | {wr:.1} |",
            wl_label(wl),
            by / 1024.0
        );
        if with_time {
            let base = if wl.starts_with("w3") {
                Batch::Syncfs.name()
            } else {
                Replace::HandWritten.name()
            };
            let b = med
                .get(&(fs.clone(), wl.clone(), base.to_string()))
                .map_or(f64::NAN, |v| v.3);
            let _ = write!(s, " {:.2} | {:.2}× |", secs * 1e3, secs / b);
        }
        s.push('\n');
    }
    s
}

fn wl_label(wl: &str) -> String {
    match wl.strip_prefix("w3-") {
        Some(n) => format!("W3 N={n} (per batch)"),
        None => "W1 (per replace)".into(),
    }
}

/// Ratios above this are drawn cut off at it, with their value.
const CAP: f64 = 3.0;

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// Draws the time ratios of every contender against each workload's
/// baseline, one panel per workload, one bar per medium.
pub fn chart(tables: &[Table], path: &Path) -> io::Result<()> {
    let mut workloads: Vec<String> = Vec::new();
    for t in tables {
        if !t.baseline.is_empty() && !workloads.contains(&t.workload) {
            workloads.push(t.workload.clone());
        }
    }
    let media: Vec<String> = {
        let mut m: Vec<String> = Vec::new();
        for t in tables {
            if !m.contains(&t.medium) {
                m.push(t.medium.clone());
            }
        }
        m
    };
    let panel_h = |w: &String| -> u32 {
        let n = tables
            .iter()
            .find(|t| &t.workload == w)
            .map_or(1, |t| t.rows.len());
        70 + 14 * (media.len() as u32 + 1) * n as u32
    };
    let height: u32 = workloads.iter().map(panel_h).sum::<u32>() + 10;
    let err = |e: &dyn std::fmt::Display| io::Error::other(format!("chart: {e}"));
    {
        let root = SVGBackend::new(path, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut rest = root.clone();
        for w in &workloads {
            let (area, below) = rest.split_vertically(panel_h(w));
            rest = below;
            let ts: Vec<&Table> = tables.iter().filter(|t| &t.workload == w).collect();
            let names: Vec<String> = ts[0].rows.iter().map(|r| r.name.clone()).collect();
            let slot = media.len() + 1;
            let ymax = (names.len() * slot) as f64;
            // Ratios beyond CAP are drawn to the edge with their value: the
            // contenders near 1× stay readable next to one 80× outlier.
            let xmax = ts
                .iter()
                .flat_map(|t| names.iter().map(|n| t.time_ratio(n)))
                .filter(|v| v.is_finite())
                .fold(1.0f64, f64::max)
                .min(CAP)
                * 1.15;
            let mut ch = ChartBuilder::on(&area)
                .caption(
                    format!("{w}: time ÷ {}'s (lower is faster)", ts[0].baseline),
                    ("sans-serif", 16),
                )
                .margin(6)
                .set_label_area_size(LabelAreaPosition::Left, 150)
                .set_label_area_size(LabelAreaPosition::Bottom, 24)
                .build_cartesian_2d(0f64..xmax, 0f64..ymax)
                .map_err(|e| err(&e))?;
            ch.configure_mesh()
                .disable_y_mesh()
                .disable_y_axis()
                .x_labels(8)
                .draw()
                .map_err(|e| err(&e))?;
            for (mi, medium) in media.iter().enumerate() {
                let Some(t) = ts.iter().find(|t| &t.medium == medium) else {
                    continue;
                };
                let color = COLORS[mi % COLORS.len()];
                let bars: Vec<(f64, f64)> = names
                    .iter()
                    .enumerate()
                    .filter_map(|(ni, n)| {
                        let r = t.time_ratio(n);
                        r.is_finite()
                            .then(|| (r, ymax - (ni * slot + mi + 1) as f64))
                    })
                    .collect();
                ch.draw_series(bars.iter().map(|&(r, y)| {
                    Rectangle::new([(0.0, y), (r.min(CAP), y - 0.85)], color.filled())
                }))
                .map_err(|e| err(&e))?
                .label(medium.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
                ch.draw_series(bars.iter().map(|&(r, y)| {
                    let label = if r > CAP {
                        format!("{r:.1} →")
                    } else {
                        format!("{r:.2}")
                    };
                    Text::new(
                        label,
                        (r.min(CAP) + xmax * 0.005, y - 0.1),
                        ("sans-serif", 10),
                    )
                }))
                .map_err(|e| err(&e))?;
            }
            ch.draw_series(std::iter::once(PathElement::new(
                vec![(1.0, 0.0), (1.0, ymax)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| err(&e))?;
            ch.configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 11))
                .draw()
                .map_err(|e| err(&e))?;
            for (ni, n) in names.iter().enumerate() {
                let y = ymax - (ni * slot) as f64 - slot as f64 / 2.0;
                let (px, py) = ch.backend_coord(&(0.0, y));
                root.draw(&Text::new(
                    n.clone(),
                    (px - 146, py - 4),
                    ("sans-serif", 12).into_font(),
                ))
                .map_err(|e| err(&e))?;
            }
        }
        root.present().map_err(|e| err(&e))?;
    }
    let svg = std::fs::read_to_string(path)?;
    for bad in ["href", "<image", "url(", "@import"] {
        if svg.contains(bad) {
            return Err(io::Error::other(format!(
                "chart: the SVG holds an external reference ({bad})"
            )));
        }
    }
    Ok(())
}
