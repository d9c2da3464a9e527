//! `citadel simulate-ceiling`: the same server stack as the appliance — actix-web, rustls, its
//! TLS identity, its worker count and body limit — answering `/mdm/connect` with an empty 200
//! and doing nothing else. `citadel simulate --ceiling-url` replays a run's traffic against it,
//! so that the appliance's throughput is reported as a share of what the stack itself can do
//! on the same machine at the same moment.

use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};

use crate::appliance::{StartupError, server_certificate};
use crate::clock::SharedClock;
use crate::config::{ClientCertificates, Config};
use crate::datadir::DataDir;
use crate::http::tls::{self, TlsState};
use crate::pki::Pki;

async fn empty(body: web::Bytes) -> HttpResponse {
    // The body is read in full, as the appliance does, then dropped.
    drop(body);
    HttpResponse::Ok().finish()
}

/// Serves until SIGINT/SIGTERM. Reads the data directory's CA and TLS certificate (never the
/// store, so it can run beside the appliance it measures).
pub async fn serve(config: Config, clock: SharedClock) -> Result<(), StartupError> {
    let data = DataDir::prepare(&config.data_dir)?;
    let label = gethostname::gethostname().to_string_lossy().into_owned();
    let (pki, _) = Pki::load_or_create(&data, &label, clock.now())?;
    let tls_state = TlsState::new(server_certificate(&config, &pki, clock.now())?);
    let device_ca = match config.server.client_certificates {
        ClientCertificates::Optional => Some(pki.issuing_ca().certificate_der().to_vec()),
        ClientCertificates::Off => None,
    };
    let rustls_config = tls::server_config(Arc::clone(&tls_state.resolver), device_ca.as_deref())?;
    let max_body = config.mdm.max_body_bytes;
    let listen = config.server.listen;
    let mut server = HttpServer::new(move || {
        App::new().service(
            web::scope("/mdm")
                .app_data(web::PayloadConfig::new(max_body))
                .route("/connect", web::put().to(empty))
                .route("/connect", web::post().to(empty)),
        )
    })
    .on_connect(crate::http::mdm::capture_peer_certificate)
    .bind_rustls_0_23(listen, rustls_config)
    .map_err(|source| StartupError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    tracing::info!(%listen, "ceiling endpoint ready");
    server.run().await.map_err(StartupError::Server)
}
