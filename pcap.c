/*
 * pcap.c - --pcap FILE: every forwarded packet, in a file Wireshark and
 * tcpdump open.
 *
 * Where it sits: beside the data path, not on it.  pmd_loop.c hands each
 * burst it forwarded to pcap_burst(): the packets the guest sent (its TX
 * ring, marked "Out") and the packets given to the guest (its RX ring,
 * marked "In").  A poll-mode thread must never wait for a disk, so
 * pcap_burst() only copies the packets into that thread's own ring buffer in
 * memory; a writer thread ("vx-pcap") drains every ring into the file with
 * fwrite.  When a ring is full (the writer fell behind) the packet is not
 * captured, and counted; the packet itself is forwarded as always.
 *
 * The file format, "classic" pcap (what libpcap has written since 1998):
 *
 *   file header  magic 0xa1b2c3d4, version 2.4, snaplen, linktype
 *   per packet   ts_sec, ts_usec, incl_len, orig_len, then incl_len bytes
 *
 * all in our own byte order (the magic tells a reader which one it is).
 * The link type is LINUX_SLL (113), the "cooked" header tcpdump writes for
 * `-i any`: 16 bytes that say which way the packet went (packet type 4,
 * PACKET_OUTGOING, printed "Out"; 0, PACKET_HOST, "In"), then the link
 * address (the frame's source MAC) and the protocol (its ethertype).  The
 * record's data is the frame after its 14-byte Ethernet header.  Plain
 * Ethernet (linktype 1) has no place for a direction; SLL keeps it at the
 * price of the destination MAC, which is not in the file.
 *
 * The ring buffer between a PMD thread and the writer is the classic
 * single-producer single-consumer ring: two free-running byte counters,
 * `head` written only by the PMD, `tail` only by the writer; each publishes
 * its counter with a release store after touching the bytes, and reads the
 * other's with an acquire load before touching them.  No lock, no syscall,
 * no wait on the PMD's side.  The bytes in the ring are the file's bytes:
 * record header, SLL header, data.  With several PMD threads the writer
 * takes their rings in turn, so in the file the records of different queue
 * pairs interleave and their timestamps need not be in order.
 *
 * Read in this order: the formats, the ring (producer: pcap_burst), the
 * writer thread, open/start/close.
 */
#include "vhost_xdp.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* === The file's formats ================================================== */

#define PCAP_MAGIC          0xa1b2c3d4u     /* microsecond timestamps */
#define PCAP_LINKTYPE_SLL   113             /* LINKTYPE_LINUX_SLL */
#define PCAP_SNAPLEN        262144          /* tcpdump's largest; every frame we
                                               carry (VX_PKT_MAX) fits, so
                                               incl_len == orig_len, always */
#define PCAP_RING_BYTES     (8u << 20)      /* per PMD thread: 8 MiB, ~6.7 ms
                                               of a 10 Gbit/s link; a power of
                                               two, so a counter & (size - 1)
                                               is its offset in the ring */
#define ETH_HLEN_BYTES      14              /* destination MAC, source MAC, ethertype */
#define SLL_ARPHRD_ETHER    1               /* <linux/if_arp.h> ARPHRD_ETHER */

/* The classic libpcap formats, field for field (pcap-savefile(5)). */
struct pcap_file_header {
    uint32_t magic;
    uint16_t version_major, version_minor;  /* 2, 4 */
    int32_t  thiszone;                      /* always 0: timestamps are UTC */
    uint32_t sigfigs;                       /* always 0, as every writer sets it */
    uint32_t snaplen;
    uint32_t linktype;
};

struct pcap_record_header {
    uint32_t ts_sec, ts_usec;
    uint32_t incl_len;                      /* bytes that follow in the file */
    uint32_t orig_len;                      /* bytes the packet had */
};

