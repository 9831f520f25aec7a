/*
 * tests/fuzz/fuzz_vhost_user.c - libFuzzer target: the vhost-user message
 * reader and dispatcher (vhost_user.c), and behind it the data path over the
 * memory table the messages set up.
 *
 * The input is a hostile frontend's script (format: fuzz_format.h): bytes
 * sent on the connection with real fds attached (a memfd of guest memory,
 * eventfds, a too-small memfd, a pipe, a read-only memfd), writes into guest
 * memory, poll-loop iterations over the rings that are ready, and
 * disconnects.  Everything runs in this process, on the real code:
 *
 *   - the connection lives in this process's memory ("The wire" below): the
 *     product's recvmsg() and send() on its connection are linked to ours
 *     (ld --wrap), which hand it the bytes and fds the script sent, with the
 *     stream socket's rules (fds with a chunk's first byte, MSG_CTRUNC when
 *     they do not fit, EOF after a shutdown, EAGAIN when nothing is there or
 *     the reply buffer is full); its conn_fd is a real fd (a dup of /dev/null)
 *     so that closing it is real too.  The device is set up by vu_init() in
 *     client mode, which opens nothing; we never ask it to connect;
 *   - the fds it is sent come from pools opened once, and what it asks the
 *     kernel about them (fstat, readlink of /proc/self/fd/N, fcntl F_GETFL/
 *     F_SETFL, a write to an eventfd, an mmap that must fail) is answered as
 *     the kernel would, from answers taken once at init ("The kernel's
 *     answers on pooled fds");
 *   - after each message we call vu_handle_event() while it has something to
 *     read or a reply to finish, as main.c's poll loop does; when the
 *     dispatcher resets the connection (conn_fd becomes -1) we connect again;
 *   - no PMD thread runs, so pmd_quiesce() returns at once, and the
 *     VUF_OP_BURST records play the PMD: one loopback iteration of
 *     pmd_loop.c over each ready queue pair, plus packets of fuzzed length
 *     into each ready RX ring.
 *
 * What must hold, whatever the input:
 *   - memory safety (ASan, UBSan; product mappings of a too-small file would
 *     SIGBUS);
 *   - every reply is 20 bytes with flags exactly VERSION|REPLY;
 *   - a ready ring belongs to an existing queue pair, was started (and
 *     enabled, with PROTOCOL_FEATURES), is attached to the current memory
 *     table with its current addresses, size and features (nothing stale
 *     from before a message changed them), and its three areas lie inside
 *     mapped regions; the table has at most 8 regions and each region's host range lies in
 *     its mapping; every fd the device holds is open;
 *   - bursts return no more than asked, nothing from a broken ring;
 *   - at the end of each input, after vu_cleanup(): no fd left open, no
 *     mapping of guest memory left (the product's mmap() and munmap() are
 *     linked to ours too, which keep the table of its live mappings).
 *
 * Speed (issue 14): this target ran 1.5 k inputs a second.  perf and strace
 * said why: about 290 system calls per input, most of them per message (a
 * sendmsg, several polls, two recvmsg and a send through a socketpair, 48
 * fcntl to check the device's fds, a socketpair per reconnect), plus
 * /proc/self/maps read and parsed at every input; each system call costs
 * microseconds on this VM.  With the connection in memory, the fds pooled
 * and the kernel's answers about them given here, the mappings counted as
 * they are made, and guest memory kept mapped here, written with memcpy()
 * and zeroed page by page ("Guest memory"), about 4 system calls per input
 * are left (the two fd scans, the product's mmap/munmap of its memory table
 * and a read of /proc/self/pagemap at each munmap); what remains is mostly
 * the product's own code under ASan, UBSan and comparison tracing, and
 * libFuzzer's bookkeeping (README.md in this directory has the figures and
 * the profile).
 *
 * Build and run: `make fuzz` (see tests/fuzz/run.sh).  Product logs are
 * silenced; VX_FUZZ_LOG=1 shows them (useful when replaying one input).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "fuzz_format.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static FILE *out;               /* the real stderr: product logs go to /dev/null */

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)

static void fail(int line, const char *cond)
{
    fprintf(out, "fuzz_vhost_user.c:%d: invariant broken: %s\n", line, cond);
    fflush(out);
    abort();
}

/* === What lives across inputs ============================================ */

static int fd_of_kind[VUF_NFDKINDS];
static int first_free_fd;       /* the fds we open per input are from here up */
#define FD_SCAN 32              /* ... and below first_free_fd + FD_SCAN (the product opens
                                   none itself here: the fds it is sent are the pools') */
static bool open_at_start[FD_SCAN];     /* per input: the fuzzer's own runtime opens
                                           some between inputs (its symbolizer's pipes) */
static uint8_t *pkt_buf[VX_BURST];

/*
 * The fds the backend receives.  SCM_RIGHTS gives the receiver new fds,
 * which it owns and closes; a dup() per fd sent and a close() per fd
 * closed were half the system calls of an input.  So each kind has a pool
 * of fds opened once (dups of fd_of_kind's), handed out one per fd sent,
 * and the product's close() (ld --wrap=close) puts one back: no system
 * call, and a close of an fd the product does not hold (a double close) is
 * caught.  The connection's fd is one more, opened once (on /dev/null).
 */
