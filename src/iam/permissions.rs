//! Permissions and roles: what an administrator, a console session or an API token may do.
//!
//! Every admin API route names the one permission it needs (`http::api`); a role is a named set
//! of permissions. The four built-in roles are fixed in code; custom roles are stored.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mdm::actions::Action;

/// One thing an administrator may be allowed to do. The serialised names are stable: they are
/// stored in custom roles and token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// See devices, their inventory, history, reports and exports.
    #[serde(rename = "devices.read")]
    DevicesRead,
    /// Set ownership, refresh inventory.
    #[serde(rename = "devices.manage")]
    DevicesManage,
    #[serde(rename = "devices.lock")]
    DevicesLock,
    /// Lost mode, locate, play a sound, see lost-mode locations.
    #[serde(rename = "devices.locate")]
    DevicesLocate,
    /// Restart and shut down.
    #[serde(rename = "devices.restart")]
    DevicesRestart,
    #[serde(rename = "devices.erase")]
    DevicesErase,
    #[serde(rename = "devices.clear_passcode")]
    DevicesClearPasscode,
    /// Remove a device from management.
    #[serde(rename = "devices.retire")]
    DevicesRetire,
    #[serde(rename = "commands.read")]
    CommandsRead,
    /// Send the ordinary MDM commands (queries, profiles, apps, settings); those a remote
    /// action also sends need that action's permission.
    #[serde(rename = "commands.send")]
    CommandsSend,
    /// Also send command types outside the reviewed list (OS updates, user deletion, firmware
    /// and recovery locks, …).
    #[serde(rename = "commands.any")]
    CommandsAny,
    /// Enrollment profiles, links and SCEP challenges.
    #[serde(rename = "enrollment.manage")]
    EnrollmentManage,
    /// Wake devices with an APNs push.
    #[serde(rename = "push.send")]
    PushSend,
    #[serde(rename = "settings.read")]
    SettingsRead,
    /// Push certificate and other appliance settings.
    #[serde(rename = "settings.manage")]
    SettingsManage,
    /// See administrator accounts, roles and API tokens.
    #[serde(rename = "users.read")]
    UsersRead,
    /// Create, change and remove administrators and roles, and anyone's API tokens.
    #[serde(rename = "users.manage")]
    UsersManage,
    /// Create and revoke one's own API tokens (never wider than one's own permissions).
    #[serde(rename = "api_tokens.manage")]
    ApiTokensManage,
    #[serde(rename = "audit.read")]
    AuditRead,
}

