//! The web chat page at `/app`, every byte of it served from the binary: its
//! HTML, script and styles (`driver/assets/app/`) and the official
//! `socket.io-client` browser bundle, vendored byte for byte
//! (`scripts/update-app-bundle.sh` refreshes it). Nothing is built or fetched
//! at run time, so the page works with no internet access, and its
//! `Content-Security-Policy` can let it load from and connect to this server
//! only, run no inline script, and be framed by no one.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use http_body_util::Full;

type Resp = Response<Full<Bytes>>;

/// Scripts, styles and connections (HTTP and the WebSocket: `'self'` covers
/// `ws:` to the same host and port) to this server only; everything else,
/// inline code included, refused. `form-action 'none'`: the forms are sent
/// by the script, so a form that somehow submits itself (the script failed)
/// must not put a password in a URL.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page's files, by path.
const ASSETS: [(&str, &str, &[u8]); 4] = [
    ("/app", HTML, include_bytes!("../assets/app/index.html")),
    ("/app/app.js", JS, include_bytes!("../assets/app/app.js")),
    ("/app/app.css", CSS, include_bytes!("../assets/app/app.css")),
    (
        "/app/socket.io.min.js",
        JS,
        include_bytes!("../assets/app/socket.io.min.js"),
    ),
];

/// The web chat page; [`crate::Routes::web`] turns it on.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebApp;

impl WebApp {
    /// The answer to `method` `path` if it is one of the page's paths.
    pub fn answer(&self, method: &Method, path: &str) -> Option<Resp> {
        let path = if path == "/app/" { "/app" } else { path };
        let &(_, content_type, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
        if !crate::docs::readable(method) {
            return Some(crate::docs::method_not_allowed());
        }
        let body = Bytes::from_static(body);
        let mut r = crate::docs::file(body, HeaderValue::from_static(content_type), Some(CSP));
        let h = r.headers_mut();
        // The files change with the binary: a browser asks again each time
        // rather than keep a page that no longer matches its server.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        // For browsers older than `frame-ancestors`.
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt;

    use super::*;
    use crate::docs::tests::links;

    fn get(path: &str) -> Option<(StatusCode, http::HeaderMap, Bytes)> {
        let r = WebApp.answer(&Method::GET, path)?;
        let (parts, body) = r.into_parts();
        let body = futures_executor::block_on(body.collect())
            .unwrap()
            .to_bytes();
        Some((parts.status, parts.headers, body))
    }

    fn header(h: &http::HeaderMap, name: header::HeaderName) -> &str {
        h[name].to_str().unwrap()
    }

    /// Whether a page has an event handler attribute (` onclick=`...).
    fn has_inline_handler(page: &str) -> bool {
        page.split(" on").skip(1).any(|rest| {
            let name_end = rest
                .find(|c: char| !c.is_ascii_lowercase())
                .unwrap_or(rest.len());
            name_end > 0 && rest[name_end..].starts_with('=')
        })
    }

    #[test]
    fn every_file_is_served_with_its_type_and_headers() {
        for (path, want) in [
            ("/app", HTML),
            ("/app/", HTML),
            ("/app/app.js", JS),
            ("/app/app.css", CSS),
            ("/app/socket.io.min.js", JS),
        ] {
            let (status, h, body) = get(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(!body.is_empty(), "{path}");
            assert_eq!(header(&h, header::CONTENT_TYPE), want, "{path}");
            assert_eq!(header(&h, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(header(&h, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&h, header::REFERRER_POLICY), "no-referrer");
            assert_eq!(header(&h, header::X_FRAME_OPTIONS), "DENY");
            assert_eq!(header(&h, header::CONTENT_SECURITY_POLICY), CSP);
        }
        for path in ["/app/nope.js", "/app/index.html", "/apps", "/app.js", "/"] {
            assert!(get(path).is_none(), "{path}");
        }
    }

    #[test]
    fn the_policy_allows_this_server_only() {
        let (_, h, _) = get("/app").unwrap();
        let csp = header(&h, header::CONTENT_SECURITY_POLICY);
        let directives: Vec<(&str, &str)> = csp
            .split(';')
            .map(|d| d.trim().split_once(' ').unwrap())
            .collect();
        for (name, sources) in &directives {
            for source in sources.split(' ') {
                assert!(
                    ["'self'", "'none'"].contains(&source),
                    "{name} allows {source}: no host, scheme or inline code"
                );
            }
        }
        for (name, want) in [
            ("default-src", "'none'"),
            ("script-src", "'self'"),
            ("connect-src", "'self'"),
            ("frame-ancestors", "'none'"),
        ] {
            assert!(directives.contains(&(name, want)), "{name} {want}: {csp}");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        let (_, _, body) = get("/app").unwrap();
        let page = std::str::from_utf8(&body).unwrap();
        let links = links(page);
        assert_eq!(links.len(), 3, "{links:?}");
        for link in links {
            assert!(link.starts_with("/app/"), "{link}");
            assert!(get(&link).is_some(), "{link} is served");
        }
        // No inline script or style, which the policy would refuse anyway.
        assert_eq!(page.matches("<script").count(), 2, "{page}");
        assert_eq!(page.matches("<script src=\"/app/").count(), 2, "{page}");
        assert!(!page.contains("<style"), "{page}");
        assert!(!page.contains(" style="), "{page}");
        assert!(
            !has_inline_handler(page),
            "no onclick= and the like: {page}"
        );
    }

    #[test]
    fn the_bundle_is_the_official_one() {
        let (_, _, body) = get("/app/socket.io.min.js").unwrap();
        let head = std::str::from_utf8(&body[..120]).unwrap();
        assert!(
            head.starts_with("/*!\n * Socket.IO v4.8.3\n"),
            "socket.io-client's own banner: {head}"
        );
        assert!(head.contains("Released under the MIT License."), "{head}");
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        for path in [
            "/app",
            "/app/",
            "/app/app.js",
            "/app/app.css",
            "/app/socket.io.min.js",
        ] {
            assert!(WebApp.answer(&Method::HEAD, path).is_some());
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let r = WebApp.answer(&method, path).unwrap();
                assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
                assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
                assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
            }
        }
    }
}
