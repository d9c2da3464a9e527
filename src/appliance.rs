//! Start-up and shutdown of the appliance: the order in which the data directory, CA, store,
//! bootstrap secret and TLS certificate come up, shared by `citadel init` and `citadel serve`.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpServer, web};
use time::OffsetDateTime;

use crate::clock::SharedClock;
use crate::config::{ClientCertificates, Config, ConfigError};
use crate::datadir::{DataDir, DataDirError};
use crate::http::tls::{self, TlsState};
use crate::http::{self, AppState, EnrollmentSettings};
use crate::iam::bootstrap::{self, BootstrapOutcome};
use crate::mdm::webhook::Webhook;
use crate::mdm::{MdmOptions, MdmService};
use crate::pki::{self, Pki, PkiError, Renewal, ServerCertificate, TlsSource};
use crate::push::PushService;
use crate::scep::{ScepOptions, ScepService};
use crate::store::{SchemaStatus, SledOptions, SledStore, Store, StoreError, migrate_to_current};

/// How often the server certificate's expiry is checked while running.
const RENEWAL_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Why the appliance could not start, with the exit code a supervisor or script can act on
/// (sysexits.h values).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot listen on {addr}: {source}{}", bind_hint(source))]
    Bind { addr: String, source: std::io::Error },
    #[error("cannot set up the webhook client: {0}")]
    Webhook(String),
    #[error("push: {0}")]
    Push(String),
    #[error("admin.directory: {0}")]
    Directory(#[from] crate::iam::directory::DirectoryError),
    #[error("audit.syslog: {0}")]
    Syslog(String),
    #[error("server error: {0}")]
    Server(std::io::Error),
}

fn bind_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process holds the port; stop it or choose another with --listen)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need CAP_NET_BIND_SERVICE; see installer/citadel.service)"
        }
        _ => "",
    }
}

impl StartupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config(_) => 78,                                       // EX_CONFIG
            StartupError::DataDir(DataDirError::UnsafePermissions { .. }) => 77, // EX_NOPERM
            StartupError::Pki(PkiError::DataDir(DataDirError::UnsafePermissions { .. })) => 77,
            StartupError::DataDir(DataDirError::Missing { .. }) => 66, // EX_NOINPUT
            StartupError::Store(StoreError::Locked { .. }) => 75,      // EX_TEMPFAIL
            StartupError::Store(StoreError::TooNew { .. }) => 65,      // EX_DATAERR
            StartupError::Bind { .. } => 69,                           // EX_UNAVAILABLE
            StartupError::DataDir(_) | StartupError::Pki(PkiError::DataDir(_)) => 74, // EX_IOERR
            StartupError::Pki(_) | StartupError::Store(_) => 65,
            StartupError::Tls(_)
            | StartupError::Webhook(_)
            | StartupError::Directory(_)
            | StartupError::Syslog(_) => 78,
            StartupError::Push(_) => 65,
            StartupError::Server(_) => 70, // EX_SOFTWARE
        }
    }
}

/// The persistent parts of a ready appliance.
pub struct Prepared {
    pub data: DataDir,
    pub pki: Pki,
    pub store: Arc<SledStore>,
    pub created_ca: bool,
    pub bootstrap: BootstrapOutcome,
}

/// Creates or opens everything on disk. Idempotent.
pub fn prepare(config: &Config, now: OffsetDateTime) -> Result<Prepared, StartupError> {
    let data = DataDir::prepare(&config.data_dir)?;
    let label = gethostname::gethostname().to_string_lossy().into_owned();
    let (pki, created_ca) = Pki::load_or_create(&data, &label, now)?;
    if created_ca {
        tracing::info!(dir = %data.pki_dir().display(), "created a new root CA");
    }
    let options = SledOptions {
        cache_capacity_bytes: config.store.cache_capacity_mb * 1024 * 1024,
        flush_every_ms: config.store.flush_every_ms,
    };
    data.ensure_subdir(&data.store_dir())?;
    let store = Arc::new(SledStore::open(&data.store_dir(), &options)?);
    match migrate_to_current(store.as_ref())? {
        SchemaStatus::Created => tracing::info!("created a new store"),
        SchemaStatus::Current => {}
        SchemaStatus::Migrated { from } => tracing::info!(from, "store migrated"),
    }
    let bootstrap = bootstrap::ensure(store.as_ref(), config.admin.bootstrap_secret.as_ref(), now)?;
    Ok(Prepared {
        data,
        pki,
        store,
        created_ca,
        bootstrap,
    })
}