impl Permission {
    pub const ALL: [Permission; 19] = [
        Permission::DevicesRead,
        Permission::DevicesManage,
        Permission::DevicesLock,
        Permission::DevicesLocate,
        Permission::DevicesRestart,
        Permission::DevicesErase,
        Permission::DevicesClearPasscode,
        Permission::DevicesRetire,
        Permission::CommandsRead,
        Permission::CommandsSend,
        Permission::CommandsAny,
        Permission::EnrollmentManage,
        Permission::PushSend,
        Permission::SettingsRead,
        Permission::SettingsManage,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::ApiTokensManage,
        Permission::AuditRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Permission::DevicesRead => "devices.read",
            Permission::DevicesManage => "devices.manage",
            Permission::DevicesLock => "devices.lock",
            Permission::DevicesLocate => "devices.locate",
            Permission::DevicesRestart => "devices.restart",
            Permission::DevicesErase => "devices.erase",
            Permission::DevicesClearPasscode => "devices.clear_passcode",
            Permission::DevicesRetire => "devices.retire",
            Permission::CommandsRead => "commands.read",
            Permission::CommandsSend => "commands.send",
            Permission::CommandsAny => "commands.any",
            Permission::EnrollmentManage => "enrollment.manage",
            Permission::PushSend => "push.send",
            Permission::SettingsRead => "settings.read",
            Permission::SettingsManage => "settings.manage",
            Permission::UsersRead => "users.read",
            Permission::UsersManage => "users.manage",
            Permission::ApiTokensManage => "api_tokens.manage",
            Permission::AuditRead => "audit.read",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            Permission::DevicesRead => "See devices, inventory, history, reports and exports",
            Permission::DevicesManage => "Set device ownership and refresh inventory",
            Permission::DevicesLock => "Lock devices",
            Permission::DevicesLocate => "Lost mode, locate, play a sound, see lost-mode locations",
            Permission::DevicesRestart => "Restart and shut down devices",
            Permission::DevicesErase => "Erase devices",
            Permission::DevicesClearPasscode => "Clear a device's passcode",
            Permission::DevicesRetire => "Remove devices from management",
            Permission::CommandsRead => "See commands and their results",
            Permission::CommandsSend => "Send ordinary MDM commands (queries, profiles, apps, settings)",
            Permission::CommandsAny => "Send any MDM command type, including unreviewed ones",
            Permission::EnrollmentManage => "Enrollment profiles, links and SCEP challenges",
            Permission::PushSend => "Wake devices with a push",
            Permission::SettingsRead => "See appliance settings",
            Permission::SettingsManage => "Change appliance settings (push certificate)",
            Permission::UsersRead => "See administrators and roles",
            Permission::UsersManage => "Manage administrators, roles and all API tokens",
            Permission::ApiTokensManage => "Create and revoke one's own API tokens",
            Permission::AuditRead => "Read and export the audit log",
        }
    }

    /// Whether a console session must have re-entered its credentials recently to use it:
    /// actions that destroy data or hand out control.
    pub fn needs_fresh_authentication(self) -> bool {
        matches!(
            self,
            Permission::DevicesErase
                | Permission::DevicesClearPasscode
                | Permission::DevicesRetire
                | Permission::SettingsManage
                | Permission::UsersManage
        )
    }

    /// The permission a remote action needs.
    pub fn for_action(action: Action) -> Self {
        match action {
            Action::Lock => Permission::DevicesLock,
            Action::Erase => Permission::DevicesErase,
            Action::ClearPasscode => Permission::DevicesClearPasscode,
            Action::Restart | Action::ShutDown => Permission::DevicesRestart,
            Action::EnableLostMode | Action::Locate | Action::PlaySound | Action::DisableLostMode => {
                Permission::DevicesLocate
            }
            Action::Retire => Permission::DevicesRetire,
        }
    }

    /// The extra permission a raw MDM command of this type needs beyond `commands.send`, so that
    /// the command API is not a way around the remote actions' permissions: the action's own
    /// for the types actions send, none for the reviewed ordinary types, `commands.any` for
    /// everything else.
    pub fn for_command(request_type: &str) -> Option<Self> {
        Some(match request_type {
            "EraseDevice" => Permission::DevicesErase,
            "ClearPasscode" | "ClearRestrictionsPassword" => Permission::DevicesClearPasscode,
            "RemoveProfile" => Permission::DevicesRetire,
            "DeviceLock" => Permission::DevicesLock,
            "RestartDevice" | "ShutDownDevice" => Permission::DevicesRestart,
            "EnableLostMode" | "DisableLostMode" | "DeviceLocation" | "PlayLostModeSound" => {
                Permission::DevicesLocate
            }
            t if ORDINARY_COMMANDS.contains(&t) => return None,
            _ => Permission::CommandsAny,
        })
    }
}

