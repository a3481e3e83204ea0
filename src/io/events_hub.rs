//! Park events for applications: every [`ParkEvent`] the core reports gets an increasing id, is kept in a bounded
//! ring (for `Last-Event-ID` resume) and is broadcast to live subscribers. Publishing never waits: a subscriber
//! that falls behind loses events (and can resume from the ring), it never slows the core task.

use crate::core::ParkEvent;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::broadcast;

/// How many past events are kept for resume.
pub const RING_CAPACITY: usize = 1024;
/// How many events a live subscriber may lag before it skips.
const BROADCAST_CAPACITY: usize = 256;

/// One published event: its id, time and the event. Its name (`parked`, `retrieved`, ...) and JSON (with `id`
/// and `at_ms`) are written when first asked for (by an SSE client), not on the core task for every event.
#[derive(Debug)]
pub struct StampedEvent {
    pub id: u64,
    pub at_ms: u64,
    pub event: ParkEvent,
    rendered: OnceLock<(String, String)>,
}

impl StampedEvent {
    fn rendered(&self) -> &(String, String) {
        self.rendered.get_or_init(|| {
            let Ok(mut value) = serde_json::to_value(&self.event) else { return ("event".into(), "{}".into()) };
            let name = value.get("event").and_then(|v| v.as_str()).unwrap_or("event").to_string();
            if let Some(obj) = value.as_object_mut() {
                obj.insert("id".into(), self.id.into());
                obj.insert("at_ms".into(), self.at_ms.into());
            }
            (name, value.to_string())
        })
    }

    /// The event's name, the SSE `event:` field.
    pub fn name(&self) -> &str {
        &self.rendered().0
    }

    /// The event as JSON with `id` and `at_ms`, the SSE `data:` field.
    pub fn json(&self) -> &str {
        &self.rendered().1
    }
}

struct Ring {
    next_id: u64,
    events: VecDeque<Arc<StampedEvent>>,
}

/// The event ring and broadcast; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    ring: Arc<Mutex<Ring>>,
    tx: broadcast::Sender<Arc<StampedEvent>>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new()
    }
}

impl EventHub {
    pub fn new() -> EventHub {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        EventHub { ring: Arc::new(Mutex::new(Ring { next_id: 1, events: VecDeque::with_capacity(RING_CAPACITY) })), tx }
    }

    /// Stamps `ev` with the next id and the wall-clock time `at_ms`, keeps it and broadcasts it.
    pub fn publish(&self, ev: ParkEvent, at_ms: u64) -> Option<Arc<StampedEvent>> {
        let Ok(mut ring) = self.ring.lock() else { return None };
        let id = ring.next_id;
        ring.next_id += 1;
        let stamped = Arc::new(StampedEvent { id, at_ms, event: ev, rendered: OnceLock::new() });
        if ring.events.len() == RING_CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(stamped.clone());
        // No receivers is fine; a full channel overwrites the oldest (receivers see Lagged).
        let _ = self.tx.send(stamped.clone());
        Some(stamped)
    }

    /// A live subscription plus the kept events after `last_id` (all kept events when `None`), taken atomically
    /// so nothing is missed or duplicated between the two.
    pub fn subscribe_after(&self, last_id: Option<u64>) -> (Vec<Arc<StampedEvent>>, broadcast::Receiver<Arc<StampedEvent>>) {
        match self.ring.lock() {
            Ok(ring) => {
                let rx = self.tx.subscribe();
                let backlog = match last_id {
                    Some(last) => ring.events.iter().filter(|e| e.id > last).cloned().collect(),
                    None => Vec::new(),
                };
                (backlog, rx)
            }
            Err(_) => (Vec::new(), self.tx.subscribe()),
        }
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.ring.lock().map(|r| r.next_id).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abandoned(orbit: &str) -> ParkEvent {
        ParkEvent::Abandoned { lot: "default".into(), orbit: orbit.into(), call_id: "c".into(), dwell_ms: 0 }
    }

    #[test]
    fn ids_increase_and_json_carries_name_id_and_time() {
        let hub = EventHub::new();
        let a = hub.publish(abandoned("701"), 5).unwrap();
        let b = hub.publish(abandoned("702"), 6).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(a.name(), "abandoned");
        let v: serde_json::Value = serde_json::from_str(b.json()).unwrap();
        assert_eq!((v["id"].as_u64(), v["at_ms"].as_u64(), v["orbit"].as_str()), (Some(2), Some(6), Some("702")));
    }

    #[test]
    fn resume_returns_only_events_after_last_id_and_the_ring_is_bounded() {
        let hub = EventHub::new();
        for i in 0..(RING_CAPACITY + 10) {
            hub.publish(abandoned(&i.to_string()), 0);
        }
        let (backlog, _) = hub.subscribe_after(Some(RING_CAPACITY as u64 + 5));
        assert_eq!(backlog.iter().map(|e| e.id).collect::<Vec<_>>(), (RING_CAPACITY as u64 + 6..=RING_CAPACITY as u64 + 10).collect::<Vec<_>>());
        let (all, _) = hub.subscribe_after(Some(0));
        assert_eq!(all.len(), RING_CAPACITY, "oldest dropped");
        assert_eq!(all[0].id, 11);
        let (none, _) = hub.subscribe_after(None);
        assert!(none.is_empty(), "a fresh client starts from now");
    }

    #[test]
    fn a_slow_subscriber_lags_without_blocking_the_publisher() {
        let hub = EventHub::new();
        let (_, mut rx) = hub.subscribe_after(None);
        for i in 0..(BROADCAST_CAPACITY * 3) {
            hub.publish(abandoned(&i.to_string()), 0);
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(_))), "the receiver is told it lagged");
        assert!(rx.try_recv().is_ok(), "and continues with what is left");
    }
}
