/*
 * tests/fuzz/make_seeds.c - writes the seed corpora of the three fuzz targets.
 *
 *   cc -std=gnu11 -I. -o build-fuzz/make_seeds tests/fuzz/make_seeds.c
 *   build-fuzz/make_seeds tests/fuzz/corpus        (what `make fuzz-seeds` does)
 *
 * Seeds are valid, deep inputs, so the fuzzer starts from complete sessions
 * instead of discovering the protocol byte by byte: QEMU- and DPDK-like
 * handshakes that start rings with packets in them, a reconnect, a few
 * malformed messages; rings with direct, chained and indirect descriptors,
 * mergeable and plain receive buffers, an index about to wrap.  The formats
 * are in fuzz_format.h.  The output is deterministic: running this again
 * rewrites the same files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "fuzz_format.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* === A byte buffer ======================================================== */

struct buf {
    uint8_t b[65536];
    size_t n;
};

static void put(struct buf *o, const void *p, size_t len)
{
    if (o->n + len > sizeof o->b) {
        fprintf(stderr, "make_seeds: seed too large\n");
        exit(1);
    }
    memcpy(o->b + o->n, p, len);
    o->n += len;
}
static void put8(struct buf *o, uint8_t v) { put(o, &v, 1); }
static void put16(struct buf *o, uint16_t v) { put(o, &v, 2); }
static void put32(struct buf *o, uint32_t v) { put(o, &v, 4); }

static const char *outdir;

static void save(const char *target, const char *name, const struct buf *o)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", outdir, target);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(o->b, 1, o->n, f) != o->n || fclose(f)) {
        perror(path);
        exit(1);
    }
    printf("%s (%zu bytes)\n", path, o->n);
}

/* === fuzz_vhost_user seeds: a frontend's script ========================= */

enum {  /* request numbers (vhost-user.rst) */
    GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, SET_MEM_TABLE = 5, SET_VRING_NUM = 8,
    SET_VRING_ADDR = 9, SET_VRING_BASE = 10, GET_VRING_BASE = 11, SET_VRING_KICK = 12,
    SET_VRING_CALL = 13, SET_VRING_ERR = 14, GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16,
    GET_QUEUE_NUM = 17, SET_VRING_ENABLE = 18,
};
#define V1   (1u)
#define NEED_REPLY (1u << 3)
#define F(bit) (1ull << (bit))
#define NOFD (1ull << 8)

/* One message: header + payload, with fds of the given kinds. */
static void msg(struct buf *o, uint32_t request, uint32_t flags, const void *payload, uint32_t size,
                const uint8_t *fd_kinds, int nfds)
{
    put8(o, VUF_OP_MSG);
    put8(o, nfds);
    for (int i = 0; i < nfds; i++)
        put8(o, fd_kinds[i]);
    put16(o, 12 + size);
    uint32_t hdr[3] = { request, flags, size };
    put(o, hdr, sizeof hdr);
    put(o, payload, size);
}

static void msg_none(struct buf *o, uint32_t request)
{
    msg(o, request, V1, NULL, 0, NULL, 0);
}

static void msg_u64(struct buf *o, uint32_t request, uint64_t v)
{
    msg(o, request, V1, &v, 8, NULL, 0);
}

static void msg_state(struct buf *o, uint32_t request, uint32_t index, uint32_t num)
{
    uint32_t s[2] = { index, num };
    msg(o, request, V1, s, 8, NULL, 0);
}

static void msg_ring_fd(struct buf *o, uint32_t request, uint32_t index, bool nofd)
{
    uint64_t v = index | (nofd ? NOFD : 0);
    uint8_t kind = VUF_FD_EVENT;
    msg(o, request, V1, &v, 8, &kind, nofd ? 0 : 1);
}

struct region { uint64_t gpa, size, uaddr, mmap_offset; };

static void msg_mem_table(struct buf *o, uint32_t flags, const struct region *r, int n, const uint8_t *kinds)
{
    uint8_t p[8 + 8 * 32] = { 0 };
    uint32_t nregions = n;
    memcpy(p, &nregions, 4);
    memcpy(p + 8, r, n * sizeof *r);
    msg(o, SET_MEM_TABLE, flags, p, 8 + n * sizeof *r, kinds, n);
}

static void msg_vring_addr(struct buf *o, uint32_t index, uint64_t desc, uint64_t used, uint64_t avail)
{
    struct { uint32_t index, flags; uint64_t desc, used, avail, log; } a = { index, 0, desc, used, avail, 0 };
    msg(o, SET_VRING_ADDR, V1, &a, sizeof a, NULL, 0);
}

static void mem_write(struct buf *o, uint32_t memfd_off, const void *p, uint16_t len)
{
    put8(o, VUF_OP_MEM);
    put32(o, memfd_off);
    put16(o, len);
    put(o, p, len);
}

static void burst(struct buf *o, uint8_t extra, uint16_t len)
{
    put8(o, VUF_OP_BURST);
    put8(o, extra);
    put16(o, len);
}

