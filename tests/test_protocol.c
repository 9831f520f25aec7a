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
 *        - the QEMU 7.2 handshake (shared/reference/qemu-7.2-vhost-user-
 *          sequence.md), validating every reply;
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
 *   4. SIGTERM: the back-end must exit with status 0 and remove its socket.
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
#include <sys/eventfd.h>
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
#define PACKED_NUM       8
#define PACKED_BASE      (6u | 1u << 15)    /* slot 6, wrap counter 1 */
#define PACKED_BUF       2048               /* bytes per buffer id */
#define PACKED_AVAIL     (1u << VRING_PACKED_DESC_F_AVAIL)
#define PACKED_USED      (1u << VRING_PACKED_DESC_F_USED)

/* One packed ring, driver side. */
struct pring {
    const char *name;                   /* "RX", "TX" */
    uint32_t index;                     /* vring 0 = RX, 1 = TX */
    struct guest_mem *mem;
    struct vring_packed_desc *desc;
    struct vring_packed_desc_event *driver, *device;
    uint8_t *bufs;                      /* PACKED_BUF bytes per buffer id */
    uint16_t avail_slot, used_slot;     /* next slot we fill / next used one we read */
    bool avail_wrap, used_wrap;
    uint8_t ndesc[PACKED_NUM];          /* slots each outstanding chain takes, by id */
    uint32_t inflight;                  /* slots made available and not yet used */
    int kick_fd, call_fd;
};

static void packed_advance(uint16_t *slot, bool *wrap, uint32_t n)
{
    *slot = (uint16_t)(*slot + n);
    if (*slot >= PACKED_NUM) {
        *slot = (uint16_t)(*slot - PACKED_NUM);
        *wrap = !*wrap;
    }
}

/* What GET_VRING_BASE must answer for a ring whose chains have all been
 * used up to the driver's used cursor: avail and used positions both there. */
static uint32_t packed_base_of(uint16_t slot, bool wrap)
{
    uint32_t pos = slot | (uint32_t)wrap << 15;
    return pos | pos << 16;
}

/* Lay the ring out where RING_AREA says (desc, driver event at +0x1000,
 * device event at +0x2000) and make every slot look as it would for a
 * driver that reached (slot, wrap): slots before it used in this lap
 * (AVAIL = USED = wrap), the others used in the previous lap.  None is
 * available, and the base slot is not "already used" in this lap. */
static void pring_init(struct pring *r, const char *name, uint32_t index, struct guest_mem *m, uint32_t base)
{
    uint32_t area = RING_AREA(0, index & 1);
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->index = index;
    r->mem = m;
    r->desc = (struct vring_packed_desc *)(m->base + area);
    r->driver = (struct vring_packed_desc_event *)(m->base + area + 0x1000);
    r->device = (struct vring_packed_desc_event *)(m->base + area + 0x2000);
    r->bufs = m->base + (index & 1 ? 0x200000u : 0x100000u);
    r->avail_slot = r->used_slot = (uint16_t)(base & 0x7fff);
    r->avail_wrap = r->used_wrap = base & 0x8000;
    memset(r->desc, 0, sizeof(*r->desc) * PACKED_NUM);
    for (uint16_t s = 0; s < PACKED_NUM; s++) {
        bool lap = s < r->avail_slot ? r->avail_wrap : !r->avail_wrap;
        r->desc[s].flags = (uint16_t)(lap ? PACKED_AVAIL | PACKED_USED : 0);
    }
    memset(r->driver, 0, sizeof(*r->driver));  /* ENABLE: call us after using buffers */
    memset(r->device, 0, sizeof(*r->device));
    r->kick_fd = r->call_fd = -1;
}

/* Make one chain of nseg descriptors available, pieces of its buffer
 * (buffer id = its first slot).  Descriptors after the first take the next
 * slots, each with the flags of the lap its slot is in (Linux's
 * virtqueue_add_packed does the same); the first one's flags go last, with
 * a release store: that is the publication (§2.8.6). */
