//! `/metrics` content negotiation (SPEC §14): the registry is written once as OpenMetrics
//! text (what `prometheus-client` encodes) and, unless the scraper's `Accept` asks for
//! OpenMetrics, turned into the Prometheus text format 0.0.4.
//!
//! The two formats differ only in a few places, all handled here line by line:
//! a counter family is named with its `_total` suffix in 0.0.4 (`# TYPE x_total
//! counter`, so text parsers attach the `x_total` samples to it), an info family becomes
//! a gauge named `x_info`, `stateset` becomes `gauge`, `unknown` becomes `untyped`,
//! `# UNIT` and `# EOF` lines and exemplars are dropped, and `\"` in `# HELP` text is
//! unescaped (0.0.4 escapes only `\\` and `\n` there).

/// `Content-Type` of the Prometheus text format 0.0.4 (the default answer).
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `Content-Type` of OpenMetrics text 1.0.0 (answered when the scraper asks for it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format an answer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text004,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text004 => TEXT_004,
            Format::OpenMetrics => OPENMETRICS,
        }
    }
}

/// Picks the format for a request's `Accept` header: OpenMetrics when it names
/// `application/openmetrics-text` with a higher (or equal) quality than any text/plain or
/// wildcard entry, otherwise text 0.0.4 (also for a missing or unreadable header).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text004;
    };
    let mut best_om: Option<f32> = None;
    let mut best_text: Option<f32> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                q = v.trim().parse().unwrap_or(0.0);
            }
        }
        if q <= 0.0 {
            continue;
        }
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut best_om,
            "text/plain" | "text/*" | "*/*" => &mut best_text,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    match (best_om, best_text) {
        (Some(om), Some(text)) if om >= text => Format::OpenMetrics,
        (Some(_), None) => Format::OpenMetrics,
        _ => Format::Text004,
    }
}

/// Rewrites OpenMetrics text (as `prometheus-client` writes it) into text format 0.0.4.
pub fn openmetrics_to_text004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // Metadata of the family being read: HELP comes before TYPE, so it waits for it.
    let mut pending_help: Option<(&str, String)> = None;
    // Sample-name suffixes of the current family that 0.0.4 has no place for.
    let mut drop_suffix: &[&str] = &[];
    let mut family = "";
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, pending_help.take(), None);
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, unescape_help(text)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (renamed, kind, drop): (String, &str, &'static [&'static str]) = match kind {
                "counter" => (format!("{name}_total"), "counter", &["_created"]),
                "info" => (format!("{name}_info"), "gauge", &[]),
                "stateset" => (name.to_string(), "gauge", &[]),
                "unknown" => (name.to_string(), "untyped", &[]),
                "histogram" | "gaugehistogram" => (name.to_string(), "histogram", &["_created"]),
                "summary" => (name.to_string(), "summary", &["_created"]),
                other => (name.to_string(), other, &[]),
            };
            let help = pending_help.take().filter(|(n, _)| *n == name);
            flush_help(&mut out, help, Some(&renamed));
            out.push_str("# TYPE ");
            out.push_str(&renamed);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            family = name;
            drop_suffix = drop;
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
            out.push('\n');
        } else {
            flush_help(&mut out, pending_help.take(), None);
            let sample = strip_exemplar(line);
            let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
            let name = &sample[..name_end];
            if drop_suffix
                .iter()
                .any(|s| name.strip_prefix(family) == Some(*s))
            {
                continue;
            }
            out.push_str(sample);
            out.push('\n');
        }
    }
    flush_help(&mut out, pending_help, None);
    out
}

/// Writes a waiting `# HELP` line, under `rename` when its family got a new name.
fn flush_help(out: &mut String, help: Option<(&str, String)>, rename: Option<&str>) {
    if let Some((name, text)) = help {
        out.push_str("# HELP ");
        out.push_str(rename.unwrap_or(name));
        out.push(' ');
        out.push_str(&text);
        out.push('\n');
    }
}

/// OpenMetrics HELP escapes `\\`, `\n` and `\"`; 0.0.4 only the first two.
fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// A sample line without its exemplar (` # {…} value` after the value).
fn strip_exemplar(line: &str) -> &str {
    // Skip the label set (its values may hold " # ").
    let mut in_quotes = false;
    let mut escaped = false;
    let mut labels_end = 0;
    for (i, b) in line.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'}' if !in_quotes => {
                labels_end = i;
                break;
            }
            b' ' if !in_quotes && labels_end == 0 && !line[..i].contains('{') => {
                labels_end = i;
                break;
            }
            _ => {}
        }
    }
    match line[labels_end..].find(" # ") {
        Some(at) => &line[..labels_end + at],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(negotiate(None), Format::Text004);
        assert_eq!(negotiate(Some("*/*")), Format::Text004);
        assert_eq!(negotiate(Some("text/plain")), Format::Text004);
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        // What Prometheus 2.x sends.
        assert_eq!(
            negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.2"
            )),
            Format::Text004
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Text004
        );
    }

    #[test]
    fn counters_info_unit_eof_and_exemplars() {
        let om = "# HELP fp_requests Requests \\\"answered\\\".\n# TYPE fp_requests counter\n\
                  fp_requests_total{route=\"a # b\"} 3 # {trace=\"x\"} 1.0\n\
                  fp_requests_created 17.0\n\
                  # HELP fp_build Build.\n# TYPE fp_build info\nfp_build_info{version=\"1\"} 1\n\
                  # HELP fp_up Up.\n# TYPE fp_up gauge\n# UNIT fp_up seconds\nfp_up 5\n# EOF\n";
        let text = openmetrics_to_text004(om);
        assert_eq!(
            text,
            "# HELP fp_requests_total Requests \"answered\".\n# TYPE fp_requests_total counter\n\
             fp_requests_total{route=\"a # b\"} 3\n\
             # HELP fp_build_info Build.\n# TYPE fp_build_info gauge\nfp_build_info{version=\"1\"} 1\n\
             # HELP fp_up Up.\n# TYPE fp_up gauge\nfp_up 5\n"
        );
    }

    #[test]
    fn histograms_pass_unchanged() {
        let om = "# HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n# EOF\n";
        let text = openmetrics_to_text004(om);
        assert_eq!(text, om.trim_end_matches("# EOF\n"));
    }

    #[test]
    fn the_real_registry_converts() {
        let m = crate::metrics::Metrics::new();
        let om = m.render(&crate::metrics::Live::default());
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = openmetrics_to_text004(&om);
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fileproxy_requests_total counter"),
            "{text}"
        );
        // Every counter family's TYPE line names its samples.
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.strip_suffix(" counter") {
                    assert!(name.ends_with("_total"), "{line}");
                }
            }
        }
    }
}
