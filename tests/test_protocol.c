/*
 * tests/test_protocol.c - a vhost-user front-end written from scratch, driving
 * `vhost-xdp --loopback` the way QEMU 7.2 and a Linux guest driver would.
 *
 *   tests/test_protocol [path-to-vhost-xdp]        (default ./vhost-xdp)
 *   VX_BACKEND_CMD='dpdk-testpmd ... iface={sock} ...' tests/test_protocol
 *       runs that shell command instead (a stand-in back-end, e.g. DPDK's
 *       net_vhost in io forward mode); `{sock}` becomes the socket path.
 *   VX_BACKEND_WRAPPER='valgrind ...' VX_TIME_SCALE=30 tests/test_protocol
 *       runs vhost-xdp under valgrind, with every timeout 30 times longer
 *       (`make valgrind`; see frontend.h).
 *
 * What one run does (prints TAP; exit status 0 iff every line is "ok"):
 *   1. starts the back-end as a vhost-user server on a fresh socket in a
 *      private temporary directory and counts its open fds;
 *   2. for two configurations (MRG_RXBUF acked, MRG_RXBUF not acked), makes
 *      two connections one after the other; on each:
 *        - the QEMU 7.2 handshake (labs/traces/qemu-7.2.trace), validating
 *          every reply;
 *        - one memfd region whose guest_phys_addr differs from its
 *          userspace_addr, so descriptor addresses (guest-physical) and
 *          SET_VRING_ADDR addresses (front-end virtual) are both exercised;
 *          connection 2 also uses a non-zero mmap_offset;
 *        - the guest driver of a split ring (virtio 1.2 §2.7): 10,000 frames
 *          of 60..1514 bytes out on TX (vring 1), laid out in 1..4
 *          descriptors with gaps between the pieces, some through indirect
 *          tables; the back-end's loopback returns them on RX (vring 0),
 *          where every frame is checked byte for byte and in order;
 *        - GET_VRING_BASE on both rings (must return last_avail_idx), and a
 *          check that the stopped rings are no longer touched;
 *        - disconnect, then the back-end's fd count must be back to the
 *          starting value.
 *      Connection 1 starts its rings at base 0 (as at guest boot); connection
 *      2 uses fresh rings set to base 65000 (as after a migration), so the
 *      16-bit ring indices wrap around in the middle of its traffic.
 *      Connection 2 also takes PROTOCOL_F_STATUS and drives the device
 *      status as QEMU 7.2 does: GET_STATUS before each SET_STATUS (must
 *      answer what was set), FEATURES_OK then DRIVER_OK, and at the stop
 *      SET_STATUS 0 *before* GET_VRING_BASE, which must still return the
 *      rings' real indices.
 *   3. one more connection with packed rings (virtio 1.2 §2.8), driven by a
 *      small packed-ring driver in this file (run_packed): 8-slot rings that
 *      start at SET_VRING_BASE slot 6 | wrap 1 << 15, frames that cross the
 *      end of the ring, GET_VRING_BASE's avail slot | wrap << 15 | used slot
 *      << 16 | used wrap << 31 with the wrap counters flipped, and a restart
 *      from that base that resumes at the right slot;
 *   4. one more connection that resumes a session as DPDK 22.11's
 *      virtio_user does when it reconnects to a backend started again
 *      (run_resumed): the old rings stopped first, no SET_OWNER; 1,000
 *      frames byte for byte, and vhost-xdp's one line saying it took the
 *      frontend as the owner;
 *   5. one more connection that turns live migration's dirty log on mid-run,
 *      as QEMU 7.2 does, and off again (run_dirty_log): the pages marked must
 *      be exactly the ones the back-end wrote;
 *   6. SIGTERM: the back-end must exit with status 0 and remove its socket.
 *
 * The fd, SIGTERM and exit-status checks only apply to the real vhost-xdp;
 * with VX_BACKEND_CMD they are printed as diagnostics.
 *
 * The front-end itself (messages, handshake, guest memory, the split-ring
 * driver, the frames) is tests/frontend.c, shared with test_hostile.c; this
 * file is the scenario.  Nothing here includes vhost_xdp.h: the front-end
 * knows the protocol only from the spec (QEMU docs/interop/vhost-user.rst)
 * and the virtio UAPI headers.
 */
