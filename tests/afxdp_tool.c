/*
 * tests/afxdp_tool.c - a test-only driver for nic_afxdp.c, and its peer.
 *
 * Both ends of the AF_XDP test (tests/test_afxdp.sh) in one program, so the
 * test needs nothing but iproute2 and our C:
 *
 *   recv IF N            receive N test frames on an AF_XDP port (N = 0: until
 *                        SIGINT/SIGTERM or the timeout); frames of other types
 *                        (IPv6 chatter...) are released and counted apart
 *   send IF N            send N test frames through an AF_XDP port, wait until
 *                        the kernel has completed every one
 *   raw-send IF N        send N test frames from an AF_PACKET socket (the peer)
 *   raw-recv IF N        receive N test frames on an AF_PACKET socket (the peer)
 *   netlink-attach IF    attach a do-nothing XDP program through netlink and
 *                        exit, leaving it attached: the "stale program" a crashed
 *                        tool leaves behind, which nic_open() must replace
 *
 *   options: --mode auto|native|skb  --queue Q  --zerocopy  --timeout S
 *            --ready FILE (created once the port/socket is ready)
 *
 * Every test frame is generated from its sequence number alone: sizes vary
 * from 60 to 1514 bytes (frame 0 is 60, frame 1 is 1514), ethertype 0x88B5
 * (IEEE 802 local experimental), payload pseudo-random.  Each side prints one
 * line per frame, "seq length fnv1a64-of-the-whole-frame", so the test
 * compares what was sent and what arrived with cmp.
 *
 * Build: gcc -std=gnu11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -pthread -I. \
 *            tests/afxdp_tool.c nic_afxdp.c -o tests/afxdp_tool
 */
#include "vhost_xdp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#define TEST_ETHERTYPE 0x88B5
#define FRAME_MIN 60
#define FRAME_MAX 1514

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pause_us(long us)
{
    nanosleep(&(struct timespec){ 0, us * 1000 }, NULL);
}

/* === Test frames ========================================================== */

static uint32_t frame_len(uint32_t seq)
{
    if (seq < 2)
        return seq == 0 ? FRAME_MIN : FRAME_MAX;
    return FRAME_MIN + (seq * 2654435761u >> 8) % (FRAME_MAX - FRAME_MIN + 1);
}

static void frame_build(uint8_t *f, uint32_t seq, uint32_t len)
{
    static const uint8_t dst[6] = { 0x02, 0, 0, 0, 0, 0x02 }, src[6] = { 0x02, 0, 0, 0, 0, 0x01 };
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = TEST_ETHERTYPE >> 8;
    f[13] = TEST_ETHERTYPE & 0xff;
    uint32_t be = htonl(seq);
    memcpy(f + 14, &be, 4);
    uint64_t x = 0x9E3779B97F4A7C15ull * (seq + 1);   /* xorshift64, seeded by seq */
    for (uint32_t i = 18; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f[i] = (uint8_t)x;
    }
}

/* A test frame is ours if it has our ethertype; returns its seq or -1. */
static int64_t frame_seq(const uint8_t *f, uint32_t len)
{
    if (len < 18 || f[12] != (TEST_ETHERTYPE >> 8) || f[13] != (TEST_ETHERTYPE & 0xff))
        return -1;
    uint32_t be;
    memcpy(&be, f + 14, 4);
    return ntohl(be);
}

static void frame_print(const uint8_t *f, uint32_t len, uint32_t seq)
{
    uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a 64 */
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ f[i]) * 0x100000001b3ull;
    printf("%u %u %016" PRIx64 "\n", seq, len, h);
}

/* === Options ============================================================== */

struct tool_opts {
    const char *cmd, *ifname, *ready;
    unsigned long count;
    double timeout;
    struct nic_options nic;
};

static void usage(void)
{
    fputs("usage: afxdp_tool recv|send|raw-send|raw-recv IF N [options]\n"
          "       afxdp_tool netlink-attach IF [--mode native|skb]\n"
          "options: --mode auto|native|skb --queue Q --zerocopy --timeout S --ready FILE\n", stderr);
    exit(2);
}

static void parse(int argc, char **argv, struct tool_opts *o)
{
    memset(o, 0, sizeof *o);
    o->timeout = 10;
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--zerocopy") == 0) {
            o->nic.zerocopy = true;
        } else if (strncmp(a, "--", 2) == 0) {
            if (i + 1 >= argc)
                usage();
            const char *v = argv[++i];
            if (strcmp(a, "--mode") == 0)
                o->nic.mode = strcmp(v, "native") == 0 ? NIC_XDP_NATIVE : strcmp(v, "skb") == 0 ? NIC_XDP_SKB
                            : strcmp(v, "auto") == 0 ? NIC_XDP_AUTO : (usage(), NIC_XDP_AUTO);
            else if (strcmp(a, "--queue") == 0)
                o->nic.queue = (uint32_t)strtoul(v, NULL, 0);
            else if (strcmp(a, "--timeout") == 0)
                o->timeout = strtod(v, NULL);
            else if (strcmp(a, "--ready") == 0)
                o->ready = v;
            else
                usage();
        } else if (pos == 0) {
            o->cmd = a, pos++;
        } else if (pos == 1) {
            o->ifname = a, pos++;
        } else if (pos == 2) {
            o->count = strtoul(a, NULL, 0), pos++;
        } else {
            usage();
        }
    }
    if (pos < 2 || (pos < 3 && strcmp(o->cmd, "netlink-attach") != 0))
        usage();
    o->nic.ifname = o->ifname;
}

