/*
 * tests/test_switch.c - the L2 learning switch (switch.c), seen from three
 * frontends, with frames crafted here and checked byte for byte.
 *
 * Runs vhost-xdp --socket A --socket B --socket C --mac-age 10 --stats 1
 * (three sockets: a switch) and drives each socket with the frontend of
 * tests/frontend.c (QEMU 7.2's handshake, one queue pair), then:
 *   1. flooding: a broadcast from A reaches B and C exactly once each, and
 *      never comes back to A; A's source MAC is learned;
 *   2. a hit: B's unicast to A's MAC reaches A only;
 *   3. a miss: a unicast to a MAC nobody has sent from is flooded to B and C;
 *   4. a move: A's MAC shows up on C; frames to it now go to C, not to A;
 *      SEND_RARP on A's connection (QEMU's announcement of a migrated
 *      guest): B and C each get the RARP once, and its MAC is learned on A;
 *   5. hostile input: a frame from a multicast source is forwarded but
 *      never learned; a 10-byte runt is dropped and counted; 20,000 frames
 *      from random source MACs fill the table, which stays at 4096
 *      entries, evicting (counted); afterwards B and C reach each other;
 *   6. a port whose frontend is gone: what is sent to it is dropped and
 *      counted on its device; a unicast to its station, whose port is
 *      down, is flooded to the others (switch.c, "A port that is down");
 *   7. ageing: with --mac-age 10, the random MACs and the gone port's leave
 *      the table;
 *   8. SIGUSR1 prints the table (fdb/show); SIGTERM: exit 0 and the
 *      switch's exit lines;
 *   9. two lanes on two poll threads (--queues 2 --pmd-cores 0,1): what
 *      comes in on queue pair k goes out on queue pair k only, and a MAC
 *      one thread learned is a hit for the other.
 *
 *   tests/test_switch [path/to/vhost-xdp]     TAP output
 *
 * tests/test_switch.sh uses it as a hostile port of its own too:
 *   tests/test_switch --flood SOCKET SECONDS PPS
 * connects to a switch's SOCKET as a frontend and sends, for SECONDS,
 * about PPS frames a second, each from a new random source MAC to a random
 * unicast MAC (so each is learned, and flooded as a miss); it prints
 * "flood: N frames sent" and exits 0, or 1 if the connection failed.
 * And for a DPDK port to send the same:
 *   tests/test_switch --flood-pcap FILE COUNT
 * writes COUNT such frames (64 bytes, each from a new random source MAC to
 * a random unicast MAC) into a pcap file, which testpmd's net_pcap port
 * reads and forwards to its virtio_user port (tests/test_switch.sh).
 */
#include "frontend.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NPORTS 3

static char sock3[108];
static const uint8_t mac_of[NPORTS][6] = {
    { 0x52, 0x54, 0x00, 0x00, 0x00, 0x0a }, { 0x52, 0x54, 0x00, 0x00, 0x00, 0x0b }, { 0x52, 0x54, 0x00, 0x00, 0x00, 0x0c },
};
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t nobody[6] = { 0x52, 0x54, 0x00, 0x99, 0x99, 0x99 };
static struct conn *conns[NPORTS];
static uint32_t frame_no;
static int lane;                    /* the queue pair deliver() sends and receives on */

/* A frame of `len` bytes to `dst` from `src`, ethertype 0x88b6, numbered. */
static uint32_t make_frame(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint32_t len)
{
    uint32_t k = ++frame_no;
    for (uint32_t i = 0; i < len; i++)
        f[i] = (uint8_t)(i * 13 + k * 7);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x88, f[13] = 0xb6;
    if (len >= 18)
        memcpy(f + 14, &k, 4);
    return k;
}

/* Anything on port p's RX ring now?  Waits `ms` first: the poll thread
 * forwards within microseconds, the wait only covers a loaded machine. */
static bool rx_pending(int p, int ms)
{
    sleep_ms(ms);
    struct ring *r = &conns[p]->qp[lane].rx;
    return __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) != r->last_used_idx;
}

