/*
 * tests/test_protocol.c - a vhost-user front-end written from scratch, driving
 * `vhost-xdp --loopback` the way QEMU 7.2 and a Linux guest driver would.
 *
 *   tests/test_protocol [path-to-vhost-xdp]        (default ./vhost-xdp)
 *   VX_BACKEND_CMD='dpdk-testpmd ... iface={sock} ...' tests/test_protocol
 *       runs that shell command instead (a stand-in back-end, e.g. DPDK's
 *       net_vhost in io forward mode); `{sock}` becomes the socket path.
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
 *   3. SIGTERM: the back-end must exit with status 0 and remove its socket.
 *
 * The fd, SIGTERM and exit-status checks only apply to the real vhost-xdp;
 * with VX_BACKEND_CMD they are printed as diagnostics.
 *
 * Nothing here includes vhost_xdp.h: the front-end knows the protocol only
 * from the spec (QEMU docs/interop/vhost-user.rst) and the virtio UAPI headers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_ring.h>

/* === Parameters ========================================================= */

#define NPACKETS        10000
#define RING_SIZE       256
#define MAX_IN_FLIGHT   64          /* frames sent on TX and not yet back on RX */
#define MIN_FRAME       60
#define MAX_FRAME       1514
#define HDR_LEN         12          /* VERSION_1: struct virtio_net_hdr_mrg_rxbuf */
#define SLOT            4096        /* buffer bytes per descriptor head */
#define MAX_SEGS        4           /* descriptors per chain (or indirect table) */
#define REGION_SIZE     (8u << 20)
#define SECOND_BASE     65000       /* ring base of connection 2: wraps at 65536 */
#define REPLY_TIMEOUT_MS 5000
#define STALL_SECONDS   5.0         /* no progress at all for this long: fail */
#define TRAFFIC_SECONDS 20.0        /* one run of NPACKETS: fail after this */
#define ALARM_SECONDS   150         /* the whole program */

/* Where things live inside the guest memory region (offsets from its start). */
#define RX_DESC_OFF     0x0000
#define RX_AVAIL_OFF    0x1000
#define RX_USED_OFF     0x2000
#define TX_DESC_OFF     0x4000
#define TX_AVAIL_OFF    0x5000
#define TX_USED_OFF     0x6000
#define RX_INDIRECT_OFF 0x10000     /* RING_SIZE * MAX_SEGS descriptors each */
#define TX_INDIRECT_OFF 0x20000
#define RX_BUFS_OFF     0x100000    /* RING_SIZE * SLOT = 1 MiB */
#define TX_BUFS_OFF     (REGION_SIZE - RING_SIZE * SLOT) /* last MiB: ends at the region end */

/* === The protocol, from docs/interop/vhost-user.rst ===================== */

enum vhost_user_request {
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_SET_MEM_TABLE = 5,
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
};

static const char *request_name(uint32_t req)
{
    static const char *const names[] = {
        [1] = "GET_FEATURES", [2] = "SET_FEATURES", [3] = "SET_OWNER",
        [5] = "SET_MEM_TABLE", [8] = "SET_VRING_NUM", [9] = "SET_VRING_ADDR",
        [10] = "SET_VRING_BASE", [11] = "GET_VRING_BASE", [12] = "SET_VRING_KICK",
        [13] = "SET_VRING_CALL", [14] = "SET_VRING_ERR", [15] = "GET_PROTOCOL_FEATURES",
        [16] = "SET_PROTOCOL_FEATURES", [17] = "GET_QUEUE_NUM", [18] = "SET_VRING_ENABLE",
    };
    if (req < sizeof(names) / sizeof(names[0]) && names[req])
        return names[req];
    return "?";
}

#define VHOST_USER_VERSION          0x1
#define VHOST_USER_REPLY_MASK       0x4
#define VHOST_USER_NEED_REPLY_MASK  0x8

#define VHOST_USER_F_PROTOCOL_FEATURES  30
#define VHOST_USER_PROTOCOL_F_MQ        0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3

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

/* === TAP ================================================================ */

static int tap_n, tap_failed;

static void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

static bool check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", ok ? "" : "not ", ++tap_n);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    if (!ok)
        tap_failed++;
    return ok;
}

