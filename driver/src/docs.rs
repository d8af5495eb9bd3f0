//! The API documents and their viewers, every byte served from the binary:
//! `/openapi.json` (the REST routes, built by `protocol::http::openapi`),
//! `/asyncapi.json` (the Socket.IO events, `protocol::chat::asyncapi`),
//! Swagger UI at `/docs` (its files from `utoipa-swagger-ui`, vendored) and
//! ReDoc at `/redoc` (its bundle inlined by `aide`). Nothing is fetched from
//! elsewhere: the pages' `Content-Security-Policy` allows only this server
//! (and inline code), which also stops what the viewers would load on their
//! own (ReDoc's logo from Redocly's CDN).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use utoipa_swagger_ui::Config;

type Resp = Response<Full<Bytes>>;

/// Where Swagger UI lives; its page and files are under `/docs/`.
const SWAGGER: &str = "/docs";
/// The methods every document path answers.
const ALLOW: &str = "GET, HEAD";

/// Swagger UI: this server's scripts and styles (and inline styles, which it
/// sets on elements), images from here or `data:`, requests to here only.
const SWAGGER_CSP: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'self'";

/// ReDoc: its bundle is inlined and it starts web workers from `blob:`; its
/// logo, which it would load from Redocly's CDN, is refused by `img-src`.
const REDOC_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'self'";

/// Whether `method` reads a file served from the binary (GET, HEAD).
pub(crate) fn readable(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// The answer to another method on a path that serves a file.
pub(crate) fn method_not_allowed() -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"detail":"Method Not Allowed"}"#,
    )));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A file served from the binary: its type, never sniffed, and its page's
/// Content-Security-Policy if it has one.
pub(crate) fn file(body: Bytes, content_type: HeaderValue, csp: Option<&'static str>) -> Resp {
    let mut r = Response::new(Full::new(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(csp) = csp {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
    }
    r
}

/// The documents and pages, built once at start.
#[derive(Clone)]
pub struct ApiDocs {
    openapi: Bytes,
    asyncapi: Bytes,
    redoc: Bytes,
    swagger: Arc<Config<'static>>,
}

impl std::fmt::Debug for ApiDocs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiDocs").finish_non_exhaustive()
    }
}

impl ApiDocs {
    /// The documents of this service and version.
    pub fn new(service: &str, version: &str) -> Self {
        let openapi = protocol::http::openapi::document(service, version)
            .to_json()
            .expect("the OpenAPI document serializes");
        let asyncapi = protocol::chat::asyncapi::document(service, version).to_string();
        let redoc = aide::redoc::Redoc::new("/openapi.json")
            .with_title(&format!("{service} API (ReDoc)"))
            .html();
        let swagger = Config::new(["/openapi.json"])
            // The validator badge would send the document to validator.swagger.io.
            .validator_url("none")
            .persist_authorization(false);
        ApiDocs {
            openapi: Bytes::from(openapi),
            asyncapi: Bytes::from(asyncapi),
            redoc: Bytes::from(redoc),
            swagger: Arc::new(swagger),
        }
    }

    /// The answer to `method` `path` if it is one of the documents' paths.
    pub fn answer(&self, method: &Method, path: &str) -> Option<Resp> {
        let (body, content_type, csp) = match path {
            "/openapi.json" => (self.openapi.clone(), "application/json".into(), None),
            "/asyncapi.json" => (self.asyncapi.clone(), "application/json".into(), None),
            "/redoc" | "/redoc/" => (
                self.redoc.clone(),
                "text/html; charset=utf-8".into(),
                Some(REDOC_CSP),
            ),
            _ => {
                let file = if path == SWAGGER {
                    ""
                } else {
                    path.strip_prefix(SWAGGER)?.strip_prefix('/')?
                };
                let (body, content_type) = self.swagger_file(file)?;
                (body, content_type, Some(SWAGGER_CSP))
            }
        };
        if !readable(method) {
            return Some(method_not_allowed());
        }
        let content_type =
            HeaderValue::from_str(&content_type).expect("a media type is a valid header value");
        Some(file(body, content_type, csp))
    }

