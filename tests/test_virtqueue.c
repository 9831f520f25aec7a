/*
 * tests/test_virtqueue.c - unit tests for virtqueue.c, on guest memory built here.
 *
 * The test plays the guest driver.  It lays out split rings (virtio 1.2 §2.7)
 * in a fake guest memory, writes descriptors, avail entries and avail->idx,
 * calls the backend's vq_dequeue_burst() (guest TX) or vq_enqueue_burst()
 * (guest RX), and checks what came back: the packets, the used ring, the
 * counters and the call eventfd.
 *
 * Guest memory is two regions, A and B, each mmap'ed with PROT_NONE guard
 * pages on both sides: any access outside guest memory kills the test with
 * SIGSEGV, which is reported as "not ok".  A and B are adjacent in
 * guest-physical space and in the frontend's virtual space, but not in ours,
 * so a buffer straddling them must be refused, never read across.  The
 * frontend's virtual addresses (SET_VRING_ADDR) differ from the
 * guest-physical ones (descriptors), so mixing the two spaces fails.
 *
 * Read in this order (the TAP cases and the guard pages are in tests/unit.h):
 * guest memory, the driver's side of a ring, bursts and checks, then the
 * tests: translation, attach, TX, TX lending (vq_dequeue_burst_lend), RX,
 * notification, malformed rings.
 *
 * Build: gcc -std=gnu11 -O1 -g -Wall -Wextra -Werror -pthread -I. \
 *            tests/test_virtqueue.c virtqueue.c -o tests/test_virtqueue
 * (also clean with -fsanitize=address,undefined).  Run from anywhere.
 * Output: TAP, the plan last.  Exit status 0 iff every test passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "unit.h"             /* TAP cases, fatal-signal report, guarded memory */
#include "dirty_log.h"        /* the dirty-log bitmap and check_marked(), as in test_packed.c */

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * What virtqueue.c says on stderr: glibc lets a program assign `stderr`, so a
 * test can catch the lines vx_log() prints (sanitizer reports still go to
 * fd 2).  cap_end() echoes them as TAP comments and returns the line count.
 */
static FILE *cap_file, *cap_saved;
static char cap_text[4096];

static void cap_begin(void)
{
    fflush(stderr);
    cap_file = tmpfile();
    if (!cap_file) {
        perror("tmpfile");
        exit(2);
    }
    cap_saved = stderr;
    stderr = cap_file;
}

static int cap_end(void)
{
    fflush(cap_file);
    stderr = cap_saved;
    rewind(cap_file);
    size_t len = fread(cap_text, 1, sizeof cap_text - 1, cap_file);
    cap_text[len] = 0;
    fclose(cap_file);
    int lines = 0;
    for (char *p = cap_text; *p;) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        printf("#   stderr: %.*s\n", (int)l, p);
        lines++;
        p += l + (nl ? 1 : 0);
    }
    return lines;
}

/* === Guest memory ======================================================== */

#define GUARD   (64u * 1024)
#define A_GPA   0x100000ull              /* region A, guest-physical */
#define A_SIZE  (1024u * 1024)
#define A_UVA   0x7f0000000000ull        /* region A, frontend virtual */
#define A_END   (A_GPA + A_SIZE)
#define B_GPA   A_END                    /* region B: adjacent to A in both spaces */
#define B_SIZE  (256u * 1024)
#define B_UVA   (A_UVA + A_SIZE)
#define B_END   (B_GPA + B_SIZE)

/* The rings live at the start of region A (room for num <= 1024). */
#define DESC_OFF  0x0000u
#define AVAIL_OFF 0x4000u
#define USED_OFF  0x6000u
#define HEAP_OFF  0x10000u       /* buffers and indirect tables: galloc() */

#define F(bit) (1ull << (bit))
#define V1  F(VIRTIO_F_VERSION_1)
#define MRG F(VIRTIO_NET_F_MRG_RXBUF)
#define IND F(VIRTIO_RING_F_INDIRECT_DESC)
#define EVT F(VIRTIO_RING_F_EVENT_IDX)
#define INO F(VIRTIO_F_IN_ORDER)

static struct vx_mem mem;
static uint8_t *host_a, *host_b;
static uint8_t *snapshot;        /* a copy of region A, to prove nothing was written */

/* A buffer whose last byte sits right before a guard page. */
static uint8_t *guarded_tail(size_t len)
{
    size_t rw = (len + (size_t)page_size - 1) & ~((size_t)page_size - 1);
    return map_guarded(rw, (size_t)page_size) + rw - len;
}

static void mem_init(void)
{
    host_a = map_guarded(A_SIZE, GUARD);
    host_b = map_guarded(B_SIZE, GUARD);
    mem.nregions = 2;
    mem.regions[0] = (struct vx_mem_region){ .guest_phys_addr = A_GPA, .memory_size = A_SIZE,
                                             .userspace_addr = A_UVA, .host = host_a };
    mem.regions[1] = (struct vx_mem_region){ .guest_phys_addr = B_GPA, .memory_size = B_SIZE,
                                             .userspace_addr = B_UVA, .host = host_b };
    snapshot = malloc(A_SIZE);
    if (!snapshot)
        exit(2);
}

/* The test's own guest-physical -> host translation (not the one under test). */
static uint8_t *hva(uint64_t gpa)
{
    if (gpa >= A_GPA && gpa < A_END)
        return host_a + (gpa - A_GPA);
    if (gpa >= B_GPA && gpa < B_END)
        return host_b + (gpa - B_GPA);
    fprintf(stderr, "test bug: hva(0x%llx)\n", (unsigned long long)gpa);
    exit(2);
}

/* === The driver's side of one ring ====================================== */

static struct {
    uint16_t num;
    uint32_t hdr_len;            /* what the test expects, from the features */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    uint32_t heap_a, heap_b;     /* next free offsets in regions A and B */
} g;

static struct vx_vring vr;       /* the backend's view, handed to virtqueue.c */
static int call_fd = -1;

#define USED_EVENT (g.avail->ring[g.num])

/* Guest memory for buffers: 64-byte aligned, from region A (or B). */
static uint64_t galloc_in(uint32_t len, bool in_b)
{
    uint32_t *heap = in_b ? &g.heap_b : &g.heap_a;
    uint32_t size = in_b ? B_SIZE : A_SIZE;
    uint32_t off = *heap;
    *heap = (off + len + 63) & ~63u;
    if (*heap > size) {
        fprintf(stderr, "test bug: guest heap exhausted\n");
        exit(2);
    }
    return (in_b ? B_GPA : A_GPA) + off;
}

static uint64_t galloc(uint32_t len) { return galloc_in(len, false); }

static void set_desc(struct vring_desc *t, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    t[i].addr = addr;
    t[i].len = len;
    t[i].flags = flags;
    t[i].next = next;
}

static void avail_push(uint16_t head)
{
    g.avail->ring[g.avail->idx & (g.num - 1)] = head;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    g.avail->idx++;
}

/* Packet byte k of the packet made with `seed`; period > 256 so shifts show. */
static uint8_t pat(uint32_t seed, uint32_t k)
{
    return (uint8_t)(seed * 131u + k * 7u + (k >> 8) * 13u + 1u);
}

/*
 * Describe a buffer as descriptors t[first], t[first+1], ... chained by NEXT.
 * lens[] gives each descriptor's length (0 allowed); flags is 0 (readable,
 * TX) or VRING_DESC_F_WRITE (writable, RX).  Readable bytes are a net header
 * of junk (hdr_len bytes) then packet bytes pat(seed, k), counted from
 * *pos across calls; writable bytes are 0xAA.
 */
static void build_chain_at(struct vring_desc *t, uint16_t first, const uint32_t *lens, int nseg,
                           uint16_t flags, uint32_t seed, uint32_t *pos, bool in_b)
{
    for (int s = 0; s < nseg; s++) {
        uint64_t a = galloc_in(lens[s] ? lens[s] : 16, in_b);
        uint8_t *p = hva(a);
        for (uint32_t k = 0; k < lens[s]; k++, (*pos)++)
            p[k] = (flags & VRING_DESC_F_WRITE) ? 0xAA
                 : *pos < g.hdr_len ? (uint8_t)(0xC0 | *pos) : pat(seed, *pos - g.hdr_len);
        bool last = s == nseg - 1;
        set_desc(t, (uint16_t)(first + s), a, lens[s], flags | (last ? 0 : VRING_DESC_F_NEXT),
                 last ? 0 : (uint16_t)(first + s + 1));
    }
}

static void build_chain(struct vring_desc *t, uint16_t first, const uint32_t *lens, int nseg,
                        uint16_t flags, uint32_t seed)
{
    uint32_t pos = 0;
    build_chain_at(t, first, lens, nseg, flags, seed, &pos, false);
}

/* An indirect table of n descriptors in guest memory. */
static uint64_t ind_table(int n, struct vring_desc **t)
{
    uint64_t a = galloc((uint32_t)(16 * n));
    *t = (struct vring_desc *)hva(a);
    return a;
}

/* TX: offer the packet in descriptors first.. (lens[]), as one avail entry. */
static void tx_offer(uint16_t first, const uint32_t *lens, int nseg, uint32_t seed)
{
    build_chain(g.desc, first, lens, nseg, 0, seed);
    avail_push(first);
}

/* An RX buffer: one chain of writable descriptors t[first..first+nseg-1]. */
struct rxbuf {
    const struct vring_desc *t;  /* the ring's table or an indirect one */
    uint16_t first, nseg;
    uint16_t head;               /* what went into the avail ring */
};

static struct rxbuf rx_offer(uint16_t first, const uint32_t *lens, int nseg)
{
    build_chain(g.desc, first, lens, nseg, VRING_DESC_F_WRITE, 0);
    avail_push(first);
    return (struct rxbuf){ g.desc, first, (uint16_t)nseg, first };
}

static bool notified(uint64_t *count)
{
    uint64_t v = 0;
    if (call_fd < 0 || read(call_fd, &v, sizeof v) != (ssize_t)sizeof v)
        return false;
    if (count)
        *count = v;
    return true;
}

/*
 * Fresh rings of `num` entries with avail->idx = used->idx = start, then
 * vq_attach() as vhost_user.c would call it.  restart keeps vr as it was
 * (a broken ring) and restarts it the way the frontend does: GET_VRING_BASE
 * clears broken, the next start attaches again.
 */
static bool ring_setup(uint16_t num, uint64_t features, uint16_t start, bool rx, bool restart)
{
    memset(host_a, 0, A_SIZE);
    memset(host_b, 0, B_SIZE);
    g.num = num;
    g.hdr_len = (features & (V1 | MRG)) ? 12 : 10;
    g.desc = (struct vring_desc *)(host_a + DESC_OFF);
    g.avail = (struct vring_avail *)(host_a + AVAIL_OFF);
    g.used = (struct vring_used *)(host_a + USED_OFF);
    g.heap_a = HEAP_OFF;
    g.heap_b = 0;
    memset(g.used->ring, 0xEE, sizeof(g.used->ring[0]) * num);   /* "never written" */
    g.avail->idx = start;
    g.used->idx = start;
    while (notified(NULL))
        ;
    if (!restart)
        memset(&vr, 0, sizeof vr);
    vr.broken = false;                          /* as GET_VRING_BASE does */
    vr.index = rx ? 0 : 1;
    vr.num = num;
    vr.desc_user_addr = A_UVA + DESC_OFF;
    vr.avail_user_addr = A_UVA + AVAIL_OFF;
    vr.used_user_addr = A_UVA + USED_OFF;
    vr.addr_set = vr.enabled = vr.kick_received = true;
    vr.kick_fd = vr.err_fd = -1;
    vr.call_fd = call_fd;
    int rc = vq_attach(&vr, &mem, features);
    CHECK(rc == 0, "vq_attach on a well-formed ring returned %d", rc);
    CHECK(!vr.broken, "ring broken right after vq_attach");
    vr.last_avail_idx = start;                  /* as SET_VRING_BASE would */
    memset(&vr.stats, 0, sizeof vr.stats);
    vr.ready = true;
    return rc == 0;
}

/* === Bursts and checks ================================================== */

#define NOUT 64
static struct vx_pkt out[NOUT];
static uint8_t *out_buf[NOUT];   /* VX_PKT_MAX bytes each, a guard page right after:
                                  * a buffer of `room` bytes is its last `room` bytes */

static int deq_room(int n, uint32_t room)
{
    for (int i = 0; i < NOUT; i++)
        out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = room, .data = out_buf[i] + VX_PKT_MAX - room };
    return vq_dequeue_burst(&vr, out, n);
}

static int deq(int n) { return deq_room(n, VX_PKT_MAX); }

/* Packets to enqueue: the data ends right before a guard page. */
#define NPKT 8
static uint8_t *pkt_end[NPKT];

static struct vx_pkt mkpkt(int slot, uint32_t len, uint32_t seed)
{
    uint8_t *p = pkt_end[slot] - len;
    for (uint32_t k = 0; k < len; k++)
        p[k] = pat(seed, k);
    return (struct vx_pkt){ .len = len, .room = len, .data = p };
}

static int enq(struct vx_pkt *p, int n)
{
    return vq_enqueue_burst(&vr, p, n);
}

static const struct vring_used_elem *used_at(uint16_t pos)
{
    return &g.used->ring[pos & (g.num - 1)];
}

static void check_stats(uint64_t packets, uint64_t bytes, uint64_t drops, uint64_t broken)
{
    CHECK(vr.stats.packets == packets, "stats.packets %llu, want %llu", (unsigned long long)vr.stats.packets,
          (unsigned long long)packets);
    CHECK(vr.stats.bytes == bytes, "stats.bytes %llu, want %llu", (unsigned long long)vr.stats.bytes,
          (unsigned long long)bytes);
    CHECK(vr.stats.drops == drops, "stats.drops %llu, want %llu", (unsigned long long)vr.stats.drops,
          (unsigned long long)drops);
    CHECK(vr.stats.broken == broken, "stats.broken %llu, want %llu", (unsigned long long)vr.stats.broken,
          (unsigned long long)broken);
}

static void check_indexes(uint16_t used_idx, uint16_t last_avail_idx)
{
    CHECK(g.used->idx == used_idx, "used->idx %u, want %u", g.used->idx, used_idx);
    CHECK(vr.last_avail_idx == last_avail_idx, "last_avail_idx %u, want %u", vr.last_avail_idx, last_avail_idx);
    CHECK(vr.last_used_idx == used_idx, "last_used_idx %u, want %u", vr.last_used_idx, used_idx);
}

