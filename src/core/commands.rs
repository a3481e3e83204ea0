//! Commands from an application (the HTTP API, an attendant console): TAPI's `ParkDirect` / `ParkIndirect`,
//! `Unpark` and a hang-up, entering the sans-IO core as inputs like SIP messages do.
//!
//! [`Core::handle_command`] is synchronous: it validates, starts the work and answers at once. What takes
//! time (an unpark ringing its destination) reports its outcome later as [`ParkEvent`]s
//! (`recall_started` / `recall_answered` / `recall_failed` with `target: "api_unpark"`).

use super::events::{ParkHow, RecallTarget};
use super::ids::CallRef;
use crate::ids::{CallId, OrbitNumber};
use super::originate::{OriginateError, OriginateSpec};
use super::{Core, ParkEvent};
use crate::park::lot::OrbitIdx;
use crate::time::Time;
use std::time::Duration;

/// What an application asks the core to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Park a call parkd is part of (bridged after a retrieve or recall). `call_id` names the leg on the
    /// application's side: that leg is released with BYE and the *other* party is parked, in `orbit`
    /// (ParkDirect) or in a free orbit of `lot` (ParkIndirect; default: the lot the call came from).
    ParkCall { call_id: CallId, orbit: Option<OrbitNumber>, lot: Option<String> },
    /// Call `to` and hand it the call parked in `orbit`; on no answer the call stays parked.
    Unpark { orbit: OrbitNumber, to: String },
    /// End the call parked in `orbit` politely (BYE with a Reason).
    Hangup { orbit: OrbitNumber },
    /// End every call parkd holds, parked and bridged, politely (BYE with a Reason): the deliberate "hang up
    /// everything" (HTTP `POST /v1/calls/hangup-all`, SIGUSR2). A restart never does it (issue 17).
    HangupAll,
    /// Apply a reloaded configuration (SIGHUP, `POST /v1/reload`; issue 21): see [`super::reload`].
    Reload(super::reload::ReloadConfig),
}

/// What a command achieved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandOutcome {
    /// The call is parked in `orbit` of `lot`; `released` is the Call-ID of the leg parkd hung up.
    Parked { lot: String, orbit: OrbitNumber, how: ParkHow, released: CallId },
    /// parkd is calling `to`; the outcome comes as an event. It rings at most `ring_secs`.
    Unparking { lot: String, orbit: OrbitNumber, to: String, ring_secs: u64 },
    /// The parked call was ended.
    HungUp { lot: String, orbit: OrbitNumber, call_id: CallId },
    /// Every call was ended: `parked` calls in orbits and `bridged` calls (each of their legs got a BYE).
    HungUpAll { parked: usize, bridged: usize },
    /// The configuration was reloaded: what changed.
    Reloaded(super::reload::ReloadReport),
}

/// Why a command was refused. The API maps each to an HTTP status with [`CommandError::http_status`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no orbit {0} in any lot")]
    UnknownOrbit(String),
    #[error("no lot named {0:?}")]
    UnknownLot(String),
    #[error("orbit {0} is empty")]
    OrbitEmpty(String),
    #[error("no call with Call-ID {0:?} that parkd could park (it must be bridged through parkd)")]
    UnknownCall(String),
    #[error("orbit {0} is occupied")]
    OrbitOccupied(String),
    #[error("lot {0:?} is full")]
    LotFull(String),
    #[error("orbit {0} is already ringing someone (recall or unpark under way)")]
    Ringing(String),
    #[error("{0:?} is not a SIP URI")]
    BadUri(String),
    #[error("cannot call the destination: {0}")]
    Originate(#[from] OriginateError),
    /// Toll-fraud guard: the destination is not one parkd may be made to dial (see bridging/dial_allow.rs).
    #[error("dialing {to} is not allowed: {reason}")]
    DialNotAllowed { to: String, reason: String },
    /// In a cluster, Redis did not answer the orbit's claim: nothing was parked (try again).
    #[error("the cluster cannot allocate an orbit now (Redis does not answer)")]
    ClusterUnavailable,
    /// The capacity guard refuses new parks now (media threads out of headroom); try again in `retry_after` s.
    #[error("parkd refuses new parks now to keep hold music clean for the calls parked (media capacity); retry in {retry_after} s")]
    MediaCapacity { retry_after: u32 },
    /// [`Core::handle_command`] on a command whose answer comes later ([`Core::submit_command`]).
    #[error("the answer comes later (in a cluster, after the orbit's claim)")]
    Deferred,
    /// A reload was refused; the running configuration stays.
    #[error("{0}")]
    Reload(#[from] super::reload::ReloadError),
    /// A bare orbit number that several lots (tenants) have: name the lot (`lot:701`) or the domain (`701@a.example`).
    #[error("orbit {number} is in several lots ({lots}): write it as <lot>:{number} or {number}@<domain>")]
    AmbiguousOrbit { number: String, lots: String },
}

impl CommandError {
    /// The HTTP status an API answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            CommandError::UnknownOrbit(_) | CommandError::UnknownLot(_) | CommandError::OrbitEmpty(_) | CommandError::UnknownCall(_) => 404,
            CommandError::OrbitOccupied(_) | CommandError::Ringing(_) | CommandError::AmbiguousOrbit { .. } => 409,
            CommandError::Reload(_) => 422,
            CommandError::BadUri(_) => 400,
            CommandError::DialNotAllowed { .. } => 403,
            CommandError::LotFull(_) | CommandError::Originate(_) | CommandError::ClusterUnavailable | CommandError::MediaCapacity { .. } | CommandError::Deferred => 503,
        }
    }
}

