//! The admission room: who may make parkd do or hold something, per source address (issue 15, SIP side), and
//! the other gates of a request: the lots' access lists ([`acl`]), Digest authentication ([`digest`]: the nonce
//! key and the check of credentials) and drain mode.
//!
//! It owns per-source state as plain data (`sources`): two token buckets (new dialogs, other out-of-dialog
//! requests), the counts of what the source holds (calls answered but not ACKed, orbits its parked calls
//! occupy, BLF subscriptions), and how often it was refused this second. The core asks it before acting:
//!
//! * [`Admission::screen_user_agent`]: a scanner's `User-Agent` (`[access] drop_user_agents`) → dropped
//!   unanswered, so it learns nothing, not even that a SIP server is there.
//! * [`Admission::admit_new_dialog`] (INVITE / SUBSCRIBE without To tag), [`Admission::admit_out_of_dialog`]
//!   (OPTIONS, REGISTER, MESSAGE, requests naming no dialog), [`Admission::admit_in_dialog`] (requests in a
//!   dialog parkd holds with the source), [`Admission::admit_park`],
//!   [`Admission::admit_subscription`]: a [`Verdict`].
//! * [`Admission::refused`]: a refusal the core answered itself (a 403 from a lot's source lists, a failed
//!   digest), counted and logged the same way.
//! * [`Admission::hold`] / [`Admission::release`] / [`Admission::set_orbit_holder`]: what a source holds, as
//!   the core creates and ends it (idempotent: releasing twice or releasing what was never held is a no-op).
//!
//! A source over a limit gets `503 Service Unavailable` with `Retry-After`; after `refusals_per_second` such
//! 503s in one second it gets silence (its requests are dropped unanswered) until the next second. Every
//! refusal is counted by [`Reason`] (exported as `parkd_sip_refusals_total{reason}`) and logged as one line
//! a fail2ban filter matches, `refused sip source=<ip> reason=<reason>` (see `deploy/fail2ban/`): at most
//! [`LOG_LINES_PER_SECOND`] per source and second, the rest summarised in a line that adds `suppressed=<n>`.
//!
//! Memory is bounded: at most `tracked_sources` entries; idle entries are forgotten as traffic goes on
//! (`sources::SourceTable`), and holds are bounded by what they stand for (legs, orbits, subscriptions).
//! Time comes in only as `now`.

pub mod acl;
mod bucket;
pub mod capacity;
pub mod digest;
mod sources;

pub use acl::{check, Action, Forbidden};
pub use digest::{Challenge, NonceKey};

use super::blf::SubId;
use super::ids::LegId;
use crate::config::{AccessConfig, LimitsConfig, SourceLimits};
use crate::park::lot::OrbitIdx;
use crate::time::Time;
use bucket::{Rate, Window};
use ipnet::IpNet;
use sources::{Source, SourceKey, SourceTable};
use std::collections::HashMap;
use std::net::IpAddr;

/// Refusal log lines written per source and second; further refusals are summarised.
pub const LOG_LINES_PER_SECOND: u32 = 3;