static void skip(const char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void skip(const char *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("ok %d - ", ++tap_n);
    vprintf(fmt, ap);
    printf(" # SKIP %s\n", why);
    va_end(ap);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* === The back-end process =============================================== */

static pid_t backend_pid = -1;      /* also its process group: setpgid in the child */
static bool backend_real;           /* our vhost-xdp, not VX_BACKEND_CMD */
static int backend_stdin = -1;      /* write end of the stand-in's stdin pipe */
static int backend_status = -1;     /* wait status once reaped */
static char tmp_dir[80], sock_path[108], log_path[108]; /* 108: sun_path */

/* Async-signal-safe: used from the alarm handler too. */
static void remove_tmp_files(void)
{
    if (sock_path[0])
        unlink(sock_path);
    if (log_path[0])
        unlink(log_path);
    if (tmp_dir[0])
        rmdir(tmp_dir);
}

static void kill_backend(void)
{
    if (backend_pid > 0) {
        kill(-backend_pid, SIGKILL);
        waitpid(backend_pid, &backend_status, 0);
        backend_pid = -1;
    }
}

static void on_fatal_signal(int sig)
{
    static const char alarm_msg[] = "not ok - test_protocol: still running after the alarm; back-end killed\n";
    static const char sig_msg[] = "not ok - test_protocol: interrupted; back-end killed\n";
    ssize_t r = sig == SIGALRM ? write(1, alarm_msg, sizeof(alarm_msg) - 1)
                               : write(1, sig_msg, sizeof(sig_msg) - 1);
    (void)r;
    if (backend_pid > 0)
        kill(-backend_pid, SIGKILL);
    remove_tmp_files();
    _exit(1);
}

static void at_exit_cleanup(void)
{
    kill_backend();
    remove_tmp_files();
}

/* Has it died?  Reaps it and says so once. */
static bool backend_alive(void)
{
    if (backend_pid <= 0)
        return false;
    pid_t p = waitpid(backend_pid, &backend_status, WNOHANG);
    if (p == backend_pid) {
        if (WIFEXITED(backend_status))
            diag("back-end (pid %d) exited with status %d", (int)backend_pid, WEXITSTATUS(backend_status));
        else if (WIFSIGNALED(backend_status))
            diag("back-end (pid %d) killed by signal %d", (int)backend_pid, WTERMSIG(backend_status));
        backend_pid = -1;
        return false;
    }
    return true;
}

/* Replace every {sock} in cmd by the socket path. */
static char *expand_command(const char *cmd)
{
    size_t cap = strlen(cmd) + 16 + 8 * strlen(sock_path), n = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    n += (size_t)snprintf(out, cap, "exec ");
    for (const char *p = cmd; *p;) {
        if (strncmp(p, "{sock}", 6) == 0 && n + strlen(sock_path) + 1 < cap) {
            n += (size_t)snprintf(out + n, cap - n, "%s", sock_path);
            p += 6;
        } else if (n + 2 < cap) {
            out[n++] = *p++;
        } else {
            break;
        }
    }
    out[n] = 0;
    return out;
}

static bool start_backend(const char *binary)
{
    const char *cmd = getenv("VX_BACKEND_CMD");
    char *shell_cmd = NULL;
    int in[2] = { -1, -1 };

    backend_real = !(cmd && *cmd);
    if (backend_real) {
        if (access(binary, X_OK) != 0) {
            check(false, "back-end executable %s exists (%s); build it with make", binary, strerror(errno));
            return false;
        }
    } else {
        shell_cmd = expand_command(cmd);
        /* testpmd without -i reads stdin ("Press enter to exit") and quits on
         * EOF: give it a pipe we keep open until the end. */
        if (!shell_cmd || pipe2(in, O_CLOEXEC) < 0) {
            check(false, "prepare the stand-in command: %s", strerror(errno));
            free(shell_cmd);
            return false;
        }
    }

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        check(false, "fork: %s", strerror(errno));
        free(shell_cmd);
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int null = open("/dev/null", O_RDONLY);
        int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(backend_real ? null : in[0], 0);
        if (log >= 0) {
            dup2(log, 1);
            dup2(log, 2);
        }
        if (backend_real)
            execl(binary, binary, "--socket", sock_path, "--loopback", (char *)NULL);
        else
            execl("/bin/sh", "sh", "-c", shell_cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);  /* both sides, so kill(-pid) works whichever runs first */
    backend_pid = pid;
    if (!backend_real) {
        close(in[0]);
        backend_stdin = in[1];
        diag("back-end: /bin/sh -c '%s'", shell_cmd);
    } else {
        diag("back-end: %s --socket %s --loopback", binary, sock_path);
    }
    free(shell_cmd);
    return true;
}

static bool wait_for_socket(double seconds)
{
    double end = now() + seconds;
    struct stat st;
    while (now() < end) {
        if (stat(sock_path, &st) == 0 && S_ISSOCK(st.st_mode))
            return true;
        if (!backend_alive())
            return false;
        sleep_ms(20);
    }
    return false;
}

/* The last lines of the back-end's output, as TAP diagnostics. */
static void print_backend_log(int max_lines)
{
    FILE *f = fopen(log_path, "r");
    if (!f)
        return;
    char line[512];
    static char ring[64][512];
    int n = 0;
    if (max_lines > 64)
        max_lines = 64;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        snprintf(ring[n % max_lines], sizeof(ring[0]), "%s", line);
        n++;
    }
    fclose(f);
    int first = n > max_lines ? n - max_lines : 0;
    diag("---- last %d lines of the back-end's output ----", n - first);
    for (int i = first; i < n; i++)
        diag("| %s", ring[i % max_lines]);
}

/* === The back-end's open files (/proc/PID/fd) ============================ */

static int count_fds(pid_t pid, char *list, size_t list_len)
{
    char dir[64], target[256];
    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    size_t used = 0;
    if (list && list_len)
        list[0] = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        if (!list)
            continue;
        ssize_t t = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
        target[t > 0 ? t : 0] = 0;
        int w = snprintf(list + used, list_len - used, "%s%s->%s", used ? " " : "", e->d_name, target);
        if (w > 0 && (size_t)w < list_len - used)
            used += (size_t)w;
    }
    closedir(d);
    return n;
}

/* === Guest memory ======================================================= */

/*
 * One memfd, mapped shared.  The region handed to the back-end starts
 * mmap_offset bytes into the file; its three addresses:
 *   guest_phys_addr  chosen (non-zero), used in descriptors;
 *   userspace_addr   where *we* have the region mapped, used in SET_VRING_ADDR;
 *   mmap_offset      where the region starts in the fd.
 */
struct guest_mem {
    int fd;
    uint8_t *map;
    size_t map_len;
    uint8_t *base;              /* region start in our address space */
    uint64_t gpa;
    uint64_t mmap_offset;
};