#define POOL 72                 /* per kind: more than 16 rings x 3 fds + a message's 12 */
#define POOL_FDS 4096           /* fd numbers the tables below cover */
static int pool[VUF_NFDKINDS][POOL];
static int pool_free[VUF_NFDKINDS][POOL], pool_nfree[VUF_NFDKINDS];
static uint8_t fd_state[POOL_FDS];      /* FD_* below, by fd number */
static uint8_t fd_kind[POOL_FDS];       /* a pool fd's VUF_FD_* kind */
enum { FD_OTHER, FD_FREE, FD_HELD, FD_CONN_OPEN, FD_CONN_CLOSED };
static int conn_fd_once = -1;

static struct vx_dev dev;

static void kernel_answers_init(void);     /* "The kernel's answers", below */
static void guest_memory_init(void);       /* "Guest memory", below */

/*
 * ASan's quarantine holds freed heap memory back from reuse, so that a use
 * after free finds it poisoned; by default up to 256 MiB.  The product
 * allocates nothing on the paths this target drives (its buffers are made
 * at start-up, in pmd_loop.c and switch.c, which run no thread here): all
 * the per-input allocations are libFuzzer's own (its copy of each input),
 * and with 256 MiB each came from memory never touched before, a page fault
 * or two per input that cost more than the input's system calls.  16 MiB
 * still holds thousands of inputs' worth.  ASAN_OPTIONS overrides it.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=16";
}

static ssize_t drop_write(void *cookie, const char *buf, size_t len)
{
    (void)cookie, (void)buf;
    return (ssize_t)len;
}

static int memfd(const char *name, size_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, size) < 0)
        abort();
    return fd;
}

static void init(void)
{
    out = stderr;
    if (!getenv("VX_FUZZ_LOG")) {
        /* The product's log lines (vx_log() writes to stderr), about 25 an
         * input, go nowhere: a stream whose writes are dropped in this
         * process, not a write() to /dev/null every 4 KiB. */
        static const cookie_io_functions_t drop = { .write = drop_write };
        FILE *null = fopencookie(NULL, "w", drop);
        if (null)
            stderr = null;      /* glibc allows it */
    }
    fd_of_kind[VUF_FD_GUEST] = memfd("vx-fuzz-guest", VUF_GUEST_SIZE);
    fd_of_kind[VUF_FD_EVENT] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    fd_of_kind[VUF_FD_SMALL] = memfd("vx-fuzz-small", VUF_SMALL_SIZE);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        abort();
    fd_of_kind[VUF_FD_PIPE] = p[0];
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd_of_kind[VUF_FD_GUEST]);
    fd_of_kind[VUF_FD_RDONLY] = open(path, O_RDONLY | O_CLOEXEC);
    conn_fd_once = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd_of_kind[VUF_FD_EVENT] < 0 || fd_of_kind[VUF_FD_RDONLY] < 0 || conn_fd_once < 0 || conn_fd_once >= POOL_FDS)
        abort();
    for (int k = 0; k < VUF_NFDKINDS; k++) {
        for (int i = 0; i < POOL; i++) {
            int fd = fcntl(fd_of_kind[k], F_DUPFD_CLOEXEC, 0);
            if (fd < 0 || fd >= POOL_FDS)
                abort();
            pool[k][i] = pool_free[k][i] = fd;
            fd_state[fd] = FD_FREE;
            fd_kind[fd] = (uint8_t)k;
        }
        pool_nfree[k] = POOL;
    }
    kernel_answers_init();
    guest_memory_init();
    for (int i = 0; i < VX_BURST; i++)
        if (!(pkt_buf[i] = malloc(VX_PKT_MAX)))
            abort();
    /* p[1] stays open (a pipe whose writer is gone reads as EOF, fine too). */
    first_free_fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
    close(first_free_fd);
}

/* === The wire: the connection, in this process's memory =================== */

/* An fd of `kind` for the backend, as SCM_RIGHTS would make it; -1 when the
 * pool is empty (it never is: see POOL). */
static int pool_take(int kind)
{
    if (!pool_nfree[kind])
        return -1;
    int fd = pool_free[kind][--pool_nfree[kind]];
    fd_state[fd] = FD_HELD;
    return fd;
}

/* The product's close() (ld --wrap=close): a pool fd goes back, the
 * connection's is marked closed; an fd it does not hold is a bug. */
int __real_close(int fd);
int __wrap_close(int fd)
{
    if (fd < 0 || fd >= POOL_FDS || fd_state[fd] == FD_OTHER)
        return __real_close(fd);
    CHECK(fd_state[fd] == FD_HELD || fd_state[fd] == FD_CONN_OPEN);     /* closed twice */
    if (fd_state[fd] == FD_CONN_OPEN) {
        fd_state[fd] = FD_CONN_CLOSED;
        return 0;
    }
    for (int k = 0; k < VUF_NFDKINDS; k++)
        for (int i = 0; i < POOL; i++)
            if (pool[k][i] == fd) {
                fd_state[fd] = FD_FREE;
                pool_free[k][pool_nfree[k]++] = fd;
                return 0;
            }
    abort();
}

/*
 * What the frontend sent and the backend has not read yet, as the chunks of
 * each send (a unix stream socket keeps SCM_RIGHTS fds with the first byte
 * of the sendmsg() that carried them, and a read never runs on into a chunk
 * that carries fds), and what the backend answered.  Sizes as a socket's
 * buffers would be, roughly; `reply_room` is what the backend's sends may
 * still fill before they get EAGAIN (a frontend that is slow to read).
 */
