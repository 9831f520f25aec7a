/*
 * main.c - vhost-xdp's command line, threads, signals, stats and shutdown.
 *
 * Where it sits: this is the control thread.  It parses the options, starts
 * the poll-mode threads (pmd_loop.c), then waits in poll() for vhost-user
 * messages (handed to vhost_user.c), signals and the stats and ring-view
 * timers (with --trace=rings, also the guests' kick eventfds).  Packets
 * never pass through here.
 *
 * Shutdown order matters: first the rings are taken from the PMD threads and
 * guest memory is unmapped (vu_cleanup), then the threads are joined
 * (pmd_stop), then the --pcap writer takes what they captured last and
 * closes the file (pcap_close), then the socket file is gone and we exit 0.
 */
#include "vhost_xdp.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fputs("usage: vhost-xdp --socket PATH [--client] --loopback [options]\n"
          "\n"
          "A vhost-user network backend: serves the virtio-net queues of a QEMU guest or of\n"
          "DPDK's virtio_user over PATH, in poll mode.\n"
          "\n"
          "  -s, --socket PATH      the vhost-user unix socket\n"
          "  -c, --client           connect to PATH (the frontend listens) instead of listening;\n"
          "                         retried every second, and again after the frontend goes away\n"
          "  -l, --loopback         port: each queue pair's TX comes back on its own RX\n"
          "  -i, --iface IF         port: AF_XDP socket on interface IF (root or CAP_NET_ADMIN+CAP_BPF)\n"
          "      --queue Q          NIC queue id for --iface (default 0)\n"
          "      --xdp-mode MODE    auto (native, else skb; the default), native or skb\n"
          "      --zerocopy         AF_XDP zero-copy mode (needs driver support; default copy mode)\n"
          "      --frames N         UMEM frames (power of two, default 4096)\n"
          "      --frame-size N     UMEM frame size: 2048 or 4096 (default)\n"
          "  -q, --queues N         queue pairs offered to the frontend (1..8, default 1)\n"
          "  -p, --pmd-cores LIST   one poll thread per CPU in LIST, pinned there (e.g. 1, 0,1, 2-3);\n"
          "                         default: one thread, not pinned\n"
          "      --pmd-sleep USEC   when a poll thread finds no packet for a while, sleep between polls,\n"
          "                         longer each time up to USEC microseconds (0..10000; default 0: never\n"
          "                         sleep).  Saves the CPU an idle poll thread burns; costs latency: the\n"
          "                         first packet after a quiet moment waits up to USEC for the thread\n"
          "      --pcap FILE        write every forwarded packet to FILE (pcap, Linux cooked link type:\n"
          "                         \"Out\" = sent by the guest, \"In\" = given to the guest); the poll\n"
          "                         threads never wait for it: if the writer falls behind, packets are\n"
          "                         left out and counted\n"
          "      --pcap-limit BYTES stop capturing when FILE would grow past BYTES (suffix k, M or G;\n"
          "                         default 64M)\n"
          "  -S, --stats SECONDS    print a one-line summary every SECONDS\n"
          "  -t, --trace[=WHAT]     on stderr: messages (the default) decodes every vhost-user\n"
          "                         message; rings (or all) adds ring events: started, stopped,\n"
          "                         enabled, disabled, kicks received, calls sent (a few per second)\n"
          "  -R, --ring-view SECONDS  print every started ring's indices and slots every SECONDS\n"
          "                         (SIGUSR1 prints it once)\n"
          "  -h, --help             this text\n",
          out);
}

/* "1", "0,1", "2-3,5" -> CPU numbers.  Returns the count, or -1. */
static int parse_cpu_list(const char *s, int *cpus, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a;
        if (end == s || a < 0 || a >= CPU_SETSIZE)
            return -1;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s || b < a || b >= CPU_SETSIZE)
                return -1;
        }
        for (long c = a; c <= b; c++) {
            if (n == max)
                return -1;
            cpus[n++] = (int)c;
        }
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return n;
}

/* === Stats =============================================================== */

struct totals {
    uint64_t tx_packets, tx_bytes;      /* taken from the guest (its TX rings) */
    uint64_t rx_packets, rx_bytes;      /* given to the guest (its RX rings) */
    uint64_t drops, broken;
};

