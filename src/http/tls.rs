//! rustls server configuration with a certificate that can be replaced while running, so a
//! renewal takes effect without a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::pki::ServerCertificate;

#[derive(Debug)]
pub struct ReloadableCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCertificate {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(initial),
        }
    }

    /// SHA-256 of the leaf certificate handed to new connections.
    pub fn current_fingerprint(&self) -> Option<String> {
        let current = self.current.read().ok()?;
        let leaf = current.end_entity_cert().ok()?;
        citadel_certs::inspect_der(leaf)
            .ok()
            .map(|i| i.sha256_fingerprint)
    }

    pub fn replace(&self, next: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut slot) => *slot = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

impl ResolvesServerCert for ReloadableCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// TLS 1.3 and 1.2 only, aws-lc-rs crypto, HTTP/2 and HTTP/1.1 by ALPN.
///
/// With `device_ca` (DER), clients may present a certificate issued by it (device mTLS); a
/// client without one is still served, and what a certificate may do is decided per request.
pub fn server_config(
    resolver: Arc<ReloadableCertificate>,
    device_ca: Option<&[u8]>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match device_ca {
        None => builder.with_no_client_auth(),
        Some(der) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(rustls::pki_types::CertificateDer::from(der.to_vec()))?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Stateless session tickets (keys in memory, rotated every 6 hours): a device woken by a
    // push reconnects with a resumed handshake — no certificate signature, and for mTLS no
    // client certificate check — instead of a full one. The server's own cache holds only 256
    // sessions, far fewer than a fleet. A TLS 1.3 resumption is forward secret (rustls
    // resumes with a fresh key exchange); a TLS 1.2 one is not, as with any TLS 1.2 ticket —
    // the ticket keys live only in memory and rotate every 6 hours. A resumed mTLS identity
    // is still checked against the registry (revocation, validity) on every request.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(config)
}

/// The certificate currently served and its details, shared with `/healthz`.
pub struct TlsState {
    pub resolver: Arc<ReloadableCertificate>,
    pub current: RwLock<ServerCertificate>,
}

impl TlsState {
    pub fn new(cert: ServerCertificate) -> Self {
        Self {
            resolver: Arc::new(ReloadableCertificate::new(Arc::clone(&cert.certified_key))),
            current: RwLock::new(cert),
        }
    }

    pub fn install(&self, cert: ServerCertificate) {
        self.resolver.replace(Arc::clone(&cert.certified_key));
        match self.current.write() {
            Ok(mut slot) => *slot = cert,
            Err(poisoned) => *poisoned.into_inner() = cert,
        }
    }

    pub fn snapshot(&self) -> Option<ServerCertificate> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// A TLS client configuration that trusts only the CA certificates in `ca_file` (PEM): for
/// the site's own servers (directory, SIEM), never the system's trust store.
pub fn client_trusting(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let where_ = |e: &dyn std::fmt::Display| format!("{}: {e}", ca_file.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| where_(&e))? {
        roots.add(cert.map_err(|e| where_(&e))?).map_err(|e| where_(&e))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", ca_file.display()));
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS handshakes completed by the listeners, full or resumed (`/metrics`): how many devices
/// come back with a session ticket instead of a full handshake.
pub struct HandshakeCounts {
    full: AtomicU64,
    resumed: AtomicU64,
}

pub static HANDSHAKES: HandshakeCounts = HandshakeCounts {
    full: AtomicU64::new(0),
    resumed: AtomicU64::new(0),
};

impl HandshakeCounts {
    pub fn record(&self, kind: Option<rustls::HandshakeKind>) {
        let counter = match kind {
            Some(rustls::HandshakeKind::Resumed) => &self.resumed,
            _ => &self.full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        out.push_str(&format!(
            "# HELP citadel_tls_handshakes_total TLS handshakes completed, by kind.\n\
             # TYPE citadel_tls_handshakes_total counter\n\
             citadel_tls_handshakes_total{{kind=\"full\"}} {}\n\
             citadel_tls_handshakes_total{{kind=\"resumed\"}} {}\n",
            self.full.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
        ));
    }
}
