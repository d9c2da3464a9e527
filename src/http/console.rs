//! The web console: server-side rendered Leptos pages (crate `citadel-ui`)
//! plus the site assets the browser needs to hydrate them (`/pkg/*`), which
//! `build.rs` embeds into the binary from `installer/build-ui.sh`'s output.
//!
//! Call [`configure`] after the appliance's own routes: it ends with a
//! catch-all `GET` that renders the console's "page not found" (status 404)
//! for any path not under `/api/`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{ContentEncoding, Encoding};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, guard, web};
use citadel_ui::{App, RouteMethod, shell};
use leptos::config::LeptosOptions;
use leptos::nonce::Nonce;
use leptos::prelude::{provide_context, use_context};
use leptos_actix::{LeptosRoutes, ResponseOptions, generate_route_list, render_app_to_stream_with_context};

/// One embedded file of the built site (`target/site/pkg`).
struct Asset {
    name: &'static str,
    content_type: &'static str,
    etag: &'static str,
    body: &'static [u8],
    /// Compressed once at build time (brotli -q 11, gzip -9): a 2 MB wasm is not compressed
    /// again for every browser that loads the console.
    brotli: Option<&'static [u8]>,
    gzip: Option<&'static [u8]>,
}

impl Asset {
    /// The body in the best encoding the request accepts among those built, with its name.
    fn encoded(&self, accepted: Option<&header::AcceptEncoding>) -> (&'static [u8], Option<ContentEncoding>) {
        let built: Vec<(Encoding, &'static [u8], ContentEncoding)> = [
            (Encoding::brotli(), self.brotli, ContentEncoding::Brotli),
            (Encoding::gzip(), self.gzip, ContentEncoding::Gzip),
        ]
        .into_iter()
        .filter_map(|(e, body, c)| body.map(|b| (e, b, c)))
        .collect();
        let Some(accepted) = accepted else {
            return (self.body, None);
        };
        let mut offered: Vec<&Encoding> = built.iter().map(|(e, _, _)| e).collect();
        let identity = Encoding::identity();
        offered.push(&identity);
        match accepted.negotiate(offered.into_iter()) {
            Some(chosen) => built
                .iter()
                .find(|(e, _, _)| *e == chosen)
                .map_or((self.body, None), |(_, b, c)| (*b, Some(*c))),
            None => (self.body, None),
        }
    }
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Name of the wasm-bindgen output (`citadel.js`, `citadel_bg.wasm`).
const OUTPUT_NAME: &str = "citadel";
/// URL path segment the assets are served under.
const PKG_DIR: &str = "pkg";
/// Unversioned file names: let browsers cache but revalidate with the ETag.
const CACHE_CONTROL: &str = "no-cache";

/// Whether the build embedded the hydration assets (reported by `/healthz`).
pub fn assets_embedded() -> bool {
    find_asset(&format!("{OUTPUT_NAME}_bg.wasm")).is_some()
        && find_asset(&format!("{OUTPUT_NAME}.js")).is_some()
}

/// Options for Leptos, built in code: nothing is read from files or the environment.
pub fn leptos_options() -> LeptosOptions {
    LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_pkg_dir(PKG_DIR)
        .hash_files(false)
        .build()
}

/// Mounts `/pkg/{file}`, `/favicon.ico`, the console pages and the HTML 404 fallback.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let options = leptos_options();
    let app_shell = {
        let options = options.clone();
        move || shell(options.clone())
    };
    cfg.app_data(web::Data::new(options));
    cfg.service(
        web::resource(format!("/{PKG_DIR}/{{file}}"))
            .route(web::get().to(pkg_file))
            .route(web::head().to(pkg_file)),
    );
    cfg.service(
        web::resource("/favicon.ico")
            .route(web::get().to(favicon))
            .route(web::head().to(favicon)),
    );
    cfg.leptos_routes_with_context(generate_route_list(App), page_context, app_shell.clone());
    // Everything else a browser might navigate to gets the console's 404 page.
    cfg.service(
        web::resource("/{tail:.*}")
            .guard(guard::Get())
            .guard(guard::fn_guard(|ctx| !is_api_path(ctx.head().uri.path())))
            .wrap(from_fn(not_found_status))
            .route(render_app_to_stream_with_context(
                page_context,
                app_shell,
                RouteMethod::Get,
            )),
    );
}