/// The first thing a new administrator reads. Printed on stdout, once.
pub fn first_start_notice(config: &Config, prepared: &Prepared) -> Option<String> {
    let mut out = String::new();
    let host = config
        .server
        .hostnames
        .first()
        .cloned()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned());
    let port = config.server.listen.port();
    if prepared.created_ca {
        let fingerprint = prepared
            .pki
            .ca_info()
            .map(|i| i.sha256_fingerprint)
            .unwrap_or_default();
        out.push_str(&format!(
            "Citadel created its certificate authority in {}.\n\
             \x20 Root CA SHA-256 fingerprint: {fingerprint}\n\
             \x20 Browsers and devices trust it from https://{host}:{port}/ca.pem \
             (or `citadel ca export`).\n",
            prepared.data.root().display()
        ));
    }
    if let BootstrapOutcome::Generated(secret) = &prepared.bootstrap {
        out.push_str(&format!(
            "\n  One-time bootstrap secret for the first administrator (shown only now):\n\n      {secret}\n\n\
             \x20 Open https://{host}:{port}/ and use it to create the first administrator account.\n"
        ));
    }
    (!out.is_empty()).then_some(out)
}

pub(crate) fn server_certificate(
    config: &Config,
    pki: &Pki,
    now: OffsetDateTime,
) -> Result<ServerCertificate, StartupError> {
    if let (Some(cert), Some(key)) = (&config.server.tls_cert_file, &config.server.tls_key_file) {
        let loaded = pki::load_operator_certificate(cert, key)?;
        tracing::info!(subject = %loaded.info.subject, expires = %loaded.info.not_after, "using the operator's TLS certificate");
        return Ok(loaded);
    }
    let identity = pki::server_identity(&config.server.hostnames)?;
    let window = time::Duration::days(i64::from(config.server.tls_renew_days));
    let (cert, renewal) = pki.ensure_server_certificate(&identity, now, window)?;
    match renewal {
        Renewal::Reused => tracing::info!(expires = %cert.info.not_after, "TLS server certificate loaded"),
        Renewal::Issued { reason } => tracing::info!(
            %reason, names = ?identity.names(), expires = %cert.info.not_after, "issued a new TLS server certificate"
        ),
    }
    Ok(cert)
}

