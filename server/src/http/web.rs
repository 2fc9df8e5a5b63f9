//! The browser playground: `assets/web/` compiled into the binary and served at `/`.
//!
//! The page is open (no API key): it holds nothing secret and talks only to the public API,
//! whose calls carry the key the user enters (kept in the browser's localStorage). Everything
//! it needs comes from this server, so it works offline; the content security policy says so.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../../assets/web/index.html");
const APP_JS: &str = include_str!("../../../assets/web/app.js");
const STYLE_CSS: &str = include_str!("../../../assets/web/style.css");

/// Only this origin; `data:`/`blob:` images for the generated PNGs, the previews and the icon.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// `GET /` and the page's assets (HEAD is answered too).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate each time, so a new binary's page is never mixed with an old script.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};

    use super::super::tests::{default_harness, get, harness, send};
    use super::super::HttpConfig;

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types() {
        let h = default_harness();
        let r = send(&h.app, get("/")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
        let html = r.text();
        assert!(html.starts_with("<!doctype html>"), "{}", &html[..40.min(html.len())]);
        assert!(html.contains(r#"<script src="app.js""#) && html.contains(r#"href="style.css""#));
        assert!(r.header("content-security-policy").contains("default-src 'self'"));
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(send(&h.app, get("/index.html")).await.text(), html);
        for (path, ty, needle) in [
            ("/app.js", "text/javascript; charset=utf-8", "v1/images/generations"),
            ("/style.css", "text/css; charset=utf-8", "image-rendering: pixelated"),
        ] {
            let r = send(&h.app, get(path)).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.header("content-type"), ty, "{path}");
            assert!(r.text().contains(needle), "{path} lacks {needle}");
        }
        let head = Request::head("/app.js").body(Body::empty()).unwrap();
        assert_eq!(send(&h.app, head).await.status, StatusCode::OK);
        send(&h.app, get("/nope.js")).await.assert_error(404, None, "no route for `/nope.js`");
    }

    #[tokio::test]
    async fn the_page_is_open_when_the_api_needs_a_key() {
        let h = harness(HttpConfig { api_key: Some("s3cret".into()), ..HttpConfig::default() });
        for path in ["/", "/app.js", "/style.css"] {
            assert_eq!(send(&h.app, get(path)).await.status, StatusCode::OK, "{path}");
        }
        send(&h.app, get("/v1/models")).await.assert_error(401, None, "missing API key");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in
            [("index.html", super::INDEX_HTML), ("app.js", super::APP_JS), ("style.css", super::STYLE_CSS)]
        {
            // The inline SVG icon names its XML namespace, which is not a request.
            let text = text.replace("xmlns='http://www.w3.org/2000/svg'", "");
            for bad in ["https://", "http://", "//cdn", "@import"] {
                assert!(!text.contains(bad), "{name} refers to `{bad}`: the page must work offline");
            }
        }
    }
}
