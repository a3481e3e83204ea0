//! Real client programs the tests drive, for what a SIPp scenario cannot show.
//!
//! * [`baresip`] — [`Baresip`](baresip::Baresip): a real softphone (baresip 1.0) on its own loopback address,
//!   sending a pure tone and recording what it hears; [`baresip_ctrl`] is its `ctrl_tcp` command client.
//! * [`linphone`] — [`Linphone`](linphone::Linphone): linphone 5.1's console (`linphonec`) over TLS with SDES
//!   SRTP, sending a pure tone from a WAV file and recording what it hears.
//! * [`browser`] — [`Chromium`](browser::Chromium): headless Chromium over the DevTools protocol, for the
//!   attendant page.

pub mod baresip;
pub mod baresip_ctrl;
pub mod browser;
pub mod linphone;