#include "frontend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <linux/virtio_config.h>    /* VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED */

#define NPACKETS        10000
#define SECOND_BASE     65000       /* ring base of connection 2: wraps at 65536 */
#define ALARM_SECONDS   150         /* the whole program (times VX_TIME_SCALE) */

struct config {
    const char *name;
    bool mrg_rxbuf;
};

/* === One connection, start to end ======================================== */

static int fd_baseline = -1;
static char fd_baseline_list[4096];

static void close_and_count_fds(struct conn *c);

static void run_connection(const struct config *cfg, int number)
{
    char tag[48];
    snprintf(tag, sizeof(tag), "%s conn %d", cfg->name, number);
    struct conn *c = conn_new(tag, true);
    if (!c) {
        check(false, "allocate the connection");
        return;
    }
    struct pair *q = &c->qp[0];
    q->salt = (uint32_t)(0x1000 * (cfg->mrg_rxbuf ? 1 : 2) + number);

    /* Connection 1: base 0, gpa 1 GiB, mmap_offset 0.  Connection 2: base
     * 65000 (indices wrap mid-run), gpa 4 GiB, mmap_offset 2 MiB. */
    struct fe_opts o = {
        .style = STYLE_QEMU, .mrg_rxbuf = cfg->mrg_rxbuf, .npairs = 1,
        .base = number == 1 ? 0 : SECOND_BASE, .nmem = 1,
        .mem = { { number == 1 ? 0x40000000ull : 0x100000000ull, REGION_SIZE, number == 1 ? 0 : 2u << 20, 0 } },
        .status = number == 2,
    };
    uint16_t base = o.base;

    if (!check(conn_connect(c), "%s: connect to %s", c->tag, sock_path))
        goto done;

    int failed_before = tap_failed;
    bool ok = handshake(c, &o);
    if (!ok) {
        if (tap_failed == failed_before)    /* else a step said it already */
            check(false, "%s: handshake: %s", c->tag, c->err);
        goto disconnect;
    }

    /* Traffic. */
    double t0 = now();
    ok = traffic(c, q, NPACKETS);
    double dt = now() - t0;
    check(ok, "%s: %d frames (60..1514 B) sent on TX came back on RX in order, every byte intact%s%s", c->tag,
          NPACKETS, ok ? "" : ": ", c->err);
    diag("%s: %u sent, %u received in %.2f s; TX layouts 1/2/3/4 desc/indirect: %" PRIu64 "/%" PRIu64 "/%" PRIu64
         "/%" PRIu64 "/%" PRIu64 "; RX indirect buffers %" PRIu64 "; frames in >1 RX buffer %" PRIu64,
         c->tag, q->sent, q->received, dt, c->tx_layouts[0], c->tx_layouts[1], c->tx_layouts[2], c->tx_layouts[3],
         c->tx_layouts[4], c->rx_layouts_indirect, c->multi_buffer);
    diag("%s: kicks RX %" PRIu64 " TX %" PRIu64 ", calls RX %" PRIu64 " TX %" PRIu64 "; ring indices now TX %u RX %u",
         c->tag, q->rx.kicks, q->tx.kicks, q->rx.calls, q->tx.calls, q->tx.avail_idx, q->rx.last_used_idx);
    if (!ok) {
        if (!c->mrg && c->hdr_bad)
            diag("%s: RX header problems so far: %s", c->tag, c->hdr_bad_first);
        goto disconnect;
    }
    check(c->hdr_bad == 0, "%s: every RX virtio-net header is zero but num_buffers, which is %s (%" PRIu64 " bad)%s%s",
          c->tag, c->mrg ? "the number of buffers used" : "1 (no MRG_RXBUF)", c->hdr_bad, c->hdr_bad ? "; first: " : "",
          c->hdr_bad_first);
    if (c->mrg) {
        check(c->multi_buffer > 0, "%s: MRG_RXBUF: frames larger than one RX buffer were merged over several (%" PRIu64 ")",
              c->tag, c->multi_buffer);
        check(c->mrg_not_full == 0, "%s: MRG_RXBUF: every buffer but a frame's last is filled completely (%" PRIu64
              " not)%s%s", c->tag, c->mrg_not_full, c->mrg_not_full ? "; first: " : "", c->mrg_not_full_first);
        check(c->mrg_partial == 0, "%s: MRG_RXBUF: used->idx never published in the middle of a frame (%" PRIu64 " times)",
              c->tag, c->mrg_partial);
    } else if (cfg->mrg_rxbuf) {
        skip("back-end does not offer MRG_RXBUF", "%s: MRG_RXBUF checks", c->tag);
    }
    if (c->tx_len_nonzero)
        diag("%s: note: %" PRIu64 " TX used entries have len != 0 (the device wrote nothing; spec: SHOULD be 0); first %s",
             c->tag, c->tx_len_nonzero, c->tx_len_first);

    /* QEMU 7.2's device reset: SET_STATUS 0 first, then GET_VRING_BASE. */
    if (o.status && backend_real) {
        uint64_t st = 0xdead, st0 = 0xdead;
        bool got = (c->protocol & (1ull << VHOST_USER_PROTOCOL_F_STATUS)) &&
                   vu_get_u64(c, VHOST_USER_GET_STATUS, &st) && vu_set_u64(c, VHOST_USER_SET_STATUS, 0) &&
                   vu_get_u64(c, VHOST_USER_GET_STATUS, &st0);
        check(got && st == 0xf && st0 == 0, "%s: PROTOCOL_F_STATUS: GET_STATUS 0x%" PRIx64 " after DRIVER_OK (want 0xf), "
              "0x%" PRIx64 " after SET_STATUS 0 (want 0)%s%s", c->tag, st, st0, c->err[0] ? ": " : "", c->err);
    }
    /* Stop both rings as QEMU does at device reset. */
    uint16_t want[2] = { (uint16_t)(base + q->rx.consumed), (uint16_t)(base + q->tx.published) };
    for (uint32_t i = 0; i < 2; i++) {
        struct vu_vring_state s = { 0xffff, 0xffffffff };
        c->err[0] = 0;
        bool got = vu_set_state(c, VHOST_USER_GET_VRING_BASE, i, 0) && vu_reply(c, VHOST_USER_GET_VRING_BASE, &s, sizeof(s));
        check(got && s.index == i && s.num == want[i],
              "%s: GET_VRING_BASE ring %u: index %u, num %u = last_avail_idx %u (%s)%s%s", c->tag, i, s.index, s.num,
              want[i], i == 0 ? "base + RX buffers consumed" : "base + TX entries published", c->err[0] ? ": " : "",
              c->err);
    }
    /* A stopped ring belongs to the front-end again: offer one more frame
     * and RX buffers, kick, and see that nothing moves. */
    uint16_t tx_used = q->tx.used->idx, rx_used = q->rx.used->idx;
    if (tx_post(c, q, q->sent))
        ring_flush(&q->tx, false);
    while (rx_post(c, q))
        ;
    ring_flush(&q->rx, false);
    if (q->tx.kick_fd >= 0 && eventfd_write(q->tx.kick_fd, 1) == 0)
        q->tx.kicks++;
    sleep_ms(300);
    check(q->tx.used->idx == tx_used && q->rx.used->idx == rx_used,
          "%s: rings stay stopped after GET_VRING_BASE (TX used %u -> %u, RX used %u -> %u in 300 ms)", c->tag, tx_used,
          q->tx.used->idx, rx_used, q->rx.used->idx);
    eventfd_t v = 0;
    bool err0 = eventfd_read(q->rx.err_fd, &v) == 0, err1 = eventfd_read(q->tx.err_fd, &v) == 0;
    check(!err0 && !err1, "%s: no error signalled on the vring err eventfds (RX %d, TX %d)", c->tag, err0, err1);

disconnect:
    close_and_count_fds(c);
done:
    if (!backend_alive())
        check(false, "%s: back-end still running after the connection", c->tag);
    conn_free(c);
}