/* Empty port p's RX ring (frames the flood of a test left there). */
static void drain(int p)
{
    uint8_t got[2048];
    do {
        while (rx_pending(p, 0))
            if (frame_recv(conns[p], &conns[p]->qp[lane], got, sizeof got) < 0)
                return;
    } while (rx_pending(p, 50));
}

/* Port `from` sends one frame to dst from src; each port whose bit is set in
 * `want` must receive exactly it, byte for byte, and the others nothing
 * (except those in `maybe`, which may get it once: a flood). */
static bool deliver_maybe(int from, const uint8_t *dst, const uint8_t *src, unsigned want, unsigned maybe,
                          const char *what)
{
    uint8_t f[200], got[2048];
    make_frame(f, dst, src, sizeof f);
    struct conn *c = conns[from];
    if (!c || !frame_send(c, &c->qp[lane], f, sizeof f) || !tx_wait_done(c, &c->qp[lane]))
        return check(false, "%s: sent from port %d (%s)", what, from, c ? c->err : "no connection");
    bool ok = true;
    char why[600] = "";
    for (int p = 0; p < NPORTS; p++) {
        if (!conns[p])
            continue;
        if (want & (1u << p)) {
            int n = frame_recv(conns[p], &conns[p]->qp[lane], got, sizeof got);
            if (n != (int)sizeof f || memcmp(got, f, sizeof f)) {
                ok = false;
                snprintf(why + strlen(why), sizeof why - strlen(why), " port %d did not get it (%d bytes%s%.80s);", p,
                         n, conns[p]->err[0] ? ": " : "", conns[p]->err);
                conns[p]->err[0] = 0;
            }
        }
        if (maybe & (1u << p)) {
            if (rx_pending(p, 100))
                frame_recv(conns[p], &conns[p]->qp[lane], got, sizeof got);
        } else if (rx_pending(p, (want & (1u << p)) ? 0 : 100)) {
            ok = false;
            snprintf(why + strlen(why), sizeof why - strlen(why), " port %d got one more frame;", p);
            drain(p);
        }
    }
    for (int p = 0; p < NPORTS; p++) {     /* with two queue pairs: nothing on the other lane */
        struct ring *r = conns[p] && conns[p]->npairs > 1 ? &conns[p]->qp[1 - lane].rx : NULL;
        if (r && __atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) != r->last_used_idx) {
            ok = false;
            snprintf(why + strlen(why), sizeof why - strlen(why), " port %d got a frame on the other lane;", p);
        }
    }
    return check(ok, "%s%s", what, why);
}

/* SEND_RARP `mac` on port `from`'s connection (PROTOCOL_F_RARP added to
 * what its handshake negotiated, as QEMU does): acked 0, and then every
 * other port gets the 60-byte RARP from `mac` exactly once, `from` none. */
static bool rarp_from(int from, const uint8_t mac[6])
{
    struct conn *c = conns[from];
    uint64_t v = 0, ack = ~0ull;
    memcpy(&v, mac, 6);
    bool ok = vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, c->protocol | BIT(VHOST_USER_PROTOCOL_F_RARP)) &&
              vu_send(c, VHOST_USER_SEND_RARP, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &v, sizeof v, NULL,
                      0) &&
              vu_reply(c, VHOST_USER_SEND_RARP, &ack, sizeof ack) && ack == 0;
    char why[300] = "";
    for (int p = 0; ok && p < NPORTS; p++) {
        uint8_t got[2048];
        if (p == from) {
            ok = !rx_pending(p, 100);
            snprintf(why, sizeof why, "port %d got a frame", p);
            continue;
        }
        int n = frame_recv(conns[p], &conns[p]->qp[lane], got, sizeof got);
        ok = n == 60 && !memcmp(got, bcast, 6) && !memcmp(got + 6, mac, 6) && got[12] == 0x80 && got[13] == 0x35 &&
             got[21] == 3 && !memcmp(got + 22, mac, 6) && !rx_pending(p, 100);
        snprintf(why, sizeof why, "port %d: %d bytes%s%.200s", p, n, conns[p]->err[0] ? ": " : "", conns[p]->err);
    }
    return check(ok, "SEND_RARP %02x:%02x:%02x:%02x:%02x:%02x on port %d: acked, and each other port got the RARP "
                 "(60 bytes, broadcast, 0x8035, op 3, the MAC) once%s%s", mac[0], mac[1], mac[2], mac[3], mac[4],
                 mac[5], from, ok ? "" : ": ", ok ? "" : why);
}

