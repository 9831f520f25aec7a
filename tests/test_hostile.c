/*
 * tests/test_hostile.c - vhost-xdp facing a hostile front-end, a hostile
 * guest, and a front-end that keeps coming back (issue 4, items 2-4).
 *
 *   tests/test_hostile [path-to-vhost-xdp [sections]]   (default ./vhost-xdp ABCD;
 *                                                        e.g. D3: only attack 3 of section D)
 *
 * Starts `vhost-xdp --socket PATH --loopback --stats 1 --queues 2`, reads its
 * log, prints TAP (exit status 0 iff every line is "ok"):
 *
 *   A. Hostile front-end.  For each row of `bad_messages` (truncated header,
 *      wrong payload size, too many or missing fds, ring index 255, ring size
 *      3/0/65536, overlapping regions, regions with a bad fd, region count 0
 *      and 9, SET_VRING_ADDR outside every region, bad messages before
 *      SET_OWNER (a good one there makes the sender the owner, as DPDK's
 *      virtio_user resumes a session: run_before_owner), messages before
 *      SET_MEM_TABLE, unknown requests, a 64 KiB payload size, ...): one
 *      connection that does what a correct front-end does up to that point,
 *      then sends the bad message.  Asserts: the back-end logs a line naming
 *      the problem, resets the connection, is still alive, and a well-behaved
 *      front-end connecting next moves 300 frames through the loopback; the
 *      back-end's open fd count is back where it started.
 *   B. Hostile guest.  A correct front-end with 2 queue pairs and 2 memfd
 *      regions, adjacent in guest-physical space, each with bytes before
 *      (mmap_offset) and after (tail) it in the file holding a canary, our own
 *      mapping between PROT_NONE guard pages.  Then, for each row of
 *      `bad_guests`, the guest publishes on pair 0's TX ring (vring 1) or RX
 *      ring (vring 0) descriptors past a region's end, straddling the two
 *      regions, len 0xffffffff, chains that loop, an indirect table inside an
 *      indirect table, avail idx jumping by 40,000, ...  Asserts: the ring is
 *      reported broken (log "ring N: ... ring broken", --stats "broken rings
 *      N now: ring"), the canaries are intact, pair 1 keeps forwarding, the
 *      front-end restarts the ring (GET_VRING_BASE, SET_VRING_*) and pair 0
 *      forwards again.  Two rows are not malformed, only useless (zero-length
 *      buffers, a 128 KiB frame): dropped and counted, the ring goes on.
 *   C. 100 disconnect/reconnect cycles, alternately in QEMU 7.2's and DPDK
 *      22.11 virtio_user's message order, each moving frames, some stopping
 *      the rings first and some just hanging up; the back-end's open fds
 *      (/proc/PID/fd) and RSS (/proc/PID/status) must not grow.
 */
#include "frontend.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define ALARM_SECONDS   150             /* the whole program (times VX_TIME_SCALE) */
#define GOOD_FRAMES     300             /* a well-behaved front-end's traffic */
#define CYCLES          100
#define RSS_SLACK_KIB   2048

static const char *const backend_args[] = { "--stats", "1", "--queues", "2", NULL };

