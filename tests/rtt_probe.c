/*
 * tests/rtt_probe.c - the round trip of one frame at a time through
 * `vhost-xdp --loopback`: what a packet that comes alone pays for the
 * backend's wake-up (Lab 3, `make bench`'s rtt rows).
 *
 *   tests/rtt_probe --socket PATH [--packed] [--event-idx] [--idle SECONDS]
 *                   [--count N] [--seconds S] [--gap USEC] [--size BYTES]
 *
 * Why a probe of our own, and not testpmd.  The issue asks for "testpmd's
 * latency at low rate" through vhost-xdp in each --pmd-mode.  testpmd's
 * --latencystats (DPDK's latencystats library) stamps each packet in an RX
 * callback and reads the stamp again in a TX callback: it times RX -> TX
 * *inside testpmd*, the forwarding core's own delay, not a round trip
 * through the backend.  A frontend that sends one frame, waits for it to
 * come back and only then sends the next measures exactly what the backend
 * adds to a lone packet: with --loopback that is one dequeue, one copy, one
 * enqueue, and, in --pmd-mode adaptive after a quiet moment, the kick and
 * the wake-up of a sleeping poll thread.  Its frontend side is the same as
 * testpmd's virtio PMD at low rate: it spins on its RX ring and kicks only
 * when the device's flags ask for a kick.  So it stands in for "testpmd's
 * latency at low rate".
 *
 * What it does:
 *   1. connects to PATH as DPDK 22.11's virtio_user does (tests/frontend.c,
 *      STYLE_DPDK; --packed: a packed ring, frontend.c's packed_handshake),
 *      acks no EVENT_IDX as virtio_user does (--event-idx: acks it), and
 *      asks for no calls (VRING_AVAIL_F_NO_INTERRUPT on a split ring, the
 *      driver event area's DISABLE on a packed one, virtio 1.2 §2.7.10,
 *      §2.8.10): like a poll-mode driver, it polls its RX used ring;
 *   2. stays silent --idle seconds: ready rings, RX buffers posted, nothing
 *      sent (an idle guest; a poll thread in adaptive mode goes to sleep);
 *   3. sends --count frames (default 100; with --seconds, for at most S
 *      seconds) of --size bytes (default 64), one at a time: the frame is put
 *      on TX, the clock read, the avail index published, a kick sent if the
 *      device asks for kicks (split: NO_NOTIFY clear, or with event idx
 *      avail_event crossed; packed: device event not DISABLE), and the RX
 *      used ring polled without pause until the frame is back (then the
 *      clock again); the frame is checked byte for byte, and the probe
 *      sleeps --gap microseconds before the next one.
 *
 * Output, one line at a time (stdout, flushed: scripts wait for each line):
 *   rtt_probe: connected to PATH: split ring, event idx off, no calls wanted
 *   rtt_probe: idle for 2 s
 *   rtt_probe: sending 200 frames of 64 bytes, gap 10000 us
 *   rtt_probe: 200 frames, each back byte for byte, in 2.03 s; 200 kicks sent; first frame 41.2 us
 *   rtt: min 8.1 median 35.0 p99 61.3 us (200 frames, gap 10000 us)
 * Exit status 0 when every frame came back intact, 1 otherwise (a line
 * says which frame and why), 2 for a bad argument.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <linux/virtio_ring.h>

#include "frontend.h"

#define FRAME_TIMEOUT_S 5.0     /* one frame not back after this: fail (x VX_TIME_SCALE) */

static struct {
    const char *socket;
    bool packed, event_idx;
    double idle_s, seconds;
    long count, gap_us, size;
} opt = { .count = 100, .size = 64 };

static unsigned long kicks;     /* eventfd writes we made, both rings */

/* Our own clock reads: a frame's round trip is microseconds. */
static double usec_since(double t0) { return (now() - t0) * 1e6; }

/* A spin-wait's breath (DPDK's rte_pause): lets the sibling hyper-thread run. */
static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Frame `seq` of opt.size bytes: locally administered MACs, the IEEE local
 * experimental ethertype 0x88b5, then a pattern unique to seq. */