static bool mem_create(struct guest_mem *m, uint64_t gpa, uint64_t mmap_offset)
{
    m->map_len = REGION_SIZE + mmap_offset;
    m->fd = memfd_create("vx-test-guest", MFD_CLOEXEC);
    if (m->fd < 0 || ftruncate(m->fd, (off_t)m->map_len) < 0)
        return false;
    m->map = mmap(NULL, m->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
    if (m->map == MAP_FAILED) {
        m->map = NULL;
        return false;
    }
    /* Poison what comes before the region: a back-end that forgets
     * mmap_offset reads this instead of our rings. */
    memset(m->map, 0xA5, mmap_offset);
    m->base = m->map + mmap_offset;
    m->gpa = gpa;
    m->mmap_offset = mmap_offset;
    return true;
}

static void mem_destroy(struct guest_mem *m)
{
    if (m->map)
        munmap(m->map, m->map_len);
    if (m->fd >= 0)
        close(m->fd);
    m->map = NULL;
    m->fd = -1;
}

static uint64_t gpa_of(const struct guest_mem *m, const void *p)
{
    return m->gpa + (uint64_t)((const uint8_t *)p - m->base);
}

static uint64_t uva_of(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

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
    const char *name;
    uint32_t index;
    uint16_t num;
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

/* The two event-index fields live just past the rings (virtio 1.2 §2.7.10). */
static uint16_t *used_event(struct ring *r) { return &r->avail->ring[r->num]; }
static uint16_t *avail_event(struct ring *r) { return (uint16_t *)&r->used->ring[r->num]; }

static void ring_init(struct ring *r, const char *name, uint32_t index, struct guest_mem *m,
                      uint32_t desc_off, uint32_t avail_off, uint32_t used_off,
                      uint32_t indirect_off, uint32_t bufs_off, uint16_t base)
{
    r->name = name;
    r->index = index;
    r->num = RING_SIZE;
    r->desc = (struct vring_desc *)(m->base + desc_off);
    r->avail = (struct vring_avail *)(m->base + avail_off);
    r->used = (struct vring_used *)(m->base + used_off);
    r->indirect = (struct vring_desc *)(m->base + indirect_off);
    r->bufs = m->base + bufs_off;
    memset(r->desc, 0, sizeof(struct vring_desc) * RING_SIZE);
    memset(r->avail, 0, 0x1000);
    memset(r->used, 0, 0x1000);
    for (int i = 0; i < RING_SIZE; i++)
        r->free_ids[i] = (uint16_t)(RING_SIZE - 1 - i);
    r->nfree = RING_SIZE;
    r->outstanding = 0;
    memset(r->chains, 0, sizeof(r->chains));
    r->base = base;
    r->avail_idx = r->published_idx = r->last_used_idx = base;
    r->avail->idx = base;
    r->used->idx = base;
    *used_event(r) = base;
    *avail_event(r) = base;
    r->published = r->consumed = r->post_count = 0;
    r->kicks = r->calls = 0;
}

/* Take n free descriptors; the first is the head, whose SLOT holds the data. */
static int ring_take(struct ring *r, int n, uint16_t *ids)
{
    if (r->nfree < n)
        return -1;
    for (int i = 0; i < n; i++)
        ids[i] = r->free_ids[--r->nfree];
    return ids[0];
}

static uint8_t *slot_of(struct ring *r, int head)
{
    return r->bufs + (size_t)head * SLOT;
}

/* Write the chain's descriptors (or indirect table) and its avail entry. */
static void ring_add(struct ring *r, const struct guest_mem *m, const uint16_t *ids, int ndesc,
                     const struct seg *segs, int nseg, bool device_writes, bool indirect)
{
    uint16_t head = ids[0];
    struct chain *ch = &r->chains[head];
    uint16_t wflag = device_writes ? VRING_DESC_F_WRITE : 0;

    ch->outstanding = true;
    ch->ndesc = (uint8_t)ndesc;
    ch->nseg = (uint8_t)nseg;
    ch->cap = 0;
    for (int i = 0; i < ndesc; i++)
        ch->desc_ids[i] = ids[i];
    for (int i = 0; i < nseg; i++) {
        ch->seg[i] = segs[i];
        ch->cap += segs[i].len;
    }
    if (indirect) {
        struct vring_desc *table = r->indirect + (size_t)head * MAX_SEGS;
        for (int i = 0; i < nseg; i++) {
            table[i].addr = gpa_of(m, slot_of(r, head) + segs[i].off);
            table[i].len = segs[i].len;
            table[i].flags = (uint16_t)(wflag | (i + 1 < nseg ? VRING_DESC_F_NEXT : 0));
            table[i].next = (uint16_t)(i + 1 < nseg ? i + 1 : 0);
        }
        /* The WRITE flag of the descriptor naming a table is ignored (§2.7.5.3.2). */
        r->desc[head].addr = gpa_of(m, table);
        r->desc[head].len = (uint32_t)(nseg * sizeof(struct vring_desc));
        r->desc[head].flags = VRING_DESC_F_INDIRECT;
        r->desc[head].next = 0;
    } else {
        for (int i = 0; i < nseg; i++) {
            struct vring_desc *d = &r->desc[ids[i]];
            d->addr = gpa_of(m, slot_of(r, head) + segs[i].off);
            d->len = segs[i].len;
            d->flags = (uint16_t)(wflag | (i + 1 < nseg ? VRING_DESC_F_NEXT : 0));
            d->next = i + 1 < nseg ? ids[i + 1] : 0;
        }
    }
    r->avail->ring[r->avail_idx % r->num] = head;
    r->avail_idx++;
    r->published++;
    r->outstanding++;
}

static void ring_free(struct ring *r, uint16_t head)
{
    struct chain *ch = &r->chains[head];
    for (int i = 0; i < ch->ndesc; i++)
        r->free_ids[r->nfree++] = ch->desc_ids[i];
    ch->outstanding = false;
    r->outstanding--;
}

/* Publish avail->idx, then notify the device unless it asked us not to. */
static void ring_flush(struct ring *r, bool event_idx)
{
    if (r->avail_idx == r->published_idx)
        return;
    uint16_t old = r->published_idx;
    /* Release: descriptors and avail entries before the index that covers them. */
    __atomic_store_n(&r->avail->idx, r->avail_idx, __ATOMIC_RELEASE);
    r->published_idx = r->avail_idx;
    /* Full barrier: read avail_event / used->flags only after the index is
     * visible, or we and the device can each miss the other (§2.7.10). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (r->kick_fd < 0)
        return;                     /* rings filled before SET_VRING_KICK */
    bool need;
    if (event_idx)
        need = vring_need_event(__atomic_load_n(avail_event(r), __ATOMIC_RELAXED), r->avail_idx, old);
    else
        need = !(__atomic_load_n(&r->used->flags, __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY);
    if (need && eventfd_write(r->kick_fd, 1) == 0)
        r->kicks++;
}

/* Copy up to len bytes of a chain's data, in descriptor order. */
static uint32_t chain_gather(struct ring *r, uint16_t head, uint32_t len, uint8_t *out)
{
    struct chain *ch = &r->chains[head];
    uint32_t done = 0;
    for (int i = 0; i < ch->nseg && done < len; i++) {
        uint32_t n = ch->seg[i].len < len - done ? ch->seg[i].len : len - done;
        memcpy(out + done, slot_of(r, head) + ch->seg[i].off, n);
        done += n;
    }
    return done;
}

/* === The frames we send =================================================== */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t frame_len(uint32_t seq, uint32_t salt)
{
    if (seq % 100 == 0)
        return MIN_FRAME;
    if (seq % 100 == 1)
        return MAX_FRAME;
    return MIN_FRAME + (uint32_t)(splitmix64(((uint64_t)salt << 32) | seq) % (MAX_FRAME - MIN_FRAME + 1));
}

/* Ethernet header (locally administered MACs, ethertype 0x88b5), then the
 * sequence number and length, then pseudo-random bytes unique to (salt, seq). */
static void frame_fill(uint8_t *p, uint32_t seq, uint32_t salt, uint32_t len)
{
    static const uint8_t eth[14] = { 0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5 };
    uint8_t head[22];
    memcpy(head, eth, 14);
    head[14] = (uint8_t)(seq >> 24);
    head[15] = (uint8_t)(seq >> 16);
    head[16] = (uint8_t)(seq >> 8);
    head[17] = (uint8_t)seq;
    head[18] = (uint8_t)(len >> 8);
    head[19] = (uint8_t)len;
    head[20] = (uint8_t)salt;
    head[21] = (uint8_t)(salt >> 8);
    memcpy(p, head, 22);
    uint64_t state = ((uint64_t)salt << 32) ^ seq ^ 0x5eed;
    for (uint32_t i = 22; i < len; i += 8) {
        state = splitmix64(state);
        uint32_t n = len - i < 8 ? len - i : 8;
        memcpy(p + i, &state, n);
    }
}

/* === One connection ====================================================== */

struct config {
    const char *name;
    bool mrg_rxbuf;
};

struct conn {
    char tag[48];                   /* "mrg conn 1" */
    int sock;
    struct guest_mem mem;
    struct ring rx, tx;
    uint64_t offered, features, protocol_offered, protocol;
    bool mrg, event_idx, indirect, reply_ack;
    uint32_t salt;
    char err[400];                  /* first failure, for the TAP line */

    uint32_t sent, received;
    uint64_t hdr_bad, mrg_not_full, mrg_partial, multi_buffer, tx_len_nonzero;
    uint64_t tx_layouts[5];         /* 1..4 descriptors, indirect */
    uint64_t rx_layouts_indirect;
    char hdr_bad_first[200], mrg_not_full_first[200], tx_len_first[120];
    int32_t partial_at;             /* used index where a partial packet was seen */
};

static bool fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct conn *c, const char *fmt, ...)
{
    if (!c->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
    }
    return false;
}

/* The same, for functions that count: -1 means "stop, c->err says why". */
#define fail_int(...) (fail(__VA_ARGS__) ? 0 : -1)

/* --- messages --- */

static bool vu_send(struct conn *c, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
                    const int *fds, int nfds)
{
    struct vu_header h = { req, flags, size };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, size } };
    union {
        char buf[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
    memset(&u, 0, sizeof(u));
    if (nfds > 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(cm), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t n = sendmsg(c->sock, &mh, MSG_NOSIGNAL);
    if (n != (ssize_t)(sizeof(h) + size))
        return fail(c, "send %s: %s", request_name(req), n < 0 ? strerror(errno) : "short write");
    return true;
}

static bool recv_all(int fd, void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, REPLY_TIMEOUT_MS) <= 0)
            return false;
        ssize_t n = recv(fd, (char *)buf + done, len - done, 0);
        if (n <= 0)
            return false;
        done += (size_t)n;
    }
    return true;
}