/* Disconnect, then the back-end must be back to the fds it had before the
 * first connection. */
static void close_and_count_fds(struct conn *c)
{
    conn_close(c);
    sleep_ms(500);
    if (backend_pid > 0 && fd_baseline >= 0) {
        static char list[4096];
        int n = count_fds(backend_pid, list, sizeof(list));
        /* A slowed-down back-end (valgrind: VX_TIME_SCALE) may not have seen
         * the close yet: give it up to 0.5 s x the scale.  A leak never
         * settles, so the check stays as strict. */
        for (int waited = 500; backend_real && n != fd_baseline && waited < 500 * time_scale; waited += 50) {
            sleep_ms(50);
            n = count_fds(backend_pid, list, sizeof(list));
        }
        if (backend_real) {
            check(n == fd_baseline, "%s: back-end has %d open fds after the disconnect, as before the first "
                  "connection (%d)", c->tag, n, fd_baseline);
            if (n != fd_baseline) {
                diag("before: %s", fd_baseline_list);
                diag("now:    %s", list);
            }
        } else {
            diag("%s: stand-in back-end has %d open fds after the disconnect (%d before the first connection)", c->tag,
                 n, fd_baseline);
        }
    }
}

/* === A packed ring stopped and restarted (virtio 1.2 §2.8) =============== */

