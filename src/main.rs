//! The `citadel` command line.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use citadel::admin_client::{Admin, AdminError};
use citadel::appliance::{self, StartupError};
use citadel::audit::checkpoint::Checkpoint;
use citadel::audit::{Actor, AuditEvent, AuditLog, Outcome, Verification};
use citadel::clock::{SharedClock, SystemClock};
use citadel::config::{self, Config, Overrides};
use citadel::datadir::DataDir;
use citadel::http::audit_api::parse_expectations;
use citadel::http::iam_api::{DirectoryChange, PasswordReset, generated_password};
use citadel::iam::accounts;
use citadel::iam::api_tokens::{self, ApiTokenRecord, TokenScope};
use citadel::iam::permissions::Permission;
use citadel::iam::service::{IamError, IamService, IamSettings, Sealer};
use citadel::pki::push::{ImportSource, PushCertUpload};
use citadel::scep::ScepService;
use citadel::scep::challenges::NewChallenge;
use citadel::scep::registry::{CertificateRecord, CertificateStatus, RevokeOutcome};
use citadel::{healthcheck, pki, telemetry};
use hyper::Method;

/// glibc's allocator was an eighth of the server's CPU per request under load (measured with
/// `perf` while `citadel simulate` drove it); jemalloc's thread caches cost a fraction, and it
/// returns freed memory to the system (mimalloc, as fast, held three times the idle RSS).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const EXIT_CODES: &str = "\
Exit codes: 0 success; 1 unhealthy or unreachable (healthcheck); 2 usage error; \
65 bad data in the store or CA; 66 data directory missing; 69 cannot listen; \
74 I/O error; 75 store in use by another process; 77 unsafe permissions; 78 configuration error.";

#[derive(Parser)]
#[command(
    name = "citadel",
    version,
    about = "Citadel: on-premises Mobile Device Management in one binary"
)]
#[command(after_help = EXIT_CODES)]
struct Cli {
    /// Configuration file (TOML). Default: /etc/citadel/citadel.toml if it exists.
    #[arg(long, global = true, env = "CITADEL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (store, CA, keys). Overrides `data_dir` from the configuration.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance: HTTPS API, device endpoints and web console.
    Serve(ListenArgs),
    /// Create the data directory, CA, TLS certificate and bootstrap secret, then exit.
    Init(ListenArgs),
    /// Check that a running appliance is healthy (exit 0) or not (exit 1).
    Healthcheck(HealthcheckArgs),
    /// Certificate authority operations.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Configuration operations.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// SCEP operations.
    #[command(subcommand)]
    Scep(ScepCommand),
    /// Admin API tokens (`Authorization: Bearer <token>`).
    #[command(subcommand, name = "api-token")]
    ApiToken(ApiTokenCommand),
    /// Administrator accounts: list them, and recover one that lost its password or second
    /// factor (for whoever holds the data directory, when no Owner can sign in).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The APNs push certificate that lets Citadel wake devices.
    #[command(subcommand, name = "push-cert")]
    PushCert(PushCertCommand),
    /// Enrol and drive a fleet of virtual Apple devices against an appliance (a pilot or a
    /// load test), then report throughput, latency and errors.
    Simulate(Box<citadel::sim::run::SimulateArgs>),
    /// A trivial HTTPS endpoint on the appliance's own stack and TLS identity: the ceiling
    /// `simulate --ceiling-url` compares a run against.
    #[command(name = "simulate-ceiling", hide = true)]
    SimulateCeiling(ListenArgs),
}

