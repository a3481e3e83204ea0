//! The link between the HTTP server and the core task: requests travel over one bounded tokio mpsc channel, each
//! with a oneshot for its answer. The core task serves them between SIP messages (one `select!` arm in
//! [`super::sip_driver::run`]), so the core keeps a single owner and needs no lock.

use super::events_hub::EventHub;
use super::media_shards::Media;
use super::metrics::{Metrics, ScrapeSnapshot};
use crate::core::snapshot::{BridgedSnapshot, LotSnapshot};
use crate::core::{Command, CommandResult, CommandTicket, Core};
use crate::time::Time;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How many API requests may wait for the core task.
const QUEUE: usize = 64;
/// How long an HTTP handler waits for the core task before answering 503.
const CORE_DEADLINE: Duration = Duration::from_secs(2);

/// A request to the core task.
#[derive(Debug)]
pub enum CoreRequest {
    Command { cmd: Command, reply: oneshot::Sender<CommandResult> },
    Lots { reply: oneshot::Sender<Vec<LotSnapshot>> },
    /// One lot, by name (`None`: no such lot).
    Lot { name: String, reply: oneshot::Sender<Option<LotSnapshot>> },
    Calls { reply: oneshot::Sender<Vec<BridgedSnapshot>> },
    Scrape { reply: oneshot::Sender<ScrapeSnapshot> },
    /// Whether the core takes new parks: `None`, or why not (draining; in a cluster, Redis not answering).
    Ready { reply: oneshot::Sender<Option<&'static str>> },
    /// Read the configuration file again and apply it (issue 21): what changed, or why nothing did (HTTP status
    /// and text).
    Reload { reply: oneshot::Sender<Result<crate::core::reload::ReloadReport, (u16, String)>> },
}

/// Why the core task did not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreUnavailable {
    #[error("the core task is not running")]
    Gone,
    #[error("the core task did not answer within {0:?}")]
    Timeout(Duration),
}

/// The HTTP side of the link; cheap to clone.
#[derive(Clone)]
pub struct CoreClient {
    tx: mpsc::Sender<CoreRequest>,
}

impl CoreClient {
    /// Sends the request made by `make` and waits (bounded) for its answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> CoreRequest) -> Result<T, CoreUnavailable> {
        let (reply, rx) = oneshot::channel();
        let send = self.tx.send_timeout(make(reply), CORE_DEADLINE);
        send.await.map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(_) => CoreUnavailable::Timeout(CORE_DEADLINE),
            mpsc::error::SendTimeoutError::Closed(_) => CoreUnavailable::Gone,
        })?;
        match tokio::time::timeout(CORE_DEADLINE, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(CoreUnavailable::Gone),
            Err(_) => Err(CoreUnavailable::Timeout(CORE_DEADLINE)),
        }
    }
}

/// The core task's side: the request receiver, and where it reports events and counts messages.
pub struct ApiPort {
    pub rx: mpsc::Receiver<CoreRequest>,
    pub hub: EventHub,
    pub metrics: Arc<Metrics>,
    /// Commands the core answers later (a re-park in a cluster waits for its claim).
    pub deferred: DeferredReplies,
    /// Reads the configuration again for SIGHUP and `POST /v1/reload` (issue 21).
    pub reloader: super::reload::Reloader,
}

/// The replies of commands the core took with a ticket and answers later ([`crate::core::Output::CommandDone`]).
#[derive(Debug, Default)]
pub struct DeferredReplies {
    next: u64,
    waiting: std::collections::HashMap<u64, oneshot::Sender<CommandResult>>,
}

impl DeferredReplies {
    fn take(&mut self, reply: oneshot::Sender<CommandResult>) -> CommandTicket {
        self.next += 1;
        self.waiting.insert(self.next, reply);
        CommandTicket(self.next)
    }

    fn forget(&mut self, ticket: CommandTicket) -> Option<oneshot::Sender<CommandResult>> {
        self.waiting.remove(&ticket.0)
    }

    /// The core's answer to `ticket`: to its HTTP handler (if it still waits).
    pub fn answer(&mut self, ticket: CommandTicket, result: CommandResult) {
        match self.waiting.remove(&ticket.0) {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => tracing::warn!(ticket = ticket.0, "an answer to a command nobody waits for"),
        }
    }
}

/// A connected pair: the client for the HTTP server, the port for the core task.
pub fn link(hub: EventHub, metrics: Arc<Metrics>) -> (CoreClient, ApiPort) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (CoreClient { tx }, ApiPort { rx, hub, metrics, deferred: DeferredReplies::default(), reloader: super::reload::Reloader { source: None, sharded: false } })
}

/// Serves one request on the core task. A dropped reply (the HTTP client went away) is ignored. A command the
/// core answers later keeps its reply in `deferred` until the core's [`crate::core::Output::CommandDone`].
pub fn serve(core: &mut Core, media: &Media, now: Time, req: CoreRequest, deferred: &mut DeferredReplies, reloader: &super::reload::Reloader) {
    match req {
        CoreRequest::Reload { reply } => {
            let r = reloader.reload(core, media, None, now, "POST /v1/reload").map_err(|e| (e.http_status(), e.to_string()));
            let _ = reply.send(r);
        }
        CoreRequest::Command { cmd, reply } => {
            tracing::info!(?cmd, "API command");
            let ticket = deferred.take(reply);
            if let Some(result) = core.submit_command(now, ticket, cmd) {
                if let Some(reply) = deferred.forget(ticket) {
                    let _ = reply.send(result);
                }
            }
        }
        CoreRequest::Lots { reply } => {
            let _ = reply.send(core.lots_snapshot());
        }
        CoreRequest::Lot { name, reply } => {
            let _ = reply.send(core.lot_snapshot_named(&name));
        }
        CoreRequest::Ready { reply } => {
            let why = if core.is_draining() {
                Some("draining: new parks are refused (SIGUSR1 toggles)")
            } else if !core.cluster_available() {
                Some("cluster: Redis does not answer; new parks are refused (503)")
            } else {
                None
            };
            let _ = reply.send(why);
        }
        CoreRequest::Calls { reply } => {
            let _ = reply.send(core.bridged_snapshot());
        }
        CoreRequest::Scrape { reply } => {
            let media_stats = media.stats();
            let io = media.io_totals();
            let live = core.live();
            let stats = core.stats();
            let snap = ScrapeSnapshot {
                lots: core.lot_summary(),
                malformed: stats.malformed,
                retransmissions: stats.retransmissions,
                sip_messages: stats.messages,
                pacer_lateness: media_stats.pacer_lateness,
                hold_packets_sent: media_stats.hold_sent,
                relayed_packets: media_stats.relayed,
                rtp_send_errors: io.send_errors,
                rtp_would_block: io.send_would_block,
                srtp_auth_failed: media_stats.srtp_auth_failed,
                srtp_protect_failed: media_stats.srtp_protect_failed,
                rtcp: super::metrics::RtcpCounts { received: media_stats.rtcp_received, relayed: media_stats.rtcp_relayed, dropped: media_stats.rtcp_dropped, sent: media_stats.rtcp_sent },
                legs: live.legs,
                bridged_calls: media_stats.bridged_pairs,
                sip_refusals: core.refusals().iter().collect(),
                tracked_sources: core.tracked_sources(),
                cluster: core.cluster_scrape(now),
                media_loads: media.loads(),
                capacity_refusing: core.capacity_state() == crate::core::admission::capacity::GuardState::Refusing,
            };
            let _ = reply.send(snap);
        }
    }
}
