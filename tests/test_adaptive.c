/*
 * tests/test_adaptive.c - interrupt mode (`--pmd-mode adaptive`) seen from
 * the frontend: our own vhost-user frontend (tests/frontend.c) against
 * `vhost-xdp --loopback --pmd-mode adaptive`.  No root, no peer.
 *
 *   tests/test_adaptive [path-to-vhost-xdp]        (default ./vhost-xdp)
 *
 * How the test knows the poll thread is asleep, without timing anything: a
 * thread that goes to sleep first turns the guest's kicks on, in guest
 * memory, where the frontend can see it (pmd_loop.c, "When there is nothing
 * to do"; virtqueue.c, vq_notify_enable).  On the TX ring, the one whose
 * kick wakes the thread in loopback:
 *   split ring without EVENT_IDX  used->flags has VRING_USED_F_NO_NOTIFY clear;
 *   split ring with EVENT_IDX     avail_event (after used->ring[num]) equals the
 *                                 avail->idx we published (the next entry kicks);
 *   packed ring                   the device event flags are not DISABLE.
 * The thread writes that just before it sleeps and takes it back as soon as
 * it wakes, so "kicks on" means "asleep, or about to be".  Before each send
 * below the frontend waits (5 s at most) for it; then it sends, and kicks
 * because the flag says so.
 *
 * Part A, for each of three rings: split without EVENT_IDX, split with it,
 * packed; each against a fresh back-end:
 *   1. pauses of 1 ms x 200, 100 ms x 3, 2 s x 1, each followed by a small
 *      burst (1-3 frames) sent only once kicks are on; then 300 frames sent
 *      0-300 us apart without waiting, so that some land just as the thread
 *      arms: every frame comes back in order, byte for byte;
 *   2. ring stop and start while the thread sleeps: GET_VRING_BASE on RX,
 *      then on TX, each answered (the control thread's hand-over is not
 *      stuck behind a sleeper), both rings set up afresh, traffic again;
 *   3. disconnect while the thread sleeps, a new connection, traffic;
 *   4. SIGTERM while the thread sleeps: exit status 0 within 5 s, no "did
 *      not stop" line;
 *   5. the exit lines: packets from the guest = packets to the guest = the
 *      frames we sent; per poll thread, sleeps = the sum of the causes,
 *      missed kicks 0, signal 0 (the wake-up eventfd did its job every
 *      time), woken by kick for at least half the sends that found kicks on,
 *      by hand-over at least once (part 2), and by timeout fewer than 60
 *      times (the idle time is about 3 s, 30 timeouts of 100 ms: a thread
 *      deaf to kicks would need one per send, over 200).
 * Part B, each against a fresh back-end, split rings:
 *   6. a NOFD kick (SET_VRING_KICK with bit 8, no fd) on TX: frames served by
 *      polling, the "no kick fd (NOFD)" line once, and the thread's sleep
 *      count the same in two --stats lines half a second and 100 frames apart;
 *   7. a frontend that never kicks (frontend.c's fe_no_kick): every frame
 *      comes back, the first after at most one sleep's timeout; the "does not
 *      kick" line once, missed kicks >= 1, and later frames come back too;
 *   8. a frontend that makes its kick eventfd blocking again (clears
 *      O_NONBLOCK) and reads the count itself right after each kick, racing
 *      the poll thread: no hang, every frame back, the ring said to be polled
 *      from now on, the back-end still answers a message, SIGTERM ends it.
 *
 * The whole run takes about 10 s, most of it the three 2 s pauses.
 */
#include "frontend.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#define ALARM_SECONDS   180         /* the whole program (times VX_TIME_SCALE) */
#define ARMED_SECONDS   5.0         /* at most this long for "kicks on" before a send */
#define JITTER_SENDS    300         /* part A: frames sent 0-300 us apart */
#define MAX_TIMEOUTS    60          /* sleeps ended by the 100 ms timeout, per back-end in part A */

static const char *binary;
static const char *const adaptive_args[] = { "--pmd-mode", "adaptive", NULL };

/* === One ring kind, one connection ======================================= */

struct kind {
    const char *name;
    bool packed;
    bool event_idx;                 /* split: ack VIRTIO_RING_F_EVENT_IDX */
};

