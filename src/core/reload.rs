//! Live reload (issue 21): the io layer reads the configuration file again (SIGHUP, `POST /v1/reload`) and hands
//! the core the result as plain data ([`super::Command::Reload`]); the core decides what changes.
//!
//! * Lots are added, changed and removed in place by the parking room ([`super::parking::Parking::reload`]):
//!   every lot keeps its index, so parked calls, bridges, BLF subscriptions and hold music (`MusicId` = lot
//!   index) stay attached. A removed lot keeps its calls until they leave and takes no new park.
//! * An orbit range that changed re-lays out the lot's orbits: a call keeps its number where it still exists,
//!   and one whose number left the range stays in a *retired* orbit, shown with its old number (API
//!   `"retired": true`, BLF as before) and retrievable by it, until it leaves. The occupied orbits' admission
//!   holds, the subscriptions (by number) and the journal records follow; a subscription whose orbit number left
//!   the configuration ends with `terminated;reason=noresource`.
//! * What was bound or spawned at startup (listen addresses, RTP ports, state_dir, `[limits]`, …) is reported as
//!   needing a restart ([`crate::config::reload::needs_restart`]) and left as it was.
//! * An invalid configuration is refused whole with the reason; the running one stays.

use super::blf::Watched;
use super::{Core, ParkEvent};
use crate::config::Config;
use crate::park::lot::{Dialed, OrbitIdx};
use crate::time::Time;

/// A reloaded configuration as the core receives it (plain data; the io layer read and parsed the file).
#[derive(Clone, Debug)]
pub struct ReloadConfig(pub Box<Config>);

impl PartialEq for ReloadConfig {
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}
impl Eq for ReloadConfig {}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    pub lots_added: Vec<String>,
    pub lots_changed: Vec<String>,
    pub lots_removed: Vec<String>,
    /// Orbits that left their lot's range while a call was in them, as `lot/number`.
    pub orbits_retired: Vec<String>,
    /// Changed settings that take effect only at the next start (left as they were).
    pub needs_restart: Vec<String>,
    /// Lots whose hold music the media threads must (re)load: `(music id = lot index, lot name)`: added lots, lots
    /// whose `music` changed, and every lot playing a WAV (re-read at each reload).
    #[serde(skip)]
    pub music: Vec<(u16, String)>,
    /// Every lot in use after the reload, `(tone id = lot index, lot name)`: the media threads get each one's
    /// courtesy tone again (`courtesy_tone_file` re-read, or the built-in beeps).
    #[serde(skip)]
    pub tones: Vec<(u16, String)>,
}

/// Why a reload was refused (the running configuration stays).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("in a cluster, lots, orbit ranges and domains change only with a restart of every node (lot {0:?})")]
    ClusterLots(String),
}

impl Core {
    /// Remembers the configuration parkd started with, the reference a reload is compared against.
    pub fn set_running_config(&mut self, cfg: Config) {
        self.running = Some(Box::new(cfg));
    }