/// Runs the HTTPS server until SIGINT/SIGTERM, then drains requests and flushes the store.
pub async fn serve(config: Config, clock: SharedClock) -> Result<(), StartupError> {
    let prepared = prepare(&config, clock.now())?;
    if let Some(notice) = first_start_notice(&config, &prepared) {
        println!("{notice}");
    }
    let cert = server_certificate(&config, &prepared.pki, clock.now())?;
    let tls_state = Arc::new(TlsState::new(cert));
    let device_ca = match config.server.client_certificates {
        ClientCertificates::Optional => Some(prepared.pki.issuing_ca().certificate_der().to_vec()),
        ClientCertificates::Off => None,
    };
    let rustls_config = tls::server_config(Arc::clone(&tls_state.resolver), device_ca.as_deref())?;
    let store: Arc<dyn Store> = prepared.store.clone();
    let pki = Arc::new(prepared.pki);
    let audit = Arc::new(crate::audit::AuditLog::open(Arc::clone(&store))?);
    let scep = Arc::new(
        ScepService::new(
            Arc::clone(&store),
            Arc::clone(&pki),
            ScepOptions::from(&config.scep),
        )
        .with_audit(Arc::clone(&audit)),
    );
    let webhook = match (&config.webhook.url, &config.webhook.secret) {
        (Some(url), Some(secret)) => {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| StartupError::Webhook(e.to_string()))?;
            Some(Webhook::start(
                url.clone(),
                secret.expose().as_bytes().to_vec(),
                client,
            ))
        }
        _ => None,
    };
    let push = Arc::new(
        PushService::new(
            &config,
            prepared.data.clone(),
            Arc::clone(&store),
            Arc::clone(&clock),
        )
        .map_err(|e| StartupError::Push(e.to_string()))?,
    );
    if !push.topic().1 {
        tracing::warn!(
            "no push certificate imported (citadel push-cert csr / import): enrolled devices cannot be woken"
        );
    }
    let started = std::time::Instant::now();
    let index = Arc::new(crate::inventory::index::DeviceIndex::load(store.as_ref())?);
    tracing::info!(
        devices = index.len(),
        millis = started.elapsed().as_millis() as u64,
        "device list index built"
    );
    let mdm = Arc::new(
        MdmService::new(
            Arc::clone(&store),
            Arc::clone(&pki),
            Arc::clone(&scep),
            MdmOptions {
                user_authenticate: config.mdm.user_authenticate,
                retention: time::Duration::days(i64::from(config.mdm.retention_days)),
                inventory: crate::inventory::schedule::InventorySchedule {
                    interval: time::Duration::hours(i64::from(config.mdm.inventory_interval_hours)),
                },
                inventory_on_enrollment: config.mdm.inventory_on_enrollment,
                enrollment_profile: crate::mdm::profile::profile_identifier(
                    &EnrollmentSettings::from_config(&config).public_url,
                ),
            },
            webhook,
            Some(Arc::clone(&push)),
            index,
        )
        .with_audit(Arc::clone(&audit)),
    );
    let directory = match config.admin.directory.clone() {
        Some(settings) => {
            let directory = crate::iam::directory::Directory::new(settings)?;
            tracing::info!(url = %directory.url(), "administrators may sign in with the directory");
            Some(Arc::new(directory))
        }
        None => None,
    };
    let syslog = match config.audit.syslog.clone() {
        Some(s) => Some(syslog_target(&s)?),
        None => None,
    };
    let syslog_status = syslog.as_ref().map(|t| {
        Arc::new(std::sync::Mutex::new(crate::audit::syslog::SyslogStatus {
            address: t.address.clone(),
            ..Default::default()
        }))
    });
    let state = web::Data::new(AppState {
        store: Arc::clone(&store),
        clock: Arc::clone(&clock),
        ca_pem: pki.ca_certificate_pem().to_owned(),
        ca_der: pki.ca_certificate_der(),
        tls: Arc::clone(&tls_state),
        scep,
        pki: Arc::clone(&pki),
        mdm: Arc::clone(&mdm),
        identities: Arc::new(crate::mdm::identity::IdentityVerifier::default()),
        enrollment: Arc::new(EnrollmentSettings::from_config(&config)),
        push: Arc::clone(&push),
        audit,
        iam: Arc::new(crate::iam::service::IamService::new(
            Arc::clone(&store),
            Arc::clone(&pki) as Arc<dyn crate::iam::service::Sealer>,
            crate::iam::service::IamSettings::from_config(&config),
        )),
        directory,
        syslog: syslog_status.clone(),
        portal: config.portal.clone(),
        settings: Arc::new(http::reports_api::SettingsView::from_config(&config)),
    });

    let listen = config.server.listen;
    let https_state = state.clone();
    let mut server = HttpServer::new(move || http::app(https_state.clone()))
        .on_connect(http::mdm::capture_peer_certificate)
        .shutdown_timeout(config.server.shutdown_timeout_secs)
        .bind_rustls_0_23(listen, rustls_config)
        .map_err(|source| StartupError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    let server = server.run();
    let checkpoint_state = state.clone();
    let admin = admin_socket(&prepared.data, state)?;
    let admin_handle = admin.handle();
    actix_web::rt::spawn(admin);

    actix_web::rt::spawn(purge_expired_challenges(Arc::clone(&store), Arc::clone(&clock)));
    actix_web::rt::spawn(run_inventory_schedule(Arc::clone(&mdm), Arc::clone(&clock)));
    actix_web::rt::spawn(prune_answered_commands(mdm, Arc::clone(&clock)));
    actix_web::rt::spawn(Arc::clone(&push).run());
    if config.apns.sweep_after_hours > 0 {
        let after = time::Duration::hours(i64::from(config.apns.sweep_after_hours));
        actix_web::rt::spawn(Arc::clone(&push).sweep(after, Duration::from_secs(24 * 3600)));
    }
    actix_web::rt::spawn(watch_push_certificate(Arc::clone(&push), Arc::clone(&clock)));
    if let (Some(target), Some(status)) = (syslog, syslog_status) {
        tracing::info!(address = %target.address, tls = target.tls.is_some(), "forwarding the audit log to syslog");
        actix_web::rt::spawn(crate::audit::syslog::forward(
            Arc::clone(&checkpoint_state.audit),
            Arc::clone(&store),
            target,
            status,
            Arc::clone(&checkpoint_state.clock),
        ));
    }
    if checkpoint_state.directory.is_some() {
        actix_web::rt::spawn(recheck_directory_accounts(checkpoint_state.clone()));
    }
    if config.audit.checkpoint_minutes > 0 {
        let every = Duration::from_secs(u64::from(config.audit.checkpoint_minutes) * 60);
        actix_web::rt::spawn(sign_audit_checkpoints(checkpoint_state, every));
    }
    actix_web::rt::spawn(keep_certificate_fresh(config.clone(), pki, tls_state, clock));
    tracing::info!(
        %listen,
        data_dir = %prepared.data.root().display(),
        version = env!("CARGO_PKG_VERSION"),
        "citadel is serving"
    );
    let result = server.await;
    admin_handle.stop(true).await;
    tracing::info!("stopped accepting requests; flushing the store");
    store.flush()?;
    tracing::info!("store flushed; goodbye");
    result.map_err(StartupError::Server)
}

