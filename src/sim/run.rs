//! `citadel simulate`: the command line around [`Fleet`] — phases, progress bar and report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_certs::SecretPem;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::fleet::{
    AuthMode, EnrolPhase, Fleet, FleetOptions, Mix, Percentiles, ProfileSource, SessionPhase, SimError,
};
use crate::clock::SharedClock;

/// Enrols a fleet of virtual Apple devices on an appliance (local or remote) and drives it,
/// then reports throughput and latency.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// The appliance's base URL, e.g. https://mdm.example.org:8443.
    #[arg(long, env = "CITADEL_URL")]
    pub server: String,
    /// The appliance's root CA (PEM; `citadel ca export`).
    #[arg(long, env = "CITADEL_CA", value_name = "FILE")]
    pub ca: PathBuf,
    /// An admin API token (`citadel api-token create`).
    #[arg(long, env = "CITADEL_API_TOKEN", hide_env_values = true)]
    pub api_token: String,
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Devices enrolling, or sessions in flight, at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// How long to drive the fleet after enrolment: 90, 90s, 5m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Platform weights.
    #[arg(long, default_value = "iphone=60,ipad=20,mac=20")]
    pub mix: Mix,
    /// Probability that a device answers NotNow to a command (it comes back 2 s later).
    #[arg(long, default_value_t = 0.0)]
    pub notnow_rate: f64,
    /// Seed for the devices' identities and behaviour.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run an APNs-compatible endpoint here; the appliance's `apns.base_url` points at it and
    /// each push wakes the device it names. Without it (and without --poll-interval), the
    /// devices run sessions back to back: a closed-loop load test.
    #[arg(long, value_name = "ADDR")]
    pub push_listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM) for --push-listen. Default: a throwaway CA and certificate.
    #[arg(long, value_name = "FILE", requires_all = ["push_key", "push_listen"])]
    pub push_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "push_cert")]
    pub push_key: Option<PathBuf>,
    /// Where to write the throwaway push CA (for the appliance's `apns.ca_file`).
    #[arg(long, value_name = "FILE", requires = "push_listen")]
    pub push_ca_out: Option<PathBuf>,
    /// Devices also poll this often (spread evenly): 30s, 5m.
    #[arg(long, value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// `signature` (Mdm-Signature header) or `mtls` (TLS client certificate).
    #[arg(long, default_value = "signature")]
    pub auth: AuthMode,
    /// `api` (admin token) or `link` (a one-time enrollment link per device).
    #[arg(long, default_value = "api")]
    pub profile_source: ProfileSource,
    /// Sign each device's Idle once and replay it (measures the server, not the simulator).
    #[arg(long)]
    pub replay: bool,
    /// Reuse this many RSA keys across devices (0: a new key per device, as real devices).
    #[arg(long, default_value_t = 0)]
    pub key_pool: usize,
    /// After enrolment, send this command to every device and wait until all have answered
    /// (or --duration passes): a RequestType (`DeviceInformation`) or the API's JSON form.
    #[arg(long)]
    pub command: Option<String>,
    /// Send the same traffic to this trivial endpoint of the same stack (`citadel
    /// simulate-ceiling`) and report the run as a share of it: a closed loop alternates
    /// with it every 3 s (each side gets --duration), other runs are followed by it.
    #[arg(long)]
    pub ceiling_url: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write each device's final state (profiles, lock, lost mode, erased) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub state_out: Option<PathBuf>,
}

/// `90`, `90s`, `1500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// One command fanned out to the fleet.
#[derive(Debug, Clone, Serialize)]
pub struct FanOut {
    pub command_uuid: String,
    pub targets: usize,
    pub answered: usize,
    /// Enqueue → every target answered (or the end of --duration).
    pub seconds: f64,
    /// How long the admin API took to accept the command (validate targets, queue for each).
    pub enqueue_seconds: f64,
    /// With `--replay`: answers signed before the command was queued (not timed), and how
    /// many of them were sent (the rest of the answers were signed when the command came).
    pub presigned: usize,
    pub presigned_sent: u64,
    pub presign_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub url: String,
    pub roundtrips_per_sec: f64,
    pub latency: Percentiles,
    /// This run's round trips per second as a share of the ceiling's.
    pub ratio: f64,
}

