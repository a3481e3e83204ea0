//! Events the core reports: what happened to parked calls, in words an admin (and later an API) can use.

use super::legs::ParkHow;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ParkEvent {
    /// A call was parked in an orbit.
    Parked { lot: String, orbit: String, call_id: String, parked: String, parker: Option<String>, how: ParkHow },
    /// Someone dialed the orbit and took the call.
    Retrieved { lot: String, orbit: String, call_id: String, by: String },
    /// The parked party hung up while parked.
    Abandoned { lot: String, orbit: String, call_id: String },
    /// A bridged (retrieved) call ended; `by` says which side hung up.
    Ended { orbit: String, call_id: String, by: String },
    /// A park or retrieve was refused with a SIP status.
    Refused { number: String, status: u16, reason: String, call_id: String },
    /// A 2xx was never acknowledged: the leg was torn down (RFC 3261 §13.3.1.4).
    AckTimeout { call_id: String },
}