/* TX: out[i] holds the packet of `len` bytes made with `seed`. */
static void check_tx_pkt(int i, uint32_t len, uint32_t seed)
{
    CHECK(out[i].len == len, "packet %d: len %u, want %u", i, out[i].len, len);
    if (out[i].len != len)
        return;
    for (uint32_t k = 0; k < len; k++)
        if (out[i].data[k] != pat(seed, k)) {
            CHECK(0, "packet %d: byte %u is 0x%02x, want 0x%02x", i, k, out[i].data[k], pat(seed, k));
            return;
        }
}

/* TX: the used entry at pos is {id = head, len = 0}. */
static void check_used_tx(uint16_t pos, uint16_t head)
{
    const struct vring_used_elem *e = used_at(pos);
    CHECK(e->id == head && e->len == 0, "used[%u] = {id %u, len %u}, want {%u, 0}", pos & (g.num - 1), e->id,
          e->len, head);
}

static uint32_t buf_cap(const struct rxbuf *b)
{
    uint32_t cap = 0;
    for (int i = 0; i < b->nseg; i++)
        cap += b->t[b->first + i].len;
    return cap;
}

/*
 * RX: the packet (len bytes, seed) went into buffers bufs[0..nbuf), whose used
 * entries start at used position pos.  Each buffer must hold as many bytes as
 * fit (header first, then data), its used entry must say so, the header must
 * be all zero but num_buffers = nbuf (12-byte header), and bytes past what
 * was written must still be 0xAA.
 */
static void check_rx(const struct rxbuf *bufs, int nbuf, uint16_t pos, uint32_t len, uint32_t seed)
{
    static uint8_t stream[2 * VX_PKT_MAX];
    uint32_t left = g.hdr_len + len, got = 0;

    for (int i = 0; i < nbuf; i++) {
        const struct rxbuf *b = &bufs[i];
        uint32_t cap = buf_cap(b), want = cap < left ? cap : left;
        const struct vring_used_elem *e = used_at((uint16_t)(pos + i));
        CHECK(e->id == b->head, "used[%u].id %u, want %u", (pos + i) & (g.num - 1), e->id, b->head);
        CHECK(e->len == want, "used[%u].len %u, want %u", (pos + i) & (g.num - 1), e->len, want);
        left -= want;
        uint32_t off = 0;
        for (int s = 0; s < b->nseg; s++) {
            const struct vring_desc *d = &b->t[b->first + s];
            const uint8_t *p = hva(d->addr);
            for (uint32_t k = 0; k < d->len; k++, off++) {
                if (off < want)
                    stream[got++] = p[k];
                else if (p[k] != 0xAA) {
                    CHECK(0, "buffer %d: byte %u past the %u written was overwritten (0x%02x)", i, off, want, p[k]);
                    return;
                }
            }
        }
    }
    CHECK(left == 0, "test bug: buffers too small");
    for (uint32_t k = 0; k < g.hdr_len; k++) {
        uint8_t want = 0;
        if (g.hdr_len == 12 && k == 10)
            want = (uint8_t)nbuf;
        if (g.hdr_len == 12 && k == 11)
            want = (uint8_t)(nbuf >> 8);
        if (stream[k] != want) {
            CHECK(0, "header byte %u is 0x%02x, want 0x%02x%s", k, stream[k], want,
                  k >= 10 ? " (num_buffers)" : "");
            return;
        }
    }
    for (uint32_t k = 0; k < len; k++)
        if (stream[g.hdr_len + k] != pat(seed, k)) {
            CHECK(0, "packet byte %u is 0x%02x, want 0x%02x", k, stream[g.hdr_len + k], pat(seed, k));
            return;
        }
}

/* === Address translation (vhost_xdp.h) ================================== */

static void t_translate_gpa(void)
{
    begin("vx_gpa_to_va: region boundaries");
    CHECK(vx_gpa_to_va(&mem, A_GPA, 1) == host_a, "first byte of A");
    CHECK(vx_gpa_to_va(&mem, A_GPA, A_SIZE) == host_a, "all of A");
    CHECK(vx_gpa_to_va(&mem, A_END - 1, 1) == host_a + A_SIZE - 1, "last byte of A");
    CHECK(vx_gpa_to_va(&mem, A_END - 1, 2) == NULL, "last byte of A + first of B (straddles)");
    CHECK(vx_gpa_to_va(&mem, A_GPA, A_SIZE + 1) == NULL, "A plus one byte");
    CHECK(vx_gpa_to_va(&mem, A_GPA + 1, A_SIZE) == NULL, "A shifted by one");
    CHECK(vx_gpa_to_va(&mem, A_END, 1) == host_b, "first byte of B (A's one-past-end)");
    CHECK(vx_gpa_to_va(&mem, B_END - 1, 1) == host_b + B_SIZE - 1, "last byte of B");
    CHECK(vx_gpa_to_va(&mem, B_END, 1) == NULL, "one past the end of B");
    CHECK(vx_gpa_to_va(&mem, B_END, 0) == NULL, "len 0 at one past the end");
    CHECK(vx_gpa_to_va(&mem, B_END - 1, 0) == host_b + B_SIZE - 1, "len 0 at the last byte");
    CHECK(vx_gpa_to_va(&mem, A_GPA - 1, 1) == NULL, "byte before A");
    CHECK(vx_gpa_to_va(&mem, A_GPA - 1, 2) == NULL, "straddles A's start");
    CHECK(vx_gpa_to_va(&mem, 0, 1) == NULL, "address 0");
    CHECK(vx_gpa_to_va(&mem, A_GPA, 0xffffffffull) == NULL, "len 0xffffffff");
    CHECK(vx_gpa_to_va(&mem, A_GPA, UINT64_MAX) == NULL, "len 2^64-1");
    CHECK(vx_gpa_to_va(&mem, A_GPA + 16, UINT64_MAX - 15) == NULL, "addr+len wraps to A's start");
    CHECK(vx_gpa_to_va(&mem, UINT64_MAX - 5, 100) == NULL, "addr+len wraps past 2^64");
    CHECK(vx_gpa_to_va(&mem, A_UVA, 1) == NULL, "a frontend virtual address is not guest-physical");
    end();
}

static void t_translate_uva(void)
{
    begin("vx_uva_to_va: region boundaries, two address spaces");
    CHECK(vx_uva_to_va(&mem, A_UVA, 1) == host_a, "first byte of A");
    CHECK(vx_uva_to_va(&mem, A_UVA + A_SIZE - 1, 1) == host_a + A_SIZE - 1, "last byte of A");
    CHECK(vx_uva_to_va(&mem, A_UVA + A_SIZE - 1, 2) == NULL, "straddles A and B");
    CHECK(vx_uva_to_va(&mem, B_UVA + 100, 10) == host_b + 100, "inside B");
    CHECK(vx_uva_to_va(&mem, B_UVA + B_SIZE, 1) == NULL, "one past the end of B");
    CHECK(vx_uva_to_va(&mem, B_UVA + B_SIZE, 0) == NULL, "len 0 at one past the end");
    CHECK(vx_uva_to_va(&mem, A_UVA, UINT64_MAX) == NULL, "huge len");
    CHECK(vx_uva_to_va(&mem, A_GPA, 1) == NULL, "a guest-physical address is not a frontend address");
    end();
}

static void t_translate_top(void)
{
    begin("vx_translate: region at the top of the 64-bit space, empty table");
    static uint8_t top[4096];
    struct vx_mem m = { .nregions = 1 };
    m.regions[0] = (struct vx_mem_region){ .guest_phys_addr = UINT64_MAX - 4095, .memory_size = 4096,
                                           .userspace_addr = 0x1000, .host = top };
    CHECK(vx_gpa_to_va(&m, UINT64_MAX, 1) == top + 4095, "last byte of the address space");
    CHECK(vx_gpa_to_va(&m, UINT64_MAX, 2) == NULL, "one byte past 2^64 (wraps to 0)");
    CHECK(vx_gpa_to_va(&m, UINT64_MAX - 4095, 4096) == top, "the whole region");
    CHECK(vx_gpa_to_va(&m, UINT64_MAX - 4095, 4097) == NULL, "region + 1 (wraps)");
    CHECK(vx_uva_to_va(&m, 0x1000 + 4095, 1) == top + 4095, "uva last byte");
    CHECK(vx_uva_to_va(&m, 0x1000 + 4096, 1) == NULL, "uva one past the end");
    m.nregions = 0;
    CHECK(vx_gpa_to_va(&m, UINT64_MAX - 4095, 1) == NULL, "no regions");
    end();
}

/* === vq_attach ========================================================== */

static int try_attach(struct vx_vring *v, uint16_t num, uint64_t d, uint64_t a, uint64_t u, uint64_t features)
{
    memset(v, 0, sizeof *v);
    v->num = num;
    v->desc_user_addr = d;
    v->avail_user_addr = a;
    v->used_user_addr = u;
    v->kick_fd = v->call_fd = v->err_fd = -1;
    return vq_attach(v, &mem, features);
}

static void t_attach_features(void)
{
    static const struct { uint64_t f; uint32_t hdr; bool mrg, evt, ind; } c[] = {
        { 0, 10, false, false, false },
        { V1, 12, false, false, false },
        { MRG, 12, true, false, false },
        { V1 | MRG, 12, true, false, false },
        { V1 | EVT, 12, false, true, false },
        { IND, 10, false, false, true },
        { V1 | MRG | EVT | IND, 12, true, true, true },
    };
    struct vx_vring v;
    begin("vq_attach: hdr_len, mrg_rxbuf, event_idx, indirect from the features");
    memset(host_a, 0, A_SIZE);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int rc = try_attach(&v, 256, A_UVA + DESC_OFF, A_UVA + AVAIL_OFF, A_UVA + USED_OFF, c[i].f);
        CHECK(rc == 0, "features 0x%llx: rc %d", (unsigned long long)c[i].f, rc);
        CHECK(v.hdr_len == c[i].hdr, "features 0x%llx: hdr_len %u, want %u", (unsigned long long)c[i].f, v.hdr_len,
              c[i].hdr);
        CHECK(v.mrg_rxbuf == c[i].mrg && v.event_idx == c[i].evt && v.indirect == c[i].ind,
              "features 0x%llx: mrg %d event_idx %d indirect %d", (unsigned long long)c[i].f, v.mrg_rxbuf,
              v.event_idx, v.indirect);
    }
    end();
}

static void t_attach_state(void)
{
    struct vx_vring v;
    begin("vq_attach: translates ring addresses, last_used_idx = used->idx, keeps broken as it was");
    memset(host_a, 0, A_SIZE);
    ((struct vring_used *)(host_a + USED_OFF))->idx = 1234;
    memset(&v, 0, sizeof v);
    v.num = 256;
    v.desc_user_addr = A_UVA + DESC_OFF;
    v.avail_user_addr = A_UVA + AVAIL_OFF;
    v.used_user_addr = A_UVA + USED_OFF;
    v.kick_fd = v.call_fd = v.err_fd = -1;
    v.broken = true;
    int rc = vq_attach(&v, &mem, V1);
    CHECK(rc == 0, "rc %d", rc);
    CHECK((uint8_t *)v.desc == host_a + DESC_OFF, "desc %p, want %p", (void *)v.desc, (void *)(host_a + DESC_OFF));
    CHECK((uint8_t *)v.avail == host_a + AVAIL_OFF, "avail %p", (void *)v.avail);
    CHECK((uint8_t *)v.used == host_a + USED_OFF, "used %p", (void *)v.used);
    CHECK(v.mem == &mem, "mem not recorded");
    CHECK(v.last_used_idx == 1234, "last_used_idx %u, want 1234", v.last_used_idx);
    /* A new memory table re-attaches live rings: a broken ring must stay
     * broken (vhost_user.c clears it on GET_VRING_BASE, a real restart). */
    CHECK(v.broken, "vq_attach revived a broken ring");
    v.broken = false;
    CHECK(vq_attach(&v, &mem, V1) == 0 && !v.broken, "vq_attach broke a sound ring");
    end();
}

static void t_attach_sizes(void)
{
    struct vx_vring v;
    const uint64_t d = A_UVA + DESC_OFF, a = A_UVA + AVAIL_OFF, u = A_UVA + USED_OFF;
    begin("vq_attach: ring size must be a power of two in 1..32768");
    memset(host_a, 0, A_SIZE);
    cap_begin();
    CHECK(try_attach(&v, 0, d, a, u, V1) == -1, "num 0 accepted");
    CHECK(try_attach(&v, 3, d, a, u, V1) == -1, "num 3 accepted");
    CHECK(try_attach(&v, 48000, d, a, u, V1) == -1, "num 48000 accepted");
    CHECK(try_attach(&v, 65535, d, a, u, V1) == -1, "num 65535 accepted");
    CHECK(try_attach(&v, 1, d, a, u, V1) == 0, "num 1 refused");
    CHECK(try_attach(&v, 1024, d, a, u, V1 | EVT) == 0, "num 1024 refused");
    /* 32768: desc 512 KiB, avail 64 KiB + 6, used 256 KiB + 6, all inside A */
    CHECK(try_attach(&v, 32768, A_UVA, A_UVA + 0x80000, A_UVA + 0x91000, V1 | EVT) == 0, "num 32768 refused");
    cap_end();
    end();
}

static void t_attach_addresses(void)
{
    struct vx_vring v;
    const uint16_t n = 256;
    const uint64_t d = A_UVA + DESC_OFF, a = A_UVA + AVAIL_OFF, u = A_UVA + USED_OFF;
    const uint64_t bend = B_UVA + B_SIZE;
    const uint64_t avail_size = 4 + 2 * n + 2, used_size = 4 + 8 * n + 2;
    begin("vq_attach: every ring wholly inside one region, in the frontend's address space");
    memset(host_a, 0, A_SIZE);
    memset(host_b, 0, B_SIZE);
    cap_begin();
    CHECK(try_attach(&v, n, A_GPA + DESC_OFF, a, u, V1) == -1, "desc given as a guest-physical address accepted");
    CHECK(try_attach(&v, n, d, A_GPA + AVAIL_OFF, u, V1) == -1, "avail given as guest-physical accepted");
    CHECK(try_attach(&v, n, d, a, A_GPA + USED_OFF, V1) == -1, "used given as guest-physical accepted");
    CHECK(try_attach(&v, n, bend - 16 * n, a, u, V1 | EVT) == 0, "desc table ending at B's last byte refused");
    CHECK(try_attach(&v, n, bend - 16 * n + 16, a, u, V1 | EVT) == -1, "desc table 16 B past B accepted");
    CHECK(try_attach(&v, n, B_UVA - 8 * n, a, u, V1 | EVT) == -1, "desc table straddling A and B accepted");
    CHECK(try_attach(&v, n, bend, a, u, V1 | EVT) == -1, "desc table just past B accepted");
    CHECK(try_attach(&v, n, d, bend - avail_size, u, V1 | EVT) == 0, "avail ring ending at B's last byte refused");
    CHECK(try_attach(&v, n, d, bend - avail_size + 2, u, V1 | EVT) == -1,
          "avail ring whose used_event is past B accepted");
    CHECK(try_attach(&v, n, d, a, bend - used_size - 2, V1 | EVT) == 0, "used ring 2 B before B's end refused");
    CHECK(try_attach(&v, n, d, a, bend - used_size + 2, V1 | EVT) == -1,
          "used ring whose avail_event is past B accepted");
    CHECK(try_attach(&v, n, d, a, B_UVA - 1024, V1 | EVT) == -1, "used ring straddling A and B accepted");
    CHECK(try_attach(&v, n, d, a, UINT64_MAX - 64, V1 | EVT) == -1, "used ring wrapping 2^64 accepted");
    cap_end();
    end();
}