/// The owner-only Unix socket through which CLI commands reach the running server (the store
/// can be open in only one process). Only the data directory's owner can reach it.
fn admin_socket(data: &DataDir, state: web::Data<AppState>) -> Result<actix_web::dev::Server, StartupError> {
    let path = data.admin_socket();
    // We hold the store's lock, so no other server owns a socket here: a leftover is stale.
    let _ = std::fs::remove_file(&path);
    let server = HttpServer::new(move || http::admin_app(state.clone()))
        .workers(1)
        .disable_signals()
        .bind_uds(&path)
        .map_err(|source| StartupError::Bind {
            addr: path.display().to_string(),
            source,
        })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StartupError::Bind {
            addr: path.display().to_string(),
            source,
        }
    })?;
    Ok(server.run())
}

/// Where the audit log goes (`[audit.syslog]`).
fn syslog_target(
    s: &crate::config::SyslogSection,
) -> Result<crate::audit::syslog::SyslogTarget, StartupError> {
    let tls = if s.tls {
        let ca = s
            .ca_file
            .as_ref()
            .ok_or_else(|| StartupError::Syslog("audit.syslog.ca_file is required with tls".into()))?;
        let config = http::tls::client_trusting(ca).map_err(StartupError::Syslog)?;
        let host = s
            .server_name
            .clone()
            .or_else(|| {
                s.address
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            })
            .unwrap_or_default();
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| StartupError::Syslog(format!("audit.syslog.server_name: {e}")))?;
        Some((config, name))
    } else {
        None
    };
    Ok(crate::audit::syslog::SyslogTarget {
        address: s.address.clone(),
        tls,
        hostname: s
            .hostname
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
    })
}