static void signal_ready(const struct tool_opts *o)
{
    if (!o->ready)
        return;
    FILE *f = fopen(o->ready, "w");
    if (f)
        fclose(f);
}

static void print_stats(struct nic_port *p)
{
    const struct nic_stats *s = nic_stats(p);
    fprintf(stderr, "afxdp_tool: stats rx %" PRIu64 " (%" PRIu64 " B) tx %" PRIu64 " (%" PRIu64 " B) "
            "fill-empty %" PRIu64 " tx-full %" PRIu64 " invalid %" PRIu64 "\n", s->rx_packets, s->rx_bytes,
            s->tx_packets, s->tx_bytes, s->rx_fill_empty, s->tx_ring_full, s->invalid_descs);
}

/* === AF_XDP side: through nic_afxdp.c ===================================== */

static int xsk_recv(const struct tool_opts *o)
{
    struct nic_port *p;
    if (nic_open(&p, &o->nic) < 0)
        return 1;
    fprintf(stderr, "afxdp_tool: mode %s\n", nic_mode_name(p));
    signal_ready(o);
    struct vx_pkt pkts[VX_BURST];
    unsigned long got = 0, other = 0;
    double deadline = now() + o->timeout;
    while (!stop && (o->count == 0 || got < o->count) && now() < deadline) {
        int n = nic_rx_burst(p, pkts, VX_BURST);
        if (n == 0) {
            pause_us(20);       /* a test, not a PMD: leave the CPU to the sender */
            continue;
        }
        for (int i = 0; i < n; i++) {
            int64_t seq = frame_seq(pkts[i].data, pkts[i].len);
            if (seq < 0) {
                other++;
                continue;
            }
            frame_print(pkts[i].data, pkts[i].len, (uint32_t)seq);
            got++;
        }
        nic_rx_release(p, pkts, n);
    }
    fprintf(stderr, "afxdp_tool: received %lu test frames (%lu others)%s\n", got, other,
            stop ? ", stopped by signal" : "");
    print_stats(p);
    nic_close(p);
    fflush(stdout);
    return stop || o->count == 0 || got == o->count ? 0 : 1;
}

static int xsk_send(const struct tool_opts *o)
{
    struct nic_port *p;
    if (nic_open(&p, &o->nic) < 0)
        return 1;
    fprintf(stderr, "afxdp_tool: mode %s\n", nic_mode_name(p));
    signal_ready(o);

    /* Count the TX frames: all of them are free now.  At the end, all of
     * them free again means every packet has been completed by the kernel. */
    static struct vx_pkt all[1 << 20];
    int total = nic_tx_alloc(p, all, (int)(sizeof all / sizeof all[0]));
    nic_tx_submit(p, all, 0, total);

    struct vx_pkt pkts[VX_BURST];
    uint32_t seq = 0;
    double deadline = now() + o->timeout;
    while (!stop && seq < o->count && now() < deadline) {
        int want = o->count - seq < VX_BURST ? (int)(o->count - seq) : VX_BURST;
        int n = nic_tx_alloc(p, pkts, want);
        if (n == 0) {
            pause_us(20);
            continue;
        }
        for (int i = 0; i < n; i++, seq++) {
            pkts[i].hdr = (struct vx_net_hdr){ 0 };     /* plain frames: no checksum for the kernel to complete */
            pkts[i].len = frame_len(seq);
            frame_build(pkts[i].data, seq, pkts[i].len);
            frame_print(pkts[i].data, pkts[i].len, seq);
        }
        nic_tx_submit(p, pkts, n, n);
    }
    int free_now = 0;
    while (now() < deadline) {
        free_now = nic_tx_alloc(p, all, total);
        nic_tx_submit(p, all, 0, free_now);
        if (free_now == total)
            break;
        pause_us(100);
    }
    fprintf(stderr, "afxdp_tool: sent %u test frames, %d of %d TX frames back\n", seq, free_now, total);
    print_stats(p);
    nic_close(p);
    fflush(stdout);
    return seq == o->count && free_now == total ? 0 : 1;
}

/* === The peer: plain AF_PACKET ============================================ */

static int packet_socket(const char *ifname, int proto)
{
    int fd = socket(AF_PACKET, SOCK_RAW, htons(proto));
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(proto),
                               .sll_ifindex = (int)if_nametoindex(ifname) };
    if (fd < 0 || sll.sll_ifindex == 0 || bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        fprintf(stderr, "afxdp_tool: AF_PACKET socket on %s: %s\n", ifname, strerror(errno));
        exit(1);
    }
    return fd;
}

