//! The report as one self-contained HTML page, rendered from the JSON report.
use serde_json::Value;

/// The page.
pub fn render(report: &Value) -> String {
    format!("<!doctype html><html><body><pre>{}</pre></body></html>", report)
}