static bool pring_add(struct pring *r, const struct seg *segs, int nseg, bool device_writes)
{
    if (r->inflight + (uint32_t)nseg > PACKED_NUM)
        return false;
    uint16_t head = r->avail_slot, slot = head;
    bool wrap = r->avail_wrap;
    uint16_t head_flags = 0;
    for (int i = 0; i < nseg; i++) {
        struct vring_packed_desc *d = &r->desc[slot];
        uint16_t flags = (uint16_t)((wrap ? PACKED_AVAIL : PACKED_USED) | (device_writes ? VRING_DESC_F_WRITE : 0) |
                                    (i + 1 < nseg ? VRING_DESC_F_NEXT : 0));
        d->addr = gpa_of(r->mem, r->bufs + (size_t)head * PACKED_BUF + segs[i].off);
        d->len = segs[i].len;
        d->id = head;
        if (i == 0)
            head_flags = flags;
        else
            __atomic_store_n(&d->flags, flags, __ATOMIC_RELAXED);
        packed_advance(&slot, &wrap, 1);
    }
    __atomic_store_n(&r->desc[head].flags, head_flags, __ATOMIC_RELEASE);
    r->ndesc[head] = (uint8_t)nseg;
    r->inflight += (uint32_t)nseg;
    r->avail_slot = slot;
    r->avail_wrap = wrap;
    return true;
}

/* Kick unless the device asked us not to (device event DISABLE, §2.8.10);
 * a full barrier first, so the flags we read are not older than our chains. */
static void pring_notify(struct pring *r)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->device->flags, __ATOMIC_RELAXED) != VRING_PACKED_EVENT_FLAG_DISABLE)
        (void)eventfd_write(r->kick_fd, 1);
}

/* The used descriptor at our used cursor, if the device wrote it in this
 * lap (AVAIL = USED = the used wrap counter, §2.8.1): 1 with its id and len,
 * the cursor moved past the chain; 0 if none yet; -1 (c->err) if its id is
 * not the chain that starts there (no IN_ORDER: one used descriptor per
 * chain, in order). */
static int pring_used(struct conn *c, struct pring *r, uint16_t *id, uint32_t *len)
{
    struct vring_packed_desc *d = &r->desc[r->used_slot];
    uint16_t flags = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
    if (!!(flags & PACKED_AVAIL) != r->used_wrap || !!(flags & PACKED_USED) != r->used_wrap)
        return 0;
    *id = d->id;
    *len = d->len;
    if (*id != r->used_slot || r->ndesc[*id] == 0)
        return fail_int(c, "%s: used descriptor in slot %u names buffer id %u, not the chain that starts there",
                        r->name, r->used_slot, *id);
    r->inflight -= r->ndesc[*id];
    packed_advance(&r->used_slot, &r->used_wrap, r->ndesc[*id]);
    r->ndesc[*id] = 0;
    return 1;
}

/* SET_VRING_NUM, BASE, ADDR (descriptors, driver event as "avail", device
 * event as "used"), a new KICK fd, then ENABLE, acked when REPLY_ACK is on. */