#[derive(Subcommand)]
enum PushCertCommand {
    /// Create the key (kept in the data directory) and the CSR to upload to Apple's push
    /// certificates portal. With --vendor-*, also sign it as an MDM vendor and print the
    /// encoded request Apple expects instead.
    Csr {
        /// Organisation in the CSR subject. Default: mdm.organization.
        #[arg(long)]
        org: Option<String>,
        /// Contact e-mail in the CSR subject.
        #[arg(long)]
        email: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// MDM vendor signing certificate (PEM).
        #[arg(long, value_name = "FILE", requires_all = ["vendor_key", "vendor_chain"])]
        vendor_cert: Option<PathBuf>,
        /// The vendor certificate's private key (PEM, PKCS#8).
        #[arg(long, value_name = "FILE")]
        vendor_key: Option<PathBuf>,
        /// Apple's WWDR intermediate and root certificates (PEM), appended to the vendor's.
        #[arg(long, value_name = "FILE")]
        vendor_chain: Option<PathBuf>,
    },
    /// Import the certificate Apple issued (PEM, with --key or the pending request's key) or a
    /// PKCS#12 file. Takes effect without a restart; a different topic is refused.
    Import {
        #[arg(long, value_name = "FILE", conflicts_with = "p12")]
        cert: Option<PathBuf>,
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        #[arg(long, value_name = "FILE", requires = "password_file")]
        p12: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Show the push certificate's topic, subject and expiry.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain; exit 1 naming the first record that was edited, removed or
    /// reordered.
    Verify {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// A record's hash kept outside the appliance (from an exported checkpoint or a SIEM),
        /// as SEQ:HASH; the chain must still hold it. Repeatable.
        #[arg(long, value_name = "SEQ:HASH")]
        expect: Vec<String>,
    },
    /// Sign the chain's head now (the server also does so every `audit.checkpoint_minutes`);
    /// prints the checkpoint. Needs the running server.
    Checkpoint,
}

#[derive(Subcommand)]
enum ApiTokenCommand {
    /// Create a token; it is printed once on stdout and only its hash is kept.
    Create {
        /// What the token is for, e.g. "inventory script".
        #[arg(long)]
        name: String,
        /// Expire the token after this many days (default: never).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
        ttl_days: Option<u32>,
        /// The role the token acts with: owner, administrator, help_desk, auditor or a
        /// custom role.
        #[arg(long, required_unless_present = "permission", conflicts_with = "permission")]
        role: Option<String>,
        /// A permission the token has (repeatable), e.g. devices.read; see `GET
        /// /api/v1/permissions`.
        #[arg(long)]
        permission: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id (from `list`).
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List administrators (never their secrets).
    List,
    /// Remove an administrator's second factor; they enrol a new one at their next sign-in.
    ResetMfa { username: String },
    /// Give an administrator a new random password (printed once), to be replaced at their
    /// next sign-in. Ends their sessions.
    ResetPassword { username: String },
    /// Ask the directory now about every directory administrator (the server does so hourly):
    /// whoever left it or its groups loses their role. Needs the running server.
    SyncDirectory,
}

#[derive(Subcommand)]
enum ScepCommand {
    /// Create a one-time challenge password for one device enrollment; prints it on stdout.
    Challenge {
        /// Lifetime in seconds (default: scep.challenge_ttl_secs, 1 hour).
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
    },
}

#[derive(Args)]
struct ListenArgs {
    /// Address to listen on, e.g. 0.0.0.0:8443. Overrides `server.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// URL of the health endpoint. Default: derived from `server.listen`.
    #[arg(long, env = "CITADEL_URL")]
    url: Option<String>,
    /// CA certificate (PEM) to verify the server with. Default: the data directory's root CA.
    #[arg(long, env = "CITADEL_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    #[command(flatten)]
    listen: ListenArgs,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the root CA certificate (PEM) on stdout: what browsers and devices trust.
    Export {
        /// Print the issuing CA (which signs device certificates) before the root.
        #[arg(long)]
        chain: bool,
    },
    /// List every certificate the CA issued.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an issued certificate by serial number (hex); the CRL is re-issued.
    Revoke { serial: String },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets redacted.
    Check(ListenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Serve(a) | Command::Init(a) | Command::Config(ConfigCommand::Check(a)) => a.listen,
        Command::Healthcheck(h) => h.listen.listen,
        Command::SimulateCeiling(a) => a.listen,
        Command::Ca(_)
        | Command::Scep(_)
        | Command::ApiToken(_)
        | Command::Admin(_)
        | Command::Audit(_)
        | Command::PushCert(_)
        | Command::Simulate(_) => None,
    };
    let config = match load_config(&cli, listen) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    telemetry::init(config.log.format, &config.log.level);
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Serve(_) => run_serve(config, clock),
        Command::Init(_) => run_init(&config, &clock),
        Command::Healthcheck(args) => run_healthcheck(&config, &args),
        Command::Ca(CaCommand::Export { chain }) => run_ca_export(&config, chain),
        Command::Ca(CaCommand::List { json }) => report(run_ca_list(&config, &clock, json)),
        Command::Ca(CaCommand::Revoke { serial }) => report(run_ca_revoke(&config, &clock, &serial)),
        Command::Scep(ScepCommand::Challenge { ttl }) => report(run_scep_challenge(&config, &clock, ttl)),
        Command::ApiToken(cmd) => report(run_api_token(&config, &clock, cmd)),
        Command::Admin(cmd) => report(run_admin(&config, &clock, cmd)),
        Command::Audit(AuditCommand::Verify { json, expect }) => {
            run_audit_verify(&config, &clock, json, &expect.join(","))
        }
        Command::Audit(AuditCommand::Checkpoint) => report(run_audit_checkpoint(&config, &clock)),
        Command::PushCert(cmd) => report(run_push_cert(&config, &clock, cmd)),
        Command::Config(ConfigCommand::Check(_)) => run_config_check(&config),
        Command::Simulate(args) => run_simulate(&args, &clock),
        Command::SimulateCeiling(_) => {
            let result = actix_web::rt::System::new().block_on(citadel::sim::ceiling::serve(config, clock));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn run_simulate(args: &citadel::sim::run::SimulateArgs, clock: &SharedClock) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("citadel: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(citadel::sim::run::run(args, Arc::clone(clock))) {
        Ok((report, _)) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("citadel: cannot render the report: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", report.render());
            }
            if report.enrolled == 0 {
                eprintln!("citadel: no device could enrol");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("citadel: simulate: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli, listen: Option<SocketAddr>) -> Result<Config, StartupError> {
    let file = config::config_file(cli.config.as_deref())?;
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        listen,
    };
    Ok(config::load(file.as_deref(), &overrides)?)
}

fn fail(e: &StartupError) -> ExitCode {
    eprintln!("citadel: {e}");
    ExitCode::from(e.exit_code())
}

fn run_serve(config: Config, clock: SharedClock) -> ExitCode {
    let result = actix_web::rt::System::new().block_on(appliance::serve(config, clock));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "citadel stopped");
            fail(&e)
        }
    }
}

fn run_init(config: &Config, clock: &SharedClock) -> ExitCode {
    match appliance::init(config, clock.now()) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn report(result: Result<(), AdminError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citadel: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_scep_challenge(config: &Config, clock: &SharedClock, ttl: Option<u64>) -> Result<(), AdminError> {
    let created: NewChallenge = match Admin::connect(config, clock.now())? {
        Admin::Socket(socket) => Admin::call(
            &socket,
            Method::POST,
            "/scep/challenges",
            Some(&serde_json::json!({ "ttl_secs": ttl })),
        )?,
        Admin::Local(scep) => {
            let ttl = ttl.map(|s| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)));
            let created = scep.create_challenge(ttl, clock.now(), "cli")?;
            let event = AuditEvent::new(Actor::Cli, "scep_challenge.create", Outcome::Success)
                .reason(format!("valid until {}", created.expires_at));
            audit_cli(&scep, event, clock)?;
            created
        }
    };
    println!("{}", created.challenge);
    eprintln!(
        "citadel: one-time SCEP challenge, valid until {}",
        created.expires_at
    );
    Ok(())
}

/// Audits a change made at the command line with the server stopped (a running server audits
/// what reaches it through its admin socket).
fn audit_cli(scep: &ScepService, event: AuditEvent, clock: &SharedClock) -> Result<(), AdminError> {
    AuditLog::open(Arc::clone(scep.store()))?.append(event, clock.now())?;
    Ok(())
}

fn token_event(action: &str, token: &ApiTokenRecord) -> AuditEvent {
    AuditEvent::new(Actor::Cli, action, Outcome::Success)
        .target(token.id.as_str())
        .reason(format!("named {:?}; {}", token.name, token.scope_description()))
}

fn run_audit_checkpoint(config: &Config, clock: &SharedClock) -> Result<(), AdminError> {
    let Admin::Socket(socket) = Admin::connect(config, clock.now())? else {
        return Err(AdminError::Input(
            "checkpoints are signed by the running server; start it first".into(),
        ));
    };
    let made: Option<Checkpoint> = Admin::call(&socket, Method::POST, "/audit/checkpoint", None::<&()>)?;
    match made {
        Some(c) => {
            println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
            eprintln!("citadel: checkpoint signed for record {} ({})", c.seq, c.hash);
        }
        None => eprintln!("citadel: the newest checkpoint already covers the chain's head"),
    }
    Ok(())
}

fn run_audit_verify(config: &Config, clock: &SharedClock, json: bool, expect: &str) -> ExitCode {
    let expected = match parse_expectations(expect) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("citadel: --expect: {e}");
            return ExitCode::from(64);
        }
    };
    let checked = Admin::connect(config, clock.now()).and_then(|admin| match admin {
        Admin::Socket(socket) => Admin::call::<Verification>(
            &socket,
            Method::GET,
            &format!("/audit/verify?expect={expect}"),
            None::<&()>,
        ),
        Admin::Local(scep) => Ok(citadel::audit::verify_all(scep.store().as_ref(), &expected)?),
    });
    let verification = match checked {
        Ok(v) => v,
        Err(e) => {
            eprintln!("citadel: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verification).unwrap_or_default()
        );
    }
    match &verification.problem {
        None => {
            eprintln!(
                "citadel: audit log intact: {} records verified",
                verification.verified
            );
            ExitCode::SUCCESS
        }
        Some(problem) => {
            eprintln!(
                "citadel: AUDIT LOG TAMPERED: {problem} ({} records verified before it)",
                verification.verified
            );
            ExitCode::FAILURE
        }
    }
}

