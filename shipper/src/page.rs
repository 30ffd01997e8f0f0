//! The status page the shipper serves at `/`: an HTML file, its style and its script,
//! compiled into the binary, so it needs no build step and nothing from the internet. The
//! script reads `/v1/status` and `/v1/history` with the operator's token. Style and script
//! are files of their own so the page's content security policy allows no inline code.

/// The page.
pub const INDEX_HTML: &str = include_str!("page/index.html");

/// Its style sheet, at `/page.css`.
pub const PAGE_CSS: &str = include_str!("page/page.css");

/// Its script, at `/page.js`.
pub const PAGE_JS: &str = include_str!("page/page.js");

/// The content security policy of the page: its own files only, no inline code, no
/// framing, no forms posted elsewhere.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