/// What a [`Command::ParkCall`] names, found before it parks (in a cluster, kept while the orbit is claimed).
#[derive(Debug)]
pub(super) struct ParkCallTarget {
    pub(super) call_id: String,
    /// The orbit the application asked for, as it wrote it.
    pub(super) orbit: Option<String>,
    pub(super) release_leg: super::ids::LegId,
    pub(super) call: CallRef,
    pub(super) keep: super::ids::LegId,
    pub(super) lot: usize,
    pub(super) wanted: Option<OrbitIdx>,
    pub(super) parker: Option<crate::sip::NameAddr>,
}

/// The answer to a command.
pub type CommandResult = Result<CommandOutcome, CommandError>;

/// An application's name for one command, echoed by [`crate::core::Output::CommandDone`] when the answer comes
/// later ([`Core::submit_command`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommandTicket(pub u64);

impl Core {
    /// Runs one application command at `now` and answers it now (`Some`) or later (`None`): a re-park in a
    /// cluster waits for its orbit's claim and is answered by [`crate::core::Output::CommandDone`] with `ticket`.
    /// Drain [`Core::poll_output`] afterwards, as after any input.
    pub fn submit_command(&mut self, now: Time, ticket: CommandTicket, cmd: Command) -> Option<CommandResult> {
        let result = match cmd {
            Command::ParkCall { call_id, orbit, lot } => self.cmd_park_call(now, ticket, &call_id, orbit.as_deref(), lot.as_deref()),
            Command::Unpark { orbit, to } => Some(self.cmd_unpark(now, &orbit, &to)),
            Command::Hangup { orbit } => Some(self.cmd_hangup(now, &orbit)),
            Command::HangupAll => Some(Ok(self.cmd_hangup_all(now))),
            Command::Reload(cfg) => Some(self.reload(now, &cfg.0).map(CommandOutcome::Reloaded).map_err(CommandError::from)),
        };
        self.settle(now);
        result
    }

    /// [`Core::submit_command`] for a caller that takes only answers given now (tests, the simulator, SIGUSR2's
    /// hang-up): a deferred answer is [`CommandError::Deferred`] here (and still comes as an output).
    pub fn handle_command(&mut self, now: Time, cmd: Command) -> CommandResult {
        self.submit_command(now, CommandTicket(0), cmd).unwrap_or(Err(CommandError::Deferred))
    }

    /// The parked call in orbit `name`, with its lot and orbit index.
    fn parked_in(&self, name: &str) -> Result<(usize, OrbitIdx, CallRef), CommandError> {
        let (lot, idx) = self.resolve_orbit(name)?;
        let call = self.parking.parked_in(lot, idx).ok_or_else(|| CommandError::OrbitEmpty(name.to_string()))?;
        Ok((lot, idx, call))
    }