/*
 * A guest's rings in the memfd: ring r's desc/avail/used at memfd offset
 * RING_AREA(r) (+0, +0x400, +0x800), its buffers from BUF_AREA(r).  `gpa`
 * and `uva` say where memfd offset 0 is in each address space (a region
 * with mmap_offset 0 starting at memfd 0).
 */
#define RING_AREA(r) (0x10000u + (r) * 0x1000u)
#define BUF_AREA(r)  (0x40000u + (r) * 0x10000u)
#define QSIZE 16

struct layout { uint64_t gpa, uva; };

static void ring_addr(struct buf *o, const struct layout *l, uint32_t r)
{
    msg_vring_addr(o, r, l->uva + RING_AREA(r), l->uva + RING_AREA(r) + 0x800, l->uva + RING_AREA(r) + 0x400);
}

static void put_desc(struct buf *o, uint32_t memfd_off, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    struct vring_desc d = { .addr = addr, .len = len, .flags = flags, .next = next };
    mem_write(o, memfd_off, &d, sizeof d);
}

static void put_avail(struct buf *o, uint32_t r, const uint16_t *heads, uint16_t n, uint16_t idx_base)
{
    uint16_t a[2 + QSIZE] = { 0, (uint16_t)(idx_base + n) };
    for (uint16_t i = 0; i < n; i++)
        a[2 + ((idx_base + i) % QSIZE)] = heads[i];
    mem_write(o, RING_AREA(r) + 0x400, a, sizeof a);
}

/* Guest TX (ring r odd): three packets: one descriptor; header and frame in
 * two chained descriptors; and (with indirect) an indirect table of two. */
static void guest_tx(struct buf *o, const struct layout *l, uint32_t r, bool indirect, uint16_t idx_base,
                     uint32_t hdr_len)
{
    uint8_t frame[128];
    for (size_t i = 0; i < sizeof frame; i++)
        frame[i] = (uint8_t)i;
    uint32_t b = BUF_AREA(r);
    mem_write(o, b + 0x100, frame, sizeof frame);       /* hdr at b + 0x100 - hdr_len stays zero */
    uint32_t d = RING_AREA(r);
    put_desc(o, d + 0 * 16, l->gpa + b + 0x100 - hdr_len, hdr_len + 60, 0, 0);
    put_desc(o, d + 1 * 16, l->gpa + b + 0x200, hdr_len, VRING_DESC_F_NEXT, 2);
    put_desc(o, d + 2 * 16, l->gpa + b + 0x100, 100, 0, 0);
    uint16_t heads[3] = { 0, 1, 3 };
    if (indirect) {
        put_desc(o, d + 3 * 16, l->gpa + b + 0x300, 32, VRING_DESC_F_INDIRECT, 0);
        put_desc(o, b + 0x300, l->gpa + b + 0x200, hdr_len, VRING_DESC_F_NEXT, 1);
        put_desc(o, b + 0x310, l->gpa + b + 0x100, 128, 0, 0);
    }
    put_avail(o, r, heads, indirect ? 3 : 2, idx_base);
}

/* Guest RX (ring r even): four write-only buffers of 2 KiB. */
static void guest_rx(struct buf *o, const struct layout *l, uint32_t r, uint16_t idx_base)
{
    uint16_t heads[4] = { 0, 1, 2, 3 };
    for (uint32_t i = 0; i < 4; i++)
        put_desc(o, RING_AREA(r) + i * 16, l->gpa + BUF_AREA(r) + i * 0x800, 2048, VRING_DESC_F_WRITE, 0);
    put_avail(o, r, heads, 4, idx_base);
}

static void ring_setup(struct buf *o, const struct layout *l, uint32_t r, uint32_t base, bool kick_nofd)
{
    msg_state(o, SET_VRING_NUM, r, QSIZE);
    msg_state(o, SET_VRING_BASE, r, base);
    ring_addr(o, l, r);
    msg_ring_fd(o, SET_VRING_KICK, r, kick_nofd);
    msg_ring_fd(o, SET_VRING_CALL, r, false);
}

static void vu_header(struct buf *o, uint8_t queue_pairs, bool trace)
{
    put8(o, queue_pairs - 1);
    put8(o, trace);
    put16(o, 0);
}

static const uint64_t our_features = F(VIRTIO_F_VERSION_1) | F(VHOST_USER_F_PROTOCOL_FEATURES) |
    F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_RING_F_INDIRECT_DESC) | F(VIRTIO_RING_F_EVENT_IDX);

/* QEMU 7.2 with a Linux guest (labs/traces/qemu-7.2.trace),
 * against what we offer: protocol features MQ|REPLY_ACK, one region at gpa 0. */
