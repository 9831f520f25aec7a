/*
 * tests/frontend.h - a vhost-user front-end and a split-ring guest driver,
 * written from the spec, shared by the C tests that drive vhost-xdp:
 *
 *   test_protocol.c  the handshake as QEMU 7.2 sends it, 10,000 frames
 *                    checked byte for byte, fd count after each connection;
 *   test_hostile.c   malformed messages, a malicious guest, and 100
 *                    disconnect/reconnect cycles.
 *
 * frontend.c implements it, in this order: TAP output and time; the back-end
 * process and its log; guest memory (memfd regions with canaries and guard
 * pages); one split ring, driver side; the frames we send; one connection:
 * messages, the QEMU and DPDK handshakes, ring restart, traffic.
 *
 * Nothing here includes vhost_xdp.h: the front-end knows the protocol only
 * from the spec (QEMU docs/interop/vhost-user.rst) and the virtio UAPI headers.
 *
 * Environment:
 *   VX_BACKEND_CMD      a shell command to run instead of vhost-xdp (a stand-in
 *                       back-end such as DPDK's net_vhost); {sock} = socket path
 *   VX_BACKEND_WRAPPER  words put before the vhost-xdp command line, split at
 *                       spaces (e.g. "valgrind --leak-check=full"); the back-end
 *                       is still vhost-xdp, so every check applies
 *   VX_TIME_SCALE       multiply every timeout by this (valgrind: 20 or more)
 *   VX_SHOW_LOG         print the back-end's last log lines even on success
 */
#ifndef VX_TESTS_FRONTEND_H
#define VX_TESTS_FRONTEND_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/virtio_ring.h>

/* === Parameters ========================================================= */

#define RING_SIZE       256
#define MAX_IN_FLIGHT   64          /* frames sent on TX and not yet back on RX */
#define MIN_FRAME       60
#define MAX_FRAME       1514
#define HDR_LEN         12          /* VERSION_1: struct virtio_net_hdr_mrg_rxbuf */
#define SLOT            4096        /* buffer bytes per descriptor head */
#define MAX_SEGS        4           /* descriptors per chain (or indirect table) */
#define REGION_SIZE     (8u << 20)  /* the usual size of region 0 */
#define MAX_PAIRS       2           /* queue pairs a connection drives */
#define FE_MAX_MEM      2           /* memfd regions a connection makes */
#define REPLY_TIMEOUT_MS 5000
#define STALL_SECONDS   5.0         /* no progress at all for this long: fail */
#define TRAFFIC_SECONDS 20.0        /* one call of traffic(): fail after this */

/*
 * Where pair p's rings and buffers live in region 0 (offsets from its start).
 * Pair 0: RX rings at 0x0000/0x1000/0x2000 (desc/avail/used), TX rings at
 * 0x4000/0x5000/0x6000, indirect tables at 0x10000 (RX) and 0x20000 (TX),
 * RX buffers at 1 MiB, TX buffers in the region's last MiB (they end exactly
 * at the region end).  Pair 1: rings and tables 0x8000 further, RX buffers at
 * 2 MiB, TX buffers at 3 MiB.  Region 0 must be at least 5 MiB.
 */
#define RING_AREA(p, tx)     (0x8000u * (p) + ((tx) ? 0x4000u : 0))
#define INDIRECT_AREA(p, tx) (((tx) ? 0x20000u : 0x10000u) + 0x8000u * (p))

/* === The protocol, from docs/interop/vhost-user.rst ===================== */

enum vhost_user_request {
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_SEND_RARP = 19,      /* tests/test_mtu_rarp.c, tests/test_switch.c */
    VHOST_USER_SET_STATUS = 39,
    VHOST_USER_GET_STATUS = 40,
};

#define VHOST_USER_VERSION          0x1
#define VHOST_USER_REPLY_MASK       0x4
#define VHOST_USER_NEED_REPLY_MASK  0x8
#define VHOST_USER_VRING_NOFD       (1u << 8)   /* SET_VRING_KICK/CALL/ERR: no fd, poll */

#define VHOST_USER_F_PROTOCOL_FEATURES  30
#define VHOST_USER_PROTOCOL_F_MQ        0
#define VHOST_USER_PROTOCOL_F_LOG_SHMFD 1   /* live migration: SET_LOG_BASE carries the log's fd */
#define VHOST_USER_PROTOCOL_F_RARP      2   /* SEND_RARP */
#define VHOST_F_LOG_ALL                 26  /* live migration: the back-end logs what it writes */
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_STATUS    16