/// Why a request was refused: the `reason` label of `parkd_sip_refusals_total` and of the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Over `new_dialogs_per_second` (INVITE / SUBSCRIBE starting a dialog).
    RateNewDialogs,
    /// Over `out_of_dialog_per_second` (OPTIONS, REGISTER, MESSAGE, requests naming no dialog, a CANCEL
    /// matching nothing, malformed requests that would be answered 400...).
    RateOutOfDialog,
    /// Over `in_dialog_per_second` (requests inside dialogs parkd holds with the source).
    RateInDialog,
    /// `unconfirmed_per_source` calls answered 2xx and not yet ACKed.
    Unconfirmed,
    /// `parked_per_source` orbits held by this source's parked calls.
    ParkedPerSource,
    /// `subscriptions_per_source` BLF subscriptions.
    Subscriptions,
    /// `User-Agent` in `[access] drop_user_agents` (dropped unanswered).
    ScannerUserAgent,
    /// Digest credentials that did not verify (unknown user or wrong password; answered 401).
    AuthFailed,
    /// Not allowed from this address by a lot's `allow_*` lists or `trusted_only` (answered 403).
    Acl,
    /// `tracked_sources` entries all hold something: a new source cannot be tracked (dropped).
    SourcesFull,
    /// A new park while the capacity guard refuses (answered 503; [`capacity`]). Not the source's fault: counted
    /// but never written as a `refused sip source=` line (fail2ban must not ban the PBX for parkd's load).
    MediaCapacity,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::RateNewDialogs,
        Reason::RateOutOfDialog,
        Reason::RateInDialog,
        Reason::Unconfirmed,
        Reason::ParkedPerSource,
        Reason::Subscriptions,
        Reason::ScannerUserAgent,
        Reason::AuthFailed,
        Reason::Acl,
        Reason::SourcesFull,
        Reason::MediaCapacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateNewDialogs => "rate_new_dialogs",
            Reason::RateOutOfDialog => "rate_out_of_dialog",
            Reason::RateInDialog => "rate_in_dialog",
            Reason::Unconfirmed => "unconfirmed",
            Reason::ParkedPerSource => "parked_per_source",
            Reason::Subscriptions => "subscriptions",
            Reason::ScannerUserAgent => "scanner_user_agent",
            Reason::AuthFailed => "auth_failed",
            Reason::Acl => "acl",
            Reason::SourcesFull => "sources_full",
            Reason::MediaCapacity => "media_capacity",
        }
    }

    fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Refusals so far, by reason (monotonic).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounts([u64; Reason::ALL.len()]);

impl RefusalCounts {
    pub fn get(&self, r: Reason) -> u64 {
        self.0[r.index()]
    }
    /// Every reason with its count (zeros included, so a dashboard's rate starts from 0).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL.iter().map(|r| (r.as_str(), self.get(*r)))
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// What the core does with a request the room looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Admit,
    /// Answer `503 Service Unavailable` with `Retry-After: retry_after`.
    Refuse { retry_after: u32 },
    /// Answer nothing (and keep no transaction for it).
    Drop,
}

/// Something a source holds while it lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hold {
    /// A leg answered 2xx whose ACK has not come.
    Unconfirmed(LegId),
    /// An orbit (lot, orbit) occupied by a call parked from the source.
    Orbit(usize, OrbitIdx),
    /// A BLF subscription.
    Subscription(SubId),
}

/// The limits of one class of sources, in the room's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Class {
    new_dialogs: Rate,
    out_of_dialog: Rate,
    in_dialog: Rate,
    /// 0 = no limit.
    unconfirmed: u32,
    parked: u32,
    subscriptions: u32,
}

impl Class {
    fn from(l: &SourceLimits) -> Class {
        Class {
            new_dialogs: Rate::new(l.new_dialogs_per_second, l.new_dialogs_burst),
            out_of_dialog: Rate::new(l.out_of_dialog_per_second, l.out_of_dialog_burst),
            in_dialog: Rate::new(l.in_dialog_per_second, l.in_dialog_burst),
            unconfirmed: l.unconfirmed_per_source,
            parked: l.parked_per_source,
            subscriptions: l.subscriptions_per_source,
        }
    }
}

fn over(count: u32, limit: u32) -> bool {
    limit != 0 && count >= limit
}

/// The admission room.
#[derive(Debug)]
pub struct Admission {
    untrusted: Class,
    trusted: Class,
    retry_after: u32,
    refusals_per_second: u32,
    trusted_nets: Vec<IpNet>,
    access: AccessConfig,
    sources: SourceTable,
    holds: HashMap<Hold, SourceKey>,
    counts: RefusalCounts,
    /// Log lines about sources the table could not track, this second (one budget for all of them).
    untracked_logged: Window,
    /// Key of parkd's stateless Digest nonces (drawn from the core's RNG at start).
    nonce_key: NonceKey,
    /// Drain mode: new parks are refused with 503 (see `proxy.rs`).
    draining: bool,
    /// The capacity guard: new parks refused while the media threads lack headroom ([`capacity`]).
    pub capacity: capacity::CapacityGuard,
}

impl Default for Admission {
    /// The defaults of `[limits]` and `[access]`, no trusted proxies.
    fn default() -> Self {
        Admission::new(&LimitsConfig::default(), &AccessConfig::default(), &[])
    }
}

