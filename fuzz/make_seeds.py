#!/usr/bin/env python3
"""Writes the seed corpora of parkd's fuzz targets into fuzz/seeds/<target>/ (committed; re-run after changing
scenarios/ or the torture messages):

* datagram: the 49 RFC 4475 torture messages and every message the SIPp scenarios send (keywords filled in);
* stream:   the same messages back to back with CRLF keep-alives and CRLFCRLF pings, first byte = read size;
* sdp:      the SDP bodies of those messages and the phone SDPs of src/sdp.rs's tests;
* core:     whole call flows as core inputs (see fuzz/src/lib.rs `core`): each scenario alone, and scenarios
            combined (park + recall answered, park + retrieve, park + retrieve + REFER back to the lot, BLF
            watching a park, attended park, over TCP, through the trusted proxy), keywords that depend on
            parkd's answers left for the harness ([last_Via:], [$dialog_tag], [len], ...).

Usage: python3 fuzz/make_seeds.py   (from anywhere; no dependencies)
"""
import hashlib
import os
import re
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "scenarios")
RFC4475 = os.path.join(ROOT, "src", "sip", "testdata", "rfc4475")
OUT = os.path.join(ROOT, "fuzz", "seeds")
SEP = b"\n%%\n"

PEERS = [("127.0.0.1", 5070), ("127.0.0.1", 5071), ("127.0.0.1", 5072), ("127.0.0.4", 5060)]

# The number each scenario dials (-s), as the e2e tests run them.
SERVICE = {
    "park_directed_uac": "705", "retrieve_uac": "701", "retrieve_waits_for_bye": "701",
    "retrieve_empty_404": "555", "retrieve_refer_repark": "701", "retrieve_refer_refused": "701",
    "retrieve_by_replaces_uac": "701", "blf_subscribe": "701", "subscribe_forbidden_403": "701",
    "kamailio_retrieve_uac": "701",
}

# Keywords the harness fills in at run time (they depend on what parkd sent).
DYNAMIC = re.compile(
    r"^(len|peer_tag_param|next_url|routes|last_[A-Za-z-]+:|"
    r"\$(dialog_tag|to_tag_param|parkd_tag|parkd_from|remote_from|local_to|invite_via|invite_cseq))$")


def sends(path):
    """The scenario's steps: ("send", text) and ("pause", ms) in order."""
    steps = []
    # SIPp accepts "--" inside comments, XML does not: drop the comments first.
    text = re.sub(r"<!--.*?-->", "", open(path, encoding="latin-1").read(), flags=re.S)
    for el in ET.fromstring(text.split("?>", 1)[-1].replace('<!DOCTYPE scenario SYSTEM "sipp.dtd">', "")).iter():
        if el.tag == "send" and el.text and el.text.strip():
            lines = [l.strip() for l in el.text.strip("\n").split("\n")]
            while lines and not lines[0]:
                lines.pop(0)
            while lines and not lines[-1]:
                lines.pop()
            if "" in lines:
                i = lines.index("")
                head, body = lines[:i], lines[i + 1:]
            else:
                head, body = lines, []
            text = "\r\n".join(head) + "\r\n\r\n" + ("\r\n".join(body) + "\r\n" if body else "")
            steps.append(("send", text))
        elif el.tag == "pause":
            steps.append(("pause", int(el.get("milliseconds", "1000"))))
    return steps