/// The Content-Security-Policy of a console page: scripts only from the appliance and the one
/// inline module that starts hydration (by its per-response nonce), WebAssembly compiled from
/// the appliance's bundle, no inline styles, nothing from anywhere else.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self'; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// Runs before each page renders: a fresh nonce for the hydration script, and the policy that
/// names it.
fn page_context() {
    let bytes: [u8; 16] = rand::random();
    let nonce = data_encoding::BASE64URL_NOPAD.encode(&bytes);
    if let Some(response) = use_context::<ResponseOptions>()
        && let Ok(value) = header::HeaderValue::from_str(&content_security_policy(&nonce))
    {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
    provide_context(Nonce::from_value(nonce));
}

fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

fn find_asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

async fn pkg_file(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    match find_asset(&file) {
        Some(asset) => serve(&req, asset),
        None => HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("not found\n"),
    }
}

async fn favicon(req: HttpRequest) -> HttpResponse {
    match find_asset("favicon.svg") {
        Some(asset) => serve(&req, asset),
        None => HttpResponse::NotFound().finish(),
    }
}

fn serve(req: &HttpRequest, asset: &'static Asset) -> HttpResponse {
    let accepted = req.get_header::<header::AcceptEncoding>();
    let (body, encoding) = asset.encoded(accepted.as_ref());
    // Each encoding is its own representation with its own tag.
    let etag = match encoding {
        Some(e) => format!("{}-{}\"", asset.etag.trim_end_matches('"'), e.as_str()),
        None => asset.etag.to_owned(),
    };
    let not_modified = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| etag_matches(value, &etag));
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL));
    if asset.brotli.is_some() || asset.gzip.is_some() {
        response.insert_header((header::VARY, "Accept-Encoding"));
    }
    if not_modified {
        return response.finish();
    }
    // A Content-Encoding set here also keeps the Compress middleware from encoding it again;
    // "identity" for a client that takes none of the built ones (no 2 MB deflate per request).
    match encoding {
        Some(e) => {
            response.insert_header((header::CONTENT_ENCODING, e.as_str()));
        }
        None if asset.brotli.is_some() || asset.gzip.is_some() => {
            response.insert_header(ContentEncoding::Identity);
        }
        None => {}
    }
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(body)
}

/// `If-None-Match` uses weak comparison: `*`, or any listed tag equal to ours
/// ignoring a `W/` prefix.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag)
}

