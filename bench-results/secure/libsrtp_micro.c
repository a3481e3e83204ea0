/* Reference figure for issue 19: ns per srtp_protect of one hold packet (12-byte RTP header + 160-byte payload) with
 * the system's libsrtp2 (Debian: built over NSS), per suite, against a memcpy floor in the same run.
 * cc -O2 libsrtp_micro.c -lsrtp2 -o libsrtp_micro && ./libsrtp_micro   (needs libsrtp2-dev; not part of parkd) */
#include <srtp2/srtp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PACKETS 50000
#define ROUNDS 25
static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static void header(unsigned char *p, unsigned short seq) {
    memset(p, 0, 12); p[0] = 0x80; p[2] = seq >> 8; p[3] = seq; p[8] = 0x12; p[9] = 0x34; p[10] = 0x56; p[11] = 0x78;
}
int main(void) {
    if (srtp_init() != srtp_err_status_ok) { fprintf(stderr, "srtp_init failed\n"); return 1; }
    unsigned char payload[160], buf[256], key[46];
    for (int i = 0; i < 160; i++) payload[i] = i * 3;
    for (int i = 0; i < 46; i++) key[i] = i * 31 + 7;
    volatile unsigned sink = 0;
    double floor = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t = now_ns();
        for (int i = 0; i < PACKETS; i++) { header(buf, i); memcpy(buf + 12, payload, 160); sink += buf[i % 172]; }
        double ns = (now_ns() - t) / PACKETS; if (ns < floor) floor = ns;
    }
    printf("libsrtp %s; floor: memcpy of the packet %.1f ns\n", srtp_get_version_string(), floor);
    const char *names[] = {"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"};
    for (int s = 0; s < 3; s++) {
        srtp_policy_t pol; memset(&pol, 0, sizeof pol);
        if (s == 0) srtp_crypto_policy_set_rtp_default(&pol.rtp);
        if (s == 1) srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&pol.rtp);
        if (s == 2) srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtp);
        srtp_crypto_policy_set_rtcp_default(&pol.rtcp);
        pol.ssrc.type = ssrc_specific; pol.ssrc.value = 0x12345678; pol.key = key; pol.window_size = 128; pol.allow_repeat_tx = 0;
        srtp_t ctx;
        if (srtp_create(&ctx, &pol) != srtp_err_status_ok) { printf("%s: not supported by this build\n", names[s]); continue; }
        double best = 1e30; unsigned short seq = 0;
        for (int r = 0; r < ROUNDS; r++) {
            double t = now_ns();
            for (int i = 0; i < PACKETS; i++) {
                header(buf, ++seq); memcpy(buf + 12, payload, 160); int len = 172;
                if (srtp_protect(ctx, buf, &len) != srtp_err_status_ok) { printf("protect failed\n"); return 1; }
                sink += len;
            }
            double ns = (now_ns() - t) / PACKETS; if (ns < best) best = ns;
        }
        printf("| %s | libsrtp2 srtp_protect (in place) | %.0f | %.1fx |\n", names[s], best, best / floor);
        srtp_dealloc(ctx);
    }
    return 0;
}