    fn cmd_hangup(&mut self, now: Time, orbit: &str) -> CommandResult {
        let (lot, idx, call) = self.parked_in(orbit)?;
        self.stop_recall(now, call);
        self.touch(call);
        let Some(c) = self.parking.remove(call) else { return Err(CommandError::OrbitEmpty(orbit.to_string())) };
        self.orbit_changed(now, lot, idx);
        let call_id = self.dialogs.get(c.parked).map(|l| l.dialog.call_id.clone()).unwrap_or_default();
        let lot_name = self.parking.lot_name(lot);
        tracing::info!(orbit = %c.orbit_name, "parked call ended by an application");
        let dwell_ms = super::events::dwell_ms(c.parked_at, now);
        self.ep.emit(ParkEvent::HungUp { lot: lot_name.clone(), orbit: c.orbit_name.clone(), call_id: call_id.clone(), dwell_ms });
        self.hangup_leg_with_reason(now, c.parked, Some("SIP;cause=200;text=\"Call ended by the attendant\"".into()));
        Ok(CommandOutcome::HungUp { lot: lot_name, orbit: c.orbit_name, call_id })
    }

    fn cmd_hangup_all(&mut self, now: Time) -> CommandOutcome {
        let orbits: Vec<OrbitNumber> = self.parking.iter().map(|c| c.orbit_name.clone()).collect();
        let parked = orbits.iter().filter(|o| self.cmd_hangup(now, o).is_ok()).count();
        let bridges: Vec<CallRef> = self.bridging.iter().map(|b| b.id).collect();
        for call in &bridges {
            self.touch(*call);
            let Some(b) = self.bridging.remove(*call) else { continue };
            let call_id = self.dialogs.get(b.parked).map(|l| l.dialog.call_id.clone()).unwrap_or_default();
            tracing::info!(orbit = %b.orbit_name, "bridged call ended by an application");
            self.ep.emit(ParkEvent::Ended { orbit: b.orbit_name.clone(), call_id, by: "api".into() });
            for leg in [b.parked, b.other] {
                self.hangup_leg_with_reason(now, leg, Some("SIP;cause=200;text=\"Call ended by the attendant\"".into()));
            }
        }
        tracing::warn!(parked, bridged = bridges.len(), "every call hung up on purpose");
        CommandOutcome::HungUpAll { parked, bridged: bridges.len() }
    }

    fn cmd_unpark(&mut self, now: Time, orbit: &str, to: &str) -> CommandResult {
        let (lot, _, call) = self.parked_in(orbit)?;
        let uri = crate::sip::parse_uri(to.trim()).map_err(|_| CommandError::BadUri(to.to_string()))?;
        let allowed = self.dial_check(call, lot, &uri).inspect_err(|e| tracing::warn!(%orbit, "unpark refused: {e}"))?;
        let outcome = self.unpark_to(now, call, lot, orbit, &uri, RecallTarget::ApiUnpark)?;
        tracing::info!(%orbit, ?allowed, "unpark destination allowed");
        Ok(outcome)
    }

    /// Calls `uri` for the call parked in `orbit` (of `lot`) and hands it the call on answer; on no answer the call
    /// stays parked ([`Core::unpark_failed`]). `target` says who asked: an application or the caller's key.
    pub(super) fn unpark_to(&mut self, now: Time, call: CallRef, lot: usize, orbit: &str, uri: &crate::sip::Uri, target: RecallTarget) -> CommandResult {
        if self.bridging.ringing(call).is_some() {
            return Err(CommandError::Ringing(orbit.to_string()));
        }
        let Some(cfg) = self.parking.cfg(lot) else { return Err(CommandError::OrbitEmpty(orbit.to_string())) };
        let ring_secs = cfg.recall_ring_time.max(1);
        let lot_name = cfg.name.clone();
        let who = self.parked_identity(call).map(|p| p.label()).unwrap_or_else(|| "caller".into());
        let spec = OriginateSpec {
            to: uri.without_headers(),
            from_display: who,
            headers: vec![(super::invite::PARK_LOT_HEADER, lot_name.clone())],
            ring: Duration::from_secs(ring_secs),
            target,
        };
        self.originate(now, call, spec)?;
        let to = uri.without_headers().to_string();
        let round = self.parking.get(call).map(|c| c.rounds).unwrap_or(0);
        self.ep.emit(ParkEvent::RecallStarted { orbit: orbit.into(), to: to.clone(), target, round });
        Ok(CommandOutcome::Unparking { lot: lot_name, orbit: orbit.into(), to, ring_secs })
    }