/// Hourly: re-checks every directory account that holds a role (`iam_api::sync_directory`),
/// so someone removed from the directory or its groups loses their role here without having
/// to sign in again.
async fn recheck_directory_accounts(state: web::Data<AppState>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticks.tick().await;
        if let Err(e) = http::iam_api::sync_directory(&state).await {
            tracing::warn!(error = %e, "directory re-check stopped");
        }
    }
}

/// Signs the audit chain's head on a schedule (when it moved), so a copy of the checkpoints
/// kept elsewhere can expose a rewritten chain.
async fn sign_audit_checkpoints(state: web::Data<AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    // The first tick fires at once; a fresh start has nothing new to sign.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = http::audit_api::make_checkpoint(&state).await {
            tracing::error!(error = %e, "audit checkpoint not signed");
        }
    }
}

/// Deletes expired one-time SCEP challenges every hour, so abandoned ones do not pile up.
async fn purge_expired_challenges(store: Arc<dyn Store>, clock: SharedClock) {
    let mut ticks = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticks.tick().await;
        let (store, now) = (Arc::clone(&store), clock.now());
        match web::block(move || crate::scep::challenges::purge_expired(store.as_ref(), now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "expired SCEP challenges purged"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot purge expired SCEP challenges"),
            Err(e) => tracing::error!(error = %e, "challenge purge task failed"),
        }
    }
}

/// Hourly: logs when the push certificate crosses an expiry threshold (30, 14, 7, 1 days).
async fn watch_push_certificate(push: Arc<PushService>, clock: SharedClock) {
    let mut ticks = tokio::time::interval(Duration::from_secs(3600));
    loop {
        ticks.tick().await;
        push.warn_if_expiring(clock.now());
    }
}

/// Hourly: deletes answered commands older than `mdm.retention_days`.
async fn prune_answered_commands(mdm: Arc<MdmService>, clock: SharedClock) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        ticks.tick().await;
        let (mdm, now) = (Arc::clone(&mdm), clock.now());
        match web::block(move || mdm.prune(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(pruned = n, "answered commands past retention pruned"),
            Ok(Err(e)) => tracing::error!(error = %e, "pruning answered commands failed"),
            Err(e) => tracing::error!(error = %e, "pruning task failed"),
        }
    }
}

/// Devices due an inventory report are asked once a minute, at most this many a tick (100,000
/// devices a day is ~70 a minute; the cap only matters after a long outage, which it spreads).
const INVENTORY_BATCH: usize = 2_000;

async fn run_inventory_schedule(mdm: Arc<MdmService>, clock: SharedClock) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        ticks.tick().await;
        let (mdm, now) = (Arc::clone(&mdm), clock.now());
        match web::block(move || mdm.run_inventory_schedule(now, INVENTORY_BATCH)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(devices = n, "scheduled inventory queued"),
            Ok(Err(e)) => tracing::error!(error = %e, "scheduled inventory failed; will retry"),
            Err(e) => tracing::error!(error = %e, "inventory task failed"),
        }
    }
}

/// Runs [`refresh_certificate`] and the SCEP RA renewal every [`RENEWAL_CHECK_INTERVAL`].
async fn keep_certificate_fresh(config: Config, pki: Arc<Pki>, tls: Arc<TlsState>, clock: SharedClock) {
    let mut ticks = tokio::time::interval(RENEWAL_CHECK_INTERVAL);
    ticks.tick().await; // the first tick is immediate; start-up already checked
    loop {
        ticks.tick().await;
        let (config, pki, tls, now) = (config.clone(), Arc::clone(&pki), Arc::clone(&tls), clock.now());
        // Key generation and file writes are blocking work.
        let refreshed = web::block(move || {
            refresh_certificate(&config, &pki, &tls, now);
            match pki.refresh_registration_authority(now) {
                Ok(Renewal::Issued { reason }) => {
                    tracing::info!(%reason, "new SCEP RA certificate in service")
                }
                Ok(Renewal::Reused) => {}
                Err(e) => tracing::error!(error = %e, "SCEP RA renewal failed; will retry"),
            }
        })
        .await;
        if let Err(e) = refreshed {
            tracing::error!(error = %e, "certificate renewal task failed");
        }
    }
}