#define WIRE_BYTES  65536
#define WIRE_CHUNKS 256
static struct {
    int fd;                     /* the backend's end: a dup of /dev/null, which it closes */
    uint8_t bytes[WIRE_BYTES];
    uint32_t len, off;          /* queued, and read by the backend */
    struct { uint32_t start; uint8_t nfds; uint8_t kinds[VUF_MAX_FDS]; } chunk[WIRE_CHUNKS];
    int nchunks;
    bool shut;                  /* the frontend shut its end: EOF once the bytes are read */
    uint8_t replies[256];       /* backend -> frontend, checked and dropped by drain_replies */
    uint32_t replies_len, reply_room, reply_room_full;
    uint64_t sent;              /* bytes the backend has sent, ever: has it moved? */
} wire = { .fd = -1 };

static void connect_frontend(uint32_t reply_room)
{
    wire.fd = dev.conn_fd = conn_fd_once;
    fd_state[wire.fd] = FD_CONN_OPEN;
    wire.len = wire.off = 0;
    wire.nchunks = 0;
    wire.shut = false;
    wire.replies_len = 0;
    wire.reply_room = wire.reply_room_full = reply_room;
}

/* The product's recvmsg() on its connection (ld --wrap=recvmsg). */
ssize_t __real_recvmsg(int fd, struct msghdr *mh, int flags);
ssize_t __wrap_recvmsg(int fd, struct msghdr *mh, int flags)
{
    if (fd != wire.fd || fd < 0)
        return __real_recvmsg(fd, mh, flags);
    mh->msg_flags = 0;
    size_t controllen = mh->msg_controllen;
    mh->msg_controllen = 0;
    if (wire.off == wire.len) {
        if (wire.shut)
            return 0;
        errno = EAGAIN;
        return -1;
    }
    /* The chunk wire.off is in, and where the read must stop: the next
     * chunk that carries fds. */
    int c = 0;
    while (c + 1 < wire.nchunks && wire.chunk[c + 1].start <= wire.off)
        c++;
    uint32_t end = wire.len;
    for (int k = c + 1; k < wire.nchunks; k++)
        if (wire.chunk[k].nfds) {
            end = wire.chunk[k].start;
            break;
        }
    uint32_t n = end - wire.off;
    if (n > mh->msg_iov[0].iov_len)
        n = (uint32_t)mh->msg_iov[0].iov_len;
    /* Fds ride with the chunk's first byte: new fds for the backend (as
     * SCM_RIGHTS makes them), as many as its control buffer holds. */
    if (wire.off == wire.chunk[c].start && wire.chunk[c].nfds) {
        int fit = controllen >= CMSG_LEN(0) ? (int)((controllen - CMSG_LEN(0)) / sizeof(int)) : 0;
        int nfds = wire.chunk[c].nfds < fit ? wire.chunk[c].nfds : fit;
        if (nfds < wire.chunk[c].nfds)
            mh->msg_flags |= MSG_CTRUNC;
        if (nfds > 0) {
            struct cmsghdr *cm = (struct cmsghdr *)mh->msg_control;
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
            for (int i = 0; i < nfds; i++) {
                int given = pool_take(wire.chunk[c].kinds[i]);
                memcpy(CMSG_DATA(cm) + i * sizeof(int), &given, sizeof given);
            }
            mh->msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        }
    }
    memcpy(mh->msg_iov[0].iov_base, wire.bytes + wire.off, n);
    wire.off += n;
    return n;
}

/* The product's send() on its connection (ld --wrap=send). */
ssize_t __real_send(int fd, const void *buf, size_t len, int flags);
ssize_t __wrap_send(int fd, const void *buf, size_t len, int flags)
{
    if (fd != wire.fd || fd < 0)
        return __real_send(fd, buf, len, flags);
    size_t n = len < wire.reply_room ? len : wire.reply_room;
    if (n > sizeof wire.replies - wire.replies_len)
        n = sizeof wire.replies - wire.replies_len;
    if (n == 0) {
        errno = EAGAIN;
        return -1;
    }
    memcpy(wire.replies + wire.replies_len, buf, n);
    wire.replies_len += (uint32_t)n;
    wire.reply_room -= (uint32_t)n;
    wire.sent += n;
    return (ssize_t)n;
}

/* The frontend reads what the backend answered: each reply is a 12-byte
 * header, flags exactly VERSION|REPLY, and an 8-byte payload (u64 or vring
 * state); a reply cut in two is kept until its end comes. */
static void drain_replies(void)
{
    uint32_t k = 0;
    for (; wire.replies_len - k >= 20; k += 20) {
        uint32_t hdr[3];
        memcpy(hdr, wire.replies + k, sizeof hdr);
        CHECK(hdr[1] == 0x5);
        CHECK(hdr[2] == 8);
    }
    memmove(wire.replies, wire.replies + k, wire.replies_len - k);
    wire.replies_len -= k;
    wire.reply_room = wire.reply_room_full;
}

/* One send of the frontend: its bytes queued (what does not fit is
 * dropped, as a full socket would refuse it), its fds on the first. */
