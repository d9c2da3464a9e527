//! Device-facing MDM endpoints: `/mdm/checkin`, `/mdm/connect` and the one-time enrollment
//! links under `/enroll/`.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{AppState, blocking_err};
use crate::error::ApiError;
use crate::mdm::identity::IdentityError;
use crate::mdm::profile::{self, LinkRefusal};
use crate::mdm::{CheckinReply, ConnectRequest, MdmError};

/// The TLS client certificate of a connection, when the device presented one (mTLS).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<Vec<u8>>);

/// Stores the peer certificate of a rustls connection in its extensions and counts the
/// handshake (`HttpServer::on_connect`).
pub fn capture_peer_certificate(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    use actix_tls::accept::rustls_0_23::TlsStream;
    if let Some(tls) = conn.downcast_ref::<TlsStream<actix_web::rt::net::TcpStream>>() {
        let (_, session) = tls.get_ref();
        super::tls::HANDSHAKES.record(session.handshake_kind());
        if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
            ext.insert(PeerCertificate(Arc::new(leaf.to_vec())));
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.service(
        web::scope("/mdm")
            .app_data(web::PayloadConfig::new(max_body_bytes))
            .route("/checkin", web::put().to(checkin))
            .route("/checkin", web::post().to(checkin))
            .route("/connect", web::put().to(connect))
            .route("/connect", web::post().to(connect)),
    )
    .route("/enroll/{token}", web::get().to(enroll_link));
}

impl From<MdmError> for ApiError {
    fn from(e: MdmError) -> Self {
        match e {
            MdmError::BadRequest(m) => ApiError::BadRequest(m),
            MdmError::Unauthorized(m) => ApiError::DeviceUnauthorized(m),
            MdmError::Gone(m) => ApiError::Gone(m.to_owned()),
            MdmError::NotFound(_) => ApiError::NotFound,
            MdmError::Refused(m) => ApiError::Forbidden(m),
            MdmError::Precondition(m) => ApiError::Conflict(m),
            MdmError::Store(s) => ApiError::Store(s),
            MdmError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Store(s) => ApiError::Store(s),
            other => ApiError::DeviceUnauthorized(other.to_string()),
        }
    }
}

/// An Idle is a status and a UDID (plus an EnrollmentID or UserID): a few hundred bytes.
const IDLE_BODY_MAX: usize = 2048;

/// Command-channel bodies up to this size are read before their certificate is known to be
/// one this appliance issued (it is then compared with the enrollment's): parsing 4 KiB of
/// plist (~65 µs at ~62 MiB/s) costs about what the signature check does (~45 µs; both
/// `cargo bench --bench hot`), so a stranger's request costs little more than before. Most
/// results are smaller (a DeviceInformation answer, an acknowledgement: under 2 KiB); app and
/// profile lists can be far larger and meet the registry first.
const BINDING_FIRST_MAX: usize = 4 * 1024;

enum Channel {
    Checkin,
    Connect,
}

async fn handle(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
    channel: Channel,
) -> Result<HttpResponse, ApiError> {
    let peer = req.conn_data::<PeerCertificate>().map(|p| Arc::clone(&p.0));
    // Borrowed from the request (a few KiB); copied only for work sent to the blocking pool.
    let signature = req
        .headers()
        .get("Mdm-Signature")
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| ApiError::DeviceUnauthorized("the Mdm-Signature header is not ASCII".into()))?;
    let now = state.clock.now();
    let (store, mdm) = (state.store.clone(), state.mdm.clone());
    let identities = state.identities.clone();
    let reply = match channel {
        Channel::Checkin => {
            let signature = signature.map(str::to_owned);
            web::block(move || -> Result<Option<Vec<u8>>, ApiError> {
                let identity = identities.authenticate(
                    store.as_ref(),
                    peer.as_deref().map(Vec::as_slice),
                    signature.as_deref(),
                    &body,
                    now,
                )?;
                Ok(match mdm.checkin(&identity, &body, now)? {
                    CheckinReply::Empty => None,
                    CheckinReply::Plist(p) => Some(p),
                })
            })
            .await
            .map_err(blocking_err)??
        }
        Channel::Connect => {
            // A small body (an Idle is a few hundred bytes) is authenticated and read here on
            // the HTTP worker, and an Idle — every session starts with one — answered here
            // too: a signature check with a kept key and a few cached store reads cost less
            // than the blocking pool's two thread hand-offs (BENCHMARKS.md, issue 6). Results
            // store and ingest what the device sent, so they go to the pool.
            //
            // The command channel checks the certificate against the one bound to the
            // enrollment the plist names, not against the registry (`answer_connect`), so the
            // plist is read before the certificate is known to be ours: only for bodies whose
            // parse costs no more than the signature check. A larger one is checked against
            // the registry first.
            let checked = if body.len() <= IDLE_BODY_MAX {
                let identity = identities.presented(peer.as_deref().map(Vec::as_slice), signature, &body)?;
                Some((identity, ConnectRequest::parse(&body)?))
            } else {
                None
            };
            match checked {
                Some((identity, request)) if request.is_idle() => {
                    mdm.answer_connect(&identity, &request, &body, now)?
                }
                checked => {
                    // Only a body not yet checked needs the header in the pool.
                    let signature = signature.filter(|_| checked.is_none()).map(str::to_owned);
                    web::block(move || -> Result<Option<Vec<u8>>, ApiError> {
                        let (identity, request) = match checked {
                            Some(checked) => checked,
                            None => {
                                let identity = identities.presented(
                                    peer.as_deref().map(Vec::as_slice),
                                    signature.as_deref(),
                                    &body,
                                )?;
                                if body.len() > BINDING_FIRST_MAX {
                                    identity.clone().registered(store.as_ref(), now)?;
                                }
                                (identity, ConnectRequest::parse(&body)?)
                            }
                        };
                        Ok(mdm.answer_connect(&identity, &request, &body, now)?)
                    })
                    .await
                    .map_err(blocking_err)??
                }
            }
        }
    };
    Ok(match reply {
        Some(plist) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/xml; charset=utf-8"))
            .body(plist),
        None => HttpResponse::Ok().finish(),
    })
}