/* The counter `field` of switch port `port` in the next --stats round
 * (written after now: it counts everything sent before). */
static bool deliver(int from, const uint8_t *dst, const uint8_t *src, unsigned want, const char *what)
{
    return deliver_maybe(from, dst, src, want, 0, what);
}

static long counter_now(int port, const char *field)
{
    long from = log_size();
    char needle[64], line[600];
    snprintf(needle, sizeof needle, "switch port %d ", port);
    if (!log_find(from, needle, field, 5 * time_scale, line, sizeof line))
        return -1;
    const char *s = strstr(line, field);
    return s ? strtol(s + strlen(field), NULL, 10) : -1;
}

static struct conn *connect_port(int p, const char *path, int npairs)
{
    struct conn *c = conn_new(p == 0 ? "port A" : p == 1 ? "port B" : "port C", false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = false, .npairs = npairs };
    bool ok = c && conn_connect_to(c, path) && handshake(c, &o);
    check(ok, "port %d: connected and started%s%s", p, c && c->err[0] ? ": " : "", c ? c->err : "");
    if (!ok) {
        conn_free(c);
        return NULL;
    }
    return c;
}

/* 20,000 frames from random unicast source MACs, to A's MAC (known on
 * port 0, so they go there), published 64 at a time. */
static bool random_sources(int from)
{
    struct conn *c = conns[from];
    uint8_t f[64], src[6];
    uint32_t seed = 12345;
    for (int i = 0; i < 20000; i++) {
        for (int b = 0; b < 6; b++) {
            seed = seed * 1103515245u + 12345u;
            src[b] = (uint8_t)(seed >> 16);
        }
        src[0] = (uint8_t)((src[0] & 0xfe) | 0x02);     /* unicast, locally administered */
        make_frame(f, mac_of[0], src, sizeof f);
        if (!frame_add(c, &c->qp[0], f, sizeof f))
            return false;
        if (i % 64 == 63) {
            ring_flush(&c->qp[0].tx, c->event_idx);
            if (!tx_wait_done(c, &c->qp[0]))
                return false;
            while (rx_pending(0, 0))        /* A keeps its RX ring drained */
                if (frame_recv(conns[0], &conns[0]->qp[0], f, sizeof f) < 0)
                    break;
        }
    }
    ring_flush(&c->qp[0].tx, c->event_idx);
    return tx_wait_done(c, &c->qp[0]);
}

/* A 64-byte frame from a new random source MAC to a random unicast MAC
 * (both locally administered), for the two flood modes. */
static void random_frame(uint8_t f[64], uint32_t *seed)
{
    uint8_t src[6], dst[6];
    for (int b = 0; b < 6; b++) {
        *seed = *seed * 1103515245u + 12345u, src[b] = (uint8_t)(*seed >> 16);
        *seed = *seed * 1103515245u + 12345u, dst[b] = (uint8_t)(*seed >> 16);
    }
    src[0] = (uint8_t)((src[0] & 0xfe) | 0x02), dst[0] = (uint8_t)((dst[0] & 0xfe) | 0x02);
    make_frame(f, dst, src, 64);
}

/* The --flood mode (see the top): random sources to random destinations,
 * in bursts of 32, paced to about pps frames a second. */
