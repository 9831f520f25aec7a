/*
 * tests/fuzz/fuzz_offload.c - libFuzzer target: offload.c's three
 * directions (guest -> NIC, guest -> guest, NIC -> guest) with any frame and
 * any virtio-net header a hostile guest (or wire) can make.
 *
 * Input: fuzz_format.h, struct ofz_header, then the frame.
 *
 * What must hold, whatever the input:
 *   - memory safety: every frame and every output buffer is a heap block of
 *     exactly its size, so ASan catches a byte read or written past it;
 *   - a frame lent by the sending guest (guest -> guest) is never written:
 *     it is compared with a copy afterwards;
 *   - every packet handed on fits its buffer (len <= room);
 *   - what offload.c computed is right: a segment it cut with a full
 *     checksum verifies (IPv4 header checksum, TCP checksum over the
 *     pseudo-header, checked here with a reference of our own); a checksum
 *     it completed (NEEDS_CSUM) is right: from csum_start to the end, plus
 *     what the field held before (the pseudo-header sum), it sums to 0xffff
 *     (for a field at an even offset, as every Internet checksum's is: one
 *     at an odd csum_offset is computed as Linux would, but cannot verify);
 *     a NEEDS_CSUM header handed on points inside the packet; a frame from
 *     the NIC changes in at most its 2-byte checksum field;
 *   - counters: a packet dropped guest to guest is dropped for a bad header
 *     (drops == bad headers), and a TSO packet cut for the NIC comes out as
 *     the number of segments counted, over polls of a few frames each.
 *
 * Build and run: `make fuzz` (see tests/fuzz/run.sh).  VX_FUZZ_LOG=1 shows
 * the product's log lines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "fuzz_format.h"
#include "../ref_csum.h"

#include <stdlib.h>
#include <string.h>

bool vx_trace_rings;            /* virtqueue.c's in the product */
static FILE *out;

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)

static void fail(int line, const char *cond)
{
    fprintf(out, "fuzz_offload.c:%d: invariant broken: %s\n", line, cond);
    fflush(out);
    abort();
}

/* === A reference, independent of offload.c =============================== */

/* RFC 1071: ref_sum, ref_fold, be16 (tests/ref_csum.h). */

/* A segment offload.c cut, with full checksums: Ethernet, up to two VLAN
 * tags, IPv4 or IPv6 (hop-by-hop and destination options), TCP; both
 * checksums verify over exactly the IP length. */
static bool segment_ok(const uint8_t *f, uint32_t len)
{
    uint32_t l3 = 14;
    uint16_t type = be16(f + 12);
    for (int t = 0; t < 2 && (type == 0x8100 || type == 0x88a8); t++, l3 += 4)
        type = be16(f + l3 + 2);
    uint32_t l4, end, sum;
    if (type == 0x0800) {
        l4 = l3 + (f[l3] & 15) * 4u;
        end = l3 + be16(f + l3 + 2);
        if (end != len || ref_fold(ref_sum(f + l3, l4 - l3, 0)) != 0xffff)
            return false;
        sum = ref_sum(f + l3 + 12, 8, 0) + 6 + (end - l4);
    } else {
        end = l3 + 40 + be16(f + l3 + 4);
        l4 = l3 + 40;
        for (uint8_t next = f[l3 + 6]; next == 0 || next == 60; next = f[l4], l4 += (f[l4 + 1] + 1u) * 8)
            ;
        if (end != len)
            return false;
        sum = ref_sum(f + l3 + 8, 32, 0) + 6 + ((end - l4) >> 16) + ((end - l4) & 0xffff);
    }
    return ref_fold(ref_sum(f + l4, end - l4, sum)) == 0xffff;
}

/* === The three directions ================================================= */

static uint8_t *scratch_buf[VX_BURST];
static struct vx_pkt scratch[VX_BURST];
static const uint8_t *lent[4];          /* the burst's frames (guest -> guest) */
static int lent_n;
static bool tso_in;

