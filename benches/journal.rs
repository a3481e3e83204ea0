//! What the journal costs on this machine's disk: `cargo bench --bench journal` (prints figures, no pass/fail).
//!
//! Each record is what a parked call will write: a Call-ID-sized id and a 300-byte value (~345 bytes framed).
//! Figures, each with its ratio to a floor measured in the same run on the same file system just before it:
//! * the floor: a bare loop of `write` (one frame's bytes) + `fdatasync`, one record at a time, paced like the
//!   runs (or back to back for the flat-out run) — what one durable record at a time costs on this disk;
//! * group commit (the default writer) at 500 and 5,000 records/s offered, open loop: appends/s achieved, p50/p99
//!   latency from submit to the durable report, records per sync; and flat out (50,000 records, 1,024 in
//!   flight);
//! * one `fdatasync` per record (the writer with `max_group = 1`) at the same rates, for comparison;
//! * compaction of 10,000 live records, against the same file operations done bare (write a file of the same
//!   size, fsync, rename, fsync the directory), and the encoding's share.
//!
//! Files go to `$PARKD_BENCH_DIR` (default: the system temp dir); point it at the disk `state_dir` will use.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use parkd::io::journal_file::LocalJournal;
use parkd::io::journal_writer::{JournalWriter, WriterConfig};
use parkd::journal::{CompactionPolicy, JournalToken, Record, RecordKey, RecordKind, RecordRef, Store};

const VALUE_LEN: usize = 300;

fn record(i: u64) -> Record {
    let id = format!("a84b4c76e66710-{i:08}@192.0.2.4");
    Record::put(RecordKey::new(RecordKind::PARKED_CALL, id), vec![(i % 251) as u8; VALUE_LEN])
}

fn frame_len() -> usize {
    let mut buf = Vec::new();
    parkd::journal::record::encode(&[record(0).as_ref()], &mut buf).unwrap();
    buf.len()
}

struct Lat {
    p50: Duration,
    p99: Duration,
}

fn lat(mut v: Vec<Duration>) -> Lat {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Lat { p50: at(0.50), p99: at(0.99) }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The floor: a bare loop of `write` (one frame's bytes) + `fdatasync` on a fresh file, one record at a time.
/// Paced at `rate` records/s like the runs (open loop, each timed from when it was due, so a floor that cannot
/// keep up shows its queue), or back to back when `rate` is 0. Returns the latencies and the records/s done.
fn floor_sync(dir: &Path, rate: f64, n: usize) -> (Lat, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(dir.join("floor")).unwrap();
    let buf = vec![7u8; frame_len()];
    let mut v = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let due = if rate > 0.0 { t0 + Duration::from_secs_f64(i as f64 / rate) } else { Instant::now() };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        v.push(due.elapsed());
    }
    let done = n as f64 / t0.elapsed().as_secs_f64();
    (lat(v), done)
}

struct Run {
    offered: f64,
    achieved: f64,
    lat: Lat,
    per_sync: f64,
}

/// Submits `n` records one per group at `rate` per second (open loop: late submissions go at once; `rate` 0 =
/// flat out with up to `in_flight` waiting), each timed from submit to its durable report.
fn run(dir: &Path, max_group: usize, rate: f64, n: usize, in_flight: usize) -> Run {
    let (journal, _) = LocalJournal::open(dir, CompactionPolicy::default()).unwrap();
    let (tx, rx) = channel::<(Instant, Vec<JournalToken>)>();
    let w = JournalWriter::spawn(journal, WriterConfig { max_group, ..Default::default() }, move |d| {
        assert!(d.result.is_ok());
        let _ = tx.send((Instant::now(), d.tokens));
    })
    .unwrap();
    let mut submitted = vec![Instant::now(); n];
    let mut done = vec![None::<Instant>; n];
    let mut completed = 0;
    let t0 = Instant::now();
    for (i, slot) in submitted.iter_mut().enumerate() {
        if rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        } else {
            while i - completed >= in_flight {
                let (at, tokens) = rx.recv().unwrap();
                for t in tokens {
                    done[t.0 as usize] = Some(at);
                    completed += 1;
                }
            }
        }
        *slot = Instant::now();
        w.submit(vec![record(i as u64)], JournalToken(i as u64)).unwrap();
    }
    let stats = (w.stats().commits.load(Ordering::Relaxed), w.stats().records.load(Ordering::Relaxed));
    w.shutdown();
    let commits = stats.0.max(1);
    for (at, tokens) in rx.iter() {
        for t in tokens {
            done[t.0 as usize] = Some(at);
        }
    }
    let last = done.iter().flatten().max().copied().unwrap();
    let v: Vec<Duration> = submitted.iter().zip(&done).map(|(s, d)| d.unwrap().duration_since(*s)).collect();
    Run {
        offered: rate,
        achieved: n as f64 / last.duration_since(t0).as_secs_f64(),
        lat: lat(v),
        per_sync: stats.1 as f64 / commits as f64,
    }
}