/* The frontend's side of one connection, whichever the ring layout. */
struct link {
    const struct kind *k;
    struct conn *c;
    struct pring rx, tx;            /* packed rings (split: c->qp[0]) */
    uint32_t seq;                   /* packed: the next frame's number */
    uint64_t frames;                /* frames sent and back, over every connection */
    uint32_t gated;                 /* sends that waited for "kicks on" */
    uint32_t not_armed;             /* ... and did not see it within ARMED_SECONDS */
    int number;                     /* connections made */
};

static bool link_open(struct link *l)
{
    char tag[48];
    snprintf(tag, sizeof tag, "%s conn %d", l->k->name, ++l->number);
    l->c = conn_new(tag, false);
    if (!l->c)
        return false;
    l->seq = 0;
    memset(&l->rx, 0, sizeof l->rx);
    memset(&l->tx, 0, sizeof l->tx);
    l->rx.kick_fd = l->rx.call_fd = l->tx.kick_fd = l->tx.call_fd = -1;
    l->c->qp[0].salt = (uint32_t)(0x5000 + 0x100 * l->number + (l->k->event_idx ? 0x10 : 0));
    if (!conn_connect(l->c))
        return false;
    if (l->k->packed)
        return packed_handshake(l->c, &l->rx, &l->tx, 0);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = true, .npairs = 1,
                         .fewer_features = l->k->event_idx ? 0 : BIT(VIRTIO_RING_F_EVENT_IDX) };
    return handshake(l->c, &o) &&
           (l->c->event_idx == l->k->event_idx ||
            fail(l->c, "EVENT_IDX %s negotiated", l->c->event_idx ? "is" : "is not"));
}

static void link_close(struct link *l)
{
    if (l->k && l->k->packed) {
        pring_close(&l->rx);
        pring_close(&l->tx);
    }
    conn_free(l->c);
    l->c = NULL;
}

/* The oracle (see the top): are the guest's kicks on for the TX ring? */
static bool link_armed(struct link *l)
{
    if (l->k->packed)
        return __atomic_load_n(&l->tx.device->flags, __ATOMIC_ACQUIRE) != VRING_PACKED_EVENT_FLAG_DISABLE;
    struct ring *tx = &l->c->qp[0].tx;
    if (l->c->event_idx)
        return __atomic_load_n(avail_event(tx), __ATOMIC_ACQUIRE) == tx->published_idx;
    return !(__atomic_load_n(&tx->used->flags, __ATOMIC_ACQUIRE) & VRING_USED_F_NO_NOTIFY);
}

