/*
 * vhost_xdp.h - the few types every room of vhost-xdp shares.
 *
 * Read this first.  It holds, in the order a packet meets them:
 *   1. the guest memory table (what VHOST_USER_SET_MEM_TABLE gives us) and the
 *      two address translations every other file goes through;
 *   2. one virtqueue ("vring") as the backend sees it, with the rule for who
 *      may touch which field (the control thread or a poll-mode thread);
 *   3. the device: one vhost-user connection with its rings;
 *   4. the small API each .c file offers to the file on its left;
 * then, after the "Second reading" line, what the second reading's files
 * (offload.c, pcap.c, fault.c) and instruments offer: skip it the first time.
 *
 * Data flows left to right and each file only calls to its right or into
 * this header:
 *
 *   socket -> vhost_user.c -> (vring ready) -> pmd_loop.c <-> virtqueue.c
 *                                                         <-> nic_afxdp.c
 *                                                         <-> offload.c (second reading)
 */
#ifndef VHOST_XDP_H
#define VHOST_XDP_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <linux/virtio_ring.h> /* struct vring_desc/avail/used, VRING_* flags */

/* === Limits ============================================================= */

#define VX_MAX_REGIONS     8      /* VHOST_MEMORY_BASELINE_NREGIONS in the spec */
#define VX_MAX_QUEUE_PAIRS 8      /* GET_QUEUE_NUM answers --queues, at most this */
#define VX_MAX_DEVS        8      /* --socket at most this often: a switch's guest ports */
#define VX_MAX_VRINGS      (2 * VX_MAX_QUEUE_PAIRS)
#define VX_MAX_RING_SIZE   32768  /* virtio 1.2 §2.7: Queue Size <= 32768 */
#define VX_BURST           32     /* packets per poll, as DPDK's MAX_PKT_BURST */
#define VX_PKT_MAX         65550  /* largest frame we carry: 64 KiB + headroom */

/* Virtio feature bits we use (virtio 1.2 §5.1.3, §6; vhost-user.rst). */
#define VIRTIO_NET_F_MTU                3   /* config field mtu: the largest MTU to use (§5.1.4) */
#define VIRTIO_NET_F_MRG_RXBUF          15
#define VIRTIO_NET_F_MQ                 22
/* The offloads (offload.c, second reading): CSUM = the guest may send
 * partial checksums, HOST_TSO4/6 (+ECN) = TCP packets of up to 64 KiB for
 * us to cut; GUEST_CSUM, GUEST_TSO4/6 (+ECN) = the same towards the guest.
 * GUEST_ANNOUNCE: the guest announces itself after a migration. */
#define VIRTIO_NET_F_CSUM               0
#define VIRTIO_NET_F_GUEST_CSUM         1
#define VIRTIO_NET_F_GUEST_TSO4         7
#define VIRTIO_NET_F_GUEST_TSO6         8
#define VIRTIO_NET_F_GUEST_ECN          9
#define VIRTIO_NET_F_HOST_TSO4          11
#define VIRTIO_NET_F_HOST_TSO6          12
#define VIRTIO_NET_F_HOST_ECN           13
#define VIRTIO_NET_F_GUEST_ANNOUNCE     21
#define VIRTIO_RING_F_INDIRECT_DESC     28
#define VIRTIO_RING_F_EVENT_IDX         29
#define VHOST_USER_F_PROTOCOL_FEATURES  30
#define VIRTIO_F_VERSION_1              32
#define VIRTIO_F_RING_PACKED            34
#define VIRTIO_F_IN_ORDER               35  /* buffers used in the order they were made available (§2.7.9, §2.8.8) */
/* Not a virtio bit but vhost's (vhost-user.rst "Migration"): the backend
 * logs the pages it writes, so the guest can live-migrate (second reading). */
#define VHOST_F_LOG_ALL                 26

/* === Threads, atomics and counters ======================================= */