fn run_admin(config: &Config, clock: &SharedClock, cmd: AdminCommand) -> Result<(), AdminError> {
    let admin = Admin::connect(config, clock.now())?;
    let local = |scep: &citadel::scep::ScepService| {
        IamService::new(
            Arc::clone(scep.store()),
            Arc::clone(scep.pki()) as Arc<dyn Sealer>,
            IamSettings::from_config(config),
        )
    };
    let iam_error = |e: IamError| match e {
        IamError::NotFound => AdminError::NotFound,
        other => AdminError::Input(other.to_string()),
    };
    match cmd {
        AdminCommand::List => {
            let list: Vec<serde_json::Value> = match admin {
                Admin::Socket(socket) => Admin::call(&socket, Method::GET, "/admins", None::<&()>)?,
                Admin::Local(scep) => accounts::list(scep.store().as_ref())?
                    .iter()
                    .map(|a| serde_json::to_value(a.view()).unwrap_or_default())
                    .collect(),
            };
            println!(
                "{:<24} {:<16} {:<10} {:<5} {:<9} LAST SIGN-IN",
                "USER", "ROLE", "SOURCE", "MFA", "STATUS"
            );
            for a in list {
                let field = |k: &str| a[k].as_str().unwrap_or("-").to_owned();
                println!(
                    "{:<24} {:<16} {:<10} {:<5} {:<9} {}",
                    field("username"),
                    field("role"),
                    field("source"),
                    if a["mfa_enrolled"] == true { "yes" } else { "no" },
                    if a["disabled"] == true {
                        "disabled"
                    } else {
                        "active"
                    },
                    a["last_login_at"].as_str().unwrap_or("never"),
                );
            }
        }
        AdminCommand::ResetMfa { username } => {
            match admin {
                Admin::Socket(socket) => {
                    let _: serde_json::Value = Admin::call(
                        &socket,
                        Method::POST,
                        &format!("/admins/{username}/mfa/reset"),
                        None::<&()>,
                    )?;
                }
                Admin::Local(scep) => {
                    local(&scep).reset_mfa(&username).map_err(iam_error)?;
                    let event = AuditEvent::new(Actor::Cli, "administrator.mfa.reset", Outcome::Success)
                        .target(username.as_str());
                    audit_cli(&scep, event, clock)?;
                }
            }
            eprintln!(
                "citadel: {username}'s second factor was removed; they enrol a new one at their next sign-in"
            );
        }
        AdminCommand::SyncDirectory => {
            let Admin::Socket(socket) = admin else {
                return Err(AdminError::Input(
                    "the directory is asked by the running server; start it first".into(),
                ));
            };
            let changes: Vec<DirectoryChange> =
                Admin::call(&socket, Method::POST, "/admins/directory-sync", None::<&()>)?;
            for c in &changes {
                println!("{}: {}", c.username, c.change);
            }
            eprintln!(
                "citadel: directory re-checked; {} account(s) changed",
                changes.len()
            );
        }
        AdminCommand::ResetPassword { username } => {
            let reset: PasswordReset = match admin {
                Admin::Socket(socket) => Admin::call(
                    &socket,
                    Method::POST,
                    &format!("/admins/{username}/password/reset"),
                    None::<&()>,
                )?,
                Admin::Local(scep) => {
                    let password = generated_password();
                    local(&scep)
                        .reset_password(&username, &password, clock.now())
                        .map_err(iam_error)?;
                    let event = AuditEvent::new(Actor::Cli, "administrator.password.reset", Outcome::Success)
                        .target(username.as_str());
                    audit_cli(&scep, event, clock)?;
                    PasswordReset { username, password }
                }
            };
            println!("{}", reset.password);
            eprintln!(
                "citadel: new password for {} (shown only now; it must be changed at the next sign-in)",
                reset.username
            );
        }
    }
    Ok(())
}

