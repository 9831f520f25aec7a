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
 *   - the connection is a socketpair; the backend's end is handed to the
 *     device as its conn_fd (the device is set up by vu_init() in client
 *     mode, which opens nothing; we never ask it to connect), made
 *     non-blocking so that a message cut short is refused at once instead of
 *     after the 2 s receive timeout;
 *   - after each message we call vu_handle_event() while the backend's end is
 *     readable, exactly as main.c's poll loop does; when the dispatcher
 *     resets the connection (conn_fd becomes -1) we connect again;
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
 *     mapping of guest memory left (checked in /proc/self/maps).
 *
 * Build and run: `make fuzz` (see tests/fuzz/run.sh).  Product logs are
 * silenced; VX_FUZZ_LOG=1 shows them (useful when replaying one input).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "vhost_xdp.h"
#include "fuzz_format.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
static uint8_t *guest;          /* our own view of the guest memfd */
static int first_free_fd;       /* the fds we open per input are from here up */
#define FD_SCAN 128             /* ... and below first_free_fd + FD_SCAN */
static bool open_at_start[FD_SCAN];     /* per input: the fuzzer's own runtime opens
                                           some between inputs (its symbolizer's pipes) */
static uint8_t *pkt_buf[VX_BURST];

static struct vx_dev dev;
static int fe_fd = -1;          /* the frontend's end of the connection */
static char replies[256];       /* a reply split across two reads, reassembled */
static size_t replies_len;

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
        FILE *null = fopen("/dev/null", "w");
        if (null)
            stderr = null;      /* glibc allows it; vx_log() writes to stderr */
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
    if (fd_of_kind[VUF_FD_EVENT] < 0 || fd_of_kind[VUF_FD_RDONLY] < 0)
        abort();
    guest = mmap(NULL, VUF_GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd_of_kind[VUF_FD_GUEST], 0);
    if (guest == MAP_FAILED)
        abort();
    for (int i = 0; i < VX_BURST; i++)
        if (!(pkt_buf[i] = malloc(VX_PKT_MAX)))
            abort();
    /* p[1] stays open (a pipe whose writer is gone reads as EOF, fine too). */
    first_free_fd = fcntl(0, F_DUPFD_CLOEXEC, 0);
    close(first_free_fd);
}

/* === The connection ====================================================== */

static void connect_frontend(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    fe_fd = sv[0];
    dev.conn_fd = sv[1];
    replies_len = 0;
}

/* Read what the backend answered: each reply is a 12-byte header, flags
 * exactly VERSION|REPLY, and an 8-byte payload (u64 or vring state). */
static void drain_replies(void)
{
    for (;;) {
        ssize_t r = recv(fe_fd, replies + replies_len, sizeof replies - replies_len, MSG_DONTWAIT);
        if (r <= 0)
            return;
        replies_len += r;
        size_t k = 0;
        for (; replies_len - k >= 20; k += 20) {
            uint32_t hdr[3];
            memcpy(hdr, replies + k, sizeof hdr);
            CHECK(hdr[1] == 0x5);
            CHECK(hdr[2] == 8);
        }
        memmove(replies, replies + k, replies_len - k);
        replies_len -= k;
    }
}

/* The device's state must be sound after every message. */
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

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
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