/* === TX: guest -> backend (vq_dequeue_burst) ============================ */

/* One chain of descriptors 0.. with lengths lens[]: one packet out. */
static void tx_one(const char *name, uint16_t num, uint64_t features, const uint32_t *lens, int nseg)
{
    begin(name);
    ring_setup(num, features, 0, false, false);
    uint32_t total = 0;
    for (int i = 0; i < nseg; i++)
        total += lens[i];
    tx_offer(0, lens, nseg, 5);
    int r = deq(VX_BURST);
    CHECK(r == 1, "returned %d, want 1", r);
    check_tx_pkt(0, total - g.hdr_len, 5);
    check_used_tx(0, 0);
    check_indexes(1, 1);
    check_stats(1, total - g.hdr_len, 0, 0);
    CHECK(!vr.broken, "ring broken");
    end();
}

static void t_tx_layouts(void)
{
    static const uint32_t single[] = { 12 + 60 };
    static const uint32_t own_hdr[] = { 12, 1500 };
    static const uint32_t split_hdr[] = { 4, 8 + 20, 30 };
    static const uint32_t three[] = { 12, 700, 800 };
    static const uint32_t zeros[] = { 12, 0, 100, 0, 50 };
    static const uint32_t legacy[] = { 10 + 60 };
    static const uint32_t full[] = { 12, 10, 10, 10, 10, 10, 10, 10 };
    static const uint32_t biggest[] = { 12 + VX_PKT_MAX };
    static const uint32_t biggest_split[] = { 12, 40000, VX_PKT_MAX - 40000 };

    tx_one("TX: header and 60 B packet in one descriptor", 256, V1, single, 1);
    tx_one("TX: header in its own descriptor, 1500 B packet", 256, V1, own_hdr, 2);
    tx_one("TX: header split across descriptors (4 + 8|20 + 30)", 256, V1, split_hdr, 3);
    tx_one("TX: chain of 3 descriptors", 256, V1, three, 3);
    tx_one("TX: zero-length descriptors are skipped", 256, V1, zeros, 5);
    tx_one("TX: legacy 10-byte header (neither VERSION_1 nor MRG_RXBUF)", 256, 0, legacy, 1);
    tx_one("TX: 12-byte header with MRG_RXBUF alone", 256, MRG, single, 1);
    tx_one("TX: chain of exactly num descriptors (num 8)", 8, V1, full, 8);
    tx_one("TX: packet of exactly VX_PKT_MAX bytes", 256, V1, biggest, 1);
    tx_one("TX: packet of exactly VX_PKT_MAX bytes over 3 descriptors", 256, V1, biggest_split, 3);
}

static void t_tx_two_regions(void)
{
    begin("TX: header in region A, data in region B");
    ring_setup(256, V1, 0, false, false);
    uint32_t pos = 0;
    static const uint32_t hdr[] = { 12 }, data[] = { 3000 };
    build_chain_at(g.desc, 0, hdr, 1, 0, 9, &pos, false);
    build_chain_at(g.desc, 1, data, 1, 0, 9, &pos, true);
    g.desc[0].flags |= VRING_DESC_F_NEXT;
    g.desc[0].next = 1;
    avail_push(0);
    CHECK(deq(VX_BURST) == 1, "no packet");
    check_tx_pkt(0, 3000, 9);
    check_used_tx(0, 0);
    end();
}

static void t_tx_indirect(void)
{
    begin("TX: indirect table of 4 descriptors");
    ring_setup(256, V1 | IND, 0, false, false);
    struct vring_desc *t;
    uint64_t ta = ind_table(4, &t);
    static const uint32_t lens[] = { 12, 100, 200, 300 };
    build_chain(t, 0, lens, 4, 0, 11);
    set_desc(g.desc, 5, ta, 64, VRING_DESC_F_INDIRECT, 0);
    avail_push(5);
    int r = deq(VX_BURST);
    CHECK(r == 1, "returned %d", r);
    check_tx_pkt(0, 600, 11);
    check_used_tx(0, 5);
    check_indexes(1, 1);
    check_stats(1, 600, 0, 0);
    end();

    begin("TX: indirect descriptor with WRITE set is still read (virtio 1.2 2.7.5.3.2: device MUST ignore it)");
    ring_setup(256, V1 | IND, 0, false, false);
    ta = ind_table(2, &t);
    static const uint32_t lens2[] = { 12, 400 };
    build_chain(t, 0, lens2, 2, 0, 12);
    set_desc(g.desc, 3, ta, 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0);
    avail_push(3);
    r = deq(VX_BURST);
    CHECK(r == 1, "returned %d", r);
    check_tx_pkt(0, 400, 12);
    CHECK(!vr.broken, "ring broken");
    end();

    begin("TX: direct descriptors followed by an indirect one (virtio 1.2 2.7.5.3.2: device MUST handle)");
    ring_setup(256, V1 | IND, 0, false, false);
    uint32_t pos = 0;
    static const uint32_t head[] = { 12 }, tail[] = { 100, 200 };
    build_chain_at(g.desc, 3, head, 1, 0, 13, &pos, false);
    g.desc[3].flags |= VRING_DESC_F_NEXT;
    g.desc[3].next = 4;
    ta = ind_table(2, &t);
    build_chain_at(t, 0, tail, 2, 0, 13, &pos, false);
    set_desc(g.desc, 4, ta, 32, VRING_DESC_F_INDIRECT, 0);
    avail_push(3);
    r = deq(VX_BURST);
    CHECK(r == 1, "returned %d", r);
    check_tx_pkt(0, 300, 13);
    check_used_tx(0, 3);
    CHECK(!vr.broken, "ring broken");
    end();
}

static void t_tx_ring_full(void)
{
    begin("TX: avail->idx exactly num ahead (all 8 entries of an 8-entry ring)");
    ring_setup(8, V1, 0, false, false);
    for (uint16_t i = 0; i < 8; i++) {
        uint32_t l = 12 + 50 + i;
        tx_offer(i, &l, 1, 20 + i);
    }
    int r = deq(VX_BURST);
    CHECK(r == 8, "returned %d, want 8", r);
    for (int i = 0; i < 8 && i < r; i++) {
        check_tx_pkt(i, 50 + (uint32_t)i, 20 + (uint32_t)i);
        check_used_tx((uint16_t)i, (uint16_t)i);
    }
    check_indexes(8, 8);
    CHECK(!vr.broken, "ring broken");
    end();
}

static void t_tx_burst_limit(void)
{
    begin("TX: burst limit n smaller than what is available");
    ring_setup(256, V1, 0, false, false);
    for (uint16_t i = 0; i < 10; i++) {
        uint32_t l = 12 + 64;
        tx_offer(i, &l, 1, 30 + i);
    }
    int r = deq(4);
    CHECK(r == 4, "first burst of 4 returned %d", r);
    CHECK(out[4].len == 0xdeadbeef, "pkts[4] written by a burst of n = 4");
    for (int i = 0; i < 4; i++)
        check_tx_pkt(i, 64, 30 + (uint32_t)i);
    check_indexes(4, 4);
    r = deq(3);
    CHECK(r == 3, "second burst of 3 returned %d", r);
    check_tx_pkt(0, 64, 34);
    r = deq(VX_BURST);
    CHECK(r == 3, "third burst returned %d, want the 3 left", r);
    check_tx_pkt(2, 64, 39);
    for (uint16_t i = 0; i < 10; i++)
        check_used_tx(i, i);
    check_indexes(10, 10);
    r = deq(VX_BURST);
    CHECK(r == 0, "empty ring returned %d", r);
    check_stats(10, 640, 0, 0);
    end();
}

static void t_tx_wrap(void)
{
    begin("TX: ring indexes wrap past 65535");
    ring_setup(256, V1, 65530, false, false);
    for (uint16_t i = 0; i < 10; i++) {
        uint32_t l = 12 + 100;
        tx_offer(i, &l, 1, 40 + i);
    }
    CHECK(g.avail->idx == 4, "test bug: avail idx %u", g.avail->idx);
    int r = deq(4);
    CHECK(r == 4, "first burst returned %d", r);
    check_indexes(65534, 65534);
    r = deq(VX_BURST);
    CHECK(r == 6, "second burst returned %d, want 6", r);
    for (int i = 0; i < 6 && i < r; i++)
        check_tx_pkt(i, 100, 44 + (uint32_t)i);
    for (uint16_t i = 0; i < 10; i++)
        check_used_tx((uint16_t)(65530 + i), i);
    check_indexes(4, 4);
    check_stats(10, 1000, 0, 0);
    end();
}

static void t_tx_drops(void)
{
    begin("TX: chains shorter than the header are dropped and consumed, the ring goes on");
    ring_setup(256, V1, 0, false, false);
    static const uint32_t good1[] = { 12 + 60 }, short1[] = { 8 }, short2[] = { 4, 4 }, good2[] = { 12, 100 };
    tx_offer(0, good1, 1, 50);
    tx_offer(1, short1, 1, 51);
    tx_offer(2, short2, 2, 52);
    tx_offer(4, good2, 2, 53);
    int r = deq(VX_BURST);
    CHECK(r == 2, "returned %d, want 2", r);
    check_tx_pkt(0, 60, 50);
    check_tx_pkt(1, 100, 53);
    check_used_tx(0, 0);
    check_used_tx(1, 1);
    check_used_tx(2, 2);
    check_used_tx(3, 4);
    check_indexes(4, 4);
    check_stats(2, 160, 2, 0);
    CHECK(!vr.broken, "ring broken");
    end();

    begin("TX: packets over VX_PKT_MAX are dropped and consumed, the ring goes on");
    ring_setup(256, V1, 0, false, false);
    static const uint32_t big1[] = { 12 + VX_PKT_MAX + 1 }, big2[] = { 12, 40000, 40000 }, ok[] = { 12 + 70 };
    tx_offer(0, big1, 1, 54);
    tx_offer(1, big2, 3, 55);
    tx_offer(4, ok, 1, 56);
    r = deq(VX_BURST);
    CHECK(r == 1, "returned %d, want 1", r);
    check_tx_pkt(0, 70, 56);
    check_used_tx(0, 0);
    check_used_tx(1, 1);
    check_used_tx(2, 4);
    check_indexes(3, 3);
    check_stats(1, 70, 2, 0);
    CHECK(!vr.broken, "ring broken");
    end();
}

/* === TX with VIRTIO_F_IN_ORDER (§2.7.9) =================================== */

#define NEVER 0xEEEEEEEEu   /* ring_setup's "never written" pattern in used->ring */

/* How many used ring entries hold anything but the never-written pattern. */
static int used_entries_written(void)
{
    int n = 0;
    for (uint16_t i = 0; i < g.num; i++)
        n += g.used->ring[i].id != NEVER || g.used->ring[i].len != NEVER;
    return n;
}

static void t_tx_in_order(void)
{
    begin("TX in order: a burst of chains gives back ONE used entry {id = last head, len 0} at the burst's "
          "first slot, used->idx moves by the number of chains; indexes wrap past 65535");
    ring_setup(256, V1 | INO, 65530, false, false);
    static const uint32_t one[] = { 12 + 100 }, two[] = { 12, 100 };
    for (uint16_t i = 0; i < 10; i++)   /* heads 0, 3, 6, ...: chains of 1 or 2 descriptors */
        tx_offer((uint16_t)(3 * i), i % 2 ? two : one, 1 + i % 2, 80 + i);
    int r = deq(4);
    CHECK(r == 4, "first burst returned %d, want 4", r);
    for (int i = 0; i < r; i++)
        check_tx_pkt(i, 100, 80 + (uint32_t)i);
    check_used_tx(65530, 9);
    CHECK(used_entries_written() == 1, "%d used entries written for one burst, want 1", used_entries_written());
    check_indexes(65534, 65534);
    r = deq(VX_BURST);
    CHECK(r == 6, "second burst returned %d, want 6", r);
    for (int i = 0; i < r; i++)
        check_tx_pkt(i, 100, 84 + (uint32_t)i);
    check_used_tx(65534, 27);
    CHECK(used_entries_written() == 2, "%d used entries written for two bursts, want 2", used_entries_written());
    check_indexes(4, 4);
    check_stats(10, 1000, 0, 0);
    CHECK(vr.in_order, "vq_attach did not take VIRTIO_F_IN_ORDER");
    end();

    begin("TX in order, size 8: 60 bursts of 1..8 chains round the ring, each exactly one used entry");
    ring_setup(8, V1 | INO, 0, false, false);
    uint16_t used_idx = 0;
    uint32_t seed = 0;
    for (int b = 0; b < 60 && case_failures == 0; b++) {
        int n = 1 + b % 8;
        uint16_t last = 0;
        g.heap_a = HEAP_OFF;                        /* the previous burst's buffers are free again */
        for (int i = 0; i < n; i++) {
            last = (uint16_t)((used_idx + i) & 7);  /* one descriptor per chain, in ring order */
            tx_offer(last, one, 1, seed + (uint32_t)i);
        }
        memset(g.used->ring, 0xEE, sizeof(g.used->ring[0]) * g.num);
        r = deq(VX_BURST);
        CHECK(r == n, "burst %d: returned %d, want %d", b, r, n);
        for (int i = 0; i < r; i++)
            check_tx_pkt(i, 100, seed + (uint32_t)i);
        seed += (uint32_t)n;
        CHECK(used_entries_written() == 1, "burst %d: %d used entries written, want 1", b, used_entries_written());
        check_used_tx(used_idx, last);
        used_idx = (uint16_t)(used_idx + n);
        check_indexes(used_idx, used_idx);
    }
    end();

    begin("TX in order: a burst that stops at a malformed chain gives back the good chains before it, "
          "the entry names the last good head");
    ring_setup(256, V1 | INO, 0, false, false);
    cap_begin();
    tx_offer(0, one, 1, 90);
    tx_offer(5, two, 2, 91);
    avail_push(g.num);                  /* head out of range: the ring breaks here */
    r = deq(VX_BURST);
    cap_end();
    CHECK(r == 2 && vr.broken, "returned %d, broken %d; want 2, broken", r, vr.broken);
    check_used_tx(0, 5);
    CHECK(used_entries_written() == 1, "%d used entries written, want 1", used_entries_written());
    check_indexes(2, 2);
    end();
}