/// What `citadel simulate` reports (and prints with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub devices: usize,
    pub enrolled: usize,
    pub enrolment: EnrolPhase,
    /// `closed-loop`, `push`, `poll` or `push+poll`.
    pub mode: &'static str,
    pub roundtrips: u64,
    pub roundtrips_per_sec: f64,
    /// Every HTTP request of the session phase.
    pub latency: Percentiles,
    /// Enqueue → acknowledgement of the commands the simulator sent.
    pub command_latency: Percentiles,
    pub command: Option<FanOut>,
    pub ceiling: Option<Ceiling>,
    pub sessions: u64,
    pub pushes_received: u64,
    pub answers: BTreeMap<String, u64>,
    pub erased: usize,
    pub errors: BTreeMap<String, u64>,
    pub error_count: u64,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let p = |l: &Percentiles| {
            format!(
                "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
            )
        };
        out.push_str(&format!(
            "enrolled     {} of {} in {:.1} s ({:.0}/s)\n",
            self.enrolled, self.devices, self.enrolment.seconds, self.enrolment.per_second
        ));
        out.push_str(&format!(
            "round trips  {} ({:.0}/s, {}); {}\n",
            self.roundtrips,
            self.roundtrips_per_sec,
            self.mode,
            p(&self.latency)
        ));
        if let Some(c) = &self.ceiling {
            out.push_str(&format!(
                "ceiling      {:.0}/s at {} → this run is {:.0} % of it; {}\n",
                c.roundtrips_per_sec,
                c.url,
                c.ratio * 100.0,
                p(&c.latency)
            ));
        }
        if let Some(f) = &self.command {
            out.push_str(&format!(
                "command      {}: {} of {} answered in {:.2} s (queued by the API in {:.2} s)\n",
                f.command_uuid, f.answered, f.targets, f.seconds, f.enqueue_seconds
            ));
            if f.presigned > 0 {
                out.push_str(&format!(
                    "             {} answers signed in advance in {:.1} s (not timed), {} of them sent\n",
                    f.presigned, f.presign_seconds, f.presigned_sent
                ));
            }
        }
        if self.command_latency.count > 0 {
            out.push_str(&format!("enqueue→ack  {}\n", p(&self.command_latency)));
        }
        let answers: Vec<String> = self.answers.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!(
            "sessions     {}; pushes received {}; answers: {}; erased {}\n",
            self.sessions,
            self.pushes_received,
            if answers.is_empty() {
                "none".into()
            } else {
                answers.join(", ")
            },
            self.erased
        ));
        if self.errors.is_empty() {
            out.push_str("errors       none\n");
        } else {
            out.push_str(&format!("errors       {}\n", self.error_count));
            for (kind, n) in &self.errors {
                out.push_str(&format!("  {n:>8}  {kind}\n"));
            }
        }
        out
    }
}

fn command_json(spec: &str) -> Result<serde_json::Value, SimError> {
    let spec = spec.trim();
    if spec.starts_with('{') {
        serde_json::from_str(spec).map_err(|e| SimError::Options(format!("--command is not JSON: {e}")))
    } else if !spec.is_empty() && spec.chars().all(|c| c.is_ascii_alphanumeric()) {
        let mut command = serde_json::json!({ "RequestType": spec });
        if spec == "DeviceInformation" {
            command["Queries"] =
                serde_json::json!(["DeviceName", "OSVersion", "SerialNumber", "BatteryLevel"]);
        }
        Ok(command)
    } else {
        Err(SimError::Options(
            "--command is a RequestType or a JSON object".into(),
        ))
    }
}

fn read(path: &PathBuf, what: &str) -> Result<String, SimError> {
    std::fs::read_to_string(path)
        .map_err(|e| SimError::Options(format!("cannot read {what} {}: {e}", path.display())))
}