def fill(text, peer, service, instance, index, static_all, uas=False):
    """Static keywords from the peer and scenario; dynamic ones too when `static_all` (plain message seeds). In
    a UAS scenario (parkd called) the Call-ID is parkd's, filled in by the harness."""
    ip, port = PEERS[peer]

    def repl(m):
        k = m.group(1)
        if (DYNAMIC.match(k) or (uas and k == "call_id")) and not static_all:
            return m.group(0)
        branch = re.match(r"^branch(?:-(\d+))?$", k)
        if branch:
            return "z9hG4bK-%d-%d" % (instance, index - int(branch.group(1) or 0))
        table = {
            "service": service, "local_ip": ip, "local_port": str(port), "remote_ip": "127.0.0.1",
            "remote_port": "5060", "transport": "UDP", "pid": "1", "call_number": str(instance),
            "call_id": "%d-%d@fuzz" % (instance, peer), "rtp_port": str(40000 + 2 * peer), "media_ip": ip,
            "media_ip_type": "4", "local_ip_type": "4", "user": "alice", "parker_port": "5071",
            "replaces": "1-0@fuzz;to-tag=x;from-tag=1SIPpTag001", "refer_to": "700", "park": "700",
            "contact_port": str(port), "$orbit": "701",
            # Only for plain message seeds: plausible values for what the harness fills in.
            "peer_tag_param": ";tag=a1b2c3", "$dialog_tag": "a1b2c3", "$to_tag_param": "a1b2c3",
            "next_url": "sip:700@127.0.0.1:5060", "routes": "",
            "last_Via:": "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-parkd-1",
            "last_From:": "From: <sip:701@127.0.0.1:5060>;tag=p1", "last_To:": "To: <sip:alice@127.0.0.1:5071>",
            "last_Call-ID:": "Call-ID: parkd-1@127.0.0.1", "last_CSeq:": "CSeq: 1 INVITE",
            "last_Record-Route:": "", "$parkd_from": "<sip:701@127.0.0.1:5060>;tag=p1",
            "$remote_from": "<sip:701@127.0.0.1:5060>;tag=p1", "$local_to": "<sip:alice@127.0.0.1:5071>",
            "$invite_via": "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-parkd-1", "$invite_cseq": "1", "$parkd_tag": "a1b2c3",
        }
        if k in table:
            return table[k]
        if k.startswith("$"):
            return "x"
        return m.group(0)

    text = re.sub(r"\[([^\]\[\s]{1,40})\]", repl, text)
    if static_all and "[len]" not in text:
        return text
    if static_all:
        head, _, body = text.partition("\r\n\r\n")
        text = text.replace("[len]", str(len(body.encode("latin-1", "replace"))))
    return text


def messages_static():
    out = []
    for name in sorted(os.listdir(SCENARIOS)):
        if not name.endswith(".xml"):
            continue
        scen = name[:-4]
        i = 0
        for kind, v in sends(os.path.join(SCENARIOS, name)):
            if kind == "send":
                out.append((scen, i, fill(v, 0, SERVICE.get(scen, "700"), 1, i, True).encode("latin-1", "replace")))
                i += 1
    return out


def torture():
    return [(n[:-4], open(os.path.join(RFC4475, n), "rb").read()) for n in sorted(os.listdir(RFC4475)) if n.endswith(".dat")]