static int flood(const char *path, double seconds, double pps)
{
    struct conn *c = conn_new("flood", false);
    struct fe_opts o = { .style = STYLE_DPDK, .mrg_rxbuf = false, .npairs = 1 };
    if (!c || !conn_connect_to(c, path) || !handshake(c, &o)) {
        fprintf(stderr, "flood: cannot start on %s: %s\n", path, c ? c->err : "out of memory");
        return 1;
    }
    uint8_t f[64];
    uint32_t seed = (uint32_t)getpid();
    uint64_t sent = 0;
    double start = now();
    while (now() - start < seconds) {
        for (int i = 0; i < 32; i++) {
            random_frame(f, &seed);
            if (!frame_add(c, &c->qp[0], f, sizeof f))
                break;
        }
        ring_flush(&c->qp[0].tx, c->event_idx);
        if (!tx_wait_done(c, &c->qp[0]))
            break;
        sent += 32;
        while (sent > (now() - start) * pps)
            sleep_ms(1);
    }
    printf("flood: %llu frames sent\n", (unsigned long long)sent);
    conn_free(c);
    return 0;
}

/*
 * Two lanes on two poll threads (--queues 2 --pmd-cores 0,1): A and B with
 * two queue pairs each, socket C left empty.  What comes in on queue pair
 * k goes out on queue pair k (switch.c, "Lanes and threads"), and a MAC
 * learned by one thread is known to the other (the shared table).
 */
static void lanes_part(const char *binary, const char *const paths[NPORTS])
{
    char line[600];
    const char *args[] = { "--socket", paths[0], "--socket", paths[1], "--socket", paths[2], "--queues", "2",
                           "--pmd-cores", "0,1", "--pmd-sleep", "50", NULL };
    long from = log_size();
    if (!check(start_backend_argv(binary, args) && wait_for_socket(20), "lanes: vhost-xdp --queues 2 --pmd-cores 0,1"))
        return;
    check(log_find(from, "switch: pmd 1 polls lane 1: port 0", NULL, 5, line, sizeof line), "lanes: %s", line);
    conns[0] = connect_port(0, paths[0], 2);
    conns[1] = connect_port(1, paths[1], 2);
    conns[2] = NULL;                    /* socket C: no frontend */
    if (conns[0] && conns[1]) {
        lane = 1;
        deliver(0, bcast, mac_of[0], 0x2, "lane 1: A's broadcast reaches B on queue pair 1 only");
        deliver(1, mac_of[0], mac_of[1], 0x1, "lane 1: B to A's MAC: a hit, on queue pair 1");
        lane = 0;
        deliver(0, mac_of[1], mac_of[0], 0x2,
                "lane 0: A to B's MAC, learned by the other thread: a hit, on queue pair 0 only");
        deliver(1, mac_of[0], mac_of[1], 0x1, "lane 0: B to A's MAC: on queue pair 0");
    }
    conn_free(conns[0]);
    conn_free(conns[1]);
    conns[0] = conns[1] = NULL;
    long stopping = log_size();
    stop_backend();
    /* Hits, not floods that happened to reach the one live port: */
    check(log_find(stopping, "exit: switch port 0 (", "hits 1, misses 0, floods 1,", 5, line, sizeof line) &&
          log_find(stopping, "exit: switch port 1 (", "hits 2, misses 0, floods 0,", 5, line, sizeof line),
          "lanes: A counted 1 hit and 1 flood, B 2 hits, over both threads (%s)", line);
}

/* The --flood-pcap mode: the same frames into a pcap file (the classic
 * format: a 24-byte file header, then a 16-byte header per frame; written
 * in this machine's byte order, which the magic number tells readers). */
