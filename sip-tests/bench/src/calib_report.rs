//! `--calib-senders` (issue 20): the calibrator's packets sent every way of [`crate::calib_senders`], flat out and
//! paced as hold music for N streams, on parkd's core; which is cheapest, as a ratio to the calibrator the other
//! steps use (UDP `sendmmsg` ×64) measured in the same round. Writes `bench-results/calib/README.md`.
//!
//! Flags: `--calib-streams N,N` (paced steps, default 2000,5000), `--calib-secs S` (default 3), `--calib-rounds R`
//! (default 3; the ways alternate within each round).

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::calib::{self, Calib};
use crate::calib_senders::Way;
use crate::density;

/// One column of the table: flat out, or paced for this many streams.
#[derive(Clone, Copy)]
enum Load {
    FlatOut,
    Streams(usize),
}

pub fn cli(cpu: usize, args: &[String], out: &Path, progress: &mut dyn FnMut(String)) -> io::Result<()> {
    let list = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect::<Vec<usize>>());
    let streams = list("--calib-streams").unwrap_or_else(|| vec![2000, 5000]);
    let secs = list("--calib-secs").and_then(|v| v.first().copied()).unwrap_or(3) as u64;
    let rounds = list("--calib-rounds").and_then(|v| v.first().copied()).unwrap_or(3).max(1);
    let dir = if args.iter().any(|a| a == "--out") { out.to_path_buf() } else { out.join("calib") };
    std::fs::create_dir_all(&dir)?;
    let loads: Vec<Load> = std::iter::once(Load::FlatOut).chain(streams.iter().map(|&n| Load::Streams(n))).collect();
    // results[way][load] = one Calib per round (None: that way could not open, e.g. no CAP_NET_RAW).
    let mut results: Vec<Vec<Vec<Option<Calib>>>> = vec![vec![Vec::new(); loads.len()]; Way::ALL.len()];
    let mut refused: Vec<Option<String>> = vec![None; Way::ALL.len()];
    for round in 0..rounds {
        for (w, way) in Way::ALL.iter().enumerate() {
            for (l, load) in loads.iter().enumerate() {
                let (rate, sinks) = match load {
                    Load::FlatOut => (None, density::calib_sinks(2000)?),
                    Load::Streams(n) => (Some(*n as u64 * 50), density::calib_sinks(*n)?),
                };
                let r = calib::run_way(*way, cpu, rate, Duration::from_secs(secs), &sinks);
                match &r {
                    Ok(c) => progress(format!("calib senders round {}/{rounds}: {} {}: {:.2} µs/pkt, {:.0} pkt/s, {} received", round + 1, way.name(), label(*load), c.us_per_pkt, c.pps, c.received)),
                    Err(e) => {
                        progress(format!("calib senders: {} unavailable: {e}", way.name()));
                        refused[w] = Some(e.to_string());
                    }
                }
                results[w][l].push(r.ok());
            }
        }
    }
    let text = report(&loads, &results, &refused, secs, rounds, &args.join(" "));
    std::fs::write(dir.join("README.md"), &text)?;
    progress(format!("calib senders: wrote {}", dir.join("README.md").display()));
    print!("{text}");
    Ok(())
}

fn label(load: Load) -> String {
    match load {
        Load::FlatOut => "flat out".into(),
        Load::Streams(n) => format!("{n} streams ({} pkt/s)", n * 50),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn report(loads: &[Load], results: &[Vec<Vec<Option<Calib>>>], refused: &[Option<String>], secs: u64, rounds: usize, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# The cheapest sender for hold-music packets (issue 20)\n");
    let _ = writeln!(s, "`{command}`: 172-byte datagrams to the RTP sinks of the density step, from one thread pinned to parkd's core, {secs} s per cell, {rounds} rounds (the ways alternate within each round). Cells: median CPU µs per packet sent (the sender thread's CPU over packets the kernel took) and, in brackets, the median over rounds of its ratio to the calibrator of the other steps (UDP `sendmmsg` ×64) measured in the same round; `delivered` is the share of sent packets the sinks received (the check that a way's packets are real).\n");
    let mut head = String::from("| way |");
    let mut rule = String::from("|---|");
    for l in loads {
        let _ = write!(head, " {} |", label(*l));
        rule.push_str("---|");
    }
    head.push_str(" delivered |");
    rule.push_str("---|");
    let _ = writeln!(s, "{head}\n{rule}");
    let mut best: Vec<(f64, String)> = vec![(f64::INFINITY, String::new()); loads.len()];
    for (w, way) in Way::ALL.iter().enumerate() {
        let mut row = format!("| {} |", way.name());
        if let Some(e) = &refused[w] {
            let _ = writeln!(s, "{row} unavailable: {e} |");
            continue;
        }
        let (mut sent, mut got) = (0.0, 0.0);
        for l in 0..loads.len() {
            let cells = &results[w][l];
            let us = median(cells.iter().flatten().map(|c| c.us_per_pkt).collect());
            let ratios = median(cells.iter().zip(&results[0][l]).filter_map(|(c, r)| Some(c.as_ref()?.us_per_pkt / r.as_ref()?.us_per_pkt)).collect());
            for c in cells.iter().flatten() {
                sent += c.sent as f64;
                got += c.received as f64;
            }
            let pps = median(cells.iter().flatten().map(|c| c.pps).collect()).unwrap_or(0.0);
            let behind = matches!(loads[l], Load::Streams(n) if pps < 0.98 * (n * 50) as f64);
            match (us, ratios) {
                (Some(us), Some(r)) => {
                    let mark = if behind { format!(" † {:.0}k pkt/s", pps / 1e3) } else { String::new() };
                    let _ = write!(row, " {us:.2} ({r:.2}×){mark} |");
                    if us < best[l].0 && !behind {
                        best[l] = (us, way.name());
                    }
                }
                _ => row.push_str(" — |"),
            }
        }
        let _ = writeln!(s, "{row} {:.3} |", if sent > 0.0 { got / sent } else { 0.0 });
    }
    let _ = writeln!(s, "\n† could not keep the rate (the packets per second it reached, median); left out of \"cheapest\".\n");
    for (l, (us, name)) in loads.iter().zip(&best) {
        let _ = writeln!(s, "- Cheapest {}: **{name}**, {us:.2} µs per packet.", label(*l));
    }
    s.push_str(NOT_MEASURED);
    s
}

const NOT_MEASURED: &str = "\nNot measured here: UDP GSO (`UDP_SEGMENT`) cuts one buffer into segments for one destination, and hold \
music sends one packet per destination per 20 ms frame, so it has nothing to segment; io_uring was measured inside parkd \
(`rtp_sender = \"io_uring\"`: 3.65–3.89 µs per packet against 2.78–3.28 for its raw socket at 5,000 calls, README \
\"How hold music is sent\"), so it is not the cheapest.\n";
