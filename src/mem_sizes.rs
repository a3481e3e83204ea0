//! What each piece of per-call state costs inline (issue 20: memory per parked call). The figures are printed
//! (`cargo test -p parkd --lib mem_sizes -- --nocapture`) and pinned by upper bounds, so a field that makes a
//! per-call type grow shows up here. Heap parts (strings, vectors) come on top; see bench-results/README.md.

use crate::core::dialogs::{Leg, LegMedia};
use crate::core::parking::ParkedCall;
use crate::dialog::Dialog;
use crate::sip::{NameAddr, Request, Uri};

fn show(name: &str, size: usize, max: usize) {
    println!("size_of {name:<12} {size:>5} B (bound {max})");
    assert!(size <= max, "{name} grew to {size} B (bound {max}): box its rare or large parts");
}

/// Bounds are today's sizes on a 64-bit target (issue 20: Leg was 1000 B, ParkedCall 528, ServerTxn 1200 with
/// its whole request inline, a slab slot 1208 B even when empty).
#[test]
fn per_call_types_stay_small() {
    show("Request", size_of::<Request>(), 816);
    show("NameAddr", size_of::<NameAddr>(), 200);
    show("Uri", size_of::<Uri>(), 152);
    show("Dialog", size_of::<Dialog>(), 168);
    show("LegMedia", size_of::<LegMedia>(), 120);
    // +8 B (issue 21): the boxed session timer (RFC 4028), absent on most legs.
    show("Leg", size_of::<Leg>(), 392);
    show("ParkedCall", size_of::<ParkedCall>(), 144);
    show("ServerTxn", crate::txn::server_txn_size(), 400);
    show("ClientTxn", crate::txn::client_txn_size(), 1176);
    show("Slot<Server>", crate::txn::server_slot_size(), 16);
    // 232 B before RTCP (issue 19) added the outbound stream's SR counts and the next SR slot (24 B).
    show("media Leg", crate::media::plane::leg_size(), 256);
}