/* The Linux "cooked" header (LINKTYPE_LINUX_SLL), in network byte order. */
struct sll_header {
    uint16_t pkttype;                       /* enum pcap_dir */
    uint16_t hatype;                        /* ARPHRD_ETHER */
    uint16_t halen;                         /* 6: the source MAC follows */
    uint8_t  addr[8];
    uint16_t protocol;                      /* the frame's ethertype, as it was on the wire */
};

_Static_assert(sizeof(struct pcap_file_header) == 24, "pcap file header is 24 bytes");
_Static_assert(sizeof(struct pcap_record_header) == 16, "pcap record header is 16 bytes");
_Static_assert(sizeof(struct sll_header) == 16, "SLL header is 16 bytes");

/* === One PMD thread's ring ================================================ */

struct pcap_ring {
    uint8_t *bytes;                     /* PCAP_RING_BYTES, a power of two */
    uint64_t head;              /* bytes ever written: the PMD's */
    uint64_t tail;              /* bytes ever taken: the writer's */
    uint64_t not_captured;      /* ring full: the PMD's, read by --stats */
    uint64_t after_limit;       /* capture stopped: not copied (the PMD's) */
};

/* The capture: set up by main.c's thread before the PMDs start. */
static struct {
    FILE *file;
    char path[512];
    uint64_t limit;                     /* --pcap-limit: the file never grows past it */
    uint64_t file_bytes;                /* written so far (the writer's) */
    struct pcap_ring *rings[64];        /* one per PMD thread */
    int nrings;
    pthread_t writer;
    bool writer_started;
    bool stop_writer;
    bool full;                  /* limit reached or write error: capture stopped */
    uint64_t captured;          /* records in the file (the writer's) */
    uint64_t discarded;         /* records drained but not written once the
                                           capture stopped (the writer's) */
} pcap;

/* Copy len bytes in at byte counter `at`, wrapping round the ring's end:
 * a record is stored in at most two pieces, so the writer can fwrite it in
 * at most two, and no byte of the ring is wasted on padding. */
static void ring_put(struct pcap_ring *r, uint64_t at, const void *src, uint32_t len)
{
    uint32_t off = (uint32_t)(at & (PCAP_RING_BYTES - 1));
    uint32_t first = PCAP_RING_BYTES - off < len ? PCAP_RING_BYTES - off : len;
    memcpy(r->bytes + off, src, first);
    memcpy(r->bytes, (const uint8_t *)src + first, len - first);
}

/* The SLL header for one frame.  A frame shorter than an Ethernet header
 * (the guest may send one: we forward what it gives us) has no source MAC
 * or ethertype to show: it is recorded whole, with halen 0 and protocol 0,
 * so it appears in Wireshark as unknown data instead of vanishing from the
 * capture.  Returns how many bytes of the frame the header stands for. */
static uint32_t sll_for(struct sll_header *h, enum pcap_dir dir, const struct vx_pkt *p)
{
    memset(h, 0, sizeof *h);
    h->pkttype = htobe16((uint16_t)dir);
    h->hatype = htobe16(SLL_ARPHRD_ETHER);
    if (p->len < ETH_HLEN_BYTES)
        return 0;
    h->halen = htobe16(6);
    memcpy(h->addr, p->data + 6, 6);            /* source MAC */
    memcpy(&h->protocol, p->data + 12, 2);      /* ethertype: already big-endian */
    return ETH_HLEN_BYTES;
}

/*
 * The producer, called by a PMD thread with the burst it just forwarded:
 * one timestamp for the burst (a clock read per packet would cost more than
 * the copy), then one record per packet while the ring has room.
 */