static void make_frame(uint8_t *f, uint32_t seq)
{
    static const uint8_t head[14] = { 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5 };
    memcpy(f, head, sizeof head);
    for (long i = 14; i < opt.size; i++)
        f[i] = (uint8_t)(seq * 31u + (uint32_t)i * 7u + (uint32_t)(i >> 8));
    memcpy(f + 14, &seq, sizeof seq);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* === Split ring: frontend.c's frame_add / ring_flush / frame_recv ======== */

/* One frame out and back.  Returns its round trip in us, or -1 (c->err). */
static double split_one(struct conn *c, uint32_t seq)
{
    struct pair *q = &c->qp[0];
    uint8_t out[MAX_FRAME], back[MAX_FRAME];
    make_frame(out, seq);
    if (tx_reap(c, q) < 0 || !frame_add(c, q, out, (uint32_t)opt.size))
        return -1;
    unsigned long before = q->tx.kicks;
    double t0 = now();
    ring_flush(&q->tx, c->event_idx);     /* publish; kick if the device asks */
    double deadline = t0 + FRAME_TIMEOUT_S * time_scale;
    unsigned spins = 0;
    while (__atomic_load_n(&q->rx.used->idx, __ATOMIC_ACQUIRE) == q->rx.last_used_idx) {
        cpu_pause();
        if (++spins % 4096 == 0 && now() > deadline)
            return fail(c, "frame %u not back after %.0f s", seq, FRAME_TIMEOUT_S * time_scale), -1;
    }
    double rtt = usec_since(t0);
    kicks += q->tx.kicks - before;
    unsigned long rx_before = q->rx.kicks;
    int len = frame_recv(c, q, back, sizeof back);    /* checks the used entry, refills RX */
    kicks += q->rx.kicks - rx_before;
    if (len < 0)
        return -1;
    if (len != opt.size || memcmp(out, back, (size_t)opt.size) != 0)
        return fail(c, "frame %u came back as %d bytes, %s", seq, len,
                    len == opt.size ? "its bytes differ" : "not the bytes sent"), -1;
    return rtt;
}

/* === Packed ring: frontend.c's pring_add / pring_used ==================== */

static struct pring prx, ptx;

/* Kick unless the device said DISABLE (virtio 1.2 §2.8.10), as
 * frontend.c's pring_notify, counted. */
static void pring_kick(struct pring *r)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->device->flags, __ATOMIC_RELAXED) != VRING_PACKED_EVENT_FLAG_DISABLE &&
        eventfd_write(r->kick_fd, 1) == 0)
        kicks++;
}

static double packed_one(struct conn *c, uint32_t seq)
{
    uint16_t id;
    uint32_t len;
    while (prx.inflight < PACKED_NUM)
        if (!packed_rx_buffer(&prx))
            return fail(c, "packed RX ring: no room for a buffer"), -1;
    pring_kick(&prx);
    while (pring_used(c, &ptx, &id, &len) > 0)
        ;                                   /* TX chains the device is done with */
    uint8_t *buf = ptx.bufs + (size_t)ptx.avail_slot * PACKED_BUF;
    memset(buf, 0, HDR_LEN);
    make_frame(buf + HDR_LEN, seq);
    struct seg seg = { 0, (uint32_t)(HDR_LEN + opt.size) };
    if (c->err[0] || !pring_add(&ptx, &seg, 1, false))
        return fail(c, "packed TX ring full at frame %u", seq), -1;
    double t0 = now();
    pring_kick(&ptx);
    double deadline = t0 + FRAME_TIMEOUT_S * time_scale;
    unsigned spins = 0;
    int got;
    while ((got = pring_used(c, &prx, &id, &len)) == 0) {
        cpu_pause();
        if (++spins % 4096 == 0 && now() > deadline)
            return fail(c, "frame %u not back after %.0f s", seq, FRAME_TIMEOUT_S * time_scale), -1;
    }
    double rtt = usec_since(t0);
    if (got < 0)
        return -1;
    uint8_t want[MAX_FRAME];
    const uint8_t *b = prx.bufs + (size_t)id * PACKED_BUF;
    make_frame(want, seq);
    if (len != HDR_LEN + opt.size || memcmp(b + HDR_LEN, want, (size_t)opt.size) != 0)
        return fail(c, "frame %u came back as %u bytes, %s", seq, len - HDR_LEN,
                    len == HDR_LEN + opt.size ? "its bytes differ" : "not the bytes sent"), -1;
    return rtt;
}

/* === Set-up and the run ================================================== */

/* Connect, handshake, and say "no calls" in the driver's area. */
static bool probe_connect(struct conn *c)
{
    if (!conn_connect_to(c, opt.socket))
        return false;
    if (opt.packed) {
        if (!packed_handshake(c, &prx, &ptx, 0))
            return false;
        __atomic_store_n(&prx.driver->flags, VRING_PACKED_EVENT_FLAG_DISABLE, __ATOMIC_RELEASE);
        __atomic_store_n(&ptx.driver->flags, VRING_PACKED_EVENT_FLAG_DISABLE, __ATOMIC_RELEASE);
        return true;
    }
    struct fe_opts o = { .style = STYLE_DPDK, .fewer_features = opt.event_idx ? 0 : BIT(VIRTIO_RING_F_EVENT_IDX) };
    if (!handshake(c, &o))
        return false;
    /* Without event idx this is what asks for no calls; with it, used_event
     * does (frontend.c moves it as it reads, as a driver that wants them). */
    __atomic_store_n(&c->qp[0].rx.avail->flags, VRING_AVAIL_F_NO_INTERRUPT, __ATOMIC_RELEASE);
    __atomic_store_n(&c->qp[0].tx.avail->flags, VRING_AVAIL_F_NO_INTERRUPT, __ATOMIC_RELEASE);
    return true;
}