fn run_api_token(config: &Config, clock: &SharedClock, cmd: ApiTokenCommand) -> Result<(), AdminError> {
    let admin = Admin::connect(config, clock.now())?;
    match cmd {
        ApiTokenCommand::Create {
            name,
            ttl_days,
            role,
            permission,
        } => {
            let permissions = (!permission.is_empty()).then_some(permission);
            #[derive(serde::Deserialize)]
            struct Created {
                token: String,
                #[serde(flatten)]
                record: ApiTokenRecord,
            }
            let created: Created = match admin {
                Admin::Socket(socket) => Admin::call(
                    &socket,
                    Method::POST,
                    "/api-tokens",
                    Some(&serde_json::json!({
                        "name": name,
                        "ttl_days": ttl_days,
                        "role": role,
                        "permissions": permissions,
                    })),
                )?,
                Admin::Local(scep) => {
                    let ttl = ttl_days.map(|d| time::Duration::days(i64::from(d)));
                    let scope = match (role, permissions) {
                        (Some(role), _) => TokenScope::Role(role),
                        (None, names) => TokenScope::Permissions(
                            names
                                .unwrap_or_default()
                                .iter()
                                .map(|n| {
                                    Permission::parse(n)
                                        .ok_or_else(|| AdminError::Input(format!("unknown permission {n:?}")))
                                })
                                .collect::<Result<_, _>>()?,
                        ),
                    };
                    let (token, record) =
                        api_tokens::create(scep.store().as_ref(), &name, scope, None, ttl, clock.now())
                            .map_err(|e| AdminError::Input(e.to_string()))?;
                    audit_cli(&scep, token_event("api_token.create", &record), clock)?;
                    Created { token, record }
                }
            };
            println!("{}", created.token);
            eprintln!(
                "citadel: API token {} ({}) created; it is shown only now",
                created.record.id, created.record.name
            );
        }
        ApiTokenCommand::List => {
            let list: Vec<ApiTokenRecord> = match admin {
                Admin::Socket(socket) => Admin::call(&socket, Method::GET, "/api-tokens", None::<&()>)?,
                Admin::Local(scep) => api_tokens::list(scep.store().as_ref())?,
            };
            println!(
                "{:<13} {:<8} {:<21} {:<21} NAME",
                "ID", "STATUS", "CREATED", "LAST USED"
            );
            for t in list {
                let status = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= clock.now()) {
                    "expired"
                } else {
                    "active"
                };
                let last = t
                    .last_used_at
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<13} {:<8} {:<21} {:<21} {}",
                    t.id,
                    status,
                    t.created_at.date(),
                    last,
                    t.name
                );
            }
        }
        ApiTokenCommand::Revoke { id } => {
            let record: ApiTokenRecord = match admin {
                Admin::Socket(socket) => Admin::call(
                    &socket,
                    Method::POST,
                    &format!("/api-tokens/{id}/revoke"),
                    None::<&()>,
                )?,
                Admin::Local(scep) => match api_tokens::revoke(scep.store().as_ref(), &id, clock.now()) {
                    Ok(r) => {
                        audit_cli(&scep, token_event("api_token.revoke", &r), clock)?;
                        r
                    }
                    Err(api_tokens::ApiTokenError::NotFound(_)) => return Err(AdminError::NotFound),
                    Err(e) => return Err(AdminError::Socket(e.to_string())),
                },
            };
            println!("revoked API token {} ({})", record.id, record.name);
        }
    }
    Ok(())
}

