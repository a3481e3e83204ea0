//! Real client programs the tests drive, for what a SIPp scenario cannot show.
//!
//! * [`baresip`] — [`Baresip`](baresip::Baresip): a real softphone (baresip 1.0) on its own loopback address,
//!   sending a pure tone and recording what it hears; [`baresip_ctrl`] is its `ctrl_tcp` command client.
//! * [`browser`] — [`Chromium`](browser::Chromium): headless Chromium over the DevTools protocol, for the
//!   attendant page.

pub mod baresip;
pub mod baresip_ctrl;
pub mod browser;