static void t_tx_room(void)
{
    begin("TX: a packet larger than pkts[i].room is dropped and consumed (room 2048)");
    ring_setup(256, V1, 0, false, false);
    static const uint32_t fits[] = { 12 + 2048 }, over[] = { 12, 2000, 49 }, small[] = { 12 + 64 };
    tx_offer(0, fits, 1, 130);
    tx_offer(1, over, 3, 131);
    tx_offer(4, small, 1, 132);
    int r = deq_room(VX_BURST, 2048);
    CHECK(r == 2, "returned %d, want 2", r);
    check_tx_pkt(0, 2048, 130);
    check_tx_pkt(1, 64, 132);
    check_used_tx(0, 0);
    check_used_tx(1, 1);
    check_used_tx(2, 4);
    check_indexes(3, 3);
    check_stats(2, 2048 + 64, 1, 0);
    CHECK(!vr.broken, "ring broken");
    end();
}

/* The virtio-net header (issue 13): copied out of a TX chain into
 * pkts[].hdr only when the guest negotiated VIRTIO_NET_F_CSUM (without it
 * the header asks nothing, §5.1.6.2), read once even when it is split over
 * descriptors; and written into an RX buffer from the packet's hdr. */
static void t_net_header(void)
{
    begin("TX: the header goes into pkts[].hdr with CSUM (split over two descriptors), stays zero without");
    for (int csum = 0; csum < 2; csum++) {
        ring_setup(256, V1 | (csum ? F(VIRTIO_NET_F_CSUM) : 0), 0, false, false);
        static const uint32_t lens[] = { 4, 8 + 100 };      /* the header: 4 bytes, then 8 with the frame */
        tx_offer(0, lens, 2, 150);
        int r = deq(VX_BURST);
        CHECK(r == 1, "returned %d", r);
        check_tx_pkt(0, 100, 150);
        const uint8_t *h = (const uint8_t *)&out[0].hdr;
        bool junk = true, zero = true;      /* build_chain's header bytes are 0xC0 | offset */
        for (int k = 0; k < 10; k++) {
            junk &= h[k] == (0xC0 | k);
            zero &= h[k] == 0;
        }
        CHECK(csum ? junk : zero, "%s CSUM: hdr %02x %02x %02x ... %02x", csum ? "with" : "without", h[0], h[1], h[2],
              h[9]);
        end();
        if (!csum)
            begin("TX: ... (with CSUM)");
    }

    begin("RX: the packet's header is written in front of it (GUEST_CSUM), zeros without; num_buffers after it");
    for (int gc = 0; gc < 2; gc++) {
        ring_setup(256, V1 | MRG | (gc ? F(VIRTIO_NET_F_GUEST_CSUM) : 0), 0, true, false);
        static const uint32_t one[] = { 2048 };
        rx_offer(0, one, 1);
        struct vx_pkt p = mkpkt(0, 300, 151);
        p.hdr = (struct vx_net_hdr){ .flags = 1, .gso_type = 4, .hdr_len = 74, .gso_size = 1220, .csum_start = 54,
                                     .csum_offset = 16 };
        int r = enq(&p, 1);
        CHECK(r == 1, "returned %d", r);
        const uint8_t *b = hva(g.desc[0].addr);
        static const uint8_t zeros[10];
        CHECK(!memcmp(b, gc ? (const void *)&p.hdr : zeros, 10) && b[10] == 1 && b[11] == 0,
              "%s GUEST_CSUM: header %02x %02x %02x %02x ..., num_buffers %u", gc ? "with" : "without", b[0], b[1],
              b[2], b[3], b[10] | b[11] << 8);
    }
    end();
}

/* Towards a port of small buffers (the AF_XDP port's UMEM frames): a TSO
 * packet, or a packet longer than its buffer, goes into `big` (a buffer of
 * VX_PKT_MAX) instead, and ends the burst; the next burst goes on after it. */
static void t_tx_big(void)
{
    begin("TX towards small buffers: a TSO packet (fits, copied) and an over-long one (read again) go to big, each ending its burst");
    ring_setup(256, V1 | F(VIRTIO_NET_F_CSUM), 0, false, false);
    static const uint32_t a[] = { 12 + 100 }, b[] = { 12 + 300 }, c[] = { 12, 3000, 2000 }, d[] = { 12 + 64 };
    tx_offer(0, a, 1, 160);
    tx_offer(1, b, 1, 161);
    tx_offer(2, c, 3, 162);
    tx_offer(5, d, 1, 163);
    for (int d0 = 0; d0 < 6; d0 += d0 == 2 ? 3 : 1)     /* plain headers (descriptors 0, 1, 2, 5) ... */
        memset(hva(g.desc[d0].addr), 0, 12);
    hva(g.desc[1].addr)[1] = 1;                         /* ... but packet b's: gso_type TCPV4 */
    static uint8_t *bigbuf;
    if (!bigbuf)
        bigbuf = guarded_tail(VX_PKT_MAX);
    struct vx_pkt big = { .len = 0xdeadbeef, .room = VX_PKT_MAX, .data = bigbuf };
    for (int i = 0; i < NOUT; i++)
        out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = 2048, .data = out_buf[i] + VX_PKT_MAX - 2048 };
    int r = vq_dequeue_burst_big(&vr, out, VX_BURST, &big);
    CHECK(r == 1 && big.len == 300 && big.hdr.gso_type == 1, "first burst: %d packets, big %u bytes (gso_type %u)",
          r, big.len, big.hdr.gso_type);
    check_tx_pkt(0, 100, 160);
    for (uint32_t k = 0; big.len == 300 && k < 300; k++)
        if (big.data[k] != pat(161, k)) {
            CHECK(0, "big: byte %u", k);
            break;
        }
    check_indexes(2, 2);
    for (int i = 0; i < NOUT; i++)
        out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = 2048, .data = out_buf[i] + VX_PKT_MAX - 2048 };
    r = vq_dequeue_burst_big(&vr, out, VX_BURST, &big);
    CHECK(r == 0 && big.len == 5000 && big.hdr.gso_type == 0 && big.bufs == 3,
          "second burst: %d packets, big %u bytes in %u buffers", r, big.len, big.bufs);
    for (uint32_t k = 0; big.len == 5000 && k < 5000; k++)
        if (big.data[k] != pat(162, k)) {
            CHECK(0, "big: byte %u", k);
            break;
        }
    r = vq_dequeue_burst_big(&vr, out, VX_BURST, &big);
    CHECK(r == 1 && big.len == 0, "third burst: %d packets, big %u", r, big.len);
    check_tx_pkt(0, 64, 163);
    check_indexes(4, 4);
    check_stats(4, 100 + 300 + 5000 + 64, 0, 0);
    CHECK(!vr.broken, "ring broken");
    end();
}

/* A legal chain (shorter than num) of many small descriptors: the packet may
 * be carried or dropped, but the chain is consumed and the ring goes on. */
static void t_tx_long_chain(void)
{
    begin("TX: chain of 200 descriptors in a 256-entry ring: consumed, ring goes on");
    ring_setup(256, V1, 0, false, false);
    static uint32_t lens[200];
    for (int i = 0; i < 200; i++)
        lens[i] = i == 0 ? 12 : 10;
    tx_offer(0, lens, 200, 133);
    static const uint32_t after[] = { 12 + 100 };
    tx_offer(200, after, 1, 134);
    int r = deq(VX_BURST);
    CHECK(!vr.broken, "a legal chain broke the ring");
    CHECK(r == 1 || r == 2, "returned %d", r);
    if (r == 2)
        check_tx_pkt(0, 1990, 133);
    else
        printf("#   note: the 200-descriptor packet was dropped (drops %llu)\n",
               (unsigned long long)vr.stats.drops);
    check_tx_pkt(r - 1, 100, 134);
    check_used_tx(0, 0);
    check_used_tx(1, 200);
    check_indexes(2, 2);
    CHECK(vr.stats.packets + vr.stats.drops == 2, "packets %llu + drops %llu != 2",
          (unsigned long long)vr.stats.packets, (unsigned long long)vr.stats.drops);
    end();
}

/* === TX lending: vq_dequeue_burst_lend() (guest to guest) ================ */

/*
 * The lending dequeue (pmd_loop.c's guest-to-guest path) must: point
 * pkts[i].data straight at the frame's first byte in guest memory when the
 * frame lies whole in the chain's last buffer, copy it into the caller's
 * buffer otherwise; call deliver() once with the packets it carries; and give
 * the chains back (move used->idx, §2.7.8) only AFTER deliver() returned: until
 * then the lent bytes belong to us and the guest must not reuse them.
 *
 * The test's deliver() checks each packet where it is called (the only time
 * the lent pointers are valid) against what the test expects: the pointer,
 * the length and the bytes; and records the used->idx the guest sees then.
 */
struct lend_want {
    uint32_t len, seed;
    const uint8_t *data;            /* where pkts[i].data must point */
};

static struct {
    int calls, n;                   /* deliver() calls, and n of the last one */
    uint16_t used_idx_seen;         /* used->idx while deliver() ran */
    int nwant;
    struct lend_want want[NOUT];
} lend;

static void lend_deliver(void *ctx, struct vx_pkt *pkts, int n)
{
    CHECK(ctx == &lend, "deliver got ctx %p, want %p", ctx, (void *)&lend);
    lend.calls++;
    lend.n = n;
    lend.used_idx_seen = __atomic_load_n(&g.used->idx, __ATOMIC_ACQUIRE);
    CHECK(n == lend.nwant, "deliver got %d packets, want %d", n, lend.nwant);
    for (int i = 0; i < n && i < lend.nwant; i++) {
        const struct lend_want *w = &lend.want[i];
        CHECK(pkts[i].data == w->data, "deliver: packet %d at %p, want %p (%s)", i, (void *)pkts[i].data,
              (const void *)w->data, w->data >= host_a && w->data < host_a + A_SIZE ? "lent, in guest memory"
                                                                                   : "copied, the caller's buffer");
        CHECK(pkts[i].len == w->len, "deliver: packet %d len %u, want %u", i, pkts[i].len, w->len);
        for (uint32_t k = 0; k < w->len && pkts[i].len == w->len; k++)
            if (pkts[i].data[k] != pat(w->seed, k)) {
                CHECK(0, "deliver: packet %d byte %u is 0x%02x, want 0x%02x", i, k, pkts[i].data[k], pat(w->seed, k));
                break;
            }
    }
}

/* Expect the next delivered packet: `len` bytes of `seed`, at `data`. */
static void lend_expect(uint32_t len, uint32_t seed, const uint8_t *data)
{
    lend.want[lend.nwant++] = (struct lend_want){ len, seed, data };
}

/* Where the k-th delivered packet lands when it is copied: lend_deq's buffers. */
static const uint8_t *caller_buf(int k, uint32_t room) { return out_buf[k] + VX_PKT_MAX - room; }

/* A lending burst of up to n with buffers of `room` bytes, as deq_room. */
static int lend_deq(int n, uint32_t room)
{
    lend.calls = 0;
    lend.n = -1;
    for (int i = 0; i < NOUT; i++)
        out[i] = (struct vx_pkt){ .len = 0xdeadbeef, .room = room, .data = out_buf[i] + VX_PKT_MAX - room };
    return vq_dequeue_burst_lend(&vr, out, n, lend_deliver, &lend);
}

/* A TX chain in an indirect table: descriptor d of the ring points at it. */
static struct vring_desc *tx_offer_indirect(uint16_t d, const uint32_t *lens, int nseg, uint32_t seed)
{
    struct vring_desc *t;
    uint64_t ta = ind_table(nseg, &t);
    build_chain(t, 0, lens, nseg, 0, seed);
    set_desc(g.desc, d, ta, 16u * (uint32_t)nseg, VRING_DESC_F_INDIRECT, 0);
    avail_push(d);
    return t;
}

/* Region A but the used ring differs from the snapshot: TX wrote into guest
 * memory it must only read.  First offset that differs, or -1. */
static long tx_wrote_guest(void)
{
    size_t used_lo = USED_OFF, used_hi = USED_OFF + 4 + 8u * g.num + 2;
    for (size_t i = 0; i < A_SIZE; i++)
        if (host_a[i] != snapshot[i] && (i < used_lo || i >= used_hi))
            return (long)i;
    return -1;
}

/*
 * One burst of every layout, from used index `start`:
 *   (a) header and frame in one descriptor         lent at addr + 12
 *   (b) header descriptor, frame descriptor        lent at the 2nd's addr
 *   (c) header, frame over two descriptors         copied
 *   (d) indirect table {header, frame}             lent at the table's 2nd entry
 *   (e) 4 bytes of header, then 8 + frame          lent at the 2nd's addr + 8
 *   (f) indirect table {header, frame, frame}      copied
 */
static void lend_layouts(uint64_t features, uint16_t start)
{
    ring_setup(256, features, start, false, false);
    static const uint32_t a[] = { 12 + 100 }, b[] = { 12, 300 }, c[] = { 12, 150, 250 }, d[] = { 12, 400 },
                          e[] = { 4, 8 + 200 }, f[] = { 12, 100, 200 };
    static const uint16_t heads[] = { 0, 1, 3, 6, 7, 9 };
    lend.nwant = 0;
    tx_offer(0, a, 1, 200);
    lend_expect(100, 200, hva(g.desc[0].addr) + 12);
    tx_offer(1, b, 2, 201);
    lend_expect(300, 201, hva(g.desc[2].addr));
    tx_offer(3, c, 3, 202);
    lend_expect(400, 202, caller_buf(2, VX_PKT_MAX));
    struct vring_desc *t = tx_offer_indirect(6, d, 2, 203);
    lend_expect(400, 203, hva(t[1].addr));
    tx_offer(7, e, 2, 204);
    lend_expect(200, 204, hva(g.desc[8].addr) + 8);
    tx_offer_indirect(9, f, 3, 205);
    lend_expect(300, 205, caller_buf(5, VX_PKT_MAX));
    memcpy(snapshot, host_a, A_SIZE);

    int r = lend_deq(VX_BURST, VX_PKT_MAX);
    CHECK(r == 6, "returned %d, want 6", r);
    CHECK(lend.calls == 1, "deliver called %d times, want once", lend.calls);
    CHECK(lend.used_idx_seen == start, "used->idx was %u during deliver, want still %u: the guest had its buffers "
          "back while the frames were lent", lend.used_idx_seen, start);
    check_indexes((uint16_t)(start + 6), (uint16_t)(start + 6));
    if (vr.in_order) {
        check_used_tx(start, heads[5]);
        CHECK(used_entries_written() == 1, "%d used entries written, want 1", used_entries_written());
    } else {
        for (int i = 0; i < 6; i++)
            check_used_tx((uint16_t)(start + i), heads[i]);
    }
    check_stats(6, 100 + 300 + 400 + 400 + 200 + 300, 0, 0);
    long w = tx_wrote_guest();
    CHECK(w < 0, "guest memory written at region A offset 0x%lx", w);
    CHECK(!vr.broken, "ring broken");
}

