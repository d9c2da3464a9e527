//! How CLI commands reach the appliance's state. sled lets one process open the store, so
//! when `citadel serve` runs they talk to it over its owner-only admin socket; otherwise they
//! open the data directory themselves.

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::appliance::StartupError;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::pki::Pki;
use crate::scep::{ScepOptions, ScepService};
use crate::store::{SledOptions, SledStore, Store, StoreError, migrate_to_current};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("the running server's admin socket failed: {0}")]
    Socket(String),
    #[error("the server refused: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Input(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Startup(e.into())
    }
}

impl From<crate::scep::ScepError> for AdminError {
    fn from(e: crate::scep::ScepError) -> Self {
        match e {
            crate::scep::ScepError::Store(s) => s.into(),
            other => Self::Socket(other.to_string()),
        }
    }
}

impl AdminError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Startup(e) => e.exit_code(),
            AdminError::Socket(_) => 69,
            AdminError::Refused { .. } => 65,
            AdminError::NotFound => 1,
            AdminError::Input(_) => 65,
        }
    }
}

/// Either the running server, or the data directory opened by this process.
pub enum Admin {
    Socket(std::path::PathBuf),
    Local(ScepService),
}

impl Admin {
    pub fn connect(config: &Config, now: OffsetDateTime) -> Result<Self, AdminError> {
        let data = DataDir::open(&config.data_dir).map_err(StartupError::from)?;
        let socket = data.admin_socket();
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(Self::Socket(socket));
        }
        let store = SledStore::open(
            &data.store_dir(),
            &SledOptions {
                cache_capacity_bytes: config.store.cache_capacity_mb * 1024 * 1024,
                flush_every_ms: config.store.flush_every_ms,
            },
        )?;
        migrate_to_current(&store)?;
        let label = gethostname::gethostname().to_string_lossy().into_owned();
        let (pki, _) = Pki::load_or_create(&data, &label, now).map_err(StartupError::from)?;
        let store: Arc<dyn Store> = Arc::new(store);
        Ok(Self::Local(ScepService::new(
            store,
            Arc::new(pki),
            ScepOptions::from(&config.scep),
        )))
    }

    pub fn call<T: DeserializeOwned>(
        socket: &Path,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, AdminError> {
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| AdminError::Socket(e.to_string()))?,
            None => Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AdminError::Socket(e.to_string()))?;
        let (status, bytes) = runtime
            .block_on(request(socket, method, path, payload))
            .map_err(AdminError::Socket)?;
        match status {
            200..=299 => serde_json::from_slice(&bytes).map_err(|e| AdminError::Socket(e.to_string())),
            404 => Err(AdminError::NotFound),
            _ => Err(AdminError::Refused {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }
}

async fn request(socket: &Path, method: Method, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes.to_vec()))
}