def write(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def control(peer, tcp=False, jump=0):
    return bytes([peer | (4 if tcp else 0) | (jump << 3)])


# Time jumps (index into fuzz/src/lib.rs JUMPS_MS) for a <pause>.
def jump_for(ms):
    table = [0, 0, 0, 0, 0, 0, 0, 0, 1, 10, 100, 500, 1000, 2000, 4000, 8000, 16000, 31000, 32000, 33000, 45000, 46000, 60000,
             61000, 90000, 120000, 300000, 600000, 1800000, 1801000, 3600000, 7200000]
    best = 0
    for i, t in enumerate(table):
        if t <= max(ms, 1):
            best = i
    return best


def scenario_records(scen, peer, instance, tcp=False, first_jump=0, only=None):
    """Core records for one scenario run by `peer` (sends with index in `only`, all when None)."""
    records = []
    jump = first_jump
    i = 0
    path = os.path.join(SCENARIOS, scen + ".xml")
    uas = re.search(r"<(send|recv)\b", re.sub(r"<!--.*?-->", "", open(path, encoding="latin-1").read(), flags=re.S)).group(1) == "recv"
    for kind, v in sends(path):
        if kind == "pause":
            jump = max(jump, jump_for(v))
            continue
        if only is None or i in only:
            text = fill(v, peer, SERVICE.get(scen, "700"), instance, i, False, uas)
            if tcp:
                text = text.replace("SIP/2.0/UDP", "SIP/2.0/TCP").replace("transport=UDP", "transport=TCP")
            records.append(control(peer, tcp, jump) + text.encode("latin-1", "replace"))
            jump = 0
        i += 1
    return records


def core_seeds():
    seeds = []
    alone = [n[:-4] for n in sorted(os.listdir(SCENARIOS)) if n.endswith(".xml") and not n.startswith("kamailio_")]
    for scen in alone:
        seeds.append(scenario_records(scen, 0, 1))
    R = scenario_records
    # Park with the parker on peer 1, 46 s later the recall is answered (180, 200), then the parker hangs up.
    seeds.append(R("parked_recallable", 0, 1, only={0, 1}) + R("recall_parker_answers", 1, 2, first_jump=21) + R("parked_recallable", 0, 1, only={2}))
    # ... the recall rings until parkd CANCELs it (30 s), three rounds.
    rings = R("recall_parker_rings", 1, 2, first_jump=21)
    rings[1] = control(1, False, 17) + rings[1][1:]  # parkd CANCELs after the 30 s ring time
    seeds.append(R("parked_recallable", 0, 1, only={0, 1}) + rings + [control(1, False, 21) + rings[0][1:]] + rings[1:])
    # Park, retrieve from peer 1, the parked party answers parkd's BYE.
    seeds.append(R("parked_waits_for_bye", 0, 1, only={0, 1}) + R("retrieve_uac", 1, 2) + R("parked_waits_for_bye", 0, 1, only={2}))
    # Park, retrieve, the retriever REFERs the parked party back to 700 (re-park), answers the NOTIFYs.
    seeds.append(R("parked_waits_for_bye", 0, 1, only={0, 1}) + R("retrieve_refer_repark", 1, 2) + R("parked_waits_for_bye", 0, 1, only={2}))
    seeds.append(R("parked_waits_for_bye", 0, 1, only={0, 1}) + R("retrieve_refer_refused", 1, 2))
    # BLF: peer 2 watches 701 while peer 0 parks and hangs up.
    blf = R("blf_subscribe", 2, 3)
    seeds.append(blf[:2] + R("park_indirect_uac", 0, 1) + blf[2:])
    # Attended park: consultation call, then the transferee with Replaces.
    seeds.append(R("attended_park_consult", 0, 1, only={0, 1}) + R("attended_park_replaces", 1, 2) + R("attended_park_consult", 0, 1, only={2}))
    # Over TCP, and through the trusted proxy.
    seeds.append(R("parked_waits_for_bye", 0, 1, tcp=True, only={0, 1}) + R("retrieve_uac", 1, 2, tcp=True) + R("parked_waits_for_bye", 0, 1, tcp=True, only={2}))
    seeds.append(R("park_indirect_uac", 3, 1) + R("retrieve_empty_404", 3, 2))
    seeds.append(R("kamailio_park_uac", 3, 1, only={0, 1}) + R("kamailio_retrieve_uac", 3, 2))
    # The Digest-protected lot 800: a park (challenged) and a park into an empty orbit.
    seeds.append([r.replace(b"sip:700@", b"sip:800@").replace(b"<sip:700@", b"<sip:800@") for r in R("park_indirect_uac", 0, 1)])
    seeds.append([r.replace(b"sip:701@", b"sip:801@") for r in R("retrieve_uac", 1, 2)])
    # Torture messages as core input.
    seeds.append([control(0) + data for _, data in torture()[:20]])
    seeds.append([control(1, True) + data for _, data in torture()[20:]])
    return [SEP.join(s) for s in seeds]


def sdp_bodies(msgs):
    bodies = []
    for _, _, m in msgs + [(n, 0, d) for n, d in torture()]:
        head, sep, body = m.partition(b"\r\n\r\n")
        if sep and b"v=0" in body:
            bodies.append(body)
    src = open(os.path.join(ROOT, "src", "sdp.rs"), encoding="utf-8").read()
    for lit in re.findall(r'const [A-Z0-9_]+: &str = "((?:[^"\\]|\\.)*)";', src):
        bodies.append(lit.encode().decode("unicode_escape").encode("latin-1"))
    return bodies


def main():
    msgs = messages_static()
    tort = torture()
    for _, data in tort:
        write("datagram", data)
    for _, _, data in msgs:
        write("datagram", data)
    # Streams: each torture message alone; scenario messages back to back with keep-alives and pings.
    for i, (_, data) in enumerate(tort):
        write("stream", bytes([i % 64]) + data)
    for i in range(0, len(msgs), 3):
        chunk = [m for _, _, m in msgs[i:i + 3]]
        write("stream", bytes([(7 * i) % 64]) + b"\r\n".join(chunk) + b"\r\n\r\n" + (chunk[0] if chunk else b""))
    write("stream", bytes([5]) + b"\r\n\r\n\r\n" + b"".join(m for _, _, m in msgs[:2]))
    for body in sdp_bodies(msgs):
        write("sdp", body)
    for seed in core_seeds():
        write("core", seed)
    for t in ("datagram", "stream", "sdp", "core"):
        print(t, len(os.listdir(os.path.join(OUT, t))), "seeds")


if __name__ == "__main__":
    main()
