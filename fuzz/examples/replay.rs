//! Replays fuzz inputs without libFuzzer: `cargo run --example replay -- TARGET FILE...` (core prints the
//! exchange with `TRACE=1`). Handy to look at a seed or a crash under a debugger.

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().unwrap_or_default();
    let trace = std::env::var_os("TRACE").is_some();
    for file in args {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        match target.as_str() {
            "datagram" => parkd_fuzz::datagram(&data),
            "stream" => parkd_fuzz::stream(&data),
            "sdp" => parkd_fuzz::sdp(&data),
            "core" => parkd_fuzz::core_traced(&data, trace),
            other => panic!("unknown target {other:?}: datagram | stream | sdp | core"),
        }
        println!("ok {file}");
    }
}
