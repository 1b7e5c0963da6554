//! `GET /`: the status page, one self-contained HTML file (no build step, no
//! CDN). It reads the token from `?token=` (kept in sessionStorage, then removed
//! from the address bar) or a login field, and polls `/v1/pools`, `/v1/keys`
//! and `/v1/alerts` every few seconds.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("status.html");

pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(PAGE)
}
