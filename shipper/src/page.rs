//! The status page the shipper serves at `/`: one HTML file with its style and script
//! inline, compiled into the binary, so it needs no build step and nothing from the
//! internet. It reads `/v1/status` and `/v1/history` with the operator's token.

/// The page.
pub const INDEX_HTML: &str = include_str!("page/index.html");