void pcap_burst(struct pcap_ring *r, enum pcap_dir dir, const struct vx_pkt *pkts, int n)
{
    if (n <= 0)
        return;
    /* Capture stopped: count, copy nothing.  Relaxed: a burst or two copied
     * after the writer stopped costs nothing but the copy (the writer counts
     * and discards them). */
    if (__atomic_load_n(&pcap.full, __ATOMIC_RELAXED)) {
        vx_counter_add(r->after_limit, (uint64_t)n);
        return;
    }
    /* pcap timestamps are wall-clock time, in seconds and microseconds; a
     * 32-bit ts_sec lasts until 2106. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct pcap_record_header rh = { .ts_sec = (uint32_t)ts.tv_sec, .ts_usec = (uint32_t)(ts.tv_nsec / 1000) };
    /* relaxed: only this thread writes `head`. */
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_RELAXED);
    /* acquire: the writer has finished reading the bytes before `tail`. */
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    uint64_t lost = 0;
    for (int i = 0; i < n; i++) {
        struct sll_header sll;
        uint32_t skip = sll_for(&sll, dir, &pkts[i]);
        uint32_t data_len = pkts[i].len - skip;
        rh.incl_len = rh.orig_len = (uint32_t)sizeof sll + data_len;    /* PCAP_SNAPLEN: nothing cut */
        uint32_t total = (uint32_t)sizeof rh + rh.incl_len;     /* as drain_ring reads it back */
        /* head - tail is the bytes the writer has yet to take, right even
         * when the counters wrap round 2^64: unsigned arithmetic, and
         * PCAP_RING_BYTES divides 2^64. */
        if (PCAP_RING_BYTES - (head - tail) < total) {
            lost++;                         /* the writer is behind: skip, never wait */
            continue;
        }
        ring_put(r, head, &rh, sizeof rh);
        ring_put(r, head + sizeof rh, &sll, sizeof sll);
        ring_put(r, head + sizeof rh + sizeof sll, pkts[i].data + skip, data_len);
        head += total;
    }
    /* release: the writer sees the bytes before it sees the new head. */
    __atomic_store_n(&r->head, head, __ATOMIC_RELEASE);
    if (lost)
        vx_counter_add(r->not_captured, lost);
}

/* === The writer thread ==================================================== */

/* Write len bytes from byte counter `at` of the ring, in at most two pieces.
 * Runs only on the writer thread, so it may block on the disk as long as it
 * likes: the PMDs meanwhile fill their rings, and skip (and count) what no
 * longer fits. */
static bool ring_write(struct pcap_ring *r, uint64_t at, uint32_t len)
{
    uint32_t off = (uint32_t)(at & (PCAP_RING_BYTES - 1));
    uint32_t first = PCAP_RING_BYTES - off < len ? PCAP_RING_BYTES - off : len;
    return fwrite(r->bytes + off, 1, first, pcap.file) == first &&
           fwrite(r->bytes, 1, len - first, pcap.file) == len - first;
}

/* One record of `total` bytes at byte counter `at` of ring r: into the
 * file, or (capture stopped) nowhere.  Returns true if it was written.
 * The first record that would take the file past --pcap-limit, or that
 * cannot be written, stops the capture, once, with the reason: from then
 * on the PMDs copy nothing (pcap.full) and the writer discards what is
 * still in the rings, so the file ends on a whole record. */
static bool write_record(struct pcap_ring *r, uint64_t at, uint32_t total)
{
    bool over_limit = pcap.file_bytes + total > pcap.limit;
    if (!__atomic_load_n(&pcap.full, __ATOMIC_SEQ_CST) && (over_limit || !ring_write(r, at, total))) {
        char why[300];
        if (over_limit)
            snprintf(why, sizeof why, "reached --pcap-limit (%llu bytes)", (unsigned long long)pcap.limit);
        else
            snprintf(why, sizeof why, "write error: %s", strerror(errno));
        vx_log("pcap: %s: %s after %llu packets: capture stopped", pcap.path, why,
               (unsigned long long)__atomic_load_n(&pcap.captured, __ATOMIC_SEQ_CST));
        __atomic_store_n(&pcap.full, true, __ATOMIC_SEQ_CST);
    }
    /* Only this thread writes `discarded` and `captured`. */
    if (__atomic_load_n(&pcap.full, __ATOMIC_SEQ_CST)) {
        vx_counter_add(pcap.discarded, 1);
        return false;
    }
    pcap.file_bytes += total;
    vx_counter_add(pcap.captured, 1);
    return true;
}

