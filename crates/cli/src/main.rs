//! `portcullis`: run the gateway, or validate a config.

use portcullis_proxy::security::{SecurityLayer, SecurityTap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use portcullis_proxy::{config_hash, server, Gateway, ReloadError, Settings};
use tokio::sync::watch;

mod alloc;

#[global_allocator]
static GLOBAL: alloc::Alloc = alloc::Alloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A security-first API gateway that reads Kong's kong.yml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground.
    Start(StartArgs),
    /// Work with declarative config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file; print every error with its path.
    Validate {
        /// The kong.yml (YAML or JSON).
        file: PathBuf,
    },
}

#[derive(Args)]
struct StartArgs {
    /// Declarative config (Kong `_format_version: "3.0"`, YAML or JSON).
    #[arg(short, long, env = "PORTCULLIS_CONFIG")]
    config: Option<PathBuf>,
    /// Node settings file (TOML).
    #[arg(long, env = "PORTCULLIS_SETTINGS")]
    settings: Option<PathBuf>,
    /// Plain-text proxy listener [default: 0.0.0.0:8000].
    #[arg(long, env = "PORTCULLIS_PROXY_LISTEN")]
    proxy_listen: Option<SocketAddr>,
    /// TLS proxy listener [default: 0.0.0.0:8443].
    #[arg(long, env = "PORTCULLIS_PROXY_TLS_LISTEN")]
    proxy_tls_listen: Option<SocketAddr>,
    /// Admin API listener [default: 127.0.0.1:8001].
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Status listener serving /status and /metrics [default: off].
    #[arg(long, env = "PORTCULLIS_STATUS_LISTEN")]
    status_listen: Option<SocketAddr>,
    /// Proxy worker threads [default: number of cores].
    #[arg(long, env = "PORTCULLIS_WORKERS")]
    workers: Option<usize>,
    /// Log format: json or text.
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT")]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => validate(&file),
        Command::Start(args) => match start(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `portcullis config validate FILE`.
fn validate(file: &Path) -> ExitCode {
    let config = match portcullis_config::load_file(file, &portcullis_plugins::validate) {
        Ok((c, _)) => c,
        Err(portcullis_config::LoadError::Invalid(errors)) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.len());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = config.summary();
    // Compiling checks plugin schemas, certificates and TLS settings too.
    match portcullis_proxy::snapshot::compile(
        config,
        &Settings::default(),
        &Default::default(),
        String::new(),
    ) {
        Ok(_) => {
            println!("{}: valid ({summary})", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

fn load_settings(args: &StartArgs) -> anyhow::Result<Settings> {
    let mut s = match &args.settings {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read settings {}", path.display()))?;
            toml::from_str::<Settings>(&text)
                .with_context(|| format!("invalid settings {}", path.display()))?
        }
        None => Settings::default(),
    };
    if let Some(a) = args.proxy_listen {
        s.proxy_listen = a;
    }
    if let Some(a) = args.proxy_tls_listen {
        s.proxy_tls_listen = a;
    }
    if let Some(a) = args.admin_listen {
        s.admin_listen = a;
    }
    if let Some(a) = args.status_listen {
        s.status_listen = Some(a);
    }
    if let Some(w) = args.workers {
        s.workers = w;
    }
    if let Some(f) = &args.log_format {
        s.log_format = f.clone();
    }
    s.validate().map_err(anyhow::Error::msg)?;
    Ok(s)
}

/// Installs the log output (filtered by `log_level`) and the security-event tap (which sees
/// every security event whatever the log level).
fn init_logging(s: &Settings) -> anyhow::Result<Arc<SecurityLayer>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&s.log_level));
    let security = SecurityLayer::new(
        &s.security_log,
        s.security_http.as_deref(),
        s.alerts.clone(),
    )
    .with_context(|| format!("cannot open security_log {}", s.security_log))?;
    let fmt = if s.log_format == "json" {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(portcullis_proxy::metrics::SecurityEvents::filtered())
        .with(SecurityTap(security.clone()))
        .init();
    Ok(security)
}

fn start(args: StartArgs) -> anyhow::Result<()> {
    let settings = load_settings(&args)?;
    let security = init_logging(&settings)?;
    let workers = settings.worker_count();
    let (config, hash) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            // Plugin schemas checked in the same pass, so the errors are those of `validate`.
            match portcullis_config::parse_str_with(
                &text,
                &|n| std::env::var(n).ok(),
                &portcullis_plugins::validate,
            ) {
                Ok(c) => (c, config_hash(&text)),
                Err(errors) => {
                    for e in &errors {
                        tracing::error!(path = %e.path, error = %e.message, "invalid config");
                    }
                    anyhow::bail!("{}: {} error(s) in config", path.display(), errors.len());
                }
            }
        }
        None => (portcullis_config::Config::default(), String::new()),
    };
    // One worker: a current-thread runtime skips the work-stealing machinery entirely.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")?;
    runtime.block_on(async move {
        security.start_alerts();
        run(settings, config, hash, args.config).await
    })
}

async fn run(
    settings: Settings,
    config: portcullis_config::Config,
    hash: String,
    path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let summary = config.summary();
    let gw = match Gateway::new(settings, config, hash, path) {
        Ok(gw) => gw,
        Err(ReloadError::Invalid(errors)) => {
            for e in &errors {
                tracing::error!(path = %e.path, error = %e.message, "invalid config");
            }
            anyhow::bail!("{} error(s) in config", errors.len());
        }
        Err(e) => return Err(e.into()),
    };
    gw.start_background();
    let listeners = server::Listeners::bind(&gw)
        .await
        .context("cannot bind the proxy listeners")?;
    let admin = server::bind(gw.settings.admin_listen).context("cannot bind the admin listener")?;
    let status = match gw.settings.status_listen {
        Some(addr) => Some(server::bind(addr).context("cannot bind the status listener")?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signals(gw.clone(), stop_tx));
    let admin_task = tokio::spawn(portcullis_admin::serve(gw.clone(), admin, stop_rx.clone()));
    let status_task = status.map(|l| {
        tokio::spawn(portcullis_admin::serve_status(
            gw.clone(),
            l,
            stop_rx.clone(),
        ))
    });
    tracing::info!(
        proxy = %gw.settings.proxy_listen,
        proxy_tls = %gw.settings.proxy_tls_listen,
        admin = %gw.settings.admin_listen,
        status = %gw.settings.status_listen.map_or_else(|| "off".to_string(), |a| a.to_string()),
        config = %summary,
        "portcullis started"
    );
    server::serve(gw.clone(), listeners, stop_rx).await?;
    let _ = admin_task.await;
    if let Some(t) = status_task {
        let _ = t.await;
    }
    tracing::info!("portcullis stopped");
    Ok(())
}

#[cfg(unix)]
async fn signals(gw: Arc<Gateway>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match gw.reload_file().await {
                Ok(summary) => tracing::info!(config = %summary, "config reloaded"),
                Err(ReloadError::Invalid(errors)) => {
                    for e in &errors {
                        tracing::error!(path = %e.path, error = %e.message, "invalid config");
                    }
                    tracing::error!(errors = errors.len(), "config reload refused; the running config keeps serving");
                }
                Err(e) => tracing::error!(error = %e, "config reload failed; the running config keeps serving"),
            },
            _ = usr1.recv() => {
                portcullis_plugins::file_log::reopen_all();
                tracing::info!("log files reopened");
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
}