static void qemu_session(struct buf *o, uint32_t base)
{
    static const struct layout l = { .gpa = 0, .uva = 0x7f1200000000ull };
    static const uint8_t guest_fd[1] = { VUF_FD_GUEST };
    msg_none(o, GET_FEATURES);
    msg_none(o, GET_PROTOCOL_FEATURES);
    msg_u64(o, SET_PROTOCOL_FEATURES, 0x9);
    msg_none(o, GET_QUEUE_NUM);
    msg_none(o, SET_OWNER);
    msg_none(o, GET_FEATURES);
    for (uint32_t r = 0; r < 2; r++) {
        msg_ring_fd(o, SET_VRING_CALL, r, false);
        msg_ring_fd(o, SET_VRING_ERR, r, false);
    }
    msg_state(o, SET_VRING_ENABLE, 0, 1);
    msg_state(o, SET_VRING_ENABLE, 1, 1);
    msg_u64(o, SET_FEATURES, our_features);
    struct region reg = { .gpa = l.gpa, .size = 1u << 20, .uaddr = l.uva, .mmap_offset = 0 };
    msg_mem_table(o, V1 | NEED_REPLY, &reg, 1, guest_fd);
    guest_rx(o, &l, 0, (uint16_t)base);
    guest_tx(o, &l, 1, true, (uint16_t)base, 12);
    ring_setup(o, &l, 0, base, false);
    ring_setup(o, &l, 1, base, false);
    burst(o, 2, 64);
    msg_state(o, GET_VRING_BASE, 0, 0);
    msg_state(o, GET_VRING_BASE, 1, 0);
}