static void t_tx_lend(void)
{
    begin("TX lend: frames in the chain's last buffer are lent at their first byte (one descriptor, own "
          "descriptor, 4|8+frame, indirect), others copied; deliver once, before used->idx moves; wraps 65535");
    lend_layouts(V1 | IND, 65533);
    end();

    begin("TX lend, IN_ORDER: the same, then ONE used entry naming the last head, written after deliver");
    lend_layouts(V1 | IND | INO, 65533);
    end();

    begin("TX lend: deliver is not called for an empty ring, nor when every chain was dropped");
    ring_setup(256, V1, 0, false, false);
    lend.nwant = 0;
    int r = lend_deq(VX_BURST, VX_PKT_MAX);
    CHECK(r == 0 && lend.calls == 0, "empty ring: returned %d, deliver called %d times", r, lend.calls);
    static const uint32_t big[] = { 12 + 3000 }, tiny[] = { 8 };
    tx_offer(0, big, 1, 210);
    tx_offer(1, tiny, 1, 211);
    r = lend_deq(VX_BURST, 2048);
    CHECK(r == 0 && lend.calls == 0, "two dropped chains: returned %d, deliver called %d times", r, lend.calls);
    check_indexes(2, 2);
    check_used_tx(0, 0);
    check_used_tx(1, 1);
    check_stats(0, 0, 2, 0);
    end();

    begin("TX lend: frames larger than room are dropped, counted, never delivered; the next packets land in the "
          "caller's buffers or are lent; the guest's buffers are not written");
    ring_setup(256, V1, 0, false, false);
    static const uint32_t over1[] = { 12 + 3000 }, copied1[] = { 12, 60, 40 }, small[] = { 12 + 64 },
                          over2[] = { 12, 2100 }, copied2[] = { 12, 30, 30 };
    lend.nwant = 0;
    tx_offer(0, over1, 1, 220);                 /* lies in one buffer, but too big */
    tx_offer(1, copied1, 3, 221);
    lend_expect(100, 221, caller_buf(0, 2048));
    tx_offer(4, small, 1, 222);
    lend_expect(64, 222, hva(g.desc[4].addr) + 12);
    tx_offer(5, over2, 2, 223);                 /* lies in one buffer, but too big */
    tx_offer(7, copied2, 3, 224);
    lend_expect(60, 224, caller_buf(2, 2048));
    memcpy(snapshot, host_a, A_SIZE);
    r = lend_deq(VX_BURST, 2048);
    CHECK(r == 3 && lend.calls == 1, "returned %d, deliver called %d times; want 3, once", r, lend.calls);
    CHECK(lend.used_idx_seen == 0, "used->idx %u during deliver, want 0", lend.used_idx_seen);
    check_indexes(5, 5);
    static const uint16_t heads[] = { 0, 1, 4, 5, 7 };
    for (int i = 0; i < 5; i++)
        check_used_tx((uint16_t)i, heads[i]);
    check_stats(3, 100 + 64 + 60, 2, 0);
    long w = tx_wrote_guest();
    CHECK(w < 0, "guest memory written at region A offset 0x%lx (a TX buffer is read-only for us)", w);
    end();

    static const uint64_t order[] = { V1, V1 | INO };
    for (int o = 0; o < 2; o++) {
        begin(o ? "TX lend, IN_ORDER: a malformed chain after two good ones: they are delivered, then given back "
                  "in one entry; nothing past the bad chain is used"
                : "TX lend: a malformed chain after two good ones: ring broken, they are delivered, then given "
                  "back; nothing past the bad chain is used");
        ring_setup(256, order[o], 0, false, false);
        static const uint32_t one[] = { 12 + 100 }, three[] = { 12, 50, 50 };
        lend.nwant = 0;
        tx_offer(0, one, 1, 230);
        lend_expect(100, 230, hva(g.desc[0].addr) + 12);
        tx_offer(1, three, 3, 231);
        lend_expect(100, 231, caller_buf(1, VX_PKT_MAX));
        avail_push(g.num);                      /* head out of range: the ring breaks here */
        tx_offer(5, one, 1, 232);
        cap_begin();
        r = lend_deq(VX_BURST, VX_PKT_MAX);
        int lines = cap_end();
        CHECK(r == 2 && lend.calls == 1, "returned %d, deliver called %d times; want 2, once", r, lend.calls);
        CHECK(vr.broken && lines == 1, "broken %d, %d log lines; want broken, 1 line", vr.broken, lines);
        CHECK(lend.used_idx_seen == 0, "used->idx %u during deliver, want 0", lend.used_idx_seen);
        check_indexes(2, 2);
        if (o) {
            check_used_tx(0, 1);                /* one entry, naming the last good head */
        } else {
            check_used_tx(0, 0);
            check_used_tx(1, 1);
        }
        CHECK(used_entries_written() == (o ? 1 : 2), "%d used entries written, want %d", used_entries_written(),
              o ? 1 : 2);
        end();
    }

    begin("TX lend: a malformed first chain: ring broken, deliver not called, nothing used");
    ring_setup(256, V1, 0, false, false);
    static const uint32_t good[] = { 12 + 100 };
    lend.nwant = 0;
    set_desc(g.desc, 2, B_END - 10, 100, 0, 0);  /* partly past the end of guest memory */
    avail_push(2);
    tx_offer(3, good, 1, 240);
    cap_begin();
    r = lend_deq(VX_BURST, VX_PKT_MAX);
    cap_end();
    CHECK(r == 0 && lend.calls == 0 && vr.broken, "returned %d, deliver called %d times, broken %d", r, lend.calls,
          vr.broken);
    check_indexes(0, 0);
    CHECK(used_entries_written() == 0, "%d used entries written, want 0", used_entries_written());
    end();
}

/* === RX: backend -> guest (vq_enqueue_burst) ============================ */

static void rx_one(const char *name, uint64_t features, const uint32_t *lens, int nseg, uint32_t len)
{
    begin(name);
    ring_setup(256, features, 0, true, false);
    struct rxbuf b = rx_offer(0, lens, nseg);
    struct vx_pkt p = mkpkt(0, len, 60);
    int r = enq(&p, 1);
    CHECK(r == 1, "returned %d, want 1", r);
    check_rx(&b, 1, 0, len, 60);
    check_indexes(1, 1);
    check_stats(1, len, 0, 0);
    CHECK(!vr.broken, "ring broken");
    end();
}

static void t_rx_layouts(void)
{
    static const uint32_t b2048[] = { 2048 };
    static const uint32_t several[] = { 12, 500, 1000 };
    static const uint32_t split_hdr[] = { 8, 2040 };
    static const uint32_t tiny_descs[] = { 12, 1, 0, 7, 2000 };
    static const uint32_t huge[] = { 12 + VX_PKT_MAX };

    rx_one("RX: 60 B into a 2048 B buffer (VERSION_1, no mrg: num_buffers = 1)", V1, b2048, 1, 60);
    rx_one("RX: 1514 B into a 2048 B buffer", V1, b2048, 1, 1514);
    rx_one("RX: 60 B, legacy 10-byte header", 0, b2048, 1, 60);
    rx_one("RX: no mrg, 1400 B across a chain of 3 writable descriptors (12, 500, 1000)", V1, several, 3, 1400);
    rx_one("RX: header split across descriptors (8 + 2040; virtio 1.2 2.6.4: no layout assumptions)", V1,
           split_hdr, 2, 100);
    rx_one("RX: chain with 1-byte and zero-length descriptors", V1, tiny_descs, 5, 1500);
    rx_one("RX: mrg, 60 B into one 2048 B buffer (num_buffers = 1)", V1 | MRG, b2048, 1, 60);
    rx_one("RX: mrg, 1514 B into one 2048 B buffer", V1 | MRG, b2048, 1, 1514);
    rx_one("RX: packet of VX_PKT_MAX bytes into one big buffer", V1, huge, 1, VX_PKT_MAX);
}

static void t_rx_edges(void)
{
    static const uint32_t exact[] = { 12 + 60 }, hdr_only[] = { 12 }, b2048[] = { 2048 };
    struct rxbuf b[4];
    struct vx_pkt p;
    int r;

    rx_one("RX: no mrg, chain of exactly header + packet (72 B for 60 B)", V1, exact, 1, 60);

    begin("RX: no mrg, chain one byte short (71 B for 60 B): dropped, not consumed");
    ring_setup(256, V1, 0, true, false);
    static const uint32_t short1[] = { 12 + 59 };
    b[0] = rx_offer(0, short1, 1);
    p = mkpkt(0, 60, 140);
    r = enq(&p, 1);
    CHECK(r == 0, "returned %d", r);
    check_indexes(0, 0);
    check_stats(0, 0, 1, 0);
    CHECK(!vr.broken, "ring broken");
    end();

    begin("RX: mrg, first buffer holds only the header (12 B, then 2048 B)");
    ring_setup(256, V1 | MRG, 0, true, false);
    b[0] = rx_offer(0, hdr_only, 1);
    b[1] = rx_offer(1, b2048, 1);
    p = mkpkt(0, 100, 141);
    r = enq(&p, 1);
    CHECK(r == 1, "returned %d", r);
    check_rx(b, 2, 0, 100, 141);
    end();

    /* A chain is "too small" only if its bytes are fewer than header +
     * packet; a dropped packet leaves the chain at the head, so a chain
     * wrongly judged too small would refuse every large packet for good. */
    begin("RX: no mrg, legal chain of 200 x 16 B descriptors (3200 B) takes a 3000 B packet");
    ring_setup(256, V1, 0, true, false);
    static uint32_t lens[200];
    for (int i = 0; i < 200; i++)
        lens[i] = 16;
    b[0] = rx_offer(0, lens, 200);
    b[1] = rx_offer(200, b2048, 1);
    p = mkpkt(0, 3000, 142);
    r = enq(&p, 1);
    CHECK(!vr.broken, "a legal chain broke the ring");
    CHECK(r == 1, "3000 B into a 3200 B chain: returned %d (drops %llu)", r, (unsigned long long)vr.stats.drops);
    if (r == 1)
        check_rx(b, 1, 0, 3000, 142);
    p = mkpkt(0, 1514, 143);
    r = enq(&p, 1);
    CHECK(r == 1, "then 1514 B: returned %d: the ring is stuck on the long chain", r);
    end();
}

static void t_rx_two_regions(void)
{
    begin("RX: chain with descriptors in regions A and B");
    ring_setup(256, V1, 0, true, false);
    uint32_t pos = 0;
    static const uint32_t l1[] = { 100 }, l2[] = { 2000 };
    build_chain_at(g.desc, 0, l1, 1, VRING_DESC_F_WRITE, 0, &pos, false);
    build_chain_at(g.desc, 1, l2, 1, VRING_DESC_F_WRITE, 0, &pos, true);
    g.desc[0].flags |= VRING_DESC_F_NEXT;
    g.desc[0].next = 1;
    avail_push(0);
    struct rxbuf b = { g.desc, 0, 2, 0 };
    struct vx_pkt p = mkpkt(0, 1500, 61);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_rx(&b, 1, 0, 1500, 61);
    end();
}

static void t_rx_mrg(void)
{
    static const uint32_t b2048[] = { 2048 };
    struct rxbuf b[8];
    struct vx_pkt p[4];
    int r;

    begin("RX: mrg, 3000 B over two 2048 B buffers (num_buffers = 2)");
    ring_setup(256, V1 | MRG, 0, true, false);
    b[0] = rx_offer(0, b2048, 1);
    b[1] = rx_offer(1, b2048, 1);
    p[0] = mkpkt(0, 3000, 62);
    r = enq(p, 1);
    CHECK(r == 1, "returned %d", r);
    check_rx(b, 2, 0, 3000, 62);
    check_indexes(2, 2);
    check_stats(1, 3000, 0, 0);
    end();

    begin("RX: mrg, burst of 60, 3000, 1514 B into 4 buffers");
    ring_setup(256, V1 | MRG, 0, true, false);
    for (uint16_t i = 0; i < 4; i++)
        b[i] = rx_offer(i, b2048, 1);
    p[0] = mkpkt(0, 60, 63);
    p[1] = mkpkt(1, 3000, 64);
    p[2] = mkpkt(2, 1514, 65);
    r = enq(p, 3);
    CHECK(r == 3, "returned %d", r);
    check_rx(&b[0], 1, 0, 60, 63);
    check_rx(&b[1], 2, 1, 3000, 64);
    check_rx(&b[3], 1, 3, 1514, 65);
    check_indexes(4, 4);
    check_stats(3, 4574, 0, 0);
    end();

    begin("RX: mrg, buffers that are chains themselves (12+1000, 2048) for 1500 B");
    ring_setup(256, V1 | MRG, 0, true, false);
    static const uint32_t two[] = { 12, 1000 };
    b[0] = rx_offer(0, two, 2);
    b[1] = rx_offer(2, b2048, 1);
    p[0] = mkpkt(0, 1500, 66);
    r = enq(p, 1);
    CHECK(r == 1, "returned %d", r);
    check_rx(b, 2, 0, 1500, 66);
    end();

    begin("RX: mrg, not enough buffers: dropped, avail entries not consumed, later delivered");
    ring_setup(256, V1 | MRG, 0, true, false);
    b[0] = rx_offer(0, b2048, 1);
    p[0] = mkpkt(0, 3000, 67);
    r = enq(p, 1);
    CHECK(r == 0, "returned %d, want 0", r);
    check_indexes(0, 0);    /* unpublished used slots may hold anything: the guest does not look */
    check_stats(0, 0, 1, 0);
    CHECK(!vr.broken, "ring broken");
    b[1] = rx_offer(1, b2048, 1);
    r = enq(p, 1);
    CHECK(r == 1, "returned %d after a second buffer came", r);
    check_rx(b, 2, 0, 3000, 67);
    check_indexes(2, 2);
    check_stats(1, 3000, 1, 0);
    end();

    begin("RX: mrg with IN_ORDER: still one used entry per buffer, each with its own length (RX is not batched)");
    ring_setup(256, V1 | MRG | INO, 65534, true, false);
    for (uint16_t i = 0; i < 4; i++)
        b[i] = rx_offer(i, b2048, 1);
    p[0] = mkpkt(0, 60, 72);
    p[1] = mkpkt(1, 3000, 73);
    p[2] = mkpkt(2, 1514, 74);
    r = enq(p, 3);
    CHECK(r == 3, "returned %d", r);
    check_rx(&b[0], 1, 65534, 60, 72);
    check_rx(&b[1], 2, 65535, 3000, 73);
    check_rx(&b[3], 1, 1, 1514, 74);
    check_indexes(2, 2);
    end();

    begin("RX: mrg without VERSION_1: 12-byte header with num_buffers");
    ring_setup(256, MRG, 0, true, false);
    b[0] = rx_offer(0, b2048, 1);
    b[1] = rx_offer(1, b2048, 1);
    p[0] = mkpkt(0, 3000, 68);
    CHECK(enq(p, 1) == 1, "not delivered");
    check_rx(b, 2, 0, 3000, 68);
    end();

    begin("RX: mrg, ring indexes wrap past 65535");
    ring_setup(256, V1 | MRG, 65534, true, false);
    for (uint16_t i = 0; i < 5; i++)
        b[i] = rx_offer(i, b2048, 1);
    p[0] = mkpkt(0, 3000, 69);
    p[1] = mkpkt(1, 60, 70);
    p[2] = mkpkt(2, 3000, 71);
    r = enq(p, 3);
    CHECK(r == 3, "returned %d", r);
    check_rx(&b[0], 2, 65534, 3000, 69);
    check_rx(&b[2], 1, 0, 60, 70);
    check_rx(&b[3], 2, 1, 3000, 71);
    check_indexes(3, 3);
    end();
}