/*
 * A packed ring has no free-running u16 index: a position is a slot in
 * 0..num-1 and a wrap counter that flips each time the slot passes the end
 * (§2.8.1).  So its base travels as two fields (vhost-user.rst,
 * "VHOST_USER_SET_VRING_BASE" and "VHOST_USER_GET_VRING_BASE"):
 *   SET_VRING_BASE num = avail slot | avail wrap << 15
 *   GET_VRING_BASE num = avail slot | avail wrap << 15 | used slot << 16 | used wrap << 31
 * frontend.c's driver knows only split rings, so this case drives one queue
 * pair of 8-slot packed rings itself, with DPDK virtio_user's message order
 * and no MRG_RXBUF, EVENT_IDX or INDIRECT_DESC (one buffer id per chain, the
 * id being the chain's first slot):
 *   round 1  both rings start at slot 6 in lap 1 (num 0x8006); 4 RX buffers
 *            go in slots 6, 7, 0, 1 (the wrap counter flips between 7 and 0)
 *            and 3 frames on TX, the second a chain in slots 7 and 0 that
 *            crosses the end; GET_VRING_BASE must give the positions past
 *            the 3 frames, in lap 0: RX slot 1 (the 4th buffer, still
 *            unused), TX slot 2;
 *   restart  SET_VRING_NUM/BASE/ADDR/KICK/ENABLE with the 16 bits QEMU
 *            keeps of those values, on the same ring memory: the first
 *            frame must land in the RX buffer left in slot 1 (a backend
 *            resuming anywhere else skips it or reuses a used slot);
 *   rounds 2-4  9 more frames, the rings wrap again (lap 0 -> 1), and
 *            GET_VRING_BASE agrees with where the driver's used cursor is.
 * The driver honours the device's event suppression (vhost-xdp polls and
 * says DISABLE), so the back-end must work without kicks.
 */
#define PACKED_BASE      (6u | 1u << 15)    /* slot 6, wrap counter 1 */

/* What GET_VRING_BASE must answer for a ring whose chains have all been
 * used up to the driver's used cursor: avail and used positions both there. */
static uint32_t packed_base_of(uint16_t slot, bool wrap)
{
    uint32_t pos = slot | (uint32_t)wrap << 15;
    return pos | pos << 16;
}

/* GET_VRING_BASE on both rings; each must be where the driver's used cursor
 * is (every chain there used, none after). */
static bool packed_check_bases(struct conn *c, struct pring *rx, struct pring *tx, uint32_t got[2], const char *when)
{
    struct pring *rings[2] = { rx, tx };
    bool all = true;
    for (int i = 0; i < 2; i++) {
        struct pring *r = rings[i];
        uint32_t want = packed_base_of(r->used_slot, r->used_wrap);
        got[i] = 0xdeadbeef;
        c->err[0] = 0;
        bool ok = pring_stop(c, r, &got[i]);
        all &= check(ok && got[i] == want, "packed: %s: GET_VRING_BASE %s 0x%08x = avail slot %u wrap %u, used slot %u "
                     "wrap %u (want 0x%08x)%s%s", when, r->name, got[i], got[i] & 0x7fff, got[i] >> 15 & 1,
                     got[i] >> 16 & 0x7fff, got[i] >> 31, want, c->err[0] ? ": " : "", c->err);
    }
    return all;
}

