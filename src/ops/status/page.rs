//! The status page itself: one HTML document with its style and script
//! inline (nothing to fetch from anywhere, so it works on an air-gapped
//! host), served with a Content-Security-Policy that allows exactly that
//! script and style (by their SHA-256) and requests to this port only.

use base64::Engine as _;
use ring::digest::{digest, SHA256};

const HTML: &str = include_str!("page.html");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The page and the policy it is served with, built once.
pub(crate) struct Page {
    pub(crate) html: String,
    pub(crate) csp: String,
}

impl Page {
    pub(crate) fn new() -> Page {
        let html = HTML
            .replace("/*STYLE*/", STYLE)
            .replace("/*SCRIPT*/", SCRIPT);
        // Nothing but this page's own script and style, and fetches of
        // /status.json from the same origin: no other script, no frame, no
        // form, no plugin, no base-URL change.
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(SCRIPT),
            hash(STYLE)
        );
        Page { html, csp }
    }
}

/// `sha256-…` of `text`, as a CSP source expression.
fn hash(text: &str) -> String {
    let sum = digest(&SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(sum.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_exactly_the_hashed_script_and_style() {
        let page = Page::new();
        assert!(page.html.contains(&format!("<script>{SCRIPT}</script>")));
        assert!(page.html.contains(&format!("<style>{STYLE}</style>")));
        assert_eq!(page.html.matches("<script").count(), 1);
        // No address to fetch anything from but the SVG namespace name.
        let without_ns = page.html.replace("\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_ns.contains("http:") && !without_ns.contains("https:"));
        assert!(!page.html.contains(" src=") && !page.html.contains(" href="));
        assert!(page.csp.contains(&format!("script-src '{}'", hash(SCRIPT))));
        assert!(page.csp.starts_with("default-src 'none'"));
        // The known SHA-256 of the empty string, as browsers compute it.
        assert_eq!(
            hash(""),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