static void seeds_vhost_user(void)
{
    static const char *t = "fuzz_vhost_user";
    struct buf *o = calloc(1, sizeof *o);

    /* 1. QEMU: handshake, traffic, stop, disconnect. */
    o->n = 0;
    vu_header(o, 1, false);
    qemu_session(o, 0);
    put8(o, VUF_OP_CLOSE);
    save(t, "qemu_session", o);

    /* 2. The same with --trace on, then a reconnect resuming at base 65530
     *    (16-bit indices wrap during the traffic). */
    o->n = 0;
    vu_header(o, 1, true);
    qemu_session(o, 0);
    put8(o, VUF_OP_CLOSE);
    qemu_session(o, 65530);
    save(t, "qemu_reconnect_trace", o);

    /* 3. DPDK virtio_user: calls before features, no event idx, two regions
     *    with gpa == uaddr and a non-zero mmap_offset, kick with NOFD on TX,
     *    stop with SET_VRING_ENABLE 0 then GET_VRING_BASE. */
    {
        o->n = 0;
        vu_header(o, 1, false);
        const uint64_t base = 0x7f3400000000ull;
        static const uint8_t kinds[2] = { VUF_FD_GUEST, VUF_FD_GUEST };
        /* region A: memfd [0, 1 MiB) at base; region B: memfd [1 MiB, 1.5 MiB) right after it */
        struct region reg[2] = {
            { .gpa = base, .size = 1u << 20, .uaddr = base, .mmap_offset = 0 },
            { .gpa = base + (1u << 20), .size = 512u << 10, .uaddr = base + (1u << 20), .mmap_offset = 1u << 20 },
        };
        struct layout l = { .gpa = base, .uva = base };
        msg_none(o, SET_OWNER);
        msg_none(o, GET_FEATURES);
        msg_none(o, GET_PROTOCOL_FEATURES);
        msg_u64(o, SET_PROTOCOL_FEATURES, 0x9);
        msg_ring_fd(o, SET_VRING_CALL, 0, false);
        msg_ring_fd(o, SET_VRING_CALL, 1, false);
        msg_u64(o, SET_FEATURES, F(VIRTIO_F_VERSION_1) | F(VHOST_USER_F_PROTOCOL_FEATURES) |
                                 F(VIRTIO_NET_F_MRG_RXBUF) | F(VIRTIO_RING_F_INDIRECT_DESC));
        msg_mem_table(o, V1 | NEED_REPLY, reg, 2, kinds);
        guest_rx(o, &l, 0, 0);
        guest_tx(o, &l, 1, false, 0, 12);
        ring_setup(o, &l, 0, 0, false);
        ring_setup(o, &l, 1, 0, true);
        msg_state(o, SET_VRING_ENABLE, 0, 1);
        msg_state(o, SET_VRING_ENABLE, 1, 1);
        burst(o, 1, 1500);
        /* DPDK with hugepages re-sends the table on live rings */
        msg_state(o, SET_VRING_ENABLE, 0, 0);
        msg_state(o, SET_VRING_ENABLE, 1, 0);
        msg_mem_table(o, V1 | NEED_REPLY, reg, 2, kinds);
        msg_state(o, SET_VRING_ENABLE, 0, 1);
        msg_state(o, SET_VRING_ENABLE, 1, 1);
        burst(o, 3, 60);
        msg_state(o, SET_VRING_ENABLE, 0, 0);
        msg_state(o, SET_VRING_ENABLE, 1, 0);
        msg_state(o, GET_VRING_BASE, 0, 0);
        msg_state(o, GET_VRING_BASE, 1, 0);
        save(t, "dpdk_session", o);
    }

    /* 4. The shortest QEMU sequence: no protocol features, legacy virtio
     *    (10-byte header, no MRG_RXBUF), two queue pairs, pair 1 used. */
    {
        o->n = 0;
        vu_header(o, 2, false);
        static const struct layout l = { .gpa = 0x100000, .uva = 0x7f5600000000ull };
        static const uint8_t guest_fd[1] = { VUF_FD_GUEST };
        msg_none(o, GET_FEATURES);
        msg_none(o, SET_OWNER);
        msg_u64(o, SET_FEATURES, F(VHOST_USER_F_PROTOCOL_FEATURES));
        struct region reg = { .gpa = l.gpa, .size = 2u << 20, .uaddr = l.uva, .mmap_offset = 0 };
        msg_mem_table(o, V1, &reg, 1, guest_fd);
        guest_rx(o, &l, 2, 0);
        guest_tx(o, &l, 3, false, 0, 10);
        ring_setup(o, &l, 2, 0, false);
        ring_setup(o, &l, 3, 0, false);
        msg_state(o, SET_VRING_ENABLE, 2, 1);
        msg_state(o, SET_VRING_ENABLE, 3, 1);
        burst(o, 4, 200);
        msg_state(o, GET_VRING_BASE, 2, 0);
        msg_state(o, GET_VRING_BASE, 3, 0);
        save(t, "legacy_two_pairs", o);
    }

    /* 5. Malformed messages, each followed by a reset and a reconnect. */
    {
        o->n = 0;
        vu_header(o, 1, true);
        static const uint8_t guest_fd[1] = { VUF_FD_GUEST };
        struct region reg = { .gpa = 0, .size = 1u << 20, .uaddr = 0x7f1200000000ull };
        /* truncated header */
        put8(o, VUF_OP_MSG); put8(o, 0); put16(o, 6); put32(o, GET_FEATURES); put16(o, V1);
        /* before SET_OWNER */
        msg_state(o, SET_VRING_NUM, 0, 256);
        /* ring index out of range, ring size 3 */
        msg_none(o, SET_OWNER);
        msg_state(o, SET_VRING_NUM, 255, 256);
        msg_none(o, SET_OWNER);
        msg_state(o, SET_VRING_NUM, 0, 3);
        /* too many fds */
        msg_none(o, SET_OWNER);
        static const uint8_t ten[10] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
        msg_mem_table(o, V1, &reg, 1, ten);
        /* regions: bad fds, a file smaller than the region, overlapping */
        static const uint8_t pipe_fd[1] = { VUF_FD_PIPE }, ro_fd[1] = { VUF_FD_RDONLY }, small_fd[1] = { VUF_FD_SMALL };
        msg_none(o, SET_OWNER);
        msg_mem_table(o, V1, &reg, 1, pipe_fd);
        msg_none(o, SET_OWNER);
        msg_mem_table(o, V1, &reg, 1, ro_fd);
        msg_none(o, SET_OWNER);
        msg_mem_table(o, V1, &reg, 1, small_fd);
        msg_none(o, SET_OWNER);
        struct region two[2] = { reg, reg };
        two[1].mmap_offset = 4096;
        static const uint8_t kinds2[2] = { VUF_FD_GUEST, VUF_FD_GUEST };
        msg_mem_table(o, V1, two, 2, kinds2);
        /* SET_VRING_ADDR outside the table, after a good table */
        msg_none(o, SET_OWNER);
        msg_mem_table(o, V1, &reg, 1, guest_fd);
        msg_vring_addr(o, 0, 0x1000, 0x2000, 0x3000);
        /* unknown request, wrong payload size */
        msg_none(o, 40);
        msg(o, SET_FEATURES, V1, "\0\0\0\0", 4, NULL, 0);
        save(t, "malformed", o);
    }

    /* 6. QEMU with packed=on (VIRTIO_F_RING_PACKED, §2.8): the same areas
     *    hold the descriptor ring (+0), the driver event area (+0x400, sent as
     *    "avail") and the device event area (+0x800, "used").  Four RX
     *    buffers and two TX packets made available in lap 1 (AVAIL=1, USED=0),
     *    traffic, GET_VRING_BASE (wrap bits), then a restart at slot 2. */
    {
        o->n = 0;
        vu_header(o, 1, false);
        static const struct layout l = { .gpa = 0, .uva = 0x7f1300000000ull };
        static const uint8_t guest_fd[1] = { VUF_FD_GUEST };
        msg_none(o, GET_FEATURES);
        msg_none(o, GET_PROTOCOL_FEATURES);
        msg_u64(o, SET_PROTOCOL_FEATURES, 0x9);
        msg_none(o, SET_OWNER);
        msg_u64(o, SET_FEATURES, our_features | F(VIRTIO_F_RING_PACKED));
        struct region reg = { .gpa = l.gpa, .size = 1u << 20, .uaddr = l.uva, .mmap_offset = 0 };
        msg_mem_table(o, V1 | NEED_REPLY, &reg, 1, guest_fd);
        for (uint16_t i = 0; i < 4; i++) {
            struct vring_packed_desc d = { .addr = l.gpa + BUF_AREA(0) + i * 0x800u, .len = 2048, .id = i,
                                           .flags = (1u << VRING_PACKED_DESC_F_AVAIL) | VRING_DESC_F_WRITE };
            mem_write(o, RING_AREA(0) + i * 16u, &d, sizeof d);
        }
        uint8_t frame[72] = { 0 };
        for (size_t i = 12; i < sizeof frame; i++)
            frame[i] = (uint8_t)i;
        mem_write(o, BUF_AREA(1), frame, sizeof frame);
        for (uint16_t i = 0; i < 2; i++) {
            struct vring_packed_desc d = { .addr = l.gpa + BUF_AREA(1), .len = sizeof frame, .id = i,
                                           .flags = 1u << VRING_PACKED_DESC_F_AVAIL };
            mem_write(o, RING_AREA(1) + i * 16u, &d, sizeof d);
        }
        ring_setup(o, &l, 0, 1u << 15, false);     /* slot 0, wrap counter 1 (bit 15) */
        ring_setup(o, &l, 1, 1u << 15, false);
        msg_state(o, SET_VRING_ENABLE, 0, 1);
        msg_state(o, SET_VRING_ENABLE, 1, 1);
        burst(o, 2, 64);
        msg_state(o, GET_VRING_BASE, 0, 0);
        msg_state(o, GET_VRING_BASE, 1, 0);
        ring_setup(o, &l, 1, 2 | 1u << 15, false);
        burst(o, 1, 60);
        put8(o, VUF_OP_CLOSE);
        save(t, "qemu_packed", o);
    }
    free(o);
}