/* Append to a failure description, truncating safely. */
static void add(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

/* Wait until the back-end has logged `n` disconnects since `from`, so its
 * fds are closed and it accepts the next connection. */
static bool wait_disconnects(long from, int n)
{
    for (double end = now() + 5 * time_scale; now() < end; sleep_ms(5))
        if (log_count(from, "frontend disconnected") >= n)
            return true;
    return false;
}

/* A correct front-end: QEMU's handshake, GOOD_FRAMES through the loopback,
 * hang up.  Returns NULL or what went wrong. */
static const char *good_frontend(char *why, size_t len)
{
    struct conn *c = conn_new("good", false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = true, .npairs = 1 };
    long from = log_size();
    bool ok = c && conn_connect(c) && handshake(c, &o) && traffic(c, &c->qp[0], GOOD_FRAMES);
    if (c && !ok)
        snprintf(why, len, "%s", c->err);
    conn_free(c);
    if (ok && !wait_disconnects(from, 1))
        return snprintf(why, len, "the back-end did not log the disconnect"), why;
    return ok ? NULL : why;
}

/* The back-end's log since `from`, as TAP diagnostics (after a failure). */
static bool diag_line(const char *line, void *arg)
{
    int *left = arg;
    if ((*left)-- > 0)
        diag("| %.*s", (int)strcspn(line, "\n"), line);
    return false;
}

static void diag_log_since(long from)
{
    int left = 25;
    log_scan(from, diag_line, &left);
}

/* === A. Hostile front-end ================================================ */

/* What a correct front-end has sent before the bad message. */
enum prefix {
    PRE_NONE,       /* nothing: the bad message is the first */
    PRE_OWNER,      /* SET_OWNER */
    PRE_PROTOCOL,   /* GET_FEATURES, GET/SET_PROTOCOL_FEATURES (REPLY_ACK), no SET_OWNER */
    PRE_FEATURES,   /* GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES */
    PRE_MEM,        /* ... and a good SET_MEM_TABLE */
    PRE_RING,       /* ... and ring 0's SET_VRING_NUM 256, SET_VRING_KICK (NOFD), SET_VRING_ENABLE 1:
                       the ring starts as soon as it has addresses */
    PRE_LOG,        /* as PRE_MEM, with PROTOCOL_F_LOG_SHMFD and VHOST_F_LOG_ALL negotiated (migration) */
    PRE_LOG_RING,   /* PRE_LOG, a good SET_LOG_BASE (64 KiB), then ring 0 as PRE_RING */
};

/* The fds riding with it. */
enum fd_kind {
    FD_NONE,
    FD_EVENTFD,
    FD_MEMFD,       /* as large as the region it backs */
    FD_SHORT,       /* a 64 KiB memfd, whatever the region says */
    FD_PIPE,        /* cannot be mapped */
    FD_READONLY,    /* a memfd opened read-only: no shared writable mapping */
    FD_LOG,         /* a 64 KiB memfd sealed against shrinking and growing, as QEMU's log */
};

/* How it goes on the wire. */
enum wire {
    W_MSG,                  /* header, payload and fds in one sendmsg */
    W_HALF_HEADER_CLOSE,    /* 6 bytes of the header, then close */
    W_HALF_HEADER_STALL,    /* 6 bytes of the header, then nothing */
    W_HALF_PAYLOAD_CLOSE,   /* the header and half the payload, then close */
    W_FDS_ON_PAYLOAD,       /* the header alone, then the payload carrying the fds */
};

union payload {
    uint64_t u64;
    struct vu_vring_state state;
    struct vu_vring_addr addr;
    struct vu_memory mem;
    uint64_t log[2];                /* SET_LOG_BASE: mmap_size, mmap_offset */
};

struct bad_message {
    const char *what;
    enum prefix prefix;
    uint32_t request, flags, size;  /* the header as sent */
    union payload p;
    enum fd_kind fd;
    int nfds;
    enum wire wire;
    const char *log;                /* the back-end's error line contains this */
};

#define V       VHOST_USER_VERSION
#define NR      VHOST_USER_NEED_REPLY_MASK
#define MEMSZ(n) (8 + 32 * (n))
#define UA      0x7f0000000000ull                   /* any front-end address */
#define GOOD_REGION { 0x40000000, 1u << 20, UA, 0 }   /* gpa 1 GiB, 1 MiB */
#define REGION_AT(gpa) { (gpa), 1u << 20, UA + (gpa), 0 }

static const struct bad_message bad_messages[] = {
    /* Framing. */
    { "truncated header: 6 bytes, then close", PRE_NONE, VHOST_USER_GET_FEATURES, V, 0, { 0 }, FD_NONE, 0,
      W_HALF_HEADER_CLOSE, "message: truncated header (6 of 12 bytes)" },
    { "truncated header: 6 bytes, then silence", PRE_NONE, VHOST_USER_GET_FEATURES, V, 0, { 0 }, FD_NONE, 0,
      W_HALF_HEADER_STALL, "message: truncated header (6 of 12 bytes)" },
    { "truncated payload: SET_FEATURES sends 4 of 8 bytes, then closes", PRE_OWNER, VHOST_USER_SET_FEATURES, V, 8,
      { 0 }, FD_NONE, 0, W_HALF_PAYLOAD_CLOSE, "SET_FEATURES: truncated payload (wanted 8 bytes)" },
    { "payload size 0x10000, larger than any message", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, 0x10000,
      { .mem = { 1, 0, { GOOD_REGION } } }, FD_MEMFD, 1, W_MSG, "SET_MEM_TABLE: payload size 65536 larger than any" },
    { "payload size 0xffffffff (12 + size wraps a u32), then 264 bytes", PRE_NONE, VHOST_USER_GET_FEATURES, V,
      0xffffffff, { 0 }, FD_NONE, 0, W_MSG, "GET_FEATURES: payload size 4294967295 larger than any" },
    { "flags with version 0", PRE_NONE, VHOST_USER_GET_FEATURES, 0, 0, { 0 }, FD_NONE, 0, W_MSG,
      "GET_FEATURES: malformed: version 0, expected 1" },
    /* Wrong payload size for the request. */
    { "GET_FEATURES with an 8-byte payload", PRE_NONE, VHOST_USER_GET_FEATURES, V, 8, { 0 }, FD_NONE, 0, W_MSG,
      "GET_FEATURES: malformed: payload size 8, expected 0" },
    { "SET_FEATURES with a 4-byte payload", PRE_OWNER, VHOST_USER_SET_FEATURES, V, 4, { 0 }, FD_NONE, 0, W_MSG,
      "SET_FEATURES: malformed: payload size 4, expected 8" },
    { "SET_VRING_NUM with a 12-byte payload", PRE_FEATURES, VHOST_USER_SET_VRING_NUM, V, 12,
      { .state = { 0, 256 } }, FD_NONE, 0, W_MSG, "SET_VRING_NUM: malformed: payload size 12, expected 8" },
    { "SET_VRING_ADDR with a 24-byte payload", PRE_MEM, VHOST_USER_SET_VRING_ADDR, V, 24, { 0 }, FD_NONE, 0, W_MSG,
      "SET_VRING_ADDR: malformed: payload size 24, expected 40" },
    { "SET_VRING_KICK with a 4-byte payload", PRE_FEATURES, VHOST_USER_SET_VRING_KICK, V, 4, { 0 }, FD_EVENTFD, 1,
      W_MSG, "SET_VRING_KICK: malformed: payload size 4, expected 8" },
    { "SET_MEM_TABLE of 1 region in 48 bytes", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1) + 8,
      { .mem = { 1, 0, { GOOD_REGION } } }, FD_MEMFD, 1, W_MSG, "SET_MEM_TABLE: malformed: payload size 48, expected 40" },
    { "SET_MEM_TABLE in 4 bytes", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, 4, { .mem = { 1, 0, { GOOD_REGION } } },
      FD_MEMFD, 1, W_MSG, "SET_MEM_TABLE: malformed: payload size 4, expected at least 8" },
    /* Fds. */
    { "3 fds on SET_VRING_CALL", PRE_FEATURES, VHOST_USER_SET_VRING_CALL, V, 8, { .u64 = 0 }, FD_EVENTFD, 3, W_MSG,
      "SET_VRING_CALL: malformed: 3 fds attached, expected 1" },
    { "3 fds on SET_VRING_CALL, NEED_REPLY: nack, then reset", PRE_FEATURES, VHOST_USER_SET_VRING_CALL, V | NR, 8,
      { .u64 = 0 }, FD_EVENTFD, 3, W_MSG, "SET_VRING_CALL: malformed: 3 fds attached, expected 1" },
    { "10 fds (more than 8) on SET_MEM_TABLE", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1),
      { .mem = { 1, 0, { GOOD_REGION } } }, FD_MEMFD, 10, W_MSG, "message: more than 8 fds attached" },
    { "an fd on GET_FEATURES", PRE_NONE, VHOST_USER_GET_FEATURES, V, 0, { 0 }, FD_EVENTFD, 1, W_MSG,
      "GET_FEATURES: malformed: 1 fds attached, expected 0" },
    { "SET_VRING_KICK without NOFD and without an fd", PRE_FEATURES, VHOST_USER_SET_VRING_KICK, V, 8, { .u64 = 0 },
      FD_NONE, 0, W_MSG, "SET_VRING_KICK: malformed: 0 fds attached, expected 1" },
    { "SET_VRING_CALL with its fd on the payload, not the header", PRE_FEATURES, VHOST_USER_SET_VRING_CALL, V, 8,
      { .u64 = 0 }, FD_EVENTFD, 1, W_FDS_ON_PAYLOAD, "SET_VRING_CALL: malformed: 0 fds attached, expected 1" },
    { "SET_MEM_TABLE of 2 regions with 1 fd", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(2),
      { .mem = { 2, 0, { REGION_AT(0x40000000), REGION_AT(0x80000000) } } }, FD_MEMFD, 1, W_MSG,
      "SET_MEM_TABLE: malformed: 1 fds attached, expected 2" },
    { "SET_VRING_CALL with a memfd (a regular file, not an eventfd)", PRE_FEATURES, VHOST_USER_SET_VRING_CALL, V, 8,
      { .u64 = 0 }, FD_MEMFD, 1, W_MSG, "SET_VRING_CALL: ring 0: fd is a regular file, not an eventfd" },
    { "SET_VRING_ERR with a pipe", PRE_FEATURES, VHOST_USER_SET_VRING_ERR, V, 8, { .u64 = 1 }, FD_PIPE, 1, W_MSG,
      "SET_VRING_ERR: ring 1: fd is a pipe, not an eventfd" },
    /* Rings. */
    { "ring index 255 on SET_VRING_NUM", PRE_FEATURES, VHOST_USER_SET_VRING_NUM, V, 8, { .state = { 255, 256 } },
      FD_NONE, 0, W_MSG, "SET_VRING_NUM: ring index 255 out of range" },
    { "ring index 255 on SET_VRING_CALL", PRE_FEATURES, VHOST_USER_SET_VRING_CALL, V, 8, { .u64 = 255 }, FD_EVENTFD, 1,
      W_MSG, "SET_VRING_CALL: ring index 255 out of range" },
    { "ring index 4 (2 queue pairs) on GET_VRING_BASE", PRE_FEATURES, VHOST_USER_GET_VRING_BASE, V, 8,
      { .state = { 4, 0 } }, FD_NONE, 0, W_MSG, "GET_VRING_BASE: ring index 4 out of range" },
    { "ring size 3", PRE_FEATURES, VHOST_USER_SET_VRING_NUM, V, 8, { .state = { 0, 3 } }, FD_NONE, 0, W_MSG,
      "SET_VRING_NUM: ring 0: size 3 is not a power of two" },
    { "ring size 0", PRE_FEATURES, VHOST_USER_SET_VRING_NUM, V, 8, { .state = { 1, 0 } }, FD_NONE, 0, W_MSG,
      "SET_VRING_NUM: ring 1: size 0 is not a power of two" },
    { "ring size 65536", PRE_FEATURES, VHOST_USER_SET_VRING_NUM, V, 8, { .state = { 0, 65536 } }, FD_NONE, 0, W_MSG,
      "SET_VRING_NUM: ring 0: size 65536 is not a power of two" },
    { "SET_VRING_BASE 65536", PRE_FEATURES, VHOST_USER_SET_VRING_BASE, V, 8, { .state = { 0, 65536 } }, FD_NONE, 0,
      W_MSG, "SET_VRING_BASE: ring 0: base 65536 does not fit" },
    { "SET_VRING_ENABLE 2", PRE_FEATURES, VHOST_USER_SET_VRING_ENABLE, V, 8, { .state = { 0, 2 } }, FD_NONE, 0,
      W_MSG, "SET_VRING_ENABLE: ring 0: value 2 is neither 0 nor 1" },
    { "SET_VRING_ADDR outside every region", PRE_MEM, VHOST_USER_SET_VRING_ADDR, V, 40,
      { .addr = { 0, 0, 0x1000, 0x3000, 0x2000, 0 } }, FD_NONE, 0, W_MSG,
      "SET_VRING_ADDR: ring 0: desc 0x1000 avail 0x2000 used 0x3000 not inside the memory table" },
    { "SET_VRING_ADDR: descriptor table starts in the region, ends past it", PRE_RING, VHOST_USER_SET_VRING_ADDR, V,
      40, { .addr = { 0, 0, UA + 0xff800, UA + 0x2000, UA + 0x1000, 0 } }, FD_NONE, 0, W_MSG,
      "ring 0: descriptor area 0x7f00000ff800 outside guest memory" },
    { "SET_VRING_ADDR: used ring misaligned", PRE_RING, VHOST_USER_SET_VRING_ADDR, V, 40,
      { .addr = { 0, 0, UA, UA + 0x2001, UA + 0x1000, 0 } }, FD_NONE, 0, W_MSG, "ring 0: ring areas are misaligned" },
    { "SET_VRING_ADDR before SET_MEM_TABLE", PRE_FEATURES, VHOST_USER_SET_VRING_ADDR, V, 40,
      { .addr = { 0, 0, UA, UA + 0x2000, UA + 0x1000, 0 } }, FD_NONE, 0, W_MSG,
      "SET_VRING_ADDR: ring 0: desc 0x7f0000000000" },
    /* Memory table. */
    { "region count 0", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, 8, { .mem = { 0, 0, { { 0 } } } }, FD_NONE, 0,
      W_MSG, "SET_MEM_TABLE: malformed: nregions 0 not in 1..8" },
    { "region count 9 (296 bytes)", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(9), { .mem = { 9, 0, { { 0 } } } },
      FD_MEMFD, 8, W_MSG, "SET_MEM_TABLE: payload size 296 larger than any message" },
    { "region count 9 in a message of 8", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(8),
      { .mem = { 9, 0, { { 0 } } } }, FD_MEMFD, 8, W_MSG, "SET_MEM_TABLE: malformed: nregions 9 not in 1..8" },
    { "overlapping regions", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(2),
      { .mem = { 2, 0, { REGION_AT(0x40000000), REGION_AT(0x40080000) } } }, FD_MEMFD, 2, W_MSG,
      "SET_MEM_TABLE: region 1 (gpa 0x40080000) overlaps region 0" },
    { "region of size 0", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1),
      { .mem = { 1, 0, { { 0x40000000, 0, UA, 0 } } } }, FD_MEMFD, 1, W_MSG, "SET_MEM_TABLE: region 0: size 0x0" },
    { "region wrapping around 2^64", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1),
      { .mem = { 1, 0, { { 0xfffffffffff00000ull, 0x200000, UA, 0 } } } }, FD_MEMFD, 1, W_MSG, "invalid or wrapping" },
    { "region fd is a pipe", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1), { .mem = { 1, 0, { GOOD_REGION } } },
      FD_PIPE, 1, W_MSG, "SET_MEM_TABLE: region 0: mmap of" },
    { "region fd is an eventfd", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1),
      { .mem = { 1, 0, { GOOD_REGION } } }, FD_EVENTFD, 1, W_MSG, "SET_MEM_TABLE: region 0: mmap of" },
    { "region fd is read-only", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1), { .mem = { 1, 0, { GOOD_REGION } } },
      FD_READONLY, 1, W_MSG, "SET_MEM_TABLE: region 0: mmap of" },
    { "region fd is a pipe, NEED_REPLY: nack, then reset", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V | NR, MEMSZ(1),
      { .mem = { 1, 0, { GOOD_REGION } } }, FD_PIPE, 1, W_MSG, "SET_MEM_TABLE: region 0: mmap of" },
    { "1 MiB region on a 64 KiB memfd", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1),
      { .mem = { 1, 0, { GOOD_REGION } } }, FD_SHORT, 1, W_MSG, "is beyond the end of its file (0x10000 bytes)" },
    { "mmap_offset 1 TiB on a 64 KiB memfd", PRE_FEATURES, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(1),
      { .mem = { 1, 0, { { 0x40000000, 0x1000, UA, 1ull << 40 } } } }, FD_SHORT, 1, W_MSG,
      "SET_MEM_TABLE: region 0: offset 0x10000000000 + size 0x1000 is beyond the end of its file" },
    /* Order and feature bits. */
    /* Before SET_OWNER: a message that belongs to the owner makes the
     * sender the owner (DPDK virtio_user resumes a session so, see
     * run_before_owner), but is checked as any other: a bad one is still
     * refused for what it is. */
    { "SET_FEATURES before SET_OWNER, with bits never offered", PRE_NONE, VHOST_USER_SET_FEATURES, V, 8,
      { .u64 = ~0ull }, FD_NONE, 0, W_MSG, "SET_FEATURES: 0xffffffffffffffff has bits we never offered" },
    { "SET_MEM_TABLE before SET_OWNER, NEED_REPLY, 1 MiB region on a 64 KiB memfd: nack, then reset", PRE_PROTOCOL,
      VHOST_USER_SET_MEM_TABLE, V | NR, MEMSZ(1), { .mem = { 1, 0, { GOOD_REGION } } }, FD_SHORT, 1, W_MSG,
      "is beyond the end of its file (0x10000 bytes)" },
    { "SET_MEM_TABLE before SET_OWNER with 2 regions and 1 fd", PRE_NONE, VHOST_USER_SET_MEM_TABLE, V, MEMSZ(2),
      { .mem = { 2, 0, { GOOD_REGION, REGION_AT(0x80000000) } } }, FD_MEMFD, 1, W_MSG,
      "SET_MEM_TABLE: malformed: 1 fds attached, expected 2" },
    { "SET_VRING_KICK before SET_OWNER with a pipe", PRE_NONE, VHOST_USER_SET_VRING_KICK, V, 8, { .u64 = 0 }, FD_PIPE,
      1, W_MSG, "SET_VRING_KICK: ring 0: fd is a pipe, not an eventfd" },
    { "SET_FEATURES with bits never offered", PRE_OWNER, VHOST_USER_SET_FEATURES, V, 8, { .u64 = ~0ull }, FD_NONE, 0,
      W_MSG, "SET_FEATURES: 0xffffffffffffffff has bits we never offered" },
    { "SET_PROTOCOL_FEATURES with bits never offered", PRE_NONE, VHOST_USER_SET_PROTOCOL_FEATURES, V, 8,
      { .u64 = BIT(17) }, FD_NONE, 0, W_MSG, "SET_PROTOCOL_FEATURES: 0x20000 has bits we never offered" },
    { "SET_STATUS without PROTOCOL_F_STATUS", PRE_FEATURES, VHOST_USER_SET_STATUS, V, 8, { .u64 = 8 }, FD_NONE, 0,
      W_MSG, "SET_STATUS: sent without PROTOCOL_F_STATUS negotiated" },
    { "GET_STATUS without PROTOCOL_F_STATUS", PRE_FEATURES, VHOST_USER_GET_STATUS, V, 0, { 0 }, FD_NONE, 0,
      W_MSG, "GET_STATUS: sent without PROTOCOL_F_STATUS negotiated" },
    /* Requests. */
    { "request 0", PRE_NONE, 0, V, 0, { 0 }, FD_NONE, 0, W_MSG, "request 0 (UNKNOWN) not supported" },
    { "request 99", PRE_FEATURES, 99, V, 0, { 0 }, FD_NONE, 0, W_MSG, "request 99 (UNKNOWN) not supported" },
    { "request 1000 with a payload", PRE_FEATURES, 1000, V, 8, { 0 }, FD_NONE, 0, W_MSG,
      "request 1000 (UNKNOWN) not supported" },
    /* Live migration's dirty log.  GOOD_REGION ends at 1 GiB + 1 MiB: a bit
     * per 4 KiB page up to there takes 32800 bytes. */
    { "SET_LOG_BASE without PROTOCOL_F_LOG_SHMFD", PRE_FEATURES, VHOST_USER_SET_LOG_BASE, V, 16,
      { .log = { 32800, 0 } }, FD_LOG, 1, W_MSG, "SET_LOG_BASE: PROTOCOL_F_LOG_SHMFD was not negotiated" },
    { "SET_LOG_BASE without its fd", PRE_LOG, VHOST_USER_SET_LOG_BASE, V, 16, { .log = { 32800, 0 } }, FD_NONE, 0,
      W_MSG, "SET_LOG_BASE: malformed: 0 fds attached, expected 1" },
    { "SET_LOG_BASE: log fd too short (offset 64 KiB into a 64 KiB memfd)", PRE_LOG, VHOST_USER_SET_LOG_BASE, V, 16,
      { .log = { 32800, 0x10000 } }, FD_LOG, 1, W_MSG, "is beyond the end of the log's file (0x10000 bytes)" },
    { "SET_LOG_BASE: a 4 KiB log for memory up to 1 GiB + 1 MiB", PRE_LOG, VHOST_USER_SET_LOG_BASE, V, 16,
      { .log = { 4096, 0 } }, FD_LOG, 1, W_MSG, "does not cover guest memory, which needs 32800" },
    { "SET_LOG_BASE: offset + size wrapping around 2^64", PRE_LOG, VHOST_USER_SET_LOG_BASE, V, 16,
      { .log = { 0x10000, ~0ull - 0x100 } }, FD_LOG, 1, W_MSG, "SET_LOG_BASE: size 0x10000 offset 0xfffffffffffffeff" },
    { "SET_LOG_BASE: an unsealed memfd (it could shrink under a poll thread)", PRE_LOG, VHOST_USER_SET_LOG_BASE, V, 16,
      { .log = { 32800, 0 } }, FD_MEMFD, 1, W_MSG, "not sealed against shrinking" },
    { "SET_LOG_BASE: a pipe", PRE_LOG, VHOST_USER_SET_LOG_BASE, V, 16, { .log = { 32800, 0 } }, FD_PIPE, 1, W_MSG,
      "SET_LOG_BASE: the log's fd is not a regular file" },
    { "SET_LOG_FD without its fd", PRE_LOG, VHOST_USER_SET_LOG_FD, V, 0, { 0 }, FD_NONE, 0, W_MSG,
      "SET_LOG_FD: malformed: 0 fds attached, expected 1" },
    { "SET_VRING_ADDR: flags 0x2 (only VHOST_VRING_F_LOG, bit 0, is defined)", PRE_MEM, VHOST_USER_SET_VRING_ADDR, V,
      40, { .addr = { 0, 2, UA, UA + 0x2000, UA + 0x1000, 0 } }, FD_NONE, 0, W_MSG,
      "SET_VRING_ADDR: ring 0: flags 0x2: only bit 0" },
    { "SET_VRING_ADDR: used ring logged at log_guest_addr 1 TiB, outside memory and the log", PRE_LOG_RING,
      VHOST_USER_SET_VRING_ADDR, V, 40, { .addr = { 0, 1, UA, UA + 0x2000, UA + 0x1000, 1ull << 40 } }, FD_NONE, 0,
      W_MSG, "ring 0: used ring logged at log_guest_addr 0x10000000000 (+2054 bytes) lies outside the log's 65536" },
    { "SET_VRING_ADDR: log_guest_addr wrapping around 2^64", PRE_LOG_RING, VHOST_USER_SET_VRING_ADDR, V, 40,
      { .addr = { 0, 1, UA, UA + 0x2000, UA + 0x1000, ~0ull - 0x100 } }, FD_NONE, 0, W_MSG,
      "lies outside the log's 65536" },
};