    /// A file of Swagger UI; the page gets a `<base>` so that its relative
    /// links resolve under `/docs/` whether it was asked for as `/docs` or `/docs/`.
    fn swagger_file(&self, file: &str) -> Option<(Bytes, String)> {
        let found = utoipa_swagger_ui::serve(file, self.swagger.clone()).ok()??;
        let mut content_type = found.content_type;
        if content_type.starts_with("text/") || content_type.ends_with("javascript") {
            content_type.push_str("; charset=utf-8");
        }
        // Only without utoipa-swagger-ui's `gzip` feature are the files plain.
        debug_assert!(!found.gzpipped);
        let body = if content_type.starts_with("text/html") {
            let page = String::from_utf8_lossy(&found.bytes).replacen(
                "<head>",
                &format!("<head>\n    <base href=\"{SWAGGER}/\">"),
                1,
            );
            Bytes::from(page)
        } else {
            Bytes::from(found.bytes.into_owned())
        };
        Some((body, content_type))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn get(docs: &ApiDocs, path: &str) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
        let r = docs.answer(&Method::GET, path)?;
        let (parts, body) = r.into_parts();
        let body = futures_executor::block_on(body.collect())
            .unwrap()
            .to_bytes();
        Some((parts.status, parts.headers, body))
    }

    fn content_type(h: &http::HeaderMap) -> &str {
        h[header::CONTENT_TYPE].to_str().unwrap()
    }

    /// The `src` and `href` values of a page (the web page's tests too).
    pub(crate) fn links(page: &str) -> Vec<String> {
        let mut out = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                out.push(part.split('"').next().unwrap().to_owned());
            }
        }
        out
    }

    #[test]
    fn the_documents_are_json() {
        let docs = ApiDocs::new("chatwire", "9.9.9");
        let (status, h, body) = get(&docs, "/openapi.json").unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&h), "application/json");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "9.9.9");
        let (status, h, body) = get(&docs, "/asyncapi.json").unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type(&h), "application/json");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["version"], "9.9.9");
    }

    #[test]
    fn swagger_ui_is_served_whole_from_here() {
        let docs = ApiDocs::new("chatwire", "0.1.0");
        for page in ["/docs", "/docs/"] {
            let (status, h, body) = get(&docs, page).unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(content_type(&h), "text/html; charset=utf-8");
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .starts_with("default-src 'self'")
            );
            let page = String::from_utf8(body.to_vec()).unwrap();
            assert!(page.contains("<base href=\"/docs/\">"), "{page}");
            let links = links(&page);
            assert!(links.len() >= 5, "{links:?}");
            for link in links.into_iter().filter(|l| l != "/docs/") {
                // Relative to the base, so served here.
                assert!(!link.contains("//"), "{link}");
                let path = format!("/docs/{}", link.trim_start_matches("./"));
                let (status, h, body) = get(&docs, &path).unwrap_or_else(|| panic!("{path}"));
                assert_eq!(status, StatusCode::OK);
                assert!(!body.is_empty());
                let want = match path.rsplit('.').next().unwrap() {
                    "css" => "text/css; charset=utf-8",
                    "js" => "text/javascript; charset=utf-8",
                    "png" => "image/png",
                    other => panic!("{other}"),
                };
                assert_eq!(content_type(&h), want, "{path}");
            }
        }
        let (_, _, init) = get(&docs, "/docs/swagger-initializer.js").unwrap();
        let init = String::from_utf8(init.to_vec()).unwrap();
        assert!(init.contains(r#""url": "/openapi.json""#), "{init}");
        // No validator badge, which would send the document to validator.swagger.io.
        assert!(init.contains(r#""validatorUrl": "none""#), "{init}");
        assert!(!init.contains("http"), "{init}");
        assert!(get(&docs, "/docs/nope.js").is_none());
        assert!(get(&docs, "/docsx").is_none());
    }

    #[test]
    fn redoc_is_one_page_with_its_bundle_inlined() {
        let docs = ApiDocs::new("chatwire", "0.1.0");
        for path in ["/redoc", "/redoc/"] {
            let (status, h, body) = get(&docs, path).unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(content_type(&h), "text/html; charset=utf-8");
            let page = String::from_utf8(body.to_vec()).unwrap();
            assert!(page.contains(r#"Redoc.init("/openapi.json""#));
            assert!(
                !page.contains("<script src"),
                "nothing loaded from elsewhere"
            );
            assert!(!page.contains("fonts.googleapis.com"));
            // ReDoc loads its logo from its CDN whatever its options: the
            // policy lets images come from here and data: only.
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("img-src 'self' data:;"), "{csp}");
            assert!(csp.starts_with("default-src 'self';"), "{csp}");
            assert!(!csp.contains("http"), "{csp}");
        }
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let docs = ApiDocs::new("chatwire", "0.1.0");
        for path in [
            "/openapi.json",
            "/asyncapi.json",
            "/docs",
            "/docs/swagger-ui.css",
            "/redoc",
        ] {
            assert!(docs.answer(&Method::HEAD, path).is_some());
            let r = docs.answer(&Method::POST, path).unwrap();
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        }
    }
}