/* Sum the per-ring counters.  Odd rings are the guest's TX (packets we took
 * from it), even rings its RX (packets we gave it): vring 2k / 2k+1 is pair k.
 * The PMD threads keep writing while we read; each counter is a relaxed
 * load, so the sum is a snapshot that is at most one burst stale. */
static struct totals sum_rings(const struct vx_dev *dev)
{
    struct totals t = { 0 };
    for (int i = 0; i < VX_MAX_VRINGS; i++) {
        const struct vx_ring_stats *s = &dev->vrings[i].stats;
        uint64_t p = __atomic_load_n(&s->packets, __ATOMIC_RELAXED);
        uint64_t b = __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
        if (i & 1) {
            t.tx_packets += p;
            t.tx_bytes += b;
        } else {
            t.rx_packets += p;
            t.rx_bytes += b;
        }
        t.drops += __atomic_load_n(&s->drops, __ATOMIC_RELAXED);
        t.broken += __atomic_load_n(&s->broken, __ATOMIC_RELAXED);
    }
    return t;
}

/* 8300000 -> "8.30 M", 12000 -> "12.0 k", 3 -> "3 ": rates a reader takes in at a glance. */
static const char *rate(char *buf, double v)
{
    if (v >= 1e6)
        snprintf(buf, 16, "%.2f M", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, 16, "%.1f k", v / 1e3);
    else
        snprintf(buf, 16, "%.0f ", v);
    return buf;
}

static void print_stats(const struct vx_dev *dev, const struct totals *now, const struct totals *before, double secs)
{
    char a[16], b[16], c[16], d[16], broken[8 * VX_MAX_VRINGS] = "";
    /* Which rings are broken now (each stops alone; the others go on). */
    for (int i = 0, n = 0; i < VX_MAX_VRINGS; i++)
        if (__atomic_load_n(&dev->vrings[i].broken, __ATOMIC_RELAXED))
            n += snprintf(broken + n, sizeof broken - n, "%s%d", n ? "," : " now: ", i);
    fprintf(stderr,
            "vhost-xdp: stats: from guest %spps %sbit/s | to guest %spps %sbit/s | "
            "drops %llu (+%llu) | broken rings %llu%s\n",
            rate(a, (now->tx_packets - before->tx_packets) / secs), rate(b, (now->tx_bytes - before->tx_bytes) * 8 / secs),
            rate(c, (now->rx_packets - before->rx_packets) / secs), rate(d, (now->rx_bytes - before->rx_bytes) * 8 / secs),
            (unsigned long long)now->drops, (unsigned long long)(now->drops - before->drops),
            (unsigned long long)now->broken, broken);
}

/* The NIC's counters, read field by field (the PMD stores them relaxed). */
static struct nic_stats nic_snapshot(const struct nic_port *nic)
{
    const struct nic_stats *s = nic_stats(nic);
    struct nic_stats c;
#define LOAD(f) c.f = __atomic_load_n(&s->f, __ATOMIC_RELAXED)
    LOAD(rx_packets); LOAD(rx_bytes); LOAD(tx_packets); LOAD(tx_bytes);
    LOAD(rx_fill_empty); LOAD(tx_ring_full); LOAD(invalid_descs);
#undef LOAD
    return c;
}

static void print_nic_stats(const struct nic_stats *now, const struct nic_stats *before, double secs)
{
    char a[16], b[16], c[16], d[16];
    fprintf(stderr, "vhost-xdp: stats: nic rx %spps %sbit/s | nic tx %spps %sbit/s | "
            "fill ring empty %llu | tx ring full %llu | invalid descriptors %llu\n",
            rate(a, (now->rx_packets - before->rx_packets) / secs), rate(b, (now->rx_bytes - before->rx_bytes) * 8 / secs),
            rate(c, (now->tx_packets - before->tx_packets) / secs), rate(d, (now->tx_bytes - before->tx_bytes) * 8 / secs),
            (unsigned long long)now->rx_fill_empty, (unsigned long long)now->tx_ring_full,
            (unsigned long long)now->invalid_descs);
}

/* --pcap: totals since the start (the writer's and the PMDs' counters). */
static void print_pcap_stats(void)
{
    uint64_t captured, not_captured, after_limit;
    pcap_counts(&captured, &not_captured, &after_limit);
    fprintf(stderr, "vhost-xdp: stats: pcap %llu packets captured, %llu not captured (writer behind), "
            "%llu after --pcap-limit\n", (unsigned long long)captured, (unsigned long long)not_captured,
            (unsigned long long)after_limit);
}