static void run_packed(void)
{
    struct conn *c = conn_new("packed", true);
    struct pring rx, tx;
    uint32_t got[2];
    if (!c) {
        check(false, "allocate the connection");
        return;
    }
    memset(&rx, 0, sizeof(rx));
    memset(&tx, 0, sizeof(tx));
    rx.kick_fd = rx.call_fd = tx.kick_fd = tx.call_fd = -1;
    if (!check(conn_connect(c), "%s: connect to %s", c->tag, sock_path))
        goto done;
    bool ok = packed_handshake(c, &rx, &tx, PACKED_BASE);
    if (!(c->offered & BIT(VIRTIO_F_RING_PACKED)) && !backend_real) {
        skip("the stand-in back-end does not offer RING_PACKED", "packed: the packed-ring base case");
        goto disconnect;
    }
    if (!check(ok, "packed: RING_PACKED negotiated, %u-slot rings started at SET_VRING_BASE 0x%04x (slot %u, wrap "
               "counter %u)%s%s", PACKED_NUM, PACKED_BASE, PACKED_BASE & 0x7fff, PACKED_BASE >> 15, c->err[0] ? ": " : "",
               c->err))
        goto disconnect;

    /* Round 1: TX slots 6 | 7,0 | 1; RX buffers 6, 7, 0 used and 1 left. */
    ok = packed_round(c, &rx, &tx, 0, 3, 0x2);
    if (!check(ok, "packed: 3 frames across the end of the ring (a TX chain in slots 7 and 0, RX buffers in 6, 7, 0) "
               "came back intact%s%s", c->err[0] ? ": " : "", c->err))
        goto disconnect;
    if (!packed_check_bases(c, &rx, &tx, got, "past the wrap"))
        goto disconnect;
    check((got[0] >> 15 & 1) == 0 && (got[1] >> 15 & 1) == 0 && (got[0] >> 31) == 0 && (got[1] >> 31) == 0,
          "packed: both wrap counters flipped from 1 to 0 in the reply (RX 0x%08x, TX 0x%08x)", got[0], got[1]);

    /* Restart from those bases, on the same ring memory, as after a device
     * stop and start: QEMU keeps and sends back the low 16 bits. */
    c->err[0] = 0;
    ok = pring_start(c, &rx, got[0] & 0xffff) && pring_start(c, &tx, got[1] & 0xffff);
    if (!check(ok, "packed: restarted with SET_VRING_BASE RX 0x%04x, TX 0x%04x%s%s", got[0] & 0xffff, got[1] & 0xffff,
               c->err[0] ? ": " : "", c->err))
        goto disconnect;
    uint16_t first_rx = rx.used_slot;
    ok = packed_round(c, &rx, &tx, 3, 3, 0x1) && packed_round(c, &rx, &tx, 6, 3, 0x1) &&
         packed_round(c, &rx, &tx, 9, 3, 0x1);
    if (!check(ok, "packed: after the restart 9 more frames came back, the first in the RX buffer left in slot %u, "
               "the rings wrapping again%s%s", first_rx, c->err[0] ? ": " : "", c->err))
        goto disconnect;
    packed_check_bases(c, &rx, &tx, got, "after the restart");
    check((got[0] >> 15 & 1) == 1 && (got[1] >> 15 & 1) == 1, "packed: both wrap counters back at 1 (RX 0x%08x, "
          "TX 0x%08x)", got[0], got[1]);

disconnect:
    pring_close(&rx);
    pring_close(&tx);
    close_and_count_fds(c);
done:
    if (!backend_alive())
        check(false, "%s: back-end still running after the connection", c->tag);
    conn_free(c);
}

/* === A session resumed without SET_OWNER (DPDK virtio_user reconnecting) == */

/*
 * DPDK 22.11's virtio_user with server=1, when its backend comes back
 * (vhost-xdp --client, killed and started again), carries on with the
 * session it had on the new connection: it stops the old device
 * (SET_VRING_ENABLE 0, GET_VRING_BASE per ring), asks the features again
 * and starts the rings, but never sends SET_OWNER (it did once, when its
 * port was created).  vhost-user.rst calls SET_OWNER a "session start"
 * flag; DPDK's vhost library and libvhost-user ignore it.  vhost-xdp takes
 * the first message that belongs to an owner as making the frontend the
 * owner, and says so once.  This connection does exactly that (frontend.c,
 * fe_opts.resume), with MRG_RXBUF, and must then move frames as any other.
 */
