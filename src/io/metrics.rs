//! Prometheus metrics (`GET /metrics`, text format via prometheus-client).
//!
//! Nothing here reads a SIP message or a clock. Park events are counted as the core task carries them out
//! (outcomes, and the dwell each ending event carries) in [`Metrics`]; refusals the io layer makes itself
//! (TCP limits, framing) are counted as they happen. Values the core and media thread keep (SIP messages in
//! and out, orbits occupied, malformed input, RTP counters, SIP retransmissions, pacer lateness buckets) are
//! read at scrape time into a [`ScrapeSnapshot`] and written as counters, gauges and a histogram built from
//! bucket counts.

use crate::core::RecallTarget as LegRecallTarget;
use crate::core::ParkEvent;
use crate::media::pacer::{PacerLateness, LATENESS_BOUNDS_US};
use crate::txn::{SipCounts, TxnStats};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SipLabels {
    /// `in` or `out`.
    direction: &'static str,
    /// `request` or `response`.
    kind: &'static str,
    /// The method (of the request, or from the response's CSeq); `other` for one parkd does not know.
    method: &'static str,
    /// `1xx`..`6xx` for responses, empty for requests.
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// Why: HTTP guard reasons; SIP `tcp_per_source`, `tcp_total`, `tcp_idle`, `framing`, ... (see
    /// `conn_limits::Refusal`) and the core's admission reasons (`crate::core::admission::Reason`).
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecallLabels {
    target: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LotLabels {
    lot: String,
}

/// RTCP packets counted by the media threads (see [`ScrapeSnapshot::rtcp`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpCounts {
    pub received: u64,
    pub relayed: u64,
    pub dropped: u64,
    pub sent: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetransmissionLabels {
    /// `request` / `response` (sent again by parkd) or `absorbed` (a retransmitted request received).
    kind: &'static str,
}

/// A histogram whose buckets are counted elsewhere (the media thread's [`PacerLateness`]): encoded from a
/// snapshot at scrape time. Buckets are `(upper bound, count in this bucket)`, the last bound `f64::MAX`
/// (`+Inf`), as prometheus-client's own histogram encodes them.
#[derive(Debug)]
struct SnapshotHistogram {
    sum: f64,
    count: u64,
    buckets: [(f64, u64); LATENESS_BOUNDS_US.len() + 1],
}

impl SnapshotHistogram {
    /// Pacer lateness in seconds.
    fn pacer_lateness(l: &PacerLateness) -> SnapshotHistogram {
        let mut buckets = [(f64::MAX, 0); LATENESS_BOUNDS_US.len() + 1];
        for (i, (b, n)) in buckets.iter_mut().enumerate() {
            if let Some(us) = LATENESS_BOUNDS_US.get(i) {
                *b = *us as f64 / 1e6;
            }
            *n = l.buckets.get(i).copied().unwrap_or(0);
        }
        SnapshotHistogram { sum: l.sum_us as f64 / 1e6, count: l.count, buckets }
    }
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<()>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What the core task reads for a scrape.
#[derive(Clone, Debug, Default)]
pub struct ScrapeSnapshot {
    /// (lot, capacity, occupied)
    pub lots: Vec<(String, usize, usize)>,
    pub malformed: u64,
    pub hold_packets_sent: u64,
    pub relayed_packets: u64,
    pub rtp_send_errors: u64,
    pub rtp_would_block: u64,
    /// SRTP packets dropped because they failed authentication (or replayed), and hold/relay packets that could
    /// not be protected (from the media threads' `MediaStats`).
    pub srtp_auth_failed: u64,
    pub srtp_protect_failed: u64,
    /// RTCP (rtcp-mux on the RTP ports, or the RTCP ports): received, relayed to a bridge peer, dropped (valid but not relayable),
    /// hold Sender Reports sent (from the media threads' `MediaStats`).
    pub rtcp: RtcpCounts,
    pub legs: usize,
    pub bridged_calls: usize,
    /// The transaction layer's retransmission counters (from `Core::stats`).
    pub retransmissions: TxnStats,
    /// SIP messages the core received (decoded) and sent, retransmissions included (from `Core::stats`).
    pub sip_messages: SipCounts,
    /// Pacer lateness buckets (from the media thread's `MediaStats`).
    pub pacer_lateness: PacerLateness,
    /// SIP requests the core refused, by reason, zeros included (from `Core::refusals`; totals).
    pub sip_refusals: Vec<(&'static str, u64)>,
    /// Source addresses the core's admission room tracks (bounded by `[limits] tracked_sources`).
    pub tracked_sources: usize,
    /// The cluster room's gauges and totals (`parkd_cluster_*`); `None` on a single node (none are written).
    pub cluster: Option<crate::cluster::ClusterScrape>,
    /// Each media thread's measured load (index = thread; see `io/media_load.rs`).
    pub media_loads: Vec<crate::core::admission::capacity::MediaLoad>,
    /// The capacity guard refuses new parks now.
    pub capacity_refusing: bool,
}

/// Metrics updated from the core task.
pub struct Metrics {
    parks: Family<OutcomeLabels, Counter>,
    retrieves: Family<OutcomeLabels, Counter>,
    recalls: Family<RecallLabels, Counter>,
    abandons: Counter,
    ended: Family<OutcomeLabels, Counter>,
    refused: Family<OutcomeLabels, Counter>,
    /// HTTP requests refused by the API's guards (and dial refusals), by reason.
    http_refusals: Family<ReasonLabels, Counter>,
    /// SIP requests, connections and messages refused, by reason: the io layer's own (counted as they
    /// happen) and the core's (its totals, added to the family as deltas at scrape time).
    refusals: Family<ReasonLabels, Counter>,
    /// The core's refusal totals already added to `refusals`.
    core_refusals_seen: Mutex<HashMap<&'static str, u64>>,
    dwell: Histogram,
    /// The journal writer's counters, once journaling runs.
    journal: std::sync::OnceLock<std::sync::Arc<super::journal_writer::WriterStats>>,
    /// The SIP shards' counters, when `sip_threads > 1`.
    shards: std::sync::OnceLock<std::sync::Arc<ShardStats>>,
}

/// What the SIP shards count (`sip_threads > 1`, `io/sip_shards.rs`), exposed as `parkd_shard_*`.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Times a shard found the shared orbit table locked by another.
    pub table_waits: AtomicU64,
    /// SIP messages the receiving thread handed to another shard's thread.
    pub handovers: AtomicU64,
    /// New INVITEs sent to the shard holding their orbit rather than their Call-ID's (`sip/shard_router.rs`).
    pub placed_by_orbit: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Dwell-time buckets, seconds: from a quick hand-over to a forgotten call.
const DWELL_BUCKETS: [f64; 10] = [1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 900.0];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            parks: Family::default(),
            retrieves: Family::default(),
            recalls: Family::default(),
            abandons: Counter::default(),
            ended: Family::default(),
            refused: Family::default(),
            http_refusals: Family::default(),
            refusals: Family::default(),
            core_refusals_seen: Mutex::new(HashMap::new()),
            dwell: Histogram::new(DWELL_BUCKETS.into_iter()),
            journal: std::sync::OnceLock::new(),
            shards: std::sync::OnceLock::new(),
        }
    }

    /// Exposes the journal writer's counters (`parkd_journal_*`); without it (journal off) they are absent.
    pub fn set_journal(&self, stats: std::sync::Arc<super::journal_writer::WriterStats>) {
        let _ = self.journal.set(stats);
    }

    /// Exposes the SIP shards' counters (`parkd_shard_*`); with one SIP thread they are absent.
    pub fn set_shards(&self, stats: std::sync::Arc<ShardStats>) {
        let _ = self.shards.set(stats);
    }

    /// Counts one refused connection or message (`parkd_sip_refusals_total{reason}`).
    pub fn count_refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Brings the core's refusal totals into the `sip_refusals` family (each reason created, so a dashboard's
    /// rate starts from 0).
    fn add_core_refusals(&self, totals: &[(&'static str, u64)]) {
        let Ok(mut seen) = self.core_refusals_seen.lock() else { return };
        for (reason, total) in totals {
            let counter = self.refusals.get_or_create(&ReasonLabels { reason });
            let before = seen.entry(reason).or_default();
            counter.inc_by(total.saturating_sub(*before));
            *before = (*before).max(*total);
        }
    }

    /// Counts a park event and tracks dwell time; `now` is the io clock.
    /// Counts a park event; one that ends a call's stay in its orbit adds the dwell it carries.
    pub fn on_event(&self, ev: &ParkEvent) {
        match ev {
            ParkEvent::Parked { how, .. } => {
                let how = serde_json::to_value(how).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                self.parks.get_or_create(&OutcomeLabels { outcome: how }).inc();
            }
            // Attended park: a new party took the orbit (its dwell starts again in the core).
            ParkEvent::Swapped { .. } => {
                self.parks.get_or_create(&OutcomeLabels { outcome: "swapped".into() }).inc();
            }
            ParkEvent::Retrieved { .. } => {
                self.retrieves.get_or_create(&OutcomeLabels { outcome: "dialed".into() }).inc();
            }
            ParkEvent::Abandoned { .. } => {
                self.abandons.inc();
            }
            ParkEvent::HungUp { .. } => {
                self.ended.get_or_create(&OutcomeLabels { outcome: "api_hangup".into() }).inc();
            }
            ParkEvent::TimedOut { .. } => {
                self.ended.get_or_create(&OutcomeLabels { outcome: "timeout".into() }).inc();
            }
            ParkEvent::RecallStarted { target, .. } => self.recall(*target, "started"),
            ParkEvent::RecallAnswered { target, .. } => {
                self.recall(*target, "answered");
                let how = match target {
                    LegRecallTarget::ApiUnpark => "api_unpark",
                    LegRecallTarget::DtmfKey => "dtmf_key",
                    _ => "recall",
                };
                self.retrieves.get_or_create(&OutcomeLabels { outcome: how.into() }).inc();
            }
            ParkEvent::RecallFailed { target, .. } => self.recall(*target, "failed"),
            ParkEvent::Refused { status, .. } => {
                self.refused.get_or_create(&OutcomeLabels { outcome: status.to_string() }).inc();
            }
            ParkEvent::Ended { .. }
            | ParkEvent::Reparked { .. }
            | ParkEvent::AckTimeout { .. }
            | ParkEvent::OrbitLost { .. }
            // Another node counts its own parks; this node's occupancy gauge includes them (`lot_summary`).
            | ParkEvent::RemoteParked { .. }
            | ParkEvent::RemoteFreed { .. }
            | ParkEvent::Capacity { .. }
            | ParkEvent::ConfigReloaded { .. }
            | ParkEvent::DtmfKey { .. }
            | ParkEvent::CallbackRequested { .. } => {}
        }
        if let Some(dwell) = ev.dwell() {
            self.dwell.observe(dwell.as_secs_f64());
        }
    }

    /// Counts one refused HTTP request (`unauthorized`, `forbidden_host`, `unsupported_media_type`, `too_large`,
    /// `rate_limited`, `dial_not_allowed`).
    pub fn http_refusal(&self, reason: &'static str) {
        self.http_refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    fn recall(&self, target: LegRecallTarget, outcome: &'static str) {
        let target = serde_json::to_value(target).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        self.recalls.get_or_create(&RecallLabels { target, outcome }).inc();
    }

    /// The Prometheus text exposition of everything, with `snap` read from the core and media thread.
    pub fn encode(&self, snap: &ScrapeSnapshot) -> String {
        let mut reg = Registry::with_prefix("parkd");
        let sip = Family::<SipLabels, Counter>::default();
        for (outgoing, kind, n) in snap.sip_messages.iter() {
            let labels = SipLabels {
                direction: if outgoing { "out" } else { "in" },
                kind: if kind.is_request() { "request" } else { "response" },
                method: kind.method_label(),
                class: kind.class_label(),
            };
            sip.get_or_create(&labels).inc_by(n);
        }
        reg.register("sip_messages", "SIP messages by direction, kind, method and response class", sip);
        reg.register("parks", "Calls parked, by how (directed / indirect / swapped)", self.parks.clone());
        reg.register("retrieves", "Parked calls taken, by how (dialed / recall / api_unpark)", self.retrieves.clone());
        reg.register("recalls", "Recalls and API unparks by target and outcome (started / answered / failed)", self.recalls.clone());
        reg.register("abandons", "Parked callers who hung up while parked", self.abandons.clone());
        reg.register("parked_calls_ended", "Parked calls ended by parkd, by cause", self.ended.clone());
        reg.register("refused", "Park or retrieve requests refused, by SIP status", self.refused.clone());
        reg.register("http_refusals", "HTTP API requests refused, by reason", self.http_refusals.clone());
        self.add_core_refusals(&snap.sip_refusals);
        reg.register(
            "sip_refusals",
            "SIP requests, connections and messages refused (503, dropped, 401/403, reset or closed), by reason",
            self.refusals.clone(),
        );
        let tracked = Gauge::<i64>::default();
        tracked.set(snap.tracked_sources as i64);
        reg.register("sip_tracked_sources", "Source addresses the SIP admission limits track (bounded)", tracked);
        reg.register("dwell_seconds", "How long calls stayed parked", self.dwell.clone());
        let occupied = Family::<LotLabels, Gauge>::default();
        let capacity = Family::<LotLabels, Gauge>::default();
        for (lot, cap, occ) in &snap.lots {
            occupied.get_or_create(&LotLabels { lot: lot.clone() }).set(*occ as i64);
            capacity.get_or_create(&LotLabels { lot: lot.clone() }).set(*cap as i64);
        }
        reg.register("orbits_occupied", "Occupied orbits per lot", occupied);
        reg.register("orbits", "Orbits per lot", capacity);
        let legs = Gauge::<i64>::default();
        legs.set(snap.legs as i64);
        reg.register("call_legs", "Call legs parkd holds", legs);
        let bridged = Gauge::<i64>::default();
        bridged.set(snap.bridged_calls as i64);
        reg.register("bridged_calls", "Calls bridged through parkd", bridged);
        reg.register("malformed_dropped", "SIP input that could not be decoded (answered 400 or dropped)", ConstCounter::new(snap.malformed));
        reg.register("rtp_hold_packets_sent", "Hold-music RTP packets sent", ConstCounter::new(snap.hold_packets_sent));
        reg.register("rtp_relayed_packets", "RTP packets relayed between bridged legs", ConstCounter::new(snap.relayed_packets));
        reg.register("rtp_send_errors", "RTP send failures", ConstCounter::new(snap.rtp_send_errors));
        reg.register("rtp_send_would_block", "RTP packets dropped on a full socket buffer", ConstCounter::new(snap.rtp_would_block));
        reg.register("srtp_auth_failures", "SRTP and SRTCP packets dropped: failed authentication or replayed", ConstCounter::new(snap.srtp_auth_failed));
        let rtcp = Family::<RetransmissionLabels, Counter>::default();
        let c = &snap.rtcp;
        for (kind, n) in [("received", c.received), ("relayed", c.relayed), ("dropped", c.dropped), ("sent", c.sent)] {
            rtcp.get_or_create(&RetransmissionLabels { kind }).inc_by(n);
        }
        reg.register("rtcp_packets", "RTCP (on the RTP ports with rtcp-mux, or on the media threads' RTCP ports): received, relayed to the bridge peer, valid but not relayable (dropped), hold Sender Reports sent", rtcp);
        reg.register("srtp_protect_failures", "RTP packets to an SRTP leg that could not be protected (not sent)", ConstCounter::new(snap.srtp_protect_failed));
        let retransmissions = Family::<RetransmissionLabels, Counter>::default();
        let r = &snap.retransmissions;
        for (kind, n) in [("request", r.retransmitted_requests), ("response", r.retransmitted_responses), ("absorbed", r.absorbed_retransmissions)] {
            retransmissions.get_or_create(&RetransmissionLabels { kind }).inc_by(n);
        }
        reg.register(
            "sip_retransmissions",
            "SIP retransmissions: requests and responses parkd sent again, retransmitted requests it absorbed",
            retransmissions,
        );
        reg.register(
            "pacer_lateness_seconds",
            "How late each hold-music pacer slot was served after its due time",
            SnapshotHistogram::pacer_lateness(&snap.pacer_lateness),
        );
        encode_media_load(&mut reg, snap);
        if let Some(c) = &snap.cluster {
            encode_cluster(&mut reg, c);
        }
        if let Some(j) = self.journal.get() {
            register_counters(&mut reg, [
                ("journal_commits", "Journal syncs (group commits), failed ones included", &j.commits),
                ("journal_commit_failures", "Journal syncs that failed (disk full, IO error): those parks were refused", &j.failures),
                ("journal_groups", "Groups of records made durable (one per change of a call)", &j.groups),
                ("journal_records", "Records made durable", &j.records),
                ("journal_compactions", "Journal compactions run", &j.compactions),
            ]);
        }
        if let Some(st) = self.shards.get() {
            register_counters(&mut reg, [
                ("shard_table_waits", "Times a SIP shard found the shared orbit table locked by another", &st.table_waits),
                ("shard_handovers", "SIP messages the receiving thread handed to another shard's thread", &st.handovers),
                ("shard_placed_by_orbit", "New INVITEs sent to the shard holding their orbit rather than their Call-ID's", &st.placed_by_orbit),
            ]);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }
}

/// Registers each `(name, help, value)` as a counter read now.
fn register_counters<const N: usize>(reg: &mut Registry, counters: [(&str, &str, &AtomicU64); N]) {
    for (name, help, v) in counters {
        reg.register(name, help, ConstCounter::new(v.load(std::sync::atomic::Ordering::Relaxed)));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabels {
    thread: String,
}

/// `parkd_media_load{thread}` (busy share 0–1, smoothed), `parkd_media_pacer_late_seconds{thread}` (smoothed) and
/// `parkd_capacity_refusing` (1 while the capacity guard refuses new parks).
fn encode_media_load(reg: &mut Registry, snap: &ScrapeSnapshot) {
    let load = Family::<ThreadLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let late = Family::<ThreadLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (i, l) in snap.media_loads.iter().enumerate() {
        load.get_or_create(&ThreadLabels { thread: i.to_string() }).set(l.busy);
        late.get_or_create(&ThreadLabels { thread: i.to_string() }).set(l.late_ms / 1000.0);
    }
    reg.register("media_load", "Share of wall time each media thread works (smoothed over ~0.5 s; the capacity guard's input)", load);
    reg.register("media_pacer_late_seconds", "How late each media thread's pacer turns start (smoothed max per 100 ms)", late);
    let refusing = Gauge::<i64>::default();
    refusing.set(i64::from(snap.capacity_refusing));
    reg.register("capacity_refusing", "1 while the capacity guard refuses new parks (503), else 0", refusing);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HolderLabels {
    /// `self` (this node) or `others`.
    holder: &'static str,
}

/// `parkd_cluster_*`: Redis reachable, orbits held here and elsewhere, nodes alive, claims by result, orbits
/// lost, Redis round trips and their failures.
fn encode_cluster(reg: &mut Registry, c: &crate::cluster::ClusterScrape) {
    let gauge = |v: usize| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    reg.register("cluster_up", "1 when Redis answers and parks can be granted, 0 while parks get 503", gauge(usize::from(c.up)));
    let orbits = Family::<HolderLabels, Gauge>::default();
    orbits.get_or_create(&HolderLabels { holder: "self" }).set(c.own as i64);
    orbits.get_or_create(&HolderLabels { holder: "others" }).set(c.remote as i64);
    reg.register("cluster_orbits", "Orbits claimed in Redis, by this node (self) or the other nodes (others, as this node sees them)", orbits);
    reg.register("cluster_nodes", "Other nodes heard from within their lease", gauge(c.nodes));
    reg.register("cluster_pending_claims", "Claims waiting for Redis's answer", gauge(c.pending));
    let claims = Family::<ResultLabels, Counter>::default();
    let n = &c.counts;
    for (result, v) in [("granted", n.granted), ("taken", n.taken), ("full", n.full), ("unavailable", n.unavailable)] {
        claims.get_or_create(&ResultLabels { result }).inc_by(v);
    }
    reg.register("cluster_claims", "Orbit claims answered, by result (taken: another node holds it; unavailable: Redis did not answer)", claims);
    reg.register("cluster_orbits_lost", "Orbits of calls parked here that another node took (moved or recalled)", ConstCounter::new(n.lost));
    reg.register("cluster_redis_ops", "Redis operations sent (claims, renewals, releases, resyncs; one round trip each)", ConstCounter::new(n.ops));
    reg.register("cluster_redis_errors", "Redis operations that failed or timed out", ConstCounter::new(n.op_errors));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_messages_are_the_cores_counts_by_direction_method_and_class() {
        use crate::sip::Method;
        use crate::txn::MsgKind;
        let mut counts = SipCounts::default();
        counts.count_received(MsgKind::request(&Method::Invite));
        counts.count_sent(MsgKind::response(200, &Method::Invite));
        counts.count_sent(MsgKind::response(486, &Method::Bye));
        counts.count_received(MsgKind::request(&Method::Other("FOO".into())));
        let text = Metrics::new().encode(&ScrapeSnapshot { sip_messages: counts, ..Default::default() });
        assert!(text.contains(r#"parkd_sip_messages_total{direction="in",kind="request",method="INVITE",class=""} 1"#), "{text}");
        assert!(text.contains(r#"parkd_sip_messages_total{direction="out",kind="response",method="INVITE",class="2xx"} 1"#), "{text}");
        assert!(text.contains(r#"parkd_sip_messages_total{direction="out",kind="response",method="BYE",class="4xx"} 1"#), "{text}");
        assert!(text.contains(r#"method="other""#), "unknown methods are bucketed");
    }

    #[test]
    fn media_load_per_thread_and_the_guard_state_are_gauges() {
        use crate::core::admission::capacity::MediaLoad;
        let snap = ScrapeSnapshot {
            media_loads: vec![MediaLoad { busy: 0.25, late_ms: 0.5 }, MediaLoad { busy: 0.875, late_ms: 4.0 }],
            capacity_refusing: true,
            ..Default::default()
        };
        let text = Metrics::new().encode(&snap);
        assert!(text.contains(r#"parkd_media_load{thread="0"} 0.25"#), "{text}");
        assert!(text.contains(r#"parkd_media_load{thread="1"} 0.875"#), "{text}");
        assert!(text.contains(r#"parkd_media_pacer_late_seconds{thread="1"} 0.004"#), "{text}");
        assert!(text.contains("parkd_capacity_refusing 1"), "{text}");
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let m = Metrics::new();
        m.count_refusal("tcp_per_source");
        m.count_refusal("tcp_per_source");
        m.count_refusal("framing");
        let text = m.encode(&ScrapeSnapshot::default());
        assert!(text.contains(r#"parkd_sip_refusals_total{reason="tcp_per_source"} 2"#), "{text}");
        assert!(text.contains(r#"parkd_sip_refusals_total{reason="framing"} 1"#), "{text}");
    }

    #[test]
    fn park_events_count_outcomes_and_dwell() {
        let m = Metrics::new();
        let parked = ParkEvent::Parked {
            lot: "default".into(),
            orbit: "701".into(),
            call_id: "c".into(),
            parked: "sip:bob@h".into(),
            parker: None,
            how: crate::core::ParkHow::Indirect,
            domain: None,
        };
        m.on_event(&parked);
        m.on_event(&ParkEvent::Retrieved { lot: "default".into(), orbit: "701".into(), call_id: "c".into(), by: "x".into(), dwell_ms: 12_000 });
        m.on_event(&ParkEvent::Abandoned { lot: "default".into(), orbit: "702".into(), call_id: "d".into(), dwell_ms: 3_500 });
        let snap = ScrapeSnapshot { lots: vec![("default".into(), 20, 3)], malformed: 4, ..Default::default() };
        let text = m.encode(&snap);
        assert!(text.contains(r#"parkd_parks_total{outcome="indirect"} 1"#), "{text}");
        assert!(text.contains(r#"parkd_retrieves_total{outcome="dialed"} 1"#));
        assert!(text.contains("parkd_abandons_total 1"));
        assert!(text.contains("parkd_dwell_seconds_count 2") && text.contains("parkd_dwell_seconds_sum 15.5"), "the dwell the events carry: {text}");
        assert!(text.contains(r#"parkd_orbits_occupied{lot="default"} 3"#));
        assert!(text.contains("parkd_malformed_dropped_total 4"));
    }

    #[test]
    fn shard_counters_appear_with_several_sip_threads() {
        let m = Metrics::new();
        assert!(!m.encode(&ScrapeSnapshot::default()).contains("parkd_shard_"), "one SIP thread: no shard metrics");
        let stats = std::sync::Arc::new(ShardStats::default());
        stats.handovers.store(7, std::sync::atomic::Ordering::Relaxed);
        stats.placed_by_orbit.store(2, std::sync::atomic::Ordering::Relaxed);
        m.set_shards(stats);
        let text = m.encode(&ScrapeSnapshot::default());
        for line in ["parkd_shard_handovers_total 7", "parkd_shard_placed_by_orbit_total 2", "parkd_shard_table_waits_total 0"] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[test]
    fn journal_counters_appear_once_journaling_runs() {
        let m = Metrics::new();
        assert!(!m.encode(&ScrapeSnapshot::default()).contains("journal"), "journal off: no journal metrics");
        let stats = std::sync::Arc::new(crate::io::journal_writer::WriterStats::default());
        stats.commits.store(5, std::sync::atomic::Ordering::Relaxed);
        stats.failures.store(1, std::sync::atomic::Ordering::Relaxed);
        m.set_journal(stats);
        let text = m.encode(&ScrapeSnapshot::default());
        assert!(text.contains("parkd_journal_commits_total 5"), "{text}");
        assert!(text.contains("parkd_journal_commit_failures_total 1"), "{text}");
        assert!(text.contains("parkd_journal_records_total 0"), "{text}");
    }

    #[test]
    fn sip_refusals_merge_the_cores_totals_with_the_io_layers_counts() {
        let m = Metrics::new();
        m.count_refusal("tcp_idle");
        m.count_refusal("tcp_idle");
        let snap = ScrapeSnapshot { sip_refusals: vec![("rate_new_dialogs", 7), ("acl", 0)], tracked_sources: 3, ..Default::default() };
        let text = m.encode(&snap);
        assert!(text.contains(r#"parkd_sip_refusals_total{reason="rate_new_dialogs"} 7"#), "{text}");
        assert!(text.contains(r#"parkd_sip_refusals_total{reason="acl"} 0"#), "zeros are exported: {text}");
        assert!(text.contains(r#"parkd_sip_refusals_total{reason="tcp_idle"} 2"#), "{text}");
        assert!(text.contains("parkd_sip_tracked_sources 3"), "{text}");
        assert_eq!(text.matches("# TYPE parkd_sip_refusals counter").count(), 1, "one family: {text}");
        // The core's figures are totals: a second scrape adds only what is new.
        let text = m.encode(&ScrapeSnapshot { sip_refusals: vec![("rate_new_dialogs", 10), ("acl", 0)], ..Default::default() });
        assert!(text.contains(r#"parkd_sip_refusals_total{reason="rate_new_dialogs"} 10"#), "{text}");
    }

    #[test]
    fn retransmissions_and_pacer_lateness_come_from_the_snapshot() {
        let mut lateness = PacerLateness::default();
        lateness.observe(300);
        lateness.observe(3_000);
        lateness.observe(25_000);
        let snap = ScrapeSnapshot {
            retransmissions: TxnStats { retransmitted_requests: 2, retransmitted_responses: 10, absorbed_retransmissions: 1 },
            pacer_lateness: lateness,
            ..Default::default()
        };
        let text = Metrics::new().encode(&snap);
        assert!(text.contains(r#"parkd_sip_retransmissions_total{kind="request"} 2"#), "{text}");
        assert!(text.contains(r#"parkd_sip_retransmissions_total{kind="response"} 10"#), "{text}");
        assert!(text.contains(r#"parkd_sip_retransmissions_total{kind="absorbed"} 1"#), "{text}");
        assert!(text.contains("# TYPE parkd_pacer_lateness_seconds histogram"), "{text}");
        assert!(text.contains(r#"parkd_pacer_lateness_seconds_bucket{le="0.0005"} 1"#), "{text}");
        assert!(text.contains(r#"parkd_pacer_lateness_seconds_bucket{le="0.005"} 2"#), "cumulative: {text}");
        assert!(text.contains(r#"parkd_pacer_lateness_seconds_bucket{le="0.02"} 2"#), "{text}");
        assert!(text.contains(r#"parkd_pacer_lateness_seconds_bucket{le="+Inf"} 3"#), "{text}");
        assert!(text.contains("parkd_pacer_lateness_seconds_count 3"), "{text}");
        assert!(text.contains("parkd_pacer_lateness_seconds_sum 0.0283"), "{text}");
    }

    #[test]
    fn the_cluster_section_is_written_only_on_a_cluster_node() {
        let single = Metrics::new().encode(&ScrapeSnapshot::default());
        assert!(!single.contains("parkd_cluster"), "{single}");
        let counts = crate::cluster::ClusterCounts { granted: 5, taken: 1, unavailable: 2, ops: 40, op_errors: 3, ..Default::default() };
        let c = crate::cluster::ClusterScrape { up: true, own: 2, remote: 3, nodes: 2, pending: 0, counts };
        let text = Metrics::new().encode(&ScrapeSnapshot { cluster: Some(c), ..Default::default() });
        for line in [
            "parkd_cluster_up 1",
            r#"parkd_cluster_orbits{holder="self"} 2"#,
            r#"parkd_cluster_orbits{holder="others"} 3"#,
            "parkd_cluster_nodes 2",
            r#"parkd_cluster_claims_total{result="granted"} 5"#,
            r#"parkd_cluster_claims_total{result="unavailable"} 2"#,
            r#"parkd_cluster_claims_total{result="full"} 0"#,
            "parkd_cluster_orbits_lost_total 0",
            "parkd_cluster_redis_ops_total 40",
            "parkd_cluster_redis_errors_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn srtp_drops_are_counted() {
        let text = Metrics::new().encode(&ScrapeSnapshot { srtp_auth_failed: 3, srtp_protect_failed: 1, ..Default::default() });
        assert!(text.lines().any(|l| l == "parkd_srtp_auth_failures_total 3"), "{text}");
        assert!(text.lines().any(|l| l == "parkd_srtp_protect_failures_total 1"), "{text}");
        let text = Metrics::new().encode(&ScrapeSnapshot { rtcp: RtcpCounts { received: 5, relayed: 2, dropped: 1, sent: 7 }, ..Default::default() });
        for line in ["parkd_rtcp_packets_total{kind=\"received\"} 5", "parkd_rtcp_packets_total{kind=\"relayed\"} 2", "parkd_rtcp_packets_total{kind=\"sent\"} 7"] {
            assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
        }
    }
}