/* CLOCK_MONOTONIC: stats intervals must not jump when the wall clock does. */
static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* === Ring view and kicks ================================================= */

/* --ring-view, SIGUSR1: every attached ring, formatted whole and written
 * once (the PMD threads may log at the same time). */
static void print_ring_view(const struct vx_dev *dev)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return;
    int n = 0;
    for (int i = 0; i < VX_MAX_VRINGS; i++)
        n += dev->vrings[i].attached;
    fprintf(out, "vhost-xdp: ring view: %d ring%s started\n", n, n == 1 ? "" : "s");
    for (int i = 0; i < VX_MAX_VRINGS; i++)
        if (dev->vrings[i].attached)
            vq_ring_view(&dev->vrings[i], out);
    if (n)
        vq_ring_view_legend(out);
    fclose(out);
    fwrite(text, 1, len, stderr);
    free(text);
}

/* --trace=rings: the guest's kicks.  We poll the rings, so nothing else
 * reads these eventfds; reading one returns the kicks since the last read. */
static void read_kick(const struct vx_dev *dev, int ring, int fd)
{
    uint64_t count;
    if (dev->vrings[ring].kick_fd == fd && read(fd, &count, sizeof count) == sizeof count)
        vx_log("trace: ring %d: kick (count %llu)", ring, (unsigned long long)count);
}

/* === main ================================================================ */

