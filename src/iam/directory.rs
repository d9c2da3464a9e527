//! Sign-in against the site's LDAP directory or Active Directory.
//!
//! The service account finds the user's entry; binding as that entry with the typed password
//! proves the password; the user's groups (searched as the service account) give the role.
//! Always over TLS verified against the site's CA — never the system trust store, never
//! without verification. An empty password is refused before any bind: many servers treat
//! it as an anonymous bind that "succeeds".

use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};
use rustls::ClientConfig;

use crate::config::DirectorySection;

/// What the directory says about a person who proved their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    pub display_name: String,
    /// DNs of the groups the user belongs to.
    pub groups: Vec<String>,
    /// The role of the first configured group the user is in.
    pub role: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("no such user in the directory")]
    UnknownUser,
    #[error("the directory refused the password")]
    WrongPassword,
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
    #[error("directory configuration: {0}")]
    Config(String),
}

pub struct Directory {
    settings: DirectorySection,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.settings.url)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Unavailable(e.to_string())
}

impl Directory {
    /// Reads the site CA; fails when it holds no certificate.
    pub fn new(settings: DirectorySection) -> Result<Self, DirectoryError> {
        let tls = crate::http::tls::client_trusting(&settings.ca_file).map_err(DirectoryError::Config)?;
        Ok(Self { settings, tls })
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    async fn connect(&self) -> Result<ldap3::Ldap, DirectoryError> {
        let timeout = Duration::from_secs(self.settings.timeout_secs);
        let conn_settings = LdapConnSettings::new()
            .set_config(Arc::clone(&self.tls))
            .set_starttls(self.settings.starttls)
            .set_conn_timeout(timeout);
        let (conn, ldap) = LdapConnAsync::with_settings(conn_settings, &self.settings.url)
            .await
            .map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }

    /// Looks `username` up as the service account (no password): who they are now and their
    /// groups. `UnknownUser` when the directory no longer has them.
    pub async fn lookup(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        let mut ldap = self.connect().await?;
        let found = self.find(&mut ldap, username).await;
        let _ = ldap.unbind().await;
        found
    }

    /// Binds as the service account and finds the user's entry and groups.
    async fn find(&self, ldap: &mut ldap3::Ldap, username: &str) -> Result<DirectoryUser, DirectoryError> {
        let s = &self.settings;
        let timeout = Duration::from_secs(s.timeout_secs);
        let service_password = s
            .bind_password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        ldap.with_timeout(timeout)
            .simple_bind(&s.bind_dn, &service_password)
            .await
            .map_err(unavailable)?
            .success()
            .map_err(|e| DirectoryError::Unavailable(format!("service account bind: {e}")))?;
        let filter = s.user_filter.replace("{username}", &ldap_escape(username));
        let (entries, _) = ldap
            .with_timeout(timeout)
            .search(
                &s.user_base,
                Scope::Subtree,
                &filter,
                vec![s.display_name_attribute.as_str()],
            )
            .await
            .map_err(unavailable)?
            .success()
            .map_err(unavailable)?;
        if entries.len() > 1 {
            // Ambiguous: refuse rather than guess which person this is — and do not take it
            // for "no such person" either (that would strip the real one's role).
            tracing::warn!(%username, matches = entries.len(), "directory user filter matched several entries");
            return Err(DirectoryError::Unavailable(format!(
                "the user filter matches {} entries for this name",
                entries.len()
            )));
        }
        let Some(entry) = entries.into_iter().next().map(SearchEntry::construct) else {
            return Err(DirectoryError::UnknownUser);
        };
        let display_name = entry
            .attrs
            .get(&s.display_name_attribute)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| username.to_owned());
        let group_filter = s.group_filter.replace("{dn}", &ldap_escape(&entry.dn));
        let (groups, _) = ldap
            .with_timeout(timeout)
            .search(&s.group_base, Scope::Subtree, &group_filter, vec!["1.1"])
            .await
            .map_err(unavailable)?
            .success()
            .map_err(unavailable)?;
        let groups: Vec<String> = groups.into_iter().map(|g| SearchEntry::construct(g).dn).collect();
        let role = s
            .groups
            .iter()
            .find(|m| groups.iter().any(|g| g.eq_ignore_ascii_case(&m.group)))
            .map(|m| m.role.clone());
        Ok(DirectoryUser {
            dn: entry.dn,
            display_name,
            groups,
            role,
        })
    }

    /// Checks `password` for `username` and reads their groups.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<DirectoryUser, DirectoryError> {
        if password.is_empty() {
            return Err(DirectoryError::WrongPassword);
        }
        let timeout = Duration::from_secs(self.settings.timeout_secs);
        let mut ldap = self.connect().await?;
        // Groups are read as the service account, before the user's bind changes who we are.
        let user = self.find(&mut ldap, username).await?;
        let bound = ldap
            .with_timeout(timeout)
            .simple_bind(&user.dn, password)
            .await
            .map_err(unavailable)?;
        let _ = ldap.unbind().await;
        match bound.rc {
            0 => Ok(user),
            // invalidCredentials; unwillingToPerform (e.g. an empty password, a locked
            // account in some servers).
            49 | 53 => Err(DirectoryError::WrongPassword),
            rc => Err(DirectoryError::Unavailable(format!(
                "user bind answered {rc}: {}",
                bound.text
            ))),
        }
    }
}