/// Command types `commands.send` alone may send: queries and the everyday installation of
/// profiles, apps and settings. Reviewed one by one; a type not here needs `commands.any`.
const ORDINARY_COMMANDS: &[&str] = &[
    "ActiveNSExtensions",
    "AvailableOSUpdates",
    "CertificateList",
    "DeclarativeManagement",
    "DeviceConfigured",
    "DeviceInformation",
    "InstallApplication",
    "InstallMedia",
    "InstallProfile",
    "InstallProvisioningProfile",
    "InstalledApplicationList",
    "ManagedApplicationAttributes",
    "ManagedApplicationConfiguration",
    "ManagedApplicationFeedback",
    "ManagedApplicationList",
    "ManagedMediaList",
    "NSExtensionMappings",
    "OSUpdateStatus",
    "ProfileList",
    "ProvisioningProfileList",
    "Restrictions",
    "SecurityInfo",
    "Settings",
    "UserList",
    "ValidateApplications",
];

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of permissions; serialised as a sorted list of names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    pub fn all() -> Self {
        Self(Permission::ALL.into_iter().collect())
    }

    pub fn none() -> Self {
        Self::default()
    }

    pub fn contains(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }

    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &PermissionSet) -> Self {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }

    /// Those of `self` that `other` lacks.
    pub fn missing_from(&self, other: &PermissionSet) -> Vec<Permission> {
        self.0.difference(&other.0).copied().collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinRole {
    /// Everything, including administrators and settings.
    Owner,
    /// Devices, commands, enrollment and actions; not administrators or settings.
    Administrator,
    /// View devices; lock, locate, restart. No erase, no settings.
    HelpDesk,
    /// Read-only, including the audit log.
    Auditor,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 4] = [
        BuiltinRole::Owner,
        BuiltinRole::Administrator,
        BuiltinRole::HelpDesk,
        BuiltinRole::Auditor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "owner",
            BuiltinRole::Administrator => "administrator",
            BuiltinRole::HelpDesk => "help_desk",
            BuiltinRole::Auditor => "auditor",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "Everything, including administrators and settings",
            BuiltinRole::Administrator => "Devices, commands, enrollment and remote actions",
            BuiltinRole::HelpDesk => "View devices; lock, locate and restart them",
            BuiltinRole::Auditor => "Read-only, including the audit log",
        }
    }

    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            BuiltinRole::Owner => PermissionSet::all(),
            BuiltinRole::Administrator => [
                DevicesRead,
                DevicesManage,
                DevicesLock,
                DevicesLocate,
                DevicesRestart,
                DevicesErase,
                DevicesClearPasscode,
                DevicesRetire,
                CommandsRead,
                CommandsSend,
                CommandsAny,
                EnrollmentManage,
                PushSend,
                SettingsRead,
                ApiTokensManage,
                AuditRead,
            ]
            .into_iter()
            .collect(),
            BuiltinRole::HelpDesk => [
                DevicesRead,
                DevicesLock,
                DevicesLocate,
                DevicesRestart,
                CommandsRead,
            ]
            .into_iter()
            .collect(),
            BuiltinRole::Auditor => [DevicesRead, CommandsRead, SettingsRead, UsersRead, AuditRead]
                .into_iter()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        for r in BuiltinRole::ALL {
            assert_eq!(BuiltinRole::parse(r.name()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }

    #[test]
    fn roles_are_what_the_product_promises() {
        let help = BuiltinRole::HelpDesk.permissions();
        assert!(help.contains(Permission::DevicesLock));
        assert!(help.contains(Permission::DevicesLocate));
        assert!(help.contains(Permission::DevicesRestart));
        assert!(!help.contains(Permission::DevicesErase));
        assert!(!help.contains(Permission::SettingsManage));
        let auditor = BuiltinRole::Auditor.permissions();
        assert!(auditor.contains(Permission::AuditRead));
        assert!(
            auditor.iter().all(|p| p.name().ends_with(".read")),
            "the auditor only reads: {auditor:?}"
        );
        let admin = BuiltinRole::Administrator.permissions();
        assert!(admin.contains(Permission::DevicesErase));
        assert!(!admin.contains(Permission::UsersManage));
        assert!(!admin.contains(Permission::SettingsManage));
        assert!(admin.is_subset(&BuiltinRole::Owner.permissions()));
    }

    #[test]
    fn every_action_and_destructive_command_needs_a_device_permission() {
        for action in [
            Action::Lock,
            Action::Erase,
            Action::ClearPasscode,
            Action::Restart,
            Action::ShutDown,
            Action::EnableLostMode,
            Action::Locate,
            Action::PlaySound,
            Action::DisableLostMode,
            Action::Retire,
        ] {
            let p = Permission::for_action(action);
            assert!(p.name().starts_with("devices."), "{action:?}");
            assert_eq!(
                Permission::for_command(action.request_type()),
                Some(p),
                "{action:?}"
            );
        }
        assert!(Permission::for_action(Action::Erase).needs_fresh_authentication());
        assert!(!Permission::for_action(Action::Lock).needs_fresh_authentication());
        assert_eq!(Permission::for_command("DeviceInformation"), None);
        assert_eq!(Permission::for_command("InstallProfile"), None);
        for unreviewed in [
            "ScheduleOSUpdate",
            "DeleteUser",
            "SetFirmwarePassword",
            "NoSuchCommand",
        ] {
            assert_eq!(
                Permission::for_command(unreviewed),
                Some(Permission::CommandsAny),
                "{unreviewed}"
            );
        }
    }
}
