//! `citadel healthcheck`: asks a running server's `/healthz` over verified TLS.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("cannot read the CA certificate: {0}")]
    Ca(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}: {body}")]
    Unhealthy { url: String, status: u16, body: String },
}

/// Fetches `url` trusting only `ca_pem`; returns the health document on HTTP 200.
pub async fn check(
    url: &str,
    ca_pem: &str,
    timeout: Duration,
) -> Result<serde_json::Value, HealthcheckError> {
    let ca =
        reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| HealthcheckError::Ca(e.to_string()))?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(timeout)
        .build()
        .map_err(|e| HealthcheckError::Ca(e.to_string()))?;
    let unreachable = |e: reqwest::Error| HealthcheckError::Unreachable {
        url: url.to_owned(),
        reason: error_chain(&e),
    };
    let response = client.get(url).send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    if status != 200 {
        return Err(HealthcheckError::Unhealthy {
            url: url.to_owned(),
            status,
            body,
        });
    }
    serde_json::from_str(&body).map_err(|e| HealthcheckError::Unhealthy {
        url: url.to_owned(),
        status,
        body: format!("not a health document ({e})"),
    })
}

/// reqwest's top-level message hides the cause ("error sending request"); show all of it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