static void send_msg(const uint8_t *bytes, size_t len, const uint8_t *kinds, int nfds)
{
    if (wire.off == wire.len) {     /* all read: start again at the front */
        wire.len = wire.off = 0;
        wire.nchunks = 0;
    }
    if (len > WIRE_BYTES - wire.len)
        len = WIRE_BYTES - wire.len;
    if (len == 0 || wire.nchunks == WIRE_CHUNKS)
        return;
    wire.chunk[wire.nchunks].start = wire.len;
    wire.chunk[wire.nchunks].nfds = (uint8_t)nfds;
    memcpy(wire.chunk[wire.nchunks].kinds, kinds, nfds);
    wire.nchunks++;
    memcpy(wire.bytes + wire.len, bytes, len);
    wire.len += (uint32_t)len;
}

/* === The kernel's answers on pooled fds ================================== */

/*
 * With the wire in memory and the fds pooled, the system calls left in an
 * input were the product's own, on the fds it is sent: for each kick, call
 * and err fd, vu_take_eventfd()'s fstat(), readlink() of /proc/self/fd/N and
 * fcntl(F_GETFL); for each region, vu_map_region()'s fstat(); and
 * virtqueue.c's write() of 1 to a call eventfd for every interrupt.  Each
 * pool fd is a dup of one file per kind, made at init and never changed
 * after (the memfds keep their size: guest memory is zeroed by hand,
 * "Guest memory"), so what the kernel would answer is known.  It is asked
 * once, at init, of the real file, and given back from here:
 *   - fstat: the file's struct stat as the kernel gave it (the product reads
 *     the type, st_size and st_blksize; times and st_blocks are those of
 *     init);
 *   - readlink("/proc/self/fd/N"): the link text of the kind's file
 *     ("anon_inode:[eventfd]", "/memfd:vx-fuzz-guest (deleted)", ...);
 *   - fcntl(F_GETFL/F_SETFL): the file status flags.  A dup shares them with
 *     its file (they belong to the open file description), so they are kept
 *     per kind, as the kernel keeps them; a change goes to the real file too;
 *   - write() to the eventfd: its counter, also one per kind (shared by the
 *     dups), with the eventfd(2) rules: 8 bytes or EINVAL, 2^64-1 is EINVAL,
 *     and a sum past 2^64-2 is EAGAIN with O_NONBLOCK (without it the write
 *     would block: the product must never let that happen, so it fails the
 *     input).  What the product wrote is read back (and dropped) at the start
 *     of the next input, as the real read() did.
 * A pool fd the product does not hold is closed as far as it can know:
 * EBADF (ENOENT for its /proc link), as for any fd number not open.  Every
 * other fd goes to the real call.
 */
static struct stat kind_stat[VUF_NFDKINDS];
static char kind_link[VUF_NFDKINDS][64];
static size_t kind_link_len[VUF_NFDKINDS];
static int kind_flags[VUF_NFDKINDS];
static uint64_t event_count;            /* the pool eventfd's counter */

int __real_fstat(int fd, struct stat *st);
ssize_t __real_readlink(const char *path, char *buf, size_t len);
int __real_fcntl(int fd, int cmd, ...);
ssize_t __real_write(int fd, const void *buf, size_t len);

static void kernel_answers_init(void)
{
    for (int k = 0; k < VUF_NFDKINDS; k++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd_of_kind[k]);
        ssize_t n = __real_readlink(path, kind_link[k], sizeof kind_link[k]);
        kind_flags[k] = __real_fcntl(fd_of_kind[k], F_GETFL);
        if (__real_fstat(fd_of_kind[k], &kind_stat[k]) < 0 || n <= 0 || kind_flags[k] < 0)
            abort();
        kind_link_len[k] = (size_t)n;
    }
}

/* The kind of a pool fd, or -1 for any other fd; -2 (errno EBADF) for a pool
 * fd the product does not hold. */
static int pooled(int fd)
{
    if (fd < 0 || fd >= POOL_FDS || (fd_state[fd] != FD_FREE && fd_state[fd] != FD_HELD))
        return -1;
    if (fd_state[fd] == FD_FREE) {
        errno = EBADF;
        return -2;
    }
    return fd_kind[fd];
}

int __wrap_fstat(int fd, struct stat *st)
{
    int k = pooled(fd);
    if (k == -1)
        return __real_fstat(fd, st);
    if (k < 0)
        return -1;
    memcpy(st, &kind_stat[k], sizeof *st);
    return 0;
}

ssize_t __wrap_readlink(const char *path, char *buf, size_t len)
{
    static const char prefix[] = "/proc/self/fd/";
    char *end;
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return __real_readlink(path, buf, len);
    long fd = strtol(path + sizeof prefix - 1, &end, 10);
    int k = *end || fd < 0 || fd >= POOL_FDS ? -1 : pooled((int)fd);
    if (k == -1)
        return __real_readlink(path, buf, len);
    if (k < 0) {
        errno = ENOENT;     /* no such entry in /proc/self/fd */
        return -1;
    }
    size_t n = kind_link_len[k] < len ? kind_link_len[k] : len;     /* cut short, no NUL: readlink(2) */
    memcpy(buf, kind_link[k], n);
    return (ssize_t)n;
}