/* === fuzz_virtqueue seeds: a guest's ring ================================= */

/* Offsets in the memory image (frontend-virtual order, region 0 first). */
#define VQ_DESC  0x000u
#define VQ_AVAIL 0x400u
#define VQ_USED  0x800u
#define VQ_BUFS  0x1000u

struct vq_seed {
    struct vqf_header h;
    struct vqf_op ops[VQF_MAX_OPS];
    uint8_t img[0x3000];
    uint32_t img_len;
};

static void vq_begin(struct vq_seed *s, uint8_t features, uint8_t size_log2, uint16_t last_avail, uint8_t layout)
{
    memset(s, 0, sizeof *s);
    s->h = (struct vqf_header){ .features = features, .size_log2 = size_log2, .last_avail = last_avail,
                                .desc_off = VQ_DESC, .avail_off = VQ_AVAIL, .used_off = VQ_USED,
                                .layout = layout };
}

static void vq_op(struct vq_seed *s, uint8_t kind, uint8_t n, uint16_t a, uint32_t b)
{
    s->ops[s->h.nops++] = (struct vqf_op){ kind, n, a, b };
}

static void vq_poke(struct vq_seed *s, uint32_t off, const void *p, uint32_t len)
{
    memcpy(s->img + off, p, len);
    if (off + len > s->img_len)
        s->img_len = off + len;
}

static void vq_desc(struct vq_seed *s, uint32_t table_off, uint16_t i, uint32_t buf_off, uint32_t len,
                    uint16_t flags, uint16_t next)
{
    struct vring_desc d = { .addr = VQF_GPA0 + buf_off, .len = len, .flags = flags, .next = next };
    vq_poke(s, table_off + 16 * i, &d, sizeof d);
}

static void vq_avail(struct vq_seed *s, uint16_t size, const uint16_t *heads, uint16_t n, uint16_t first_idx,
                     uint16_t flags, uint16_t used_event)
{
    uint16_t hdr[2] = { flags, (uint16_t)(first_idx + n) };
    vq_poke(s, VQ_AVAIL, hdr, sizeof hdr);
    for (uint16_t i = 0; i < n; i++)
        vq_poke(s, VQ_AVAIL + 4 + 2 * ((first_idx + i) & (size - 1)), &heads[i], 2);
    vq_poke(s, VQ_AVAIL + 4 + 2 * size, &used_event, 2);
}

static void vq_used_idx(struct vq_seed *s, uint16_t idx)
{
    vq_poke(s, VQ_USED + 2, &idx, 2);
}

static void vq_save(const char *name, struct vq_seed *s)
{
    struct buf *o = calloc(1, sizeof *o);
    put(o, &s->h, sizeof s->h);
    put(o, s->ops, s->h.nops * sizeof s->ops[0]);
    put(o, s->img, s->img_len);
    save("fuzz_virtqueue", name, o);
    free(o);
}

/* A TX ring of 8: a one-descriptor packet, a header+frame chain, an
 * indirect table of three (if `indirect`); frames are bytes 0, 1, 2, ... */