/* Read one reply: header flags must be VERSION|REPLY exactly, the request
 * echoed, the size as the spec fixes it for this request, and no fds. */
static bool vu_reply(struct conn *c, uint32_t req, void *payload, uint32_t size)
{
    struct vu_header h;
    union {
        char buf[CMSG_SPACE(8 * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = { &h, sizeof(h) };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
    struct pollfd p = { c->sock, POLLIN, 0 };

    if (poll(&p, 1, REPLY_TIMEOUT_MS) <= 0)
        return fail(c, "%s: no reply within %d ms", request_name(req), REPLY_TIMEOUT_MS);
    ssize_t n = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC);
    if (n == 0)
        return fail(c, "%s: back-end closed the connection instead of replying", request_name(req));
    if (n < 0)
        return fail(c, "%s: recvmsg: %s", request_name(req), strerror(errno));
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int nf = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int fds[8];
            memcpy(fds, CMSG_DATA(cm), (size_t)(nf > 8 ? 8 : nf) * sizeof(int));
            for (int i = 0; i < nf && i < 8; i++)
                close(fds[i]);
            return fail(c, "%s: reply carried %d fd(s)", request_name(req), nf);
        }
    }
    if (n < (ssize_t)sizeof(h) && !recv_all(c->sock, (char *)&h + n, sizeof(h) - (size_t)n))
        return fail(c, "%s: short reply header (%zd bytes)", request_name(req), n);
    if (h.request != req)
        return fail(c, "%s: reply has request %u (%s)", request_name(req), h.request, request_name(h.request));
    if (h.flags != (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK))
        return fail(c, "%s: reply flags 0x%x, expected 0x5 (VERSION|REPLY)", request_name(req), h.flags);
    if (h.size != size)
        return fail(c, "%s: reply size %u, expected %u", request_name(req), h.size, size);
    if (size && !recv_all(c->sock, payload, size))
        return fail(c, "%s: reply payload (%u bytes) did not arrive", request_name(req), size);
    return true;
}

static bool vu_get_u64(struct conn *c, uint32_t req, uint64_t *out)
{
    return vu_send(c, req, VHOST_USER_VERSION, NULL, 0, NULL, 0) && vu_reply(c, req, out, sizeof(*out));
}

static bool vu_set_u64(struct conn *c, uint32_t req, uint64_t v)
{
    return vu_send(c, req, VHOST_USER_VERSION, &v, sizeof(v), NULL, 0);
}

static bool vu_set_state(struct conn *c, uint32_t req, uint32_t index, uint32_t num)
{
    struct vu_vring_state s = { index, num };
    return vu_send(c, req, VHOST_USER_VERSION, &s, sizeof(s), NULL, 0);
}

/* SET_VRING_KICK/CALL/ERR: u64 = ring index (bit 8 "no fd" clear), fd attached. */
static bool vu_set_fd(struct conn *c, uint32_t req, uint32_t index, int fd)
{
    uint64_t v = index;
    return vu_send(c, req, VHOST_USER_VERSION, &v, sizeof(v), &fd, 1);
}

/* --- the handshake, in QEMU 7.2's order --- */

static void conn_close_fds(struct conn *c)
{
    struct ring *rs[2] = { &c->rx, &c->tx };
    for (int i = 0; i < 2; i++) {
        if (rs[i]->kick_fd >= 0) close(rs[i]->kick_fd);
        if (rs[i]->call_fd >= 0) close(rs[i]->call_fd);
        if (rs[i]->err_fd >= 0) close(rs[i]->err_fd);
        rs[i]->kick_fd = rs[i]->call_fd = rs[i]->err_fd = -1;
    }
}

static bool rx_post(struct conn *c);