fn print_run(what: &str, r: &Run, floor: &Lat) {
    let offered = if r.offered > 0.0 { format!("{:>6.0}/s", r.offered) } else { "flat out".to_string() };
    println!(
        "{what:<22} offered {offered:>9}  achieved {:>7.0}/s  p50 {:>7.2} ms ({:>6.2}x)  p99 {:>7.2} ms ({:>6.2}x)  {:>6.1} records/sync",
        r.achieved,
        ms(r.lat.p50),
        ms(r.lat.p50) / ms(floor.p50),
        ms(r.lat.p99),
        ms(r.lat.p99) / ms(floor.p99),
        r.per_sync,
    );
}

fn main() {
    let base = std::env::var_os("PARKD_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let base = base.join(format!("parkd-journal-bench-{}", std::process::id()));
    println!("journal benchmark in {} ({}-byte records framed)", base.display(), frame_len());
    println!("floor: a bare write+fdatasync loop of the same records at the same pace (300 records), run just before");
    println!("the lines it is compared with, as a shared disk drifts; ratios are to that floor");
    let floor = |rate: f64| {
        let (l, done) = floor_sync(&fresh(&base, "floor"), rate, 300);
        let offered = if rate > 0.0 { format!("{rate:>6.0}/s") } else { "flat out".to_string() };
        println!(
            "{:<22} offered {offered:>9}  achieved {done:>7.0}/s  p50 {:>7.2} ms            p99 {:>7.2} ms",
            "floor",
            ms(l.p50),
            ms(l.p99)
        );
        (l, done)
    };

    for rate in [500.0, 5000.0] {
        let (f, _) = floor(rate);
        let r = run(&fresh(&base, "group"), 4096, rate, (rate * 3.0) as usize, 0);
        print_run("group commit", &r, &f);
        // One sync per record cannot keep up with more than the disk's sync rate: offered for a bounded time.
        let secs = if rate > 1000.0 { 0.5 } else { 3.0 };
        let r = run(&fresh(&base, "single"), 1, rate, (rate * secs) as usize, 0);
        print_run("one sync per record", &r, &f);
    }
    let (f, floor_rate) = floor(0.0);
    let r = run(&fresh(&base, "group-max"), 4096, 0.0, 50_000, 1024);
    print_run("group commit", &r, &f);
    println!("{:<22} flat out: {:.0}x the floor's records/s", "", r.achieved / floor_rate);
    compaction(&fresh(&base, "compact"));
    let _ = std::fs::remove_dir_all(&base);
}

/// Compaction of 10,000 live records (after 10,000 dead ones), against the same file operations done bare: write
/// the same bytes to a new file, fsync, rename it over another, fsync the directory.
fn compaction(dir: &Path) {
    let (mut j, _) = LocalJournal::open(dir, CompactionPolicy { ratio: 2, floor_bytes: u64::MAX / 4 }).unwrap();
    for round in 0..2u8 {
        let groups = (0..10_000u64)
            .map(|i| match record(i) {
                Record::Put { key, mut value } => {
                    value[0] = round;
                    vec![Record::put(key, value)]
                }
                r => vec![r],
            })
            .collect();
        j.commit(groups).unwrap();
    }
    let (mut took, mut bare) = (Vec::new(), Vec::new());
    let mut size = 0;
    for _ in 0..5 {
        j.commit(vec![vec![record(0)]]).unwrap();
        let c = j.compact().unwrap();
        size = c.bytes_after;
        took.push(c.took);
        let buf = vec![5u8; size as usize];
        let t = Instant::now();
        let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(dir.join("bare.tmp")).unwrap();
        f.write_all(&buf).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(dir.join("bare.tmp"), dir.join("bare")).unwrap();
        std::fs::File::open(dir).unwrap().sync_all().unwrap();
        bare.push(t.elapsed());
    }
    let encode: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let mut buf = Vec::with_capacity(size as usize);
            for (key, value) in j.live().iter() {
                parkd::journal::record::encode(&[RecordRef::Put { key, value }], &mut buf).unwrap();
            }
            std::hint::black_box(buf);
            t.elapsed()
        })
        .collect();
    let (c, b) = (lat(took), lat(bare));
    println!(
        "{:<22} 10,000 live records, {:.1} MB: median of 5 {:.2} ms; the same bare (write, fsync, rename, fsync dir) \
         {:.2} ms ({:.2}x); encoding alone {:.2} ms",
        "compaction",
        size as f64 / 1e6,
        ms(c.p50),
        ms(b.p50),
        ms(c.p50) / ms(b.p50),
        ms(lat(encode).p50)
    );
}
