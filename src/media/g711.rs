//! ITU-T G.711 μ-law and A-law: encode, 256-entry decode tables and μ↔A transcoding tables.
//!
//! The encoders follow the reference algorithm (ITU-T G.711 and the classic Sun `g711.c`):
//! μ-law adds a bias of 0x84 after clipping the magnitude to 32635; A-law works on the 13-bit
//! magnitude and toggles even bits (XOR 0x55). Decoding returns the midpoint of each
//! quantization interval. All tables are computed at compile time.

/// μ-law bias added to the magnitude before finding the segment (G.711 §3, "bias 33" in 14-bit units).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude that μ-law can represent after the bias is added without overflow.
const ULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear PCM sample as μ-law.
pub const fn linear_to_ulaw(pcm: i16) -> u8 {
    let mut s = pcm as i32;
    let sign: i32 = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    if s > ULAW_CLIP {
        s = ULAW_CLIP;
    }
    s += ULAW_BIAS;
    // Segment (exponent) = position of the highest set bit above bit 7, 0..=7.
    let top = 31 - (s as u32).leading_zeros() as i32;
    let exp = if top > 7 { top - 7 } else { 0 };
    let mantissa = (s >> (exp + 3)) & 0x0F;
    !((sign | (exp << 4) | mantissa) as u8)
}

/// Decodes one μ-law byte to 16-bit linear PCM (range ±32124).
pub const fn ulaw_to_linear_calc(u: u8) -> i16 {
    let u = !u;
    let exp = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exp) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Segment end points of A-law, in 13-bit magnitude units.
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Encodes one 16-bit linear PCM sample as A-law.
pub const fn linear_to_alaw(pcm: i16) -> u8 {
    let mut s = (pcm as i32) >> 3; // 13-bit sample
    let mask: i32 = if s >= 0 {
        0xD5
    } else {
        s = -s - 1;
        0x55
    };
    let mut seg = 0usize;
    while seg < 8 && s > ALAW_SEG_END[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut aval = (seg as i32) << 4;
    if seg < 2 {
        aval |= (s >> 1) & 0x0F;
    } else {
        aval |= (s >> seg) & 0x0F;
    }
    (aval ^ mask) as u8
}

/// Decodes one A-law byte to 16-bit linear PCM (range ±32256).
pub const fn alaw_to_linear_calc(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_ulaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear_calc(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_decode() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear_calc(i as u8);
        i += 1;
    }
    t
}

const fn build_ulaw_to_alaw() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_alaw(ulaw_to_linear_calc(i as u8));
        i += 1;
    }
    t
}

const fn build_alaw_to_ulaw() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = linear_to_ulaw(alaw_to_linear_calc(i as u8));
        i += 1;
    }
    t
}

/// μ-law byte → linear sample.
pub static ULAW_DECODE: [i16; 256] = build_ulaw_decode();
/// A-law byte → linear sample.
pub static ALAW_DECODE: [i16; 256] = build_alaw_decode();
/// μ-law byte → A-law byte (decode then re-encode).
pub static ULAW_TO_ALAW: [u8; 256] = build_ulaw_to_alaw();
/// A-law byte → μ-law byte (decode then re-encode).
pub static ALAW_TO_ULAW: [u8; 256] = build_alaw_to_ulaw();

/// Decodes a μ-law byte through the table.
#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_DECODE[u as usize]
}

/// Decodes an A-law byte through the table.
#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_DECODE[a as usize]
}

/// Translates a payload in place with a 256-entry table (μ→A or A→μ).
#[inline]
pub fn transcode_in_place(payload: &mut [u8], table: &[u8; 256]) {
    for b in payload.iter_mut() {
        *b = table[*b as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_known_values() {
        // ITU-T G.711 Table 2a/2b: zero encodes to 0xFF (μ) and 0xD5 (A, even bits inverted).
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_alaw(-1), 0x55);
        // Full scale: clipped to the largest code.
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        // A mid-range value: 1000 lies in μ-law segment 3 (step 64).
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(ulaw_to_linear(0xCE), 988);
    }

    #[test]
    fn g711_codes_round_trip() {
        for c in 0..=255u8 {
            // μ-law 0x7F is "negative zero" and re-encodes as positive zero 0xFF.
            let expect = if c == 0x7F { 0xFF } else { c };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), expect, "μ-law code {c:#04x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "A-law code {c:#04x}");
        }
    }

    #[test]
    fn g711_quantization_error_is_bounded() {
        let mut x = -32000i32;
        while x <= 32000 {
            let s = x as i16;
            let bound = x.abs() / 30 + 16;
            let eu = (ulaw_to_linear(linear_to_ulaw(s)) as i32 - x).abs();
            let ea = (alaw_to_linear(linear_to_alaw(s)) as i32 - x).abs();
            assert!(eu <= bound, "μ-law error {eu} at {x}");
            assert!(ea <= bound, "A-law error {ea} at {x}");
            x += 7;
        }
    }

    #[test]
    fn g711_transcoding_tables_preserve_the_signal() {
        for c in 0..=255u8 {
            let lin = ulaw_to_linear(c) as i32;
            let via_a = alaw_to_linear(ULAW_TO_ALAW[c as usize]) as i32;
            assert!((lin - via_a).abs() <= lin.abs() / 30 + 16, "μ {c:#04x}: {lin} vs {via_a}");
            let lin = alaw_to_linear(c) as i32;
            let via_u = ulaw_to_linear(ALAW_TO_ULAW[c as usize]) as i32;
            assert!((lin - via_u).abs() <= lin.abs() / 30 + 16, "A {c:#04x}: {lin} vs {via_u}");
        }
        assert_eq!(ULAW_TO_ALAW[0xFF], 0xD5);
        assert_eq!(ALAW_TO_ULAW[0xD5], 0xFE); // A-law zero is +8, one μ-law step above zero
        let mut p = [0xFFu8, 0x80, 0x00];
        transcode_in_place(&mut p, &ULAW_TO_ALAW);
        assert_eq!(p, [0xD5, 0xAA, 0x2A]);
    }
}