/* The summary: "rtt: min X median Y p99 Z us (N frames, gap G us)". */
static void report(double *rtt, long n, double seconds)
{
    if (n == 0)
        return;
    double first = rtt[0];
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
    long p99 = (n * 99 + 99) / 100 - 1;     /* the ceil(0.99 n)-th smallest */
    double median = n % 2 ? rtt[n / 2] : (rtt[n / 2 - 1] + rtt[n / 2]) / 2;
    printf("rtt_probe: %ld frames, each back byte for byte, in %.2f s; %lu kicks sent; first frame %.1f us\n", n,
           seconds, kicks, first);
    printf("rtt: min %.1f median %.1f p99 %.1f us (%ld frames, gap %ld us)\n", rtt[0], median, rtt[p99], n,
           opt.gap_us);
}

static long number(const char *name, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "rtt_probe: %s %s: want %ld..%ld\n", name, s ? s : "(missing)", lo, hi);
        exit(2);
    }
    return v;
}

/* A duration in seconds, decimals allowed: 0 .. one hour. */
static double seconds(const char *name, const char *s)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : -1;
    if (!s || errno || end == s || *end || !(v >= 0 && v <= 3600)) {
        fprintf(stderr, "rtt_probe: %s %s: want seconds, 0..3600\n", name, s ? s : "(missing)");
        exit(2);
    }
    return v;
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--socket") && v)
            opt.socket = argv[++i];
        else if (!strcmp(a, "--packed"))
            opt.packed = true;
        else if (!strcmp(a, "--event-idx"))
            opt.event_idx = true;
        else if (!strcmp(a, "--idle"))
            opt.idle_s = seconds(a, argv[++i < argc ? i : 0]);
        else if (!strcmp(a, "--seconds"))
            opt.seconds = seconds(a, argv[++i < argc ? i : 0]);
        else if (!strcmp(a, "--count"))
            opt.count = number(a, argv[++i < argc ? i : 0], 1, 1000000);
        else if (!strcmp(a, "--gap"))
            opt.gap_us = number(a, argv[++i < argc ? i : 0], 0, 10000000);
        else if (!strcmp(a, "--size"))
            opt.size = number(a, argv[++i < argc ? i : 0], MIN_FRAME, MAX_FRAME);
        else
            opt.socket = NULL, i = argc;
    }
    if (!opt.socket || (opt.packed && opt.event_idx)) {
        fprintf(stderr, "usage: rtt_probe --socket PATH [--packed | --event-idx] [--idle SECONDS] [--count N] "
                        "[--seconds S] [--gap USEC] [--size BYTES]\n");
        exit(2);
    }
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    const char *scale = getenv("VX_TIME_SCALE");
    if (scale && atof(scale) >= 1)
        time_scale = atof(scale);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct conn *c = conn_new("rtt_probe", false);
    double *rtt = calloc((size_t)opt.count, sizeof *rtt);
    if (!c || !rtt || !probe_connect(c)) {
        printf("rtt_probe: %s: %s\n", opt.socket, c && c->err[0] ? c->err : "out of memory");
        return 1;
    }
    printf("rtt_probe: connected to %s: %s ring, event idx %s, no calls wanted\n", opt.socket,
           opt.packed ? "packed" : "split", c->event_idx ? "on" : "off");
    if (opt.idle_s > 0) {
        printf("rtt_probe: idle for %.3g s\n", opt.idle_s);
        sleep_ms((int)(opt.idle_s * 1000));
    }
    printf("rtt_probe: sending %ld frames of %ld bytes, gap %ld us\n", opt.count, opt.size, opt.gap_us);
    long n = 0;
    double t_start = now();
    for (; n < opt.count && (opt.seconds == 0 || now() - t_start < opt.seconds); n++) {
        double t = opt.packed ? packed_one(c, (uint32_t)n) : split_one(c, (uint32_t)n);
        if (t < 0)
            break;
        rtt[n] = t;
        if (opt.gap_us > 0) {
            struct timespec ts = { opt.gap_us / 1000000, opt.gap_us % 1000000 * 1000 };
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        }
    }
    bool ok = !c->err[0];
    if (!ok)
        printf("rtt_probe: frame %ld: %s\n", n + 1, c->err);
    report(rtt, n, now() - t_start);
    conn_free(c);
    free(rtt);
    return ok ? 0 : 1;
}
