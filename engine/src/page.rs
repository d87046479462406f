//! The live page at `/`: HTML, CSS, JavaScript and an icon compiled into the binary.
//!
//! The page polls the JSON API (`/api/v1/windows/latest`, `/api/v1/windows/history`,
//! `/api/v1/stats`, `/api/v1/trending`) and loads nothing from elsewhere, which the
//! [`CONTENT_SECURITY_POLICY`] enforces in the browser.

/// A static file of the page.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The file.
    pub body: &'static str,
}

/// Same-origin scripts, styles, images and requests only; no inline code,
/// no plugins, no framing, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_str!("../assets/index.html"),
        ),
        "/assets/app.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../assets/app.js"),
        ),
        "/assets/app.css" => ("text/css; charset=utf-8", include_str!("../assets/app.css")),
        "/assets/icon.svg" => ("image/svg+xml", include_str!("../assets/icon.svg")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::asset;

    #[test]
    fn the_page_references_only_its_own_assets() {
        let html = asset("/").unwrap().body;
        for reference in ["/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
            assert!(html.contains(reference), "{reference}");
            assert!(asset(reference).is_some(), "{reference} is served");
        }
        for path in ["/", "/assets/app.js", "/assets/app.css"] {
            let body = asset(path).unwrap().body;
            for external in [
                "src=\"http",
                "href=\"http",
                "src=\"//",
                "href=\"//",
                "url(",
                "@import",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!body.contains(external), "{path} contains {external}");
            }
            assert!(
                !body.contains(" style=\""),
                "{path}: inline styles break the CSP"
            );
        }
        assert!(!html.contains("<script>"), "inline scripts break the CSP");
        assert!(asset("/assets/other.js").is_none());
    }
}
