//! Identity and access: administrators (local or directory, always with a second factor),
//! roles and permissions, console sessions, API tokens, and the one-time bootstrap secret that
//! lets the first administrator in.

pub mod accounts;
pub mod api_tokens;
pub mod bootstrap;
pub mod directory;
pub mod password;
pub mod permissions;
pub mod service;
pub mod sessions;
pub mod throttle;
pub mod totp;

use time::OffsetDateTime;

use crate::audit::Actor;
use permissions::{Permission, PermissionSet};
use sessions::PendingStep;

/// Who an admin API request acts as, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    /// For logs and records: `admin:alice`, `api-token:ID (name)`.
    pub label: String,
    pub permissions: PermissionSet,
    pub via: Via,
}

#[derive(Debug, Clone)]
pub enum Via {
    ApiToken {
        id: String,
        /// The administrator who made it, if any.
        created_by: Option<String>,
    },
    Session {
        id: String,
        username: String,
        /// Until when destructive actions are allowed without signing in again.
        fresh_until: OffsetDateTime,
        pending: Vec<PendingStep>,
    },
    /// An end user's portal session: no administrative permission at all.
    Portal { id: String, username: String },
}

/// Why a principal may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("this requires the {0} permission")]
    Missing(Permission),
    #[error("finish signing in first: {0}")]
    Pending(String),
    #[error("this action requires signing in again (POST /api/v1/auth/reauthenticate)")]
    Reauthenticate,
    #[error("the request lacks this session's CSRF token")]
    Csrf,
}

impl Principal {
    /// The administrator behind the request: the session's user or the token's maker.
    pub fn username(&self) -> Option<&str> {
        match &self.via {
            Via::Session { username, .. } => Some(username),
            Via::ApiToken { created_by, .. } => created_by.as_deref(),
            Via::Portal { .. } => None,
        }
    }

    /// The administrator's console session, if the request came through one.
    pub fn session_id(&self) -> Option<&str> {
        match &self.via {
            Via::Session { id, .. } => Some(id),
            Via::ApiToken { .. } | Via::Portal { .. } => None,
        }
    }

    /// The portal user behind a portal request.
    pub fn portal_user(&self) -> Option<&str> {
        match &self.via {
            Via::Portal { username, .. } => Some(username),
            _ => None,
        }
    }

    pub fn pending(&self) -> &[PendingStep] {
        match &self.via {
            Via::Session { pending, .. } => pending,
            Via::ApiToken { .. } | Via::Portal { .. } => &[],
        }
    }

    /// May this principal use `permission` at `now`? A console session must also have
    /// finished signing in, and for destructive permissions have signed in recently. A token
    /// carries a destructive permission only because a freshly signed-in administrator gave
    /// it one on purpose.
    pub fn require(&self, permission: Permission, now: OffsetDateTime) -> Result<(), AccessDenied> {
        if let Via::Session { pending, .. } = &self.via
            && !pending.is_empty()
        {
            let steps: Vec<&str> = pending
                .iter()
                .map(|p| match p {
                    PendingStep::MfaEnrolment => "set up two-factor authentication",
                    PendingStep::PasswordChange => "choose a new password",
                })
                .collect();
            return Err(AccessDenied::Pending(steps.join(", ")));
        }
        if !self.permissions.contains(permission) {
            return Err(AccessDenied::Missing(permission));
        }
        if let Via::Session { fresh_until, .. } = &self.via
            && permission.needs_fresh_authentication()
            && *fresh_until <= now
        {
            return Err(AccessDenied::Reauthenticate);
        }
        Ok(())
    }
}

impl std::ops::Deref for Principal {
    type Target = str;
    fn deref(&self) -> &str {
        &self.label
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iam::permissions::BuiltinRole;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 09:00 UTC);

    fn session(fresh_until: OffsetDateTime, pending: Vec<PendingStep>, role: BuiltinRole) -> Principal {
        Principal {
            actor: Actor::Administrator("alice".into()),
            label: "admin:alice".into(),
            permissions: role.permissions(),
            via: Via::Session {
                id: "s".into(),
                username: "alice".into(),
                fresh_until,
                pending,
            },
        }
    }

    #[test]
    fn destructive_permissions_need_a_recent_sign_in_from_a_session() {
        let fresh = session(
            NOW + time::Duration::minutes(3),
            vec![],
            BuiltinRole::Administrator,
        );
        assert_eq!(fresh.require(Permission::DevicesErase, NOW), Ok(()));
        // Five minutes later the same session may still lock, but not erase.
        let later = NOW + time::Duration::minutes(5);
        assert_eq!(
            fresh.require(Permission::DevicesErase, later),
            Err(AccessDenied::Reauthenticate)
        );
        assert_eq!(fresh.require(Permission::DevicesLock, later), Ok(()));
        // A help-desk session lacks erase whatever its age; a session still signing in has
        // nothing at all.
        let help = session(NOW + time::Duration::minutes(3), vec![], BuiltinRole::HelpDesk);
        assert_eq!(
            help.require(Permission::DevicesErase, NOW),
            Err(AccessDenied::Missing(Permission::DevicesErase))
        );
        let pending = session(NOW, vec![PendingStep::MfaEnrolment], BuiltinRole::Owner);
        assert!(matches!(
            pending.require(Permission::DevicesRead, NOW),
            Err(AccessDenied::Pending(_))
        ));
        // A token holds a destructive permission only because a freshly signed-in maker gave
        // it one: no further freshness applies.
        let token = Principal {
            actor: Actor::ApiToken("t".into()),
            label: "api-token:t".into(),
            permissions: [Permission::DevicesErase].into_iter().collect(),
            via: Via::ApiToken {
                id: "t".into(),
                created_by: None,
            },
        };
        assert_eq!(token.require(Permission::DevicesErase, later), Ok(()));
        // A portal user holds no administrative permission.
        let user = Principal {
            actor: Actor::User("bob".into()),
            label: "user:bob".into(),
            permissions: PermissionSet::none(),
            via: Via::Portal {
                id: "p".into(),
                username: "bob".into(),
            },
        };
        assert!(user.require(Permission::DevicesRead, NOW).is_err());
    }
}