static int flood_pcap(const char *path, long count)
{
    FILE *out = fopen(path, "wb");
    if (!out || count < 1 || count > 1000000) {
        fprintf(stderr, "flood-pcap: cannot write %s, or COUNT %ld not 1..1000000\n", path, count);
        if (out)
            fclose(out);
        return 1;
    }
    const uint32_t file_hdr[6] = { 0xa1b2c3d4u, 2 | 4u << 16, 0, 0, 65535, 1 /* Ethernet */ };
    fwrite(file_hdr, sizeof file_hdr, 1, out);
    uint8_t f[64];
    uint32_t seed = (uint32_t)getpid();
    for (long n = 0; n < count; n++) {
        random_frame(f, &seed);
        const uint32_t rec_hdr[4] = { (uint32_t)(n / 1000000), (uint32_t)(n % 1000000), sizeof f, sizeof f };
        fwrite(rec_hdr, sizeof rec_hdr, 1, out);
        fwrite(f, sizeof f, 1, out);
    }
    if (fclose(out) != 0) {
        fprintf(stderr, "flood-pcap: writing %s failed\n", path);
        return 1;
    }
    printf("flood-pcap: %ld frames written\n", count);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--flood"))
        return flood(argv[2], atof(argv[3]), atof(argv[4]));
    if (argc == 4 && !strcmp(argv[1], "--flood-pcap"))
        return flood_pcap(argv[2], atol(argv[3]));
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";
    if (!fe_setup("test_switch", 180))
        return 1;
    snprintf(sock3, sizeof sock3, "%.*s/vhost3.sock", (int)(strrchr(sock_path, '/') - sock_path), sock_path);
    const char *args[] = { "--socket", sock_path, "--socket", sock_path2, "--socket", sock3, "--mac-age", "10",
                           "--stats", "1", NULL };
    char line[600];
    if (!check(start_backend_argv(binary, args) && wait_for_socket(20), "vhost-xdp with three sockets starts")) {
        print_backend_log(30);
        return fe_finish();
    }
    check(log_find(0, "port: an L2 learning switch of 3 vhost-user ports", NULL, 5, line, sizeof line),
          "log: an L2 learning switch of 3 ports");
    check(log_find(0, "switch: pmd 0 polls lane 0: port 0", NULL, 5, line, sizeof line),
          "log: which thread polls which ports (%s)", line);
    const char *paths[NPORTS] = { sock_path, sock_path2, sock3 };
    for (int p = 0; p < NPORTS; p++)
        conns[p] = connect_port(p, paths[p], 1);
    if (!conns[0] || !conns[1] || !conns[2]) {
        print_backend_log(30);
        return fe_finish();
    }

    /* 1-4: flood, hit, miss, move. */
    deliver(0, bcast, mac_of[0], 0x6, "broadcast from A reaches B and C once each, not A");
    deliver(1, mac_of[0], mac_of[1], 0x1, "B to A's MAC (learned from the broadcast): to A only (a hit)");
    deliver(2, mac_of[1], mac_of[2], 0x2, "C to B's MAC: to B only");
    deliver(0, nobody, mac_of[0], 0x6, "A to a MAC never seen: flooded to B and C (a miss)");
    deliver(2, mac_of[1], mac_of[0], 0x2, "A's MAC now sends from C: to B");
    deliver(1, mac_of[0], mac_of[1], 0x4, "B to A's MAC after it moved: to C only, not A");
    deliver(2, mac_of[1], mac_of[2], 0x2, "C's own MAC again from C: to B");
    deliver(0, mac_of[0], mac_of[0], 0x0, "A sends to its own MAC: the MAC moves back to A, and the frame is never "
            "sent back out of A: nowhere");
    static const uint8_t announced[6] = { 0x52, 0x54, 0x00, 0x00, 0x00, 0x0d };
    rarp_from(0, announced);
    deliver(1, announced, mac_of[1], 0x1, "B to the MAC the RARP announced: learned on A, to A only");

    /* 5: hostile sources. */
    long from;
    static const uint8_t group_src[6] = { 0x01, 0x00, 0x5e, 0x00, 0x00, 0x01 };
    deliver(0, mac_of[1], group_src, 0x2, "a frame from a multicast source is forwarded (to B)");
    uint8_t runt[64];       /* built whole, sent as its first 10 bytes */
    make_frame(runt, bcast, mac_of[0], sizeof runt);
    frame_send(conns[0], &conns[0]->qp[0], runt, 10);
    tx_wait_done(conns[0], &conns[0]->qp[0]);
    check(!rx_pending(1, 100) && !rx_pending(2, 0), "a 10-byte runt goes nowhere");
    long nl = counter_now(0, "not learned ");
    check(nl >= 1, "the multicast source is counted as not learned on port 0 (%ld)", nl);
    long dropped = counter_now(0, "dropped ");
    check(dropped >= 1, "the runt is counted as dropped on port 0 (%ld)", dropped);

    check(random_sources(1), "port B sends 20000 frames from random source MACs%s", conns[1]->err);
    drain(0), drain(2);
    long learned = counter_now(1, "learned "), evicted = counter_now(1, "evicted ");
    check(learned > 4096 && evicted > 0, "port B: %ld learned, %ld evicted (the table holds 4096)", learned, evicted);
    long entries = counter_now(1, "learned ") >= 0 && log_find(log_size(), "switch table: ", " of 4096 entries",
                                                               5, line, sizeof line)
                   ? strtol(strstr(line, "switch table: ") + 14, NULL, 10) : -1;
    check(entries > 4000 && entries <= 4096, "the table is full and no larger: %ld entries (%s)", entries, line);
    drain(0), drain(1), drain(2);
    /* After the flood of sources, B and C still reach each other: a station
     * the random ones evicted is flooded to (A may get a copy) until it is
     * learned again from its next frame; then it is a hit again. */
    deliver_maybe(1, mac_of[2], mac_of[1], 0x4, 0x1, "after the random sources: B to C's MAC reaches C");
    deliver_maybe(2, mac_of[1], mac_of[2], 0x2, 0x1, "... and C to B's MAC reaches B");
    deliver(1, mac_of[2], mac_of[1], 0x4, "... and once both have sent again, B to C is a hit: C only");

    /* 6: a port whose frontend is gone. */
    long drops_line_from = log_size();
    conn_free(conns[2]);
    conns[2] = NULL;
    check(log_find(drops_line_from, "frontend disconnected from", sock3, 5, line, sizeof line),
          "port C's frontend disconnects: %s", line);
    deliver(1, mac_of[2], mac_of[1], 0x1, "B to C's MAC with C gone: C's port is down, so it is flooded: A gets it");
    deliver(0, bcast, mac_of[0], 0x2, "a broadcast with C gone reaches B only");
    from = log_size();
    char needle[160];
    snprintf(needle, sizeof needle, "stats: device 2 (%s)", sock3);
    bool counted = false;
    for (int i = 0; i < 5 && !counted; i++) {
        if (!log_find(from, needle, "drops", 3 * time_scale, line, sizeof line))
            break;
        const char *d = strstr(line, "| drops ");
        counted = d && strtol(d + 8, NULL, 10) >= 2;
        from = log_size();
    }
    check(counted, "what is sent to C's port is dropped and counted on device 2 (%s)", line);

    /* 7: ageing (--mac-age 10): the random sources, and C's MAC, leave the table. */
    sleep_ms((int)(11000 * time_scale));
    from = log_size();
    check(log_find(from, "switch table: ", "aged ", 5, line, sizeof line) &&
          strtol(strstr(line, "aged ") + 5, NULL, 10) >= 4000 &&
          strtol(strstr(line, "switch table: ") + 14, NULL, 10) <= 3,
          "entries not seen for 10 s are aged, the table is back to A's and B's: %s", line);

    /* 8: the table view, and the exit. */
    deliver(1, mac_of[0], mac_of[1], 0x1, "B to A's MAC (A sent last from C, aged): flooded, reaches A");
    from = log_size();
    kill(backend_pid, SIGUSR1);
    check(log_find(from, "    1     0  52:54:00:00:00:0b", NULL, 5, line, sizeof line),
          "SIGUSR1: the MAC table, fdb/show style: B's MAC on port 1 (%s)", line);
    check(log_find(from, "ports: 0 ", "of 4096 entries", 5, line, sizeof line), "... with its ports line (%s)", line);
    long stopping = log_size();
    conn_free(conns[0]);
    conn_free(conns[1]);
    stop_backend();
    check(log_find(stopping, "exit: switch port 1 (", "hits ", 5, line, sizeof line), "exit: the switch's lines (%s)", line);
    lanes_part(binary, paths);
    return fe_finish();
}