async fn checkin(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    handle(state, req, body, Channel::Checkin).await
}

async fn connect(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    handle(state, req, body, Channel::Connect).await
}

/// A signed enrollment profile with a fresh one-time SCEP challenge.
/// `assign_to`: the portal user whose personal device this profile enrols (its SCEP challenge,
/// and so the device's certificate, names them).
pub async fn signed_profile(
    state: &web::Data<AppState>,
    actor: String,
    assign_to: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let signer = state
        .tls
        .snapshot()
        .ok_or_else(|| ApiError::Internal("no TLS identity to sign with".into()))?
        .profile_signer;
    let (scep, settings, root) = (state.scep.clone(), state.enrollment.clone(), state.ca_der.clone());
    let (topic, can_wake) = state.push.topic();
    let signed = web::block(move || -> Result<Vec<u8>, ApiError> {
        // A portal user's link: the certificate this challenge pays for marks the device as theirs.
        let challenge = scep.create_challenge_for(None, now, &actor, assign_to.as_deref())?;
        let xml = profile::build(&profile::ProfileParams {
            base_url: &settings.public_url,
            topic: &topic,
            organization: &settings.organization,
            root_der: &root,
            challenge: &challenge.challenge,
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        signer.sign(&xml).map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CONTENT_TYPE, profile::CONTENT_TYPE))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"citadel-enrollment.mobileconfig\"",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if !can_wake {
        res.insert_header((header::WARNING, NO_TOPIC_WARNING));
    }
    Ok(res.body(signed))
}

/// RFC 7234 warning sent with profiles while no push topic is configured.
pub const NO_TOPIC_WARNING: &str =
    "199 citadel \"no push certificate imported: enrolled devices cannot be woken\"";

async fn enroll_link(
    state: web::Data<AppState>,
    req: HttpRequest,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let store = state.store.clone();
    let token = token.into_inner();
    let redeemed = web::block(move || profile::redeem_link(store.as_ref(), &token, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    match redeemed {
        Ok(link) => {
            tracing::info!(link = %link.id, "enrollment link redeemed");
            let response = signed_profile(
                &state,
                format!("enrollment-link:{}", link.id),
                link.assigned_user.clone(),
            )
            .await?;
            let event = crate::audit::AuditEvent::new(
                crate::audit::Actor::Anonymous,
                "enrollment_link.redeem",
                crate::audit::Outcome::Success,
            )
            .target(link.id.as_str());
            super::api::audit(&state, super::api::with_source(event, &req)).await;
            Ok(response)
        }
        Err(LinkRefusal::Unknown) => Err(ApiError::NotFound),
        Err(LinkRefusal::Used) => Err(ApiError::Gone(
            "this enrollment link has already been used".into(),
        )),
        Err(LinkRefusal::Expired) => Err(ApiError::Gone("this enrollment link has expired".into())),
    }
}