static struct vx_dev dev;   /* one device: one vhost-user connection at a time */

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },  { "client", no_argument, NULL, 'c' },
        { "loopback", no_argument, NULL, 'l' },      { "iface", required_argument, NULL, 'i' },
        { "queues", required_argument, NULL, 'q' },  { "pmd-cores", required_argument, NULL, 'p' },
        { "stats", required_argument, NULL, 'S' },   { "trace", optional_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },          { "queue", required_argument, NULL, 'Q' },
        { "xdp-mode", required_argument, NULL, 'M' }, { "zerocopy", no_argument, NULL, 'Z' },
        { "frames", required_argument, NULL, 'F' },  { "frame-size", required_argument, NULL, 'z' },
        { "ring-view", required_argument, NULL, 'R' }, { "pmd-sleep", required_argument, NULL, 'D' },
        { "pcap", required_argument, NULL, 'P' },    { "pcap-limit", required_argument, NULL, 'L' },
        { NULL, 0, NULL, 0 },
    };
    struct vu_options vo = { 0 };
    struct nic_options no = { .frame_size = 4096, .frame_count = 4096 };
    struct nic_port *nic = NULL;
    bool loopback = false;
    int cpus[64], ncpus = 0;
    long queues = 1, pmd_sleep_us = 0;
    const char *pcap_path = NULL;
    int64_t pcap_limit = 64 << 20;
    double stats_every = 0, view_every = 0;
    char *end;
    int c;

    /* Bad input gets one line naming the option and what it wants, and exit
     * status 2 (usage error), before anything is set up. */
    while ((c = getopt_long(argc, argv, "s:cli:q:p:S:t::R:h", longopts, NULL)) != -1) {
        switch (c) {
        case 's': vo.socket_path = optarg; break;
        case 'c': vo.client = true; break;
        case 'l': loopback = true; break;
        case 'i': no.ifname = optarg; break;
        case 'Z': no.zerocopy = true; break;
        case 'Q': case 'F': case 'z': {
            long v = strtol(optarg, &end, 10);
            bool good = !*end && v >= 0 && v <= 1 << 20;
            if (c == 'F')
                good = good && v >= 64 && !(v & (v - 1));
            if (c == 'z')
                good = good && (v == 2048 || v == 4096);
            if (!good) {
                fprintf(stderr, "vhost-xdp: %s %s: out of range (see --help)\n",
                        c == 'Q' ? "--queue" : c == 'F' ? "--frames" : "--frame-size", optarg);
                return 2;
            }
            *(c == 'Q' ? &no.queue : c == 'F' ? &no.frame_count : &no.frame_size) = (uint32_t)v;
            break;
        }
        case 'M':
            if (!strcmp(optarg, "auto"))
                no.mode = NIC_XDP_AUTO;
            else if (!strcmp(optarg, "native"))
                no.mode = NIC_XDP_NATIVE;
            else if (!strcmp(optarg, "skb"))
                no.mode = NIC_XDP_SKB;
            else {
                fprintf(stderr, "vhost-xdp: --xdp-mode %s: want auto, native or skb\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (!optarg || !strcmp(optarg, "messages"))
                vo.trace = VX_TRACE_MESSAGES;
            else if (!strcmp(optarg, "rings") || !strcmp(optarg, "all"))
                vo.trace = VX_TRACE_RINGS;
            else {
                fprintf(stderr, "vhost-xdp: --trace=%s: want messages, rings or all\n", optarg);
                return 2;
            }
            break;
        case 'D':
            pmd_sleep_us = strtol(optarg, &end, 10);
            if (*end || end == optarg || pmd_sleep_us < 0 || pmd_sleep_us > 10000) {
                fprintf(stderr, "vhost-xdp: --pmd-sleep %s: want microseconds from 0 to 10000\n", optarg);
                return 2;
            }
            break;
        case 'P': pcap_path = optarg; break;
        case 'L':
            /* At least the 24-byte file header, or there is nothing to stop. */
            pcap_limit = pcap_parse_size(optarg);
            if (pcap_limit < 24) {
                fprintf(stderr, "vhost-xdp: --pcap-limit %s: want a size of at least 24 bytes, "
                        "like 1000000, 500k, 64M or 2G\n", optarg);
                return 2;
            }
            break;
        case 'q':
            queues = strtol(optarg, &end, 10);
            if (*end || queues < 1 || queues > VX_MAX_QUEUE_PAIRS) {
                fprintf(stderr, "vhost-xdp: --queues %s: want a number from 1 to %d\n", optarg, VX_MAX_QUEUE_PAIRS);
                return 2;
            }
            break;
        case 'p':
            ncpus = parse_cpu_list(optarg, cpus, 64);
            if (ncpus <= 0) {
                fprintf(stderr, "vhost-xdp: --pmd-cores %s: want a CPU list like 1 or 0,1 or 2-3\n", optarg);
                return 2;
            }
            break;
        case 'S': case 'R': {
            double *every = c == 'S' ? &stats_every : &view_every;
            *every = strtod(optarg, &end);
            if (*end || !(*every > 0)) {
                fprintf(stderr, "vhost-xdp: %s %s: want a positive number of seconds\n",
                        c == 'S' ? "--stats" : "--ring-view", optarg);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vhost-xdp: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!vo.socket_path) {
        fprintf(stderr, "vhost-xdp: --socket PATH is required\n");
        usage(stderr);
        return 2;
    }
    if (loopback == (no.ifname != NULL)) {
        fprintf(stderr, "vhost-xdp: choose one port: --loopback or --iface IF\n");
        return 2;
    }
    /* The capture file before anything else: a path we cannot write is
     * reported at once, with nothing yet to undo. */
    if (pcap_path && pcap_open(pcap_path, (uint64_t)pcap_limit) < 0)
        return 1;
    /* How many queue pairs GET_QUEUE_NUM offers; a frontend may use fewer. */
    dev.queue_pairs = (uint32_t)queues;
    vx_trace_rings = vo.trace >= VX_TRACE_RINGS;    /* before the PMD threads start */

    /* Signals are read from a signalfd in the poll loop, so they are blocked
     * in every thread (the PMD threads inherit the mask) and a signal never
     * interrupts a handler half way through a message. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1);      /* print the ring view once */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sfd < 0) {
        vx_log("signalfd: %s", strerror(errno));
        pcap_close();
        return 1;
    }

    /* The NIC first: it is what most often fails (privileges, interface),
     * and then nothing else has been set up yet. */
    if (no.ifname) {
        if (nic_open(&nic, &no) < 0) {
            pcap_close();
            close(sfd);
            return 1;
        }
        vx_log("port: AF_XDP on %s queue %u, %s", no.ifname, no.queue, nic_mode_name(nic));
    }
    if (vu_init(&dev, &vo) < 0) {
        nic_close(nic);
        pcap_close();
        close(sfd);
        return 1;
    }
    /* The PMDs make their capture rings; the writer starts once they all exist. */
    if (pmd_start(&dev, nic, cpus, ncpus, (uint32_t)pmd_sleep_us) < 0 || pcap_start() < 0) {
        pmd_stop();
        vu_cleanup(&dev);
        pcap_close();
        nic_close(nic);
        close(sfd);
        return 1;
    }

    /*
     * The control loop.  It sleeps in poll() on two fds: the signalfd, and
     * either the listening socket or the connection (vu_poll_fd decides).
     * One message is handled per wake-up, so a signal is never more than one
     * message away.  The timeout (at most a second) drives --stats,
     * --ring-view and, in client mode while no frontend listens, the
     * reconnect attempts.  With --trace=rings the kick eventfds are polled
     * too, only to log the kicks.  The
     * packets are all on the PMD threads: nothing here is on their path.
     */
    struct totals last = sum_rings(&dev);
    struct nic_stats nic_last = { 0 };
    double t_last = now_seconds(), t_retry = 0, t_view = t_last;
    for (;;) {
        int fd = vu_poll_fd(&dev);
        struct pollfd pfd[2 + VX_MAX_VRINGS] = { { sfd, POLLIN, 0 }, { -1, POLLIN, 0 } };
        int kick_ring[VX_MAX_VRINGS], nfds = 2;
        pfd[1].fd = fd;     /* -1: poll() ignores it */
        for (int i = 0; vx_trace_rings && i < VX_MAX_VRINGS; i++) {
            if (dev.vrings[i].kick_fd >= 0) {
                kick_ring[nfds - 2] = i;
                pfd[nfds++] = (struct pollfd){ dev.vrings[i].kick_fd, POLLIN, 0 };
            }
        }
        double next = now_seconds() + 1;
        if (stats_every > 0 && t_last + stats_every < next)
            next = t_last + stats_every;
        if (view_every > 0 && t_view + view_every < next)
            next = t_view + view_every;
        double left = next - now_seconds();
        int timeout = left <= 0 ? 0 : (int)(left * 1000) + 1;
        int n = poll(pfd, nfds, timeout);
        if (n < 0 && errno != EINTR) {
            vx_log("poll: %s", strerror(errno));
            break;
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si = { 0 };
            if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR1) {
                print_ring_view(&dev);
                continue;
            }
            vx_log("signal %u: shutting down", si.ssi_signo);
            break;
        }
        /* Kicks first: the message below may close a kick fd. */
        for (int k = 2; k < nfds; k++)
            if (pfd[k].revents & POLLIN)
                read_kick(&dev, kick_ring[k - 2], pfd[k].fd);
        if (fd >= 0 && pfd[1].revents)
            vu_handle_event(&dev);
        double t = now_seconds();
        if (fd < 0 && t >= t_retry) {   /* client mode, not connected: retry every second */
            vu_handle_event(&dev);
            t_retry = t + 1;
        }
        if (stats_every > 0 && t >= t_last + stats_every) {
            struct totals cur = sum_rings(&dev);
            print_stats(&dev, &cur, &last, t - t_last);
            last = cur;
            if (nic) {
                struct nic_stats ns = nic_snapshot(nic);
                print_nic_stats(&ns, &nic_last, t - t_last);
                nic_last = ns;
            }
            if (pcap_enabled())
                print_pcap_stats();
            t_last = t;
        }
        if (view_every > 0 && t >= t_view + view_every) {
            print_ring_view(&dev);
            t_view = t;
        }
    }

    /* Shutdown, in the reverse order of the data path's dependencies: first
     * take the rings from the PMDs and unmap guest memory (the PMDs are still
     * running, so the usual quiesce works), then stop and join the PMDs, and
     * only then close the NIC whose rings they were polling. */
    vu_cleanup(&dev);   /* rings taken away, guest memory unmapped, socket file removed */
    pmd_stop();
    pcap_close();       /* after the PMDs: nothing more can be captured */
    if (nic) {
        struct nic_stats ns = nic_snapshot(nic);
        vx_log("exit: nic rx %llu packets, nic tx %llu packets, fill ring empty %llu, tx ring full %llu, "
               "invalid descriptors %llu", (unsigned long long)ns.rx_packets, (unsigned long long)ns.tx_packets,
               (unsigned long long)ns.rx_fill_empty, (unsigned long long)ns.tx_ring_full,
               (unsigned long long)ns.invalid_descs);
        nic_close(nic);  /* XDP program detached: the interface is as we found it */
    }
    struct totals fin = sum_rings(&dev);
    vx_log("exit: from guest %llu packets, to guest %llu packets, %llu drops, %llu broken rings",
           (unsigned long long)fin.tx_packets, (unsigned long long)fin.rx_packets,
           (unsigned long long)fin.drops, (unsigned long long)fin.broken);
    close(sfd);
    return 0;
}
