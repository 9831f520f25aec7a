/*
 * bench/ring_cost.c - the instructions virtqueue.c spends per packet, guest to guest, counted rather
 * than timed (bench/ring_cost.sh runs it under callgrind).
 *
 * Why: on a shared 2-CPU machine `make bench`'s rates swing 2-5x from one second to the next, so a
 * change of a few percent in the ring code cannot be seen in them.  An instruction count does not
 * swing: it is the same on every run, on any machine with the same compiler.  It is not speed (cache
 * misses, branch mispredictions and the other side's polling are not in it), but when the ring code
 * is restructured, "the same instructions per packet" is the honest evidence that nothing got
 * slower, and `make bench` stays the judge of speed.
 *
 * What it runs: the loopback path of pmd_loop.c without the thread, on one TX and one RX ring in
 * memory made here, both driven by a guest written in a few lines below (it keeps every buffer
 * available, as testpmd's io forwarding does): vq_dequeue_burst_lend() takes up to VX_BURST packets
 * from the TX ring and hands them, lent in place, to vq_enqueue_burst() into the RX ring.  callgrind
 * counts only inside vq_dequeue_burst_lend (--toggle-collect), which includes the delivery: so the
 * count is one packet's dequeue, copy and enqueue, with MRG_RXBUF, no notification (the guest asked
 * for none: NO_INTERRUPT / event DISABLE), no offloads.
 *
 *   bench/ring_cost split|packed FRAME_BYTES PACKETS [log]
 *
 * With `log`, both rings mark what they write in a dirty log, as while QEMU live-migrates the guest
 * (virtqueue.c, "Live migration: dirty-page logging"): the cost of logging, against the same run
 * without.  QEMU would clear the bits at each round of copying; here nobody does, so after the first
 * lap every mark finds its bit set and costs a load: the steady state between two rounds.  The last
 * line gives the run's time too (one thread, no frontend: only the ring code's share of a rate).
 */
#include "vhost_xdp.h"
#include <stdlib.h>
#include <time.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>

#define NUM   256                   /* ring size, testpmd's default */
#define MEMSZ (8u << 20)            /* the "guest memory": one region */
#define FA    (1u << VRING_PACKED_DESC_F_AVAIL)
#define FU    (1u << VRING_PACKED_DESC_F_USED)

static struct vx_mem mem;
static uint8_t *host;
static struct vx_vring tx, rx;
static bool packed;

/* The guest's side of one ring: where its structures are and, packed, its two wrap counters. */
struct gring {
    uint32_t off;                   /* ring structures at off; buffers at 1 MiB + off * 64 */
    uint32_t len;                   /* each buffer's length */
    bool write;                     /* RX: the device writes the buffers */
    uint16_t next_avail, next_used, used_seen;
    bool avail_wrap, used_wrap;
};
static struct gring gt, gr;

static uint64_t buf_addr(const struct gring *g, uint16_t id) { return 0x100000 + (uint64_t)g->off * 64 + id * 2048u; }

/* Make n more buffers available, in order (split: avail ring, then idx; packed: each descriptor's
 * flags last, §2.8.1). */
static void post(struct gring *g, int n)
{
    for (int k = 0; k < n; k++) {
        uint16_t slot = g->next_avail % NUM;
        if (packed) {
            struct vring_packed_desc *d = (struct vring_packed_desc *)(host + g->off) + slot;
            d->addr = buf_addr(g, slot), d->len = g->len, d->id = slot;
            __atomic_store_n(&d->flags, (uint16_t)((g->write ? VRING_DESC_F_WRITE : 0) | (g->avail_wrap ? FA : FU)),
                             __ATOMIC_RELEASE);
            if (slot == NUM - 1)
                g->avail_wrap = !g->avail_wrap;
        } else {
            struct vring_avail *a = (struct vring_avail *)(host + g->off + 0x1000);
            a->ring[slot] = slot;
            __atomic_store_n(&a->idx, (uint16_t)(g->next_avail + 1), __ATOMIC_RELEASE);
        }
        g->next_avail++;
    }
}

/* How many buffers the device has given back since the last call. */
static int reclaim(struct gring *g)
{
    if (!packed) {
        struct vring_used *u = (struct vring_used *)(host + g->off + 0x2000);
        uint16_t idx = __atomic_load_n(&u->idx, __ATOMIC_ACQUIRE), n = (uint16_t)(idx - g->used_seen);
        g->used_seen = idx;
        return n;
    }
    int n = 0;
    for (;;) {
        struct vring_packed_desc *d = (struct vring_packed_desc *)(host + g->off) + g->next_used;
        uint16_t f = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
        if (!!(f & FA) != !!(f & FU) || !!(f & FA) != g->used_wrap)
            return n;
        n++;
        if (++g->next_used == NUM)
            g->next_used = 0, g->used_wrap = !g->used_wrap;
    }
}

