//! The `coexistd` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use coexistd::agent::{self, AgentError, ConfigSource};
use coexistd::config::{self, Config};
use coexistd::output::views::StatusView;
use coexistd::run::results::Slot;
use coexistd::run::scheduler::{LiveProber, Prober};

/// Exit code: a check failed.
const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code: bad configuration or usage.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "coexistd",
    version,
    disable_version_flag = true,
    about = "Probes old and new SIP pools side by side during a migration and exports the results as Prometheus metrics."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log format on standard error (no colour codes either way).
    #[arg(long = "log.format", global = true, value_enum, default_value_t = coexistd::logging::LogFormat::Logfmt)]
    log_format: coexistd::logging::LogFormat,
    /// Least severe level logged (RUST_LOG, when set, overrides it with per-module
    /// filters).
    #[arg(long = "log.level", global = true, value_enum, default_value_t = coexistd::logging::LogLevel::Info)]
    log_level: coexistd::logging::LogLevel,
    /// Print the version, revision and compiler, as Prometheus' tools do, and exit.
    #[arg(long, short = 'V')]
    version: bool,
}

/// `--version` in the Prometheus style.
fn version_text() -> String {
    format!(
        "coexistd, version {} (branch: {}, revision: {})\n  rust version:     {}\n  platform:         {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        env!("COEXISTD_BRANCH"),
        env!("COEXISTD_REVISION"),
        env!("COEXISTD_RUSTVERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: probe on schedule, serve /metrics and the status page.
    Run {
        /// Configuration file.
        #[arg(long, visible_alias = "config.file", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        #[command(flatten)]
        web: WebFlags,
    },
    /// Run every check once, print the results, exit 0 if all passed, 1 if not.
    Check {
        /// Configuration file.
        #[arg(long, visible_alias = "config.file", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Only the checks of this pool (repeatable).
        #[arg(long = "pool", value_name = "NAME")]
        pools: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Run only this check (with --pool: of those pools) and print each probe step
        /// by step: DNS questions and answers, connects, the TLS handshake and chain, SIP
        /// and HTTP messages as sent and received (credentials masked), with timings.
        #[arg(long, value_name = "CHECK")]
        trace: Option<String>,
    },
    /// Parse and validate the configuration, print a summary.
    Validate {
        /// Configuration file.
        #[arg(long, visible_alias = "config.file", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Also check this exporter-toolkit web configuration file.
        #[arg(long = "web.config.file", value_name = "PATH")]
        web_config: Option<PathBuf>,
    },
    /// Read a period of coexistence from Prometheus and write the go/no-go report; exit
    /// 0 for GO, 1 for NO-GO, 2 for an error.
    Report {
        /// Prometheus' URL (http:// or https://, with its path prefix if any).
        #[arg(long, value_name = "URL")]
        prometheus: String,
        /// Start of the period: RFC 3339 (2026-11-01T00:00:00Z) or unix seconds.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// End of the period: RFC 3339, unix seconds, or now.
        #[arg(long, value_name = "TIME", default_value = "now")]
        to: String,
        /// Resolution: each step is up, down or without data.
        #[arg(long, value_name = "DURATION", default_value = "1m")]
        step: humantime::Duration,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
        format: ReportFormat,
        /// Write the report here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The configuration whose [report] criteria apply (only [report] and the
        /// pools' names are read: its secrets need not be here).
        #[arg(long, visible_alias = "config.file", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Prometheus' HTTP client configuration: basic_auth, authorization, tls_config
        /// (the format of Prometheus' own tools).
        #[arg(long = "http.config.file", value_name = "PATH")]
        http_config: Option<PathBuf>,
    },
    /// Write the man page or a shell's completion script to standard output (what the
    /// Debian package installs).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: Generated,
    },
    /// Start a lab of local pools and DNS on loopback and run the agent against it.
    #[cfg(feature = "lab")]
    Demo {
        /// Print the generated configuration and exit.
        #[arg(long)]
        print_config: bool,
        /// Play a compressed migration day on a loop: one fault at a time (a Front End
        /// stops answering, the sign-in record rolled back, a certificate near expiry, a
        /// user moved, a route broken one way, a certificate falling back to SHA-1), each
        /// for a minute, then a minute repaired; announced here and in /api/v1/events.
        #[arg(long)]
        faults: bool,
        /// How long each fault, and each repaired pause, lasts (checks then run every
        /// sixth of it, 10 s at most).
        #[arg(long = "faults.hold", value_name = "DURATION", default_value = "60s", hide = true)]
        faults_hold: humantime::Duration,
        #[command(flatten)]
        web: WebFlags,
    },
}

/// How the HTTP endpoints are exposed (the flags Prometheus exporters use).
#[derive(clap::Args, Clone)]
struct WebFlags {
    /// Address of the HTTP endpoints (run: overrides agent.listen; demo: default
    /// 127.0.0.1:9797).
    #[arg(long = "web.listen-address", visible_alias = "listen", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Path under which the metrics are served.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics")]
    telemetry_path: String,
    /// exporter-toolkit web configuration: TLS, client certificates, basic auth.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config: Option<PathBuf>,
    /// Serve POST /-/reload (off by default; SIGHUP always reloads).
    #[arg(long = "web.enable-lifecycle")]
    lifecycle: bool,
}

impl WebFlags {
    /// Loads the web configuration; an error is a usage error (exit 2).
    fn options(&self) -> Result<coexistd::http::routes::WebOptions, ExitCode> {
        let config = match &self.web_config {
            None => None,
            Some(p) => Some(coexistd::http::web::WebConfig::load(p).map_err(|e| {
                eprintln!("coexistd: --web.config.file: {e}");
                ExitCode::from(EXIT_CONFIG)
            })?),
        };
        let taken =
            ["/", "/api/v1/status", "/api/v1/events", "/api/v1/trace", "/-/healthy", "/-/ready", "/-/reload"];
        let path = self.telemetry_path.as_str();
        // Letters, digits and -_.~ between slashes: nothing the router reads as a
        // parameter, a wildcard, a query or an escape.
        let odd = |c: char| !(c.is_ascii_alphanumeric() || "/-_.~".contains(c));
        if !path.starts_with('/') || path.len() < 2 || taken.contains(&path) || path.contains(odd) {
            eprintln!("coexistd: --web.telemetry-path {path:?}: a path such as /metrics, not one of the agent's other endpoints");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
        Ok(coexistd::http::routes::WebOptions {
            lifecycle: self.lifecycle,
            config,
            listen: self.listen,
            telemetry_path: self.telemetry_path.clone(),
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Generated {
    /// coexistd(1) in roff.
    Man,
    /// bash completion.
    Bash,
    /// zsh completion.
    Zsh,
}

/// `coexistd generate`.
fn generate(what: Generated) -> ExitCode {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    // Into memory first: the generators panic on a failed write (a closed pipe).
    let mut buf: Vec<u8> = Vec::new();
    let rendered = match what {
        Generated::Man => clap_mangen::Man::new(cmd).render(&mut buf),
        Generated::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "coexistd", &mut buf);
            Ok(())
        }
        Generated::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "coexistd", &mut buf);
            Ok(())
        }
    };
    let written = rendered.and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &buf));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coexistd generate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Html,
    Json,
    Markdown,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.version {
        print!("{}", version_text());
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        use clap::CommandFactory as _;
        let _ = Cli::command().print_help();
        return ExitCode::from(EXIT_CONFIG);
    };
    if let Command::Generate { what } = command {
        return generate(what);
    }
    coexistd::logging::init(cli.log_format, cli.log_level);
    // Probing is I/O-bound: one I/O thread runs well over 1,000 probes a second, and
    // cross-thread wake-ups cost more than they give (measured: docs/performance.md).
    // COEXISTD_WORKER_THREADS overrides.
    let workers = std::env::var("COEXISTD_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let daemon = match command {
        Command::Run { .. } => true,
        #[cfg(feature = "lab")]
        Command::Demo { .. } => true,
        _ => false,
    };
    // The daemon probes on a runtime of its own; this one serves HTTP and encodes
    // scrapes. Its threads run at a lower priority (nice +10), so a burst of scrapes
    // cannot take the CPU a probe needs to start on time or to time its reply.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(if daemon { 1 } else { workers }).enable_all();
    if daemon {
        builder.thread_name("coexistd-http").on_thread_start(coexistd::os::lower_thread_priority);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coexistd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let probes = if daemon {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("coexistd-probe")
            .enable_all()
            .build()
        {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("coexistd: cannot start the probe runtime: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let probe_handle = probes.as_ref().map_or_else(|| runtime.handle().clone(), |r| r.handle().clone());
    let code = runtime.block_on(async {
        match command {
            Command::Run { config, web } => match web.options() {
                Ok(web) => run(ConfigSource::File(config), probe_handle, web, None).await,
                Err(code) => code,
            },
            Command::Check { config, pools, format, trace } => check(&config, &pools, format, trace).await,
            Command::Validate { config, web_config } => validate(&config, web_config.as_deref()),
            Command::Report { prometheus, from, to, step, format, out, config, http_config } => {
                let args =
                    ReportArgs { prometheus, from, to, step: step.into(), format, out, config, http_config };
                report(args).await
            }
            Command::Generate { what } => generate(what),
            #[cfg(feature = "lab")]
            Command::Demo { print_config, faults, faults_hold, web } => match web.options() {
                Ok(_) if std::time::Duration::from(faults_hold) < std::time::Duration::from_secs(2) => {
                    eprintln!("coexistd: --faults.hold must be 2s or more");
                    ExitCode::from(EXIT_CONFIG)
                }
                Ok(web) => demo(print_config, faults.then(|| faults_hold.into()), probe_handle, web).await,
                Err(code) => code,
            },
        }
    });
    if let Some(p) = probes {
        p.shutdown_timeout(std::time::Duration::from_millis(200));
    }
    // Probes still in flight (e.g. a blackholed connect) must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

fn report_error(e: &anyhow::Error) {
    eprintln!("coexistd: {e:#}");
}

async fn run(
    source: ConfigSource,
    probes: tokio::runtime::Handle,
    web: coexistd::http::routes::WebOptions,
    announcements: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> ExitCode {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = wait_for_stop_signal().await {
            tracing::error!(error = %e, "cannot install signal handlers");
        }
        token.cancel();
    });
    match agent::run(source, shutdown, probes, web, announcements).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(AgentError::Config(e)) => {
            eprintln!("coexistd: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            report_error(&anyhow::Error::new(e));
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("coexistd: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn validate(path: &std::path::Path, web_config: Option<&std::path::Path>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(w) = web_config {
        match coexistd::http::web::WebConfig::load(w) {
            Ok(c) => println!(
                "{}: OK: TLS {}, {} basic-auth users, {} response headers",
                w.display(),
                if c.tls.is_some() { "on" } else { "off" },
                c.users.len(),
                c.headers.len()
            ),
            Err(e) => {
                eprintln!("coexistd: --web.config.file: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Err(e) = coexistd::net::tls::TlsClient::new(&config.tls) {
        eprintln!("coexistd: {}: {e}", config.origin);
        return ExitCode::from(EXIT_CONFIG);
    }
    let checks: std::collections::BTreeSet<&str> =
        config.instances.iter().map(|i| i.check.as_str()).collect();
    println!(
        "{}: OK: {} pools, {} checks, {} check instances, listen {}",
        config.origin,
        config.pools.len(),
        checks.len(),
        config.instances.len(),
        config.agent.listen
    );
    for p in &config.pools {
        let n = config.instances.iter().filter(|i| i.pool_name() == p.name).count();
        println!("  pool {} ({}, {}): {} instances", p.name, p.role.as_str(), p.fqdn, n);
    }
    let poolless = config.instances.iter().filter(|i| i.pool.is_none()).count();
    if poolless > 0 {
        println!("  without pool: {poolless} instances");
    }
    ExitCode::SUCCESS
}

async fn check(path: &std::path::Path, pools: &[String], format: Format, trace: Option<String>) -> ExitCode {
    let mut config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for p in pools {
        if config.pool(p).is_none() {
            eprintln!("coexistd: --pool {p:?}: no such pool in {}", config.origin);
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if !pools.is_empty() {
        config.instances.retain(|i| pools.iter().any(|p| p == i.pool_name()));
    }
    let cx = match agent::probe_context(&config) {
        Ok(cx) => cx,
        Err(e) => {
            eprintln!("coexistd: {e}");
            let config_error = matches!(e, AgentError::Config(_));
            return if config_error { ExitCode::from(EXIT_CONFIG) } else { ExitCode::FAILURE };
        }
    };
    // Test users that sip_im checks name register first (and unregister at the end).
    let endpoints = cx.endpoints.clone();
    endpoints.sync(agent::endpoint_specs(&config), &cx, &tokio::runtime::Handle::current());
    let longest = config.instances.iter().map(|i| i.timeout).max().unwrap_or_default();
    endpoints.settled(tokio::time::Instant::now() + longest.max(std::time::Duration::from_secs(5))).await;
    let code = check_registered(&config, cx, pools, format, trace).await;
    endpoints.stop_all(std::time::Duration::from_secs(1)).await;
    code
}

async fn check_registered(
    config: &coexistd::config::Config,
    cx: coexistd::kinds::ProbeContext,
    pools: &[String],
    format: Format,
    trace: Option<String>,
) -> ExitCode {
    let endpoints = cx.endpoints.clone();
    let prober: Arc<dyn Prober> = Arc::new(LiveProber(Arc::new(cx)));
    if let Some(name) = trace {
        return trace_check(config, &prober, &name, pools, format).await;
    }
    let slots: Vec<Arc<Slot>> =
        config.instances.iter().map(|i| Arc::new(Slot::new(config, i.clone()))).collect();
    coexistd::run::scheduler::run_each_once(&slots, prober, config.agent.concurrency).await;
    let units = coexistd::run::results::units(&slots);
    let mut view = StatusView::build(config, &slots, &units);
    view.users = endpoints.statuses();
    if !pools.is_empty() {
        view.pools.retain(|p| pools.contains(&p.name));
    }
    match format {
        Format::Table => print!("{}", view.table()),
        Format::Json => match serde_json::to_string_pretty(&view) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("coexistd: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    if view.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    }
}

/// `check --trace`: each instance of one check, one after the other, step by step.
async fn trace_check(
    config: &Config,
    prober: &Arc<dyn Prober>,
    name: &str,
    pools: &[String],
    format: Format,
) -> ExitCode {
    let instances: Vec<_> = config.instances.iter().filter(|i| i.check == name).cloned().collect();
    if instances.is_empty() {
        let known: std::collections::BTreeSet<&str> =
            config.instances.iter().map(|i| i.check.as_str()).collect();
        eprintln!(
            "coexistd: --trace {name:?}: no such check{} in {} (checks: {})",
            if pools.is_empty() { String::new() } else { format!(" for pool {}", pools.join(", ")) },
            config.origin,
            known.into_iter().collect::<Vec<_>>().join(", ")
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut traces = Vec::new();
    for i in &instances {
        let t = coexistd::run::trace_run::trace_round(prober, i).await;
        if let Format::Table = format {
            println!("{}", t.text());
        }
        traces.push(t);
    }
    if let Format::Json = format {
        match serde_json::to_string_pretty(&traces) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("coexistd: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if traces.iter().all(|t| t.results.iter().all(|r| r.success)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    }
}

#[cfg(feature = "lab")]
async fn demo(
    print_config: bool,
    faults: Option<std::time::Duration>,
    probes: tokio::runtime::Handle,
    web: coexistd::http::routes::WebOptions,
) -> ExitCode {
    let started = match faults {
        Some(_) => coexistd::lab::Lab::start_for_faults().await,
        None => coexistd::lab::Lab::start().await,
    };
    let lab = match started {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("coexistd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // invariant: a literal address.
    let listen = web.listen.unwrap_or_else(|| "127.0.0.1:9797".parse().expect("literal"));
    let interval = faults.map_or(std::time::Duration::from_secs(10), |hold| {
        (hold / 6).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(10))
    });
    let text = lab.config_text_with(listen, interval, faults.is_some());
    if print_config {
        print!("{text}");
        return ExitCode::SUCCESS;
    }
    let scheme = if web.config.as_ref().is_some_and(|c| c.tls.is_some()) { "https" } else { "http" };
    eprintln!(
        "coexistd demo: lab DNS on {}; status page {scheme}://{listen}/ , metrics {scheme}://{listen}{}",
        lab.dns.addr, web.telemetry_path
    );
    let announcements = faults.map(|hold| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let lab = lab.clone();
        tokio::spawn(async move {
            // The agent's first runs come first: faults start once everything ran green.
            tokio::time::sleep(hold).await;
            lab.play_faults(hold, |text| {
                eprintln!("coexistd demo: {text}");
                let _ = tx.send(text);
            })
            .await;
        });
        rx
    });
    run(ConfigSource::Text { origin: "<demo>".into(), text }, probes, web, announcements).await
}

struct ReportArgs {
    prometheus: String,
    from: String,
    to: String,
    step: std::time::Duration,
    format: ReportFormat,
    out: Option<PathBuf>,
    config: Option<PathBuf>,
    http_config: Option<PathBuf>,
}

/// `coexistd report`: 0 GO, 1 NO-GO, 2 an error (said on standard error).
async fn report(a: ReportArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("coexistd report: {m}");
        ExitCode::from(EXIT_CONFIG)
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (from, to) =
        match (coexistd::report::parse_time(&a.from, now), coexistd::report::parse_time(&a.to, now)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) => return fail(format!("--from {e}")),
            (_, Err(e)) => return fail(format!("--to {e}")),
        };
    let step = i64::try_from(a.step.as_secs()).unwrap_or(i64::MAX);
    if !(1..=86_400).contains(&step) {
        return fail("--step must be between 1s and 1d".into());
    }
    let max = coexistd::report::analysis::MAX_TIME;
    if !(0..=max).contains(&from) || !(0..=max).contains(&to) {
        return fail("--from and --to must lie between 1970 and 9999".into());
    }
    if to - from < step {
        return fail(format!("--to must be at least one step ({step} s) after --from"));
    }
    let n = ((to - from) / step) as usize;
    if n > coexistd::report::MAX_STEPS {
        return fail(format!(
            "{n} steps of {step} s: more than {} in one report (a longer --step)",
            coexistd::report::MAX_STEPS
        ));
    }
    let grid = coexistd::report::analysis::Grid { from: to - step * n as i64, step, n };
    let criteria = match &a.config {
        None => coexistd::config::report::ReportCriteria::default(),
        Some(p) => match coexistd::config::report::ReportCriteria::load(p) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        },
    };
    let prom = match coexistd::report::prom::Prometheus::new(&a.prometheus, a.http_config.as_deref()) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let report = match coexistd::report::build(&prom, &a.prometheus, grid, &criteria).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let text = match a.format {
        ReportFormat::Html => coexistd::report::render::html(&report),
        ReportFormat::Markdown => coexistd::report::render::markdown(&report),
        ReportFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(j) => j + "\n",
            Err(e) => return fail(format!("JSON: {e}")),
        },
    };
    let written = match &a.out {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("--out {}: {e}", p.display())),
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(text.as_bytes()).map_err(|e| format!("standard output: {e}"))
        }
    };
    if let Err(e) = written {
        return fail(e);
    }
    if report.verdict.go {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CHECK_FAILED)
    }
}