    /// Applies a reloaded configuration at `now` (see the module doc). Drain [`Core::poll_output`] afterwards.
    pub fn reload(&mut self, now: Time, cfg: &Config) -> Result<ReloadReport, ReloadError> {
        cfg.validate().map_err(|e| ReloadError::Invalid(e.to_string()))?;
        if self.clustered() {
            // The cluster's key layout and views name each lot and its range as configured at startup.
            for lot in &cfg.lots {
                let same = self.parking.lot_index(&lot.name).and_then(|i| self.parking.cfg(i)).is_some_and(|c| c.orbits == lot.orbits && c.domains == lot.domains);
                if !same {
                    return Err(ReloadError::ClusterLots(lot.name.clone()));
                }
            }
            if let Some(gone) = self.parking.lots().find(|l| !l.removed && !cfg.lots.iter().any(|c| c.name == l.name())) {
                return Err(ReloadError::ClusterLots(gone.name().to_string()));
            }
        }
        let needs_restart = self.running.as_deref().map(|r| crate::config::reload::needs_restart(r, cfg)).unwrap_or_default();
        // What each subscription of a lot watches, by number, before the orbits move.
        let watched: Vec<(super::blf::SubId, usize, String)> = (0..self.parking.lots().count())
            .flat_map(|lot| self.blf.of_lot(lot).into_iter().map(move |(id, w)| (id, lot, w)))
            .filter_map(|(id, lot, w)| match w {
                Watched::Orbit(i) => Some((id, lot, self.parking.orbit_name(lot, i).to_string())),
                Watched::Lot => None,
            })
            .collect();
        let music_before: Vec<_> = self.parking.lots().map(|l| l.cfg.music.clone()).collect();
        let (diff, moves) = self.parking.reload(cfg.lots.clone());
        // Holds, journal records and watchers follow the orbits that moved.
        let holds: Vec<(usize, OrbitIdx, OrbitIdx)> = moves.iter().map(|(lot, m)| (*lot, m.from, m.to)).collect();
        self.admission.move_orbit_holds(&holds);
        let mut retired = Vec::new();
        for (lot, m) in &moves {
            self.touch(m.who);
            if self.parking.lot(*lot).is_some_and(|l| l.is_retired(m.to)) {
                retired.push(format!("{}/{}", self.parking.lot_name(*lot), self.parking.orbit_name(*lot, m.to)));
            }
        }
        let orbits = super::orbit_view::Orbits { parking: &self.parking, dialogs: &self.dialogs, bridging: &self.bridging, remote: self.cluster.as_ref().map(|c| c.room.view()) };
        for (id, lot, name) in watched {
            let to = match self.parking.lot(lot).and_then(|l| l.dialed(&name)) {
                Some(Dialed::Orbit(i)) => Some(i),
                _ => None,
            };
            self.blf.rewatch(&mut self.ep, now, id, to, &orbits);
        }
        // Every subscription of a lot that changed hears the state as it is now (its range or display may differ).
        for lot in diff.changed_idx.iter().chain(&diff.added_idx) {
            for (id, _) in self.blf.of_lot(*lot) {
                self.blf.refresh(&mut self.ep, now, id, &orbits);
            }
        }
        if let Ok(patterns) = cfg.http.dial_patterns() {
            self.set_dial_allow(patterns);
        }
        // Session timers (RFC 4028): new sessions follow the new policy; running ones keep what they negotiated.
        let st = &cfg.server;
        self.stimer = super::dialogs::timer::TimerPolicy { enabled: st.session_timers, min_se: st.session_min_se, expires: st.session_expires };
        // Music to (re)load: a lot added, a lot whose music changed, and every configured lot playing a WAV (the
        // file may have been replaced under the same name).
        let music = (0..self.parking.lots().count())
            .filter(|i| {
                let Some(lot) = self.parking.lot(*i).filter(|l| !l.removed) else { return false };
                diff.added_idx.contains(i) || music_before.get(*i) != Some(&lot.cfg.music) || matches!(lot.cfg.music, crate::config::MusicSource::Wav(_))
            })
            .filter_map(|i| Some((u16::try_from(i).ok()?, self.parking.lot_name(i))))
            .collect();
        let tones = (0..self.parking.lots().count())
            .filter(|i| self.parking.lot(*i).is_some_and(|l| !l.removed))
            .filter_map(|i| Some((u16::try_from(i).ok()?, self.parking.lot_name(i))))
            .collect();
        let report = ReloadReport {
            lots_added: diff.added,
            lots_changed: diff.changed,
            lots_removed: diff.removed,
            orbits_retired: retired,
            needs_restart,
            music,
            tones,
        };
        if let Some(running) = self.running.as_deref_mut() {
            running.lots = cfg.lots.clone();
            running.http.dial_allow = cfg.http.dial_allow.clone();
            running.server.session_timers = cfg.server.session_timers;
            running.server.session_min_se = cfg.server.session_min_se;
            running.server.session_expires = cfg.server.session_expires;
        }
        tracing::info!(
            added = ?report.lots_added,
            changed = ?report.lots_changed,
            removed = ?report.lots_removed,
            orbits_retired = ?report.orbits_retired,
            needs_restart = ?report.needs_restart,
            "configuration reloaded"
        );
        for key in &report.needs_restart {
            tracing::warn!(%key, "reload: this setting changed but takes effect only at the next start; the running value stays");
        }
        self.ep.emit(ParkEvent::ConfigReloaded {
            lots_added: report.lots_added.clone(),
            lots_changed: report.lots_changed.clone(),
            lots_removed: report.lots_removed.clone(),
            orbits_retired: report.orbits_retired.clone(),
            needs_restart: report.needs_restart.clone(),
        });
        self.settle(now);
        Ok(report)
    }
}