/*
 * The memory-model lesson, told once.  vhost-xdp's threads (the control
 * thread, the poll threads, the pcap writer) and the guest's CPUs share
 * memory with no lock anywhere.  Every shared access goes through GCC's
 * __atomic builtins, on plain types: they work on the guest's ring fields as
 * <linux/virtio_ring.h> declares them (plain __u16s we cannot make _Atomic),
 * so one vocabulary serves the rings, the hand-over flags and the counters.
 * The order each access asks for says what it publishes or waits for:
 *   __ATOMIC_RELAXED   nothing but the value itself, whole (no tearing);
 *   __ATOMIC_ACQUIRE   a load after which the other side's earlier writes
 *                      are visible (avail->idx, then the entries it covers);
 *   __ATOMIC_RELEASE   a store before which our writes are visible
 *                      (the bytes and used entries, then used->idx);
 *   __ATOMIC_SEQ_CST   also keeps a store and a later load in order, which
 *                      release/acquire do not: the ring hand-over (`ready`
 *                      and the poll threads' epochs) and every "publish,
 *                      then look at the other side's flag" of virtio's
 *                      notification suppression need exactly that.
 *
 * Counters.  Every counter (packets, bytes, drops, broken rings, the NIC's,
 * the capture's) has exactly one writer, the thread that owns its ring,
 * queue or file, and is read by the control thread for --stats and the exit
 * lines.  With one writer, an add is a relaxed load and a relaxed store: no
 * other thread's add can be lost, so no locked instruction is needed (on x86
 * each is a plain mov), and the reader, with its own relaxed load, never
 * sees half a value.  vx_counter_add() is that add, for every counter of
 * every file; a reader uses __atomic_load_n(&counter, __ATOMIC_RELAXED).
 */