/* Wait (a condition, not a time) until the thread has gone to sleep. */
static bool wait_armed(struct link *l)
{
    double end = now() + ARMED_SECONDS * time_scale;
    while (!link_armed(l)) {
        if (now() > end)
            return false;
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
    return true;
}

/* n frames out on TX, all back on RX in order, byte for byte (5 s without
 * progress fails: frontend.c's traffic and packed_collect). */
static bool link_round(struct link *l, uint32_t n)
{
    bool ok = true;
    if (l->k->packed) {
        /* 8-slot rings: at most 3 frames a round (3 + 1 RX buffers, and the
         * second frame a chain of two TX slots). */
        for (uint32_t done = 0, m; ok && done < n; done += m, l->seq += m) {
            m = n - done < 3 ? n - done : 3;
            ok = packed_round(l->c, &l->rx, &l->tx, l->seq, m, m >= 2 ? 0x2 : 0);
        }
    } else {
        struct pair *q = &l->c->qp[0];
        ok = traffic(l->c, q, q->received + n);
    }
    if (ok)
        l->frames += n;
    return ok;
}

/* `count` pauses of `ms`, each followed by 1-3 frames sent once the kicks
 * are on.  False at the first frame that does not come back. */
static bool pauses(struct link *l, int count, int ms)
{
    for (int i = 0; i < count; i++) {
        sleep_ms(ms);
        l->gated++;
        if (!wait_armed(l))
            l->not_armed++;
        if (!link_round(l, 1 + (uint32_t)i % 3))
            return false;
    }
    return true;
}

/* `count` pauses of 0-300 us, each followed by one frame sent at once, not
 * waiting for the kicks: the thread arms after 100 us idle, so these land
 * on both sides of its arming, some in the moment between its last empty
 * poll and "kicks on", where only vq_notify_enable's second look finds them
 * (a frame it missed would wait for a 100 ms timeout: a missed kick). */
static bool jitter(struct link *l, int count)
{
    uint32_t x = 12345;
    for (int i = 0; i < count; i++) {
        x = x * 1103515245u + 12345u;
        struct timespec ts = { 0, (long)(x >> 8) % 300000L };
        nanosleep(&ts, NULL);
        if (!link_round(l, 1))
            return false;
    }
    return true;
}

/* === What the back-end says =============================================== */

/* One poll thread's line, e.g.
 *   vhost-xdp: exit: pmd 0: asleep 83.8% | sleeps 144 | woken by kick 77, NIC 0, hand-over 13, timeout 54, signal 0 | missed kicks 0 */
struct napi_line {
    bool found;
    double asleep;
    unsigned long long sleeps, kick, nic, handover, timeout, signal, missed;
};

struct napi_want {
    const char *prefix;             /* "exit: pmd 0: " or "stats: pmd 0: " */
    struct napi_line *out;
};

static bool napi_parse(const char *line, void *arg)
{
    struct napi_want *w = arg;
    const char *p = strstr(line, w->prefix);
    struct napi_line *n = w->out;
    if (!p)
        return false;
    n->found = sscanf(p + strlen(w->prefix),
                      "asleep %lf%% | sleeps %llu | woken by kick %llu, NIC %llu, hand-over %llu, timeout %llu, "
                      "signal %llu | missed kicks %llu",
                      &n->asleep, &n->sleeps, &n->kick, &n->nic, &n->handover, &n->timeout, &n->signal,
                      &n->missed) == 8;
    return n->found;     /* the first one after `from` */
}

/* The first line with `prefix` written after `from`, waiting up to `seconds`. */
static bool napi_line(long from, const char *prefix, double seconds, struct napi_line *n)
{
    struct napi_want w = { prefix, n };
    double end = now() + seconds * time_scale;
    memset(n, 0, sizeof *n);
    while (!log_scan(from, napi_parse, &w)) {
        if (now() > end)
            return false;
        sleep_ms(10);
    }
    return true;
}

static void napi_diag(const char *what, const struct napi_line *n)
{
    diag("%s: asleep %.1f%% | sleeps %llu | woken by kick %llu, NIC %llu, hand-over %llu, timeout %llu, signal %llu | "
         "missed kicks %llu", what, n->asleep, n->sleeps, n->kick, n->nic, n->handover, n->timeout, n->signal,
         n->missed);
}

/* "exit: from guest N packets, to guest M packets, D drops, ..." */
struct totals { bool found; unsigned long long from, to, drops; };

static bool totals_parse(const char *line, void *arg)
{
    struct totals *t = arg;
    const char *p = strstr(line, "exit: from guest ");
    if (p)
        t->found = sscanf(p, "exit: from guest %llu packets, to guest %llu packets, %llu drops", &t->from, &t->to,
                          &t->drops) == 3;
    return t->found;
}

/* A line of the log after `from`, without its "vhost-xdp: " prefix. */
static const char *shown(const char *line)
{
    const char *p = strstr(line, "vhost-xdp: ");
    return p ? p + 11 : line;
}

/* SIGTERM: exit status 0 within stop_backend_within's 5 s, socket removed,
 * no "did not stop" line. */
static void sigterm_check(const char *what, long from)
{
    double took;
    int st;
    bool gone = stop_backend_within(&took, &st);
    struct stat sb;
    bool removed = stat(sock_path, &sb) != 0;
    int stuck = log_count(from, "did not stop");
    check(gone && WIFEXITED(st) && WEXITSTATUS(st) == 0 && removed && stuck == 0,
          "%s: SIGTERM: exit status %d after %.2f s (limit %.0f s), socket removed %s, \"did not stop\" lines %d",
          what, gone && WIFEXITED(st) ? WEXITSTATUS(st) : -1, took, 5 * time_scale, removed ? "yes" : "NO", stuck);
}

/* A fresh back-end (its log appended to the one file: each part reads from
 * the offset it started at). */
static bool start_fresh(const char *const *args)
{
    return start_backend(binary, args) && check(wait_for_socket(20), "back-end %s %s creates its socket",
                                                args[0], args[1]);
}

/* A part that failed shows the back-end's log from where it started. */
static int failed_before;

static void part_begin(void)
{
    failed_before = tap_failed;
}

static void part_end(void)
{
    if (tap_failed > failed_before)
        print_backend_log(40);
}

/* === Part A: one ring kind through pauses, hand-over, reconnect, SIGTERM == */

/* GET_VRING_BASE on RX, then on TX, each while the thread sleeps; then both
 * rings set up afresh where they stopped. */
static bool stop_start(struct link *l, double *longest)
{
    struct conn *c = l->c;
    double t;
    *longest = 0;
    if (l->k->packed) {
        uint32_t base[2];
        struct pring *r[2] = { &l->rx, &l->tx };
        for (int i = 0; i < 2; i++) {
            if (!wait_armed(l))
                return fail(c, "kicks not on before stopping %s", r[i]->name);
            t = now();
            if (!pring_stop(c, r[i], &base[i]))
                return false;
            if (now() - t > *longest)
                *longest = now() - t;
        }
        return pring_start(c, &l->rx, base[0] & 0xffff) && pring_start(c, &l->tx, base[1] & 0xffff);
    }
    struct pair *q = &c->qp[0];
    uint16_t base[2];
    struct ring *r[2] = { &q->rx, &q->tx };
    for (int i = 0; i < 2; i++) {
        if (!wait_armed(l))
            return fail(c, "kicks not on before stopping %s", r[i]->name);
        t = now();
        if (!ring_stop(c, r[i], &base[i]))
            return false;
        if (now() - t > *longest)
            *longest = now() - t;
    }
    return ring_restart(c, &q->rx, base[0], true) && ring_restart(c, &q->tx, base[1], false);
}

static void run_kind(const struct kind *k)
{
    struct link l = { .k = k };
    if (!start_fresh(adaptive_args))
        return;
    long from = log_size();
    bool ok = link_open(&l) && link_round(&l, 8);
    if (!check(ok, "%s: handshake, 8 frames back%s%s", k->name, ok ? "" : ": ", l.c ? l.c->err : "")) {
        link_close(&l);
        kill_backend();
        return;
    }

    static const struct { int count, ms; } series[] = { { 200, 1 }, { 3, 100 }, { 1, 2000 } };
    for (size_t s = 0; s < sizeof series / sizeof series[0]; s++) {
        uint64_t frames = l.frames;
        uint32_t gated = l.gated, missed = l.not_armed;
        double t = now();
        ok = pauses(&l, series[s].count, series[s].ms);
        check(ok && l.not_armed == missed, "%s: %d pause(s) of %d ms, each then 1-3 frames sent with kicks on "
              "(seen %u of %u times): all %" PRIu64 " back in order, byte for byte (%.2f s)%s%s", k->name,
              series[s].count, series[s].ms, (l.gated - gated) - (l.not_armed - missed), l.gated - gated,
              l.frames - frames, now() - t, ok ? "" : ": ", l.c->err);
        if (!ok)
            break;
    }

    if (ok) {
        uint64_t frames = l.frames;
        double t = now();
        ok = jitter(&l, JITTER_SENDS);
        check(ok, "%s: %d pauses of 0-300 us, each then 1 frame sent at once (around the thread's arming): all %"
              PRIu64 " back in order, byte for byte (%.2f s)%s%s", k->name, JITTER_SENDS, l.frames - frames, now() - t,
              ok ? "" : ": ", l.c->err);
    }
    double longest = 0;
    if (ok) {
        ok = stop_start(&l, &longest) && link_round(&l, 8);
        check(ok, "%s: RX then TX stopped while the thread slept (GET_VRING_BASE answered, the slower in %.3f s), "
              "set up again, 8 frames back%s%s", k->name, longest, ok ? "" : ": ", l.c->err);
    }
    if (ok) {
        bool armed = wait_armed(&l);
        link_close(&l);
        ok = link_open(&l) && link_round(&l, 8);
        check(armed && ok, "%s: disconnected while the thread slept (kicks on: %s), connected again, 8 frames back%s%s",
              k->name, armed ? "yes" : "NO", ok ? "" : ": ", l.c ? l.c->err : "");
    }
    bool armed = ok && wait_armed(&l);
    sigterm_check(k->name, from);
    if (ok)
        check(armed, "%s: ... and the SIGTERM came while the thread slept (kicks on)", k->name);
    link_close(&l);

    struct napi_line n;
    struct totals tot = { 0 };
    bool have = napi_line(from, "exit: pmd 0: ", 1, &n);
    log_scan(from, totals_parse, &tot);
    check(tot.found && tot.from == l.frames && tot.to == l.frames && tot.drops == 0,
          "%s: exit line: from guest %llu, to guest %llu, drops %llu; the frontend sent %" PRIu64 " and got all back",
          k->name, tot.from, tot.to, tot.drops, l.frames);
    if (!check(have, "%s: the poll thread's exit line is there", k->name))
        return;
    napi_diag(k->name, &n);
    check(n.sleeps > 0 && n.sleeps == n.kick + n.nic + n.handover + n.timeout + n.signal && n.nic == 0,
          "%s: sleeps %llu = kick %llu + NIC %llu + hand-over %llu + timeout %llu + signal %llu, NIC 0 (loopback)",
          k->name, n.sleeps, n.kick, n.nic, n.handover, n.timeout, n.signal);
    check(n.missed == 0 && n.signal == 0, "%s: missed kicks %llu, signal %llu (both must be 0: no kick lost, every "
          "wake-up through the eventfd)", k->name, n.missed, n.signal);
    check(n.kick >= l.gated / 2 && n.kick > 0, "%s: woken by kick %llu times, at least half the %u sends made with "
          "kicks on", k->name, n.kick, l.gated);
    check(n.handover >= 1, "%s: woken by hand-over %llu times (>= 1: rings started and stopped, the disconnect, "
          "SIGTERM)", k->name, n.handover);
    check(n.timeout < MAX_TIMEOUTS, "%s: woken by timeout %llu times (< %d: about 3 s idle in all, the 2 s pause "
          "about 20)", k->name, n.timeout, MAX_TIMEOUTS);
}

/* === Part B: frontends that do not kick, or not as they should =========== */

/* Split rings, QEMU's handshake, then 8 frames (with `warm`): the start of
 * 6-8.  Without EVENT_IDX, where "kicks on" is a flag the back-end writes,
 * so that it can be waited for before anything was sent. */
static bool split_open(struct link *l, const char *what, bool warm)
{
    static const struct kind split = { "split", false, false };
    l->k = &split;
    bool ok = link_open(l) && (!warm || link_round(l, 8));
    return check(ok, "%s: handshake%s%s%s", what, warm ? ", 8 frames back" : "", ok ? "" : ": ",
                 l->c ? l->c->err : "");
}

/* The start of parts 6 and 8: a fresh back-end with `args` (its log read
 * from *from on), then split rings open with 8 frames back.  -1: no
 * back-end, nothing to undo; 0: the handshake failed (the part still ends
 * with its SIGTERM check); 1: open. */
static int part_open(struct link *l, const char *what, const char *const *args, long *from)
{
    if (!start_fresh(args))
        return -1;
    *from = log_size();
    return split_open(l, what, true) ? 1 : 0;
}

/* Stop TX and start it again with a NOFD kick: SET_VRING_KICK u64 = 1 | bit
 * 8 and no fd (vhost-user.rst: "polling should be used"). */
static bool tx_restart_nofd(struct conn *c)
{
    struct ring *r = &c->qp[0].tx;
    uint16_t base;
    if (!ring_stop(c, r, &base))
        return false;
    close(r->kick_fd);
    r->kick_fd = -1;                /* ring_flush never kicks now */
    ring_init(r, r->index, r->mem, base);
    struct vu_vring_addr a = { .index = r->index, .desc_user_addr = uva_of(r->desc), .used_user_addr = uva_of(r->used),
                               .avail_user_addr = uva_of(r->avail), .log_guest_addr = gpa_of(r->mem, r->used) };
    uint64_t nofd = r->index | VHOST_USER_VRING_NOFD, ack = 0;
    struct vu_vring_state on = { r->index, 1 };
    uint32_t flags = VHOST_USER_VERSION | (c->reply_ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    return vu_set_state(c, VHOST_USER_SET_VRING_NUM, r->index, r->num) &&
           vu_set_state(c, VHOST_USER_SET_VRING_BASE, r->index, base) &&
           vu_send(c, VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION, &a, sizeof a, NULL, 0) &&
           vu_send(c, VHOST_USER_SET_VRING_KICK, VHOST_USER_VERSION, &nofd, sizeof nofd, NULL, 0) &&
           vu_send(c, VHOST_USER_SET_VRING_ENABLE, flags, &on, sizeof on, NULL, 0) &&
           (!c->reply_ack || vu_reply(c, VHOST_USER_SET_VRING_ENABLE, &ack, sizeof ack)) &&
           (ack == 0 || fail(c, "SET_VRING_ENABLE: REPLY_ACK %" PRIu64, ack));
}

static void run_nofd(void)
{
    const char *what = "NOFD kick";
    static const char *const args[] = { "--pmd-mode", "adaptive", "--stats", "0.2", NULL };
    struct link l = { 0 };
    char line[600] = "";
    long from = 0;
    int opened = part_open(&l, what, args, &from);
    if (opened < 0)
        return;
    if (opened == 0)
        goto out;
    bool ok = tx_restart_nofd(l.c) && link_round(&l, 8);
    bool said = ok && log_find(from, "no kick fd (NOFD)", NULL, 5, line, sizeof line);
    check(ok && said, "%s: TX started again with a NOFD kick, 8 frames back; \"%s\"%s%s", what, shown(line),
          ok ? "" : ": ", l.c->err);
    if (!ok || !said)
        goto out;
    /* The line is written just before the thread would have slept: a sleep
     * counted in a --stats line written after it began after it. */
    struct napi_line s1, s2;
    long mark = log_size();
    bool got = napi_line(mark, "stats: pmd 0: ", 3, &s1);
    double t = now();
    for (int i = 0; ok && i < 20; i++) {
        sleep_ms(i % 5 == 4 ? 100 : 1);
        ok = link_round(&l, 5);
    }
    mark = log_size();
    got = got && napi_line(mark, "stats: pmd 0: ", 3, &s2);
    check(ok, "%s: 20 pauses (1 ms, and 100 ms every 5th), 100 more frames back (%.2f s)%s%s", what, now() - t,
          ok ? "" : ": ", l.c->err);
    if (got) {
        napi_diag("NOFD, first --stats line after the NOFD line", &s1);
        napi_diag("NOFD, a --stats line after the 100 frames", &s2);
    }
    check(got && s2.sleeps == s1.sleeps && s2.missed == 0, "%s: the thread never slept while the ring ran: sleeps "
          "%llu, then %llu in a --stats line after the 100 frames; missed kicks %llu", what, s1.sleeps, s2.sleeps,
          s2.missed);
    int lines = log_count(from, "no kick fd (NOFD)");
    check(lines == 1, "%s: the NOFD line came once (%d)", what, lines);
out:
    sigterm_check(what, from);
    link_close(&l);
}

static void run_no_kick(void)
{
    const char *what = "never kicks";
    struct link l = { 0 };
    char line[600] = "";
    if (!start_fresh(adaptive_args))
        return;
    long from = log_size();
    fe_no_kick = true;
    if (!split_open(&l, what, false))
        goto out;
    bool armed = wait_armed(&l);
    double t = now();
    bool ok = link_round(&l, 4);
    double took = now() - t;
    bool said = log_find(from, "the frontend does not kick", NULL, 5, line, sizeof line);
    check(armed && ok && said, "%s: the first 4 frames, sent with kicks on (%s) and no kick, come back (%.3f s: one "
          "sleep's timeout at most, then polling); \"%s\"%s%s", what, armed ? "yes" : "NO", took, shown(line),
          ok ? "" : ": ", l.c->err);
    t = now();
    for (int i = 0; ok && i < 30; i++) {
        sleep_ms(i % 10 == 9 ? 100 : 1);
        ok = link_round(&l, 1 + (uint32_t)i % 3);
    }
    check(ok, "%s: then 30 pauses (1 ms, and 100 ms every 10th) and 60 more frames, all back (%.2f s)%s%s", what,
          now() - t, ok ? "" : ": ", l.c->err);
    int lines = log_count(from, "the frontend does not kick");
    check(lines == 1, "%s: the \"does not kick\" line came once (%d)", what, lines);
out:
    fe_no_kick = false;
    sigterm_check(what, from);
    link_close(&l);
    struct napi_line n;
    if (napi_line(from, "exit: pmd 0: ", 1, &n))
        napi_diag(what, &n);
    check(n.found && n.missed >= 1 && n.signal == 0, "%s: exit line: missed kicks %llu (>= 1), signal %llu", what,
          n.missed, n.signal);
}

/* 8: the frontend reads its own kick eventfd, made blocking.  Its read is
 * guarded by a 200 ms timer signal: the poll thread may take the count
 * between our poll() and our read(), and then the read would block. */
static void on_timer(int sig)
{
    (void)sig;      /* interrupting the read is the point */
}

static timer_t steal_timer;

static int steal_kick(int fd)
{
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, 0) != 1)
        return 0;                   /* the poll thread read it first */
    struct itimerspec in200 = { .it_value = { 0, 200000000L } }, off = { 0 };
    timer_settime(steal_timer, 0, &in200, NULL);
    uint64_t count;
    ssize_t r = read(fd, &count, sizeof count);
    timer_settime(steal_timer, 0, &off, NULL);
    return r == sizeof count;
}