impl Admission {
    pub fn new(limits: &LimitsConfig, access: &AccessConfig, trusted: &[IpNet]) -> Admission {
        Admission {
            untrusted: Class::from(&limits.untrusted()),
            trusted: Class::from(&limits.trusted()),
            retry_after: limits.retry_after,
            refusals_per_second: limits.refusals_per_second,
            trusted_nets: trusted.to_vec(),
            access: access.clone(),
            sources: SourceTable::new(limits.tracked_sources),
            holds: HashMap::new(),
            counts: RefusalCounts::default(),
            untracked_logged: Window::default(),
            nonce_key: NonceKey([0; 16]),
            draining: false,
            capacity: capacity::CapacityGuard::new(capacity::GuardConfig::from(limits)),
        }
    }

    /// Applies new `[limits]` and `[access]`: what the room tracked so far is forgotten; the nonce key and
    /// drain mode stay.
    pub fn set_limits(&mut self, limits: &LimitsConfig, access: &AccessConfig) {
        let trusted = std::mem::take(&mut self.trusted_nets);
        let (nonce_key, draining) = (self.nonce_key.clone(), self.draining);
        *self = Admission { nonce_key, draining, ..Admission::new(limits, access, &trusted) };
    }

    /// Sets the key of parkd's Digest nonces (the core draws it from its RNG at start).
    pub fn set_nonce_key(&mut self, key: NonceKey) {
        self.nonce_key = key;
    }

    /// Checks `req`'s Digest credentials against `cfg` (a lot's `[lot.auth]`). `Ok` when they verify;
    /// otherwise the challenge the `401` carries. Credentials that do not verify (a wrong password or an
    /// unknown user, not merely a stale nonce) count as an `auth_failed` refusal of `ip`.
    pub fn digest(&mut self, now: Time, ip: IpAddr, req: &crate::sip::Request, cfg: &crate::config::AuthConfig, rng: &mut impl rand::Rng) -> Result<(), Challenge> {
        digest::check(&self.nonce_key, now, req, cfg, rng).map_err(|(challenge, failed)| {
            if failed {
                self.refused(now, ip, Reason::AuthFailed);
            }
            challenge
        })
    }

