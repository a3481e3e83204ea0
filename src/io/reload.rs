//! Live reload on the io side (issue 21): SIGHUP and `POST /v1/reload` read the configuration file again (with
//! the same command-line flags applied on top), load the lots' hold music, and hand the result to the core
//! ([`crate::core::Core::reload`]), which decides what changes. SIGHUP also reloads the TLS certificate (as
//! before). An invalid file, or a WAV that does not load, leaves everything as it was.

use super::media_shards::Media;
use super::tls::TlsIo;
use crate::config::{Config, LotConfig, MusicSource};
use crate::core::reload::{ReloadError, ReloadReport};
use crate::core::Core;
use crate::media::{HoldMusic, MediaCommand, MusicId};
use crate::time::Time;

/// Reads the configuration again: the file and flags parkd started with, validated (`Cli::config`).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send>;

/// Why a reload did nothing, with the HTTP status the API answers.
#[derive(Debug, thiserror::Error)]
pub enum ReloadFailure {
    /// parkd was started without `--config`: there is no file to read again.
    #[error("parkd runs without a config file (--config): nothing to reload")]
    NoFile,
    /// parkd runs several SIP threads (`sip_threads > 1`): the lots are not reloaded in place there yet.
    #[error("parkd runs with sip_threads > 1: the configuration is reloaded only by a restart (the TLS certificate is reloaded by SIGHUP)")]
    Sharded,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Refused(#[from] ReloadError),
}

impl ReloadFailure {
    pub fn http_status(&self) -> u16 {
        match self {
            ReloadFailure::NoFile | ReloadFailure::Sharded => 409,
            ReloadFailure::Invalid(_) | ReloadFailure::Refused(ReloadError::Invalid(_)) => 422,
            ReloadFailure::Refused(ReloadError::ClusterLots(_)) => 409,
        }
    }
}

/// What the core task needs to reload.
pub struct Reloader {
    pub source: Option<ConfigSource>,
    /// Several SIP threads (`sip_threads > 1`): the configuration is refused ([`ReloadFailure::Sharded`]).
    pub sharded: bool,
}

impl Reloader {
    /// Reloads at `now`: the TLS certificate (`tls`, SIGHUP only), then the configuration. Logs the outcome.
    pub fn reload(&self, core: &mut Core, media: &Media, tls: Option<&TlsIo>, now: Time, why: &str) -> Result<ReloadReport, ReloadFailure> {
        if let Some(tls) = tls {
            match tls.reload() {
                Ok(()) => tracing::info!("{why}: TLS certificate and key reloaded; new handshakes use them, open connections keep theirs"),
                Err(e) => tracing::error!(error = %e, "{why}: TLS reload failed; the previous certificate stays in use"),
            }
        }
        let r = self.reload_config(core, media, now);
        match &r {
            Ok(_) => {}
            Err(e @ (ReloadFailure::NoFile | ReloadFailure::Sharded)) => tracing::info!("{why}: {e}"),
            Err(e) => tracing::error!(error = %e, "{why}: configuration not reloaded; the running configuration stays"),
        }
        r
    }

    fn reload_config(&self, core: &mut Core, media: &Media, now: Time) -> Result<ReloadReport, ReloadFailure> {
        if self.sharded {
            return Err(ReloadFailure::Sharded);
        }
        let source = self.source.as_ref().ok_or(ReloadFailure::NoFile)?;
        let cfg = source().map_err(ReloadFailure::Invalid)?;
        // Every lot's music and tone is loaded before anything changes: a WAV that does not load refuses the reload.
        let invalid = |e: LotAudioError| ReloadFailure::Invalid(e.to_string());
        let names = cfg.lots.iter().map(|l| l.name.clone());
        let music: Vec<(String, HoldMusic)> = names.clone().zip(load_music(&cfg.lots).map_err(invalid)?).collect();
        let tones: Vec<(String, HoldMusic)> = names.zip(load_tones(&cfg.lots).map_err(invalid)?).collect();
        let report = core.reload(now, &cfg)?;
        for (id, name) in &report.music {
            if let Some((_, m)) = music.iter().find(|(n, _)| n == name) {
                media.queue(MediaCommand::SetMusic { id: MusicId(*id), music: Box::new(m.clone()) });
            }
        }
        for (id, name) in &report.tones {
            if let Some((_, t)) = tones.iter().find(|(n, _)| n == name) {
                media.queue(MediaCommand::SetTone { id: MusicId(*id), tone: Box::new(t.clone()) });
            }
        }
        media.wake();
        Ok(report)
    }
}

/// A lot's hold music or courtesy tone that does not load.
#[derive(Debug, thiserror::Error)]
#[error("lot {lot:?}: {what}: {source}")]
pub struct LotAudioError {
    pub lot: String,
    /// `music` or `courtesy_tone_file`.
    pub what: &'static str,
    #[source]
    pub source: crate::media::MusicError,
}

/// One hold-music source per lot, indexed like the lots, each encoded once; lots on the built-in music share one
/// copy. At startup and at each reload.
pub fn load_music(lots: &[LotConfig]) -> Result<Vec<HoldMusic>, LotAudioError> {
    let mut builtin: Option<HoldMusic> = None;
    lots.iter()
        .map(|lot| match &lot.music {
            MusicSource::Builtin => Ok(builtin.get_or_insert_with(HoldMusic::builtin).clone()),
            MusicSource::Wav(path) => HoldMusic::from_wav(path).map_err(|source| LotAudioError { lot: lot.name.clone(), what: "music", source }),
        })
        .collect()
}

/// One courtesy tone per lot (`courtesy_tone_file`, else the built-in beeps), indexed like the lots.
pub fn load_tones(lots: &[LotConfig]) -> Result<Vec<HoldMusic>, LotAudioError> {
    let mut builtin: Option<HoldMusic> = None;
    lots.iter()
        .map(|lot| match &lot.courtesy_tone_file {
            None => Ok(builtin.get_or_insert_with(crate::media::courtesy::builtin_tone).clone()),
            Some(path) => HoldMusic::from_wav(path).map_err(|source| LotAudioError { lot: lot.name.clone(), what: "courtesy_tone_file", source }),
        })
        .collect()
}

/// SIGHUP (never fires where signals do not exist or cannot be installed; then only the API reloads).
pub struct HupSignal {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl HupSignal {
    pub fn new() -> HupSignal {
        #[cfg(unix)]
        {
            let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            if let Err(e) = &hup {
                tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload with POST /v1/reload");
            }
            HupSignal { hup: hup.ok() }
        }
        #[cfg(not(unix))]
        HupSignal {}
    }

    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.hup.as_mut() {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

impl Default for HupSignal {
    fn default() -> Self {
        HupSignal::new()
    }
}