#define vx_counter_add(counter, n) \
    __atomic_store_n(&(counter), __atomic_load_n(&(counter), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)

/* === Time and logging =================================================== */

/* Seconds on CLOCK_MONOTONIC: intervals and deadlines must not jump when
 * the wall clock does. */
static inline double vx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One line to stderr naming the object and the value; never exits. */
static inline void vx_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void vx_log(const char *fmt, ...)
{
    /* Formatted whole, then written once: stderr is unbuffered, and the
     * control and PMD threads must not interleave halves of their lines. */
    char line[1200] = "vhost-xdp: ";
    size_t n = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    n = strlen(line);
    line[n] = '\n';
    fwrite(line, 1, n + 1, stderr);
}

/* --trace levels: main.c parses them, vhost_user.c and virtqueue.c print. */
enum vx_trace_level {
    VX_TRACE_OFF,
    VX_TRACE_MESSAGES,              /* --trace: every vhost-user message */
    VX_TRACE_RINGS,                 /* --trace=rings: messages and ring events */
};
/* Set once by main.c before any thread starts (defined in virtqueue.c):
 * the PMD tests it with one predictable branch before logging a call. */
extern bool vx_trace_rings;

/* === 1. Guest memory ==================================================== */

/*
 * One region of VHOST_USER_SET_MEM_TABLE.  The frontend passes an fd for
 * each region; we mmap(fd, mmap_offset + memory_size) and the region's
 * first byte is at host = mmap_addr + mmap_offset.
 *
 * The same byte has three addresses:
 *   guest_phys_addr  what the guest driver writes into descriptors
 *   userspace_addr   where the frontend process (QEMU, virtio_user) has it,
 *                    used by VHOST_USER_SET_VRING_ADDR
 *   host             where *we* have it
 */
struct vx_mem_region {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
    void    *mmap_addr;     /* what mmap returned, for munmap */
    uint64_t mmap_size;
    uint8_t *host;          /* mmap_addr + mmap_offset */
};

struct vx_mem {
    uint32_t nregions;
    struct vx_mem_region regions[VX_MAX_REGIONS];
};

/*
 * The two translations.  Everything else calls these, so the bounds check
 * lives here and nowhere else.  A range [addr, addr+len) is accepted only if
 * it lies entirely inside one region; the arithmetic never adds addr + len
 * (a hostile len of 0xffffffff must not wrap around).
 */
static inline void *vx_translate(const struct vx_mem *mem, uint64_t addr, uint64_t len, bool guest_phys)
{
    for (uint32_t i = 0; i < mem->nregions; i++) {
        const struct vx_mem_region *r = &mem->regions[i];
        uint64_t start = guest_phys ? r->guest_phys_addr : r->userspace_addr;
        if (addr < start)
            continue;
        uint64_t off = addr - start;
        if (off >= r->memory_size || len > r->memory_size - off)
            continue;
        return r->host + off;
    }
    return NULL;
}

/* Guest-physical address (descriptors, indirect tables) -> our pointer. */
static inline void *vx_gpa_to_va(const struct vx_mem *mem, uint64_t gpa, uint64_t len)
{
    return vx_translate(mem, gpa, len, true);
}

/* Frontend virtual address (SET_VRING_ADDR) -> our pointer. */
static inline void *vx_uva_to_va(const struct vx_mem *mem, uint64_t uva, uint64_t len)
{
    return vx_translate(mem, uva, len, false);
}

/* === 2. One virtqueue =================================================== */

/* Live migration's dirty log (second reading: vhost_user.c maps it at
 * SET_LOG_BASE, virtqueue.c marks it): one bit per 4 KiB page of
 * guest-physical address, bit p % 8 of byte p / 8 for page p, shared with
 * the frontend, which copies the pages it finds marked to the destination. */
#define VX_LOG_PAGE 4096
struct vx_dirty_log {
    uint8_t *bits;                  /* NULL: no log mapped */
    uint64_t size;                  /* bytes of bitmap: pages 0 .. 8 * size - 1 */
    void    *mmap_addr;             /* what mmap returned, for munmap */
    uint64_t mmap_size;
};

/* Counters (vx_counter_add): written by the poll thread that owns the ring,
 * read by the control thread for --stats. */
struct vx_ring_stats {
    uint64_t packets;   /* packets moved (TX: taken from guest, RX: given to guest) */
    uint64_t bytes;     /* their bytes, without the virtio-net header */
    uint64_t drops;     /* packets lost here: no RX buffer, too big, peer not ready */
    uint64_t broken;    /* times the ring was found malformed and stopped */
    /* offload.c (second reading), on the ring the packet came from: */
    uint64_t tso;       /* TX: TSO packets (gso_type set) the guest sent */
    uint64_t segments;  /* TX: segments vhost-xdp cut them into (0 for one that crossed whole) */
    uint64_t csum_sw;   /* checksums vhost-xdp computed (TX: NEEDS_CSUM; RX: partial ones from the NIC) */
    uint64_t csum_nic;  /* TX: checksums left partial for the NIC port's kernel to complete */
    uint64_t partial;   /* RX: frames from the NIC holding a partial checksum (CHECKSUM_PARTIAL) */
    uint64_t bad_hdr;   /* TX: packets dropped for a header we refuse; RX: frames we could not fix */
};

/*
 * Who touches what: the control thread (vhost_user.c) owns every field while
 * `ready` is false.  While `ready` is true the ring belongs to one PMD thread,
 * and the control thread may only read `stats`.  Handing the ring over in
 * either direction is done in vhost_user.c (see "Taking rings away").
 */
struct vx_vring {
    uint32_t index;                 /* 2k = RX of pair k, 2k+1 = TX of pair k */

    /* Set by messages, while the ring is stopped. */
    uint16_t num;                   /* SET_VRING_NUM: ring size */
    /* Second reading, in what would be padding (the data path's fields keep
     * their offsets): */
    bool     base_from_frontend;    /* packed: the position came from SET_VRING_BASE (or is the
                                       default), not from our own use: vq_attach checks it
                                       against the ring (virtqueue.c, "Packed ring recovery") */
    bool     call_failed_logged;    /* a failed call write was logged for this start (vq_call) */
    uint64_t desc_user_addr;        /* SET_VRING_ADDR: frontend virtual addresses */
    uint64_t avail_user_addr;
    uint64_t used_user_addr;
    bool     addr_set;
    bool     kick_received;         /* SET_VRING_KICK seen since the last stop */
    bool     enabled;               /* SET_VRING_ENABLE */
    int      kick_fd, call_fd, err_fd;
    bool     attached;              /* vq_attach() done for the current settings */

    /* Filled in by vq_attach() when the ring starts.  A split ring (§2.7)
     * uses desc/avail/used; a packed ring (§2.8, VIRTIO_F_RING_PACKED) uses
     * the descriptor ring and the two event suppression areas that
     * SET_VRING_ADDR gives as "avail" (driver area) and "used" (device area). */
    const struct vx_mem *mem;
    bool     packed;
    struct vring_desc  *desc;
    struct vring_avail *avail;
    struct vring_used  *used;
    struct vring_packed_desc       *desc_packed;
    struct vring_packed_desc_event *driver_event;  /* guest -> us: when to interrupt it */
    struct vring_packed_desc_event *device_event;  /* us -> guest: when to kick us */
    uint32_t hdr_len;               /* virtio-net header: 12 or 10 bytes */
    bool     mrg_rxbuf, event_idx, indirect;
    bool     in_order;              /* VIRTIO_F_IN_ORDER: TX bursts give back one used entry (virtqueue.c) */
    uint64_t features;              /* what was negotiated: offload.c reads the offload bits */

    /* Data-plane state: the PMD's while ready.  Split: free-running u16
     * indices.  Packed: slots in 0..num-1 plus a wrap counter each (§2.8.1),
     * set by SET_VRING_BASE (bit 15) and reported by GET_VRING_BASE. */
    uint16_t last_avail_idx;        /* next avail entry (packed: slot) we will read */
    uint16_t last_used_idx;         /* our copy of used->idx (packed: next slot we write) */
    bool     avail_wrap_counter;    /* packed only */
    bool     used_wrap_counter;     /* packed only */
    bool     broken;                /* malformed: not touched until the frontend
                                       stops the ring (GET_VRING_BASE) or reconnects */
    struct vx_ring_stats stats;

    /* --trace=rings only, the PMD's: calls logged in the current second
     * (at most a few), and how many more were sent but not logged. */
    int64_t  trace_second;
    uint32_t trace_calls_shown, trace_calls_hidden;
    int64_t  trace_hdr_next_ms;     /* offload.c's header lines: the next one not before this */
    bool     bad_hdr_logged;        /* offload.c: the first refused header is logged, the rest counted */

    /* The handover flag (see vhost_user.c, "Taking rings away"). */
    bool ready;
    /* Interrupts not sent: the call eventfd refused the write (virtqueue.c,
     * vq_call), written by the PMD like `stats`.  32 bits, in the struct's
     * tail padding: a counter in `stats` made each ring 16 bytes longer,
     * and moved the fields the data path reads across cache lines. */
    uint32_t calls_dropped;
    /* Second reading, after the data path's fields (pmd_loop.c, "When there
     * is nothing to do"): in --pmd-mode adaptive the ring's poll thread
     * sleeps on kick_fd and reads it, so kick_fd, like call_fd, changes
     * only while the ring is stopped. */
    bool     kickless;              /* buffers came without a kick while kicks were on: always polled */
    uint64_t kicks;                 /* kicks the poll thread read (adaptive mode), for --trace=rings */
    /* Second reading ("Live migration: dirty-page logging", vhost_user.c
     * and virtqueue.c): the log to mark every guest page this ring writes,
     * NULL while not logging (the data path tests it once per burst); set,
     * like the rest, only while the ring is stopped.  SET_VRING_ADDR's
     * VHOST_VRING_F_LOG and log_guest_addr: the used ring's guest-physical
     * address, where its writes are logged. */
    const struct vx_dirty_log *log;
    bool     log_used;
    uint64_t log_guest_addr;
    uint64_t log_marks;             /* log bits this ring set (0 -> 1), the PMD's */
};

/* === 3. The device ====================================================== */

/* How a device meets its frontend (main.c's --socket, --client, --trace). */
struct vu_options {
    const char *socket_path;
    bool client;                    /* connect instead of listen */
    enum vx_trace_level trace;      /* decode messages (and ring events) on stderr */
    bool name_socket;               /* two devices: say which socket a disconnect was on */
};

/* One vhost-user device: one socket, one connection at a time, its own
 * memory table, rings and counters.  vhost-xdp serves one, or two whose
 * packets go to each other (two --socket: VM-to-VM, see pmd_loop.c). */
struct vx_dev {
    struct vu_options opt;          /* vu_init(): kept for reconnects and tracing */
    int      listen_fd;             /* server mode: the listening socket, else -1 */
    bool     waiting_logged;        /* client mode: "waiting for a frontend" said once */
    int      conn_fd;               /* the vhost-user connection, -1 if none */
    bool     owner_set;             /* SET_OWNER */
    uint64_t features;              /* SET_FEATURES */
    uint64_t protocol_features;     /* SET_PROTOCOL_FEATURES */
    uint32_t queue_pairs;           /* --queues: what GET_QUEUE_NUM answers */
    uint32_t mtu_max;               /* --mtu: the largest NET_SET_MTU we accept */
    bool     no_offloads;           /* --no-offloads: GET_FEATURES offers no checksum/TSO bit */
    uint8_t  status;                /* SET_STATUS: the virtio device status byte (§2.1), kept for GET_STATUS */
    /* NET_SET_MTU: the guest's MTU (0: never set).  Atomic: the control
     * thread may set it while the PMDs read it, once per burst, to drop
     * frames to the guest above it (pmd_loop.c, pmd_mtu_filter). */
    uint32_t mtu;
    /* SEND_RARP, handed from the control thread to the PMD that polls queue
     * pair 0 in one atomic word: bits 0-47 the MAC (the payload's first 6
     * bytes, in wire order), bit 63 "a frame is waiting".  The PMD takes it
     * with an exchange, so a second SEND_RARP before the first is sent just
     * replaces the MAC, and no byte is ever read half written. */
    uint64_t rarp_request;  /* 0: nothing to send */
    struct vx_mem mem;
    struct vx_dirty_log log;        /* SET_LOG_BASE (second reading, "Live migration") */
    struct vx_vring vrings[VX_MAX_VRINGS];
    /* A poll thread found this device's guest memory gone (SIGBUS: the
     * frontend truncated a region's file): the faulting address, for the
     * control thread to reset the connection (vhost_user.c); 0: none. */
    uintptr_t mem_fault;
    /* The connection's unfinished business, kept between two wake-ups of the
     * control loop so that no read or write ever waits on the frontend
     * (vhost_user.c, "What no frontend may do to us", rule 1): a message read
     * in part, with the fds that came with its first bytes, and a reply sent
     * in part.  `in` holds a header and the largest payload we accept. */
    struct vu_io {
        uint8_t  in[12 + 264];
        uint32_t in_len;            /* bytes of the message read so far */
        int      in_fds[8], in_nfds;
        double   in_since;          /* when its first byte came (vx_now) */
        uint8_t  out[20];           /* one reply: header and an 8-byte payload */
        uint32_t out_len, out_sent;
        double   out_since;         /* when it was queued */
    } io;
};

#define VX_RARP_PENDING (1ull << 63)   /* in vx_dev.rarp_request */
#define VX_MTU_MIN      68             /* virtio 1.2 §5.1.4.1: mtu at least 68 (IPv4's minimum) */

/* The virtio-net header (virtio 1.2 §5.1.6, struct virtio_net_hdr) without
 * num_buffers, which only the RX ring's writer knows.  All zero for a plain
 * packet; offload.c reads and writes the rest.  Little-endian, as the ring. */
struct vx_net_hdr {
    uint8_t  flags;                 /* VIRTIO_NET_HDR_F_NEEDS_CSUM 1, DATA_VALID 2 */
    uint8_t  gso_type;              /* NONE 0, TCPV4 1, UDP 3, TCPV6 4, | ECN 0x80 */
    uint16_t hdr_len;               /* headers' length, a hint (§5.1.6.2.2) */
    uint16_t gso_size;              /* payload bytes per segment (the MSS) */
    uint16_t csum_start;            /* NEEDS_CSUM: checksum from here to the end ... */
    uint16_t csum_offset;           /* ... stored at csum_start + csum_offset */
};

/* A packet between the two ports.  `data` is a buffer of `room` bytes: a
 * private buffer in loopback, a UMEM frame on the AF_XDP port, so that each
 * direction copies once, straight between guest memory and that buffer.
 * `hdr` travels with it: guest TX copies it out of the chain, guest RX
 * writes it in front of the frame. */
struct vx_pkt {
    uint32_t len;
    uint32_t room;
    uint8_t *data;
    struct vx_net_hdr hdr;
    uint16_t bufs;                  /* guest TX: buffers its chain had (--trace shows it) */
};

/* === 4. The API, file by file =========================================== */

/* virtqueue.c: the guest side of the data plane (virtio 1.2 §2.7 split, §2.8 packed). */
int  vq_attach(struct vx_vring *vr, const struct vx_mem *mem, uint64_t features);
int  vq_dequeue_burst(struct vx_vring *vr, struct vx_pkt *pkts, int n);
/* The same, lending frames that lie in one guest buffer (data points into guest memory) to
 * deliver(), called once with the burst before the chains go back to the guest. */
typedef void vq_deliver_fn(void *ctx, struct vx_pkt *pkts, int n);
int  vq_dequeue_burst_lend(struct vx_vring *vr, struct vx_pkt *pkts, int n, vq_deliver_fn *deliver, void *ctx);
int  vq_enqueue_burst(struct vx_vring *vr, struct vx_pkt *pkts, int n);  /* delivered ones first */
int  vq_avail_buffers(struct vx_vring *vr);   /* RX buffers the guest offers now */
void vq_mark_broken(struct vx_vring *vr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* nic_afxdp.c: the NIC port through an AF_XDP socket. */
enum nic_xdp_mode { NIC_XDP_AUTO, NIC_XDP_NATIVE, NIC_XDP_SKB };
struct nic_options {
    const char *ifname;
    uint32_t queue;                 /* first NIC queue id (--queue Q or Q-R) */
    uint32_t nqueues;               /* NIC queues Q..Q+nqueues-1, one socket each (0 = 1) */
    enum nic_xdp_mode mode;         /* auto = native, else generic (skb) */
    bool zerocopy;
    uint32_t frame_size;            /* UMEM frame size, default 4096 */
    uint32_t frame_count;           /* UMEM frames, default 4096 */
};
struct nic_stats {                  /* relaxed stores by the PMD, read by main.c */
    uint64_t rx_packets, rx_bytes, tx_packets, tx_bytes;
    uint64_t rx_fill_empty, tx_ring_full, invalid_descs;
};
struct nic_port;
int  nic_open(struct nic_port **ports, const struct nic_options *opt);     /* ports[nqueues] */
const struct nic_stats *nic_stats(const struct nic_port *p);
const char *nic_mode_name(const struct nic_port *p);
uint32_t nic_queue(const struct nic_port *p);
int  nic_rx_burst(struct nic_port *p, struct vx_pkt *pkts, int n);          /* pkts point into UMEM */
void nic_rx_release(struct nic_port *p, const struct vx_pkt *pkts, int n);  /* frames back to the fill ring */
int  nic_tx_alloc(struct nic_port *p, struct vx_pkt *pkts, int n);          /* free frames to fill */
/* ... each with its len and hdr set (hdr.flags NEEDS_CSUM: the kernel completes that checksum, on
 * a port where nic_tx_csum() says it can; offload.c leaves it so only there). */
void nic_tx_submit(struct nic_port *p, struct vx_pkt *pkts, int nfilled, int nalloc);
void nic_close(struct nic_port *p);         /* ports[0] first: it holds the XDP program */

/* pmd_loop.c: the poll-mode threads. */
/* devs[0..ndevs-1]: one device, or two that are each other's port (VM-to-VM).
 * nic NULL with one device: loopback.  sleep_max_us (--pmd-sleep): idle
 * back-off, 0 = always poll; adaptive (--pmd-mode adaptive): sleep until a
 * kick when idle. */
int  pmd_start(struct vx_dev *devs, int ndevs, struct nic_port **nics, int nnics, const int *cpus, int ncpus,
               uint32_t sleep_max_us, bool adaptive);
bool pmd_quiesce(void);     /* return once no PMD is inside a ring it read as ready; false only
                               when shutting down with a PMD that did not finish in time */
int  pmd_stop(void);        /* the threads that did not stop in time (left to the exit) */
void pmd_watchdog(void);    /* the control loop, every wake-up: a PMD stuck in a system call is interrupted */

/* vhost_user.c: the control plane, run by main.c's thread. */
int  vu_init(struct vx_dev *dev, const struct vu_options *opt);
int  vu_poll_fd(struct vx_dev *dev);       /* fd main.c polls: listen or connection (-1 = retry later) */
short vu_poll_events(const struct vx_dev *dev);    /* ... for POLLIN, or POLLOUT while a reply waits */
double vu_deadline(const struct vx_dev *dev);      /* when to call vu_handle_event anyway (0: no need) */
void vu_handle_event(struct vx_dev *dev);  /* called when that fd is ready, at the deadline, or every second */
void vu_cleanup(struct vx_dev *dev);

/* === Second reading: the offloads, pcap, guest memory faults, the ring view === */

/* Each of these is called from one place in the first reading, or from a
 * second-reading part of a file: read them with the second reading. */

/* virtqueue.c, second reading: the ring view, and the dequeue for TSO packets. */
/* --ring-view and SIGUSR1: a picture of an attached ring, read-only, safe
 * from the control thread while the PMD runs; the legend once per print. */
void vq_ring_view(const struct vx_vring *vr, FILE *out);
void vq_ring_view_legend(FILE *out);
/* As vq_dequeue_burst, for a port whose buffers are smaller than a TSO
 * packet (UMEM frames): a packet longer than its pkts[k].room, or one with
 * a gso_type, goes into *big instead (up to big->room) and ends the burst;
 * big->len stays 0 when none did.  offload.c cuts it into segments. */
int  vq_dequeue_burst_big(struct vx_vring *vr, struct vx_pkt *pkts, int n, struct vx_pkt *big);

/* nic_afxdp.c, second reading: does the kernel complete this port's TX checksums
 * (AF_XDP TX metadata, "TX checksums by the kernel")? */
bool nic_tx_csum(const struct nic_port *p);
/* ... and what a poll thread that sleeps needs from a port ("Interrupt mode"):
 * the socket to poll() for RX frames, and whether TX descriptors still wait
 * for the kernel (then the thread must not sleep). */
int  nic_poll_fd(const struct nic_port *p);
bool nic_tx_pending(struct nic_port *p);

/* virtqueue.c, second reading ("Interrupt mode"): the guest's kicks on before
 * a poll thread sleeps (true: the guest published meanwhile, do not sleep)
 * and off after. */
bool vq_notify_enable(struct vx_vring *vr);
void vq_notify_disable(struct vx_vring *vr);

/* virtqueue.c, second reading ("Live migration: dirty-page logging"): mark
 * the pages of a ring's flag areas (used->flags, avail_event, the packed
 * device event area) after the control thread wrote them (vq_attach). */
void vq_log_flag_areas(struct vx_vring *vr);

/* pmd_loop.c, second reading ("When there is nothing to do"): wake every
 * thread asleep in --pmd-mode adaptive (rings changed, a RARP to send); are
 * the kick fds the poll threads' (then main.c's --trace=rings leaves them
 * alone); the per-thread sleep counters, for --stats and the exit lines. */
void pmd_wake_sleepers(void);
bool pmd_kicks_owned(void);
void pmd_print_idle(const char *what, double now);

/* offload.c (second reading): checksums and TCP segmentation, one call per
 * direction from pmd_loop.c.  ofl_to_nic completes the checksums of a burst
 * for the NIC and cuts a TSO packet (big, from vq_dequeue_burst_big) into
 * segments, over as many polls as free frames allow (struct ofl_cut);
 * ofl_to_guest does what the receiving guest did not negotiate and hands
 * the result to send(); ofl_from_nic fixes what a NIC's frames need and
 * writes their headers. */
#define OFL_MAX_HDRS 256            /* a TSO packet's headers, at most (Ethernet to TCP options) */
struct ofl_cut {                    /* a TSO packet being cut: one per NIC queue, or on the stack */
    struct vx_pkt big;              /* the packet (big.len 0: none); only read, it may be lent */
    uint8_t  hdrs[OFL_MAX_HDRS];    /* its headers, read once: each segment starts from them */
    uint32_t l3, l4, payload;       /* offsets of the IP header, the TCP header, the payload */
    uint32_t mss, nsegs;            /* gso_size, and segments in all (0: not started) */
    uint32_t next, index;           /* payload bytes and segments already cut */
    bool     ipv6;
    bool     out_partial;           /* for a guest with GUEST_CSUM: NEEDS_CSUM, not a full checksum */
    bool     nic_csum;              /* the NIC port completes NEEDS_CSUM itself (nic_tx_csum) */
};
typedef void ofl_send_fn(void *ctx, struct vx_pkt *pkts, int n);
int  ofl_to_nic(struct ofl_cut *cut, struct vx_vring *tx, struct vx_pkt *frames, int filled, int nframes);
void ofl_to_guest(struct vx_vring *tx, const struct vx_vring *rx, struct vx_pkt *pkts, int n,
                  struct vx_pkt *scratch, ofl_send_fn *send, void *ctx);
void ofl_from_nic(struct vx_vring *rx, struct vx_pkt *pkts, int n);
/* The pieces, for the unit tests and the fuzz target. */
uint16_t ofl_checksum(const void *data, size_t len);   /* RFC 1071, ready to store */
int  ofl_complete_csum(struct vx_pkt *p);               /* NEEDS_CSUM done in p->data; -1: offsets outside */
int  ofl_cut_start(struct ofl_cut *cut, const struct vx_vring *tx, uint32_t room, const char **why);
int  ofl_cut_next(struct ofl_cut *cut, struct vx_pkt *out, int n);

/* pcap.c: --pcap FILE, every forwarded packet in a pcap file (LINKTYPE_LINUX_SLL).
 * main.c opens it before anything starts and closes it after the PMDs stop;
 * each PMD thread gets its own ring (NULL: no capture) and hands it its bursts. */
enum pcap_dir {                     /* the SLL packet type: how tcpdump marks the packet */
    PCAP_TO_GUEST = 0,              /* PACKET_HOST, "In": given to the guest (its RX ring) */
    PCAP_FROM_GUEST = 4,            /* PACKET_OUTGOING, "Out": the guest sent it (its TX ring) */
};
struct pcap_ring;
int64_t pcap_parse_size(const char *s);                 /* "64M" -> bytes; -1 if not a size */
int  pcap_open(const char *path, uint64_t limit);       /* create FILE, write its header */
struct pcap_ring *pcap_ring_new(int pmd_id);            /* NULL when not capturing */
int  pcap_start(void);                                  /* the writer thread, "vx-pcap" */
void pcap_burst(struct pcap_ring *r, enum pcap_dir dir, const struct vx_pkt *pkts, int n);
bool pcap_enabled(void);
void pcap_counts(uint64_t *captured, uint64_t *not_captured, uint64_t *after_limit);
void pcap_close(void);                                  /* drain, flush, close, log totals */

/* fault.c: a SIGBUS in guest memory (the frontend truncated the file behind
 * a region) caught in the thread that touched it, never a crash.  A thread
 * arms a guard (sigsetjmp(env, 0) in a frame that stays live) and publishes
 * it; the handler jumps back there with the faulting address. */
struct vx_guard {
    sigjmp_buf env;
    void *volatile addr;            /* the address that faulted */
};
int  vx_fault_init(void);                                   /* the SIGBUS handler, once, before any thread */
void vx_guard_set(struct vx_guard *g);                      /* this thread's guard; NULL: none */
void vx_fault_caught(void);                                 /* after the jump: SIGBUS unblocked again */
#define VX_FAULTED (-2)                                     /* what vx_guarded() returns after a fault */
int  vx_guarded(int (*fn)(void *), void *arg, void **addr); /* fn(arg) with faults caught */
int  vx_mem_region_of(const struct vx_mem *mem, const void *addr);  /* region mapping addr, or -1 */
bool vx_fault_log(const char *device, const char *who, const struct vx_mem *mem, const void *addr);

/* pmd_loop.c, second reading: NET_SET_MTU's rule for frames to a guest
 * (moves the frames within dev's MTU to the front, counts the rest as
 * drops on rx); switch.c applies it too. */
int  pmd_mtu_filter(struct vx_dev *dev, struct vx_vring *rx, struct vx_pkt *pkts, int n);
int  pmd_rarp_take(struct vx_dev *dev, const struct vx_vring *tx, struct vx_pkt *pkt);  /* SEND_RARP's frame, once */

/* switch.c (second reading): the L2 learning switch of many ports (three
 * or more --socket, or sockets and an --iface uplink, or --switch).  Lane
 * k = queue pair k of every device and NIC queue k, all polled by one
 * thread: sw_lane() is pmd_loop.c's one call, sw_tick() and the printers
 * main.c's. */
int  sw_start(struct vx_dev *devs, int ndevs, const char *ifname, struct nic_port **nics, int nnics,
              uint32_t mac_age);                        /* before pmd_start */
bool sw_running(void);
int  sw_lane(int k, struct pcap_ring *pcap);            /* one burst from every port of lane k */
void sw_fault_recover(int k);                           /* after a guest memory fault in lane k */
void sw_log_lanes(int nthreads);                        /* which thread polls what */
void sw_tick(double now);                               /* the clock and the ageing sweep */
void sw_print_fdb(FILE *out);                           /* SIGUSR1, --fdb-view: like ovs-appctl fdb/show */
void sw_print_stats(const char *what);                  /* --stats and exit lines per port */
void sw_stop(void);                                     /* after pmd_stop */

#endif
