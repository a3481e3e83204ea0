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

#[test]
fn per_call_types_stay_small() {
    show("Request", size_of::<Request>(), usize::MAX);
    show("NameAddr", size_of::<NameAddr>(), usize::MAX);
    show("Uri", size_of::<Uri>(), usize::MAX);
    show("Dialog", size_of::<Dialog>(), usize::MAX);
    show("LegMedia", size_of::<LegMedia>(), usize::MAX);
    show("Leg", size_of::<Leg>(), usize::MAX);
    show("ParkedCall", size_of::<ParkedCall>(), usize::MAX);
    show("ServerTxn", crate::txn::server_txn_size(), usize::MAX);
    show("ClientTxn", crate::txn::client_txn_size(), usize::MAX);
    show("Slot<Server>", crate::txn::server_slot_size(), usize::MAX);
    show("media Leg", crate::media::plane::leg_size(), usize::MAX);
}