static bool handshake(struct conn *c, const struct config *cfg, uint64_t gpa, uint64_t mmap_offset, uint16_t base)
{
    const uint64_t wanted = BIT(VIRTIO_F_VERSION_1) | BIT(VIRTIO_RING_F_INDIRECT_DESC) | BIT(VIRTIO_RING_F_EVENT_IDX) |
                            BIT(VHOST_USER_F_PROTOCOL_FEATURES) | (cfg->mrg_rxbuf ? BIT(VIRTIO_NET_F_MRG_RXBUF) : 0);
    uint64_t again = 0, qnum = 0;

    /* Phase 1: what QEMU sends as soon as it connects. */
    bool ok = vu_get_u64(c, VHOST_USER_GET_FEATURES, &c->offered);
    check(ok && (c->offered & BIT(VIRTIO_F_VERSION_1)) && (c->offered & BIT(VHOST_USER_F_PROTOCOL_FEATURES)),
          "%s: GET_FEATURES reply valid, offers VERSION_1 and PROTOCOL_FEATURES (0x%" PRIx64 ")%s%s",
          c->tag, c->offered, c->err[0] ? ": " : "", c->err);
    if (!ok || !(c->offered & BIT(VHOST_USER_F_PROTOCOL_FEATURES)))
        return fail(c, "no usable GET_FEATURES");
    ok = vu_get_u64(c, VHOST_USER_GET_PROTOCOL_FEATURES, &c->protocol_offered);
    check(ok, "%s: GET_PROTOCOL_FEATURES reply valid (0x%" PRIx64 ")%s%s", c->tag, c->protocol_offered,
          c->err[0] ? ": " : "", c->err);
    if (!ok)
        return false;
    c->protocol = c->protocol_offered & (BIT(VHOST_USER_PROTOCOL_F_MQ) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK));
    c->reply_ack = c->protocol & BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    if (!vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, c->protocol))
        return false;
    if (c->protocol & BIT(VHOST_USER_PROTOCOL_F_MQ)) {
        ok = vu_get_u64(c, VHOST_USER_GET_QUEUE_NUM, &qnum);
        check(ok && qnum >= 1, "%s: GET_QUEUE_NUM reply valid, >= 1 queue pair (%" PRIu64 ")%s%s", c->tag, qnum,
              c->err[0] ? ": " : "", c->err);
        if (!ok)
            return false;
    } else {
        skip("back-end does not offer PROTOCOL_F_MQ", "%s: GET_QUEUE_NUM", c->tag);
    }
    if (!vu_send(c, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0))
        return false;
    ok = vu_get_u64(c, VHOST_USER_GET_FEATURES, &again);
    check(ok && again == c->offered, "%s: second GET_FEATURES (after SET_OWNER) gives the same 0x%" PRIx64 "%s%s",
          c->tag, again, c->err[0] ? ": " : "", c->err);
    if (!ok)
        return false;

    /* Call and error eventfds for both rings; the call fds are replaced by
     * new ones at ring set-up, as QEMU does. */
    int early_call[2];
    for (int i = 0; i < 2; i++) {
        struct ring *r = i ? &c->tx : &c->rx;
        early_call[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r->err_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        r->call_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    }
    ok = true;
    for (uint32_t i = 0; i < 2 && ok; i++) {
        struct ring *r = i ? &c->tx : &c->rx;
        ok = vu_set_fd(c, VHOST_USER_SET_VRING_CALL, i, early_call[i]) &&
             vu_set_fd(c, VHOST_USER_SET_VRING_ERR, i, r->err_fd);
    }
    close(early_call[0]);
    close(early_call[1]);
    if (!ok)
        return false;
    /* Keep the kick fds away from ring_flush until SET_VRING_KICK. */
    int kick[2] = { c->rx.kick_fd, c->tx.kick_fd };
    c->rx.kick_fd = c->tx.kick_fd = -1;

    if (!vu_set_state(c, VHOST_USER_SET_VRING_ENABLE, 0, 1) || !vu_set_state(c, VHOST_USER_SET_VRING_ENABLE, 1, 1))
        goto out;

    /* Phase 2: the guest driver has set FEATURES_OK and DRIVER_OK. */
    c->features = c->offered & wanted;
    c->mrg = c->features & BIT(VIRTIO_NET_F_MRG_RXBUF);
    c->event_idx = c->features & BIT(VIRTIO_RING_F_EVENT_IDX);
    c->indirect = c->features & BIT(VIRTIO_RING_F_INDIRECT_DESC);
    diag("%s: SET_FEATURES 0x%" PRIx64 " (MRG_RXBUF %d, EVENT_IDX %d, INDIRECT_DESC %d), protocol 0x%" PRIx64,
         c->tag, c->features, c->mrg, c->event_idx, c->indirect, c->protocol);
    if (!vu_set_u64(c, VHOST_USER_SET_FEATURES, c->features))
        goto out;

    if (!mem_create(&c->mem, gpa, mmap_offset)) {
        fail(c, "guest memory: %s", strerror(errno));
        goto out;
    }
    struct vu_memory mt;
    memset(&mt, 0, sizeof(mt));
    mt.nregions = 1;
    mt.regions[0].guest_phys_addr = c->mem.gpa;
    mt.regions[0].memory_size = REGION_SIZE;
    mt.regions[0].userspace_addr = uva_of(c->mem.base);
    mt.regions[0].mmap_offset = c->mem.mmap_offset;
    diag("%s: SET_MEM_TABLE gpa 0x%" PRIx64 " size 0x%x uaddr 0x%" PRIx64 " mmap_offset 0x%" PRIx64 "; ring base %u",
         c->tag, mt.regions[0].guest_phys_addr, REGION_SIZE, mt.regions[0].userspace_addr, mt.regions[0].mmap_offset,
         base);
    uint32_t mt_size = (uint32_t)(offsetof(struct vu_memory, regions) + sizeof(struct vu_memory_region));
    if (c->reply_ack) {
        uint64_t ack = ~0ull;
        ok = vu_send(c, VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &mt, mt_size,
                     &c->mem.fd, 1) &&
             vu_reply(c, VHOST_USER_SET_MEM_TABLE, &ack, sizeof(ack));
        check(ok && ack == 0, "%s: SET_MEM_TABLE with NEED_REPLY acked: flags 0x5, u64 0 (got 0x%" PRIx64 ")%s%s",
              c->tag, ack, c->err[0] ? ": " : "", c->err);
        if (!ok || ack != 0)
            goto out;
    } else {
        skip("back-end does not offer PROTOCOL_F_REPLY_ACK", "%s: SET_MEM_TABLE ack", c->tag);
        if (!vu_send(c, VHOST_USER_SET_MEM_TABLE, VHOST_USER_VERSION, &mt, mt_size, &c->mem.fd, 1))
            goto out;
    }

    ring_init(&c->rx, "RX", 0, &c->mem, RX_DESC_OFF, RX_AVAIL_OFF, RX_USED_OFF, RX_INDIRECT_OFF, RX_BUFS_OFF, base);
    ring_init(&c->tx, "TX", 1, &c->mem, TX_DESC_OFF, TX_AVAIL_OFF, TX_USED_OFF, TX_INDIRECT_OFF, TX_BUFS_OFF, base);
    /* The guest fills its RX ring before DRIVER_OK: the back-end must find
     * these buffers without ever being kicked for them. */
    while (rx_post(c))
        ;
    ring_flush(&c->rx, c->event_idx);

    for (uint32_t i = 0; i < 2; i++) {
        struct ring *r = i ? &c->tx : &c->rx;
        struct vu_vring_addr a = {
            .index = i,
            .flags = 0,
            .desc_user_addr = uva_of(r->desc),
            .used_user_addr = uva_of(r->used),
            .avail_user_addr = uva_of(r->avail),
            .log_guest_addr = gpa_of(&c->mem, r->used),
        };
        if (!vu_set_state(c, VHOST_USER_SET_VRING_NUM, i, RING_SIZE) ||
            !vu_set_state(c, VHOST_USER_SET_VRING_BASE, i, base) ||
            !vu_send(c, VHOST_USER_SET_VRING_ADDR, VHOST_USER_VERSION, &a, sizeof(a), NULL, 0) ||
            !vu_set_fd(c, VHOST_USER_SET_VRING_KICK, i, kick[i]) ||
            !vu_set_fd(c, VHOST_USER_SET_VRING_CALL, i, r->call_fd))
            goto out;
    }
    c->rx.kick_fd = kick[0];
    c->tx.kick_fd = kick[1];

    /* Nothing was asked for: the back-end must not have said anything, nor hung up. */
    struct pollfd p = { c->sock, POLLIN, 0 };
    int pr = poll(&p, 1, 50);
    check(pr == 0, "%s: ring set-up accepted (no unsolicited message, no hang-up)%s", c->tag,
          pr == 0 ? "" : (p.revents & (POLLHUP | POLLERR)) ? ": connection closed" : ": unexpected data");
    return pr == 0 || fail(c, "connection not usable after ring set-up");

out:
    if (c->rx.kick_fd < 0) {
        close(kick[0]);
        close(kick[1]);
    }
    return false;
}

/* === The data path: guest driver ========================================== */

/*
 * TX: the frame goes into head's SLOT behind a 12-byte zero header.  Layouts:
 *   0: one descriptor, header and frame together
 *   1: header | frame
 *   2: header | frame[0:a] | frame[a:]
 *   3: header | frame[0:a] | frame[a:b] | frame[b:]
 *   4: one descriptor naming an indirect table: header | frame[0:a] | frame[a:]
 * Pieces are 32+ bytes apart with 0xEE between them, so a back-end that reads
 * past a descriptor's len (or ignores the chain) sends garbage.
 */