/* Move every record in one ring to the file; returns how many.  A record
 * that would take the file past --pcap-limit is not written, so the file
 * ends on a whole record, at or below the limit. */
static int drain_ring(struct pcap_ring *r)
{
    /* relaxed: only this thread writes `tail`. */
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_RELAXED);
    /* acquire: the PMD's bytes before `head` are all there. */
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
    int moved = 0;
    while (tail != head) {
        /* The record header says how long the record is; it may itself be
         * split by the ring's end, so it is copied out in two pieces. */
        struct pcap_record_header rh;
        uint32_t off = (uint32_t)(tail & (PCAP_RING_BYTES - 1));
        uint32_t first = PCAP_RING_BYTES - off < sizeof rh ? PCAP_RING_BYTES - off : (uint32_t)sizeof rh;
        memcpy(&rh, r->bytes + off, first);
        memcpy((uint8_t *)&rh + first, r->bytes, sizeof rh - first);
        uint32_t total = (uint32_t)sizeof rh + rh.incl_len;
        moved += write_record(r, tail, total);
        tail += total;
    }
    /* release: we are done with these bytes; the PMD may overwrite them. */
    __atomic_store_n(&r->tail, tail, __ATOMIC_RELEASE);
    return moved;
}

/* Drain every ring; when there was nothing to do, flush what stdio holds
 * (so `tcpdump -r` sees the packets of a quiet moment) and sleep a
 * millisecond.  The last pass runs after the PMDs have stopped.  The PMDs
 * never wake the writer: waking a thread (a condition variable, a futex)
 * is a system call, and pcap_burst() must cost a PMD no more than its
 * copies.  So the writer looks for work itself, and naps when there is
 * none. */