int __wrap_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);   /* as glibc reads it: one word, whatever the cmd */
    va_end(ap);
    int k = pooled(fd);
    if (k == -1 || (k >= 0 && cmd != F_GETFL && cmd != F_SETFL))
        return __real_fcntl(fd, cmd, arg);
    if (k < 0)
        return -1;
    if (cmd == F_GETFL)
        return kind_flags[k];
    /* F_SETFL changes only these (fcntl(2)); the access mode and the rest stay. */
    const int settable = O_APPEND | O_ASYNC | O_DIRECT | O_NOATIME | O_NONBLOCK;
    int want = (kind_flags[k] & ~settable) | ((int)arg & settable);
    if (want == kind_flags[k])
        return 0;
    int r = __real_fcntl(fd, F_SETFL, arg);
    if (r == 0)
        kind_flags[k] = __real_fcntl(fd, F_GETFL);
    return r;
}

ssize_t __wrap_write(int fd, const void *buf, size_t len)
{
    int k = pooled(fd);
    if (k == -1 || (k >= 0 && k != VUF_FD_EVENT))
        return __real_write(fd, buf, len);
    if (k < 0)
        return -1;
    uint64_t v;
    if (len < sizeof v) {
        errno = EINVAL;
        return -1;
    }
    memcpy(&v, buf, sizeof v);
    if (v == UINT64_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (v > UINT64_MAX - 1 - event_count) {
        CHECK(kind_flags[k] & O_NONBLOCK);      /* else the product's thread would block here for good */
        errno = EAGAIN;
        return -1;
    }
    event_count += v;
    return sizeof v;
}

/* === The device's state must be sound after every step ==================== */

static bool inside_mem(const void *p, uint64_t len)
{
    for (uint32_t i = 0; i < dev.mem.nregions; i++) {
        const struct vx_mem_region *r = &dev.mem.regions[i];
        if ((const uint8_t *)p >= r->host && len <= r->memory_size &&
            (uint64_t)((const uint8_t *)p - r->host) <= r->memory_size - len)
            return true;
    }
    return false;
}

/* Which of first_free_fd .. + FD_SCAN are open: one poll() says (POLLNVAL). */
static void scan_fds(bool open[FD_SCAN])
{
    struct pollfd p[FD_SCAN];
    for (int i = 0; i < FD_SCAN; i++)
        p[i] = (struct pollfd){ .fd = first_free_fd + i };
    if (poll(p, FD_SCAN, 0) < 0)
        abort();
    for (int i = 0; i < FD_SCAN; i++)
        open[i] = !(p[i].revents & POLLNVAL);
}

/* Every fd the device holds is one it was given and has not closed. */
static void check_device_fds(void)
{
    for (uint32_t i = 0; i < VX_MAX_VRINGS; i++) {
        const struct vx_vring *vr = &dev.vrings[i];
        const int fds[3] = { vr->kick_fd, vr->call_fd, vr->err_fd };
        for (int k = 0; k < 3; k++)
            CHECK(fds[k] == -1 || (fds[k] >= 0 && fds[k] < POOL_FDS && fd_state[fds[k]] == FD_HELD));
    }
}

static void check_device(void)
{
    check_device_fds();
    CHECK(dev.mem.nregions <= VX_MAX_REGIONS);
    for (uint32_t i = 0; i < dev.mem.nregions; i++) {
        const struct vx_mem_region *r = &dev.mem.regions[i];
        CHECK(r->host == (uint8_t *)r->mmap_addr + r->mmap_offset);
        CHECK(r->mmap_offset <= r->mmap_size && r->memory_size <= r->mmap_size - r->mmap_offset);
    }
    for (uint32_t i = 0; i < VX_MAX_VRINGS; i++) {
        const struct vx_vring *vr = &dev.vrings[i];
        CHECK(vr->index == i);
        if (!__atomic_load_n(&vr->ready, __ATOMIC_SEQ_CST))
            continue;
        CHECK(i < 2 * dev.queue_pairs);
        CHECK(vr->attached && vr->mem == &dev.mem);
        CHECK(vr->packed == !!(dev.features & (1ull << VIRTIO_F_RING_PACKED)));
        if (vr->packed) {
            /* Packed (§2.8): any size, one descriptor ring and two 4-byte
             * event areas; the split pointers are cleared. */
            CHECK(vr->num && vr->num <= VX_MAX_RING_SIZE);
            CHECK(!vr->desc && !vr->avail && !vr->used);
            CHECK(inside_mem(vr->desc_packed, 16ull * vr->num));
            CHECK(inside_mem(vr->driver_event, 4) && inside_mem(vr->device_event, 4));
            CHECK(vr->desc_packed == vx_uva_to_va(&dev.mem, vr->desc_user_addr, 16ull * vr->num));
            CHECK(vr->driver_event == vx_uva_to_va(&dev.mem, vr->avail_user_addr, 4));
            CHECK(vr->device_event == vx_uva_to_va(&dev.mem, vr->used_user_addr, 4));
            CHECK(vr->last_avail_idx < vr->num && vr->last_used_idx < vr->num);
        } else {
            CHECK(vr->num && vr->num <= VX_MAX_RING_SIZE && !(vr->num & (vr->num - 1)));
            CHECK(!vr->desc_packed && !vr->driver_event && !vr->device_event);
            CHECK(inside_mem(vr->desc, 16ull * vr->num));
            CHECK(inside_mem(vr->avail, 6 + 2ull * vr->num));
            CHECK(inside_mem(vr->used, 6 + 8ull * vr->num));
            /* ... and attached for the current settings, not stale ones: the
             * addresses, the size and the features the messages set last. */
            CHECK(vr->desc == vx_uva_to_va(&dev.mem, vr->desc_user_addr, 16ull * vr->num));
            CHECK(vr->avail == vx_uva_to_va(&dev.mem, vr->avail_user_addr, 6 + 2ull * vr->num));
            CHECK(vr->used == vx_uva_to_va(&dev.mem, vr->used_user_addr, 6 + 8ull * vr->num));
        }
        CHECK(vr->mrg_rxbuf == !!(dev.features & (1ull << VIRTIO_NET_F_MRG_RXBUF)));
        CHECK(vr->event_idx == !!(dev.features & (1ull << VIRTIO_RING_F_EVENT_IDX)));
        CHECK(vr->indirect == !!(dev.features & (1ull << VIRTIO_RING_F_INDIRECT_DESC)));
        CHECK(vr->hdr_len == (dev.features & ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MRG_RXBUF))
                              ? 12u : 10u));
        /* A ready ring has been started and, with PROTOCOL_FEATURES, enabled. */
        CHECK(vr->kick_received && vr->addr_set);
        CHECK(vr->enabled || !(dev.features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)));
    }
}

