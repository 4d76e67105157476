//! The daemon: load, serve, schedule, reload, stop.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::http::routes::{self, ReloadRequest};
use crate::kinds::ProbeContext;
use crate::net::dns::DnsClient;
use crate::net::resolve::{self, Resolver};
use crate::run::results::Store;
use crate::run::scheduler::{LiveProber, Scheduler};

/// Where the configuration comes from, so that a reload reads it again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, read again on every reload.
    File(std::path::PathBuf),
    /// Text held in memory (the demo lab), parsed again on reload.
    Text {
        /// Name used in messages.
        origin: String,
        /// The TOML.
        text: String,
    },
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Text { origin, text } => Config::parse(text, origin),
        }
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Anything else at start-up (exit code 1).
    #[error("{0}")]
    Startup(String),
}

/// Builds what probes need from a configuration. Unreadable TLS material is a
/// configuration error; a missing system resolver configuration a start-up error.
pub fn probe_context(config: &Config) -> Result<ProbeContext, AgentError> {
    let servers = if config.dns.servers.is_empty() {
        resolve::system_servers().map_err(AgentError::Startup)?
    } else {
        config.dns.servers.clone()
    };
    let dns = Arc::new(DnsClient::new(servers));
    let resolver = Resolver::new(dns.clone(), config.agent.timeout);
    let tls = crate::net::tls::TlsClient::new(&config.tls).map_err(|e| {
        AgentError::Config(ConfigError {
            origin: config.origin.clone(),
            position: None,
            message: e.to_string(),
        })
    })?;
    let endpoints = Arc::new(crate::ua::endpoint::Endpoints::with_budget(config.agent.endpoint_memory));
    Ok(ProbeContext { resolver, dns, tls: Arc::new(tls), address: None, endpoints })
}

/// The registered endpoints the instances of `config` need (one per test user).
pub fn endpoint_specs(config: &Config) -> Vec<crate::ua::endpoint::EndpointSpec> {
    config.instances.iter().flat_map(|i| i.spec.endpoints()).cloned().collect()
}

/// Time a stopping scheduler waits for probes in flight.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Runs until `shutdown` is cancelled. SIGHUP and `POST /-/reload` reload the
/// configuration; a rejected one keeps the running configuration.
///
/// Probes run on `probes`, a runtime of their own; the HTTP endpoints (and the encoding
/// of scrapes, on its blocking pool) run on the calling runtime. A burst of scrapes can
/// then take CPU from the probes only through the operating system's scheduler, where
/// the serving threads run at a lower priority (see `main.rs`).
pub async fn run(
    source: ConfigSource,
    shutdown: CancellationToken,
    probes: tokio::runtime::Handle,
    web: routes::WebOptions,
    announcements: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> Result<(), AgentError> {
    let config = source.load()?;
    let listen = web.listen.unwrap_or(config.agent.listen);
    let mut cx = probe_context(&config)?;
    let concurrency = config.agent.concurrency;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| AgentError::Startup(format!("cannot listen on {listen}: {e}")))?;
    tracing::info!(%listen, config = %config.origin, instances = config.instances.len(), "coexistd started");
    let store = Arc::new(Store::new(config));
    if let Some(mut rx) = announcements {
        let store = store.clone();
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                store.announce(text);
            }
        });
    }
    cx.endpoints = store.endpoints.clone();
    store.endpoints.set_budget(store.current().config.agent.endpoint_memory);
    store.endpoints.sync(endpoint_specs(&store.current().config), &cx, &probes);
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);

    let prober: Arc<dyn crate::run::scheduler::Prober> = Arc::new(LiveProber(Arc::new(cx)));
    let tracer = Arc::new(crate::run::trace_run::Tracer::new(prober.clone(), probes.clone()));
    let app = routes::router(store.clone(), reload_tx, tracer.clone(), &web);
    let limits = crate::http::port::Limits::from_descriptors(concurrency);
    let http =
        tokio::spawn(crate::http::port::serve(listener, app, web.config.clone(), limits, shutdown.clone()));

    let mut scheduler = Scheduler::start_on(&probes, store.current(), store.clone(), prober, concurrency);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| AgentError::Startup(format!("SIGHUP handler: {e}")))?;
    loop {
        let reply = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hup.recv() => None,
            r = reload_rx.recv() => match r { Some(r) => Some(r), None => continue },
        };
        // With --web.listen-address the file's agent.listen is not the address in use.
        let configured = if web.listen.is_some() { None } else { Some(listen) };
        let result = reload(&source, &store, &mut scheduler, configured, &probes, &tracer).await;
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
    scheduler.stop(STOP_GRACE).await;
    // Test users unregister (each endpoint sends `Expires: 0`, at most 1 s) while the
    // HTTP server drains on the same token (at most 1 s): 0.5 + 1 s, within the 2 s
    // a stop may take.
    let _ = tokio::join!(
        store.endpoints.stop_all(Duration::from_secs(1)),
        tokio::time::timeout(Duration::from_secs(1), http)
    );
    tracing::info!("coexistd stopped");
    Ok(())
}

async fn reload(
    source: &ConfigSource,
    store: &Arc<Store>,
    scheduler: &mut Scheduler,
    listen: Option<std::net::SocketAddr>,
    probes: &tokio::runtime::Handle,
    tracer: &crate::run::trace_run::Tracer,
) -> Result<(), String> {
    let loaded = source
        .load()
        .map_err(|e| e.to_string())
        .and_then(|c| probe_context(&c).map(|cx| (c, cx)).map_err(|e| e.to_string()));
    let (config, mut cx) = match loaded {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload rejected; the running configuration stays");
            store.reload_failed();
            return Err(e);
        }
    };
    if let Some(listen) = listen.filter(|l| *l != config.agent.listen) {
        tracing::warn!(old = %listen, new = %config.agent.listen, "agent.listen changes only on restart");
    }
    let concurrency = config.agent.concurrency;
    let instances = config.instances.len();
    let old = std::mem::replace(scheduler, Scheduler::start_empty());
    old.stop(STOP_GRACE).await;
    let generation = store.swap(config);
    cx.endpoints = store.endpoints.clone();
    store.endpoints.set_budget(generation.config.agent.endpoint_memory);
    store.endpoints.sync(endpoint_specs(&generation.config), &cx, probes);
    let prober: Arc<dyn crate::run::scheduler::Prober> = Arc::new(LiveProber(Arc::new(cx)));
    tracer.set_prober(prober.clone());
    *scheduler = Scheduler::start_on(probes, generation, store.clone(), prober, concurrency);
    tracing::info!(instances, "configuration reloaded");
    Ok(())
}