/* The region a prefix's good memory table declares, and its fd. */
static int prefix_memfd = -1;

/* A memfd of `size` bytes sealed as QEMU seals its dirty log. */
static int sealed_memfd_of(uint64_t size)
{
    int fd = memfd_create("vx-hostile-log", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd >= 0 && (ftruncate(fd, (off_t)size) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* PRE_LOG_RING: a good log, 64 KiB, and the back-end's reply (a u64, 0). */
static bool send_good_log(struct conn *c)
{
    uint64_t log[2] = { 0x10000, 0 }, status = 1;
    int fd = sealed_memfd_of(0x10000);
    bool ok = fd >= 0 && vu_send(c, VHOST_USER_SET_LOG_BASE, V, log, sizeof log, &fd, 1) &&
              vu_reply(c, VHOST_USER_SET_LOG_BASE, &status, sizeof status) &&
              (status == 0 || fail(c, "good SET_LOG_BASE answered %llu", (unsigned long long)status));
    if (fd >= 0)
        close(fd);
    return ok;
}

static bool send_prefix(struct conn *c, enum prefix pre)
{
    uint64_t offered = 0, protocol = 0;
    if (pre == PRE_NONE)
        return true;
    if (pre == PRE_OWNER)
        return vu_send(c, VHOST_USER_SET_OWNER, V, NULL, 0, NULL, 0);
    bool ok = vu_get_u64(c, VHOST_USER_GET_FEATURES, &offered) &&
              vu_get_u64(c, VHOST_USER_GET_PROTOCOL_FEATURES, &protocol) &&
              vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES,
                         protocol & (BIT(VHOST_USER_PROTOCOL_F_MQ) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK)));
    if (!ok || pre == PRE_PROTOCOL)
        return ok;
    bool log = pre == PRE_LOG || pre == PRE_LOG_RING;
    if (log)
        ok = vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, protocol & (BIT(VHOST_USER_PROTOCOL_F_MQ) |
                        BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) | BIT(VHOST_USER_PROTOCOL_F_LOG_SHMFD)));
    ok = ok && vu_send(c, VHOST_USER_SET_OWNER, V, NULL, 0, NULL, 0) &&
         vu_set_u64(c, VHOST_USER_SET_FEATURES, offered & (fe_wanted_features(true, 2) | (log ? BIT(VHOST_F_LOG_ALL) : 0)));
    if (!ok || pre == PRE_FEATURES)
        return ok;
    struct vu_memory mt = { 1, 0, { GOOD_REGION } };
    uint64_t ack = 1;
    ok = vu_send(c, VHOST_USER_SET_MEM_TABLE, V | NR, &mt, MEMSZ(1), &prefix_memfd, 1) &&
         vu_reply(c, VHOST_USER_SET_MEM_TABLE, &ack, sizeof(ack)) && (ack == 0 || fail(c, "good memory table nacked"));
    if (!ok || pre == PRE_MEM || pre == PRE_LOG)
        return ok;
    if (pre == PRE_LOG_RING && !send_good_log(c))
        return false;
    uint64_t nofd = VHOST_USER_VRING_NOFD;
    return vu_set_state(c, VHOST_USER_SET_VRING_NUM, 0, 256) &&
           vu_send(c, VHOST_USER_SET_VRING_KICK, V, &nofd, sizeof(nofd), NULL, 0) &&
           vu_set_state(c, VHOST_USER_SET_VRING_ENABLE, 0, 1);
}

static int memfd_of(uint64_t size)
{
    int fd = memfd_create("vx-hostile", MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)size) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The fds a row sends, made fresh for each connection. */
static int make_fds(const struct bad_message *m, int *fds)
{
    for (int i = 0; i < m->nfds; i++) {
        const struct vu_memory_region *r = &m->p.mem.regions[i < 8 ? i : 0];
        uint64_t size = m->request == VHOST_USER_SET_MEM_TABLE && r->memory_size && r->memory_size <= (64u << 20)
                        ? r->mmap_offset + r->memory_size : 1u << 20;
        int p[2];
        char path[64];
        switch (m->fd) {
        case FD_NONE: return 0;
        case FD_EVENTFD: fds[i] = eventfd(0, EFD_CLOEXEC); break;
        case FD_MEMFD: fds[i] = memfd_of(size); break;
        case FD_SHORT: fds[i] = memfd_of(64 << 10); break;
        case FD_LOG: fds[i] = sealed_memfd_of(64 << 10); break;
        case FD_PIPE:
            if (pipe2(p, O_CLOEXEC) < 0)
                return -1;
            close(p[1]);
            fds[i] = p[0];
            break;
        case FD_READONLY: {
            int w = memfd_of(size);
            snprintf(path, sizeof(path), "/proc/self/fd/%d", w);
            fds[i] = w < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
            if (w >= 0)
                close(w);
            break;
        }
        }
        if (fds[i] < 0)
            return -1;
    }
    return m->fd == FD_NONE ? 0 : m->nfds;
}

/* After the bad message: the back-end must close the connection.  Any reply
 * it sends first (a REPLY_ACK nack) is collected in reply/reply_len. */
static bool await_reset(int sock, uint8_t *reply, size_t *reply_len, size_t cap)
{
    *reply_len = 0;
    for (double end = now() + 5 * time_scale; now() < end;) {
        struct pollfd p = { sock, POLLIN, 0 };
        if (poll(&p, 1, 50) <= 0)
            continue;
        uint8_t buf[256];
        ssize_t n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        for (ssize_t i = 0; i < n && *reply_len < cap; i++)
            reply[(*reply_len)++] = buf[i];
    }
    return false;
}

