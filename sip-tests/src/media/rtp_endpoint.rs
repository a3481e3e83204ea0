//! [`RtpEndpoint`]: a phone's media socket on 127.0.0.1, played by the test.
//!
//! It records every RTP packet that arrives (source, SSRC, sequence, timestamp, payload type, arrival time,
//! and whether the payload is one of our test patterns or something else, i.e. hold music). It can talk:
//! once the first packet has arrived it sends a 20 ms stream of a recognizable pattern back to where the
//! packets come from (symmetric RTP), using the payload type it received.

use crate::media::rtp_report::StreamReport;
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a payload looks like to the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadClass {
    /// The pattern an [`RtpEndpoint`] sends when talking with this tag.
    Pattern(u8),
    /// Anything else (hold music, silence...).
    Other,
}

/// One packet as received.
#[derive(Clone, Debug)]
pub struct ReceivedPacket {
    pub at: Instant,
    pub from: SocketAddr,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// Whole datagram length (172 for 20 ms of G.711 with a bare 12-byte header).
    pub len: usize,
    pub class: PayloadClass,
    /// The payload bytes (to recognise known audio such as the orbit announcement).
    pub payload: Vec<u8>,
}

/// The pattern payload for `tag`: 160 bytes alternating `tag` and `tag ^ 0x5A`.
pub fn pattern_payload(tag: u8) -> Vec<u8> {
    (0..160).map(|i| if i % 2 == 0 { tag } else { tag ^ 0x5A }).collect()
}

/// Classifies a payload: one of our patterns, or something else.
pub fn classify(payload: &[u8]) -> PayloadClass {
    let Some(&tag) = payload.first() else { return PayloadClass::Other };
    if payload.len() >= 16 && payload.iter().enumerate().all(|(i, &b)| b == if i % 2 == 0 { tag } else { tag ^ 0x5A }) {
        PayloadClass::Pattern(tag)
    } else {
        PayloadClass::Other
    }
}

#[derive(Default)]
struct State {
    packets: Vec<ReceivedPacket>,
    /// Where the last packet came from: where we talk to (symmetric RTP).
    peer: Option<SocketAddr>,
    /// Payload type of the last packet received: the one we talk with.
    payload_type: Option<u8>,
    not_rtp: usize,
    sent: usize,
    /// The outgoing stream's next sequence number and timestamp (shared by the talk loop and key presses).
    seq: u16,
    ts: u32,
}

