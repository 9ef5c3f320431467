//! The report as one self-contained HTML file (`powercut run --html FILE`).
//!
//! Inline CSS and inline SVG only: no script, font, image or link that
//! leaves the file, so it opens the same offline, attached to a mail or
//! archived by CI. Per configuration it shows an SVG timeline of the
//! recording along the record index (writes, zeroing/discard, flushes, the
//! workload's marks and acknowledgements, the checked crash states, the
//! violations), the coverage figures, and every listed violation with its
//! stage, message, state, explanation and replay command.
//!
//! [`report`] renders a whole [`Report`]; [`page`], [`section`],
//! [`summary_table`] and [`table`] let another harness (fstx-lab) assemble
//! its own page from the same parts. Every text is escaped.

#![allow(clippy::cast_precision_loss)] // pixel coordinates

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::run::{ConfigReport, Report, Violation};
use crate::timeline::Timeline;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// A fragment identifier made of `[a-z0-9-]` only.
pub fn anchor(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:18px 24px 60px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:0 0 6px}h3{font-size:15px;margin:14px 0 6px}
p.lead{color:#4a5366;margin:0 0 14px}
section.cfg{background:#fff;border:1px solid #d9dde5;border-radius:6px;padding:14px 18px;margin:18px 0}
section.cfg.bad{border-left:6px solid #c62828}section.cfg.ok{border-left:6px solid #2e7d32}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #d9dde5;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#eef0f4}td.l,th.l{text-align:left}
tr.bad td{background:#fdecea}table.more{font-size:12px}table.more td+td,table.more th+th{text-align:left}table.more tr:target td{outline:2px solid #c62828}tr.ok td{background:#edf7ee}
dl.figs{display:grid;grid-template-columns:repeat(6,auto);gap:2px 12px;margin:6px 0;justify-content:start}
dl.figs dt{color:#5b6476}dl.figs dd{margin:0;font-variant-numeric:tabular-nums}
svg.timeline{width:100%;height:auto;background:#fbfbfc;border:1px solid #e3e6ec;border-radius:4px}
path.viol-marker{fill:#c62828}svg text{font:11px system-ui,sans-serif;fill:#4a5366}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
details.viol{border:1px solid #f0c4c0;border-radius:4px;margin:4px 0;padding:3px 8px;background:#fff8f7}
details.viol summary{cursor:pointer}details.viol:target{outline:2px solid #c62828}
pre{white-space:pre-wrap;word-break:break-word;background:#f3f4f7;padding:6px 8px;margin:4px 0;font-size:12px}
pre.expl{background:#fff4d6}code{font-size:12px}
.muted{color:#6b7386}
";

const WRITE: &str = "#3b6fd4";
const ZERO: &str = "#e08a1e";
const FLUSH: &str = "#222";
const MARK: &str = "#9aa3b5";
const ACK: &str = "#2e9e4a";
const CHECKED: &str = "#8e5cc4";
const VIOL: &str = "#c62828";

/// A whole document: `title`, a lead paragraph (escaped), then `body`
/// (HTML fragments, e.g. from [`summary_table`] and [`section`]).
pub fn page(title: &str, lead: &str, body: &[String]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head>\n<body><main>\n<h1>{t}</h1>\n\
         <p class=\"lead\">{l}</p>\n",
        t = escape(title),
        l = escape(lead)
    );
    for b in body {
        s.push_str(b);
        s.push('\n');
    }
    s.push_str("</main></body></html>\n");
    s
}

/// A table of text cells (escaped); rows flagged `true` are marked bad
/// (red), `false` good (green), `None` plain. The first column is left-aligned.
pub fn table(id: &str, headers: &[&str], rows: &[(Option<bool>, Vec<String>)]) -> String {
    let mut s = format!("<table id=\"{}\" class=\"summary\"><tr>", escape(id));
    let text_cols: Vec<bool> = (0..headers.len())
        .map(|i| {
            i == 0
                || rows.first().is_some_and(|(_, r)| {
                    r.get(i)
                        .is_some_and(|c| c.trim_end_matches('K').parse::<f64>().is_err())
                })
        })
        .collect();
    for (i, h) in headers.iter().enumerate() {
        let cls = if text_cols[i] { " class=\"l\"" } else { "" };
        let _ = write!(s, "<th{cls}>{}</th>", escape(h));
    }
    s.push_str("</tr>\n");
    for (bad, cells) in rows {
        let cls = match bad {
            Some(true) => " class=\"bad\"",
            Some(false) => " class=\"ok\"",
            None => "",
        };
        let _ = write!(s, "<tr{cls}>");
        for (i, c) in cells.iter().enumerate() {
            let cls = if text_cols.get(i).copied().unwrap_or(false) {
                " class=\"l\""
            } else {
                ""
            };
            let _ = write!(s, "<td{cls}>{}</td>", escape(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>");
    s
}

/// The per-configuration figures of the text report (`Report::table`).
pub fn summary_table(report: &Report) -> String {
    let headers = [
        "config", "records", "flush", "marks", "log", "points", "distinct", "checked", "fsck",
        "viol", "rec s", "chk s", "st/s/cpu",
    ];
    let rows: Vec<(Option<bool>, Vec<String>)> = report
        .configs
        .iter()
        .map(|c| {
            (
                Some(c.violation_count > 0),
                vec![
                    c.config.clone(),
                    c.records.to_string(),
                    c.flushes.to_string(),
                    c.marks.to_string(),
                    format!("{}K", c.log_bytes / 1024),
                    c.coverage.crash_points.to_string(),
                    c.coverage.distinct_states.to_string(),
                    c.checked.to_string(),
                    c.fsck_runs.to_string(),
                    c.violation_count.to_string(),
                    format!("{:.1}", c.record_secs),
                    format!("{:.1}", c.check_secs),
                    format!("{:.1}", c.states_per_sec_per_core),
                ],
            )
        })
        .collect();
    let mut s = table("summary", &headers, &rows);
    let _ = write!(
        s,
        "<p>{} distinct crash states checked, <b>{} violations</b>.</p>",
        report.checked, report.violations
    );
    s
}

/// A whole `powercut run` report: the summary table and one section per configuration.
pub fn report(report: &Report, title: &str) -> String {
    let mut body = vec![summary_table(report)];
    body.extend(report.configs.iter().map(|c| section(&c.config, c, "")));
    page(
        title,
        "Every crash state a power cut could leave, rebuilt from the recorded block writes and \
         flushes, mounted, recovered and checked.",
        &body,
    )
}

/// One configuration: its figures, coverage, timeline and violations.
/// `heading` names it; `prefix` keeps the element ids of several sections
/// on one page apart (e.g. the contender's name).
pub fn section(heading: &str, c: &ConfigReport, prefix: &str) -> String {
    let id = anchor(&format!("{prefix}-{}", c.config));
    let id = id.trim_start_matches('-');
    let bad = c.violation_count > 0;
    let mut s = format!(
        "<section class=\"cfg {}\" id=\"{id}\">\n<h2>{} — {}</h2>\n",
        if bad { "bad" } else { "ok" },
        escape(heading),
        if bad {
            format!("{} violations", c.violation_count)
        } else {
            "no violation".to_string()
        }
    );
    let figs: [(&str, String); 13] = [
        ("records", c.records.to_string()),
        ("writes", c.writes.to_string()),
        ("flushes", c.flushes.to_string()),
        ("marks", c.marks.to_string()),
        ("log", format!("{} KiB", c.log_bytes / 1024)),
        ("noise fsyncs", c.noise_fsyncs.to_string()),
        ("workload", format!("{:.1} s", c.workload_secs)),
        ("max in flight", c.max_in_flight.to_string()),
        ("record", format!("{:.1} s", c.record_secs)),
        ("check", format!("{:.1} s", c.check_secs)),
        ("checkers", c.jobs.to_string()),
        ("states/s/core", format!("{:.1}", c.states_per_sec_per_core)),
        ("fsck", crate::run::fsck_summary(c)),
    ];
    s.push_str("<dl class=\"figs\">");
    for (k, v) in figs {
        let _ = write!(s, "<dt>{k}</dt><dd>{}</dd>", escape(&v));
    }
    s.push_str("</dl>\n");
    s.push_str(&coverage(c));
    s.push_str(&timeline_svg(c, id));
    s.push_str(&marks_list(&c.timeline));
    s.push_str(&violations(c, id));
    if let Some(a) = &c.artifacts {
        let _ = write!(
            s,
            "<p class=\"muted\">Base image and log saved in <code>{}</code>.</p>",
            escape(a)
        );
    }
    s.push_str("</section>");
    s
}

fn coverage(c: &ConfigReport) -> String {
    let cov = &c.coverage;
    let t = &c.timeline;
    let sampled_out = cov.distinct_states.saturating_sub(cov.selected);
    let mut s = String::from("<h3>Coverage</h3><p class=\"coverage\">");
    let _ = write!(
        s,
        "{} crash points (a cut before each record and after the last); {} candidate states \
         generated, {} distinct images, {} distinct states (image and marks seen). \
         <b>{} states checked</b>",
        cov.crash_points, cov.candidates, cov.distinct_images, cov.distinct_states, c.checked
    );
    if sampled_out > 0 {
        let _ = write!(
            s,
            ", <b>{sampled_out} sampled out</b> (a seeded sample of {} kept, in log order)",
            cov.selected
        );
    } else {
        s.push_str(", none sampled out");
    }
    let _ = write!(
        s,
        ". Up to {} subsets of the unflushed writes tried at one point.",
        cov.max_subsets_per_point
    );
    if t.buckets() > 0 {
        let _ = write!(
            s,
            " Checked states fall on {} distinct crash points, at most {} at one point",
            t.points_checked, t.max_states_at_point
        );
        if t.torn + t.lies > 0 {
            let _ = write!(
                s,
                "; {} with a torn write, {} with lying flash",
                t.torn, t.lies
            );
        }
        s.push('.');
        if t.bucket > 1 {
            let _ = write!(s, " The timeline groups {} records per column.", t.bucket);
        }
    }
    s.push_str("</p>\n");
    s
}

/// Plot geometry: lanes stacked top to bottom.
const W: f64 = 1000.0;
const LEFT: f64 = 92.0;
const PW: f64 = W - LEFT - 12.0;
const H: f64 = 238.0;

/// A filled path of bars, one per non-zero bucket, growing up from `base`.
fn bars(values: &[u32], under: Option<&[u32]>, scale: f64, base: f64, colw: f64) -> String {
    let mut d = String::new();
    for (b, &v) in values.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let below = under.map_or(0.0, |u| f64::from(u[b]) * scale);
        let h = (f64::from(v) * scale).max(1.0);
        let _ = write!(
            d,
            "M{:.1} {:.1}h{:.1}v{:.1}h{:.1}z",
            LEFT + b as f64 * colw,
            base - below,
            colw.max(0.6),
            -h,
            -colw.max(0.6)
        );
    }
    d
}

/// Ticks (full lane height) at every non-zero bucket.
fn ticks(values: &[u32], top: f64, h: f64, colw: f64) -> String {
    let mut d = String::new();
    for (b, &v) in values.iter().enumerate() {
        if v > 0 {
            let _ = write!(
                d,
                "M{:.1} {top}h{:.1}v{h}h{:.1}z",
                LEFT + b as f64 * colw,
                colw.max(1.0),
                -colw.max(1.0)
            );
        }
    }
    d
}

/// The SVG timeline of one configuration (`id` prefixes violation anchors).
pub fn timeline_svg(c: &ConfigReport, id: &str) -> String {
    let tl: &Timeline = &c.timeline;
    let buckets = tl.buckets();
    let mut s = format!(
        "<h3>Timeline</h3><div class=\"legend\"><span><i style=\"background:{WRITE}\"></i>data writes</span>\
         <span><i style=\"background:{ZERO}\"></i>zeroing/discard</span>\
         <span><i style=\"background:{FLUSH}\"></i>flushes</span>\
         <span><i style=\"background:{MARK}\"></i>marks</span>\
         <span><i style=\"background:{ACK}\"></i>acknowledgements (ack…)</span>\
         <span><i style=\"background:{CHECKED}\"></i>crash states checked</span>\
         <span><i style=\"background:{VIOL}\"></i>violations</span></div>\n\
         <svg class=\"timeline\" id=\"{id}-timeline\" viewBox=\"0 0 {W} {H}\" role=\"img\">"
    );
    if buckets == 0 {
        s.push_str("<text x=\"12\" y=\"30\">no timeline in this report</text></svg>\n");
        return s;
    }
    let colw = PW / buckets as f64;
    let span = (buckets * tl.bucket) as f64;
    let lane = |out: &mut String, y: f64, label: &str| {
        let _ = write!(
            out,
            "<text x=\"{:.0}\" y=\"{y:.0}\" text-anchor=\"end\">{label}</text>",
            LEFT - 6.0
        );
    };
    // Writes and zeroing, stacked, up from y = 70.
    let top = tl
        .writes
        .iter()
        .zip(&tl.zeros)
        .map(|(wr, ze)| wr + ze)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = 58.0 / f64::from(top);
    lane(&mut s, 44.0, "writes");
    let _ = write!(
        s,
        "<text x=\"{:.0}\" y=\"20\" text-anchor=\"end\" class=\"muted\">max {top}</text>",
        LEFT - 6.0
    );
    let _ = write!(
        s,
        "<path fill=\"{WRITE}\" d=\"{}\"><title>{} data writes</title></path>",
        bars(&tl.writes, None, scale, 70.0, colw),
        c.writes
            .saturating_sub(tl.zeros.iter().sum::<u32>() as usize)
    );
    let _ = write!(
        s,
        "<path fill=\"{ZERO}\" d=\"{}\"><title>{} zeroing/discard records</title></path>",
        bars(&tl.zeros, Some(&tl.writes), scale, 70.0, colw),
        tl.zeros.iter().sum::<u32>()
    );
    lane(&mut s, 88.0, "flushes");
    let _ = write!(
        s,
        "<path fill=\"{FLUSH}\" d=\"{}\"><title>{} flushes</title></path>",
        ticks(&tl.flushes, 78.0, 14.0, colw),
        c.flushes
    );
    lane(&mut s, 110.0, "marks / acks");
    let _ = write!(
        s,
        "<path fill=\"{MARK}\" d=\"{}\"><title>{} marks</title></path>\
         <path fill=\"{ACK}\" d=\"{}\"><title>{} acknowledgements</title></path>",
        ticks(&tl.marks, 100.0, 14.0, colw),
        c.marks,
        ticks(&tl.acks, 100.0, 14.0, colw),
        tl.acks.iter().sum::<u32>()
    );
    let ctop = tl.checked.iter().copied().max().unwrap_or(0).max(1);
    lane(&mut s, 150.0, "states checked");
    let _ = write!(
        s,
        "<text x=\"{:.0}\" y=\"132\" text-anchor=\"end\" class=\"muted\">max {ctop}</text>\
         <path fill=\"{CHECKED}\" d=\"{}\"><title>{} crash states checked</title></path>",
        LEFT - 6.0,
        bars(&tl.checked, None, 38.0 / f64::from(ctop), 166.0, colw),
        c.checked
    );
    lane(&mut s, 190.0, "violations");
    // One marker per column with violations, linking to the first of them.
    let mut cols: BTreeMap<usize, Vec<(usize, &Violation)>> = BTreeMap::new();
    for (i, v) in c.violations.iter().enumerate() {
        cols.entry(v.point / tl.bucket).or_default().push((i, v));
    }
    for (b, vs) in &cols {
        let x = LEFT + (*b as f64 + 0.5) * colw;
        let (first, v) = vs[0];
        let more = if vs.len() > 1 {
            format!(" (+{} more in this column)", vs.len() - 1)
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<a href=\"#{id}-v{first}\"><path class=\"viol-marker\" d=\"M{x:.1} 178l-5 14h10z\">\
             <title>{}</title></path></a>",
            escape(&format!(
                "point {}: {} [{}] {}{more}",
                v.point,
                shorten(&v.state, 30),
                v.stage,
                shorten(v.message.lines().next().unwrap_or(""), 70)
            ))
        );
    }
    // The axis: record index.
    let _ = write!(s, "<path stroke=\"#9aa3b5\" d=\"M{LEFT} 200.5h{PW}\"/>");
    for k in 0..=4 {
        let frac = f64::from(k) / 4.0;
        let rec = (span * frac).round().min(tl.records as f64);
        let x = LEFT + PW * frac;
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            "<path stroke=\"#9aa3b5\" d=\"M{x:.1} 200v5\"/>\
             <text x=\"{x:.1}\" y=\"218\" text-anchor=\"{anchor}\">{rec:.0}</text>"
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.0}\" y=\"234\" text-anchor=\"middle\">record index (crash point)</text></svg>",
        LEFT + PW / 2.0
    );
    s
}

fn marks_list(t: &Timeline) -> String {
    if t.listed_marks.is_empty() {
        return String::new();
    }
    let total: u32 = t.marks.iter().sum();
    let mut s = format!(
        "<details><summary>Marks the workload wrote (first {} of {total}, by record index)</summary><p class=\"muted\">",
        t.listed_marks.len()
    );
    for (i, m) in t.listed_marks.iter().enumerate() {
        if i > 0 {
            s.push_str(" · ");
        }
        let _ = write!(s, "<b>{}</b>&nbsp;{}", m.at, escape(&m.text));
    }
    s.push_str("</p></details>\n");
    s
}

/// Violations shown in full (message, explanation, replay command); the
/// rest of the listed ones get one compact row each, so a report with
/// thousands of violations stays a few hundred kilobytes.
pub const FULL_VIOLATIONS: usize = 40;

fn after_mark(v: &Violation) -> String {
    v.last_mark
        .as_deref()
        .map_or("before any mark".to_string(), |m| format!("after “{m}”"))
}

fn violations(c: &ConfigReport, id: &str) -> String {
    if c.violations.is_empty() {
        return if c.violation_count == 0 {
            "<p>Every checked crash state passed.</p>\n".to_string()
        } else {
            format!("<p>{} violations (none listed).</p>\n", c.violation_count)
        };
    }
    let mut s = format!(
        "<h3>Violations ({} listed of {})</h3>\n",
        c.violations.len(),
        c.violation_count
    );
    for (i, v) in c.violations.iter().enumerate().take(FULL_VIOLATIONS) {
        let _ = write!(
            s,
            "<details class=\"viol\" id=\"{id}-v{i}\"{open}><summary>point <b>{}</b> · state \
             <code>{}</code> · <b>{}</b> failed · {} — {}</summary>\
             <pre class=\"msg\">{}</pre>",
            v.point,
            escape(&v.state),
            escape(&v.stage),
            escape(&after_mark(v)),
            escape(&shorten(v.message.lines().next().unwrap_or(""), 140)),
            escape(&shorten(&v.message, 4000)),
            open = if i == 0 { " open" } else { "" },
        );
        if let Some(e) = &v.explanation {
            let _ = write!(
                s,
                "<div>Explanation:</div><pre class=\"expl\">{}</pre>",
                escape(&shorten(e, 4000))
            );
        }
        for (what, r) in [("Replay", &v.replay), ("Replay minimal", &v.minimal_replay)] {
            if let Some(r) = r {
                let _ = write!(s, "<div>{what}: <code>{}</code></div>", escape(r));
            }
        }
        s.push_str("</details>\n");
    }
    if c.violations.len() > FULL_VIOLATIONS {
        let _ = write!(
            s,
            "<p>{} more, one line each (the full messages are in the JSON report, <code>--json</code>)",
            c.violations.len() - FULL_VIOLATIONS
        );
        if let Some(r) = &c.violations[0].replay {
            let template = r.replace(&c.violations[0].state, "STATE");
            let _ = write!(
                s,
                "; replay any of them with <code>{}</code>",
                escape(&template)
            );
        }
        s.push_str(":</p>\n<table class=\"more\"><tr><th>point</th><th class=\"l\">state</th>\
            <th class=\"l\">stage</th><th class=\"l\">last mark</th><th class=\"l\">what failed</th></tr>\n");
        for (i, v) in c.violations.iter().enumerate().skip(FULL_VIOLATIONS) {
            let _ = write!(
                s,
                "<tr class=\"viol\" id=\"{id}-v{i}\"><td>{}</td><td><code>{}</code></td>\
                 <td>{}</td><td>{}</td><td>{}",
                v.point,
                escape(&v.state),
                escape(&v.stage),
                escape(&shorten(v.last_mark.as_deref().unwrap_or("-"), 30)),
                escape(&shorten(v.message.lines().next().unwrap_or(""), 110)),
            );
            if let Some(e) = &v.explanation {
                let _ = write!(s, "<br><i>{}</i>", escape(&shorten(e, 400)));
            }
            s.push_str("</td></tr>\n");
        }
        s.push_str("</table>\n");
    }
    if c.violation_count > c.violations.len() {
        let _ = writeln!(
            s,
            "<p class=\"muted\">… {} more violations not listed.</p>",
            c.violation_count - c.violations.len()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Log, Record};
    use crate::stack::FsConfig;

    fn sample() -> Report {
        let mut log = Log::default();
        for i in 0..40u64 {
            log.push_write(i * 512, &[1; 512]);
            if i % 5 == 4 {
                log.records.push(Record::Flush);
                log.records.push(Record::Mark(format!("ack {i}")));
            }
        }
        let states: Vec<crate::StateSpec> = (0..log.records.len())
            .map(|p| crate::StateSpec {
                point: p,
                keep: vec![],
                torn: None,
                lie: None,
            })
            .collect();
        let c = ConfigReport {
            config: "ext4".into(),
            records: log.records.len(),
            checked: states.len(),
            violation_count: 1,
            violations: vec![Violation {
                config: FsConfig::Ext4,
                state: "p7:k6".into(),
                point: 7,
                last_mark: Some("ack <4>".into()),
                stage: "check".into(),
                message: "exit 1: file <a> & \"b\" lost".into(),
                replay: Some("powercut replay --from /tmp/x --state p7:k6".into()),
                explanation: Some("write 6 of file <a> lost".into()),
                minimal_replay: None,
            }],
            timeline: Timeline::new(&log, &states),
            ..ConfigReport::default()
        };
        Report {
            configs: vec![c],
            violations: 1,
            checked: 40,
        }
    }

    #[test]
    fn renders_escaped_and_self_contained() {
        let html = report(&sample(), "run <1>");
        assert!(html.contains("<title>run &lt;1&gt;</title>"));
        assert!(html.contains("file &lt;a&gt; &amp; &quot;b&quot; lost"));
        assert!(html.contains("write 6 of file &lt;a&gt; lost"));
        assert!(!html.contains("<a>"));
        assert_eq!(html.matches("<svg class=\"timeline\"").count(), 1);
        assert_eq!(html.matches("class=\"viol-marker\"").count(), 1);
        assert!(html.contains("href=\"#ext4-v0\""));
        assert!(html.contains("id=\"ext4-v0\""));
        // Inline SVG in HTML needs no namespace: no URL at all.
        assert!(!html.contains("http"), "{html}");
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
    }

    #[test]
    fn many_violations_get_compact_rows_with_anchors() {
        let mut r = sample();
        let c = &mut r.configs[0];
        let v = c.violations[0].clone();
        c.violations = (0..FULL_VIOLATIONS + 5)
            .map(|i| Violation {
                point: i,
                state: format!("p{i}"),
                replay: Some(format!(
                    "powercut replay --from /tmp/x --state p{i} --out /tmp/y"
                )),
                ..v.clone()
            })
            .collect();
        c.violation_count = 1000;
        let html = report(&r, "many");
        assert_eq!(
            html.matches("<details class=\"viol\"").count(),
            FULL_VIOLATIONS
        );
        assert_eq!(html.matches("<tr class=\"viol\"").count(), 5);
        assert!(html.contains(&format!("id=\"ext4-v{}\"", FULL_VIOLATIONS + 4)));
        assert!(html.contains("--state STATE --out /tmp/y"));
        assert!(html.contains("955 more violations not listed"));
    }

    #[test]
    fn an_old_report_without_timeline_still_renders() {
        let mut r = sample();
        r.configs[0].timeline = Timeline::default();
        let html = report(&r, "old");
        assert!(html.contains("no timeline in this report"));
        assert!(html.contains("id=\"ext4-v0\""));
    }
}