/// Renews the managed server certificate in place when it nears expiry (the running listener
/// serves the new one from its next handshake), and warns about an operator certificate that
/// Citadel cannot renew. Returns whether a new certificate went into service.
pub fn refresh_certificate(config: &Config, pki: &Pki, tls: &TlsState, now: OffsetDateTime) -> bool {
    let Some(current) = tls.snapshot() else {
        return false;
    };
    let window = time::Duration::days(i64::from(config.server.tls_renew_days));
    match &current.source {
        TlsSource::Operator { cert_file } => {
            if current.info.expires_within(now, window) {
                tracing::warn!(
                    file = %cert_file.display(), days_left = current.info.days_left(now),
                    "the operator-supplied TLS certificate expires soon; replace it and restart"
                );
            }
            false
        }
        TlsSource::Managed => match server_certificate(config, pki, now) {
            Ok(cert) if cert.info.sha256_fingerprint != current.info.sha256_fingerprint => {
                tls.install(cert);
                tracing::info!("new TLS server certificate in service");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate renewal failed; will retry");
                false
            }
        },
    }
}

/// `citadel init`: everything `serve` creates on first start, without serving. Returns what
/// to tell the operator.
pub fn init(config: &Config, now: OffsetDateTime) -> Result<String, StartupError> {
    let prepared = prepare(config, now)?;
    let cert = server_certificate(config, &prepared.pki, now)?;
    prepared.store.flush()?;
    let mut report = first_start_notice(config, &prepared).unwrap_or_else(|| {
        format!(
            "Citadel is already initialised in {} (CA and store reused).\n",
            prepared.data.root().display()
        )
    });
    report.push_str(&format!(
        "  TLS server certificate: {} (expires {})\n",
        cert.info.subject_alt_names.join(", "),
        cert.info.not_after.date()
    ));
    Ok(report)
}

/// `citadel config check`: the configuration parsed already; check what it points at without
/// changing anything.
pub fn check(config: &Config) -> Result<(), StartupError> {
    if config.data_dir.exists() {
        DataDir::open(&config.data_dir)?;
    }
    if let (Some(cert), Some(key)) = (&config.server.tls_cert_file, &config.server.tls_key_file) {
        pki::load_operator_certificate(cert, key)?;
    }
    pki::server_identity(&config.server.hostnames)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use time::macros::datetime;

    #[test]
    fn running_server_swaps_in_a_renewed_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: tmp.path().join("data"),
            ..Config::default()
        };
        let clock = ManualClock::at(datetime!(2026-11-28 12:00 UTC));
        let prepared = prepare(&config, clock.now()).unwrap();
        let tls = TlsState::new(server_certificate(&config, &prepared.pki, clock.now()).unwrap());
        let served = || tls.resolver.current_fingerprint();
        let first = served();

        clock.advance(time::Duration::days(300));
        assert!(!refresh_certificate(&config, &prepared.pki, &tls, clock.now()));
        assert_eq!(served(), first);

        // 29 days before expiry: renewed, and the listener's resolver hands out the new one.
        clock.advance(time::Duration::days(68));
        assert!(refresh_certificate(&config, &prepared.pki, &tls, clock.now()));
        assert_ne!(served(), first);
        let info = tls.snapshot().unwrap().info;
        assert!(info.days_left(clock.now()) > 390);
        assert_eq!(Some(info.sha256_fingerprint), served());
    }
}