static void run_bad_message(int number, const struct bad_message *m)
{
    char why[600] = "", line[512] = "", good_why[400];
    int fds[16], fds_before = count_fds(backend_pid, NULL, 0);
    long from = log_size();
    struct conn *c = conn_new("hostile", false);
    if (!c || !conn_connect(c) || !send_prefix(c, m->prefix)) {
        check(false, "A%d %s: the correct start before it failed: %s", number, m->what, c ? c->err : "no memory");
        conn_free(c);
        return;
    }

    /* The bad message. */
    int nfds = make_fds(m, fds);
    uint8_t msg[sizeof(struct vu_header) + sizeof(union payload)];
    struct vu_header h = { m->request, m->flags, m->size };
    size_t body = m->size < sizeof(union payload) ? m->size : sizeof(union payload);
    memcpy(msg, &h, sizeof(h));
    memcpy(msg + sizeof(h), &m->p, body);
    bool sent = nfds >= 0;
    switch (m->wire) {
    case W_MSG:
        sent = sent && send_raw(c->sock, msg, sizeof(h) + body, fds, nfds);
        break;
    case W_HALF_HEADER_CLOSE:
    case W_HALF_HEADER_STALL:
        sent = sent && send_raw(c->sock, msg, 6, NULL, 0);
        break;
    case W_HALF_PAYLOAD_CLOSE:
        sent = sent && send_raw(c->sock, msg, sizeof(h) + body / 2, NULL, 0);
        break;
    case W_FDS_ON_PAYLOAD:
        sent = sent && send_raw(c->sock, msg, sizeof(h), NULL, 0) && send_raw(c->sock, msg + sizeof(h), body, fds, nfds);
        break;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (!sent) {
        check(false, "A%d %s: could not send it: %s", number, m->what, strerror(errno));
        conn_free(c);
        return;
    }

    /* (1) logged, (2) reset, (3) alive and serving, with no fd left behind. */
    uint8_t reply[64] = { 0 };
    size_t reply_len = 0;
    bool we_closed = m->wire == W_HALF_HEADER_CLOSE || m->wire == W_HALF_PAYLOAD_CLOSE;
    if (we_closed)
        conn_close(c);
    bool reset = we_closed || await_reset(c->sock, reply, &reply_len, sizeof(reply));
    conn_free(c);
    bool logged = log_find(from, m->log, NULL, 3, line, sizeof(line));
    bool gone = wait_disconnects(from, 1);
    bool alive = backend_alive();
    const char *bad_good = alive && gone ? good_frontend(good_why, sizeof(good_why)) : "not tried";
    int fds_now = alive ? count_fds(backend_pid, NULL, 0) : -1;

    bool nack_ok = true;
    if (m->flags & NR) {
        struct vu_header rh;
        uint64_t v = 0;
        memcpy(&rh, reply, sizeof(rh));
        memcpy(&v, reply + sizeof(rh), sizeof(v));
        nack_ok = reply_len == sizeof(rh) + 8 && rh.request == m->request &&
                  rh.flags == (V | VHOST_USER_REPLY_MASK) && rh.size == 8 && v != 0;
    } else if (reply_len) {
        nack_ok = false;    /* nothing asked for, nothing expected */
    }

    if (!logged)
        add(why, sizeof(why), "; no log line with \"%s\"", m->log);
    if (!reset)
        add(why, sizeof(why), "; connection still open after %.0f s", 5 * time_scale);
    if (!nack_ok)
        add(why, sizeof(why), "; reply of %zu bytes%s", reply_len,
            m->flags & NR ? ", expected a REPLY_ACK nack" : " not asked for");
    if (!alive)
        add(why, sizeof(why), "; back-end died");
    else if (!gone)
        add(why, sizeof(why), "; back-end never logged the disconnect");
    if (bad_good)
        add(why, sizeof(why), "; next front-end: %s", bad_good);
    if (fds_now != fds_before)
        add(why, sizeof(why), "; %d open fds, %d before", fds_now, fds_before);
    if (!check(!why[0], "A%d %s: %s%s%s, %s, next front-end moves %d frames, %d fds%s", number, m->what,
               logged ? "logged \"" : "not logged", logged ? strstr(line, "vhost-xdp: ") ? line + 11 : line : "",
               logged ? "\"" : "", we_closed ? "(we hung up)" : m->flags & NR ? "nacked and reset" : "reset",
               GOOD_FRAMES, fds_now, why))
        diag_log_since(from);
}

/* Not an attack, but the rule the rows "... before SET_OWNER" refine: a
 * message that belongs to the owner, sent before SET_OWNER, makes the sender
 * the owner (DPDK 22.11's virtio_user resumes its session without SET_OWNER
 * when it reconnects; vhost-user.rst calls SET_OWNER a "session start"
 * flag, DPDK's vhost library and libvhost-user ignore it).  A connection
 * that never sends SET_OWNER: GET_FEATURES, SET_FEATURES, SET_VRING_CALL
 * and SET_VRING_KICK (eventfds), SET_OWNER after all, GET_FEATURES again.
 * Asserts: not reset (every question answered), exactly one "taking it as
 * the owner" line naming SET_FEATURES, and the back-end still serves the
 * next front-end. */
static void run_before_owner(int number)
{
    const char *what = "messages before SET_OWNER, all well formed";
    char line[512] = "", why[800] = "";
    long from = log_size();
    struct conn *c = conn_new("no owner", false);
    uint64_t offered = 0, again = 0;
    int call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    bool ok = c && call >= 0 && kick >= 0 && conn_connect(c) && vu_get_u64(c, VHOST_USER_GET_FEATURES, &offered) &&
              vu_set_u64(c, VHOST_USER_SET_FEATURES, offered & fe_wanted_features(true, 1)) &&
              vu_set_fd(c, VHOST_USER_SET_VRING_CALL, 0, call) && vu_set_fd(c, VHOST_USER_SET_VRING_KICK, 1, kick) &&
              vu_send(c, VHOST_USER_SET_OWNER, V, NULL, 0, NULL, 0) && vu_get_u64(c, VHOST_USER_GET_FEATURES, &again);
    if (!ok)
        snprintf(why, 420, "; %s", c ? c->err : "no memory");
    if (call >= 0)
        close(call);
    if (kick >= 0)
        close(kick);
    conn_free(c);
    bool said = log_find(from, "SET_FEATURES before SET_OWNER: taking it as the owner", NULL, 3, line, sizeof line);
    int times = log_count(from, "before SET_OWNER");
    int resets = log_count(from, "malformed") + log_count(from, "refused");
    bool gone = wait_disconnects(from, 1), alive = backend_alive();
    const char *bad_good = alive && gone ? good_frontend(why + strlen(why), sizeof why - strlen(why)) : "not tried";
    if (!check(ok && again == offered && said && times == 1 && resets == 0 && alive && !bad_good,
               "A%d %s: answered throughout (GET_FEATURES 0x%" PRIx64 " before and after), logged once (%d lines) "
               "\"%s\", next front-end moves %d frames%s", number, what, again, times,
               strstr(line, "vhost-xdp: ") ? line + 11 : line, GOOD_FRAMES, why))
        diag_log_since(from);
}

/* === B. Hostile guest ==================================================== */

/* Guest-physical layout: region A (every ring, table and buffer) at 1 GiB,
 * region B right after it.  Both start at an unaligned offset in their
 * memfd, so the back-end's mapping of A's last page also covers the first
 * bytes of A's tail canary: a write just past A's end lands there. */
#define GPA_A       ((uint64_t)0x40000000)
#define SIZE_A      ((uint64_t)REGION_SIZE)
#define GPA_B       (GPA_A + SIZE_A)
#define SIZE_B      ((uint64_t)0x10000)
#define B_FILL      0x5a            /* region B's bytes: nobody may write there */
#define PAIR_FRAMES 200

enum where { AT_ABS, AT_BUF, AT_A_START, AT_A_END, AT_B_END, AT_TABLE };

/* A descriptor the guest writes: address `at` + off. */
struct gdesc {
    enum where at;
    int64_t off;
    uint32_t len;
    uint16_t flags, next;
};

struct bad_guest {
    const char *what;
    bool rx;                        /* pair 0's RX ring (vring 0); else its TX ring (vring 1) */
    int ndesc;
    struct gdesc desc[2];           /* ring descriptors 0 and 1 */
    int ntable;
    struct gdesc table[2];          /* the indirect table at AT_TABLE */
    uint16_t head;                  /* the avail entry */
    uint16_t advance;               /* avail->idx moves this far (0: 1) */
    const char *log;                /* in the "ring broken" line; NULL: not malformed, dropped */
};

#define N   VRING_DESC_F_NEXT
#define W   VRING_DESC_F_WRITE
#define I   VRING_DESC_F_INDIRECT

static const struct bad_guest bad_guests[] = {
    { "TX descriptor starting at region B's end", false, 1, { { AT_B_END, 0, 64, 0, 0 } }, 0, { { 0 } }, 0, 0,
      "addr 0x40810000+64 outside guest memory" },
    { "TX descriptor ending 1 byte past region B", false, 1, { { AT_B_END, -63, 64, 0, 0 } }, 0, { { 0 } }, 0, 0,
      "addr 0x4080ffc1+64 outside guest memory" },
    { "TX descriptor straddling regions A and B", false, 1, { { AT_A_END, -32, 64, 0, 0 } }, 0, { { 0 } }, 0, 0,
      "addr 0x407fffe0+64 outside guest memory" },
    { "TX descriptor starting 16 bytes before region A", false, 1, { { AT_A_START, -16, 64, 0, 0 } }, 0, { { 0 } }, 0,
      0, "addr 0x3ffffff0+64 outside guest memory" },
    { "TX descriptor with len 0xffffffff", false, 1, { { AT_BUF, 0, 0xffffffff, 0, 0 } }, 0, { { 0 } }, 0, 0,
      "+4294967295 outside guest memory" },
    { "TX descriptor whose addr + len wraps around 2^64", false, 1, { { AT_ABS, -16, 64, 0, 0 } }, 0, { { 0 } }, 0, 0,
      "addr 0xfffffffffffffff0+64 outside guest memory" },
    { "TX chain that loops (0 -> 1 -> 0)", false, 2, { { AT_BUF, 0, 100, N, 1 }, { AT_BUF, 100, 100, N, 0 } }, 0,
      { { 0 } }, 0, 0, "chain from head 0 has more than 256 descriptors" },
    { "TX chain whose next is 1000", false, 1, { { AT_BUF, 0, 12, N, 1000 } }, 0, { { 0 } }, 0, 0,
      "descriptor next 1000 beyond table of 256" },
    { "TX avail entry naming head 300 of 256", false, 1, { { AT_BUF, 0, 72, 0, 0 } }, 0, { { 0 } }, 300, 0,
      "avail ring holds head 300, ring size is 256" },
    { "TX avail idx jumping by 40,000", false, 1, { { AT_BUF, 0, 72, 0, 0 } }, 0, { { 0 } }, 0, 40000,
      "is 40000 entries ahead of last_avail_idx" },
    { "TX indirect table inside an indirect table", false, 1, { { AT_TABLE, 0, 32, I, 0 } }, 2,
      { { AT_TABLE, 32, 16, I, 0 }, { AT_BUF, 0, 100, 0, 0 } }, 0, 0, "indirect table inside an indirect table" },
    { "TX indirect table straddling regions A and B", false, 1, { { AT_A_END, -16, 64, I, 0 } }, 0, { { 0 } }, 0, 0,
      "indirect table outside guest memory" },
    { "TX indirect table of 3 bytes", false, 1, { { AT_TABLE, 0, 3, I, 0 } }, 0, { { 0 } }, 0, 0,
      "bad indirect table length" },
    { "TX write-only descriptor", false, 1, { { AT_BUF, 0, 100, W, 0 } }, 0, { { 0 } }, 0, 0,
      "descriptor 0 is write-only, this ring's buffers must be read-only" },
    { "RX buffer straddling regions A and B", true, 1, { { AT_A_END, -32, 2048, W, 0 } }, 0, { { 0 } }, 0, 0,
      "addr 0x407fffe0+2048 outside guest memory" },
    { "RX buffer running past region B's end", true, 1, { { AT_B_END, -100, 2048, W, 0 } }, 0, { { 0 } }, 0, 0,
      "addr 0x4080ff9c+2048 outside guest memory" },
    { "RX buffer with len 0xffffffff", true, 1, { { AT_BUF, 0, 0xffffffff, W, 0 } }, 0, { { 0 } }, 0, 0,
      "+4294967295 outside guest memory" },
    { "TX chain of zero-length buffers (not malformed: dropped)", false, 2,
      { { AT_BUF, 0, 0, N, 1 }, { AT_BUF, 0, 0, 0, 0 } }, 0, { { 0 } }, 0, 0, NULL },
    { "TX frame of 128 KiB (not malformed: dropped)", false, 1, { { AT_A_START, 0x100000, 0x20000, 0, 0 } }, 0,
      { { 0 } }, 0, 0, NULL },
};

static uint64_t guest_addr(struct ring *r, const struct gdesc *d)
{
    switch (d->at) {
    case AT_BUF:     return gpa_of(r->mem, r->bufs) + (uint64_t)d->off;
    case AT_A_START: return GPA_A + (uint64_t)d->off;
    case AT_A_END:   return GPA_A + SIZE_A + (uint64_t)d->off;
    case AT_B_END:   return GPA_B + SIZE_B + (uint64_t)d->off;
    case AT_TABLE:   return gpa_of(r->mem, r->indirect) + (uint64_t)d->off;
    case AT_ABS:     break;
    }
    return (uint64_t)d->off;
}

/* The guest writes the row's descriptors at 0 and 1 (free: the ring is
 * idle), its table, one avail entry, and moves avail->idx. */
static void publish_bad(struct conn *c, struct ring *r, const struct bad_guest *g)
{
    for (int i = 0; i < g->ndesc; i++)
        r->desc[i] = (struct vring_desc){ guest_addr(r, &g->desc[i]), g->desc[i].len, g->desc[i].flags,
                                          g->desc[i].next };
    for (int i = 0; i < g->ntable; i++)
        r->indirect[i] = (struct vring_desc){ guest_addr(r, &g->table[i]), g->table[i].len, g->table[i].flags,
                                              g->table[i].next };
    r->avail->ring[r->avail_idx % r->num] = g->head;
    r->avail_idx = (uint16_t)(r->avail_idx + (g->advance ? g->advance : 1));
    ring_flush(r, c->event_idx);
}

/* --stats lines: "... | drops N (+M) | broken rings N[ now: i,j]". */
struct stats_want {
    long long broken;               /* -1: any */
    int now_ring;                   /* -1: none broken now; -2: any */
    unsigned long long min_drops;
    unsigned long long drops, broken_seen;
    char text[160];
};

static bool stats_match(const char *line, void *arg)
{
    struct stats_want *w = arg;
    const char *d = strstr(line, "| drops "), *b = strstr(line, "| broken rings ");
    unsigned long long drops, broken;
    if (!strstr(line, "stats: from guest") || !d || !b || sscanf(d, "| drops %llu", &drops) != 1 ||
        sscanf(b, "| broken rings %llu", &broken) != 1)
        return false;
    const char *list = strstr(b, " now: ");
    char want_list[16];
    snprintf(want_list, sizeof(want_list), " now: %d\n", w->now_ring);
    w->drops = drops;
    w->broken_seen = broken;
    snprintf(w->text, sizeof(w->text), "%s", d + 2);
    w->text[strcspn(w->text, "\n")] = 0;
    return (w->broken < 0 || broken == (unsigned long long)w->broken) && drops >= w->min_drops &&
           (w->now_ring == -2 || (w->now_ring == -1 ? !list : list && !strcmp(list, want_list)));
}

static bool stats_wait(long from, struct stats_want *w, double seconds)
{
    for (double end = now() + seconds * time_scale;; sleep_ms(20)) {
        if (log_scan(from, stats_match, w))
            return true;
        if (now() >= end)
            return false;
    }
}

static bool wait_u16(volatile uint16_t *p, uint16_t want, double seconds)
{
    for (double end = now() + seconds * time_scale; now() < end; sleep_ms(1))
        if (__atomic_load_n(p, __ATOMIC_ACQUIRE) == want)
            return true;
    return false;
}

static bool memory_untouched(struct conn *c, char *where, size_t len)
{
    for (int i = 0; i < 2; i++)
        if (!mem_canary_intact(&c->mem[i], where, len))
            return false;
    for (uint64_t i = 0; i < SIZE_B; i++)
        if (c->mem[1].base[i] != B_FILL)
            return snprintf(where, len, "region B byte 0x%" PRIx64 " changed", i), false;
    return true;
}

static void run_bad_guest(struct conn *c, int number, const struct bad_guest *g, long long *broken_total)
{
    struct pair *q0 = &c->qp[0], *q1 = &c->qp[1];
    struct ring *r = g->rx ? &q0->rx : &q0->tx;
    char why[1000] = "", line[512] = "", where[160] = "";
    uint16_t base = 0;
    c->err[0] = 0;

    /* Not malformed: the frame must be counted as a drop, so first a
     * --stats line to count from. */
    struct stats_want before = { -1, -2, 0, 0, 0, "" };
    if (!g->log)
        stats_wait(log_size(), &before, 3);
    long from = log_size();

    /* A receive buffer is taken only for a frame: start the RX ring empty,
     * so the bad buffer is the first, then send one frame on TX. */
    if (g->rx && !(ring_stop(c, r, &base) && ring_restart(c, r, base, false)))
        add(why, sizeof(why), "; emptying the RX ring: %s", c->err);
    uint16_t used0 = r->used->idx, tx_used0 = q0->tx.used->idx, rx_used0 = q0->rx.used->idx;
    publish_bad(c, r, g);
    if (g->rx && tx_post(c, q0, q0->sent))
        ring_flush(&q0->tx, c->event_idx);

    /* (2) broken and logged; or dropped, and the ring goes on. */
    char ring_tag[16];
    snprintf(ring_tag, sizeof(ring_tag), "ring %u: ", r->index);
    bool logged = log_find(from, ring_tag, "ring broken", g->log ? 3 : 0.3, line, sizeof(line));
    if (g->log && !logged)
        add(why, sizeof(why), "; no \"%sring broken\" line", ring_tag);
    else if (g->log && !strstr(line, g->log))
        add(why, sizeof(why), "; the line does not say \"%s\"", g->log);
    else if (!g->log && logged)
        add(why, sizeof(why), "; ring broken instead of the frame dropped: %s", line);
    if (!g->log && !wait_u16(&r->used->idx, (uint16_t)(used0 + 1), 3))
        add(why, sizeof(why), "; used idx %u, expected %u", r->used->idx, (uint16_t)(used0 + 1));
    if (g->rx && !wait_u16(&q0->tx.used->idx, (uint16_t)(tx_used0 + 1), 3))
        add(why, sizeof(why), "; TX ring 1 did not complete the frame (used %u)", q0->tx.used->idx);

    /* (3) the other queue pair keeps forwarding meanwhile. */
    bool pair1 = traffic(c, q1, q1->received + PAIR_FRAMES);
    if (!pair1)
        add(why, sizeof(why), "; pair 1: %s", c->err);

    /* (1) nothing outside guest memory touched: canaries, region B, and no
     * frame made of bytes we never sent. */
    if (!memory_untouched(c, where, sizeof(where)))
        add(why, sizeof(why), "; %s", where);
    if (!g->rx && q0->rx.used->idx != rx_used0)
        add(why, sizeof(why), "; a frame arrived on RX ring 0");

    /* --stats: the broken-ring total grows and names the ring; a drop is counted. */
    if (g->log)
        ++*broken_total;
    struct stats_want w = { *broken_total, g->log ? (int)r->index : -1, g->log ? 0 : before.drops + 1, 0, 0, "" };
    if (!stats_wait(from, &w, 3))
        add(why, sizeof(why), "; no stats line with broken rings %lld%s%d and drops >= %llu (last: %s)",
            w.broken, g->log ? " now: " : ", none now, ", g->log ? (int)r->index : 0, w.min_drops, w.text);
    if (!check(!why[0], "B%d %s: %s%s%s; --stats \"%s\"; canaries intact; pair 1 forwarded %d frames meanwhile%s%s",
               number, g->what, g->log ? "ring broken, logged \"" : "dropped, ring goes on",
               g->log ? strstr(line, ": ") ? strstr(line, ": ") + 2 : line : "", g->log ? "\"" : "", w.text,
               PAIR_FRAMES, g->rx ? "; TX ring 1 took the frame and dropped it" : "", why))
        diag_log_since(from);

    /* The front-end restarts the ring: GET_VRING_BASE, then SET_VRING_*. */
    c->err[0] = 0;
    bool again = ring_stop(c, r, &base) && ring_restart(c, r, base, true) &&
                 traffic(c, q0, q0->received + PAIR_FRAMES);
    check(again, "B%d: GET_VRING_BASE (%u) and SET_VRING_NUM/BASE/ADDR/KICK/ENABLE restart ring %u; pair 0 forwards "
          "%d frames again%s%s", number, base, r->index, PAIR_FRAMES, again ? "" : ": ", c->err);
}

static void run_hostile_guest(void)
{
    struct conn *c = conn_new("guest", false);
    struct fe_opts o = {
        .style = STYLE_QEMU, .mrg_rxbuf = true, .npairs = 2, .nmem = 2,
        .mem = { { GPA_A, SIZE_A, 0x3800, 0x2000 }, { GPA_B, SIZE_B, 0x1800, 0x1000 } },
    };
    long from = log_size();
    bool ok = c && conn_connect(c) && handshake(c, &o);
    if (ok) {
        memset(c->mem[1].base, B_FILL, SIZE_B);
        ok = traffic(c, &c->qp[0], PAIR_FRAMES) && traffic(c, &c->qp[1], PAIR_FRAMES);
    }
    if (!check(ok, "B: a front-end with 2 queue pairs and 2 regions adjacent in guest-physical space "
               "(gpa 0x%" PRIx64 " + 0x%" PRIx64 ", 0x%" PRIx64 " + 0x%" PRIx64 "; mmap_offset 0x3800 and 0x1800; canaries before and after each; "
               "guard pages around our mappings) moves %d frames on each pair%s%s", GPA_A, SIZE_A, GPA_B, SIZE_B,
               PAIR_FRAMES, ok ? "" : ": ", c ? c->err : "no memory")) {
        conn_free(c);
        return;
    }
    struct stats_want start = { -1, -2, 0, 0, 0, "" };
    stats_wait(from, &start, 3);
    long long broken_total = (long long)start.broken_seen;
    for (size_t i = 0; i < sizeof(bad_guests) / sizeof(bad_guests[0]) && backend_alive(); i++)
        run_bad_guest(c, (int)i + 1, &bad_guests[i], &broken_total);
    conn_free(c);
    check(wait_disconnects(from, 1), "B: back-end logs the hostile guest's disconnect");
}

/* === C. Reconnect cycles ================================================= */

static void run_cycles(void)
{
    int fds_before = count_fds(backend_pid, NULL, 0), fds_first = -1, fds_end = -1;
    long rss_before = rss_kib(backend_pid), rss_first = -1, rss_end = -1;
    int worked = 0, styles[2] = { 0, 0 }, stopped = 0;
    uint64_t frames = 0;
    char first_failure[500] = "";
    double t0 = now();

    for (int i = 0; i < CYCLES && backend_alive(); i++) {
        char tag[32];
        snprintf(tag, sizeof(tag), "cycle %d", i + 1);
        struct conn *c = conn_new(tag, false);
        /* i % 4: QEMU then DPDK order; the first two stop their rings
         * (GET_VRING_BASE, DPDK after SET_VRING_ENABLE 0), the other two
         * just hang up, as a killed QEMU does. */
        struct fe_opts o = {
            .style = i % 2 ? STYLE_DPDK : STYLE_QEMU, .mrg_rxbuf = (i / 4) % 2 == 0, .npairs = 1,
            .base = (uint16_t)(i * 4099), .nmem = 1,
            .mem = { { 0x40000000ull * (1 + i % 3), REGION_SIZE, 0x1000u * (uint32_t)(i % 3), 0 } },
        };
        bool stop = i % 4 < 2;
        uint32_t nframes = 100 + 50 * (uint32_t)(i % 5);
        uint16_t base;
        long from = log_size();
        bool ok = c && conn_connect(c) && handshake(c, &o) && traffic(c, &c->qp[0], nframes) &&
                  (!stop || (ring_stop(c, &c->qp[0].rx, &base) && ring_stop(c, &c->qp[0].tx, &base)));
        if (c)
            conn_close(c);
        if (ok && !wait_disconnects(from, 1))
            ok = c && fail(c, "the back-end did not log the disconnect");
        if (ok) {
            worked++;
            styles[i % 2]++;
            stopped += stop;
            frames += nframes;
        } else if (!first_failure[0]) {
            snprintf(first_failure, sizeof(first_failure), "; first failure: %s (%s): %s", tag,
                     i % 2 ? "DPDK" : "QEMU", c ? c->err : "no memory");
        }
        conn_free(c);
        if (i == 0) {
            fds_first = count_fds(backend_pid, NULL, 0);
            rss_first = rss_kib(backend_pid);
        }
    }
    fds_end = count_fds(backend_pid, NULL, 0);
    rss_end = rss_kib(backend_pid);
    check(worked == CYCLES, "C: %d of %d connect/handshake/traffic/disconnect cycles worked (%d QEMU-style, %d "
          "DPDK-style; %d stopped their rings first, the others hung up; %" PRIu64 " frames) in %.1f s%s", worked,
          CYCLES, styles[0], styles[1], stopped, frames, now() - t0, first_failure);
    check(fds_end == fds_before && fds_first == fds_before, "C: back-end open fds: %d before, %d after cycle 1, %d "
          "after cycle %d", fds_before, fds_first, fds_end, CYCLES);
    check(rss_end >= 0 && rss_end <= rss_first + RSS_SLACK_KIB, "C: back-end RSS: %ld KiB before, %ld KiB after cycle "
          "1, %ld KiB after cycle %d (%+ld KiB; tolerance +%d KiB)", rss_before, rss_first, rss_end, CYCLES,
          rss_end - rss_first, RSS_SLACK_KIB);
}

/* === D. Six attacks, each on a fresh back-end ============================== */

/*
 * A second, independent hostile frontend found six ways to take vhost-xdp
 * down (issue 14).  Each is replayed here against a back-end of its own:
 * `vhost-xdp --socket A --socket B --queues 2` (VM-to-VM: queue pair k of A
 * is linked to queue pair k of B), good frontends on both, then the attack
 * from A's side.  Each case asserts what the issue asks:
 *   - the process lives;
 *   - one log line names the cause;
 *   - the attacked connection is reset (A's socket sees the end), or the
 *     attacked ring is broken;
 *   - device B is served meanwhile: its messages answered (a ring of B
 *     stopped and restarted), its frames forwarded (to A while A's rings
 *     run, checked byte for byte there; else its TX ring still emptied);
 *   - a well-behaved frontend on A afterwards exchanges frames with B, both
 *     ways, byte for byte;
 *   - SIGTERM while the attack is under way ends the process in less than
 *     1.5 s, with status 0 and its socket files removed: a correctness
 *     property (nothing a frontend does may hold the signal path), so its
 *     bound is generous but real.
 * The sixth is the crash a frontend cannot cause but suffers: a packed ring
 * after the back-end is killed (SIGKILL) and started again.
 */
#define D_FRAMES        100             /* frames per direction per check */
#define SIGTERM_LIMIT   1.5             /* seconds (times VX_TIME_SCALE) */

static const char *d_binary;
static const char *const d_args[] = { "--socket", sock_path, "--socket", sock_path2, "--queues", "2", "--stats", "1",
                                      NULL };
static const char *const d_args_trace[] = { "--socket", sock_path, "--socket", sock_path2, "--queues", "2",
                                            "--stats", "1", "--trace=rings", NULL };

/* The back-end's log since `from` after a failed check, without the
 * --stats and --trace lines. */
static bool d_diag_line(const char *line, void *arg)
{
    int *left = arg;
    if (!strstr(line, "stats: ") && !strstr(line, "trace: ") && (*left)-- > 0)
        diag("| %.*s", (int)strcspn(line, "\n"), line);
    return false;
}

static bool d_check(long from, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool d_check(long from, bool ok, const char *fmt, ...)
{
    char text[2000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!check(ok, "%s", text)) {
        int left = 30;
        log_scan(from, d_diag_line, &left);
    }
    return ok;
}

/* A fresh VM-to-VM back-end; both socket files present. */
static bool d_start(const char *what, const char *const *args)
{
    if (!start_backend_argv(d_binary, args))
        return false;
    struct stat st;
    for (double end = now() + 20 * time_scale; now() < end; sleep_ms(20))
        if (stat(sock_path, &st) == 0 && stat(sock_path2, &st) == 0)
            return true;
    check(false, "%s: the back-end did not create its two sockets", what);
    return false;
}

/* A good frontend with 2 queue pairs on `path`, QEMU's order. */
static struct conn *d_good(const char *tag, const char *path, char *why, size_t len)
{
    struct conn *c = conn_new(tag, false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = true, .npairs = 2 };
    if (c && conn_connect_to(c, path) && handshake(c, &o))
        return c;
    snprintf(why, len, "%s: %s", tag, c ? c->err : "no memory");
    conn_free(c);
    return NULL;
}

/* D_FRAMES frames each way between A and B on pair p, byte for byte. */
static bool d_both_ways(struct conn *a, struct conn *b, int p, char *why, size_t len)
{
    a->err[0] = b->err[0] = 0;
    bool ok = traffic_between(a, &a->qp[p], b, &b->qp[p], a->qp[p].sent + D_FRAMES) &&
              traffic_between(b, &b->qp[p], a, &a->qp[p], b->qp[p].sent + D_FRAMES);
    if (!ok)
        snprintf(why, len, "pair %d: %.250s%.250s", p, a->err, b->err);
    return ok;
}

/* Device B is served: a ring of it stopped and restarted (GET_VRING_BASE,
 * SET_VRING_*: answered by the control thread), then D_FRAMES frames from
 * its pair 1: to A's pair 1 when A runs (checked there), else its TX ring
 * emptied all the same (the frames are dropped at A, and counted). */
static bool d_b_served(struct conn *b, struct conn *a, char *why, size_t len)
{
    struct pair *q = &b->qp[1];
    uint16_t base;
    b->err[0] = 0;
    bool ok = ring_stop(b, &q->tx, &base) && ring_restart(b, &q->tx, base, false);
    if (ok && a) {
        a->err[0] = 0;
        ok = traffic_between(b, q, a, &a->qp[1], q->sent + D_FRAMES);
        if (!ok)
            snprintf(b->err, sizeof b->err, "%s", a->err);
    } else if (ok) {
        for (int i = 0; i < D_FRAMES && ok; i++) {
            if (q->tx.outstanding >= RING_SIZE / 2 && !tx_wait_done(b, q))
                ok = false;
            else if (tx_post(b, q, q->sent))
                q->sent++, ring_flush(&q->tx, b->event_idx);
        }
        ok = ok && tx_wait_done(b, q);
    }
    if (!ok)
        snprintf(why, len, "device B: %s", b->err);
    return ok;
}

/* A's socket must reach its end (the back-end reset the connection): read
 * and drop whatever comes first. */
static bool d_closed(int sock, double seconds)
{
    for (double end = now() + seconds * time_scale; now() < end;) {
        struct pollfd p = { sock, POLLIN, 0 };
        if (poll(&p, 1, 20) <= 0)
            continue;
        char buf[4096];
        ssize_t n = recv(sock, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
    }
    return false;
}

/* After the attack was dealt with: a good frontend on A exchanges frames
 * with B on both pairs; then the attack's `arm` is run again on a fresh
 * A, and SIGTERM is sent while it is under way. */
static void d_after(const char *what, struct conn *b, void (*arm)(struct conn *a, struct conn *b))
{
    char why[600] = "";
    long from = log_size();
    struct conn *a = d_good("A again", sock_path, why, sizeof why);
    bool ok = a && d_both_ways(a, b, 0, why, sizeof why) && d_both_ways(a, b, 1, why, sizeof why);
    d_check(from, ok, "%s: afterwards a well-behaved frontend on A exchanges %d frames each way with B on both pairs%s%s",
          what, D_FRAMES, ok ? "" : ": ", why);
    if (a && arm)
        arm(a, b);
    double took;
    int st;
    bool gone = stop_backend_within(&took, &st);
    struct stat sb;
    bool files = stat(sock_path, &sb) != 0 && stat(sock_path2, &sb) != 0;
    d_check(from, gone && WIFEXITED(st) && WEXITSTATUS(st) == 0 && took < SIGTERM_LIMIT * time_scale && files,
          "%s: SIGTERM %s ends the back-end in %.2f s (< %.1f s), exit status %d, socket files removed%s", what,
          arm ? "with the attack under way" : "", took, SIGTERM_LIMIT,
          gone && WIFEXITED(st) ? WEXITSTATUS(st) : -1, files ? "" : " (NOT removed)");
    conn_free(a);
    conn_free(b);
}

/* The start every attack shares: a fresh back-end, good frontends on A and
 * B, frames both ways on both pairs.  NULL if that failed (reported). */
static struct conn *d_begin(const char *what, const char *const *args, struct conn **b, long *from)
{
    char why[600] = "";
    *b = NULL;
    if (!d_start(what, args))
        return NULL;
    *from = log_size();
    *b = d_good("B", sock_path2, why, sizeof why);
    struct conn *a = *b ? d_good("A", sock_path, why, sizeof why) : NULL;
    bool ok = a && d_both_ways(a, *b, 0, why, sizeof why) && d_both_ways(a, *b, 1, why, sizeof why);
    if (!d_check(*from, ok, "%s: fresh back-end, good frontends on A and B exchange %d frames each way on both pairs%s%s",
                 what, D_FRAMES, ok ? "" : ": ", why)) {
        conn_free(a);
        conn_free(*b);
        *b = NULL;
        stop_backend();
        return NULL;
    }
    return a;
}

/* The line naming the cause: at least one after `from` with `needle`. */
static bool d_logged(long from, const char *needle, double seconds, char *line, size_t len)
{
    return log_find(from, needle, NULL, seconds, line, len);
}

static const char *d_text(const char *line)
{
    const char *p = strstr(line, "vhost-xdp: ");
    return p ? p + 11 : line;
}

/* --- D1: guest memory cut under running rings --------------------------- */

static void d1_arm(struct conn *a, struct conn *b)
{
    (void)b;
    if (ftruncate(a->mem[0].fd, 4096) < 0) { /* the check below fails */ }
    sleep_ms(20);       /* the poll thread meets it now, or the shutdown does */
}

static void d1_memory(void)
{
    const char *what = "D1 guest memory cut to 4 KiB under running rings";
    struct conn *b;
    long from;
    struct conn *a = d_begin(what, d_args, &b, &from);
    if (!a)
        return;
    char line[600] = "", why[600] = "";
    /* From here the test must not touch A's memory: it would fault too. */
    bool cut = ftruncate(a->mem[0].fd, 4096) == 0;
    bool logged = d_logged(from, "guest memory fault (SIGBUS)", 5, line, sizeof line) && strstr(line, sock_path) &&
                  strstr(line, "poll thread");
    bool reset = d_closed(a->sock, 5);
    bool served = d_b_served(b, NULL, why, sizeof why);
    d_check(from, cut && logged && reset && served && backend_alive(), "%s: the poll thread's SIGBUS is caught: \"%s\"; A's "
          "connection reset; B served meanwhile (a ring restarted, %d frames sent)%s%s", what, d_text(line), D_FRAMES,
          why[0] ? "; " : "", why);
    conn_free(a);

    /* The control thread reads guest memory too: a ring started on memory
     * cut to nothing faults in vq_attach. */
    from = log_size();
    why[0] = line[0] = 0;
    a = d_good("A (control thread)", sock_path, why, sizeof why);
    uint16_t base;      /* every ring stopped first: no poll thread may meet the cut before vq_attach does */
    bool stopped = a && ring_stop(a, &a->qp[0].rx, &base) && ring_stop(a, &a->qp[0].tx, &base) &&
                   ring_stop(a, &a->qp[1].rx, &base) && ring_stop(a, &a->qp[1].tx, &base) &&
                   ftruncate(a->mem[0].fd, 0) == 0;
    int kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    bool sent = stopped && vu_set_fd(a, VHOST_USER_SET_VRING_KICK, 0, kick);
    logged = d_logged(from, "starting ring 0: guest memory fault (SIGBUS)", 5, line, sizeof line);
    reset = a && d_closed(a->sock, 5);
    served = d_b_served(b, NULL, why, sizeof why);
    d_check(from, sent && logged && reset && served && backend_alive(), "%s: memory cut to 0 bytes, then a ring restarted: "
          "the control thread's SIGBUS in vq_attach is caught: \"%s\"; A reset, B served%s%s", what, d_text(line),
          why[0] ? "; " : "", why);
    close(kick);
    conn_free(a);

    /* The ring view reads guest memory too: rings disabled (SET_VRING_ENABLE
     * 0: still attached, so the view shows them, but no poll thread reads
     * them), the memory cut, then SIGUSR1. */
    from = log_size();
    why[0] = line[0] = 0;
    a = d_good("A (ring view)", sock_path, why, sizeof why);
    uint64_t f;
    bool disabled = a && vu_set_state(a, VHOST_USER_SET_VRING_ENABLE, 0, 0) &&
                    vu_set_state(a, VHOST_USER_SET_VRING_ENABLE, 1, 0) &&
                    vu_set_state(a, VHOST_USER_SET_VRING_ENABLE, 2, 0) &&
                    vu_set_state(a, VHOST_USER_SET_VRING_ENABLE, 3, 0) &&
                    vu_get_u64(a, VHOST_USER_GET_FEATURES, &f) && ftruncate(a->mem[0].fd, 0) == 0;
    sent = disabled && kill(backend_pid, SIGUSR1) == 0;
    logged = d_logged(from, "ring view: guest memory fault (SIGBUS)", 5, line, sizeof line);
    reset = a && d_closed(a->sock, 5);
    served = d_b_served(b, NULL, why, sizeof why);
    d_check(from, sent && logged && reset && served && backend_alive(), "%s: rings disabled, memory cut, then "
            "SIGUSR1: the ring view's SIGBUS is caught: \"%s\"; A reset, B served%s%s", what, d_text(line),
            why[0] ? "; " : "", why);
    conn_free(a);
    d_after(what, b, d1_arm);
}

/* --- D2: a call fd nobody reads ------------------------------------------ */

/* An eventfd whose counter is at 2^64 - 2: a write of 1 would block. */
static int d2_full_eventfd(void)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    uint64_t v = UINT64_MAX - 1;
    if (fd >= 0 && write(fd, &v, sizeof v) != sizeof v) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A's RX ring 0 gets the full eventfd as its call fd; the reply to a
 * GET_FEATURES after it says the back-end has it. */
static bool d2_give_call(struct conn *a, int fd)
{
    uint64_t f;
    return vu_set_fd(a, VHOST_USER_SET_VRING_CALL, 0, fd) && vu_get_u64(a, VHOST_USER_GET_FEATURES, &f);
}

/* A few frames from B's pair 0, for A's RX ring 0: a call to A is due. */
static void d2_frames_to_a(struct conn *b)
{
    struct pair *q = &b->qp[0];
    for (int i = 0; i < 8; i++)
        if (tx_post(b, q, q->sent))
            q->sent++;
    ring_flush(&q->tx, b->event_idx);
}

static void d2_arm(struct conn *a, struct conn *b)
{
    int fd = d2_full_eventfd();
    if (fd >= 0 && d2_give_call(a, fd)) {
        fcntl(fd, F_SETFL, 0);                  /* blocking again, behind the back-end's back */
        d2_frames_to_a(b);
        sleep_ms(50);                           /* the poll thread blocks now */
    }
    if (fd >= 0)
        close(fd);
}

/* Calls dropped, from the device's last --stats line after `from`. */
static bool d2_calls_dropped(const char *line, void *arg)
{
    unsigned long long *n = arg;
    const char *p = strstr(line, "calls dropped ");
    if (p && strstr(line, sock_path) && !strstr(line, sock_path2))
        *n = strtoull(p + 14, NULL, 10);
    return false;
}

static void d2_call(void)
{
    const char *what = "D2 a call fd nobody reads";
    struct conn *b;
    long from;
    struct conn *a = d_begin(what, d_args, &b, &from);
    if (!a)
        return;
    char line[600] = "", why[600] = "";

    /* A pipe: the protocol says eventfd; refused. */
    int p[2] = { -1, -1 };
    bool sent = pipe2(p, O_CLOEXEC) == 0 && vu_set_fd(a, VHOST_USER_SET_VRING_CALL, 0, p[0]);
    bool logged = d_logged(from, "SET_VRING_CALL: ring 0: fd is a pipe, not an eventfd", 5, line, sizeof line);
    bool reset = d_closed(a->sock, 5);
    bool served = d_b_served(b, NULL, why, sizeof why);
    d_check(from, sent && logged && reset && served && backend_alive(), "%s: a pipe as call fd is refused: \"%s\"; A reset; "
          "B served%s%s", what, d_text(line), why[0] ? "; " : "", why);
    close(p[0]);
    close(p[1]);
    conn_free(a);

    /* An eventfd at 2^64 - 2, O_NONBLOCK (set by the back-end): every call
     * fails with EAGAIN, counted; the ring goes on. */
    from = log_size();
    why[0] = line[0] = 0;
    a = d_good("A (full eventfd)", sock_path, why, sizeof why);
    int full = d2_full_eventfd();
    bool ok = a && full >= 0 && d2_give_call(a, full) && d_both_ways(a, b, 0, why, sizeof why) &&
              d_both_ways(a, b, 1, why, sizeof why);
    logged = d_logged(from, "ring 0: call eventfd write failed: Resource temporarily unavailable (its counter is at "
                      "its maximum)", 3, line, sizeof line);
    unsigned long long dropped = 0;
    for (double end = now() + 3 * time_scale; now() < end && !dropped; sleep_ms(50))
        log_scan(from, d2_calls_dropped, &dropped);
    uint16_t base;
    bool answered = a && ring_stop(a, &a->qp[0].rx, &base) && ring_restart(a, &a->qp[0].rx, base, true);
    d_check(from, ok && logged && log_count(from, "call eventfd write failed") == 1 && dropped > 0 && answered &&
          backend_alive(), "%s: an eventfd whose counter is full: \"%s\" (once), --stats \"calls dropped %llu\"; "
          "frames both ways on both pairs meanwhile; GET_VRING_BASE answered%s%s", what, d_text(line), dropped,
          why[0] ? "; " : "", why);
    if (full >= 0)
        close(full);
    conn_free(a);

    /* The same eventfd made blocking again by the frontend (the flag is
     * shared): the poll thread's write blocks; it is interrupted, the ring
     * broken, and the other rings on that thread move again. */
    from = log_size();
    why[0] = line[0] = 0;
    a = d_good("A (blocking eventfd)", sock_path, why, sizeof why);
    full = d2_full_eventfd();
    ok = a && full >= 0 && d2_give_call(a, full) && fcntl(full, F_SETFL, 0) == 0;
    if (ok)
        d2_frames_to_a(b);
    logged = d_logged(from, "writing its call eventfd blocked until the poll thread was interrupted", 5, line,
                      sizeof line);
    bool pair1 = ok && d_both_ways(a, b, 1, why, sizeof why);
    bool b_tx = ok && tx_wait_done(b, &b->qp[0]);
    answered = a && ring_stop(a, &a->qp[0].rx, &base);
    int good = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    bool again = answered && vu_set_fd(a, VHOST_USER_SET_VRING_CALL, 0, good) &&
                 ring_restart(a, &a->qp[0].rx, base, true) && d_both_ways(a, b, 0, why, sizeof why);
    if (a && good >= 0) {
        close(a->qp[0].rx.call_fd);
        a->qp[0].rx.call_fd = good;
    }
    d_check(from, ok && logged && pair1 && b_tx && again && backend_alive(), "%s: the frontend clears O_NONBLOCK on a full "
          "call eventfd: \"%s\"; pair 1 goes on both ways; GET_VRING_BASE answered, and with a new call fd pair 0 "
          "forwards again%s%s", what, d_text(line), why[0] ? "; " : "", why);
    if (full >= 0)
        close(full);
    conn_free(a);
    d_after(what, b, d2_arm);
}

/* --- D3: a frontend that never reads its replies ------------------------- */

/* GET_FEATURES after GET_FEATURES, never reading a reply, until the
 * back-end takes no more: A's socket is full, and stays full for a while
 * (the back-end reads no message while a reply waits for room).  One full
 * socket is not enough: the back-end may be answering what it holds into
 * room of its own. */
static int d3_flood(struct conn *a)
{
    struct vu_header h = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, 0 };
    int n = 0, still = 0;
    for (double end = now() + 3 * time_scale; still < 4 && now() < end; sleep_ms(50)) {
        int before = n;
        while (n < 100000 && send(a->sock, &h, sizeof h, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof h)
            n++;
        still = n == before ? still + 1 : 0;
    }
    return n;
}

static void d3_arm(struct conn *a, struct conn *b)
{
    (void)b;
    d3_flood(a);
    sleep_ms(50);
}

static void d3_replies(void)
{
    const char *what = "D3 a frontend that never reads its replies";
    struct conn *b;
    long from;
    struct conn *a = d_begin(what, d_args, &b, &from);
    if (!a)
        return;
    char line[600] = "", why[600] = "";
    int n = d3_flood(a);
    /* While A's reply waits: B answered, and A's own rings still run. */
    bool served = d_b_served(b, a, why, sizeof why) && d_both_ways(a, b, 0, why, sizeof why);
    bool logged = d_logged(from, "the frontend does not read its replies (deadline per reply): connection reset", 6,
                           line, sizeof line) && strstr(line, "reply to GET_FEATURES");
    bool reset = d_closed(a->sock, 5);
    d_check(from, n > 10 && served && logged && reset && backend_alive(), "%s: %d GET_FEATURES sent unread; meanwhile B is "
          "answered and frames go both ways; then \"%s\"%s%s", what, n, d_text(line), why[0] ? "; " : "", why);
    conn_free(a);
    d_after(what, b, d3_arm);
}

/* --- D4: a message sent one byte at a time -------------------------------- */

static void d4_arm(struct conn *a, struct conn *b)
{
    (void)b;
    struct vu_header h = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, 0 };
    if (send(a->sock, &h, 1, MSG_NOSIGNAL) != 1) { /* the check after fails */ }
    sleep_ms(50);
}

static void d4_slow(void)
{
    const char *what = "D4 a message sent one byte every 1.5 s";
    struct conn *b;
    long from;
    struct conn *a = d_begin(what, d_args, &b, &from);
    if (!a)
        return;
    char line[600] = "", why[600] = "";
    struct vu_header h = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION, 0 };
    const uint8_t *bytes = (const uint8_t *)&h;
    int sent = 0;
    bool served = true, reset = false;
    /* A byte, then 1.5 s in which B must be served and the data path run;
     * the connection must be reset long before the 12th byte. */
    for (int i = 0; i < 12 && !reset; i++) {
        if (send(a->sock, bytes + i, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1)
            sent++;
        double next = now() + 1.5 * time_scale;
        if (i == 0)
            served = d_b_served(b, a, why, sizeof why) && d_both_ways(a, b, 0, why, sizeof why);
        while (now() < next && !(reset = d_closed(a->sock, 0.05)))
            ;
    }
    bool logged = d_logged(from, "(deadline per message): connection reset", 3, line, sizeof line) &&
                  strstr(line, "message: truncated header (");
    d_check(from, served && reset && sent < 12 && logged && backend_alive(), "%s: %d bytes of a header sent, meanwhile B "
          "answered and frames both ways; then \"%s\"%s%s", what, sent, d_text(line), why[0] ? "; " : "", why);
    conn_free(a);
    d_after(what, b, d4_arm);
}

/* --- D5: kick fds that are always readable, with --trace=rings ------------ */

static _Atomic bool d5_stop;

static void *d5_hammer(void *arg)
{
    int fd = *(int *)arg;
    while (!atomic_load(&d5_stop))
        if (eventfd_write(fd, 1) < 0)
            sleep_ms(0);
    return NULL;
}

/* Kick lines of A's ring 1, and the largest read count a summary line gave. */
struct d5_count {
    int lines;
    unsigned max_reads;
};

static bool d5_line(const char *line, void *arg)
{
    struct d5_count *c = arg;
    const char *p = strstr(line, "ring 1: ");
    if (!p || !strstr(line, sock_path) || strstr(line, sock_path2))
        return false;
    if (strstr(p, ": kick (count "))
        c->lines++;
    const char *r = strstr(p, "more kicks in ");
    if (r) {
        c->lines++;
        unsigned reads = (unsigned)strtoul(r + 14, NULL, 10);
        if (reads > c->max_reads)
            c->max_reads = reads;
    }
    return false;
}

static void d5_arm(struct conn *a, struct conn *b)
{
    static int fd;
    (void)b;
    fd = a->qp[0].tx.kick_fd;
    pthread_t t;
    atomic_store(&d5_stop, false);
    if (pthread_create(&t, NULL, d5_hammer, &fd) == 0) {
        sleep_ms(100);
        atomic_store(&d5_stop, true);
        pthread_join(t, NULL);
    }
}

/* One refusal: fd given as ring 0's kick. */
static void d5_refused(struct conn *b, const char *what, const char *kind, int fd)
{
    char line[600] = "", why[600] = "", needle[120];
    long from = log_size();
    struct conn *a = d_good("A", sock_path, why, sizeof why);
    bool sent = a && fd >= 0 && vu_set_fd(a, VHOST_USER_SET_VRING_KICK, 0, fd);
    snprintf(needle, sizeof needle, "SET_VRING_KICK: ring 0: fd is %s, not an eventfd", kind);
    bool logged = d_logged(from, needle, 5, line, sizeof line);
    bool reset = a && d_closed(a->sock, 5);
    bool served = d_b_served(b, NULL, why, sizeof why);
    d_check(from, sent && logged && reset && served && backend_alive(), "%s: %s as kick fd is refused: \"%s\"; A reset; "
          "B served%s%s", what, kind, d_text(line), why[0] ? "; " : "", why);
    conn_free(a);
}

static void d5_kicks(void)
{
    const char *what = "D5 kick fds always readable (--trace=rings)";
    struct conn *b;
    long from;
    struct conn *a = d_begin(what, d_args_trace, &b, &from);
    if (!a)
        return;
    conn_free(a);       /* d5_refused connects its own A */
    int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    d5_refused(b, what, "a character device", zero);
    close(zero);
    int sp[2] = { -1, -1 };
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0)
        close(sp[1]);       /* its peer hung up: readable, at EOF, for ever */
    d5_refused(b, what, "a socket", sp[0]);
    close(sp[0]);

    /* A real eventfd, kicked as fast as a thread can: the log stays short,
     * the control loop reads it at most 100 times a second, and B and the
     * data path are served meanwhile. */
    char why[600] = "";
    a = d_good("A (kick storm)", sock_path, why, sizeof why);
    long start = log_size();
    double t0 = now();
    pthread_t t;
    static int kick;
    kick = a ? a->qp[0].tx.kick_fd : -1;
    atomic_store(&d5_stop, false);
    bool hammering = a && pthread_create(&t, NULL, d5_hammer, &kick) == 0;
    bool served = hammering && d_b_served(b, a, why, sizeof why) && d_both_ways(a, b, 0, why, sizeof why);
    while (hammering && now() - t0 < 2.5 * time_scale)
        sleep_ms(50);
    atomic_store(&d5_stop, true);
    if (hammering)
        pthread_join(t, NULL);
    double secs = now() - t0;
    sleep_ms(1100);     /* the summary of the last second comes with the next kick: one more */
    if (a)
        (void)eventfd_write(kick, 1);
    sleep_ms(300);
    struct d5_count c = { 0, 0 };
    log_scan(start, d5_line, &c);
    int bound = (int)((secs + 2) * (5 + 1));     /* 5 kick lines and one summary a second */
    d_check(from, hammering && served && c.lines > 0 && c.lines <= bound && c.max_reads <= 100 && backend_alive(),
          "%s: a thread kicks A's ring 1 for %.1f s: %d kick lines in the log (at most %d), at most %u reads in a "
          "second (at most 100); B and the data path served meanwhile%s%s", what, secs, c.lines, bound, c.max_reads,
          why[0] ? "; " : "", why);
    conn_free(a);
    d_after(what, b, d5_arm);
}

/* --- D6: a packed ring after the back-end is killed ---------------------- */

static void d6_packed(void)
{
    const char *what = "D6 a packed ring after the back-end is killed";
    if (!start_backend(d_binary, NULL) || !wait_for_socket(20)) {
        check(false, "%s: start the back-end", what);
        return;
    }
    struct conn *c = conn_new("packed", false);
    struct pring rx, tx;
    memset(&rx, 0, sizeof rx);
    memset(&tx, 0, sizeof tx);
    rx.kick_fd = rx.call_fd = tx.kick_fd = tx.call_fd = -1;
    const uint32_t base = 1u << 15;     /* slot 0, wrap 1: what QEMU keeps sending after a crash */
    uint32_t seq = 0;
    long from = log_size();
    bool ok = c && conn_connect(c) && packed_handshake(c, &rx, &tx, base);
    for (int round = 0; ok && round < 7; round++, seq += 3)    /* 21 frames: 2.6 laps of 8 slots */
        ok = packed_round(c, &rx, &tx, seq, 3, round < 6 ? 0x2 : 0);
    d_check(from, ok, "%s: 21 frames through 8-slot packed rings (2.6 laps, some TX chains of two slots)%s%s", what,
          ok ? "" : ": ", c ? c->err : "");
    /* The crash; meanwhile the driver offers 2 frames and RX buffers. */
    kill_backend();
    from = log_size();
    bool offered = ok && packed_rx_buffer(&rx) && packed_rx_buffer(&rx) && packed_tx_frame(&tx, seq, false) &&
                   packed_tx_frame(&tx, seq + 1, false);
    close(c->sock);
    c->sock = -1;
    char line[600] = "";
    ok = offered && start_backend(d_binary, NULL) && wait_for_socket(20) && conn_connect(c) &&
         packed_session(c, &rx, &tx, base, false);
    bool logged = d_logged(from, "ring 1: packed ring: SET_VRING_BASE slot 0 wrap 1 is not where the ring stands", 5,
                           line, sizeof line) && strstr(line, "2 chains in flight") &&
                  log_count(from, "SET_VRING_CALL before SET_OWNER: taking it as the owner") == 1;
    bool resumed = ok && packed_collect(c, &rx, &tx, seq, 2, tx.inflight);
    seq += 2;
    for (int round = 0; resumed && round < 4; round++, seq += 3)
        resumed = packed_round(c, &rx, &tx, seq, 3, 0x2);
    d_check(from, ok && logged && resumed && backend_alive(), "%s: restarted from the stale base (no SET_OWNER on the "
          "new connection, the owner taken once), the back-end says \"%s\"; "
          "the 2 frames offered while it was down come back first, then 12 more%s%s", what, d_text(line),
          resumed ? "" : ": ", c->err);
    double took;
    int st;
    bool gone = stop_backend_within(&took, &st);
    d_check(from, gone && WIFEXITED(st) && WEXITSTATUS(st) == 0 && took < SIGTERM_LIMIT * time_scale,
          "%s: SIGTERM ends the back-end in %.2f s (< %.1f s), exit status %d", what, took, SIGTERM_LIMIT,
          gone && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    pring_close(&rx);
    pring_close(&tx);
    conn_free(c);
}

/* `only`: the digits of the attacks to run (none: all six). */
static void run_attacks(const char *binary, const char *only)
{
    static void (*const attacks[6])(void) = { d1_memory, d2_call, d3_replies, d4_slow, d5_kicks, d6_packed };
    bool some = strpbrk(only, "123456") != NULL;
    d_binary = binary;
    double t = now();
    for (int i = 0; i < 6; i++)
        if (!some || strchr(only, '1' + i))
            attacks[i]();
    diag("D: attacks in %.1f s", now() - t);
}

/* === main ================================================================ */

int main(int argc, char **argv)
{
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";
    const char *parts = argc > 2 ? argv[2] : "ABCD";    /* which sections to run: for debugging one */
    double t;

    unsetenv("VX_BACKEND_CMD");     /* every check reads vhost-xdp's own log */
    if (!fe_start("test_hostile", ALARM_SECONDS, binary, backend_args))
        return 1;
    int fds_start = count_fds(backend_pid, NULL, 0);
    prefix_memfd = memfd_of(1u << 20);
    char why[400];
    const char *bad = good_frontend(why, sizeof(why));
    check(!bad, "a well-behaved front-end moves %d frames%s%s", GOOD_FRAMES, bad ? ": " : "", bad ? bad : "");

    t = now();
    size_t nbad = sizeof(bad_messages) / sizeof(bad_messages[0]);
    for (size_t i = 0; i < nbad && backend_alive() && strchr(parts, 'A'); i++)
        run_bad_message((int)i + 1, &bad_messages[i]);
    if (backend_alive() && strchr(parts, 'A'))
        run_before_owner((int)nbad + 1);
    diag("A: %zu malformed messages in %.1f s", nbad, now() - t);

    t = now();
    if (backend_alive() && strchr(parts, 'B'))
        run_hostile_guest();
    diag("B: %zu hostile guest rows in %.1f s", sizeof(bad_guests) / sizeof(bad_guests[0]), now() - t);

    if (backend_alive() && strchr(parts, 'C'))
        run_cycles();
    int fds_end = count_fds(backend_pid, NULL, 0);
    check(fds_end == fds_start, "back-end has %d open fds at the end, as at the start (%d)", fds_end, fds_start);

    if (!backend_alive())
        check(false, "back-end still running at the end");
    stop_backend();

    if (strchr(parts, 'D'))
        run_attacks(binary, parts);
    return fe_finish();
}