static void t_rx_no_mrg_limits(void)
{
    static const uint32_t b2048[] = { 2048 }, b100[] = { 100 };
    struct rxbuf b[8];
    struct vx_pkt p[8];
    int r;

    begin("RX: no mrg, chain too small: dropped, not consumed, next packet fits");
    ring_setup(256, V1, 0, true, false);
    b[0] = rx_offer(0, b100, 1);
    p[0] = mkpkt(0, 1514, 72);
    r = enq(p, 1);
    CHECK(r == 0, "returned %d, want 0", r);
    check_indexes(0, 0);
    check_stats(0, 0, 1, 0);
    CHECK(!vr.broken, "ring broken");
    p[0] = mkpkt(0, 60, 73);
    r = enq(p, 1);
    CHECK(r == 1, "60 B into the 100 B chain: returned %d", r);
    check_rx(b, 1, 0, 60, 73);
    check_indexes(1, 1);
    check_stats(1, 60, 1, 0);
    end();

    begin("RX: no mrg, a too-big packet mid-burst: the delivered ones come back first, in order");
    ring_setup(256, V1, 0, true, false);
    b[0] = rx_offer(0, b100, 1);
    b[1] = rx_offer(1, b100, 1);
    p[0] = mkpkt(0, 60, 90);
    p[1] = mkpkt(1, 1514, 91);      /* too big for a 100 B chain: dropped */
    p[2] = mkpkt(2, 70, 92);
    uint8_t *data0 = p[0].data, *data1 = p[1].data, *data2 = p[2].data;
    r = enq(p, 3);
    CHECK(r == 2, "returned %d, want 2", r);
    check_rx(&b[0], 1, 0, 60, 90);
    check_rx(&b[1], 1, 1, 70, 92);
    CHECK(p[0].data == data0 && p[1].data == data2 && p[2].data == data1,
          "pkts[] after the call: want the 60 B, the 70 B, then the dropped 1514 B packet");
    CHECK(p[1].len == 70 && p[2].len == 1514, "lengths moved with the packets: %u, %u", p[1].len, p[2].len);
    check_stats(2, 130, 1, 0);
    end();

    begin("RX: no buffers left: 3 packets, 2 buffers");
    ring_setup(256, V1, 0, true, false);
    b[0] = rx_offer(0, b2048, 1);
    b[1] = rx_offer(1, b2048, 1);
    for (int i = 0; i < 3; i++)
        p[i] = mkpkt(i, 200 + (uint32_t)i, 74 + (uint32_t)i);
    r = enq(p, 3);
    CHECK(r == 2, "returned %d, want 2", r);
    check_rx(&b[0], 1, 0, 200, 74);
    check_rx(&b[1], 1, 1, 201, 75);
    check_indexes(2, 2);
    check_stats(2, 401, 1, 0);
    end();

    begin("RX: burst limit: 5 buffers, n = 3 of 8 packets, then the other 5");
    ring_setup(256, V1, 0, true, false);
    for (uint16_t i = 0; i < 5; i++)
        b[i] = rx_offer(i, b2048, 1);
    for (int i = 0; i < 8; i++)
        p[i] = mkpkt(i, 300 + (uint32_t)i, 80 + (uint32_t)i);
    r = enq(p, 3);
    CHECK(r == 3, "returned %d, want 3", r);
    check_indexes(3, 3);
    r = enq(p + 3, 5);
    CHECK(r == 2, "returned %d, want 2 (2 buffers left)", r);
    for (int i = 0; i < 5; i++)
        check_rx(&b[i], 1, (uint16_t)i, 300 + (uint32_t)i, 80 + (uint32_t)i);
    check_indexes(5, 5);
    check_stats(5, 300 + 301 + 302 + 303 + 304, 3, 0);
    end();

    begin("RX: no mrg, ring indexes wrap past 65535");
    ring_setup(256, V1, 65535, true, false);
    for (uint16_t i = 0; i < 3; i++)
        b[i] = rx_offer(i, b2048, 1);
    for (int i = 0; i < 3; i++)
        p[i] = mkpkt(i, 1000, 90 + (uint32_t)i);
    r = enq(p, 3);
    CHECK(r == 3, "returned %d", r);
    for (int i = 0; i < 3; i++)
        check_rx(&b[i], 1, (uint16_t)(65535 + i), 1000, 90 + (uint32_t)i);
    check_indexes(2, 2);
    end();
}

static void t_rx_indirect(void)
{
    struct vring_desc *t;
    static const uint32_t lens[] = { 12, 2036 };
    uint64_t ta;
    struct rxbuf b;
    struct vx_pkt p;

    begin("RX: indirect table of writable descriptors");
    ring_setup(256, V1 | IND, 0, true, false);
    ta = ind_table(2, &t);
    build_chain(t, 0, lens, 2, VRING_DESC_F_WRITE, 0);
    set_desc(g.desc, 4, ta, 32, VRING_DESC_F_INDIRECT, 0);
    avail_push(4);
    b = (struct rxbuf){ t, 0, 2, 4 };
    p = mkpkt(0, 1000, 95);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_rx(&b, 1, 0, 1000, 95);
    check_stats(1, 1000, 0, 0);
    end();

    begin("RX: indirect descriptor with WRITE set (virtio 1.2 2.7.5.3.2: device MUST ignore it)");
    ring_setup(256, V1 | IND, 0, true, false);
    ta = ind_table(2, &t);
    build_chain(t, 0, lens, 2, VRING_DESC_F_WRITE, 0);
    set_desc(g.desc, 4, ta, 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE, 0);
    avail_push(4);
    b = (struct rxbuf){ t, 0, 2, 4 };
    p = mkpkt(0, 1000, 96);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_rx(&b, 1, 0, 1000, 96);
    CHECK(!vr.broken, "ring broken");
    end();
}

/* === Notifications (virtio 1.2 §2.7.7, §2.7.10) ========================= */

/*
 * A ring at `start`, avail->flags and used_event as given, npkts buffers
 * used by one burst: the call eventfd must be written (once) iff `want`.
 */
static void notify_case(const char *name, bool rx, uint64_t features, uint16_t start, int npkts,
                        uint16_t avail_flags, uint16_t used_event, bool want)
{
    static const uint32_t b2048[] = { 2048 }, tx60[] = { 12 + 60 };
    begin(name);
    ring_setup(256, features, start, rx, false);
    g.avail->flags = avail_flags;
    USED_EVENT = used_event;
    struct vx_pkt p[8];
    for (int i = 0; i < npkts; i++) {
        if (rx) {
            rx_offer((uint16_t)i, b2048, 1);
            p[i] = mkpkt(i, 60, 100);
        } else {
            tx_offer((uint16_t)i, tx60, 1, 100);
        }
    }
    int r = rx ? enq(p, npkts) : deq(VX_BURST);
    CHECK(r == npkts, "returned %d, want %d", r, npkts);
    uint64_t count = 0;
    bool got = notified(&count);
    CHECK(got == want, "old used idx %u, new %u, used_event %u, avail flags %u: %s", start,
          (uint16_t)(start + npkts), used_event, avail_flags, got ? "notified, should not be" : "not notified");
    CHECK(!got || count == 1, "eventfd count %llu: more than one notification for one burst",
          (unsigned long long)count);
    end();
}

static void t_notify(void)
{
    const uint16_t NI = VRING_AVAIL_F_NO_INTERRUPT;
    notify_case("notify RX, no event idx, flags 0: call", true, V1, 0, 3, 0, 0, true);
    notify_case("notify RX, no event idx, NO_INTERRUPT: no call", true, V1, 0, 3, NI, 0, false);
    notify_case("notify RX, no event idx: used_event is ignored", true, V1, 0, 3, 0, 1000, true);
    notify_case("notify RX, event idx, used 0->3, used_event 0: call", true, V1 | EVT, 0, 3, 0, 0, true);
    notify_case("notify RX, event idx, used 0->3, used_event 2: call", true, V1 | EVT, 0, 3, 0, 2, true);
    notify_case("notify RX, event idx, used 0->3, used_event 3: no call", true, V1 | EVT, 0, 3, 0, 3, false);
    notify_case("notify RX, event idx, used 0->3, used_event 100: no call", true, V1 | EVT, 0, 3, 0, 100, false);
    notify_case("notify RX, event idx, used 0->3, used_event 65535: no call", true, V1 | EVT, 0, 3, 0, 65535, false);
    notify_case("notify RX, event idx ignores NO_INTERRUPT (2.7.10: MUST ignore flags), used_event 1: call", true,
                V1 | EVT, 0, 3, NI, 1, true);
    notify_case("notify RX, event idx, wrap 65534->1, used_event 65534: call", true, V1 | EVT, 65534, 3, 0, 65534,
                true);
    notify_case("notify RX, event idx, wrap 65534->1, used_event 65535: call", true, V1 | EVT, 65534, 3, 0, 65535,
                true);
    notify_case("notify RX, event idx, wrap 65534->1, used_event 0: call", true, V1 | EVT, 65534, 3, 0, 0, true);
    notify_case("notify RX, event idx, wrap 65534->1, used_event 1: no call", true, V1 | EVT, 65534, 3, 0, 1, false);
    notify_case("notify RX, event idx, wrap 65534->1, used_event 65533: no call", true, V1 | EVT, 65534, 3, 0, 65533,
                false);
    notify_case("notify TX, no event idx, flags 0: call", false, V1, 0, 2, 0, 0, true);
    notify_case("notify TX, no event idx, NO_INTERRUPT: no call", false, V1, 0, 2, NI, 0, false);
    notify_case("notify TX, event idx, used_event 0: call", false, V1 | EVT, 0, 2, 0, 0, true);
    notify_case("notify TX, event idx, used_event 5: no call", false, V1 | EVT, 0, 2, 0, 5, false);
    notify_case("notify TX, event idx, wrap 65535->1, used_event 65535: call", false, V1 | EVT, 65535, 2, 0, 65535,
                true);
    notify_case("notify TX, event idx, wrap 65535->1, used_event 0: call", false, V1 | EVT, 65535, 2, 0, 0, true);

    begin("notify: a burst that used nothing does not call (TX empty, RX without buffers)");
    ring_setup(256, V1, 0, false, false);
    CHECK(deq(VX_BURST) == 0, "TX empty ring gave packets");
    CHECK(!notified(NULL), "TX: called with nothing used");
    ring_setup(256, V1, 0, true, false);
    struct vx_pkt p = mkpkt(0, 60, 101);
    CHECK(enq(&p, 1) == 0, "RX without buffers delivered");
    CHECK(!notified(NULL), "RX: called with nothing used");
    check_stats(0, 0, 1, 0);
    end();

    begin("notify: call_fd = -1 is fine");
    int saved = call_fd;
    call_fd = -1;
    ring_setup(256, V1, 0, true, false);
    static const uint32_t b2048[] = { 2048 };
    struct rxbuf b = rx_offer(0, b2048, 1);
    p = mkpkt(0, 60, 102);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_rx(&b, 1, 0, 60, 102);
    call_fd = saved;
    end();
}

/* === Malformed rings ==================================================== */

/*
 * Each offer_* writes one malformed chain (descriptors from index 2 on; 0 and
 * 1 are the well-formed ones around it) and makes it available.
 */
static uint64_t junk(uint32_t len)
{
    uint64_t a = galloc(len);
    memset(hva(a), 0x5A, len);
    return a;
}

static const uint16_t N = VRING_DESC_F_NEXT, W = VRING_DESC_F_WRITE, I = VRING_DESC_F_INDIRECT;

static void offer_head_num(void) { avail_push(g.num); }
static void offer_head_ffff(void) { avail_push(0xffff); }
static void offer_past_end(void) { set_desc(g.desc, 2, B_END, 64, 0, 0); avail_push(2); }
static void offer_partly_past_end(void) { set_desc(g.desc, 2, B_END - 10, 100, 0, 0); avail_push(2); }
static void offer_before_start(void) { set_desc(g.desc, 2, A_GPA - 50, 100, 0, 0); avail_push(2); }
static void offer_len_max(void) { set_desc(g.desc, 2, junk(64), 0xffffffff, 0, 0); avail_push(2); }
static void offer_wraps(void) { set_desc(g.desc, 2, 0xffffffffffffff00ull, 0x200, 0, 0); avail_push(2); }
static void offer_straddle(void) { set_desc(g.desc, 2, B_GPA - 16, 64, 0, 0); avail_push(2); }

static void offer_second_outside(void)
{
    set_desc(g.desc, 2, junk(12), 12, N, 3);
    set_desc(g.desc, 3, B_END - 10, 100, 0, 0);
    avail_push(2);
}

static void offer_next_num(void) { set_desc(g.desc, 2, junk(12), 12, N, g.num); avail_push(2); }
static void offer_next_ffff(void) { set_desc(g.desc, 2, junk(12), 12, N, 0xffff); avail_push(2); }

static void offer_loop_ab(void)
{
    set_desc(g.desc, 2, junk(16), 4, N, 3);
    set_desc(g.desc, 3, junk(16), 4, N, 2);
    avail_push(2);
}