fn progress(hidden: bool, len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{msg:12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})")
    {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

/// Runs the whole simulation and returns its report.
pub async fn run(args: &SimulateArgs, clock: SharedClock) -> Result<(Report, Arc<Fleet>), SimError> {
    let mut options = FleetOptions::new(&args.server, read(&args.ca, "the CA file")?, &args.api_token);
    options.devices = args.devices;
    options.concurrency = args.concurrency;
    options.mix = args.mix;
    options.not_now_rate = args.notnow_rate;
    options.seed = args.seed;
    options.auth = args.auth;
    options.profile_source = args.profile_source;
    options.replay = args.replay;
    options.key_pool = args.key_pool;
    let command = args.command.as_deref().map(command_json).transpose()?;
    let fleet = Fleet::new(options, clock)?;
    let hidden = args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());

    if let Some(listen) = args.push_listen {
        let tls = match (&args.push_cert, &args.push_key) {
            (Some(cert), Some(key)) => Some((
                read(cert, "--push-cert")?,
                SecretPem::new(read(key, "--push-key")?),
            )),
            _ => None,
        };
        let (addr, ca) = fleet.listen_for_pushes(listen, tls).await?;
        tracing::info!(%addr, "listening for pushes (set the appliance's apns.base_url to https://<this host>:{})", addr.port());
        if let (Some(out), Some(ca)) = (&args.push_ca_out, ca) {
            std::fs::write(out, ca)
                .map_err(|e| SimError::Options(format!("cannot write {}: {e}", out.display())))?;
        }
    }

    let bar = progress(hidden, args.devices as u64, "enrolling");
    let enrolment = fleet.enrol_all(|_| bar.inc(1)).await;
    bar.finish_and_clear();
    // Before the marker below, which scripts take as the start of the measured phase.
    let presign_started = Instant::now();
    let presigned = match (&command, args.replay) {
        (Some(command), true) => Some(fleet.presign_answers(command).await?),
        _ => None,
    };
    let presign_seconds = presign_started.elapsed().as_secs_f64();
    fleet.start_session_phase();
    // A marker for scripts and people watching (the report comes at the end).
    eprintln!(
        "citadel simulate: {} of {} devices enrolled in {:.1} s; driving them",
        enrolment.enrolled, args.devices, enrolment.seconds
    );

    let mode = match (args.push_listen.is_some(), args.poll_interval.is_some()) {
        (true, true) => "push+poll",
        (true, false) => "push",
        (false, true) => "poll",
        (false, false) => "closed-loop",
    };
    let spinner = progress(hidden, 0, "running");
    spinner.enable_steady_tick(Duration::from_millis(200));
    // A closed loop with nothing else to time alternates with its ceiling in slices.
    let beside_ceiling = match (&args.ceiling_url, mode, &command) {
        (Some(url), "closed-loop", None) => Some(ceiling_connect_url(url)),
        _ => None,
    };
    let driver = {
        let fleet = Arc::clone(&fleet);
        let (duration, poll) = (args.duration, args.poll_interval);
        tokio::spawn(async move {
            match (mode, poll) {
                ("closed-loop", _) => Some(match &beside_ceiling {
                    Some(url) => {
                        let (phase, ceiling) = fleet.hammer_beside_ceiling(duration, url).await;
                        (phase, Some(ceiling))
                    }
                    None => (fleet.hammer(duration, None).await, None),
                }),
                (_, Some(interval)) => {
                    fleet.poll_for(interval, duration).await;
                    None
                }
                _ => {
                    fleet.wait_or_stop(duration).await;
                    None
                }
            }
        })
    };
    let started = Instant::now();
    let mut fan_out = None;
    if let Some(command) = command {
        let uuid = fleet
            .enqueue(command, None, presigned.as_ref().map(|(uuid, _)| uuid.as_str()))
            .await?;
        let enqueue_seconds = started.elapsed().as_secs_f64();
        let targets = fleet.enrollment_ids().len();
        let answered = fleet.wait_answered(&uuid, args.duration).await;
        fan_out = Some(FanOut {
            command_uuid: uuid,
            targets,
            answered,
            seconds: started.elapsed().as_secs_f64(),
            enqueue_seconds,
            presigned: presigned.as_ref().map_or(0, |(_, n)| *n),
            presigned_sent: fleet.counters().presigned_sent,
            presign_seconds,
        });
        fleet.stop();
    }
    let phases = driver.await.ok().flatten();
    spinner.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let counters = fleet.counters();
    let (phase, ceiling_phase) = match phases {
        Some(phases) => phases,
        None => {
            let phase = SessionPhase {
                roundtrips: fleet.roundtrips(),
                seconds: elapsed,
                per_second: fleet.roundtrips() as f64 / elapsed.max(1e-9),
                latency: counters.request_latency,
            };
            (phase, None)
        }
    };
    let ceiling = match &args.ceiling_url {
        Some(url) => {
            let url = ceiling_connect_url(url);
            // Taken in slices beside a closed loop; otherwise (a fan-out, polling, pushes) now.
            let c = match ceiling_phase {
                Some(c) => c,
                None => fleet.hammer(args.duration, Some(&url)).await,
            };
            Some(Ceiling {
                ratio: phase.per_second / c.per_second.max(1e-9),
                url,
                roundtrips_per_sec: c.per_second,
                latency: c.latency,
            })
        }
        None => None,
    };
    // The ceiling run's errors count too: a ceiling that failed is not a ceiling.
    let counters = fleet.counters();
    let report = Report {
        devices: args.devices,
        enrolled: enrolment.enrolled,
        enrolment,
        mode,
        roundtrips: phase.roundtrips,
        roundtrips_per_sec: phase.per_second,
        latency: phase.latency,
        command_latency: counters.command_latency,
        command: fan_out,
        ceiling,
        sessions: counters.sessions,
        pushes_received: counters.pushes_received,
        answers: counters.answers,
        erased: counters.erased,
        error_count: counters.errors.values().sum(),
        errors: counters.errors,
    };
    if let Some(path) = &args.state_out {
        let states = serde_json::to_vec_pretty(&fleet.device_states()).unwrap_or_default();
        std::fs::write(path, states)
            .map_err(|e| SimError::Options(format!("cannot write {}: {e}", path.display())))?;
    }
    fleet.shutdown().await;
    Ok((report, fleet))
}

fn ceiling_connect_url(base: &str) -> String {
    format!("{}/mdm/connect", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        for bad in ["", "s", "5 parsecs", "-1s", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_are_given_by_name_or_json() {
        assert_eq!(command_json("DeviceLock").unwrap()["RequestType"], "DeviceLock");
        assert!(command_json("DeviceInformation").unwrap()["Queries"].is_array());
        let json = command_json(r#"{"RequestType": "ProfileList"}"#).unwrap();
        assert_eq!(json["RequestType"], "ProfileList");
        assert!(command_json("{nope").is_err());
        assert!(command_json("Device Lock; rm").is_err());
    }
}