static bool tx_post(struct conn *c, uint32_t seq)
{
    struct ring *r = &c->tx;
    uint32_t len = frame_len(seq, c->salt);
    uint64_t rnd = splitmix64(((uint64_t)seq << 20) ^ c->salt ^ 0x7a7a);
    int layout = (c->indirect && seq % 50 == 7) ? 4 : (int)((rnd >> 8) % 4);
    int nseg = layout == 0 ? 1 : layout == 4 ? 3 : layout + 1;
    int ndesc = layout == 4 ? 1 : nseg;
    uint16_t ids[MAX_SEGS];
    int head = ring_take(r, ndesc, ids);
    if (head < 0)
        return false;

    uint8_t frame[MAX_FRAME];
    frame_fill(frame, seq, c->salt, len);
    uint8_t *slot = slot_of(r, head);
    memset(slot, 0xEE, SLOT);
    memset(slot, 0, HDR_LEN);   /* flags 0, GSO_NONE, num_buffers 0 on TX */

    struct seg segs[MAX_SEGS];
    if (layout == 0) {
        segs[0] = (struct seg){ 0, HDR_LEN + len };
        memcpy(slot + HDR_LEN, frame, len);
    } else {
        uint32_t cut[3] = { 0, len, len };
        int pieces = nseg - 1;
        if (pieces == 2) {
            cut[1] = 1 + (uint32_t)(rnd % (len - 1));
        } else if (pieces == 3) {
            uint32_t a = 1 + (uint32_t)(rnd % (len - 2));
            uint32_t b = a + 1 + (uint32_t)((rnd >> 32) % (len - a - 1));
            cut[1] = a;
            cut[2] = b;
        }
        segs[0] = (struct seg){ 0, HDR_LEN };
        uint32_t off = 64;
        for (int i = 0; i < pieces; i++) {
            uint32_t from = cut[i], to = i + 1 < pieces ? cut[i + 1] : len;
            segs[1 + i] = (struct seg){ off, to - from };
            memcpy(slot + off, frame + from, to - from);
            off = (off + (to - from) + 32 + 7) & ~7u;
        }
    }
    c->tx_layouts[layout]++;
    ring_add(r, &c->mem, ids, ndesc, segs, nseg, false, layout == 4);
    return true;
}

/*
 * RX buffers, poisoned with 0xDD.  With MRG_RXBUF the buffers are of mixed
 * sizes (>= 512 bytes, so a frame spans at most 3), a few are chains or
 * indirect; without it every chain holds a whole 1526-byte packet:
 *   single 1526 | 12 + 1514 | 100 + 700 + 1000 | single 2048 at an odd
 *   address | indirect 500 + 500 + 600.
 */
static bool rx_post(struct conn *c)
{
    struct ring *r = &c->rx;
    struct seg segs[MAX_SEGS];
    int nseg = 1;
    bool indirect = false;
    uint32_t k = r->post_count;

    if (c->mrg) {
        static const uint32_t sizes[] = { 2048, 1024, 512, 768, 1526, 0, 0, 4096 };
        switch (k % 8) {
        case 5: nseg = 2; segs[0] = (struct seg){ 0, 256 }; segs[1] = (struct seg){ 512, 300 }; break;
        case 6:
            if (c->indirect) {
                indirect = true;
                nseg = 2;
                segs[0] = (struct seg){ 0, 300 };
                segs[1] = (struct seg){ 400, 700 };
            } else {
                segs[0] = (struct seg){ 0, 600 };
            }
            break;
        default: segs[0] = (struct seg){ 0, sizes[k % 8] }; break;
        }
    } else {
        switch (k % 5) {
        case 0: segs[0] = (struct seg){ 0, HDR_LEN + MAX_FRAME }; break;
        case 1: nseg = 2; segs[0] = (struct seg){ 0, HDR_LEN }; segs[1] = (struct seg){ 64, MAX_FRAME }; break;
        case 2:
            nseg = 3;
            segs[0] = (struct seg){ 0, 100 };
            segs[1] = (struct seg){ 200, 700 };
            segs[2] = (struct seg){ 1000, 1000 };
            break;
        case 3: segs[0] = (struct seg){ 5, 2048 }; break;
        default:
            if (c->indirect) {
                indirect = true;
                nseg = 3;
                segs[0] = (struct seg){ 0, 500 };
                segs[1] = (struct seg){ 600, 500 };
                segs[2] = (struct seg){ 1200, 600 };
            } else {
                segs[0] = (struct seg){ 0, 4096 };
            }
            break;
        }
    }
    uint16_t ids[MAX_SEGS];
    int head = ring_take(r, indirect ? 1 : nseg, ids);
    if (head < 0)
        return false;
    memset(slot_of(r, head), 0xDD, SLOT);
    ring_add(r, &c->mem, ids, indirect ? 1 : nseg, segs, nseg, true, indirect);
    r->post_count++;
    if (indirect)
        c->rx_layouts_indirect++;
    return true;
}

static bool check_used_id(struct conn *c, struct ring *r, uint32_t id, uint16_t at)
{
    if (id >= r->num || !r->chains[id].outstanding)
        return fail(c, "%s used[%u]: id %u is not a head we made available (or returned twice)", r->name,
                    (unsigned)at, id);
    return true;
}

/* Returns the number of used entries read, or -1 on a protocol violation. */
static int tx_reap(struct conn *c)
{
    struct ring *r = &c->tx;
    uint16_t used_idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
    int n = 0;
    if ((uint16_t)(used_idx - r->last_used_idx) > r->outstanding)
        return fail_int(c, "TX used->idx %u runs %u entries ahead of what we read (%u), only %d outstanding",
                    used_idx, (uint16_t)(used_idx - r->last_used_idx), r->last_used_idx, r->outstanding);
    while (r->last_used_idx != used_idx) {
        struct vring_used_elem e = r->used->ring[r->last_used_idx % r->num];
        if (!check_used_id(c, r, e.id, r->last_used_idx))
            return -1;
        if (e.len != 0 && c->tx_len_nonzero++ == 0)
            snprintf(c->tx_len_first, sizeof(c->tx_len_first), "used[%u] id %u len %u", r->last_used_idx, e.id, e.len);
        ring_free(r, (uint16_t)e.id);
        r->last_used_idx++;
        r->consumed++;
        n++;
    }
    if (n && c->event_idx)
        __atomic_store_n(used_event(r), r->last_used_idx, __ATOMIC_RELEASE);
    return n;
}

static bool verify_frame(struct conn *c, const uint8_t *got, uint32_t got_len, int nbufs)
{
    uint32_t seq = c->received;
    uint32_t len = frame_len(seq, c->salt);
    uint8_t want[MAX_FRAME];
    frame_fill(want, seq, c->salt, len);
    if (got_len == len && memcmp(got, want, len) == 0)
        return true;
    uint32_t i = 0;
    while (i < len && i < got_len && got[i] == want[i])
        i++;
    uint32_t got_seq = got_len >= 18 ? (uint32_t)got[14] << 24 | (uint32_t)got[15] << 16 | (uint32_t)got[16] << 8 | got[17]
                                     : 0;
    return fail(c, "RX frame #%u (%d buffer(s)): expected %u bytes, got %u; first difference at byte %u "
                   "(got 0x%02x, want 0x%02x); it carries seq %u",
                seq, nbufs, len, got_len, i, i < got_len ? got[i] : 0, i < len ? want[i] : 0, got_seq);
}

/* We ack no offloads, so everything but num_buffers must be zero; and
 * num_buffers must be 1 without MRG_RXBUF (virtio 1.2 §5.1.6.4.1; Linux's
 * vhost-net got this wrong until 2025, DPDK 22.11 leaves it unwritten). */