static void offer_loop_self(void) { set_desc(g.desc, 2, junk(16), 4, N, 2); avail_push(2); }

static void offer_loop_all(void)   /* every descriptor of the ring, then back to the head */
{
    for (uint16_t i = 0; i < g.num; i++)
        set_desc(g.desc, i, junk(16), 4, N, (uint16_t)((i + 1) & (g.num - 1)));
    avail_push(2);
}

static void offer_rx_loop(void)
{
    set_desc(g.desc, 2, junk(16), 4, W | N, 3);
    set_desc(g.desc, 3, junk(16), 4, W | N, 2);
    avail_push(2);
}

/* Descriptor 2 -> an indirect table of 2 good descriptors (header, 50 B); the caller spoils it. */
static struct vring_desc *offer_table(uint32_t len, uint16_t flags)
{
    struct vring_desc *t;
    uint64_t ta = ind_table(2, &t);
    static const uint32_t lens[] = { 12, 50 };
    build_chain(t, 0, lens, 2, 0, 7);
    set_desc(g.desc, 2, ta, len, I | flags, flags & N ? 3 : 0);
    if (flags & N)
        set_desc(g.desc, 3, junk(50), 50, 0, 0);
    avail_push(2);
    return t;
}

static void offer_ind_ok_table(void) { offer_table(32, 0); }   /* fine, unless INDIRECT was not negotiated */
static void offer_ind_len0(void) { offer_table(0, 0); }
static void offer_ind_len24(void)      /* entry 0 alone is a whole packet: only the length is wrong */
{
    struct vring_desc *t = offer_table(24, 0);
    t[0] = (struct vring_desc){ .addr = junk(12 + 50), .len = 12 + 50 };
}
static void offer_ind_len_huge(void) { offer_table(0xfffffff0, 0); }
static void offer_ind_with_next(void) { offer_table(32, N); }
static void offer_ind_next_out(void) { offer_table(32, 0)[0].next = 2; }
static void offer_ind_loop(void) { struct vring_desc *t = offer_table(32, 0); t[1].flags = N; t[1].next = 0; }
static void offer_ind_entry_outside(void) { offer_table(32, 0)[1].addr = B_END - 10; }
static void offer_ind_write_tx(void) { offer_table(32, 0)[1].flags = W; }

static void offer_ind_outside(void)
{
    set_desc(g.desc, 2, B_END - 16, 32, I, 0);
    avail_push(2);
}

static void offer_ind_nested(void)
{
    struct vring_desc *t = offer_table(32, 0);
    struct vring_desc *t2;
    uint64_t ta2 = ind_table(1, &t2);
    set_desc(t2, 0, junk(50), 50, 0, 0);
    t[1] = (struct vring_desc){ .addr = ta2, .len = 16, .flags = I };
}

static void offer_jump_40000(void) { g.avail->idx = (uint16_t)(g.avail->idx + 40000); }
static void offer_jump_num_plus_1(void) { g.avail->idx = (uint16_t)(g.avail->idx + g.num + 1); }

static void offer_tx_write_desc(void)
{
    set_desc(g.desc, 2, junk(12), 12, N, 3);
    set_desc(g.desc, 3, junk(100), 100, W, 0);
    avail_push(2);
}

static void offer_rx_readonly(void)
{
    set_desc(g.desc, 2, junk(12), 12, W | N, 3);
    set_desc(g.desc, 3, junk(2000), 2000, 0, 0);
    avail_push(2);
}

static void offer_rx_readonly_single(void) { set_desc(g.desc, 2, junk(2048), 2048, 0, 0); avail_push(2); }
static void offer_rx_short(void) { set_desc(g.desc, 2, junk(8), 8, W, 0); avail_push(2); }

static void offer_rx_short_split(void)
{
    set_desc(g.desc, 2, junk(4), 4, W | N, 3);
    set_desc(g.desc, 3, junk(4), 4, W, 0);
    avail_push(2);
}

static void offer_rx_len_max(void) { set_desc(g.desc, 2, junk(64), 0xffffffff, W, 0); avail_push(2); }
static void offer_rx_straddle(void) { set_desc(g.desc, 2, B_GPA - 16, 64, W, 0); avail_push(2); }
static void offer_rx_partly_past_end(void) { set_desc(g.desc, 2, B_END - 10, 100, W, 0); avail_push(2); }
static void offer_rx_wraps(void) { set_desc(g.desc, 2, UINT64_MAX - 5, 100, W, 0); avail_push(2); }

static void offer_rx_ind_not_negotiated(void)
{
    struct vring_desc *t;
    uint64_t ta = ind_table(1, &t);
    set_desc(t, 0, junk(2048), 2048, W, 0);
    set_desc(g.desc, 2, ta, 16, I, 0);
    avail_push(2);
}

static void offer_rx_ind_readonly(void)
{
    struct vring_desc *t;
    uint64_t ta = ind_table(2, &t);
    set_desc(t, 0, junk(12), 12, W | N, 1);
    set_desc(t, 1, junk(2000), 2000, 0, 0);
    set_desc(g.desc, 2, ta, 32, I, 0);
    avail_push(2);
}

struct bad_case {
    const char *name;
    bool rx;
    uint64_t features;
    uint16_t num;
    void (*offer)(void);
};

static const struct bad_case bad_cases[] = {
    { "TX malformed: head index = num", false, V1 | IND, 256, offer_head_num },
    { "TX malformed: head index 0xffff", false, V1 | IND, 256, offer_head_ffff },
    { "TX malformed: addr just past the end of guest memory", false, V1 | IND, 256, offer_past_end },
    { "TX malformed: addr = end - 10, len 100 (partly outside)", false, V1 | IND, 256, offer_partly_past_end },
    { "TX malformed: starts 50 B before region A", false, V1 | IND, 256, offer_before_start },
    { "TX malformed: len 0xffffffff", false, V1 | IND, 256, offer_len_max },
    { "TX malformed: addr + len wraps 2^64", false, V1 | IND, 256, offer_wraps },
    { "TX malformed: buffer straddles regions A and B", false, V1 | IND, 256, offer_straddle },
    { "TX malformed: second descriptor partly outside", false, V1 | IND, 256, offer_second_outside },
    { "TX malformed: next = num", false, V1 | IND, 256, offer_next_num },
    { "TX malformed: next = 0xffff", false, V1 | IND, 256, offer_next_ffff },
    { "TX malformed: loop a -> b -> a", false, V1 | IND, 256, offer_loop_ab },
    { "TX malformed: loop a -> a", false, V1 | IND, 256, offer_loop_self },
    { "TX malformed: chain longer than num (all 8 descriptors, then around)", false, V1 | IND, 8, offer_loop_all },
    { "TX malformed: INDIRECT when not negotiated", false, V1, 256, offer_ind_ok_table },
    { "TX malformed: indirect table len 0", false, V1 | IND, 256, offer_ind_len0 },
    { "TX malformed: indirect table len 24 (not a multiple of 16)", false, V1 | IND, 256, offer_ind_len24 },
    { "TX malformed: indirect table len 0xfffffff0", false, V1 | IND, 256, offer_ind_len_huge },
    { "TX malformed: indirect table partly outside guest memory", false, V1 | IND, 256, offer_ind_outside },
    { "TX malformed: indirect inside indirect", false, V1 | IND, 256, offer_ind_nested },
    { "TX malformed: INDIRECT together with NEXT", false, V1 | IND, 256, offer_ind_with_next },
    { "TX malformed: next inside an indirect table >= its size", false, V1 | IND, 256, offer_ind_next_out },
    { "TX malformed: loop inside an indirect table", false, V1 | IND, 256, offer_ind_loop },
    { "TX malformed: indirect entry partly outside guest memory", false, V1 | IND, 256, offer_ind_entry_outside },
    { "TX malformed: write-only descriptor in an indirect table", false, V1 | IND, 256, offer_ind_write_tx },
    { "TX malformed: write-only descriptor in the chain", false, V1 | IND, 256, offer_tx_write_desc },
    { "TX malformed: avail->idx 40000 ahead", false, V1 | IND, 256, offer_jump_40000 },
    { "TX malformed: avail->idx num + 1 ahead", false, V1 | IND, 256, offer_jump_num_plus_1 },
    { "RX malformed: head index = num", true, V1, 256, offer_head_num },
    { "RX malformed: read-only descriptor after a writable one", true, V1, 256, offer_rx_readonly },
    { "RX malformed: read-only buffer", true, V1 | MRG, 256, offer_rx_readonly_single },
    { "RX malformed: read-only descriptor in an indirect table", true, V1 | IND, 256, offer_rx_ind_readonly },
    { "RX malformed: chain (8 B) shorter than the header, no mrg", true, V1, 256, offer_rx_short },
    { "RX malformed: chain (4 + 4 B) shorter than the header, no mrg", true, V1, 256, offer_rx_short_split },
    { "RX malformed: buffer (8 B) shorter than the header, mrg", true, V1 | MRG, 256, offer_rx_short },
    { "RX malformed: len 0xffffffff", true, V1, 256, offer_rx_len_max },
    { "RX malformed: buffer straddles regions A and B", true, V1 | MRG, 256, offer_rx_straddle },
    { "RX malformed: addr = end - 10, len 100", true, V1, 256, offer_rx_partly_past_end },
    { "RX malformed: addr + len wraps 2^64", true, V1, 256, offer_rx_wraps },
    { "RX malformed: loop a -> b -> a of 4 B descriptors (num 8)", true, V1, 8, offer_rx_loop },
    { "RX malformed: INDIRECT when not negotiated", true, V1, 256, offer_rx_ind_not_negotiated },
    { "RX malformed: avail->idx 40000 ahead", true, V1 | MRG, 256, offer_jump_40000 },
};

/* used->flags (VRING_USED_F_NO_NOTIFY) and avail_event: the backend may write them any time. */
static bool backend_may_write(size_t off)
{
    size_t ae = USED_OFF + 4 + 8u * g.num;
    return off == USED_OFF || off == USED_OFF + 1 || off == ae || off == ae + 1;
}

/* Used ring slots the guest cannot see yet (rings here start at index 0). */
static bool unpublished_used_slot(size_t off)
{
    uint16_t published = ((const struct vring_used *)(snapshot + USED_OFF))->idx;
    return off >= USED_OFF + 4 + 8u * published && off < USED_OFF + 4 + 8u * g.num;
}

/*
 * First byte of region A that differs from the snapshot, or -1.  used_only:
 * look at the used ring only (an RX burst may write into buffers before it
 * finds the chain malformed).  scratch_ok: slots past used->idx may change.
 */
static long region_changed(bool used_only, bool scratch_ok)
{
    size_t from = used_only ? USED_OFF : 0, to = used_only ? USED_OFF + 4 + 8u * g.num : A_SIZE;
    for (size_t i = from; i < to; i++)
        if (host_a[i] != snapshot[i] && !backend_may_write(i) && !(scratch_ok && unpublished_used_slot(i)))
            return (long)i;
    return -1;
}

/* One well-formed buffer at descriptor d: TX packet of 100 B, RX buffer of 2048 B. */
static void offer_good(uint16_t d, uint32_t seed, bool rx)
{
    static const uint32_t tx100[] = { 12 + 100 }, b2048[] = { 2048 };
    if (rx)
        rx_offer(d, b2048, 1);
    else
        tx_offer(d, tx100, 1, seed);
}

static int burst(bool rx, uint32_t seed)
{
    struct vx_pkt p = mkpkt(0, 60, seed);
    return rx ? enq(&p, 1) : deq(VX_BURST);
}

/*
 * One good buffer is used first; then the malformed one must break the ring
 * (one log line, stats.broken = 1) without publishing anything in the used
 * ring; the next burst must do nothing at all; a re-attach (new memory
 * table) keeps it broken; a restart of the ring makes it work again.
 */
static void run_bad(const struct bad_case *c)
{
    begin(c->name);
    ring_setup(c->num, c->features, 0, c->rx, false);
    offer_good(0, 110, c->rx);
    int r = burst(c->rx, 110);
    CHECK(r == 1 && g.used->idx == 1, "well-formed buffer before: returned %d, used->idx %u", r, g.used->idx);
    while (notified(NULL))
        ;

    c->offer();
    memcpy(snapshot, host_a, A_SIZE);
    cap_begin();
    r = burst(c->rx, 111);
    long changed = region_changed(c->rx, true);

    offer_good(1, 112, c->rx);
    memcpy(snapshot, host_a, A_SIZE);
    int r2 = burst(c->rx, 112);
    long changed2 = region_changed(false, false);
    int lines = cap_end();

    CHECK(r == 0, "the burst with the malformed chain returned %d", r);
    CHECK(vr.broken, "ring not broken");
    CHECK(vr.stats.broken == 1, "stats.broken %llu, want 1", (unsigned long long)vr.stats.broken);
    CHECK(vr.stats.packets == 1, "stats.packets %llu, want 1", (unsigned long long)vr.stats.packets);
    CHECK(g.used->idx == 1, "used->idx %u, want 1", g.used->idx);
    CHECK(changed < 0, "%s written at region A offset 0x%lx by the breaking burst",
          c->rx ? "published used ring" : "guest memory", changed);
    CHECK(r2 == 0, "burst on a broken ring returned %d", r2);
    CHECK(changed2 < 0, "broken ring: guest memory written at offset 0x%lx", changed2);
    CHECK(lines == 1, "%d lines on stderr, want exactly 1", lines);
    CHECK(strncmp(cap_text, "vhost-xdp: ", 11) == 0, "log line does not start with \"vhost-xdp: \"");
    CHECK(!notified(NULL), "called after bursts that used nothing");

    /* A new memory table (SET_MEM_TABLE) re-attaches: still broken. */
    memcpy(snapshot, host_a, A_SIZE);
    CHECK(vq_attach(&vr, &mem, c->features) == 0, "re-attach failed");
    CHECK(vr.broken, "a re-attach revived the broken ring");
    CHECK(burst(c->rx, 112) == 0, "burst after re-attach on the broken ring returned non-zero");
    changed = region_changed(false, false);
    CHECK(changed < 0, "broken ring, re-attached: guest memory written at offset 0x%lx", changed);

    /* The frontend restarts the ring (GET_VRING_BASE ... start): works again. */
    ring_setup(c->num, c->features, 0, c->rx, true);
    offer_good(0, 113, c->rx);
    r = burst(c->rx, 113);
    CHECK(r == 1, "fresh ring after re-attach: returned %d", r);
    if (r == 1 && !c->rx)
        check_tx_pkt(0, 100, 113);
    if (r == 1 && c->rx) {
        struct rxbuf b = { g.desc, 0, 1, 0 };
        check_rx(&b, 1, 0, 60, 113);
    }
    end();
}