/* ofl_to_guest's send(): what it hands on to the receiving guest. */
static void on_send(void *ctx, struct vx_pkt *pkts, int n)
{
    (void)ctx;
    CHECK(n > 0 && n <= VX_BURST);
    for (int i = 0; i < n; i++) {
        struct vx_pkt *p = &pkts[i];
        bool ours = false;
        for (int k = 0; k < VX_BURST; k++)
            ours |= p->data == scratch_buf[k];
        bool theirs = false;
        for (int k = 0; k < lent_n; k++)
            theirs |= p->data == lent[k];
        CHECK(ours || theirs);
        CHECK(p->len <= (ours ? (uint32_t)VX_PKT_MAX : p->room));
        if (p->hdr.flags & 1)
            CHECK((uint32_t)p->hdr.csum_start + p->hdr.csum_offset + 2 <= p->len);
        if (ours && tso_in && !(p->hdr.flags & 1))
            CHECK(segment_ok(p->data, p->len));
        if (ours && !tso_in)    /* a checksum completed in a copy */
            CHECK(p->hdr.flags == 0);
    }
}

static void to_guest(const struct ofz_header *h, const uint8_t *frame, uint32_t len, int copies,
                     struct vx_vring *tx, struct vx_vring *rx)
{
    struct vx_pkt burst[4];
    uint8_t *copy = malloc(len + 1);
    memcpy(copy, frame, len);
    for (int i = 0; i < copies; i++) {
        uint8_t *f = malloc(len ? len : 1);
        memcpy(f, frame, len);
        lent[i] = f;
        burst[i] = (struct vx_pkt){ .len = len, .room = len, .data = f };
        memcpy(&burst[i].hdr, h->hdr, sizeof burst[i].hdr);
    }
    lent_n = copies;
    tso_in = burst[0].hdr.gso_type != 0;
    ofl_to_guest(tx, rx, burst, copies, scratch, on_send, NULL);
    CHECK(tx->stats.drops == tx->stats.bad_hdr);
    for (int i = 0; i < copies; i++) {
        CHECK(memcmp(lent[i], copy, len) == 0);     /* a lent frame is never written */
        free((void *)lent[i]);
    }
    free(copy);
}

static void to_nic(const struct ofz_header *h, const uint8_t *frame, uint32_t len, int copies, struct vx_vring *tx)
{
    uint32_t room = 128 + h->room % 3969;
    struct vx_pkt frames[8];
    uint8_t *bufs[8];
    for (int k = 0; k < 8; k++)
        bufs[k] = malloc(room);
    /* As vq_dequeue_burst_big leaves it: a TSO packet, or one too long for
     * a frame, in big (ending the burst), the others in the frames. */
    struct vx_net_hdr hdr;
    memcpy(&hdr, h->hdr, sizeof hdr);
    struct ofl_cut cut = { .big = { .room = VX_PKT_MAX, .data = malloc(len ? len : 1) } };
    int filled = 0;
    if (hdr.gso_type || len > room) {
        memcpy(cut.big.data, frame, len);
        cut.big.len = len;
        cut.big.hdr = hdr;
    } else {
        for (; filled < copies; filled++) {
            frames[filled] = (struct vx_pkt){ .len = len, .room = room, .data = bufs[filled], .hdr = hdr };
            memcpy(bufs[filled], frame, len);
        }
    }
    for (int k = filled; k < 8; k++)
        frames[k] = (struct vx_pkt){ .room = room, .data = bufs[k] };
    /* The first poll takes the burst (or the packet in big); the next ones,
     * 3 frames each, go on cutting until big is done (bounded: at most
     * 1024 segments). */
    bool cutting = cut.big.len != 0;
    uint64_t segs = 0;
    int n = ofl_to_nic(&cut, tx, frames, filled, 3 + copies);
    for (int poll = 0; poll < 400; poll++) {
        CHECK(n >= 0 && n <= (poll ? 3 : 3 + copies));
        for (int k = 0; k < n; k++) {
            CHECK(frames[k].len <= room);
            if (cutting) {
                CHECK(segment_ok(frames[k].data, frames[k].len));
                segs++;
            } else if ((hdr.flags & 1) && !(hdr.csum_offset & 1)) {   /* completed in place (see the top) */
                CHECK(ref_fold(ref_sum(frames[k].data + hdr.csum_start, frames[k].len - hdr.csum_start,
                                       be16(frame + hdr.csum_start + hdr.csum_offset))) == 0xffff);
            }
        }
        for (int k = 0; k < 8; k++)
            frames[k] = (struct vx_pkt){ .room = room, .data = bufs[k] };
        if (!cut.big.len)
            break;
        n = ofl_to_nic(&cut, tx, frames, 0, 3);
    }
    CHECK(cut.big.len == 0);
    CHECK(segs == tx->stats.segments);
    for (int k = 0; k < 8; k++)
        free(bufs[k]);
    free(cut.big.data);
}