static int raw_send(const struct tool_opts *o)
{
    /* Protocol 0: this socket receives nothing, it only sends. */
    int fd = packet_socket(o->ifname, 0);
    uint8_t f[FRAME_MAX];
    for (uint32_t seq = 0; seq < o->count && !stop; seq++) {
        uint32_t len = frame_len(seq);
        frame_build(f, seq, len);
        while (send(fd, f, len, 0) < 0) {
            if (errno != ENOBUFS && errno != EAGAIN) {
                fprintf(stderr, "afxdp_tool: send: %s\n", strerror(errno));
                return 1;
            }
            pause_us(100);
        }
        frame_print(f, len, seq);
    }
    close(fd);
    return 0;
}

static int raw_recv(const struct tool_opts *o)
{
    int fd = packet_socket(o->ifname, TEST_ETHERTYPE);
    int big = 32 << 20;     /* hold a whole test run even if we are slow to read */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    signal_ready(o);
    uint8_t f[FRAME_MAX + 64];
    unsigned long got = 0;
    double deadline = now() + o->timeout;
    while (!stop && got < o->count && now() < deadline) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = recv(fd, f, sizeof f, MSG_DONTWAIT);
        int64_t seq = n > 0 ? frame_seq(f, (uint32_t)n) : -1;
        if (seq < 0)
            continue;
        frame_print(f, (uint32_t)n, (uint32_t)seq);
        got++;
    }
    /* Frames the kernel dropped because our socket buffer was full. */
    struct tpacket_stats ps = { 0 };
    socklen_t len = sizeof ps;
    getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &ps, &len);
    fprintf(stderr, "afxdp_tool: raw-recv got %lu test frames (socket drops %u)\n", got, ps.tp_drops);
    close(fd);
    fflush(stdout);
    return got == o->count ? 0 : 1;
}

/* === netlink-attach: a stale program, as another tool would leave it ===== */

static int netlink_attach(const struct tool_opts *o)
{
    /* r0 = XDP_PASS; exit: passes everything, like no program at all. */
    struct bpf_insn prog[] = {
        { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_PASS },
        { .code = BPF_JMP | BPF_EXIT },
    };
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.prog_type = BPF_PROG_TYPE_XDP;
    a.insns = (uint64_t)(uintptr_t)prog;
    a.insn_cnt = 2;
    a.license = (uint64_t)(uintptr_t)"MIT";
    snprintf(a.prog_name, sizeof a.prog_name, "stale_test");
    int prog_fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &a, sizeof a);
    if (prog_fd < 0) {
        fprintf(stderr, "afxdp_tool: BPF_PROG_LOAD: %s\n", strerror(errno));
        return 1;
    }
    struct {
        struct nlmsghdr nh;
        struct ifinfomsg ifi;
        struct rtattr xdp;          /* IFLA_XDP, nesting the two below */
        struct rtattr fd_hdr;
        int32_t fd;
        struct rtattr flags_hdr;
        uint32_t flags;
    } req = {
        .nh = { .nlmsg_len = sizeof req, .nlmsg_type = RTM_SETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK },
        .ifi = { .ifi_family = AF_UNSPEC, .ifi_index = (int)if_nametoindex(o->ifname) },
        .xdp = { .rta_len = RTA_LENGTH(2 * RTA_LENGTH(4)), .rta_type = IFLA_XDP | NLA_F_NESTED },
        .fd_hdr = { .rta_len = RTA_LENGTH(4), .rta_type = IFLA_XDP_FD },
        .fd = prog_fd,
        .flags_hdr = { .rta_len = RTA_LENGTH(4), .rta_type = IFLA_XDP_FLAGS },
        .flags = o->nic.mode == NIC_XDP_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE,
    };
    int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    char reply[4096];
    ssize_t n = -1;
    if (nl >= 0 && send(nl, &req, sizeof req, 0) >= 0)
        n = recv(nl, reply, sizeof reply, 0);
    struct nlmsghdr *nh = (struct nlmsghdr *)reply;
    int err = n < 0 ? errno : nh->nlmsg_type == NLMSG_ERROR ? -((struct nlmsgerr *)NLMSG_DATA(nh))->error : 0;
    if (err) {
        fprintf(stderr, "afxdp_tool: RTM_SETLINK IFLA_XDP on %s: %s\n", o->ifname, strerror(err));
        return 1;
    }
    fprintf(stderr, "afxdp_tool: attached \"stale_test\" to %s through netlink (%s mode); it stays after we exit\n",
            o->ifname, o->nic.mode == NIC_XDP_NATIVE ? "native" : "generic");
    return 0;
}

int main(int argc, char **argv)
{
    struct tool_opts o;
    parse(argc, argv, &o);
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (strcmp(o.cmd, "recv") == 0)
        return xsk_recv(&o);
    if (strcmp(o.cmd, "send") == 0)
        return xsk_send(&o);
    if (strcmp(o.cmd, "raw-send") == 0)
        return raw_send(&o);
    if (strcmp(o.cmd, "raw-recv") == 0)
        return raw_recv(&o);
    if (strcmp(o.cmd, "netlink-attach") == 0)
        return netlink_attach(&o);
    usage();
}