/* Let the backend handle what the frontend sent, as main.c's loop does:
 * while it has bytes to read or a reply to finish, and moves.  A frontend
 * that reads its replies (`drain`) takes them after each step; a slow one
 * only between operations, so the backend's sends fill up and it must stop
 * reading until they have gone. */
static void serve(bool drain)
{
    for (int i = 0; i < 100000 && dev.conn_fd >= 0; i++) {
        uint32_t off = wire.off;
        uint64_t sent = wire.sent;
        bool pending = dev.io.out_len != 0;
        if (wire.off == wire.len && !wire.shut && !pending)
            break;
        vu_handle_event(&dev);
        check_device();
        if (drain)
            drain_replies();
        if (dev.conn_fd >= 0 && off == wire.off && sent == wire.sent)
            break;      /* no progress: it waits for the frontend */
    }
    if (dev.conn_fd < 0)        /* the backend reset the connection: reconnect */
        connect_frontend(wire.reply_room_full);
}

/* === The poll loop's part, played by us ================================== */

static void burst_enqueue(struct vx_vring *vr, struct vx_pkt *pkts, int n)
{
    bool broken = vr->broken;
    int sent = vq_enqueue_burst(vr, pkts, n);
    CHECK(sent >= 0 && sent <= n);
    CHECK(!broken || sent == 0);
}

/* The loopback's deliver step (pmd_loop.c, pmd_deliver): the burst, some
 * frames lent straight from guest TX memory, into the RX ring. */
static int delivered;
static void deliver_to_rx(void *rx, struct vx_pkt *pkts, int n)
{
    CHECK(n > 0 && n <= VX_BURST && delivered == 0);
    delivered = n;
    for (int i = 0; i < n; i++)
        CHECK(pkts[i].len <= pkts[i].room);
    if (__atomic_load_n(&((struct vx_vring *)rx)->ready, __ATOMIC_SEQ_CST))
        burst_enqueue(rx, pkts, n);
}

/* TX -> RX with one copy, as the loopback port does. */
static void burst_forward(struct vx_vring *tx, struct vx_vring *rx, struct vx_pkt *pkts)
{
    bool broken = tx->broken;
    delivered = 0;
    int got = vq_dequeue_burst_lend(tx, pkts, VX_BURST, deliver_to_rx, rx);
    CHECK(got >= 0 && got <= VX_BURST && got == delivered);
    CHECK(!broken || got == 0);
}

static void poll_rings(uint8_t n_extra, uint16_t len)
{
    struct vx_pkt pkts[VX_BURST];
    for (uint32_t k = 0; k < dev.queue_pairs; k++) {
        struct vx_vring *rx = &dev.vrings[2 * k], *tx = &dev.vrings[2 * k + 1];
        if (__atomic_load_n(&tx->ready, __ATOMIC_SEQ_CST)) {
            for (int i = 0; i < VX_BURST; i++)  /* room ends at an ASan redzone */
                pkts[i] = (struct vx_pkt){ .room = VX_PKT_MAX, .data = pkt_buf[i] };
            burst_forward(tx, rx, pkts);
        }
        int n = n_extra % (VX_BURST + 1);
        uint32_t l = len;       /* < VX_PKT_MAX */
        for (int i = 0; i < n; i++)
            pkts[i] = (struct vx_pkt){ .len = l, .room = l, .data = pkt_buf[i] + VX_PKT_MAX - l };
        if (n && __atomic_load_n(&rx->ready, __ATOMIC_SEQ_CST))
            burst_enqueue(rx, pkts, n);
    }
}

/* === Leaks =============================================================== */

/* The product's mappings of guest memory (ld --wrap=mmap,munmap): every
 * shared mapping of a file it makes, until it unmaps it.  Cheaper than
 * reading /proc/self/maps after every input, and exact. */
