//! parkd's entry point: flags and config, logging, hold music, then the io layer.

use clap::Parser;
use parkd::cli::Cli;
use parkd::config::Config;
use parkd::core::Core;
use parkd::io::{api_link, clock::Clock, events_hub::EventHub, http, http_guard, http_token, journal_file, journal_layout, media_shards, media_thread, metrics::Metrics, sip_driver};
use parkd::io::sip_driver::Stop;
use parkd::media::HoldMusic;
use parkd::park::shard_plan::ShardPlan;
use parkd::txn::TimerConfig;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(addr) = cli.probe {
        return match parkd::io::probe::options(addr, std::time::Duration::from_secs(2)) {
            Ok(status) => {
                println!("parkd: {addr} answered {status}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("parkd: probe failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing(&cli);
    let cfg = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parkd: {e}");
            return ExitCode::from(2);
        }
    };
    let music = match parkd::io::reload::load_music(&cfg.lots) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("parkd: {e}");
            eprintln!("parkd: hold music must be a WAV of 8 kHz mono 16-bit PCM; convert with e.g. `sox in.mp3 -r 8000 -c 1 -b 16 music.wav`");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        // The TLS certificate, key and CA files are read and checked too.
        if let Ok(Some(tls)) = cfg.server.tls() {
            if let Err(e) = parkd::io::tls::TlsIo::load(&tls) {
                eprintln!("parkd: SIP over TLS: {e}");
                return ExitCode::from(2);
            }
        }
        println!("parkd: configuration OK");
        for lot in &cfg.lots {
            println!(
                "  lot {:?}: park code {}, orbits {}-{} ({} orbits), parking time {} s, slot policy {:?}",
                lot.name,
                lot.park_code,
                lot.orbits.name_of(0),
                lot.orbits.name_of(lot.orbits.len() - 1),
                lot.orbits.len(),
                lot.parking_time,
                lot.slot_policy
            );
        }
        return ExitCode::SUCCESS;
    }
    // The API token (generated in the state directory at first start) before anything is bound: an unusable
    // state directory stops parkd at once, naming the directory.
    let token = match cfg.http.listen_addr() {
        Ok(Some(_)) => match http_token::resolve(cfg.http.token.as_deref(), &cfg.server.state_dir) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("parkd: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    // The journal next, still before anything is bound: a state directory that cannot be written, or that
    // another parkd holds, stops the start here, naming the directory. A torn or damaged tail does not: the
    // intact records are restored and the bad part is set aside (and logged).
    // With `sip_threads > 1` one journal per shard (`io/journal_layout.rs`); a start with another thread count
    // than the run that journaled calls is refused, naming the directory.
    let (journal, _state_lock) = if cfg.server.journal {
        match journal_layout::open(&cfg.server.state_dir, cfg.server.sip_threads, Default::default()) {
            Ok(opened) => {
                let shards = opened
                    .shards
                    .into_iter()
                    .map(|(store, restored)| {
                        journal_file::log_recovery(&restored);
                        (store, restored.live)
                    })
                    .collect::<Vec<_>>();
                (Some(shards), opened.state_lock)
            }
            Err(e) => {
                eprintln!("parkd: cannot open the journal in {}: {e}", cfg.server.state_dir.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        tracing::warn!("journal = false: calls live only in memory; a restart or crash drops every call");
        let file = journal_layout::journal_dir(&cfg.server.state_dir, cfg.server.sip_threads, 0).join(journal_file::JOURNAL_FILE);
        if let Ok(meta) = std::fs::metadata(&file) {
            // Not read, not changed: its calls would come back (long stale) once journaling is turned on again.
            tracing::warn!(file = %file.display(), bytes = meta.len(),
                "journal = false: an existing journal is ignored and left as it is; delete it unless you mean to restore its calls later");
        }
        (None, None)
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parkd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP and POST /v1/reload read the file again with the same flags on top (issue 21).
    let source: Option<parkd::io::reload::ConfigSource> = cli.config.is_some().then(|| {
        let cli = cli.clone();
        Box::new(move || cli.config().map_err(|e| e.to_string())) as parkd::io::reload::ConfigSource
    });
    match rt.block_on(serve(cfg, music, token, journal, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parkd: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Sip(#[from] sip_driver::SipIoError),
    #[error(transparent)]
    Media(#[from] media_thread::MediaIoError),
    #[error(transparent)]
    Tone(#[from] parkd::io::reload::LotAudioError),
    #[error(transparent)]
    Config(#[from] parkd::config::ConfigError),
    #[error("cannot bind the HTTP listener on {addr}: {source}")]
    BindHttp { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    State(#[from] http_token::StateError),
    #[error(transparent)]
    Shards(#[from] parkd::park::shard_plan::ShardPlanError),
    #[error("[cluster]: {0}")]
    Cluster(String),
    #[error("cannot start the journal writer thread: {0}")]
    JournalThread(std::io::Error),
    #[error("SIP over TLS: {0}")]
    Tls(#[from] parkd::io::tls::TlsError),
}

/// With `[cluster]` (`--redis`, `--node`): the core becomes a node of the cluster (its parks wait for Redis's
/// claim) and the task that carries its Redis operations is started. Parks answer 503 until Redis answers.
fn start_cluster(cfg: &Config, core: &mut Core, seed: u64) -> Result<Option<parkd::io::cluster::core_link::CoreLink>, StartError> {
    use parkd::cluster::{ClusterRoom, ClusterSettings, Keyspace, LotSpace, NodeName};
    let Some(target) = cfg.cluster.target().map_err(|e| StartError::Cluster(e.to_string()))? else { return Ok(None) };
    let name = cfg.cluster.node.as_deref().unwrap_or_default();
    let node = NodeName::new(name).ok_or_else(|| StartError::Cluster(format!("bad node name {name:?}")))?;
    let sip = format!("sip:{}", cfg.server.advertised_sip());
    let lease = std::time::Duration::from_secs(cfg.cluster.lease);
    let keys = Keyspace::new(&cfg.cluster.key_prefix, cfg.lots.iter().map(LotSpace::from_config).collect());
    let mut settings = ClusterSettings::new(node.clone(), sip.clone(), lease);
    settings.seed = seed;
    core.enable_cluster(ClusterRoom::new(settings, keys.clone()));
    if let Some(secret) = &cfg.cluster.secret {
        // Retrieves other nodes send here with the signed Parkd-Cluster header are trusted.
        core.set_cluster_secret(secret.as_bytes());
    }
    let link = parkd::io::cluster::core_link::spawn(parkd::io::cluster::core_link::LinkSettings {
        target,
        keys,
        node: name.to_string(),
        sip,
        lease,
        replicas: cfg.cluster.replicas,
    });
    tracing::info!(%node, lease_s = cfg.cluster.lease, "cluster node: orbits are allocated through Redis (parks answer 503 while it does not answer)");
    if cfg.cluster.secret.is_none() {
        tracing::warn!("cluster: no [cluster] secret: a retrieve of a call parked on another node answers 404 (with the secret this node fetches it)");
    }
    Ok(Some(link))
}

async fn serve(
    mut cfg: Config,
    music: Vec<HoldMusic>,
    token: Option<http_token::ApiToken>,
    journal: Option<Vec<(journal_file::LocalJournal, parkd::journal::LiveSet)>>,
    source: Option<parkd::io::reload::ConfigSource>,
) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    // As read, before `media_threads = 0` is resolved below: what a reload is compared against.
    let running = cfg.clone();
    let clock = Clock::new();
    let tls = match cfg.server.tls()? {
        Some(settings) => {
            let bound = parkd::io::tls::bind(&settings).await?;
            tracing::info!(tls_listen = %settings.listen, mutual = bound.1.mutual(), "SIP over TLS ready (SIGHUP reloads the certificate)");
            Some(bound)
        }
        None => None,
    };
    let sockets = sip_driver::SipSockets::bind(cfg.server.listen).await?.with_limits(parkd::io::conn_limits::SipLimits::from_config(&cfg)).with_tls(tls);
    let ports = cfg.server.rtp_ports;
    let seed = clock.now().as_micros();
    if cfg.server.media_threads == 0 {
        // One per core parkd may run on (affinity and cgroup quota included), within what the range allows.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cfg.server.media_threads = ShardPlan::auto_threads(ports.lo as u16, ports.hi as u16, cores);
    }
    if cfg.server.sip_threads > 1 {
        return serve_sharded(cfg, music, token, sockets, clock, seed, journal, started).await;
    }
    let journal = journal.and_then(|mut shards| shards.pop());
    // The one plan of media shards: the media threads below and the core's port allocation use this value.
    let plan = ShardPlan::new(ports.lo as u16, ports.hi as u16, cfg.server.rtp_legs_per_port, cfg.server.media_threads)?;
    let media = media_shards::spawn(media_shards::MediaSetup { bind_ip: cfg.server.listen.ip(), plan: plan.clone(), rtp_sender: cfg.server.rtp_sender, music, tones: parkd::io::reload::load_tones(&cfg.lots)?, seed })?;
    let mut core = Core::with_plan(cfg.server.clone(), cfg.lots.clone(), TimerConfig::default(), seed, &plan);
    // SDES keys (issue 19) must not follow from the clock-derived seed: their RNG is reseeded from the OS.
    core.seed_srtp_keys(rand::random());
    core.set_limits(&cfg.limits, &cfg.access);
    core.set_running_config(running);
    core.set_dial_allow(cfg.http.dial_patterns()?);
    // A cluster node first (its Redis link reports to the driver loop, which runs after the restore): the calls
    // restored next take back the claims the journal holds for them (`ClusterRoom::adopt`, issue 18).
    let cluster = start_cluster(&cfg, &mut core, seed)?;
    // The calls of the last run, back before the SIP socket is read: the media threads (their RTP ports are
    // bound) get each restored stream with the first drain of the driver loop, before it reads any socket.
    let journal = match journal {
        Some((store, live)) => {
            restore(&mut core, &live, clock.now(), started, None);
            let link = sip_driver::JournalLink::spawn(store, Default::default()).map_err(StartError::JournalThread)?;
            Some(link)
        }
        None => None,
    };
    for lot in &cfg.lots {
        tracing::info!(lot = %lot.name, park_code = %lot.park_code, orbits = %format!("{}-{}", lot.orbits.name_of(0), lot.orbits.name_of(lot.orbits.len() - 1)), parking_time = lot.parking_time, "lot ready");
    }
    if cfg.server.drain {
        tracing::info!("starting in drain mode (drain = true): new parks get 503; SIGUSR1 toggles it");
    }
    tracing::info!(listen = %cfg.server.listen, families = parkd::io::dual_stack::families(cfg.server.listen.ip()), advertise = %cfg.server.advertised_ip(), advertise_other_family = ?cfg.server.advertised_other(), rtp_ports = %format!("{}-{}", ports.lo, ports.hi), media_threads = media.threads(), "parkd ready (UDP and TCP)");
    let metrics = std::sync::Arc::new(Metrics::new());
    if let Some(j) = &journal {
        metrics.set_journal(j.writer.stats_handle());
    }
    let hub = EventHub::new();
    let (client, mut port) = api_link::link(hub.clone(), metrics.clone());
    port.reloader.source = source;
    let http_stop = start_http(&cfg, token, client, hub, metrics).await?;
    let stop = sip_driver::run(core, sockets, media, clock, port, journal, cluster, shutdown_signal()).await;
    stopped(stop, http_stop, cfg.server.journal);
    Ok(())
}

/// Turns journaling on in `core` and brings back the calls `live` holds (shard `shard` of several, if given).
fn restore(core: &mut Core, live: &parkd::journal::LiveSet, now: parkd::time::Time, started: std::time::Instant, shard: Option<usize>) {
    core.set_journaling(true);
    let report = core.restore(live, now);
    let took_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        shard,
        parked = report.parked,
        bridged = report.bridged,
        subscriptions = report.subscriptions,
        recalls_restarted = report.recalls_restarted,
        skipped = report.skipped.len(),
        took_ms,
        "calls restored from the journal"
    );
    for why in &report.skipped {
        tracing::warn!(shard, %why, "journal record not restored");
    }
}

/// `sip_threads > 1`: one core per SIP thread, each with its block of `rtp_ports` and its media threads
/// (`io/sip_shards.rs`, README "Signalling shards"), and its journal (`io/journal_layout.rs`). No `[cluster]`
/// (refused by the config check).
#[allow(clippy::too_many_arguments)]
async fn serve_sharded(
    cfg: Config,
    music: Vec<HoldMusic>,
    token: Option<http_token::ApiToken>,
    sockets: sip_driver::SipSockets,
    clock: Clock,
    seed: u64,
    journals: Option<Vec<(journal_file::LocalJournal, parkd::journal::LiveSet)>>,
    started: std::time::Instant,
) -> Result<(), StartError> {
    let n = usize::from(cfg.server.sip_threads);
    let (lo, hi) = (cfg.server.rtp_ports.lo, cfg.server.rtp_ports.hi);
    // Even-sized blocks of the range, the last one taking the rest.
    let size = ((hi - lo + 1) / n as u32) & !1;
    let per_shard = (cfg.server.media_threads / cfg.server.sip_threads).max(1);
    let tones = parkd::io::reload::load_tones(&cfg.lots)?;
    let mut cores = Vec::with_capacity(n);
    let mut medias = Vec::with_capacity(n);
    for k in 0..n {
        let b_lo = lo + size * k as u32;
        let b_hi = if k + 1 == n { hi } else { b_lo + size - 1 };
        let mut server = cfg.server.clone();
        server.rtp_ports = parkd::config::NumRange { lo: b_lo, hi: b_hi, ..cfg.server.rtp_ports };
        server.media_threads = per_shard;
        let plan = ShardPlan::new(b_lo as u16, b_hi as u16, server.rtp_legs_per_port, per_shard)?;
        let shard_seed = seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        medias.push(media_shards::spawn(media_shards::MediaSetup { bind_ip: server.listen.ip(), plan: plan.clone(), rtp_sender: server.rtp_sender, music: music.clone(), tones: tones.clone(), seed: shard_seed })?);
        let mut core = Core::with_plan(server, cfg.lots.clone(), TimerConfig::default(), shard_seed, &plan);
        core.seed_srtp_keys(rand::random());
        core.set_limits(&cfg.limits, &cfg.access);
        core.set_dial_allow(cfg.http.dial_patterns()?);
        cores.push(core);
        tracing::info!(shard = k, rtp_ports = %format!("{b_lo}-{b_hi}"), media_threads = per_shard, "SIP thread ready");
    }
    let (table, inboxes) = parkd::io::sip_shards::prepare(&mut cores, &cfg.lots);
    // Each shard's calls of the last run, back into that shard (its claims are taken back in the shared table
    // before shard 0 reads the socket: `sip_shards::run`), each shard with its journal writer.
    let metrics = std::sync::Arc::new(Metrics::new());
    let mut links: Vec<Option<sip_driver::JournalLink>> = (0..n).map(|_| None).collect();
    if let Some(journals) = journals {
        let stats = std::sync::Arc::new(parkd::io::journal_writer::WriterStats::default());
        metrics.set_journal(stats.clone());
        for (k, (store, live)) in journals.into_iter().enumerate().take(n) {
            restore(&mut cores[k], &live, clock.now(), started, Some(k));
            links[k] = Some(sip_driver::JournalLink::spawn_counting(store, Default::default(), stats.clone()).map_err(StartError::JournalThread)?);
        }
    }
    let shards = cores.into_iter().zip(medias).zip(links).map(|((core, media), journal)| parkd::io::sip_shards::ShardParts { core, media, journal }).collect();
    for lot in &cfg.lots {
        tracing::info!(lot = %lot.name, park_code = %lot.park_code, orbits = %format!("{}-{}", lot.orbits.name_of(0), lot.orbits.name_of(lot.orbits.len() - 1)), parking_time = lot.parking_time, "lot ready");
    }
    tracing::info!(listen = %cfg.server.listen, sip_threads = n, "parkd ready (UDP and TCP), SIP sharded by Call-ID");
    let hub = EventHub::new();
    let (client, port) = api_link::link(hub.clone(), metrics.clone());
    let http_stop = start_http(&cfg, token, client, hub, metrics).await?;
    let stop = parkd::io::sip_shards::run(shards, table, inboxes, sockets, clock, port, shutdown_signal()).await;
    stopped(stop, http_stop, cfg.server.journal);
    Ok(())
}

/// Serves the HTTP API when `[http]` has an address and a token (else drops `client`); the sender stops it.
async fn start_http(cfg: &Config, token: Option<http_token::ApiToken>, client: api_link::CoreClient, hub: EventHub, metrics: std::sync::Arc<Metrics>) -> Result<(tokio::sync::oneshot::Sender<()>, std::sync::Arc<std::sync::atomic::AtomicBool>), StartError> {
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let draining = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Some(addr), Some(token)) = (cfg.http.listen_addr()?, token) {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::BindHttp { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        log_token(&token, cfg, addr)?;
        let guard = http_guard::Guard::new(http_guard::GuardConfig {
            token: token.token,
            listener: addr,
            hosts: cfg.http.hosts.clone(),
            open_metrics: cfg.http.open_metrics,
            max_body_bytes: cfg.http.max_body_bytes,
            auth_failures_per_minute: cfg.http.auth_failures_per_minute,
        });
        let state = http::ApiState { core: client, hub, metrics, guard: std::sync::Arc::new(guard), draining: draining.clone() };
        tracing::info!(%addr, "HTTP API, events, metrics and attendant page ready");
        tokio::spawn(http::serve(listener, state, async move {
            let _ = http_stopped.await;
        }));
    } else {
        drop(client);
    }
    Ok((stop_http, draining))
}

/// The engine stopped: the HTTP API stops too.
fn stopped(stop: Stop, (stop_http, draining): (tokio::sync::oneshot::Sender<()>, std::sync::Arc<std::sync::atomic::AtomicBool>), journaled: bool) {
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop_http.send(());
    match stop {
        Stop::KeepCalls if journaled => tracing::info!("parkd stopped; its calls wait in the journal for the next start"),
        Stop::KeepCalls => tracing::info!("parkd stopped; journal = false, so its calls are gone"),
        Stop::HangUpAll => tracing::info!("parkd stopped after hanging up every call"),
    }
}

/// Says where the API token lives (never the token itself) and, for a generated one, writes the attendant
/// page's link to `<state_dir>/attendant-link`.
fn log_token(token: &http_token::ApiToken, cfg: &Config, addr: std::net::SocketAddr) -> Result<(), StartError> {
    use http_token::TokenSource;
    let file = match &token.source {
        TokenSource::Configured => {
            if token.token.len() < 16 {
                tracing::warn!("[http] token is shorter than 16 characters: use a long random one (or none, and let parkd generate it)");
            }
            let page = http_token::attendant_link(addr, "<your [http] token>");
            tracing::info!("HTTP API token: the configured [http] token / --http-token; attendant page: {page}");
            return Ok(());
        }
        TokenSource::Generated(f) => {
            tracing::info!("HTTP API token generated (first start) and kept in {}", f.display());
            f
        }
        TokenSource::Loaded(f) => {
            tracing::info!("HTTP API token read from {}", f.display());
            f
        }
    };
    let link = http_token::write_attendant_link(&cfg.server.state_dir, addr, &token.token)?;
    tracing::info!(
        "attendant page: open the link kept in {} (http://{}/#token=<the token in {}>), e.g. `cat {}`",
        link.display(),
        addr,
        file.display(),
        link.display()
    );
    Ok(())
}

/// SIGTERM and Ctrl-C (SIGINT): stop and keep every call (what systemd, `docker compose restart` and an upgrade
/// send). SIGUSR2: hang up every call, then stop (the deliberate "end everything").
async fn shutdown_signal() -> Stop {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (term, usr2) = (signal(SignalKind::terminate()), signal(SignalKind::user_defined2()));
        let (mut term, mut usr2) = match (term, usr2) {
            (Ok(t), Ok(u)) => (t, u),
            _ => {
                tracing::warn!("cannot install the SIGTERM/SIGUSR2 handlers; Ctrl-C stops parkd (keeping its calls)");
                let _ = ctrl_c.await;
                return Stop::KeepCalls;
            }
        };
        tokio::select! {
            _ = ctrl_c => Stop::KeepCalls,
            _ = term.recv() => Stop::KeepCalls,
            _ = usr2.recv() => Stop::HangUpAll,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        Stop::KeepCalls
    }
}

fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log));
    // Colours only on a terminal: a log file or the journal gets plain lines (grep, fail2ban).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if cli.log_format == "json" {
        builder.json().with_current_span(true).with_span_list(true).init();
    } else {
        builder.init();
    }
}