/* The header: three host-order u32; the payload follows it directly. */
struct vu_header {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
};

struct vu_vring_state { uint32_t index, num; };

struct vu_vring_addr {
    uint32_t index, flags;
    uint64_t desc_user_addr, used_user_addr, avail_user_addr, log_guest_addr;
};

struct vu_memory_region {
    uint64_t guest_phys_addr, memory_size, userspace_addr, mmap_offset;
};

struct vu_memory {
    uint32_t nregions, padding;
    struct vu_memory_region regions[8];
};

#define BIT(n) (1ull << (n))

const char *request_name(uint32_t req);

/* === TAP and time ======================================================= */

extern int tap_n, tap_failed;
extern double time_scale;           /* VX_TIME_SCALE, default 1 */

void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void skip(const char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
double now(void);
void sleep_ms(int ms);

/* === The back-end process =============================================== */

extern pid_t backend_pid;           /* also its process group */
extern bool backend_real;           /* our vhost-xdp (maybe under a wrapper), not VX_BACKEND_CMD */
extern char sock_path[108], log_path[108];
extern char sock_path2[108];        /* for a second device: VM-to-VM back-ends */

/* A private temporary directory for the socket and the log, cleanup at exit
 * and on fatal signals, and an alarm after alarm_seconds * VX_TIME_SCALE.
 * Returns false (after a TAP failure) if the directory cannot be made. */
bool fe_setup(const char *test_name, double alarm_seconds);
/* Start `binary --socket PATH --loopback [extra_args...]` (or the stand-in),
 * stdout and stderr into log_path. */
bool start_backend(const char *binary, const char *const *extra_args);
/* The same with the whole command line after the binary (no --socket or
 * --loopback added): `binary args...`; the log is appended to. */
bool start_backend_argv(const char *binary, const char *const *args);
bool wait_for_socket(double seconds);
bool backend_alive(void);           /* reaps it and says so if it died */
void kill_backend(void);
void print_backend_log(int max_lines);
/* SIGTERM (or stdin EOF for a stand-in); TAP: exit status 0 and socket gone. */
void stop_backend(void);
/* SIGTERM, and how long the back-end took to exit (*seconds) with its wait
 * status; false (and SIGKILL) if it was still running after 5 s. No TAP. */
bool stop_backend_within(double *seconds, int *status);
/* The opening the protocol tests share: fe_setup(), start_backend(), then a
 * TAP check that the socket appears within 20 s.  On false it has printed the
 * back-end's log and the TAP plan: main() returns 1. */
bool fe_start(const char *test_name, double alarm_seconds, const char *binary, const char *const *extra_args);
/* The closing: the back-end's log if a check failed (or VX_SHOW_LOG is set),
 * the run time since fe_setup(), the TAP plan; returns main()'s exit status. */
int fe_finish(void);

int count_fds(pid_t pid, char *list, size_t list_len);  /* /proc/PID/fd; -1 if gone */
long rss_kib(pid_t pid);                                 /* /proc/PID/status VmRSS */

/* The log only grows: remember log_size() before an action, then look for a
 * complete line written after it that contains `needle` (and `also`, if not
 * NULL), waiting up to `seconds`.  The line is copied to `line`. */
long log_size(void);
bool log_find(long from, const char *needle, const char *also, double seconds, char *line, size_t len);
int log_count(long from, const char *needle);   /* complete lines after `from` containing it */
/* Call fn on every complete line written after `from` until it returns true. */
bool log_scan(long from, bool (*fn)(const char *line, void *arg), void *arg);

/* === Guest memory ======================================================= */

/*
 * One memfd region, mapped shared.  The file is mmap_offset + size + tail
 * bytes; the region handed to the back-end is [mmap_offset, mmap_offset +
 * size) of it, so the bytes before and after belong to the file but not to
 * guest memory: they hold a canary pattern the back-end must never change.
 * Our own mapping of the file sits between two PROT_NONE guard pages.
 * The region's three addresses:
 *   gpa              guest-physical, chosen, used in descriptors;
 *   base             where *we* have it mapped, used in SET_VRING_ADDR;
 *   mmap_offset      where the region starts in the fd.
 */
struct guest_mem {
    int fd;
    uint8_t *reserve;               /* guard page, file mapping, guard page */
    size_t reserve_len;
    uint8_t *map;                   /* the whole file */
    size_t map_len;
    uint8_t *base;                  /* region start in our address space */
    uint64_t gpa, size, mmap_offset;
};

bool mem_create(struct guest_mem *m, uint64_t gpa, uint64_t size, uint64_t mmap_offset, uint64_t tail);
/* Are the canaries before and after the region intact?  If not, says where. */
bool mem_canary_intact(const struct guest_mem *m, char *where, size_t len);
void mem_destroy(struct guest_mem *m);
uint64_t gpa_of(const struct guest_mem *m, const void *p);
uint64_t uva_of(const void *p);

/* === One split virtqueue, driver side (virtio 1.2 §2.7) ================= */

struct seg { uint32_t off, len; };  /* a piece of the head's SLOT-sized buffer */

struct chain {
    bool outstanding;               /* published, not yet returned in used */
    uint8_t ndesc;                  /* ring descriptors it holds */
    uint8_t nseg;
    uint16_t desc_ids[MAX_SEGS];
    struct seg seg[MAX_SEGS];
    uint32_t cap;                   /* sum of seg lengths */
};

struct ring {
    char name[8];                   /* "RX", "TX" (pair 0), "RX1", "TX1" */
    uint32_t index;                 /* vring 2p = RX of pair p, 2p+1 = TX */
    uint16_t num;
    struct guest_mem *mem;          /* region 0: rings, tables and buffers */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    struct vring_desc *indirect;    /* MAX_SEGS entries per head */
    uint8_t *bufs;                  /* SLOT bytes per head */

    uint16_t free_ids[RING_SIZE];
    int nfree;
    int outstanding;                /* chains */
    struct chain chains[RING_SIZE];

    uint16_t base;                  /* SET_VRING_BASE */
    uint16_t avail_idx;             /* next avail->idx we will publish */
    uint16_t published_idx;         /* avail->idx as the back-end can see it */
    uint16_t last_used_idx;         /* next used entry we will read */
    uint32_t published;             /* avail entries published since the start */
    uint32_t consumed;              /* used entries read since the start */
    uint32_t post_count;            /* chains posted (picks layouts) */

    int kick_fd, call_fd, err_fd;
    uint64_t kicks, calls;
};

/* Lay the ring out in region 0 as RING_AREA says, empty, at index `base`. */
void ring_init(struct ring *r, uint32_t index, struct guest_mem *m, uint16_t base);
int ring_take(struct ring *r, int n, uint16_t *ids);
uint8_t *slot_of(struct ring *r, int head);
void ring_add(struct ring *r, const uint16_t *ids, int ndesc, const struct seg *segs, int nseg,
              bool device_writes, bool indirect);
void ring_free(struct ring *r, uint16_t head);
void ring_flush(struct ring *r, bool event_idx);
/* A frontend that never kicks (tests/test_adaptive.c only; default false):
 * ring_flush and pring_notify publish as usual but never write a kick fd. */
extern bool fe_no_kick;
uint16_t *used_event(struct ring *r);
uint16_t *avail_event(struct ring *r);

/* === One connection ====================================================== */

enum fe_style {
    STYLE_QEMU,     /* QEMU 7.2 (labs/traces/qemu-7.2.trace) */
    STYLE_DPDK,     /* DPDK 22.11 virtio_user (labs/traces/dpdk-22.11.trace) */
};

struct fe_opts {
    enum fe_style style;
    bool mrg_rxbuf;                 /* ack MRG_RXBUF if offered */
    int npairs;                     /* 1, or 2 (needs MQ) */
    uint16_t base;                  /* SET_VRING_BASE of every ring */
    int nmem;                       /* regions; 0 = one REGION_SIZE region at gpa 1 GiB */
    struct { uint64_t gpa, size, mmap_offset, tail; } mem[FE_MAX_MEM];
    bool status;                    /* ack PROTOCOL_F_STATUS if offered; STYLE_QEMU then
                                       reads and sets the device status as QEMU 7.2 does */
    uint64_t more_features;         /* more bits to ack if offered (offloads: tests/exercise_probe.c) */
    uint64_t fewer_features;        /* bits not to ack even if offered (EVENT_IDX off: tests/test_adaptive.c) */
    bool resume;                    /* STYLE_DPDK: a session resumed, as virtio_user reconnects
                                       (server=1) to a backend started again: SET_VRING_ENABLE 0
                                       and GET_VRING_BASE for every ring, and no SET_OWNER */
};

/* One queue pair's traffic: the frames are numbered per pair. */
struct pair {
    struct ring rx, tx;
    uint32_t salt;                  /* makes the frames unique to the pair */
    uint32_t sent, received;
    int32_t partial_at;             /* used index where a partial packet was seen */
};

struct conn {
    char tag[48];                   /* "mrg conn 1" */
    bool tap;                       /* handshake steps print TAP lines; else only c->err */
    enum fe_style style;
    int sock;
    int nmem;
    struct guest_mem mem[FE_MAX_MEM];
    int npairs;
    struct pair qp[MAX_PAIRS];
    uint64_t offered, features, protocol_offered, protocol, queue_num;
    bool mrg, event_idx, indirect, reply_ack;
    uint8_t status;                 /* the device status we set last (PROTOCOL_F_STATUS) */
    char err[400];                  /* first failure, for the TAP line */

    uint64_t hdr_bad, mrg_not_full, mrg_partial, multi_buffer, tx_len_nonzero;
    uint64_t tx_layouts[5];         /* 1..4 descriptors, indirect */
    uint64_t rx_layouts_indirect;
    char hdr_bad_first[200], mrg_not_full_first[200], tx_len_first[120];
};

bool fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same, for functions that count: -1 means "stop, c->err says why". */
#define fail_int(...) (fail(__VA_ARGS__) ? 0 : -1)

/* calloc'ed, fds -1; conn_free closes everything. */
struct conn *conn_new(const char *tag, bool tap);
void rx_release(struct conn *c, struct pair *q, uint16_t id);   /* an RX chain read: back to the ring */
bool conn_connect(struct conn *c);
bool conn_connect_to(struct conn *c, const char *path);     /* conn_connect: to sock_path */
void conn_close(struct conn *c);    /* socket, eventfds, guest memory */
void conn_free(struct conn *c);

/* --- messages --- */
bool send_raw(int sock, const void *buf, size_t len, const int *fds, int nfds);
bool vu_send(struct conn *c, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
             const int *fds, int nfds);
bool vu_reply(struct conn *c, uint32_t req, void *payload, uint32_t size);
bool vu_get_u64(struct conn *c, uint32_t req, uint64_t *out);
bool vu_set_u64(struct conn *c, uint32_t req, uint64_t v);
bool vu_set_state(struct conn *c, uint32_t req, uint32_t index, uint32_t num);
bool vu_set_fd(struct conn *c, uint32_t req, uint32_t index, int fd);
/* QEMU 7.2's vhost_user_add_status: GET_STATUS (must be what we set last),
 * then SET_STATUS with `bits` added.  Does nothing without PROTOCOL_F_STATUS. */
bool add_status(struct conn *c, uint8_t bits);

/* --- the whole start, in o->style's order; creates the guest memory --- */
bool handshake(struct conn *c, const struct fe_opts *o);
/* The feature bits we ack, from what was offered. */
uint64_t fe_wanted_features(bool mrg_rxbuf, int npairs);

/* Stop one ring (DPDK style: SET_VRING_ENABLE 0 first), returning its base;
 * restart it with fresh, empty rings at `base` (an RX ring refilled with
 * buffers if fill_rx): SET_VRING_NUM, BASE, ADDR, KICK, ENABLE. */
bool ring_stop(struct conn *c, struct ring *r, uint16_t *base);
bool ring_restart(struct conn *c, struct ring *r, uint16_t base, bool fill_rx);

/* --- the data path: guest driver --- */
bool tx_post(struct conn *c, struct pair *q, uint32_t seq);
bool rx_post(struct conn *c, struct pair *q);
int tx_reap(struct conn *c, struct pair *q);
int rx_reap(struct conn *c, struct pair *q);
/* Send on q's TX until q->received reaches npackets and every TX chain is
 * back; every frame must come back on q's RX in order, byte for byte. */
bool traffic(struct conn *c, struct pair *q, uint32_t npackets);
/* The same between two connections (two devices of a VM-to-VM back-end):
 * a's pair qa sends until qa->sent reaches npackets, b's pair qb must
 * receive each frame, in order, byte for byte.  Failures in a->err. */
bool traffic_between(struct conn *a, struct pair *qa, struct conn *b, struct pair *qb, uint32_t npackets);
/* One frame at a time, for tests that craft their own (MRG_RXBUF off):
 * frame_add puts it on q's TX ring (one descriptor: zero header, then the
 * frame) and frame_send also publishes it (avail->idx: several frame_add
 * then one ring_flush make one burst); tx_wait_done waits until every TX
 * descriptor is back;
 * frame_recv takes the next frame from q's RX ring into out (at most cap
 * bytes, header dropped), gives the buffer back and returns its length, or
 * -1 (c->err says why). */
bool frame_add(struct conn *c, struct pair *q, const uint8_t *frame, uint32_t len);
bool frame_send(struct conn *c, struct pair *q, const uint8_t *frame, uint32_t len);
bool tx_wait_done(struct conn *c, struct pair *q);
int frame_recv(struct conn *c, struct pair *q, uint8_t *out, uint32_t cap);

/* === Packed rings, driver side (virtio 1.2 §2.8) ======================== */

/*
 * One queue pair of 8-slot packed rings, driven by hand (test_protocol.c's
 * base case, test_hostile.c's crash case): no MRG_RXBUF, EVENT_IDX or
 * INDIRECT_DESC, one buffer id per chain (the chain's first slot), frames
 * checked byte for byte.  The rings live where RING_AREA says for pair 0
 * (descriptors, then the driver event area at +0x1000 and the device event
 * area at +0x2000), their buffers at 1 MiB (RX) and 2 MiB (TX) of region 0.
 */
#define PACKED_NUM       8
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

void packed_advance(uint16_t *slot, bool *wrap, uint32_t n);
/* Lay a ring out, every slot as a driver that reached `base` (slot | wrap
 * << 15) would have left it: used in this lap before the slot, in the last
 * lap after it. */
void pring_init(struct pring *r, const char *name, uint32_t index, struct guest_mem *m, uint32_t base);
bool pring_add(struct pring *r, const struct seg *segs, int nseg, bool device_writes);
void pring_notify(struct pring *r);
/* The used descriptor at our used cursor: 1 (id, len, cursor moved past the
 * chain), 0 if none yet, -1 (c->err) if it names another chain. */
int  pring_used(struct conn *c, struct pring *r, uint16_t *id, uint32_t *len);
bool pring_start(struct conn *c, struct pring *r, uint32_t base);     /* SET_VRING_NUM/BASE/ADDR/KICK/ENABLE */
bool pring_stop(struct conn *c, struct pring *r, uint32_t *base);     /* GET_VRING_BASE */
void pring_close(struct pring *r);
/* The whole start in DPDK virtio_user's order with RING_PACKED, both rings
 * at `base`; `create`: make the guest memory and the rings first, else keep
 * them (a new connection to a back-end started again). */
bool packed_session(struct conn *c, struct pring *rx, struct pring *tx, uint32_t base, bool create);
bool packed_handshake(struct conn *c, struct pring *rx, struct pring *tx, uint32_t base);
uint32_t packed_frame_len(uint32_t seq);
uint8_t packed_frame_byte(uint32_t seq, uint32_t i);
/* Frame `seq` on TX (two_descs: header + first half, second half in the
 * next slot); an RX buffer for one whole frame; the check of a used RX
 * buffer against frame `seq`. */
bool packed_tx_frame(struct pring *tx, uint32_t seq, bool two_descs);
bool packed_rx_buffer(struct pring *rx);
bool packed_rx_check(struct conn *c, struct pring *rx, uint16_t id, uint32_t len, uint32_t seq);
/* Keep n + 1 RX buffers posted, send frames seq .. seq+n-1 (those with a
 * bit set in `chained` as two-descriptor chains), read all n back in order. */
bool packed_round(struct conn *c, struct pring *rx, struct pring *tx, uint32_t seq, uint32_t n, unsigned chained);
/* The reading half of packed_round: tx_want TX chains used, n frames from seq back in order (5 s). */
bool packed_collect(struct conn *c, struct pring *rx, struct pring *tx, uint32_t seq, uint32_t n, uint32_t tx_want);

#endif
