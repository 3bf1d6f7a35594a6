//! `hookyard-loadtest`: the end-to-end load test of hookyard on one machine.
//!
//! It starts the gateway (embedded SQLite, fsync on; or PostgreSQL with `--postgres`, one or
//! more processes with `--processes`) and a loopback receiver in this process,
//! drives load open loop at a fixed rate and closed loop at the maximum rate, and prints one
//! markdown row per scenario and phase: events accepted/s, deliveries/s, accept-to-delivery lag
//! (the receiver subtracts the `sent_at_ns` the generator put in the event from the same
//! monotonic clock), errors, lost and duplicated deliveries (counted by event and by
//! `webhook-id`), the gateway's RSS idle and under load, and its CPU. A baseline (the generator
//! against the receiver alone) runs first; rates are also shown as a share of it.
//! See `docs/LOADTEST.md`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

mod clock;
mod gateway;
mod generator;
mod perf;
mod procfs;
mod receiver;
mod report;
mod scenarios;
mod tls;

use scenarios::{Phases, Runner, Settings, ALL};

/// The end-to-end load test of hookyard.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The gateway binary (a release build).
    #[arg(long, default_value = "target/release/hookyard")]
    gateway_bin: PathBuf,
    /// The field-map plugin, for the field-map scenario.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/field_map.wasm"
    )]
    field_map: PathBuf,
    /// The Python example plugin, for the python scenarios.
    #[arg(long, default_value = "examples/plugins-python/out/plugin.wasm")]
    python_plugin: PathBuf,
    /// The JavaScript example plugin, for the js scenarios.
    #[arg(long, default_value = "examples/plugins-js/out/plugin.wasm")]
    js_plugin: PathBuf,
    /// Scenarios to run, comma-separated, or `all`: ingest, e2e, field-map, python, js,
    /// field-map-fresh, python-fresh, js-fresh (the plugin on a fresh instance per call),
    /// fanout, outage, hang, bus-nats, bus-amqp, retention. The baseline always runs first
    /// (`baseline` alone runs only it).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    scenario: Vec<String>,
    /// Seconds of load in each phase (the outage scenario adds its outage to it).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Fixed rate in events per second for every fixed-rate phase (default: half the maximum
    /// the scenario just measured; outage and hang use the e2e fixed rate).
    #[arg(long)]
    rate: Option<f64>,
    /// Which phases to run.
    #[arg(long, value_enum, default_value_t = Phases::Both)]
    phases: Phases,
    /// Open loop: connections (the bound on ingest requests in flight).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Closed loop (maximum rate): concurrent senders of single events.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Events per request in the batched ingest phase.
    #[arg(long, default_value_t = 100)]
    batch_size: u64,
    /// Closed loop: concurrent senders of batches.
    #[arg(long, default_value_t = 8)]
    batch_connections: usize,
    /// Webhooks subscribed to the one event type of the fan-out scenario.
    #[arg(long, default_value_t = 10)]
    fanout: usize,
    /// Seconds the receiver answers 503 in the outage scenario.
    #[arg(long, default_value_t = 30.0)]
    outage_secs: f64,
    /// Events per second during the outage scenario (default: the e2e fixed rate).
    #[arg(long)]
    outage_rate: Option<f64>,
    /// Longest wait, in seconds, for the queue to drain after a phase's load.
    #[arg(long, default_value_t = 120.0)]
    drain_timeout: f64,
    /// The gateway's `delivery.retry_base_ms` (first retry delay).
    #[arg(long, default_value_t = 500)]
    retry_base_ms: u64,
    /// The gateway's `delivery.retry_factor`.
    #[arg(long, default_value_t = 2.0)]
    retry_factor: f64,
    /// The gateway's `delivery.retry_max_ms` (longest retry delay).
    #[arg(long, default_value_t = 5000)]
    retry_max_ms: u64,
    /// Extra environment of the gateway, `HOOKYARD_SECTION_KEY=VALUE` (repeatable), to try a
    /// setting without editing the harness, e.g. `HOOKYARD_DELIVERY_POLL_INTERVAL_MS=10`.
    #[arg(long = "gateway-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    gateway_env: Vec<(String, String)>,
    /// Use PostgreSQL instead of SQLite: a tokio-postgres URL of an existing database, e.g.
    /// `postgres://postgres@127.0.0.1:5432/test` (no TLS). Every gateway the harness starts
    /// gets a fresh schema there (created before it starts, dropped `CASCADE` after it) as its
    /// `store.url` search path.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Gateway processes per scenario, on one store (different ports, own plugin caches);
    /// webhooks are created through the first, and the generator sends round robin to all.
    /// More than 1 needs --postgres. RSS and CPU are then summed over the processes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    processes: u64,
    /// TLS on the gateway's listeners: a self-signed certificate for 127.0.0.1/localhost made
    /// at start (`server.tls_cert`/`tls_key`); ingest, admin, `/readyz` and `/metrics` go over
    /// https trusting only it. The receiver stays plain http.
    #[arg(long)]
    tls: bool,
    /// The gateway's `log.level`.
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Count the gateway's SQLite syncs per phase with `perf stat` (needs perf).
    #[arg(long)]
    perf_stat: bool,
    /// Write a `perf record` CPU profile of each phase into this directory (needs perf).
    #[arg(long)]
    perf_record: Option<PathBuf>,
    /// NATS with JetStream, for the bus-nats scenario.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// RabbitMQ, for the bus-amqp scenario.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Events published before a bus scenario's source starts, for its backlog row (0: no
    /// backlog row).
    #[arg(long, default_value_t = 200_000)]
    bus_backlog: u64,
    /// Old deliveries the retention scenario seeds, each with its event and one attempt
    /// (three rows each: the default makes a million rows).
    #[arg(long, default_value_t = 333_334)]
    seed_deliveries: u64,
    /// Also write the tables to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    clock::origin();
    let mut scenarios: Vec<String> = Vec::new();
    for s in &cli.scenario {
        if s == "all" {
            scenarios.extend(ALL.iter().map(|s| s.to_string()));
        } else if s == "baseline" {
            // It always runs.
        } else if ALL.contains(&s.as_str()) {
            scenarios.push(s.clone());
        } else {
            anyhow::bail!("unknown scenario {s:?} (known: {}, all)", ALL.join(", "));
        }
    }
    if !scenarios.is_empty() && !cli.gateway_bin.is_file() {
        anyhow::bail!(
            "no gateway binary at {} (cargo build --release, or --gateway-bin)",
            cli.gateway_bin.display()
        );
    }
    for (prefix, path, flag) in [
        ("field-map", &cli.field_map, "--field-map"),
        ("python", &cli.python_plugin, "--python-plugin"),
        ("js", &cli.js_plugin, "--js-plugin"),
    ] {
        if scenarios.iter().any(|s| s.starts_with(prefix)) && !path.is_file() {
            anyhow::bail!(
                "no {prefix} plugin at {} (bash scripts/build-plugins.sh, or {flag})",
                path.display()
            );
        }
    }
    let processes = cli.processes as usize;
    if processes > 1 && cli.postgres.is_none() {
        anyhow::bail!(
            "--processes {processes} needs --postgres: several gateways share one database, \
             which SQLite (one file per gateway here) does not offer"
        );
    }
    if let Some(url) = &cli.postgres {
        if !scenarios.is_empty() {
            gateway::check_postgres(url).await?;
        }
    }
    if let Some(dir) = &cli.perf_record {
        std::fs::create_dir_all(dir)?;
    }
    let tls = if cli.tls && !scenarios.is_empty() {
        Some(tls::Tls::self_signed()?)
    } else {
        None
    };
    let settings = Settings {
        gateway: gateway::Options {
            // Absolute: the gateway runs in its temporary directory.
            bin: std::fs::canonicalize(&cli.gateway_bin).unwrap_or(cli.gateway_bin.clone()),
            plugin: None,
            retry_base_ms: cli.retry_base_ms,
            retry_factor: cli.retry_factor,
            retry_max_ms: cli.retry_max_ms,
            log_level: cli.log_level.clone(),
            env: cli.gateway_env.clone(),
            postgres: cli.postgres.clone(),
            processes,
            tls,
        },
        duration: Duration::from_secs_f64(cli.duration),
        rate: cli.rate,
        phases: cli.phases,
        connections: cli.connections,
        max_connections: cli.max_connections,
        batch_size: cli.batch_size.max(1),
        batch_connections: cli.batch_connections,
        fanout: cli.fanout,
        outage: Duration::from_secs_f64(cli.outage_secs),
        outage_rate: cli.outage_rate,
        drain_timeout: Duration::from_secs_f64(cli.drain_timeout),
        perf_stat: cli.perf_stat,
        perf_record: cli.perf_record.clone(),
        plugins: scenarios::PluginFiles {
            field_map: cli.field_map.clone(),
            python: cli.python_plugin.clone(),
            js: cli.js_plugin.clone(),
        },
        seed_deliveries: cli.seed_deliveries,
        bus: scenarios::BusUrls {
            nats: cli.nats_url.clone(),
            amqp: cli.amqp_url.clone(),
            backlog: cli.bus_backlog,
        },
    };
    let mut runner = Runner::new(settings).await?;
    // Ctrl-C drops the running scenario: its gateways are killed and their PostgreSQL schemas
    // dropped on the way out.
    let interrupted = tokio::select! {
        result = run_all(&mut runner, &scenarios) => {
            result?;
            false
        }
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        eprintln!("interrupted; the rows so far:");
    }
    let store = match &cli.postgres {
        Some(url) => format!(
            "PostgreSQL {} (a fresh schema per scenario)",
            gateway::redact(url)
        ),
        None => "SQLite fsync on".to_owned(),
    };
    let procs = if processes > 1 {
        format!(
            " {processes} gateway processes on one store (requests round robin over them; RSS \
             and CPU are sums over the processes, queue gauges the first's)."
        )
    } else {
        " 1 gateway process.".to_owned()
    };
    let tls = if cli.tls {
        " TLS on: both gateway listeners over https (rustls, a self-signed certificate; the \
         receiver is plain http)."
    } else {
        ""
    };
    let mut table = format!(
        "Store: {store}.{procs}{tls} Gateway config: defaults, delivery.retry_base_ms={} retry_factor={} \
         retry_max_ms={}{}. Phases of {} s; open loop over {} connections, closed loop over {}.\n\n",
        cli.retry_base_ms,
        cli.retry_factor,
        cli.retry_max_ms,
        cli.gateway_env
            .iter()
            .map(|(k, v)| format!(", {k}={v}"))
            .collect::<String>(),
        cli.duration,
        cli.connections,
        cli.max_connections,
    );
    table.push_str(&report::markdown(&runner.rows, runner.ceiling));
    println!("{table}");
    if let Some(path) = &cli.out {
        std::fs::write(path, &table)?;
    }
    if interrupted {
        // Its temporary directory goes first (exit runs no destructors).
        drop(runner);
        std::process::exit(130);
    }
    Ok(())
}

/// The baseline, then each scenario (a failed one is reported and skipped).
async fn run_all(runner: &mut Runner, scenarios: &[String]) -> anyhow::Result<()> {
    eprintln!("baseline: generator → receiver");
    runner.baseline().await?;
    for name in scenarios {
        eprintln!("{name}:");
        if let Err(e) = runner.scenario(name).await {
            eprintln!("  {name} failed: {e:#}");
        }
    }
    Ok(())
}