/// Middleware for the catch-all route: the page is the console's "not found".
async fn not_found_status(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let mut response = next.call(req).await?;
    if response.status() == StatusCode::OK {
        *response.response_mut().status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App as ActixApp, test as atest};

    #[test]
    fn etag_comparison() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\"", "\"abc\""));
        assert!(etag_matches("\"x\", \"abc\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn the_best_accepted_encoding_is_served() {
        let asset = Asset {
            name: "a.wasm",
            content_type: "application/wasm",
            etag: "\"1-3\"",
            body: b"RAW",
            brotli: Some(b"BR"),
            gzip: Some(b"GZ"),
        };
        let pick = |accept: Option<&str>| {
            let header = accept.and_then(|a| {
                let req = atest::TestRequest::get()
                    .insert_header((header::ACCEPT_ENCODING, a))
                    .to_http_request();
                req.get_header::<header::AcceptEncoding>()
            });
            let (body, encoding) = asset.encoded(header.as_ref());
            (body, encoding.map(|e| e.as_str()))
        };
        // Chromium's header: brotli wins over gzip at equal weight.
        assert_eq!(pick(Some("gzip, deflate, br, zstd")), (&b"BR"[..], Some("br")));
        assert_eq!(pick(Some("gzip")), (&b"GZ"[..], Some("gzip")));
        assert_eq!(pick(Some("br;q=0, gzip;q=0.5")), (&b"GZ"[..], Some("gzip")));
        assert_eq!(pick(Some("identity")), (&b"RAW"[..], None));
        assert_eq!(pick(Some("zstd")), (&b"RAW"[..], None));
        assert_eq!(pick(None), (&b"RAW"[..], None));
        let plain = Asset {
            brotli: None,
            gzip: None,
            ..asset
        };
        assert_eq!(plain.encoded(None).0, b"RAW");
    }

    #[test]
    fn asset_table_is_consistent() {
        for asset in ASSETS {
            assert!(!asset.name.contains('/'));
            assert!(asset.etag.starts_with('"') && asset.etag.ends_with('"'));
            if asset.name.ends_with(".wasm") {
                assert_eq!(asset.content_type, "application/wasm");
                assert!(asset.body.starts_with(b"\0asm"));
            }
            if asset.name.ends_with(".js") {
                assert!(asset.content_type.starts_with("text/javascript"));
            }
        }
    }

    #[actix_web::test]
    async fn renders_pages_assets_and_not_found() {
        let app = atest::init_service(ActixApp::new().configure(configure)).await;

        for path in ["/", "/devices", "/enrollment", "/settings"] {
            let res = atest::call_service(&app, atest::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let body = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap_or_default();
            assert!(body.starts_with("<!DOCTYPE html>"), "{path}: {body}");
            assert!(body.contains(r#"aria-label="Main""#), "{path}");
            assert!(body.contains("/pkg/citadel_bg.wasm"), "{path}");
            assert!(!body.contains("data-hydrated"), "{path}");
        }

        // Each page names a fresh nonce in its policy, and only the hydration script has it.
        let mut nonces = Vec::new();
        for _ in 0..2 {
            let res = atest::call_service(&app, atest::TestRequest::get().uri("/devices").to_request()).await;
            let policy = res
                .headers()
                .get(header::CONTENT_SECURITY_POLICY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert!(!policy.contains("unsafe-inline"), "{policy}");
            let nonce = policy
                .split("'nonce-")
                .nth(1)
                .and_then(|rest| rest.split('\'').next())
                .unwrap_or_default()
                .to_owned();
            assert!(nonce.len() >= 22, "{policy}");
            let body = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap_or_default();
            assert!(body.contains(&format!("nonce=\"{nonce}\"")), "{body}");
            for (i, _) in body.match_indices("<script") {
                let tag = body[i..].split('>').next().unwrap_or_default();
                assert!(tag.contains(&format!("nonce=\"{nonce}\"")), "{tag}");
            }
            nonces.push(nonce);
        }
        assert_ne!(nonces[0], nonces[1]);

        let res =
            atest::call_service(&app, atest::TestRequest::get().uri("/no/such/page").to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let body = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap_or_default();
        assert!(body.contains("Page not found"), "{body}");

        // API paths are left to the API (plain 404 here, not the HTML page).
        let res = atest::call_service(&app, atest::TestRequest::get().uri("/api/nope").to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(atest::read_body(res).await.is_empty());

        let res = atest::call_service(&app, atest::TestRequest::get().uri("/pkg/nope.js").to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        for asset in ASSETS {
            let uri = format!("/pkg/{}", asset.name);
            let res = atest::call_service(&app, atest::TestRequest::get().uri(&uri).to_request()).await;
            assert_eq!(res.status(), StatusCode::OK, "{uri}");
            assert_eq!(
                res.headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some(asset.content_type)
            );
            assert_eq!(atest::read_body(res).await.len(), asset.body.len());

            let req = atest::TestRequest::get()
                .uri(&uri)
                .insert_header((header::IF_NONE_MATCH, asset.etag))
                .to_request();
            let res = atest::call_service(&app, req).await;
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{uri}");
        }
    }
}