#define MAPS 64
static struct { void *addr; size_t len; off_t off; int kind; } maps[MAPS];
static int nmaps;
static void guest_touched_by(const uint8_t *addr, size_t len, off_t off);     /* "Guest memory" */

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    /* The kernel's answers on pooled fds (above) for the mappings that must
     * fail: a pipe has no mmap (ENODEV), a file opened read-only cannot be
     * mapped shared and writable (EACCES); an fd not held, EBADF. */
    int k = pooled(fd);
    if (k == -2 || (k == VUF_FD_PIPE && len) ||
        (k == VUF_FD_RDONLY && len && (prot & PROT_WRITE) && (flags & MAP_TYPE) == MAP_SHARED)) {
        if (k >= 0)
            errno = k == VUF_FD_PIPE ? ENODEV : EACCES;
        return MAP_FAILED;
    }
    void *p = __real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && fd >= 0 && (flags & MAP_SHARED)) {
        CHECK(nmaps < MAPS);
        maps[nmaps].addr = p;
        maps[nmaps].len = len;
        maps[nmaps].off = off;
        maps[nmaps++].kind = k;
    }
    return p;
}

int __real_munmap(void *addr, size_t len);
int __wrap_munmap(void *addr, size_t len)
{
    for (int i = 0; i < nmaps; i++) {
        if (maps[i].addr == addr) {
            CHECK(maps[i].len == len);      /* unmapped whole, as mapped */
            if (maps[i].kind == VUF_FD_GUEST)   /* what it wrote there is zeroed before the next input */
                guest_touched_by(addr, len, maps[i].off);
            maps[i] = maps[--nmaps];
            break;
        }
    }
    return __real_munmap(addr, len);
}

static void check_no_leaks(void)
{
    CHECK(dev.conn_fd == -1 && dev.mem.nregions == 0);
    bool open_now[FD_SCAN];
    scan_fds(open_now);
    for (int fd = first_free_fd; fd < first_free_fd + FD_SCAN; fd++) {
        if (open_at_start[fd - first_free_fd] || !open_now[fd - first_free_fd])
            continue;
        char path[64], target[256] = "?";
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (readlink(path, target, sizeof target - 1) < 0) { /* keep "?" */ }
        fprintf(out, "fd %d (%s) left open\n", fd, target);
        CHECK(!"fd leak");
    }
    /* Every fd the backend was given is back, and the connection closed. */
    for (int k = 0; k < VUF_NFDKINDS; k++) {
        if (pool_nfree[k] != POOL)
            fprintf(out, "%d fd(s) of kind %d left open\n", POOL - pool_nfree[k], k);
        CHECK(pool_nfree[k] == POOL);
    }
    CHECK(fd_state[conn_fd_once] == FD_CONN_CLOSED);
    /* No mapping of guest memory left. */
    if (nmaps)
        fprintf(out, "%d mapping(s) of guest memory left, the first %zu bytes at %p\n", nmaps, maps[0].len,
                maps[0].addr);
    CHECK(nmaps == 0);
    /* The rings beyond the queue pairs offered were never touched (the
     * product's loops over a device's rings stop at 2 * queue_pairs): each
     * is still byte for byte as the last reset left it, its counters kept
     * (stats, calls dropped, dirty-log marks: an input before this one may
     * have had more queue pairs). */
    for (uint32_t i = 2 * dev.queue_pairs; i < VX_MAX_VRINGS; i++) {
        struct vx_vring fresh;
        memset(&fresh, 0, sizeof fresh);
        fresh.stats = dev.vrings[i].stats;
        fresh.calls_dropped = dev.vrings[i].calls_dropped;
        fresh.log_marks = dev.vrings[i].log_marks;
        fresh.index = i;
        fresh.kick_fd = fresh.call_fd = fresh.err_fd = -1;
        fresh.avail_wrap_counter = fresh.used_wrap_counter = true;
        fresh.base_from_frontend = true;
        CHECK(memcmp(&dev.vrings[i], &fresh, sizeof fresh) == 0);
    }
}

/* === Guest memory ========================================================= */

/*
 * Each input starts with guest memory all zero.  It was a hole punched in the
 * memfd (fallocate) when an input had written it, and the script's writes a
 * pwrite() each: then every page touched again was allocated and cleared by
 * the kernel, the product's first touch of each was a page fault that did
 * it, and pwrite() was the most frequent system call left (3 an input).
 * Now the file's pages stay: the target maps the file once, at init, and
 * touches every page, so the script's writes are a memcpy() into that
 * mapping, with no system call and no fault.  Before the next input, only
 * the pages that may hold something are zeroed, with memset():
 *   - those the script wrote, kept in `dirty` as it writes them;
 *   - those the product had in its own mappings of the file: which pages of
 *     a mapping were touched (read or written) is in /proc/self/pagemap
 *     (bit 63: present), read in one pread() just before the product's
 *     munmap() (ld --wrap) takes the mapping away.  A page the product never
 *     touched has no page table entry there, so it cannot have written it.
 *     That is a superset (a page only read, or mapped by the kernel's
 *     fault-around next to one that was, is zeroed too), never less.
 * Every product mapping is gone by the end of an input (check_no_leaks), so
 * every page it wrote is known by then.
 */
#define PAGE 4096u
#define GUEST_PAGES (VUF_GUEST_SIZE / PAGE)
static uint8_t *guest;                  /* the target's own mapping of the guest memfd */
static uint64_t dirty[GUEST_PAGES / 64];
static bool any_dirty;
static int pagemap_fd = -1;

static void guest_memory_init(void)
{
    guest = __real_mmap(NULL, VUF_GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd_of_kind[VUF_FD_GUEST], 0);
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (guest == MAP_FAILED || pagemap_fd < 0)
        abort();
    memset(guest, 0, VUF_GUEST_SIZE);   /* every page allocated, and mapped here, once */
}