static void vq_tx_chains(struct vq_seed *s, bool indirect, uint32_t hdr_len, uint16_t first_idx)
{
    uint8_t frame[256];
    for (size_t i = 0; i < sizeof frame; i++)
        frame[i] = (uint8_t)i;
    vq_poke(s, VQ_BUFS + 0x100, frame, sizeof frame);
    vq_desc(s, VQ_DESC, 0, VQ_BUFS + 0x100 - hdr_len, hdr_len + 64, 0, 0);
    vq_desc(s, VQ_DESC, 1, VQ_BUFS + 0x400, hdr_len, VRING_DESC_F_NEXT, 5);
    vq_desc(s, VQ_DESC, 5, VQ_BUFS + 0x100, 200, 0, 0);
    uint16_t heads[3] = { 0, 1, 2 };
    if (indirect) {
        vq_desc(s, VQ_DESC, 2, VQ_BUFS + 0x800, 48, VRING_DESC_F_INDIRECT, 0);
        vq_desc(s, VQ_BUFS + 0x800, 0, VQ_BUFS + 0x400, hdr_len, VRING_DESC_F_NEXT, 2);
        vq_desc(s, VQ_BUFS + 0x800, 2, VQ_BUFS + 0x100, 100, VRING_DESC_F_NEXT, 1);
        vq_desc(s, VQ_BUFS + 0x800, 1, VQ_BUFS + 0x164, 156, 0, 0);
    }
    vq_avail(s, 8, heads, indirect ? 3 : 2, first_idx, 0, 0);
    vq_used_idx(s, first_idx);
}

/* An RX ring of 8: n write-only buffers of len bytes (the last one a chain
 * of two halves). */
static void vq_rx_buffers(struct vq_seed *s, uint16_t n, uint32_t len, uint16_t used_event)
{
    uint16_t heads[8];
    for (uint16_t i = 0; i < n; i++) {
        heads[i] = i;
        vq_desc(s, VQ_DESC, i, VQ_BUFS + i * 0x800, len, VRING_DESC_F_WRITE, 0);
    }
    vq_desc(s, VQ_DESC, n - 1, VQ_BUFS + (n - 1) * 0x800, len / 2, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 7);
    vq_desc(s, VQ_DESC, 7, VQ_BUFS + 0x7000, len - len / 2, VRING_DESC_F_WRITE, 0);
    vq_avail(s, 8, heads, n, 0, 0, used_event);
}

enum { FMRG = 1, FIND = 2, FEVT = 4, FV1 = 8 };

static void seeds_virtqueue(void)
{
    struct vq_seed *s = calloc(1, sizeof *s);

    vq_begin(s, FV1, 3, 0, 4);
    vq_tx_chains(s, false, 12, 0);
    vq_op(s, VQF_DEQUEUE, 32, 1514, 0);
    vq_save("tx_plain", s);

    vq_begin(s, FV1 | FIND | FEVT, 3, 0, 4);
    vq_tx_chains(s, true, 12, 0);
    vq_op(s, VQF_DEQUEUE, 1, 1514, 0);
    vq_op(s, VQF_DEQUEUE, 32, 100, 0);      /* a frame larger than the room: dropped */
    vq_op(s, VQF_AVAIL_ENTRY, 3, 1, 0);     /* the guest reposts chain 1 */
    vq_op(s, VQF_AVAIL_IDX, 0, 4, 0);
    vq_op(s, VQF_DEQUEUE, 32, 1514, 0);
    vq_save("tx_indirect_event_idx", s);

    /* Legacy header (10 bytes), indices about to wrap, re-attach half way. */
    vq_begin(s, FIND, 3, 65534, 4);
    vq_tx_chains(s, true, 10, 65534);
    vq_op(s, VQF_DEQUEUE, 2, 1514, 0);
    vq_op(s, VQF_REATTACH, 0, 0, 0);
    vq_op(s, VQF_DEQUEUE, 32, 1514, 0);
    vq_save("tx_legacy_wrap", s);

    /* Mergeable RX buffers: packets of 60, 1000, 1940, 2880 bytes into 1 KiB buffers. */
    vq_begin(s, FV1 | FMRG | FEVT, 3, 0, 4);
    vq_rx_buffers(s, 6, 1024, 2);
    vq_op(s, VQF_ENQUEUE, 4, 60, 940);
    vq_op(s, VQF_AVAIL_IDX, 0, 7, 0);
    vq_op(s, VQF_ENQUEUE, 2, 100, 0);
    vq_save("rx_mergeable", s);

    /* Plain RX buffers: packets too big for one chain are dropped, the next fit. */
    vq_begin(s, FV1, 3, 0, 4);
    vq_rx_buffers(s, 4, 1536, 0);
    vq_op(s, VQF_ENQUEUE, 2, 1600, 0);
    vq_op(s, VQF_ENQUEUE, 3, 60, 1000);        /* 60, 1060, 2060 bytes */
    vq_save("rx_plain", s);

    /* Region 1 far away in guest-physical space, holding TX buffers. */
    vq_begin(s, FV1, 3, 0, 5);
    vq_desc(s, VQ_DESC, 0, 0, 12 + 60, 0, 0);
    vq_desc(s, VQ_DESC, 1, 0, 12, VRING_DESC_F_NEXT, 2);
    vq_desc(s, VQ_DESC, 2, 0, 1500, 0, 0);
    for (int i = 0; i < 3; i++) {       /* addresses in region 1: gpa VQF_GPA1_FAR + ... */
        uint64_t addr = VQF_GPA1_FAR + 0x1000 * i;
        vq_poke(s, VQ_DESC + 16 * i, &addr, 8);
    }
    {
        uint16_t heads[2] = { 0, 1 };
        vq_avail(s, 8, heads, 2, 0, VRING_AVAIL_F_NO_INTERRUPT, 0);
    }
    vq_op(s, VQF_DEQUEUE, 32, 1514, 0);
    vq_save("tx_region1", s);
    free(s);
}