static void check_rx_header(struct conn *c, const uint8_t *hdr, uint16_t want_buffers, uint16_t at)
{
    struct virtio_net_hdr_mrg_rxbuf h;
    memcpy(&h, hdr, sizeof(h));
    if (h.hdr.flags == 0 && h.hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE && h.hdr.hdr_len == 0 && h.hdr.gso_size == 0 &&
        h.hdr.csum_start == 0 && h.hdr.csum_offset == 0 && h.num_buffers == want_buffers)
        return;
    if (c->hdr_bad++ == 0)
        snprintf(c->hdr_bad_first, sizeof(c->hdr_bad_first),
                 "used[%u]: flags 0x%x gso_type %u hdr_len %u gso_size %u csum %u/%u num_buffers %u (want %u)",
                 at, h.hdr.flags, h.hdr.gso_type, h.hdr.hdr_len, h.hdr.gso_size, h.hdr.csum_start,
                 h.hdr.csum_offset, h.num_buffers, want_buffers);
}

static int rx_reap(struct conn *c)
{
    struct ring *r = &c->rx;
    uint16_t used_idx = __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE);
    uint8_t pkt[HDR_LEN + MAX_FRAME + 8];
    int n = 0;

    if ((uint16_t)(used_idx - r->last_used_idx) > r->outstanding)
        return fail_int(c, "RX used->idx %u runs %u entries ahead of what we read (%u), only %d outstanding", used_idx,
                    (uint16_t)(used_idx - r->last_used_idx), r->last_used_idx, r->outstanding);
    while (r->last_used_idx != used_idx) {
        uint16_t at = r->last_used_idx;
        uint16_t ready = (uint16_t)(used_idx - at);
        struct vring_used_elem e = r->used->ring[at % r->num];
        if (!check_used_id(c, r, e.id, at))
            return -1;
        struct chain *ch = &r->chains[e.id];
        if (e.len > ch->cap)
            return fail_int(c, "RX used[%u]: len %u larger than the buffer (%u)", at, e.len, ch->cap);
        if (e.len < HDR_LEN)
            return fail_int(c, "RX used[%u]: len %u shorter than the 12-byte header", at, e.len);

        uint16_t nbufs = 1;
        if (c->mrg) {
            struct virtio_net_hdr_mrg_rxbuf h;
            chain_gather(r, (uint16_t)e.id, HDR_LEN, (uint8_t *)&h);
            nbufs = h.num_buffers;
            if (nbufs == 0 || nbufs > 8)
                return fail_int(c, "RX used[%u]: num_buffers %u (a frame of <= 1526 bytes needs 1..3 buffers here)",
                            at, nbufs);
            if (nbufs > ready) {
                /* The device published used->idx in the middle of a packet:
                 * Linux's receive_mergeable drops such a packet.  Wait. */
                if (c->partial_at != at) {
                    c->mrg_partial++;
                    c->partial_at = at;
                }
                break;
            }
        }
        uint32_t total = 0;
        for (uint16_t i = 0; i < nbufs; i++) {
            struct vring_used_elem ei = r->used->ring[(uint16_t)(at + i) % r->num];
            if (i > 0) {
                if (!check_used_id(c, r, ei.id, (uint16_t)(at + i)))
                    return -1;
                if (ei.len > r->chains[ei.id].cap)
                    return fail_int(c, "RX used[%u]: len %u larger than the buffer (%u)", (uint16_t)(at + i), ei.len,
                                r->chains[ei.id].cap);
            }
            if (i + 1 < nbufs && ei.len != r->chains[ei.id].cap && c->mrg_not_full++ == 0)
                snprintf(c->mrg_not_full_first, sizeof(c->mrg_not_full_first),
                         "used[%u] is buffer %u of %u with len %u, buffer holds %u", (uint16_t)(at + i), i + 1, nbufs,
                         ei.len, r->chains[ei.id].cap);
            if (total + ei.len > sizeof(pkt))
                return fail_int(c, "RX used[%u]: packet of %u+ bytes, more than header + 1514", at, total + ei.len);
            total += chain_gather(r, (uint16_t)ei.id, ei.len, pkt + total);
        }
        check_rx_header(c, pkt, nbufs, at);    /* nbufs is 1 without MRG_RXBUF */
        if (!verify_frame(c, pkt + HDR_LEN, total - HDR_LEN, nbufs))
            return -1;
        if (nbufs > 1)
            c->multi_buffer++;
        for (uint16_t i = 0; i < nbufs; i++) {
            ring_free(r, (uint16_t)r->used->ring[(uint16_t)(at + i) % r->num].id);
            r->last_used_idx++;
            r->consumed++;
        }
        c->received++;
        n += nbufs;
    }
    if (n && c->event_idx)
        __atomic_store_n(used_event(r), r->last_used_idx, __ATOMIC_RELEASE);
    return n;
}

/* Sleep until a call eventfd fires, at most ms; the test never depends on calls. */
static void wait_for_call(struct conn *c, int ms)
{
    struct pollfd p[2] = { { c->rx.call_fd, POLLIN, 0 }, { c->tx.call_fd, POLLIN, 0 } };
    if (poll(p, 2, ms) > 0) {
        eventfd_t v;
        if (p[0].revents & POLLIN && eventfd_read(c->rx.call_fd, &v) == 0)
            c->rx.calls += v;
        if (p[1].revents & POLLIN && eventfd_read(c->tx.call_fd, &v) == 0)
            c->tx.calls += v;
    }
}

static bool traffic(struct conn *c, uint32_t npackets)
{
    double t0 = now(), last_progress = t0;

    while (c->received < npackets || c->tx.outstanding > 0) {
        bool progress = false;

        uint16_t before = c->rx.avail_idx;
        while (rx_post(c))
            ;
        ring_flush(&c->rx, c->event_idx);
        progress |= before != c->rx.avail_idx;

        uint32_t posted = 0;
        while (c->sent < npackets && c->sent - c->received < MAX_IN_FLIGHT && tx_post(c, c->sent)) {
            c->sent++;
            posted++;
        }
        ring_flush(&c->tx, c->event_idx);

        int t = tx_reap(c);
        int rcv = t < 0 ? -1 : rx_reap(c);
        if (t < 0 || rcv < 0 || c->err[0])
            return false;
        if (posted || t || rcv)
            progress = true;

        double tnow = now();
        if (progress) {
            last_progress = tnow;
            continue;
        }
        if (tnow - last_progress > STALL_SECONDS || tnow - t0 > TRAFFIC_SECONDS) {
            if (!backend_alive())
                return fail(c, "back-end died: sent %u, received %u", c->sent, c->received);
            return fail(c, "%s after %.1f s: sent %u, received %u in order; TX avail %u used %u (read %u); "
                           "RX avail %u used %u (read %u)",
                        tnow - t0 > TRAFFIC_SECONDS ? "too slow" : "no progress", tnow - t0, c->sent, c->received,
                        c->tx.avail_idx, c->tx.used->idx, c->tx.last_used_idx, c->rx.avail_idx, c->rx.used->idx,
                        c->rx.last_used_idx);
        }
        wait_for_call(c, 1);
    }
    return true;
}

/* === One connection, start to end ======================================== */

static int fd_baseline = -1;
static char fd_baseline_list[4096];

