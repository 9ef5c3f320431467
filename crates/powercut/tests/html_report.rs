//! The HTML report (`powercut run --html`), rendered by a real browser.
//!
//! A small real run of a writer that loses acknowledged updates (temp file
//! and rename without fsync) writes its report as HTML; headless Chromium
//! (Debian's `chromium`, installed by `scripts/setup`) parses it and takes
//! a screenshot. Like the other tools these tests use (mkfs, setpriv), a
//! missing `chromium` fails the test with a message saying so; there is no
//! skip switch.
//!
//! Knobs: `POWERCUT_TEST_HTML_FS` (configurations, default `ext4,xfs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use powercut::Report;

mod common;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("powercut-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs headless Chromium on `page` with `args`; returns its stdout.
fn chromium(page: &Path, profile: &Path, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stderr(Stdio::piped())
        .output()
        .expect("coreutils timeout");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}\nchromium is needed for this test: run scripts/setup \
         (apt-get install chromium)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `s` as a browser serialises a text node.
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Nothing in the page may reach outside the file.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "http://",
        "https://",
        "src=",
        "href=\"//",
        "href='//",
        "<link",
        "<script",
        "@import",
        "url(",
        "<iframe",
        "<img",
    ] {
        assert!(!lower.contains(bad), "the report contains `{bad}`");
    }
    for (i, _) in lower.match_indices("href=\"") {
        let target = &lower[i + 6..];
        assert!(
            target.starts_with('#'),
            "a link leaves the page: {}",
            &target[..40.min(target.len())]
        );
    }
}

/// The pixels of a PNG (compressed): checks the signature and size, and
/// returns the concatenated IDAT bytes.
fn png_idat(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut at = 8;
    let mut idat = Vec::new();
    let mut size = None;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                let w = u32::from_be_bytes(data[..4].try_into().unwrap());
                let h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                size = Some((w, h));
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    assert_eq!(size, Some((width, height)), "screenshot size");
    idat
}

#[test]
fn mount_html_report_renders_in_chromium() {
    let dir = tmp("html");
    let fs = std::env::var("POWERCUT_TEST_HTML_FS").unwrap_or_else(|_| "ext4,xfs".into());
    let (html_path, json_path) = (dir.join("report.html"), dir.join("report.json"));
    let out = common::run_writer(&fs, "rename-nosync")
        .args(["--max-states", "60"])
        .arg("--json")
        .arg(&json_path)
        .arg("--html")
        .arg(&html_path)
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .env("WRITER_ITERATIONS", "12")
        .stderr(Stdio::inherit())
        .output()
        .expect("run powercut");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the planted writer must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut report: Report = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let html = std::fs::read_to_string(&html_path).unwrap();
    println!("HTML report: {} bytes", html.len());
    assert_self_contained(&html);

    // The explain step fills `explanation`; plant one (with characters that
    // must be escaped) in every configuration's first violation.
    for c in &mut report.configs {
        assert!(c.violation_count > 0, "no violation on {}", c.config);
        assert!(c.timeline.records == c.records && c.timeline.buckets() > 0);
        c.violations[0].explanation = Some(format!(
            "EXPLAINED on {}: write 12 of <file a> lost & write 13 kept",
            c.config
        ));
    }
    let explained = dir.join("explained.html");
    let html2 = powercut::html::report(&report, "explained");
    assert_self_contained(&html2);
    std::fs::write(&explained, &html2).unwrap();

    let profile = dir.join("chromium-profile");
    for (page, with_expl) in [(&html_path, false), (&explained, true)] {
        let dom = chromium(page, &profile, &["--dump-dom"]);
        assert!(dom.contains("</html>"), "no DOM from chromium: {dom}");
        assert!(dom.contains("<table id=\"summary\""), "no summary table");
        assert_eq!(
            dom.matches("<svg class=\"timeline\"").count(),
            report.configs.len(),
            "one SVG timeline per configuration"
        );
        for c in &report.configs {
            let id = powercut::html::anchor(&c.config);
            let start = dom
                .find(&format!("<section class=\"cfg bad\" id=\"{id}\""))
                .unwrap_or_else(|| panic!("no section for {}", c.config));
            let end = dom[start..].find("</section>").unwrap() + start;
            let sec = &dom[start..end];
            // The summary row: config and its violation count.
            assert!(
                dom.contains(&format!(
                    "<td class=\"l\">{}</td><td>{}</td>",
                    c.config, c.records
                )),
                "summary row of {}",
                c.config
            );
            assert!(sec.contains(&format!("id=\"{id}-timeline\"")));
            let markers = sec.matches("class=\"viol-marker\"").count();
            assert!(markers >= 1, "no violation marker on {}", c.config);
            assert!(markers <= c.violations.len());
            assert!(sec.contains(&format!("href=\"#{id}-v0\"")));
            assert_eq!(
                sec.matches(&format!("id=\"{id}-v")).count(),
                c.violations.len(),
                "every listed violation with its details on {}",
                c.config
            );
            let v = &c.violations[0];
            assert!(sec.contains(&format!("id=\"{id}-v0\"")));
            assert!(sec.contains(&v.state), "state of the first violation");
            assert!(sec.contains("powercut replay --from"), "replay command");
            let first = v.message.lines().next().unwrap_or("");
            assert!(
                sec.contains(&dom_text(first)),
                "message of the first violation"
            );
            let expl = format!(
                "EXPLAINED on {}: write 12 of &lt;file a&gt; lost &amp; write 13 kept",
                c.config
            );
            assert_eq!(
                sec.contains(&expl),
                with_expl,
                "explanation on {}",
                c.config
            );
            assert!(sec.contains("sampled out") || sec.contains("none sampled out"));
        }
    }

    let shot = dir.join("shot.png");
    chromium(
        &explained,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
            "--hide-scrollbars",
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    println!("screenshot: {} bytes", png.len());
    // A single-colour 1200x1600 page compresses to a few KB.
    assert!(
        png.len() > 10_000,
        "screenshot too small: {} bytes",
        png.len()
    );
    let idat = png_idat(&png, 1200, 1600);
    let mut seen = [false; 256];
    for &b in &idat {
        seen[b as usize] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    assert!(
        distinct > 200,
        "the screenshot's pixel data hardly varies ({distinct} byte values)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
