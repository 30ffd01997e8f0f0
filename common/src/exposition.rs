//! The two text forms of `/metrics`. `prometheus-client` writes OpenMetrics, which
//! Prometheus asks for; tools that read only the older Prometheus text form (`promtool
//! check metrics`, `curl` into a script) get it down-converted: a counter family is named
//! with its `_total` as its samples are, and `# UNIT` and `# EOF` lines are dropped.

/// The content type of the OpenMetrics text form.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text form.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The content type and body to answer a scrape whose `Accept` header is `accept` with,
/// from the OpenMetrics text `openmetrics`.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if wants_openmetrics(accept) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS_TEXT, to_prometheus_text(&openmetrics))
    }
}

/// The Prometheus text form of an OpenMetrics exposition.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Held until the TYPE line says whether the family is a counter.
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let counter = rest.split_once(' ').filter(|(_, kind)| *kind == "counter");
            match counter {
                Some((name, _)) => {
                    if let Some(h) = help.take() {
                        let text = h.strip_prefix("# HELP ").and_then(|t| t.strip_prefix(name));
                        match text {
                            Some(text) => out.push_str(&format!("# HELP {name}_total{text}\n")),
                            None => {
                                out.push_str(h);
                                out.push('\n');
                            }
                        }
                    }
                    out.push_str(&format!("# TYPE {name}_total counter\n"));
                }
                None => {
                    if let Some(h) = help.take() {
                        out.push_str(h);
                        out.push('\n');
                    }
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_their_total_name_and_the_openmetrics_lines_go() {
        let om = "# HELP a_events Events read.\n# TYPE a_events counter\n# UNIT a_events events\na_events_total{stream=\"s\"} 3\n\
                  # HELP a_spool_bytes Spooled.\n# TYPE a_spool_bytes gauge\na_spool_bytes{stream=\"s\"} 7\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_events_total Events read.\n# TYPE a_events_total counter\na_events_total{stream=\"s\"} 3\n\
             # HELP a_spool_bytes Spooled.\n# TYPE a_spool_bytes gauge\na_spool_bytes{stream=\"s\"} 7\n"
        );
    }

    #[test]
    fn only_an_openmetrics_accept_gets_openmetrics() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