/* The ring as vhost_user.c hands it over: addresses, features, base, then ready. */
static void ring_start(struct vx_vring *vr, struct gring *g, int index, uint32_t off, uint32_t len, bool write)
{
    *g = (struct gring){ .off = off, .len = len, .write = write, .avail_wrap = true, .used_wrap = true };
    uint64_t features = 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_NET_F_MRG_RXBUF;
    if (packed) {
        features |= 1ull << VIRTIO_F_RING_PACKED;
        for (int i = 0; i < NUM; i++)       /* no descriptor available yet: AVAIL = USED = 0 */
            ((struct vring_packed_desc *)(host + off))[i].flags = 0;
        ((struct vring_packed_desc_event *)(host + off + 0x2000))->flags = 1;   /* DISABLE: no interrupt */
    } else {
        for (int i = 0; i < NUM; i++) {
            struct vring_desc *d = (struct vring_desc *)(host + off) + i;
            d->addr = buf_addr(g, (uint16_t)i), d->len = len, d->flags = write ? VRING_DESC_F_WRITE : 0;
        }
        ((struct vring_avail *)(host + off + 0x1000))->flags = VRING_AVAIL_F_NO_INTERRUPT;
    }
    memset(vr, 0, sizeof *vr);
    vr->index = (uint16_t)index, vr->num = NUM;
    vr->desc_user_addr = off, vr->avail_user_addr = off + (packed ? 0x2000 : 0x1000);
    vr->used_user_addr = off + (packed ? 0x3000 : 0x2000);
    vr->addr_set = vr->enabled = vr->kick_received = true;
    vr->kick_fd = vr->err_fd = vr->call_fd = -1;
    if (vq_attach(vr, &mem, features) != 0) {
        fprintf(stderr, "ring_cost: vq_attach refused ring %d\n", index);
        exit(1);
    }
    vr->avail_wrap_counter = vr->used_wrap_counter = 1;     /* SET_VRING_BASE's start (§2.8.1) */
    vr->ready = true;
}

/* Both rings log, as after SET_LOG_BASE, LOG_ALL and SET_VRING_ADDR with VHOST_VRING_F_LOG (whose
 * log_guest_addr is the used ring's guest-physical address: here the same as its offset). */
static struct vx_dirty_log dirty_log;
static void log_on(struct vx_vring *vr)
{
    static uint8_t bits[MEMSZ / VX_LOG_PAGE / 8];
    dirty_log = (struct vx_dirty_log){ .bits = bits, .size = sizeof bits };
    vr->log = &dirty_log;
    vr->log_used = true;
    vr->log_guest_addr = vr->used_user_addr;
}

static void deliver(void *ctx, struct vx_pkt *pkts, int n)
{
    (void)ctx;
    vq_enqueue_burst(&rx, pkts, n);
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5 || (strcmp(argv[1], "split") && strcmp(argv[1], "packed")) || atoi(argv[2]) < 60 ||
        atoi(argv[2]) > 2000 || atol(argv[3]) < 1 || (argc == 5 && strcmp(argv[4], "log"))) {
        fprintf(stderr, "usage: bench/ring_cost split|packed FRAME_BYTES(60..2000) PACKETS [log]\n");
        return 2;
    }
    packed = !strcmp(argv[1], "packed");
    int size = atoi(argv[2]);
    long total = atol(argv[3]), moved = 0;
    host = aligned_alloc(4096, MEMSZ);
    if (!host)
        return 1;
    memset(host, 0, MEMSZ);
    mem.nregions = 1;
    mem.regions[0] = (struct vx_mem_region){ .guest_phys_addr = 0, .memory_size = MEMSZ, .host = host };
    ring_start(&tx, &gt, 1, 0x00000, 12 + (uint32_t)size, false);   /* TX: header + frame each */
    ring_start(&rx, &gr, 0, 0x10000, 2048, true);
    if (argc == 5)
        log_on(&tx), log_on(&rx);
    post(&gt, NUM);
    post(&gr, NUM);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    static struct vx_pkt pkts[VX_BURST];
    static uint8_t bufs[VX_BURST][VX_PKT_MAX];
    while (moved < total) {
        for (int i = 0; i < VX_BURST; i++)      /* as pmd_guest_to_guest: lent frames point elsewhere */
            pkts[i].data = bufs[i], pkts[i].room = VX_PKT_MAX;
        int n = vq_dequeue_burst_lend(&tx, pkts, VX_BURST, deliver, NULL);
        if (n <= 0) {
            fprintf(stderr, "ring_cost: stalled after %ld packets\n", moved);
            return 1;
        }
        moved += n;
        post(&gt, reclaim(&gt));                /* the guest sends again what came back, */
        post(&gr, reclaim(&gr));                /* and gives back the RX buffers it read */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rx.stats.packets != (uint64_t)moved || rx.stats.drops || tx.broken || rx.broken) {
        fprintf(stderr, "ring_cost: %ld taken, %llu delivered, %llu dropped\n", moved,
                (unsigned long long)rx.stats.packets, (unsigned long long)rx.stats.drops);
        return 1;
    }
    if (argc == 5 && !rx.log_marks)
        fprintf(stderr, "ring_cost: logging on, and no page marked\n");
    printf("ring_cost: %s %d B: %ld packets, %.1f ns each%s\n", argv[1], size, moved,
           ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / moved, argc == 5 ? ", dirty log on" : "");
    return 0;
}