static void run_resumed(void)
{
    struct conn *c = conn_new("resumed", true);
    if (!c) {
        check(false, "allocate the connection");
        return;
    }
    struct fe_opts o = { .style = STYLE_DPDK, .mrg_rxbuf = true, .npairs = 1, .resume = true };
    long from = log_size();
    c->qp[0].salt = 0x3000;
    if (!check(conn_connect(c), "%s: connect to %s", c->tag, sock_path))
        goto done;
    int failed_before = tap_failed;
    bool ok = handshake(c, &o);
    if (!ok && tap_failed == failed_before)
        check(false, "%s: handshake without SET_OWNER: %s", c->tag, c->err);
    if (ok) {
        ok = traffic(c, &c->qp[0], NPACKETS / 10);
        check(ok, "%s: no SET_OWNER, and %d frames sent on TX came back on RX in order, every byte intact%s%s", c->tag,
              NPACKETS / 10, ok ? "" : ": ", c->err);
    }
    if (backend_real) {
        char line[400] = "";
        bool said = log_find(from, "SET_VRING_ENABLE before SET_OWNER: taking it as the owner", NULL, 2, line,
                             sizeof line);
        int times = log_count(from, "before SET_OWNER");
        check(said && times == 1, "%s: the back-end took the first SET_VRING_ENABLE as making it the owner, and said "
              "so once (%d lines): \"%s\"", c->tag, times, strstr(line, "vhost-xdp: ") ? line + 11 : line);
    }
    close_and_count_fds(c);
done:
    if (!backend_alive())
        check(false, "%s: back-end still running after the connection", c->tag);
    conn_free(c);
}

/* === Live migration: the dirty log ======================================= */

/*
 * What QEMU 7.2 sends when a guest starts to live-migrate (vhost-user.rst,
 * "Migration"), on a connection already moving frames: SET_PROTOCOL_FEATURES
 * with LOG_SHMFD (taken at connection time by QEMU; here late, which the
 * spec allows), SET_LOG_BASE with a sealed memfd (the back-end must answer:
 * a u64, 0), SET_FEATURES with VHOST_F_LOG_ALL, and SET_VRING_ADDR per ring
 * with VHOST_VRING_F_LOG and log_guest_addr = the used ring's guest-physical
 * address.  Then, while frames move, the bitmap (a bit per 4 KiB page of
 * guest-physical address) must mark both used rings and the RX buffers the
 * frames landed in, and nothing else: not the TX buffers, descriptor
 * tables, avail rings or indirect tables, which the back-end only reads;
 * nothing outside the log's bytes in its file.  Logging off again
 * (migrate_cancel: SET_FEATURES and SET_VRING_ADDR without the bits): not
 * one more mark.  SET_LOG_FD is accepted on the way.  At the disconnect the
 * log is unmapped (its memfd gone from the back-end's /proc/PID/maps).
 */
#define LOG_FILE   0x10000u         /* the log's memfd */
#define LOG_OFFSET 0x1000u          /* where in it the log starts: canaries either side */

static bool log_bit(const uint8_t *log, uint64_t page) { return log[page / 8] & (1u << (page % 8)); }

/* A message QEMU 7.2 sends with NEED_REPLY while it turns logging on or
 * off (SET_FEATURES with LOG_ALL, SET_VRING_ADDR with the log flag): it
 * waits for the REPLY_ACK before going on, and so do we. */
static bool send_acked(struct conn *c, uint32_t req, const void *payload, uint32_t size)
{
    uint64_t ack = 1;
    return vu_send(c, req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, payload, size, NULL, 0) &&
           vu_reply(c, req, &ack, sizeof ack) && (ack == 0 || fail(c, "%s: REPLY_ACK %" PRIu64, request_name(req), ack));
}

static bool set_vring_log(struct conn *c, const struct ring *r, bool on)
{
    struct vu_vring_addr a = { r->index, on ? 1u : 0u, uva_of(r->desc), uva_of(r->used), uva_of(r->avail),
                               gpa_of(r->mem, r->used) };
    return send_acked(c, VHOST_USER_SET_VRING_ADDR, &a, sizeof a);
}