static void check_device(void)
{
    CHECK(dev.mem.nregions <= VX_MAX_REGIONS);
    for (uint32_t i = 0; i < dev.mem.nregions; i++) {
        const struct vx_mem_region *r = &dev.mem.regions[i];
        CHECK(r->host == (uint8_t *)r->mmap_addr + r->mmap_offset);
        CHECK(r->mmap_offset <= r->mmap_size && r->memory_size <= r->mmap_size - r->mmap_offset);
    }
    for (uint32_t i = 0; i < VX_MAX_VRINGS; i++) {
        const struct vx_vring *vr = &dev.vrings[i];
        CHECK(vr->index == i);
        CHECK(vr->kick_fd == -1 || fd_open(vr->kick_fd));
        CHECK(vr->call_fd == -1 || fd_open(vr->call_fd));
        CHECK(vr->err_fd == -1 || fd_open(vr->err_fd));
        if (!atomic_load(&vr->ready))
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

/* Let the backend handle everything readable on its end, as main.c does. */
static void serve(void)
{
    for (int i = 0; i < 100000 && dev.conn_fd >= 0; i++) {
        struct pollfd p = { .fd = dev.conn_fd, .events = POLLIN };
        if (poll(&p, 1, 0) <= 0)
            break;
        vu_handle_event(&dev);
        drain_replies();
        check_device();
    }
    if (dev.conn_fd < 0) {      /* the backend reset the connection: reconnect */
        close(fe_fd);
        connect_frontend();
    }
}

static void send_msg(const uint8_t *bytes, size_t len, const int *fds, int nfds)
{
    struct iovec iov = { (void *)bytes, len };
    union {
        char buf[CMSG_SPACE(VUF_MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds > 0) {
        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    }
    /* Non-blocking: if the backend stopped reading, the bytes are dropped. */
    if (sendmsg(fe_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* nothing to do */ }
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
    if (atomic_load(&((struct vx_vring *)rx)->ready))
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
        if (atomic_load(&tx->ready)) {
            for (int i = 0; i < VX_BURST; i++)  /* room ends at an ASan redzone */
                pkts[i] = (struct vx_pkt){ .room = VX_PKT_MAX, .data = pkt_buf[i] };
            burst_forward(tx, rx, pkts);
        }
        int n = n_extra % (VX_BURST + 1);
        uint32_t l = len;       /* < VX_PKT_MAX */
        for (int i = 0; i < n; i++)
            pkts[i] = (struct vx_pkt){ .len = l, .room = l, .data = pkt_buf[i] + VX_PKT_MAX - l };
        if (n && atomic_load(&rx->ready))
            burst_enqueue(rx, pkts, n);
    }
}

/* === Leaks =============================================================== */

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
    /* Only our own mapping of guest memory may remain. */
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps)
        return;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, maps))
        n += strstr(line, "/memfd:vx-fuzz-") != NULL;
    fclose(maps);
    CHECK(n == 1);
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
    /* Fresh, zeroed guest memory (our mapping stays valid). */
    if (ftruncate(fd_of_kind[VUF_FD_GUEST], 0) < 0 || ftruncate(fd_of_kind[VUF_FD_GUEST], VUF_GUEST_SIZE) < 0)
        abort();
    connect_frontend();

    uint8_t op;
    while (take(&in, &op, 1)) {
        switch (op % VUF_NOPS) {
        case VUF_OP_MSG: {
            uint8_t nfds, kind;
            int fds[VUF_MAX_FDS];
            uint16_t len;
            if (!take(&in, &nfds, 1))
                goto done;
            nfds %= VUF_MAX_FDS + 1;
            for (int i = 0; i < nfds; i++) {
                if (!take(&in, &kind, 1))
                    goto done;
                fds[i] = fd_of_kind[kind % VUF_NFDKINDS];
            }
            if (!take(&in, &len, 2))
                goto done;
            if (len > VUF_MAX_MSG)
                len = VUF_MAX_MSG;
            if (len > in.left)
                len = in.left;
            send_msg(in.p, len, fds, nfds);
            in.p += len, in.left -= len;
            serve();
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
            memcpy(guest + off, in.p, len);
            in.p += len, in.left -= len;
            break;
        }
        case VUF_OP_BURST: {
            uint8_t n;
            uint16_t len;
            if (!take(&in, &n, 1) || !take(&in, &len, 2))
                goto done;
            poll_rings(n, len);
            break;
        }
        case VUF_OP_CLOSE:
            shutdown(fe_fd, SHUT_WR);
            serve();
            break;
        }
    }
done:
    /* The frontend goes away for good: the backend forgets the device. */
    vu_cleanup(&dev);
    close(fe_fd);
    fe_fd = -1;
    check_no_leaks();
    return 0;
}