static void run_connection(const struct config *cfg, int number)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        check(false, "allocate the connection");
        return;
    }
    snprintf(c->tag, sizeof(c->tag), "%s conn %d", cfg->name, number);
    c->sock = -1;
    c->mem.fd = -1;
    c->rx.kick_fd = c->rx.call_fd = c->rx.err_fd = -1;
    c->tx.kick_fd = c->tx.call_fd = c->tx.err_fd = -1;
    c->partial_at = -1;
    c->salt = (uint32_t)(0x1000 * (cfg->mrg_rxbuf ? 1 : 2) + number);

    /* Connection 1: base 0, gpa 1 GiB, mmap_offset 0.  Connection 2: base
     * 65000 (indices wrap mid-run), gpa 4 GiB, mmap_offset 2 MiB. */
    uint16_t base = number == 1 ? 0 : SECOND_BASE;
    uint64_t gpa = number == 1 ? 0x40000000ull : 0x100000000ull;
    uint64_t mmap_offset = number == 1 ? 0 : 2u << 20;

    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
    int rc = -1;
    for (double end = now() + 3; now() < end;) {
        c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        rc = connect(c->sock, (struct sockaddr *)&sa, sizeof(sa));
        if (rc == 0 || !backend_alive())
            break;
        close(c->sock);
        c->sock = -1;
        sleep_ms(50);
    }
    if (!check(rc == 0, "%s: connect to %s", c->tag, sock_path))
        goto done;

    int failed_before = tap_failed;
    bool ok = handshake(c, cfg, gpa, mmap_offset, base);
    if (!ok) {
        if (tap_failed == failed_before)    /* else a step said it already */
            check(false, "%s: handshake: %s", c->tag, c->err);
        goto disconnect;
    }

    /* Traffic. */
    double t0 = now();
    ok = traffic(c, NPACKETS);
    double dt = now() - t0;
    check(ok, "%s: %d frames (60..1514 B) sent on TX came back on RX in order, every byte intact%s%s", c->tag,
          NPACKETS, ok ? "" : ": ", c->err);
    diag("%s: %u sent, %u received in %.2f s; TX layouts 1/2/3/4 desc/indirect: %" PRIu64 "/%" PRIu64 "/%" PRIu64
         "/%" PRIu64 "/%" PRIu64 "; RX indirect buffers %" PRIu64 "; frames in >1 RX buffer %" PRIu64,
         c->tag, c->sent, c->received, dt, c->tx_layouts[0], c->tx_layouts[1], c->tx_layouts[2], c->tx_layouts[3],
         c->tx_layouts[4], c->rx_layouts_indirect, c->multi_buffer);
    diag("%s: kicks RX %" PRIu64 " TX %" PRIu64 ", calls RX %" PRIu64 " TX %" PRIu64 "; ring indices now TX %u RX %u",
         c->tag, c->rx.kicks, c->tx.kicks, c->rx.calls, c->tx.calls, c->tx.avail_idx, c->rx.last_used_idx);
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

    /* Stop both rings as QEMU does at device reset. */
    uint16_t want[2] = { (uint16_t)(base + c->rx.consumed), (uint16_t)(base + c->tx.published) };
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
    uint16_t tx_used = c->tx.used->idx, rx_used = c->rx.used->idx;
    if (tx_post(c, c->sent))
        ring_flush(&c->tx, false);
    while (rx_post(c))
        ;
    ring_flush(&c->rx, false);
    if (c->tx.kick_fd >= 0 && eventfd_write(c->tx.kick_fd, 1) == 0)
        c->tx.kicks++;
    sleep_ms(300);
    check(c->tx.used->idx == tx_used && c->rx.used->idx == rx_used,
          "%s: rings stay stopped after GET_VRING_BASE (TX used %u -> %u, RX used %u -> %u in 300 ms)", c->tag, tx_used,
          c->tx.used->idx, rx_used, c->rx.used->idx);
    eventfd_t v = 0;
    bool err0 = eventfd_read(c->rx.err_fd, &v) == 0, err1 = eventfd_read(c->tx.err_fd, &v) == 0;
    check(!err0 && !err1, "%s: no error signalled on the vring err eventfds (RX %d, TX %d)", c->tag, err0, err1);

disconnect:
    if (c->sock >= 0)
        close(c->sock);
    c->sock = -1;
    conn_close_fds(c);
    mem_destroy(&c->mem);
    sleep_ms(500);
    if (backend_pid > 0 && fd_baseline >= 0) {
        static char list[4096];
        int n = count_fds(backend_pid, list, sizeof(list));
        if (backend_real) {
            check(n == fd_baseline, "%s: back-end has %d open fds 0.5 s after the disconnect, as before the first "
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
done:
    if (!backend_alive())
        check(false, "%s: back-end still running after the connection", c->tag);
    free(c);
}

/* === main ================================================================ */

int main(int argc, char **argv)
{
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";
    double t_start = now();

    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = { .sa_handler = on_fatal_signal };
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    alarm(ALARM_SECONDS);

    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/vx-proto-XXXXXX", tmp && *tmp && strlen(tmp) < 60 ? tmp : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        tmp_dir[0] = 0;
        check(false, "create a temporary directory: %s", strerror(errno));
        printf("1..%d\n", tap_n);
        return 1;
    }
    snprintf(sock_path, sizeof(sock_path), "%s/vhost.sock", tmp_dir);
    snprintf(log_path, sizeof(log_path), "%s/backend.log", tmp_dir);
    atexit(at_exit_cleanup);

    if (!start_backend(binary)) {
        printf("1..%d\n", tap_n);
        return 1;
    }
    double t_sock = now();
    bool up = wait_for_socket(20);
    if (!check(up, "back-end creates its socket (%.2f s)", now() - t_sock)) {
        print_backend_log(30);
        printf("1..%d\n", tap_n);
        return 1;
    }
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

    /* Shut down. */
    if (backend_real && backend_pid > 0) {
        kill(backend_pid, SIGTERM);
        double end = now() + 5;
        pid_t p = 0;
        while (now() < end && (p = waitpid(backend_pid, &backend_status, WNOHANG)) == 0)
            sleep_ms(20);
        if (p == backend_pid)
            backend_pid = -1;
        check(p > 0 && WIFEXITED(backend_status) && WEXITSTATUS(backend_status) == 0,
              "SIGTERM: back-end exits with status 0 within 5 s (%s %d)",
              p <= 0 ? "still running" : WIFEXITED(backend_status) ? "exit status" : "signal",
              p <= 0 ? 0 : WIFEXITED(backend_status) ? WEXITSTATUS(backend_status) : WTERMSIG(backend_status));
        struct stat st;
        check(stat(sock_path, &st) != 0, "SIGTERM: back-end removed its socket file");
    } else if (!backend_real && backend_pid > 0) {
        /* testpmd quits when its stdin closes; it re-raises SIGTERM otherwise. */
        close(backend_stdin);
        backend_stdin = -1;
        double end = now() + 10;
        pid_t p = 0;
        while (now() < end && (p = waitpid(backend_pid, &backend_status, WNOHANG)) == 0)
            sleep_ms(20);
        if (p == backend_pid) {
            backend_pid = -1;
            diag("stand-in back-end quit on stdin EOF: %s %d", WIFEXITED(backend_status) ? "exit status" : "signal",
                 WIFEXITED(backend_status) ? WEXITSTATUS(backend_status) : WTERMSIG(backend_status));
        } else {
            diag("stand-in back-end still running 10 s after stdin EOF: killed");
        }
    }
    kill_backend();
    if (tap_failed || getenv("VX_SHOW_LOG"))
        print_backend_log(40);
    diag("runtime %.1f s", now() - t_start);
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