fn read_input(path: &Path) -> Result<Vec<u8>, AdminError> {
    std::fs::read(path).map_err(|e| AdminError::Input(format!("{}: {e}", path.display())))
}

fn read_text(path: &Path) -> Result<String, AdminError> {
    String::from_utf8(read_input(path)?)
        .map_err(|_| AdminError::Input(format!("{} is not text", path.display())))
}

fn run_push_cert(config: &Config, clock: &SharedClock, cmd: PushCertCommand) -> Result<(), AdminError> {
    match cmd {
        PushCertCommand::Csr {
            org,
            email,
            out,
            vendor_cert,
            vendor_key,
            vendor_chain,
        } => {
            let data = DataDir::prepare(&config.data_dir).map_err(StartupError::from)?;
            let org = org.unwrap_or_else(|| config.mdm.organization.clone());
            let (csr_pem, csr_der) =
                pki::push::create_request(&data, &org, email.as_deref()).map_err(StartupError::from)?;
            let text = match (vendor_cert, vendor_key, vendor_chain) {
                (Some(cert), Some(key), Some(chain)) => {
                    let key = citadel_certs::SecretPem::new(read_text(&key)?);
                    let signature = citadel_certs::push::vendor_signature(&csr_der, &key)
                        .map_err(|e| AdminError::Input(e.to_string()))?;
                    let mut chain_pem = read_text(&cert)?;
                    chain_pem.push_str(&read_text(&chain)?);
                    citadel::push::encoded_request(&csr_der, &signature, &chain_pem)
                        .map_err(|e| AdminError::Input(e.to_string()))?
                }
                _ => csr_pem,
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, &text)
                        .map_err(|e| AdminError::Input(format!("{}: {e}", path.display())))?;
                    eprintln!("citadel: wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            eprintln!(
                "citadel: the key waits in {}/push-request.key; upload the request to Apple's push \
                 certificates portal, then `citadel push-cert import --cert <downloaded .pem>`",
                data.pki_dir().display()
            );
        }
        PushCertCommand::Import {
            cert,
            key,
            p12,
            password_file,
        } => {
            let upload = match (cert, p12) {
                (Some(cert), None) => {
                    let mut pem = read_text(&cert)?;
                    // Apple's portal hands out DER (.cer): accept that too.
                    if !pem.contains("-----BEGIN") {
                        let der = read_input(&cert)?;
                        pem = format!(
                            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                            data_encoding::BASE64.encode(&der)
                        );
                    }
                    PushCertUpload {
                        cert_pem: Some(pem),
                        key_pem: key.map(|k| read_text(&k)).transpose()?,
                        ..PushCertUpload::default()
                    }
                }
                (None, Some(p12)) => {
                    let password = password_file
                        .map(|p| read_text(&p))
                        .transpose()?
                        .unwrap_or_default()
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    PushCertUpload {
                        p12_base64: Some(data_encoding::BASE64.encode(&read_input(&p12)?)),
                        password: Some(password),
                        ..PushCertUpload::default()
                    }
                }
                _ => {
                    return Err(AdminError::Input(
                        "give --cert FILE [--key FILE] or --p12 FILE --password-file FILE".into(),
                    ));
                }
            };
            let status: serde_json::Value = match Admin::connect(config, clock.now())? {
                Admin::Socket(socket) => Admin::call(&socket, Method::PUT, "/push-cert", Some(&upload))?,
                Admin::Local(scep) => {
                    let push = local_push_service(config, &scep, clock)?;
                    let source =
                        ImportSource::try_from(upload).map_err(|e| AdminError::Input(e.to_string()))?;
                    if let Err(e) = push.import(source) {
                        let event = AuditEvent::new(Actor::Cli, "push_certificate.import", Outcome::Denied)
                            .reason(e.to_string());
                        audit_cli(&scep, event, clock)?;
                        return Err(AdminError::Input(e.to_string()));
                    }
                    let status = push.status(clock.now());
                    let event = AuditEvent::new(Actor::Cli, "push_certificate.import", Outcome::Success)
                        .target(status.topic.clone())
                        .reason(format!(
                            "expires {}",
                            status.not_after.map(|t| t.to_string()).unwrap_or_default()
                        ));
                    audit_cli(&scep, event, clock)?;
                    serde_json::to_value(status).map_err(|e| AdminError::Input(e.to_string()))?
                }
            };
            println!(
                "push certificate imported: topic {}, expires {}",
                status["topic"].as_str().unwrap_or("?"),
                status["not_after"].as_str().unwrap_or("?")
            );
        }
        PushCertCommand::Show { json } => {
            let status: serde_json::Value = match Admin::connect(config, clock.now())? {
                Admin::Socket(socket) => Admin::call(&socket, Method::GET, "/push-cert", None::<&()>)?,
                Admin::Local(scep) => {
                    let push = local_push_service(config, &scep, clock)?;
                    serde_json::to_value(push.status(clock.now()))
                        .map_err(|e| AdminError::Input(e.to_string()))?
                }
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).map_err(|e| AdminError::Input(e.to_string()))?
                );
            } else {
                for key in ["topic", "topic_source", "subject", "not_after", "days_left"] {
                    if let Some(v) = status.get(key).filter(|v| !v.is_null()) {
                        println!(
                            "{key:<13} {}",
                            v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
                        );
                    }
                }
                for w in status["warnings"].as_array().into_iter().flatten() {
                    println!("warning       {}", w.as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}

/// The push service over the data directory, for when the server is not running.
fn local_push_service(
    config: &Config,
    scep: &citadel::scep::ScepService,
    clock: &SharedClock,
) -> Result<citadel::push::PushService, AdminError> {
    let data = DataDir::open(&config.data_dir).map_err(StartupError::from)?;
    citadel::push::PushService::new(config, data, scep.store().clone(), clock.clone())
        .map_err(|e| AdminError::Input(e.to_string()))
}

fn run_ca_list(config: &Config, clock: &SharedClock, json: bool) -> Result<(), AdminError> {
    let list: Vec<CertificateRecord> = match Admin::connect(config, clock.now())? {
        Admin::Socket(socket) => Admin::call(&socket, Method::GET, "/ca/certificates", None::<&()>)?,
        Admin::Local(scep) => scep.certificates()?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| AdminError::Socket(e.to_string()))?
        );
        return Ok(());
    }
    println!("{:<34} {:<11} {:<12} SUBJECT", "SERIAL", "STATUS", "EXPIRES");
    for r in list {
        let status = match r.status {
            CertificateStatus::Active => "active",
            CertificateStatus::Superseded { .. } => "superseded",
            CertificateStatus::Revoked { .. } => "revoked",
        };
        println!(
            "{:<34} {:<11} {:<12} {}",
            r.serial,
            status,
            r.not_after.date(),
            r.subject
        );
    }
    Ok(())
}

fn run_ca_revoke(config: &Config, clock: &SharedClock, serial: &str) -> Result<(), AdminError> {
    let serial = citadel::scep::registry::normalise_serial(serial);
    let record: CertificateRecord = match Admin::connect(config, clock.now())? {
        Admin::Socket(socket) => Admin::call(
            &socket,
            Method::POST,
            &format!("/ca/certificates/{serial}/revoke"),
            None::<&()>,
        )?,
        Admin::Local(scep) => match scep.revoke(&serial, clock.now())? {
            RevokeOutcome::Revoked(r) => {
                let event = AuditEvent::new(Actor::Cli, "certificate.revoke", Outcome::Success)
                    .target(r.serial.as_str())
                    .reason(r.subject.clone());
                audit_cli(&scep, event, clock)?;
                r
            }
            RevokeOutcome::AlreadyRevoked(r) => r,
            RevokeOutcome::Unknown => return Err(AdminError::NotFound),
        },
    };
    println!("revoked {} ({})", record.serial, record.subject);
    Ok(())
}

fn run_ca_export(config: &Config, chain: bool) -> ExitCode {
    let pem = DataDir::open(&config.data_dir)
        .map_err(StartupError::from)
        .and_then(|dd| pki::read_ca_certificate(&dd, chain).map_err(StartupError::from));
    match pem {
        Ok(pem) => {
            print!("{pem}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn run_config_check(config: &Config) -> ExitCode {
    match appliance::check(config) {
        Ok(()) => {
            print!("{}", config.to_redacted_toml());
            eprintln!("citadel: configuration OK");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// The URL a local health check uses when none is given: loopback on the listening port.
fn default_health_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("https://{host}:{}/healthz", listen.port())
}

fn run_healthcheck(config: &Config, args: &HealthcheckArgs) -> ExitCode {
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| default_health_url(config.server.listen));
    let ca_path = args
        .ca
        .clone()
        .unwrap_or_else(|| config.data_dir.join("pki").join("ca.crt"));
    let ca_pem = match std::fs::read_to_string(&ca_path) {
        Ok(pem) => pem,
        Err(e) => {
            eprintln!(
                "citadel: cannot read CA certificate {}: {e} (pass --ca FILE)",
                ca_path.display()
            );
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("citadel: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(healthcheck::check(
        &url,
        &ca_pem,
        Duration::from_secs(args.timeout),
    )) {
        Ok(doc) => {
            println!("{doc}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("citadel: unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}