    /// Turns drain mode on or off (new parks refused with 503 + Retry-After; see `proxy.rs`).
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether `ip` is one of the `trusted_proxies` (it then gets `[limits.trusted]`).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_nets.iter().any(|n| n.contains(&ip))
    }

    /// The P-Asserted-Identity of `req` (RFC 3325 §9.1) when it comes from a trusted proxy; None otherwise
    /// (from an untrusted source the header is ignored, RFC 3325 §5).
    pub fn asserted_identity(&self, from: IpAddr, req: &crate::sip::Request) -> Option<crate::sip::NameAddr> {
        if !self.is_trusted(from) {
            if req.common.header("P-Asserted-Identity").is_some() {
                tracing::debug!(%from, "P-Asserted-Identity from an untrusted source ignored");
            }
            return None;
        }
        let value = req.common.header("P-Asserted-Identity")?;
        let mut id = crate::sip::parse_name_addr(value).ok()?;
        id.params = Default::default();
        Some(id)
    }

    /// Counts a refusal that is no source's doing (`media_capacity`): no per-source state, no log line.
    pub fn count(&mut self, reason: Reason) {
        self.counts.0[reason.index()] += 1;
    }

    /// Refusals so far by reason.
    pub fn refusals(&self) -> RefusalCounts {
        self.counts
    }

    /// Things held (unconfirmed calls, occupied orbits, subscriptions) across all sources: zero when parkd
    /// holds nothing.
    pub fn holds(&self) -> usize {
        self.holds.len()
    }

    /// Sources tracked right now (bounded by `tracked_sources`).
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    fn key(&self, ip: IpAddr) -> SourceKey {
        SourceKey::new(ip, self.is_trusted(ip))
    }

    fn class(&self, key: &SourceKey) -> Class {
        if key.trusted {
            self.trusted
        } else {
            self.untrusted
        }
    }

    /// The entry of `ip` (created if needed, idle entries swept on the way), marked as seen at `now`.
    fn touch(&mut self, now: Time, ip: IpAddr) -> Option<&mut Source> {
        self.sweep(now);
        let key = self.key(ip);
        let class = self.class(&key);
        let entry = self.sources.get_or_insert(key, || Source::fresh(now, ip, class.new_dialogs, class.out_of_dialog, class.in_dialog))?;
        entry.last_seen = entry.last_seen.max(now);
        entry.last_ip = ip;
        Some(entry)
    }

    /// Forgets idle entries near the sweep hand: nothing held, both buckets full, no refusal or log budget
    /// spent this second (a fresh entry would say the same). A summary still owed is logged first.
    fn sweep(&mut self, now: Time) {
        let (untrusted, trusted) = (self.untrusted, self.trusted);
        self.sources.sweep(|key, s| {
            let class = if key.trusted { trusted } else { untrusted };
            let idle = !s.holds_anything()
                && s.refusals.count_at(now) == 0
                && s.logged.count_at(now) == 0
                && s.new_dialogs.is_full(class.new_dialogs, now)
                && s.out_of_dialog.is_full(class.out_of_dialog, now)
                && s.in_dialog.is_full(class.in_dialog, now);
            if idle && s.suppressed > 0 {
                log_summary(s);
            }
            idle
        });
    }

    /// Drops a request whose `User-Agent` is a scanner's (`[access] drop_user_agents`): true when it must be
    /// dropped unanswered (counted and logged as `scanner_user_agent`).
    pub fn screen_user_agent(&mut self, now: Time, ip: IpAddr, user_agent: &str) -> bool {
        if !self.access.drops(user_agent) {
            return false;
        }
        self.record(now, ip, Reason::ScannerUserAgent);
        true
    }

    /// A request starting a dialog from `ip`: an INVITE (`invite`, which may leave a call unconfirmed) or a
    /// SUBSCRIBE. Checks the unconfirmed-call cap (INVITE), then takes a new-dialog token.
    pub fn admit_new_dialog(&mut self, now: Time, ip: IpAddr, invite: bool) -> Verdict {
        let class = self.class(&self.key(ip));
        let Some(s) = self.touch(now, ip) else { return self.untracked(now, ip) };
        if invite && over(s.unconfirmed, class.unconfirmed) {
            return self.refuse(now, ip, Reason::Unconfirmed);
        }
        if !s.new_dialogs.take(class.new_dialogs, now) {
            return self.refuse(now, ip, Reason::RateNewDialogs);
        }
        Verdict::Admit
    }

    /// A request outside any dialog that starts none (OPTIONS, REGISTER, MESSAGE, BYE naming no dialog...).
    pub fn admit_out_of_dialog(&mut self, now: Time, ip: IpAddr) -> Verdict {
        let rate = self.class(&self.key(ip)).out_of_dialog;
        let Some(s) = self.touch(now, ip) else { return self.untracked(now, ip) };
        if !s.out_of_dialog.take(rate, now) {
            return self.refuse(now, ip, Reason::RateOutOfDialog);
        }
        Verdict::Admit
    }

    /// A request inside a dialog parkd holds with `ip` (not ACK, not a CANCEL of a pending INVITE).
    pub fn admit_in_dialog(&mut self, now: Time, ip: IpAddr) -> Verdict {
        let rate = self.class(&self.key(ip)).in_dialog;
        let Some(s) = self.touch(now, ip) else { return self.untracked(now, ip) };
        if !s.in_dialog.take(rate, now) {
            return self.refuse(now, ip, Reason::RateInDialog);
        }
        Verdict::Admit
    }

    /// A park from `ip` (its dialog was already admitted): the cap on orbits its parked calls hold.
    pub fn admit_park(&mut self, now: Time, ip: IpAddr) -> Verdict {
        let limit = self.class(&self.key(ip)).parked;
        let Some(s) = self.touch(now, ip) else { return self.untracked(now, ip) };
        if over(s.parked, limit) {
            return self.refuse(now, ip, Reason::ParkedPerSource);
        }
        Verdict::Admit
    }

    /// A new BLF subscription from `ip` (not a fetch): the cap on subscriptions it holds.
    pub fn admit_subscription(&mut self, now: Time, ip: IpAddr) -> Verdict {
        let limit = self.class(&self.key(ip)).subscriptions;
        let Some(s) = self.touch(now, ip) else { return self.untracked(now, ip) };
        if over(s.subscriptions, limit) {
            return self.refuse(now, ip, Reason::Subscriptions);
        }
        Verdict::Admit
    }

    /// A refusal the core answered itself (403 for `acl`, 401 for `auth_failed`): counted and logged.
    pub fn refused(&mut self, now: Time, ip: IpAddr, reason: Reason) {
        self.record(now, ip, reason);
    }

    /// `ip` now holds `hold` (a second call for the same hold moves it to `ip`).
    pub fn hold(&mut self, now: Time, hold: Hold, ip: IpAddr) {
        let key = self.key(ip);
        if self.holds.get(&hold) == Some(&key) {
            return;
        }
        self.release(hold);
        let Some(s) = self.touch(now, ip) else { return };
        *counter(s, hold) += 1;
        self.holds.insert(hold, key);
    }

    /// `hold` has ended.
    pub fn release(&mut self, hold: Hold) {
        let Some(key) = self.holds.remove(&hold) else { return };
        if let Some(s) = self.sources.get_mut(&key) {
            let c = counter(s, hold);
            *c = c.saturating_sub(1);
        }
    }

    /// A reload moved occupied orbits to new indexes (issue 21): each hold follows its orbit, `(lot, from, to)`.
    pub fn move_orbit_holds(&mut self, moves: &[(usize, OrbitIdx, OrbitIdx)]) {
        let taken: Vec<(Hold, SourceKey)> = moves.iter().filter_map(|(lot, from, to)| Some((Hold::Orbit(*lot, *to), self.holds.remove(&Hold::Orbit(*lot, *from))?))).collect();
        self.holds.extend(taken);
    }

    /// Orbit `orbit` of lot `lot` is now occupied by a call parked from `holder`, or free (`None`).
    pub fn set_orbit_holder(&mut self, now: Time, lot: usize, orbit: OrbitIdx, holder: Option<IpAddr>) {
        match holder {
            Some(ip) => self.hold(now, Hold::Orbit(lot, orbit), ip),
            None => self.release(Hold::Orbit(lot, orbit)),
        }
    }

    /// Counts and logs a refusal of `reason`, then decides between a 503 and silence.
    fn refuse(&mut self, now: Time, ip: IpAddr, reason: Reason) -> Verdict {
        self.record(now, ip, reason);
        let key = self.key(ip);
        let Some(s) = self.sources.get_mut(&key) else { return Verdict::Drop };
        if s.refusals.try_count(now, self.refusals_per_second) {
            Verdict::Refuse { retry_after: self.retry_after }
        } else {
            Verdict::Drop
        }
    }

    /// A source the full table cannot track: its request is dropped.
    fn untracked(&mut self, now: Time, ip: IpAddr) -> Verdict {
        self.record(now, ip, Reason::SourcesFull);
        Verdict::Drop
    }

    /// Counts a refusal and writes its log line (rate-limited per source).
    fn record(&mut self, now: Time, ip: IpAddr, reason: Reason) {
        self.counts.0[reason.index()] += 1;
        let key = self.key(ip);
        let s = match self.sources.get_mut(&key) {
            Some(s) => s,
            None => match self.touch(now, ip) {
                Some(s) => s,
                None => {
                    if self.untracked_logged.try_count(now, LOG_LINES_PER_SECOND) {
                        log_line(ip, reason);
                    }
                    return;
                }
            },
        };
        s.last_reason = reason;
        if s.logged.try_count(now, LOG_LINES_PER_SECOND) {
            if s.suppressed > 0 {
                log_summary(s);
            }
            log_line(ip, reason);
        } else {
            s.suppressed = s.suppressed.saturating_add(1);
        }
    }
}

fn counter(s: &mut Source, hold: Hold) -> &mut u32 {
    match hold {
        Hold::Unconfirmed(_) => &mut s.unconfirmed,
        Hold::Orbit(..) => &mut s.parked,
        Hold::Subscription(_) => &mut s.subscriptions,
    }
}

/// The line fail2ban matches (`deploy/fail2ban/filter.d/parkd.conf`). Everything is in the message, so the
/// text and JSON log formats both carry it verbatim.
fn log_line(ip: IpAddr, reason: Reason) {
    tracing::warn!("refused sip source={} reason={}", ip.to_canonical(), reason.as_str());
}

/// The refusals of a source not logged one by one, in one line.
fn log_summary(s: &mut Source) {
    tracing::warn!("refused sip source={} reason={} suppressed={}", s.last_ip.to_canonical(), s.last_reason.as_str(), s.suppressed);
    s.suppressed = 0;
}

#[cfg(test)]
mod tests;