/* === fuzz_offload: frames with headers (fuzz_format.h, struct ofz_header) === */

/* The pseudo-header sum of a TCP/UDP frame laid out as below, folded: what
 * a sender leaves in the checksum field for the hardware (CHECKSUM_PARTIAL). */
static uint16_t of_pseudo(const uint8_t *f, uint32_t l3, uint32_t l4, uint32_t end, bool v6, uint8_t proto)
{
    uint32_t acc = proto + ((end - l4) >> 16) + ((end - l4) & 0xffff);
    for (uint32_t i = v6 ? l3 + 8 : l3 + 12; i < (v6 ? l3 + 40 : l3 + 20); i += 2)
        acc += (uint32_t)(f[i] << 8 | f[i + 1]);
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

/* Ethernet (+ VLAN), IPv4 or IPv6, TCP (20 + 12 bytes of options) or UDP,
 * `payload` bytes; the transport checksum left partial, the IPv4 header
 * checksum right.  Returns the length and the transport offset in *l4. */
static uint32_t of_frame(uint8_t *f, bool v6, bool vlan, bool tcp, uint32_t payload, uint32_t *l4out)
{
    uint32_t l3 = vlan ? 18 : 14, l4 = l3 + (v6 ? 40 : 20), end = l4 + (tcp ? 32 : 8) + payload;
    memset(f, 0, end);
    memcpy(f, "\x52\x54\x00\x12\x34\x57\x52\x54\x00\x12\x34\x56", 12);
    if (vlan)
        memcpy(f + 12, "\x81\x00\x00\x05", 4);
    f[l3 - 2] = v6 ? 0x86 : 0x08, f[l3 - 1] = v6 ? 0xdd : 0x00;
    uint8_t proto = tcp ? 6 : 17;
    if (v6) {
        f[l3] = 0x60, f[l3 + 4] = (uint8_t)((end - l4) >> 8), f[l3 + 5] = (uint8_t)(end - l4), f[l3 + 6] = proto;
        f[l3 + 7] = 64, f[l3 + 8] = f[l3 + 24] = 0xfd, f[l3 + 23] = 2, f[l3 + 39] = 3;
    } else {
        f[l3] = 0x45, f[l3 + 2] = (uint8_t)((end - l3) >> 8), f[l3 + 3] = (uint8_t)(end - l3), f[l3 + 8] = 64;
        f[l3 + 9] = proto, f[l3 + 12] = f[l3 + 16] = 10, f[l3 + 15] = 2, f[l3 + 19] = 3;
        uint32_t acc = 0;
        for (uint32_t i = l3; i < l4; i += 2)
            acc += (uint32_t)(f[i] << 8 | f[i + 1]);
        while (acc >> 16)
            acc = (acc & 0xffff) + (acc >> 16);
        f[l3 + 10] = (uint8_t)(~acc >> 8), f[l3 + 11] = (uint8_t)~acc;
    }
    f[l4] = 0x9c, f[l4 + 1] = 0x40, f[l4 + 2] = 0x13, f[l4 + 3] = 0x89;
    if (tcp) {
        f[l4 + 7] = 1, f[l4 + 12] = 0x80, f[l4 + 13] = 0x18, f[l4 + 14] = 0x01;
        memcpy(f + l4 + 20, "\x01\x01\x08\x0a\0\0\0\x01\0\0\0\x02", 12);
    } else {
        f[l4 + 4] = (uint8_t)((end - l4) >> 8), f[l4 + 5] = (uint8_t)(end - l4);
    }
    for (uint32_t i = 0; i < payload; i++)
        f[end - payload + i] = (uint8_t)(i * 7 + 1);
    uint16_t ps = of_pseudo(f, l3, l4, end, v6, proto);
    uint32_t at = l4 + (tcp ? 16 : 6);
    f[at] = (uint8_t)(ps >> 8), f[at + 1] = (uint8_t)ps;
    *l4out = l4;
    return end;
}

static void of_seed(const char *name, uint8_t entry, uint8_t tx_bits, uint8_t rx_bits, uint8_t copies,
                    bool v6, bool vlan, bool tcp, uint32_t payload, uint8_t gso_type, uint16_t gso_size)
{
    static struct buf o;
    static uint8_t f[65536];
    uint32_t l4, len = of_frame(f, v6, vlan, tcp, payload, &l4);
    struct ofz_header h = { .entry = entry, .tx_bits = tx_bits, .rx_bits = rx_bits, .copies = copies, .room = 4096 - 128 };
    struct vx_net_hdr hdr = { .flags = 1, .gso_type = gso_type, .hdr_len = (uint16_t)(l4 + 32),
                              .gso_size = gso_size, .csum_start = (uint16_t)l4, .csum_offset = tcp ? 16 : 6 };
    memcpy(h.hdr, &hdr, sizeof hdr);
    o.n = 0;
    put(&o, &h, sizeof h);
    put(&o, f, len);
    save("fuzz_offload", name, &o);
}

/* fuzz_virtqueue: a TX ring of a guest with CSUM and HOST_TSO4 (features
 * bit 5): a NEEDS_CSUM UDP packet in one buffer, then a TSO packet (1500
 * bytes of payload at gso_size 500) as header + frame, then the same again;
 * dequeued towards small buffers (vq_dequeue_burst_big, then ofl_to_nic). */
static void seed_virtqueue_tso(void)
{
    struct vq_seed *s = calloc(1, sizeof *s);
    static uint8_t f[4096];
    uint32_t l4;
    vq_begin(s, FV1 | FIND | 32, 3, 0, 4);
    uint32_t udp_len = of_frame(f, false, false, false, 100, &l4);
    struct vx_net_hdr hdr = { .flags = 1, .csum_start = (uint16_t)l4, .csum_offset = 6 };
    uint8_t h12[12] = { 0 };
    memcpy(h12, &hdr, sizeof hdr);
    vq_poke(s, VQ_BUFS, h12, 12);
    vq_poke(s, VQ_BUFS + 12, f, udp_len);
    vq_desc(s, VQ_DESC, 0, VQ_BUFS, 12 + udp_len, 0, 0);
    uint32_t tcp_len = of_frame(f, false, false, true, 1500, &l4);
    hdr = (struct vx_net_hdr){ .flags = 1, .gso_type = 1, .hdr_len = (uint16_t)(l4 + 32), .gso_size = 500,
                               .csum_start = (uint16_t)l4, .csum_offset = 16 };
    memcpy(h12, &hdr, sizeof hdr);
    vq_poke(s, VQ_BUFS + 0x400, h12, 12);
    vq_poke(s, VQ_BUFS + 0x800, f, tcp_len);
    vq_desc(s, VQ_DESC, 1, VQ_BUFS + 0x400, 12, VRING_DESC_F_NEXT, 2);
    vq_desc(s, VQ_DESC, 2, VQ_BUFS + 0x800, tcp_len, 0, 0);
    uint16_t heads[3] = { 0, 1, 0 };
    vq_avail(s, 8, heads, 3, 0, 0, 0);
    vq_op(s, VQF_DEQUEUE, 32, 1514, 1);
    vq_op(s, VQF_DEQUEUE, 32, 1514, 1);
    vq_save("tx_tso_big", s);
    free(s);
}

static void seeds_offload(void)
{
    seed_virtqueue_tso();
    of_seed("nic_tso4", 0, 15, 0, 0, false, false, true, 9000, 1, 1448);
    of_seed("nic_tso6_vlan", 0, 15, 0, 0, true, true, true, 5000, 4, 1220);
    of_seed("nic_csum_udp_burst", 0, 1, 0, 3, false, false, false, 300, 0, 0);
    of_seed("guest_tso4_cut", 1, 15, 0, 1, false, false, true, 20000, 1, 1448);
    of_seed("guest_tso6_cut_partial", 1, 15, 1, 0, true, false, true, 7000, 4, 1000);
    of_seed("guest_tso4_whole", 1, 15, 15, 2, false, true, true, 30000, 0x81, 1448);
    of_seed("guest_csum_completed", 1, 1, 0, 3, true, false, false, 999, 0, 0);
    of_seed("nic_partial_tcp4", 2, 0, 1, 0, false, false, true, 1448, 0, 0);
    of_seed("nic_partial_udp6", 2, 0, 0, 0, true, true, false, 61, 0, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS-DIR   (writes CORPUS-DIR/fuzz_vhost_user/*, fuzz_virtqueue/*, fuzz_offload/*)\n",
                argv[0]);
        return 2;
    }
    outdir = argv[1];
    if (mkdir(outdir, 0755) < 0 && errno != EEXIST) {
        perror(outdir);
        return 1;
    }
    seeds_vhost_user();
    seeds_virtqueue();
    seeds_offload();
    return 0;
}
