//! The demo page (`--demo`): a small HTML page and the reference client
//! module (`tools/client/`), embedded in the binary so that it stays one
//! self-contained file. Both answers are rendered once at start.

use super::response::typed_response;

const PAGE: &str = include_str!("../../tools/client/demo.html");
const MODULE: &str = include_str!("../../tools/client/wspush.js");

/// Where the page's default server address takes the ws path.
const WS_PATH_SLOT: &str = "{{WS_PATH}}";

/// What the browser loads without a token: the page, and the module it imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `GET /`: the page.
    Page,
    /// `GET /wspush.js`: the reference client.
    Module,
}

/// The asset at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    match path {
        "/" | "/index.html" => Some(Asset::Page),
        "/wspush.js" => Some(Asset::Module),
        _ => None,
    }
}

/// Headers of both answers: always revalidated, never sniffed, and the page
/// may run only its own scripts (its inline one and the module) and
/// connect only to WebSocket servers.
const HEADERS: &[(&str, &str)] = &[
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self' 'unsafe-inline'; \
         style-src 'unsafe-inline'; connect-src ws: wss:; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
];

/// The two answers, whole (head and body).
pub struct Demo {
    page: Vec<u8>,
    module: Vec<u8>,
}

impl Demo {
    /// Render the answers; the page's default server address uses `ws_path`.
    pub fn new(ws_path: &str) -> Demo {
        let page = PAGE.replace(WS_PATH_SLOT, &html_escape(ws_path.trim_end_matches('/')));
        Demo {
            page: typed_response(200, "text/html; charset=utf-8", HEADERS, &page),
            module: typed_response(200, "text/javascript; charset=utf-8", HEADERS, MODULE),
        }
    }

    /// The answer for `asset`.
    pub fn response(&self, asset: Asset) -> &[u8] {
        match asset {
            Asset::Page => &self.page,
            Asset::Module => &self.module,
        }
    }
}

/// `s` safe inside an HTML attribute value or text.
fn html_escape(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_the_two_assets() {
        assert_eq!(asset("/"), Some(Asset::Page));
        assert_eq!(asset("/index.html"), Some(Asset::Page));
        assert_eq!(asset("/wspush.js"), Some(Asset::Module));
        assert_eq!(asset("/wspush.js/"), None);
        assert_eq!(asset("/demo.html"), None);
    }

    #[test]
    fn page_carries_the_escaped_ws_path_and_module_is_verbatim() {
        let demo = Demo::new("/a\"b/");
        let page = String::from_utf8(demo.response(Asset::Page).to_vec()).unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html"));
        assert!(page.contains("/a&quot;b"), "escaped path missing");
        assert!(!page.contains(WS_PATH_SLOT));
        let module = demo.response(Asset::Module);
        assert!(module.ends_with(MODULE.as_bytes()));
        assert!(String::from_utf8_lossy(module).contains("Content-Type: text/javascript"));
    }
}