/* Pages of [p, p + len) in guest memory m marked in log. */
static int marked_in(const uint8_t *log, const struct guest_mem *m, const void *p, uint64_t len)
{
    int n = 0;
    for (uint64_t page = gpa_of(m, p) / 4096; page <= (gpa_of(m, p) + len - 1) / 4096; page++)
        n += log_bit(log, page);
    return n;
}

/* Does the back-end still map a file whose name contains `name`? */
static bool backend_maps(const char *name)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)backend_pid);
    FILE *f = fopen(path, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, name) != NULL;
    if (f)
        fclose(f);
    return found;
}

static bool dirty_log_on(struct conn *c, int logfd, uint64_t log_size, bool on)
{
    struct pair *q = &c->qp[0];
    uint64_t log[2] = { log_size, LOG_OFFSET }, status = 1;
    bool ok = !on || (vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, c->protocol | BIT(VHOST_USER_PROTOCOL_F_LOG_SHMFD)) &&
                      vu_send(c, VHOST_USER_SET_LOG_BASE, VHOST_USER_VERSION, log, sizeof log, &logfd, 1) &&
                      vu_reply(c, VHOST_USER_SET_LOG_BASE, &status, sizeof status));
    if (on)
        check(ok && status == 0, "%s: SET_LOG_BASE of %" PRIu64 " bytes at offset 0x%x answered %" PRIu64 " (0 = "
              "mapped)%s%s", c->tag, log_size, LOG_OFFSET, status, ok ? "" : ": ", c->err);
    uint64_t features = c->features | (on ? BIT(VHOST_F_LOG_ALL) : 0);
    return ok && send_acked(c, VHOST_USER_SET_FEATURES, &features, sizeof features) &&
           set_vring_log(c, &q->rx, on) && set_vring_log(c, &q->tx, on);
}

static void check_dirty_pages(struct conn *c, const uint8_t *file, uint64_t log_size)
{
    const uint8_t *log = file + LOG_OFFSET;
    struct pair *q = &c->qp[0];
    const struct guest_mem *m = &c->mem[0];
    int rx_bufs = marked_in(log, m, q->rx.bufs, RING_SIZE * SLOT), total = 0, outside = 0;
    for (uint64_t page = 0; page < 8 * log_size; page++)
        total += log_bit(log, page);
    for (uint64_t i = 0; i < LOG_FILE; i++)
        outside += (i < LOG_OFFSET || i >= LOG_OFFSET + log_size) && file[i];
    int used = marked_in(log, m, q->rx.used, 2054) + marked_in(log, m, q->tx.used, 2054);
    int read_only = marked_in(log, m, q->tx.bufs, RING_SIZE * SLOT) + marked_in(log, m, q->rx.desc, 4096) +
                    marked_in(log, m, q->tx.desc, 4096) + marked_in(log, m, q->rx.avail, 4096) +
                    marked_in(log, m, q->tx.avail, 4096) + marked_in(log, m, q->rx.indirect, 4096) +
                    marked_in(log, m, q->tx.indirect, 4096);
    check(used == 2 && rx_bufs > 0 && total == used + rx_bufs && read_only == 0 && outside == 0,
          "%s: while logging, the log marks both used rings (%d of 2 pages) and %d pages of RX buffers, %d pages in "
          "all (want used + RX), none the back-end only reads (%d: TX buffers, descriptors, avail rings, indirect "
          "tables), no byte outside the log (%d)", c->tag, used, rx_bufs, total, read_only, outside);
}