static bool pring_start(struct conn *c, struct pring *r, uint32_t base)
{
    struct vu_vring_addr a = {
        .index = r->index,
        .desc_user_addr = uva_of(r->desc),
        .used_user_addr = uva_of(r->device),
        .avail_user_addr = uva_of(r->driver),
    };
    if (r->kick_fd >= 0)
        close(r->kick_fd);
    r->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct vu_vring_state on = { r->index, 1 };
    uint64_t ack = 0;
    uint32_t flags = VHOST_USER_VERSION | (c->reply_ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    return (r->kick_fd >= 0 || fail(c, "eventfd: %s", strerror(errno))) &&
           vu_set_state(c, VHOST_USER_SET_VRING_NUM, r->index, PACKED_NUM) &&
           vu_set_state(c, VHOST_USER_SET_VRING_BASE, r->index, base) &&
           vu_send(c, VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION, &a, sizeof(a), NULL, 0) &&
           vu_set_fd(c, VHOST_USER_SET_VRING_KICK, r->index, r->kick_fd) &&
           vu_send(c, VHOST_USER_SET_VRING_ENABLE, flags, &on, sizeof(on), NULL, 0) &&
           (!c->reply_ack || vu_reply(c, VHOST_USER_SET_VRING_ENABLE, &ack, sizeof(ack))) &&
           (ack == 0 || fail(c, "SET_VRING_ENABLE ring %u: REPLY_ACK 0x%" PRIx64, r->index, ack));
}

/* GET_VRING_BASE: stops the ring, returns the 32-bit packed base. */
static bool pring_stop(struct conn *c, struct pring *r, uint32_t *base)
{
    struct vu_vring_state s = { 0xffff, 0xffffffff };
    if (!vu_set_state(c, VHOST_USER_GET_VRING_BASE, r->index, 0) || !vu_reply(c, VHOST_USER_GET_VRING_BASE, &s, sizeof(s)))
        return false;
    *base = s.num;
    return s.index == r->index || fail(c, "GET_VRING_BASE ring %u: reply names ring %u", r->index, s.index);
}

static void pring_close(struct pring *r)
{
    if (r->kick_fd >= 0)
        close(r->kick_fd);
    if (r->call_fd >= 0)
        close(r->call_fd);
    r->kick_fd = r->call_fd = -1;
}

/* DPDK virtio_user's order (DESIGN.md): SET_OWNER, features, call fds,
 * SET_FEATURES (RING_PACKED before SET_VRING_NUM: a packed ring's size need
 * not be a power of two), the memory table, then each ring at `base`. */
static bool packed_handshake(struct conn *c, struct pring *rx, struct pring *tx, uint32_t base)
{
    uint64_t want = BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_F_RING_PACKED) | BIT(VHOST_USER_F_PROTOCOL_FEATURES);
    if (!vu_send(c, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0) ||
        !vu_get_u64(c, VHOST_USER_GET_FEATURES, &c->offered) ||
        !vu_get_u64(c, VHOST_USER_GET_PROTOCOL_FEATURES, &c->protocol_offered))
        return false;
    c->protocol = c->protocol_offered & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    c->reply_ack = c->protocol != 0;
    c->features = want;
    c->nmem = 1;
    if (!vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, c->protocol))
        return false;
    if (!mem_create(&c->mem[0], 0x40000000ull, REGION_SIZE, 0, 0))
        return fail(c, "guest memory: %s", strerror(errno));
    pring_init(rx, "RX", 0, &c->mem[0], base);
    pring_init(tx, "TX", 1, &c->mem[0], base);
    struct pring *rings[2] = { rx, tx };
    for (int i = 0; i < 2; i++) {
        rings[i]->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (rings[i]->call_fd < 0 || !vu_set_fd(c, VHOST_USER_SET_VRING_CALL, rings[i]->index, rings[i]->call_fd))
            return fail(c, "SET_VRING_CALL ring %d: %s", i, c->err[0] ? c->err : strerror(errno));
    }
    struct vu_memory mt = { .nregions = 1 };
    mt.regions[0] = (struct vu_memory_region){ c->mem[0].gpa, c->mem[0].size, uva_of(c->mem[0].base), 0 };
    uint32_t mt_size = (uint32_t)(offsetof(struct vu_memory, regions) + sizeof(mt.regions[0]));
    uint64_t ack = 0;
    uint32_t flags = VHOST_USER_VERSION | (c->reply_ack ? VHOST_USER_NEED_REPLY_MASK : 0);
    return vu_set_u64(c, VHOST_USER_SET_FEATURES, c->features) &&
           vu_send(c, VHOST_USER_SET_MEM_TABLE, flags, &mt, mt_size, &c->mem[0].fd, 1) &&
           (!c->reply_ack || vu_reply(c, VHOST_USER_SET_MEM_TABLE, &ack, sizeof(ack))) &&
           (ack == 0 || fail(c, "SET_MEM_TABLE: REPLY_ACK 0x%" PRIx64, ack)) &&
           pring_start(c, rx, base) && pring_start(c, tx, base);
}

/* Frame `seq`: 60..1514 bytes of a pattern unique to it. */
static uint32_t packed_frame_len(uint32_t seq) { return MIN_FRAME + (seq * 397u) % (MAX_FRAME - MIN_FRAME + 1); }
static uint8_t packed_frame_byte(uint32_t seq, uint32_t i) { return (uint8_t)(seq * 13u + i * 7u + (i >> 8)); }

