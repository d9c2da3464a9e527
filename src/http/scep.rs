//! `/scep` (RFC 8894) and the CRL at `/ca/crl`.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::AppState;
use crate::scep::ScepError;

#[derive(Debug, Deserialize)]
pub struct ScepQuery {
    operation: Option<String>,
    message: Option<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig, max_message_bytes: usize) {
    cfg.service(
        web::resource("/scep")
            // Oversized bodies get 413 before any work is done.
            .app_data(web::PayloadConfig::new(max_message_bytes))
            .route(web::get().to(scep_get))
            .route(web::post().to(scep_post)),
    )
    .route("/ca/crl", web::get().to(crl));
}

fn bad_request(why: &str) -> HttpResponse {
    tracing::warn!(reason = why, "bad SCEP request");
    HttpResponse::BadRequest()
        .content_type("text/plain; charset=utf-8")
        .body(format!("{why}\n"))
}

async fn scep_get(state: web::Data<AppState>, query: web::Query<ScepQuery>) -> HttpResponse {
    match query.operation.as_deref() {
        Some("GetCACaps") => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(state.scep.ca_caps()),
        Some("GetCACert") => match state.scep.ca_certificates() {
            Ok((content_type, body)) => HttpResponse::Ok().content_type(content_type).body(body),
            Err(e) => {
                tracing::error!(error = %e, "GetCACert: cannot encode the certificates");
                HttpResponse::ServiceUnavailable().finish()
            }
        },
        Some("PKIOperation") => {
            let Some(message) = query.message.as_deref() else {
                return bad_request("PKIOperation by GET needs a message parameter");
            };
            match decode_message(message, state.scep.options().max_message_bytes) {
                Ok(der) => pki_operation(state, der).await,
                Err(why) => bad_request(why),
            }
        }
        Some(_) => bad_request("unknown SCEP operation"),
        None => bad_request("missing operation parameter"),
    }
}

async fn scep_post(
    state: web::Data<AppState>,
    query: web::Query<ScepQuery>,
    body: web::Bytes,
) -> HttpResponse {
    match query.operation.as_deref() {
        Some("PKIOperation") => {}
        Some(_) => return bad_request("only PKIOperation may be POSTed"),
        None => return bad_request("missing operation parameter"),
    }
    if !body.is_empty() {
        return pki_operation(state, body.to_vec()).await;
    }
    // Some clients put the message in the URL of a POST instead of (or as well as) the body.
    match query
        .message
        .as_deref()
        .map(|m| decode_message(m, state.scep.options().max_message_bytes))
    {
        Some(Ok(der)) => pki_operation(state, der).await,
        Some(Err(why)) => bad_request(why),
        None => bad_request("empty PKIOperation"),
    }
}

/// Base64 from a query string. A `+` that the client did not escape arrives as a space.
fn decode_message(message: &str, max_bytes: usize) -> Result<Vec<u8>, &'static str> {
    if message.len() > max_bytes.saturating_mul(4) / 3 + 4 {
        return Err("message parameter too large");
    }
    let cleaned: String = message
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .map(|c| if c == ' ' { '+' } else { c })
        .collect();
    data_encoding::BASE64
        .decode(cleaned.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(cleaned.trim_end_matches('=').as_bytes()))
        .map_err(|_| "message parameter is not base64")
}

async fn pki_operation(state: web::Data<AppState>, der: Vec<u8>) -> HttpResponse {
    let now = state.clock.now();
    let service = state.scep.clone();
    // RSA work runs on the blocking pool so enrollment bursts never stall the event loop.
    match web::block(move || service.pki_operation(&der, now)).await {
        Ok(Ok(reply)) => HttpResponse::Ok()
            .content_type("application/x-pki-message")
            .body(reply),
        Ok(Err(ScepError::Malformed(why))) => bad_request(&why),
        Ok(Err(ScepError::Store(e))) => {
            tracing::error!(error = %e, "SCEP: store unavailable");
            HttpResponse::ServiceUnavailable().finish()
        }
        Ok(Err(ScepError::Ca(e))) => {
            tracing::error!(error = %e, "SCEP: cannot build the reply");
            HttpResponse::InternalServerError().finish()
        }
        Err(e) => {
            tracing::error!(error = %e, "SCEP: worker failed");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}

async fn crl(state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now();
    let service = state.scep.clone();
    match web::block(move || service.crl(now)).await {
        Ok(Ok(der)) => HttpResponse::Ok()
            .content_type("application/pkix-crl")
            .insert_header((header::CACHE_CONTROL, "max-age=300"))
            .body(der),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot produce the CRL");
            HttpResponse::ServiceUnavailable().finish()
        }
        Err(e) => {
            tracing::error!(error = %e, "CRL worker failed");
            HttpResponse::ServiceUnavailable().finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode_message;

    #[test]
    fn query_base64_tolerates_unescaped_plus_and_line_breaks() {
        assert_eq!(decode_message("+/8=", 100).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_message(" /8=", 100).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_message("+/8\r\n", 100).unwrap(), vec![0xfb, 0xff]);
        assert!(decode_message("not base64!", 100).is_err());
        assert!(decode_message(&"A".repeat(1000), 100).is_err());
    }
}
