//! End-to-end test harness for parkd (see tests/).

pub mod bench;