/* Put frame `seq` on TX behind a zero 12-byte header: in one descriptor, or
 * (two_descs) header + first half, second half in the next slot. */
static bool packed_tx_frame(struct pring *tx, uint32_t seq, bool two_descs)
{
    uint32_t len = packed_frame_len(seq), cut = two_descs ? len / 2 : len;
    uint8_t *buf = tx->bufs + (size_t)tx->avail_slot * PACKED_BUF;
    memset(buf, 0xEE, PACKED_BUF);
    memset(buf, 0, HDR_LEN);
    for (uint32_t i = 0; i < len; i++)
        buf[i < cut ? HDR_LEN + i : 1024 + (i - cut)] = packed_frame_byte(seq, i);
    struct seg segs[2] = { { 0, HDR_LEN + cut }, { 1024, len - cut } };
    return pring_add(tx, segs, two_descs ? 2 : 1, false);
}

/* One RX buffer holds the header and a whole frame (no MRG_RXBUF). */
static bool packed_rx_buffer(struct pring *rx)
{
    memset(rx->bufs + (size_t)rx->avail_slot * PACKED_BUF, 0xDD, PACKED_BUF);
    struct seg seg = { 0, PACKED_BUF };
    return pring_add(rx, &seg, 1, true);
}

/* An RX used descriptor must hold frame `seq`: len = header + frame, the
 * header zero but num_buffers = 1 (VERSION_1 without MRG_RXBUF). */
static bool packed_rx_check(struct conn *c, struct pring *rx, uint16_t id, uint32_t len, uint32_t seq)
{
    const uint8_t *b = rx->bufs + (size_t)id * PACKED_BUF;
    uint32_t want = packed_frame_len(seq);
    if (len != HDR_LEN + want)
        return fail(c, "RX slot %u: frame %u came back as %u bytes, want %u + %u", id, seq, len, HDR_LEN, want);
    for (int i = 0; i < HDR_LEN; i++)
        if (b[i] != (i == 10 ? 1 : 0))
            return fail(c, "RX slot %u: header byte %d is 0x%02x", id, i, b[i]);
    for (uint32_t i = 0; i < want; i++)
        if (b[HDR_LEN + i] != packed_frame_byte(seq, i))
            return fail(c, "RX slot %u: frame %u byte %u differs", id, seq, i);
    return true;
}

/*
 * One round: keep n + 1 RX buffers posted, send frames seq .. seq+n-1 (the
 * ones with a bit set in `chained` as two-descriptor chains), and read all n
 * back: every TX chain used, every frame in the next RX buffer, in order.
 */
static bool packed_round(struct conn *c, struct pring *rx, struct pring *tx, uint32_t seq, uint32_t n,
                         unsigned chained)
{
    while (rx->inflight < n + 1)
        if (!packed_rx_buffer(rx))
            return fail(c, "RX ring full");
    for (uint32_t k = 0; k < n; k++)
        if (!packed_tx_frame(tx, seq + k, chained >> k & 1))
            return fail(c, "TX ring full at frame %u", seq + k);
    pring_notify(rx);
    pring_notify(tx);
    uint32_t tx_done = 0, rx_done = 0;
    double end = now() + 5 * time_scale;
    while (tx_done < n || rx_done < n) {
        uint16_t id;
        uint32_t len;
        int r = pring_used(c, tx, &id, &len);
        if (r < 0)
            return false;
        tx_done += (uint32_t)r;
        r = pring_used(c, rx, &id, &len);
        if (r < 0 || (r > 0 && !packed_rx_check(c, rx, id, len, seq + rx_done)))
            return false;
        rx_done += (uint32_t)r;
        if (r == 0 && now() > end)
            return fail(c, "after 5 s: %u of %u TX chains used, %u frames back (waiting at TX slot %u, RX slot %u)",
                        tx_done, n, rx_done, tx->used_slot, rx->used_slot);
        if (r == 0)
            sleep_ms(1);
    }
    return true;
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

    stop_backend();
    return fe_finish();
}
