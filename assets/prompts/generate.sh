#!/bin/sh
# Regenerates the spoken prompts parkd plays when it answers a self-park ("parked on" + the orbit's digits).
#
# Run once by hand; the output (*.ulaw) is committed and compiled into parkd with include_bytes!.
# Nothing runs this at build time, and CI does not need espeak-ng or sox.
#
# Needs: espeak-ng, sox (Debian: apt-get install espeak-ng sox).
# Output: raw G.711 mu-law, 8 kHz mono, no header; leading/trailing silence trimmed,
# speech level normalized to about -16 dBFS RMS (peaks limited), 5 ms fades against clicks.
set -eu
cd "$(dirname "$0")"
VOICE=${VOICE:-en-us}
SPEED=${SPEED:-160}   # words per minute
TARGET_DB=-16
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make_prompt() { # name text
    name=$1
    text=$2
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/$name.raw.wav" "$text"
    # 8 kHz mono 16-bit, telephone band, silence trimmed at both ends.
    sox "$tmp/$name.raw.wav" -r 8000 -c 1 -b 16 "$tmp/$name.trim.wav" \
        highpass 120 lowpass 3600 \
        silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse
    sox "$tmp/$name.trim.wav" "$tmp/$name.fade.wav" fade t 0.005 -0 0.005
    mv "$tmp/$name.fade.wav" "$tmp/$name.trim.wav"
    rms=$(sox "$tmp/$name.trim.wav" -n stats 2>&1 | awk '/^RMS lev dB/ {print $4}')
    gain=$(awk -v r="$rms" -v t="$TARGET_DB" 'BEGIN { printf "%.2f", t - r }')
    sox "$tmp/$name.trim.wav" -t raw -r 8000 -c 1 -e mu-law -b 8 "$name.ulaw" gain -l "$gain"
    printf '%-9s %6d bytes  (rms was %s dB, gain %s dB)\n' "$name.ulaw" "$(wc -c < "$name.ulaw")" "$rms" "$gain"
}

make_prompt parked_on "parked on"
make_prompt digit_0 "zero"
make_prompt digit_1 "one"
make_prompt digit_2 "two"
make_prompt digit_3 "three"
make_prompt digit_4 "four"
make_prompt digit_5 "five"
make_prompt digit_6 "six"
make_prompt digit_7 "seven"
make_prompt digit_8 "eight"
make_prompt digit_9 "nine"