static void mark_dirty(uint32_t page)
{
    dirty[page / 64] |= 1ull << (page % 64);
    any_dirty = true;
}

/* The script writes guest memory (off and len already inside it). */
static void guest_write(const uint8_t *bytes, uint32_t off, uint32_t len)
{
    memcpy(guest + off, bytes, len);
    for (uint32_t page = off / PAGE; page <= (off + len - 1) / PAGE; page++)
        mark_dirty(page);
}

/* The product unmaps `len` bytes at `addr`, its mapping of the guest file
 * from offset `off`: every page it touched there is marked. */
static void guest_touched_by(const uint8_t *addr, size_t len, off_t off)
{
    static uint64_t entry[GUEST_PAGES];
    if (off < 0 || (uint64_t)off >= VUF_GUEST_SIZE || off % PAGE)
        return;                     /* nothing of the file */
    size_t pages = (len + PAGE - 1) / PAGE;
    if (pages > GUEST_PAGES - (uint64_t)off / PAGE)
        pages = GUEST_PAGES - (uint64_t)off / PAGE;     /* past the end of the file: never touched */
    off_t at = (off_t)((uintptr_t)addr / PAGE * sizeof entry[0]);
    if (pread(pagemap_fd, entry, pages * sizeof entry[0], at) != (ssize_t)(pages * sizeof entry[0]))
        abort();
    for (size_t i = 0; i < pages; i++)
        if (entry[i] >> 63)         /* present */
            mark_dirty((uint32_t)((uint64_t)off / PAGE + i));
}

/* Before an input: every page that may hold bytes of the last one is zero. */
static void guest_zero(void)
{
    if (!any_dirty)
        return;
    for (uint32_t w = 0; w < GUEST_PAGES / 64; w++)
        for (; dirty[w]; dirty[w] &= dirty[w] - 1)
            memset(guest + (w * 64 + (uint32_t)__builtin_ctzll(dirty[w])) * PAGE, 0, PAGE);
    any_dirty = false;
}

/* === The input ============================================================ */

struct reader {
    const uint8_t *p;
    size_t left;
};

static bool take(struct reader *r, void *dst, size_t len)
{
    if (r->left < len)
        return false;
    memcpy(dst, r->p, len);
    r->p += len, r->left -= len;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialised;
    if (!initialised) {
        init();
        initialised = true;
    }
    if (size < VUF_HEADER_SIZE)
        return 0;
    scan_fds(open_at_start);
    struct reader in = { data + VUF_HEADER_SIZE, size - VUF_HEADER_SIZE };

    static const struct vu_options opt_plain = { .socket_path = "fuzz", .client = true };
    static const struct vu_options opt_trace = { .socket_path = "fuzz", .client = true, .trace = true };
    if (vu_init(&dev, data[1] & 1 ? &opt_trace : &opt_plain) < 0)
        abort();
    dev.queue_pairs = 1 + (data[0] & 7);
    guest_zero();               /* "Guest memory" */
    /* Calls the last input's rings made: read and dropped. */
    event_count = 0;
    /* Header byte 2, bit 0: a frontend slow to read its replies (room for
     * 2 of them, taken only between operations). */
    bool slow_reader = data[2] & 1;
    connect_frontend(slow_reader ? 40 : sizeof wire.replies);

    uint8_t op;
    while (take(&in, &op, 1)) {
        switch (op % VUF_NOPS) {
        case VUF_OP_MSG: {
            uint8_t nfds, kinds[VUF_MAX_FDS];
            uint16_t len;
            if (!take(&in, &nfds, 1))
                goto done;
            nfds %= VUF_MAX_FDS + 1;
            for (int i = 0; i < nfds; i++) {
                if (!take(&in, &kinds[i], 1))
                    goto done;
                kinds[i] %= VUF_NFDKINDS;
            }
            if (!take(&in, &len, 2))
                goto done;
            if (len > VUF_MAX_MSG)
                len = VUF_MAX_MSG;
            if (len > in.left)
                len = in.left;
            send_msg(in.p, len, kinds, nfds);
            in.p += len, in.left -= len;
            serve(!slow_reader);
            break;
        }
        case VUF_OP_MEM: {
            uint32_t off;
            uint16_t len;
            if (!take(&in, &off, 4) || !take(&in, &len, 2))
                goto done;
            off %= VUF_GUEST_SIZE;
            if (len > in.left)
                len = in.left;
            if (len > VUF_GUEST_SIZE - off)
                len = VUF_GUEST_SIZE - off;
            if (len)
                guest_write(in.p, off, len);
            in.p += len, in.left -= len;
            break;
        }
        case VUF_OP_BURST: {
            uint8_t n;
            uint16_t len;
            if (!take(&in, &n, 1) || !take(&in, &len, 2))
                goto done;
            poll_rings(n, len);
            drain_replies();    /* even a slow reader reads now and then */
            serve(!slow_reader);
            break;
        }
        case VUF_OP_CLOSE:
            wire.shut = true;
            serve(!slow_reader);
            break;
        }
    }
done:
    /* The frontend goes away for good: the backend forgets the device. */
    vu_cleanup(&dev);
    wire.fd = -1;
    check_no_leaks();
    return 0;
}