static void t_mark_broken(void)
{
    begin("vq_mark_broken: broken, counted, one log line, bursts stop");
    ring_setup(256, V1, 0, false, false);
    cap_begin();
    vq_mark_broken(&vr, "ring %u: test says %d", vr.index, 42);
    offer_good(0, 120, false);
    int r = deq(VX_BURST);
    int lines = cap_end();
    CHECK(vr.broken, "not broken");
    CHECK(vr.stats.broken == 1, "stats.broken %llu", (unsigned long long)vr.stats.broken);
    CHECK(lines == 1, "%d lines on stderr, want 1", lines);
    CHECK(strstr(cap_text, "test says 42") != NULL, "message not logged");
    CHECK(r == 0 && g.used->idx == 0, "burst on a broken ring returned %d, used->idx %u", r, g.used->idx);
    end();
}

/* === Interrupt mode: kicks on, one more look, kicks off (virtqueue.c) ==== */

/*
 * vq_notify_enable() writes "kick me" where the layout keeps it, then looks
 * at the ring once more: true iff the guest has published past
 * last_avail_idx.  That return value is what keeps a poll thread from
 * sleeping on a buffer published just before its kicks came on (the race
 * the function's comment explains); the exit lines' "missed kicks" cannot
 * catch a broken one (the detector asks the same function), so it is
 * checked here.  vq_notify_disable() takes the request back.
 */
static void t_notify_enable(void)
{
    static const uint32_t tx60[] = { 12 + 60 };
    for (int evt = 0; evt < 2; evt++) {
        begin(evt ? "interrupt mode, event idx: avail_event set to where we wait, the re-check sees one new entry"
                  : "interrupt mode, no event idx: used->flags 0 then NO_NOTIFY, the re-check sees one new entry");
        ring_setup(256, V1 | (evt ? EVT : 0), 40000, false, false);
        uint16_t *avail_event = (uint16_t *)&g.used->ring[g.num];
        *avail_event = 7;
        CHECK(evt || g.used->flags == VRING_USED_F_NO_NOTIFY, "after attach used->flags %u, want NO_NOTIFY",
              g.used->flags);
        bool busy = vq_notify_enable(&vr);
        CHECK(!busy, "nothing published, yet vq_notify_enable says work is pending");
        if (evt)
            CHECK(*avail_event == 40000 && g.used->flags == 0, "avail_event %u (want 40000), used->flags %u",
                  *avail_event, g.used->flags);
        else
            CHECK(g.used->flags == 0 && *avail_event == 7, "used->flags %u (want 0), avail_event %u (untouched: 7)",
                  g.used->flags, *avail_event);
        tx_offer(0, tx60, 1, 7);            /* the guest publishes one entry ... */
        CHECK(vq_notify_enable(&vr), "one entry published past last_avail_idx, yet no work pending");
        vq_notify_disable(&vr);
        CHECK(evt ? g.used->flags == 0 && *avail_event == 40000 : g.used->flags == VRING_USED_F_NO_NOTIFY,
              "after disable: used->flags %u, avail_event %u", g.used->flags, *avail_event);
        CHECK(deq(VX_BURST) == 1, "the entry is still there to take");
        CHECK(!vq_notify_enable(&vr), "taken: no work pending any more");
        end();
    }
}

/* === Live migration: the dirty log ======================================= */

/*
 * While a live migration logs (VHOST_F_LOG_ALL), every guest page the
 * backend writes must be marked in the log, one bit per 4 KiB page of
 * guest-physical address, and no other: virtqueue.c, "Live migration:
 * dirty-page logging".  vhost_user.c would set vr.log when the ring starts;
 * here the test sets it.  The bitmap ends right before a guard page, so a
 * mark past its end is a SIGSEGV, reported as "not ok" (tests/dirty_log.h:
 * the bitmap, log_start() and check_marked(), shared with test_packed.c).
 */

/* The log on for vr: `bytes` long (LOG_MAX: pages up to 1023, past region
 * B's end), all clear; the used ring logged at its gpa when `log_used`. */
static void log_on(uint64_t bytes, bool log_used)
{
    log_start(&vr, bytes);
    vr.log_used = log_used;
    vr.log_guest_addr = A_GPA + USED_OFF;
}

#define USED_PAGE    PAGE_OF(A_GPA + USED_OFF)

/* An RX buffer of 2048 bytes that starts 64 bytes before a page boundary. */
static void rx_offer_across_page(void)
{
    static const uint32_t b2048[] = { 2048 };
    g.heap_a = 0x12000u - 64;
    rx_offer(0, b2048, 1);
}

static void t_dirty_log(void)
{
    static const uint32_t tx72[] = { 12 + 60 }, ind_lens[] = { 12, 2036 };
    struct vx_pkt p;

    begin("dirty log: split RX marks the buffer's two pages (header + frame across a page boundary) and the "
          "used ring's, nothing else");
    ring_setup(256, V1 | MRG | EVT, 0, true, false);
    rx_offer_across_page();
    log_on(LOG_MAX, true);
    p = mkpkt(0, 200, 7);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_marked(&vr, (const uint64_t[]){ USED_PAGE, PAGE_OF(A_GPA + 0x12000 - 64), PAGE_OF(A_GPA + 0x12000) }, 3);
    end();

    begin("dirty log: split RX through an indirect table: the buffer's page marked, the table's (only read) not");
    ring_setup(256, V1 | IND, 0, true, false);
    struct vring_desc *t;
    uint64_t ta = ind_table(2, &t);             /* page 0x110 */
    g.heap_a = 0x14000;                         /* the buffers on page 0x114 */
    build_chain(t, 0, ind_lens, 2, VRING_DESC_F_WRITE, 0);
    set_desc(g.desc, 4, ta, 32, VRING_DESC_F_INDIRECT, 0);
    avail_push(4);
    log_on(LOG_MAX, true);
    p = mkpkt(0, 100, 8);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_marked(&vr, (const uint64_t[]){ USED_PAGE, PAGE_OF(A_GPA + 0x14000) }, 2);
    CHECK(PAGE_OF(ta) != PAGE_OF(A_GPA + 0x14000), "test bug: table and buffers share a page");
    end();

    begin("dirty log: split TX marks only the used ring (TX buffers are only read)");
    ring_setup(256, V1, 0, false, false);
    g.heap_a = 0x16000;
    tx_offer(0, tx72, 1, 9);
    log_on(LOG_MAX, true);
    CHECK(deq(1) == 1, "not dequeued");
    check_marked(&vr, (const uint64_t[]){ USED_PAGE }, 1);
    end();

    begin("dirty log: without VHOST_VRING_F_LOG the used ring is not logged, the RX buffer is");
    ring_setup(256, V1 | MRG | EVT, 0, true, false);
    rx_offer_across_page();
    log_on(LOG_MAX, false);
    p = mkpkt(0, 200, 10);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_marked(&vr, (const uint64_t[]){ PAGE_OF(A_GPA + 0x12000 - 64), PAGE_OF(A_GPA + 0x12000) }, 2);
    end();

    begin("dirty log: marks stop at the log's end (a log shorter than memory): nothing written past it");
    ring_setup(256, V1 | MRG | EVT, 0, true, false);
    rx_offer_across_page();
    log_on(PAGE_OF(A_GPA + 0x12000 - 64) / 8, true);    /* pages 0..0x10f: the used ring's, not the buffer's */
    p = mkpkt(0, 200, 11);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_marked(&vr, (const uint64_t[]){ USED_PAGE }, 1);
    end();

    begin("dirty log: logging off (vr.log NULL) leaves the bitmap alone");
    ring_setup(256, V1 | MRG | EVT, 0, true, false);
    rx_offer_across_page();
    log_on(LOG_MAX, true);
    vr.log = NULL;
    p = mkpkt(0, 200, 12);
    CHECK(enq(&p, 1) == 1, "not delivered");
    check_marked(&vr, NULL, 0);
    end();

    begin("dirty log: interrupt mode's used->flags write (vq_notify_enable) is marked");
    ring_setup(256, V1, 0, true, false);
    log_on(LOG_MAX, true);
    vq_notify_enable(&vr);
    check_marked(&vr, (const uint64_t[]){ USED_PAGE }, 1);
    end();
}

/* === main =============================================================== */

/* === Four at a time ====================================================== */

/* virtqueue.c takes four one-buffer chains at once when the next four avail
 * entries name them ("Four at a time").  The TX tests above already go
 * through it (t_tx_wrap, t_tx_in_order, ...); here RX, and a chain inside a
 * four that the fast path must leave to the one-at-a-time walk. */
static void t_four(void)
{
    static const uint64_t feats[] = { V1, V1 | MRG };
    for (int f = 0; f < 2; f++) {
        begin(f ? "four at a time, RX with MRG_RXBUF: eight one-buffer chains, avail index wrapping past 65535"
                : "four at a time, RX: eight one-buffer chains, avail index wrapping past 65535, each packet in its own");
        ring_setup(256, feats[f], 65532, true, false);
        struct rxbuf b[NPKT];
        struct vx_pkt p[NPKT];
        uint64_t bytes = 0;
        for (int i = 0; i < NPKT; i++) {
            uint32_t l = 400;
            b[i] = rx_offer((uint16_t)(10 + i), &l, 1);
            p[i] = mkpkt(i, 100 + 30u * (uint32_t)i, 20 + (uint32_t)i);
            bytes += p[i].len;
        }
        int r = enq(p, NPKT);
        CHECK(r == NPKT, "delivered %d of %d", r, NPKT);
        for (int i = 0; i < NPKT; i++)
            check_rx(&b[i], 1, (uint16_t)(65532 + i), 100 + 30u * (uint32_t)i, 20 + (uint32_t)i);
        check_indexes(4, 4);
        check_stats(NPKT, bytes, 0, 0);
        end();
    }

    begin("four at a time, RX without MRG_RXBUF: the third of four packets too big for its buffer: dropped, the "
          "fourth takes that buffer, the others theirs");
    ring_setup(256, V1, 0, true, false);
    struct rxbuf b[4];
    for (int i = 0; i < 4; i++) {
        uint32_t l = 200;
        b[i] = rx_offer((uint16_t)i, &l, 1);
    }
    struct vx_pkt p[4] = { mkpkt(0, 100, 30), mkpkt(1, 110, 31), mkpkt(2, 1000, 32), mkpkt(3, 120, 33) };
    int r = enq(p, 4);
    CHECK(r == 3, "delivered %d, want 3", r);
    check_rx(&b[0], 1, 0, 100, 30);
    check_rx(&b[1], 1, 1, 110, 31);
    check_rx(&b[2], 1, 2, 120, 33);
    check_indexes(3, 3);
    check_stats(3, 330, 1, 0);
    end();

    begin("four at a time, RX: the third of four buffers read-only: the two before it filled and used, the ring "
          "broken there");
    ring_setup(256, V1, 0, true, false);
    for (int i = 0; i < 4; i++) {
        uint32_t l = 200;
        b[i] = rx_offer((uint16_t)i, &l, 1);
    }
    g.desc[2].flags = 0;
    for (int i = 0; i < 4; i++)
        p[i] = mkpkt(i, 100, 40 + (uint32_t)i);
    cap_begin();
    r = enq(p, 4);
    int lines = cap_end();
    CHECK(r == 2 && vr.broken && lines == 1, "delivered %d (want 2), broken %d, %d log lines (want 1)", r, vr.broken,
          lines);
    check_rx(&b[0], 1, 0, 100, 40);
    check_rx(&b[1], 1, 1, 100, 41);
    check_indexes(2, 2);
    end();

    begin("four at a time, TX: a head beyond the ring third of four (memory past the table made to look like a "
          "good descriptor there): the two before it taken and used, the ring broken there");
    ring_setup(128, V1, 0, false, false);
    uint32_t l = 12 + 100;
    tx_offer(0, &l, 1, 50);
    tx_offer(1, &l, 1, 51);
    build_chain(g.desc, g.num, &l, 1, 0, 52);   /* "descriptor 128" of a 128-entry table */
    avail_push(g.num);
    tx_offer(3, &l, 1, 53);
    cap_begin();
    r = deq(VX_BURST);
    lines = cap_end();
    CHECK(r == 2 && vr.broken && lines == 1, "returned %d (want 2), broken %d, %d log lines (want 1)", r, vr.broken,
          lines);
    check_tx_pkt(0, 100, 50);
    check_tx_pkt(1, 100, 51);
    check_used_tx(0, 0);
    check_used_tx(1, 1);
    check_indexes(2, 2);
    end();

    begin("four at a time, TX: the third of four frames larger than the room: dropped and used, the others taken");
    ring_setup(256, V1, 0, false, false);
    uint32_t lens[4] = { 12 + 100, 12 + 110, 12 + 300, 12 + 120 };
    for (int i = 0; i < 4; i++)
        tx_offer((uint16_t)i, &lens[i], 1, 60 + (uint32_t)i);
    r = deq_room(VX_BURST, 200);
    CHECK(r == 3, "returned %d, want 3", r);
    check_tx_pkt(0, 100, 60);
    check_tx_pkt(1, 110, 61);
    check_tx_pkt(2, 120, 63);
    for (uint16_t i = 0; i < 4; i++)
        check_used_tx(i, i);
    check_indexes(4, 4);
    check_stats(3, 330, 1, 0);
    end();
}

int main(void)
{
    unit_init();

    mem_init();
    for (int i = 0; i < NOUT; i++)
        out_buf[i] = guarded_tail(VX_PKT_MAX);
    for (int i = 0; i < NPKT; i++)
        pkt_end[i] = guarded_tail(VX_PKT_MAX) + VX_PKT_MAX;
    call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (call_fd < 0) {
        perror("eventfd");
        return 2;
    }

    t_translate_gpa();
    t_translate_uva();
    t_translate_top();

    t_attach_features();
    t_attach_state();
    t_attach_sizes();
    t_attach_addresses();

    t_tx_layouts();
    t_tx_two_regions();
    t_tx_indirect();
    t_tx_ring_full();
    t_tx_burst_limit();
    t_tx_wrap();
    t_tx_in_order();
    t_tx_drops();
    t_tx_room();
    t_net_header();
    t_tx_big();
    t_tx_long_chain();
    t_tx_lend();

    t_rx_layouts();
    t_rx_edges();
    t_rx_two_regions();
    t_rx_mrg();
    t_rx_no_mrg_limits();
    t_rx_indirect();
    t_four();

    t_notify();
    t_notify_enable();
    log_map();
    t_dirty_log();

    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        run_bad(&bad_cases[i]);
    t_mark_broken();

    printf("1..%d\n", tap_n);
    if (tap_failed)
        printf("# %d of %d failed\n", tap_failed, tap_n);
    return tap_failed ? 1 : 0;
}