static void from_nic(const uint8_t *frame, uint32_t len, struct vx_vring *rx)
{
    uint8_t *f = malloc(len ? len : 1);
    memcpy(f, frame, len);
    struct vx_pkt p = { .len = len, .room = len, .data = f, .hdr = { .flags = 0xff, .gso_type = 0xff } };
    ofl_from_nic(rx, &p, 1);
    CHECK(p.hdr.gso_type == 0 && (p.hdr.flags == 0 || p.hdr.flags == 1));
    if (p.hdr.flags)
        CHECK((uint32_t)p.hdr.csum_start + p.hdr.csum_offset + 2 <= len);
    uint32_t changed = 0, first = 0;
    for (uint32_t i = 0; i < len; i++)
        if (f[i] != frame[i] && !changed++)
            first = i;
    CHECK(changed == 0 || (changed <= 2 && (changed == 1 || f[first + 1] != frame[first + 1])));
    CHECK(changed == 0 || rx->stats.csum_sw == 1);
    free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!out) {
        out = stderr;
        if (!getenv("VX_FUZZ_LOG")) {
            FILE *null = fopen("/dev/null", "w");
            if (null)
                stderr = null;
        }
        for (int k = 0; k < VX_BURST; k++) {
            scratch_buf[k] = malloc(VX_PKT_MAX);
            scratch[k] = (struct vx_pkt){ .room = VX_PKT_MAX, .data = scratch_buf[k] };
        }
    }
    struct ofz_header h;
    if (size < sizeof h || size - sizeof h > 65535)
        return 0;
    memcpy(&h, data, sizeof h);
    const uint8_t *frame = data + sizeof h;
    uint32_t len = (uint32_t)(size - sizeof h);
    static const int txf[4] = { VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_ECN };
    static const int rxf[4] = { VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
                                VIRTIO_NET_F_GUEST_ECN };
    struct vx_vring tx = { .index = 1 }, rx = { .index = 0 };
    for (int b = 0; b < 4; b++) {
        if (h.tx_bits & (1 << b))
            tx.features |= 1ull << txf[b];
        if (h.rx_bits & (1 << b))
            rx.features |= 1ull << rxf[b];
    }
    /* Without CSUM virtqueue.c never copies a header: it stays zero. */
    if (!(tx.features & (1ull << VIRTIO_NET_F_CSUM)))
        memset(h.hdr, 0, sizeof h.hdr);
    vx_trace_rings = h.copies & 0x80;   /* the --trace lines too */
    int copies = h.copies % 4 + 1;
    switch (h.entry % 3) {
    case 0: to_nic(&h, frame, len, copies, &tx); break;
    case 1: to_guest(&h, frame, len, copies, &tx, &rx); break;
    case 2: from_nic(frame, len, &rx); break;
    }
    return 0;
}