static void *pcap_writer(void *arg)
{
    (void)arg;
    for (;;) {
        bool stopping = __atomic_load_n(&pcap.stop_writer, __ATOMIC_SEQ_CST);    /* read before the last drain */
        int moved = 0;
        for (int i = 0; i < pcap.nrings; i++)
            moved += drain_ring(pcap.rings[i]);
        if (stopping)
            break;
        if (moved == 0) {
            fflush(pcap.file);
            /* 1 ms: the rings hold milliseconds of traffic at full rate
             * (PCAP_RING_BYTES), so a writer that looks a thousand times a
             * second falls behind only when the disk does. */
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* === Open, start, close ==================================================== */

/* "64M" -> 67108864.  Suffixes k, M, G (powers of 1024).  -1 if not a size. */
int64_t pcap_parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    int shift = 0;
    if (*end == 'k' || *end == 'K')
        shift = 10, end++;
    else if (*end == 'M')
        shift = 20, end++;
    else if (*end == 'G')
        shift = 30, end++;
    /* 2^62 bytes at most, so the shifted value fits an int64_t with room
     * to spare, whatever the suffix. */
    if (*end || v > (UINT64_C(1) << 62) >> shift)
        return -1;
    return (int64_t)(v << shift);
}

/* Create the file and write its header, before anything else starts: a
 * path we cannot write is the user's first mistake, reported at once. */
int pcap_open(const char *path, uint64_t limit)
{
    snprintf(pcap.path, sizeof pcap.path, "%s", path);
    pcap.limit = limit;
    pcap.file = fopen(path, "wbe");     /* "e": O_CLOEXEC, as every fd we open */
    if (!pcap.file) {
        vx_log("--pcap %s: cannot create the file: %s", path, strerror(errno));
        return -1;
    }
    /* A big stdio buffer: the writer makes few, large write(2)s. */
    setvbuf(pcap.file, NULL, _IOFBF, 1 << 20);
    struct pcap_file_header fh = {
        .magic = PCAP_MAGIC, .version_major = 2, .version_minor = 4,
        .snaplen = PCAP_SNAPLEN, .linktype = PCAP_LINKTYPE_SLL,
    };
    if (fwrite(&fh, sizeof fh, 1, pcap.file) != 1 || fflush(pcap.file) != 0) {
        vx_log("--pcap %s: cannot write: %s", path, strerror(errno));
        fclose(pcap.file);
        pcap.file = NULL;
        return -1;
    }
    pcap.file_bytes = sizeof fh;
    return 0;
}

/* One ring for PMD thread `id`, or NULL when there is no capture (the PMD
 * then tests one NULL pointer per burst) or no memory (logged).  A ring per
 * thread, not one for all: with one producer, pcap_burst() needs neither a
 * lock nor an atomic add to claim its bytes. */
struct pcap_ring *pcap_ring_new(int id)
{
    /* 64 rings: one per PMD thread, and pmd_loop.c starts at most 64. */
    if (!pcap.file || pcap.nrings == (int)(sizeof pcap.rings / sizeof pcap.rings[0]))
        return NULL;
    struct pcap_ring *r = calloc(1, sizeof *r);
    if (r)
        r->bytes = malloc(PCAP_RING_BYTES);
    if (!r || !r->bytes) {
        vx_log("pcap: pmd %d: no memory for a %u MiB capture ring: not capturing its packets", id,
               PCAP_RING_BYTES >> 20);
        free(r);
        return NULL;
    }
    pcap.rings[pcap.nrings++] = r;
    return r;
}

/* Start the writer, after every ring exists (pthread_create publishes them). */
int pcap_start(void)
{
    if (!pcap.file)
        return 0;
    int err = pthread_create(&pcap.writer, NULL, pcap_writer, NULL);
    if (err) {
        vx_log("pcap: cannot start the writer thread: %s", strerror(err));
        return -1;
    }
    pthread_setname_np(pcap.writer, "vx-pcap");
    pcap.writer_started = true;
    return 0;
}

/* Totals for --stats and the exit line. */
void pcap_counts(uint64_t *captured, uint64_t *not_captured, uint64_t *after_limit)
{
    *captured = __atomic_load_n(&pcap.captured, __ATOMIC_RELAXED);
    *not_captured = 0;
    *after_limit = __atomic_load_n(&pcap.discarded, __ATOMIC_RELAXED);
    for (int i = 0; i < pcap.nrings; i++) {
        *not_captured += __atomic_load_n(&pcap.rings[i]->not_captured, __ATOMIC_RELAXED);
        *after_limit += __atomic_load_n(&pcap.rings[i]->after_limit, __ATOMIC_RELAXED);
    }
}

bool pcap_enabled(void)
{
    return pcap.file != NULL;
}

/* After the PMDs have stopped: the writer's last pass takes every record
 * they made, then the file is flushed and closed, and the totals logged.
 * Only then may the rings be freed: a PMD still running would copy its
 * next burst into freed memory. */
void pcap_close(void)
{
    if (!pcap.file)
        return;
    /* The writer reads stop_writer before its last pass over the rings, so
     * the records the PMDs made before they stopped are all in that pass. */
    if (pcap.writer_started) {
        __atomic_store_n(&pcap.stop_writer, true, __ATOMIC_SEQ_CST);
        pthread_join(pcap.writer, NULL);
    }
    uint64_t captured, not_captured, after_limit;
    pcap_counts(&captured, &not_captured, &after_limit);
    if (fclose(pcap.file) != 0)
        vx_log("pcap: %s: %s", pcap.path, strerror(errno));
    pcap.file = NULL;
    vx_log("exit: pcap: %llu packets captured in %s (%llu bytes), %llu not captured (writer behind), "
           "%llu after --pcap-limit", (unsigned long long)captured, pcap.path, (unsigned long long)pcap.file_bytes,
           (unsigned long long)not_captured, (unsigned long long)after_limit);
    for (int i = 0; i < pcap.nrings; i++) {
        free(pcap.rings[i]->bytes);
        free(pcap.rings[i]);
    }
    pcap.nrings = 0;
}