static void run_dirty_log(void)
{
    struct conn *c = conn_new("dirty log", true);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = true, .npairs = 1 };
    int logfd = memfd_create("vx-proto-log", MFD_CLOEXEC | MFD_ALLOW_SEALING), efd = eventfd(0, EFD_CLOEXEC);
    uint8_t *file = MAP_FAILED;
    long from = log_size();
    if (!c || logfd < 0 || efd < 0 || ftruncate(logfd, LOG_FILE) < 0 ||
        fcntl(logfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0 ||
        (file = mmap(NULL, LOG_FILE, PROT_READ | PROT_WRITE, MAP_SHARED, logfd, 0)) == MAP_FAILED) {
        check(false, "dirty log: set up the connection and the log's memfd: %s", strerror(errno));
        goto done;
    }
    c->qp[0].salt = 0x4000;
    if (!check(conn_connect(c), "%s: connect to %s", c->tag, sock_path) || !handshake(c, &o))
        goto done;
    check((c->offered & BIT(VHOST_F_LOG_ALL)) && (c->protocol_offered & BIT(VHOST_USER_PROTOCOL_F_LOG_SHMFD)),
          "%s: VHOST_F_LOG_ALL offered (0x%" PRIx64 ") and PROTOCOL_F_LOG_SHMFD (0x%" PRIx64 ")", c->tag, c->offered,
          c->protocol_offered);
    /* The log covers guest-physical 0 up to the region's end: a bit a page. */
    uint64_t log_size = (c->mem[0].gpa + c->mem[0].size - 1) / 4096 / 8 + 1;
    bool ok = traffic(c, &c->qp[0], 200) && dirty_log_on(c, logfd, log_size, true) &&
              vu_send(c, VHOST_USER_SET_LOG_FD, VHOST_USER_VERSION, NULL, 0, &efd, 1) &&
              traffic(c, &c->qp[0], 500);
    if (!check(ok, "%s: logging on mid-run (SET_LOG_BASE, SET_LOG_FD, LOG_ALL, VHOST_VRING_F_LOG), 500 frames "
               "byte for byte%s%s", c->tag, ok ? "" : ": ", c->err))
        goto done;
    check_dirty_pages(c, file, log_size);
    memset(file, 0, LOG_FILE);
    ok = dirty_log_on(c, logfd, log_size, false) && traffic(c, &c->qp[0], 300);
    int marks = 0;
    for (uint64_t i = 0; i < LOG_FILE; i++)
        marks += file[i] != 0;
    check(ok && marks == 0, "%s: logging off again (migrate_cancel), 300 frames, and the log stays clear (%d bytes "
          "set)%s%s", c->tag, marks, ok ? "" : ": ", c->err);
    if (backend_real) {
        char line[400] = "";
        check(log_find(from, "dirty log mapped: ", NULL, 2, line, sizeof line) && backend_maps("vx-proto-log"),
              "%s: the back-end said it mapped the log and maps it: \"%s\"", c->tag,
              strstr(line, "vhost-xdp: ") ? strstr(line, "vhost-xdp: ") + 11 : line);
        char on[400] = "", off[400] = "";
        bool said = log_find(from, ": dirty logging on (LOG_ALL)", NULL, 2, on, sizeof on) &&
                    log_find(from, ": dirty logging off (LOG_ALL cleared)", NULL, 2, off, sizeof off);
        const char *a = strstr(on, "dirty"), *b = strstr(off, "dirty");
        check(said, "%s: the back-end said when LOG_ALL went on and off: \"%s\", \"%s\"", c->tag, a ? a : on,
              b ? b : off);
    }
    close_and_count_fds(c);
    if (backend_real)
        check(!backend_maps("vx-proto-log"), "%s: the log is unmapped after the disconnect", c->tag);
done:
    if (file != MAP_FAILED)
        munmap(file, LOG_FILE);
    if (logfd >= 0)
        close(logfd);
    if (efd >= 0)
        close(efd);
    conn_free(c);
}

/* === main ================================================================ */

int main(int argc, char **argv)
{
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";

    if (!fe_start("test_protocol", ALARM_SECONDS, binary, NULL))
        return 1;
    fd_baseline = count_fds(backend_pid, fd_baseline_list, sizeof(fd_baseline_list));
    diag("back-end pid %d has %d open fds before the first connection", (int)backend_pid, fd_baseline);

    static const struct config configs[] = {
        { "mrg", true },
        { "no-mrg", false },
    };
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        for (int n = 1; n <= 2; n++)
            if (backend_pid > 0)
                run_connection(&configs[i], n);
    if (backend_pid > 0)
        run_packed();
    if (backend_pid > 0)
        run_resumed();
    if (backend_pid > 0)
        run_dirty_log();

    stop_backend();
    return fe_finish();
}