static bool steal_setup(void)
{
    struct sigaction sa = { .sa_handler = on_timer };   /* no SA_RESTART: the read ends with EINTR */
    sigemptyset(&sa.sa_mask);
    struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
    return sigaction(SIGUSR1, &sa, NULL) == 0 && timer_create(CLOCK_MONOTONIC, &ev, &steal_timer) == 0;
}

/* n frames on TX, published (and kicked if the flag says so), the kick
 * stolen at once, then the frames collected as traffic() would. */
static bool steal_round(struct link *l, uint32_t n, int *stolen)
{
    struct conn *c = l->c;
    struct pair *q = &c->qp[0];
    uint32_t want = q->received + n;
    while (rx_post(c, q))
        ;
    ring_flush(&q->rx, c->event_idx);
    uint64_t kicks = q->tx.kicks;
    for (uint32_t i = 0; i < n; i++)
        if (!tx_post(c, q, q->sent++))
            return fail(c, "TX ring full");
    ring_flush(&q->tx, c->event_idx);
    if (q->tx.kicks != kicks)
        *stolen += steal_kick(q->tx.kick_fd);
    bool ok = traffic(c, q, want);
    if (ok)
        l->frames += n;
    return ok;
}

static void run_stolen_kicks(void)
{
    const char *what = "kick fd read by the frontend";
    static const char *const args[] = { "--pmd-mode", "adaptive", "--stats", "0.5", NULL };
    struct link l = { 0 };
    char line[600] = "";
    long from = 0;
    int opened = part_open(&l, what, args, &from);
    if (opened < 0)
        return;
    if (opened == 0)
        goto out;
    if (!steal_setup()) {
        check(false, "%s: a timer to guard our own reads: %s", what, strerror(errno));
        goto out;
    }
    int fd = l.c->qp[0].tx.kick_fd;
    bool blocking = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0;
    int stolen = 0, rounds = 0, after = 0;
    bool ok = blocking, polled = false;
    double t = now();
    /* Until the back-end gives up on the kick fd (at most 30 rounds), then
     * 10 rounds more. */
    for (; ok && rounds < 30 && after < 10; rounds++) {
        if (!polled)
            wait_armed(&l);
        ok = steal_round(&l, 1 + (uint32_t)rounds % 3, &stolen);
        if (!polled)
            polled = log_find(from, "polled from now on", NULL, 0, line, sizeof line);
        else
            after++;
    }
    check(ok && polled, "%s: kick fd made blocking (%s), the frontend took %d kick(s) itself; %d rounds of 1-3 frames "
          "all back (%.2f s); \"%s\"%s%s", what, blocking ? "yes" : "NO", stolen, rounds, now() - t, shown(line),
          ok ? "" : ": ", l.c->err);
    uint64_t features = 0;
    t = now();
    ok = vu_get_u64(l.c, VHOST_USER_GET_FEATURES, &features);
    check(ok && features == l.c->offered, "%s: the back-end still answers GET_FEATURES (%.3f s)%s%s", what, now() - t,
          ok ? "" : ": ", l.c->err);
    timer_delete(steal_timer);
out:
    sigterm_check(what, from);
    link_close(&l);
    struct napi_line n;
    if (napi_line(from, "exit: pmd 0: ", 1, &n))
        napi_diag(what, &n);
}

/* === main ================================================================ */

int main(int argc, char **argv)
{
    binary = argc > 1 ? argv[1] : "./vhost-xdp";
    unsetenv("VX_BACKEND_CMD");     /* every check reads vhost-xdp's own log */
    if (!fe_setup("test_adaptive", ALARM_SECONDS))
        return 1;
    static const struct kind kinds[] = {
        { "split, EVENT_IDX off", false, false },
        { "split, EVENT_IDX on", false, true },
        { "packed", true, false },
    };
    void (*const more[])(void) = { run_nofd, run_no_kick, run_stolen_kicks };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        part_begin();
        run_kind(&kinds[i]);
        part_end();
    }
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        part_begin();
        more[i]();
        part_end();
    }
    return fe_finish();
}