/// A test phone's RTP socket. Threads stop when it drops.
pub struct RtpEndpoint {
    socket: Arc<UdpSocket>,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    talk_tag: Arc<AtomicU8>,
    threads: Vec<JoinHandle<()>>,
    name: String,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RtpEndpoint {
    /// Binds 127.0.0.1:0 and starts recording.
    pub fn bind(name: &str) -> RtpEndpoint {
        RtpEndpoint::bind_on(std::net::Ipv4Addr::LOCALHOST.into(), name)
    }

    /// Binds `ip` (e.g. `::1`, an IPv6 phone), any port, and starts recording.
    pub fn bind_on(ip: std::net::IpAddr, name: &str) -> RtpEndpoint {
        let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("RTP endpoint {name}: bind: {e}"));
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        let socket = Arc::new(socket);
        let state = Arc::new(Mutex::new(State { seq: 1000, ts: 50_000, ..State::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let talk_tag = Arc::new(AtomicU8::new(0));
        let receiver = {
            let (socket, state, stop) = (socket.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || receive_loop(&socket, &state, &stop))
        };
        let sender = {
            let (socket, state, stop, talk_tag) = (socket.clone(), state.clone(), stop.clone(), talk_tag.clone());
            std::thread::spawn(move || send_loop(&socket, &state, &stop, &talk_tag))
        };
        RtpEndpoint { socket, state, stop, talk_tag, threads: vec![receiver, sender], name: name.to_string() }
    }

    /// The local port (what the SDP offer names).
    pub fn port(&self) -> u16 {
        self.socket.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Starts sending our pattern with `tag` (nonzero) every 20 ms to the learned peer, once there is one.
    pub fn start_talking(&self, tag: u8) {
        assert_ne!(tag, 0, "tag 0 means silent");
        self.talk_tag.store(tag, Ordering::SeqCst);
    }

    /// Presses `key` (`0`-`9`, `*`, `#`, `A`-`D`) as a phone does in RFC 4733 (telephone-event on payload type
    /// `pt`, to where packets come from): a start packet with the marker, two updates, three end packets, all with
    /// the event's timestamp, 20 ms apart, in the same stream (SSRC, sequence numbers) as the talk loop. Panics when
    /// no packet has arrived yet (no peer to send to).
    pub fn press(&self, key: char, pt: u8) {
        let event = "0123456789*#ABCD".find(key.to_ascii_uppercase()).unwrap_or_else(|| panic!("{key:?} is not a DTMF key"));
        let peer = lock(&self.state).peer.unwrap_or_else(|| panic!("{}: no peer to press keys to", self.name));
        let ssrc = 0x7E57_0000 ^ std::process::id() ^ u32::from(self.talk_tag.load(Ordering::SeqCst));
        let start_ts = lock(&self.state).ts;
        for (i, (end, duration)) in [(false, 160u16), (false, 320), (false, 480), (true, 640), (true, 640), (true, 640)].into_iter().enumerate() {
            let [d0, d1] = duration.to_be_bytes();
            let payload = [event as u8, if end { 0x80 | 10 } else { 10 }, d0, d1];
            let seq = {
                let mut st = lock(&self.state);
                let seq = st.seq;
                st.seq = seq.wrapping_add(1);
                seq
            };
            let built = RtpPacketBuilder::new().payload_type(pt).ssrc(ssrc).sequence(Seq::from(seq)).timestamp(start_ts).marked(i == 0).payload(&payload).build();
            if let Ok(bytes) = built {
                let _ = self.socket.send_to(&bytes, peer);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending.
    pub fn stop_talking(&self) {
        self.talk_tag.store(0, Ordering::SeqCst);
    }

    /// How many packets we have sent.
    pub fn sent_count(&self) -> usize {
        lock(&self.state).sent
    }

    /// Everything received so far.
    pub fn packets(&self) -> Vec<ReceivedPacket> {
        lock(&self.state).packets.clone()
    }

    /// Number of datagrams that were not parseable RTP.
    pub fn not_rtp_count(&self) -> usize {
        lock(&self.state).not_rtp
    }

    /// Waits until `pred` holds for the packets received so far, or `timeout` passes. Returns whether it held.
    /// `pred` runs with the endpoint's lock held: it must look only at the slice it is given (calling
    /// [`RtpEndpoint::packets`] or a helper that does, on the same endpoint, would deadlock).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[ReceivedPacket]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&lock(&self.state).packets) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` packets of class `class` have arrived.
    pub fn wait_for_class(&self, class: PayloadClass, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |p| p.iter().filter(|x| x.class == class).count() >= n)
    }

    /// A report over the packets of class `class` received so far.
    pub fn report(&self, class: PayloadClass) -> StreamReport {
        let packets: Vec<ReceivedPacket> = self.packets().into_iter().filter(|p| p.class == class).collect();
        StreamReport::of(&self.name, &packets)
    }

    /// The endpoint's name (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for RtpEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn receive_loop(socket: &UdpSocket, state: &Mutex<State>, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // read timeout: check `stop` again
        };
        let at = Instant::now();
        let data = buf.get(..n).unwrap_or_default();
        let mut st = lock(state);
        match RtpReader::new(data) {
            Ok(rtp) => {
                let packet = ReceivedPacket {
                    at,
                    from,
                    ssrc: rtp.ssrc(),
                    seq: u16::from(rtp.sequence_number()),
                    timestamp: rtp.timestamp(),
                    payload_type: rtp.payload_type(),
                    marker: rtp.mark(),
                    len: n,
                    class: classify(rtp.payload()),
                    payload: rtp.payload().to_vec(),
                };
                st.peer = Some(from);
                st.payload_type = Some(packet.payload_type);
                st.packets.push(packet);
            }
            Err(_) => st.not_rtp += 1,
        }
    }
}

fn send_loop(socket: &UdpSocket, state: &Mutex<State>, stop: &AtomicBool, talk_tag: &AtomicU8) {
    let ssrc: u32 = 0x7E57_0000 ^ std::process::id();
    let mut first = true;
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        // Absolute schedule; after a long stall (loaded machine), resynchronise instead of bursting.
        next += Duration::from_millis(20);
        if Instant::now() > next + Duration::from_millis(200) {
            next = Instant::now() + Duration::from_millis(20);
        }
        let tag = talk_tag.load(Ordering::SeqCst);
        if tag == 0 {
            continue;
        }
        let (peer, pt, seq, ts) = {
            let mut st = lock(state);
            let (seq, ts) = (st.seq, st.ts);
            if st.peer.is_some() && st.payload_type.is_some() {
                st.seq = seq.wrapping_add(1);
                st.ts = ts.wrapping_add(160);
            }
            (st.peer, st.payload_type, seq, ts)
        };
        let (Some(peer), Some(pt)) = (peer, pt) else { continue };
        // A parkd sending telephone-events (a relayed key) must not make us talk on its event PT.
        let pt = if pt == 0 || pt == 8 { pt } else { 0 };
        let payload = pattern_payload(tag);
        let built = RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(ssrc ^ u32::from(tag))
            .sequence(Seq::from(seq))
            .timestamp(ts)
            .marked(first)
            .payload(&payload)
            .build();
        if let Ok(bytes) = built {
            if socket.send_to(&bytes, peer).is_ok() {
                lock(state).sent += 1;
            }
        }
        first = false;
    }
}