    /// An API unpark (or a key's call, `target`) was not answered (or refused): the call stays parked; the
    /// outcome is an event. A recall that fell due while it rang is started now.
    pub(super) fn unpark_failed(&mut self, now: Time, call: CallRef, target: RecallTarget, status: u16) {
        self.touch(call);
        let Some(c) = self.parking.get(call) else { return };
        let (orbit, lot, o, recall_at) = (c.orbit_name.clone(), c.lot, c.orbit, c.recall_at);
        self.orbit_changed(now, lot, o);
        if let Some(at) = recall_at.filter(|t| *t <= now) {
            // The recall timer fired while the unpark rang and was skipped: fire it again now.
            self.parking.arm(at, call, super::parking::CallTimer::Recall);
        }
        tracing::info!(%orbit, status, "unpark not answered; the call stays parked");
        self.ep.emit(ParkEvent::RecallFailed { orbit, status, target });
    }

    fn cmd_park_call(&mut self, now: Time, ticket: CommandTicket, call_id: &str, orbit: Option<&str>, lot: Option<&str>) -> Option<CommandResult> {
        match self.park_call_target(call_id, orbit, lot) {
            Ok(_) if !self.capacity_admits(now) => Some(Err(CommandError::MediaCapacity { retry_after: self.capacity_retry_after() })),
            Ok(t) if self.clustered() => {
                self.api_park_via_cluster(now, ticket, t);
                None
            }
            Ok(t) => Some(self.park_call_into(now, t, None)),
            Err(e) => Some(Err(e)),
        }
    }

    /// What a [`Command::ParkCall`] names: the leg to release, the call and leg to park, where, and who parks.
    fn park_call_target(&self, call_id: &str, orbit: Option<&str>, lot: Option<&str>) -> Result<ParkCallTarget, CommandError> {
        let found = self
            .dialogs
            .with_call_id(call_id)
            .find(|l| self.bridging.get(l.call).is_some())
            .map(|l| (l.id, l.call))
            .ok_or_else(|| CommandError::UnknownCall(call_id.to_string()))?;
        let (release_leg, call) = found;
        let (lot_idx, wanted) = match (orbit, lot) {
            (Some(o), _) => {
                let (l, i) = self.resolve_orbit(o)?;
                (l, Some(i))
            }
            (None, Some(name)) => {
                let l = self.parking.lot_index(name).ok_or_else(|| CommandError::UnknownLot(name.to_string()))?;
                (l, None)
            }
            (None, None) => (self.bridging.get(call).map(|b| b.lot).unwrap_or(0), None),
        };
        let Some(keep) = self.bridging.get(call).map(|b| b.across(release_leg)) else {
            return Err(CommandError::UnknownCall(call_id.to_string()));
        };
        let parker = self.dialogs.remote_identity(release_leg);
        Ok(ParkCallTarget { call_id: call_id.to_string(), orbit: orbit.map(str::to_string), release_leg, call, keep, lot: lot_idx, wanted, parker })
    }

    /// Parks `t.keep` into `t.wanted` (or a free orbit of `t.lot`; in a cluster, `granted`, the orbit claimed)
    /// and releases `t.release_leg`.
    pub(super) fn park_call_into(&mut self, now: Time, t: ParkCallTarget, granted: Option<OrbitIdx>) -> CommandResult {
        let ParkCallTarget { call_id, orbit, release_leg, call, keep, lot, wanted, parker } = t;
        let parked = match granted {
            Some(o) => self.repark_local(now, call, keep, lot, Some(o), parker),
            None => self.repark_bridged(now, call, keep, lot, wanted, parker),
        };
        let orbit_name = parked.map_err(|(status, reason)| match (status, reason) {
            (486, "Busy Here") => CommandError::OrbitOccupied(orbit.unwrap_or_default()),
            (486, _) => CommandError::LotFull(self.parking.lot_name(lot)),
            _ => CommandError::UnknownCall(call_id.clone()),
        })?;
        let released = self.dialogs.get(release_leg).map(|l| l.dialog.call_id.clone()).unwrap_or_default();
        self.hangup_leg_with_reason(now, release_leg, Some("SIP;cause=200;text=\"Call parked\"".into()));
        let how = if wanted.is_some() { ParkHow::Directed } else { ParkHow::Indirect };
        Ok(CommandOutcome::Parked { lot: self.parking.lot_name(lot), orbit: orbit_name, how, released })
    }
}
