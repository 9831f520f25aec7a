/*
 * tests/exercise_probe.c - what a lab shows, counted from the driver's side,
 * for tests/test_exercises.sh (the answers in labs/answers/ change vhost-xdp;
 * this is the guest that notices).
 *
 *   tests/exercise_probe BINARY kicks               Labs 2 and 6: notifications
 *   tests/exercise_probe BINARY tso [guest]         Lab 7: segments and checksums
 *   tests/exercise_probe BINARY nic [guest] IFACE   Lab 7: the peer's checksums
 *
 * It starts BINARY --loopback (tests/frontend.c; nic: BINARY --iface IFACE,
 * under VX_BACKEND_WRAPPER, e.g. "ip netns exec NS"), does QEMU 7.2's
 * handshake, moves some traffic, and prints one line the shell test reads:
 *
 *   kicks: "PROBE kicks event_idx=0|1 tx_kicks=N rx_kicks=N packets=N
 *     ping_tx_kicks=N pings=N".  2,000 frames go round the loopback as a
 *     stream (up to 64 in flight), then 100 one at a time, each back before
 *     the next, as a ping sends them; the driver notifies as virtio_net does
 *     (tests/frontend.c, ring_flush: vring_need_event() on avail_event with
 *     EVENT_IDX, else VRING_USED_F_NO_NOTIFY) and counts its kicks.
 *   tso: "PROBE tso guest_csum=0|1 guest_tso4=0|1 tso_frames=N plain_frames=N
 *     csum_bad=N partial=N".  The driver acks CSUM and HOST_TSO4 (and with
 *     `guest` also GUEST_CSUM and GUEST_TSO4) and sends two TCP/IPv4 frames
 *     as Linux's stack hands them to virtio_net with the offloads on: a TSO
 *     packet of 1,200 payload bytes at gso_size 400 (three segments' worth)
 *     and a plain 300-byte one, both with NEEDS_CSUM (the TCP checksum field
 *     holds only the pseudo-header's sum, virtio 1.2 §5.1.6.2).  Each frame
 *     that comes back on RX is counted by its source port, and checked as the
 *     receiving kernel would: a frame still marked NEEDS_CSUM is "partial"
 *     (a GUEST_CSUM driver takes it unverified, §5.1.6.4), any other must
 *     carry correct IPv4 and TCP checksums, or it counts in csum_bad (the
 *     kernel's InCsumErrors).
 *   nic: "PROBE nic guest_csum=0|1 tcp_frames=N csum_bad=N partial=N".  The
 *     driver acks CSUM (and with `guest` GUEST_CSUM), runs the shell command
 *     in $PROBE_SENDER (a peer behind IFACE opening TCP connections to us:
 *     its SYNs leave its veth with partial checksums, CHECKSUM_PARTIAL), then
 *     reads what came in from the NIC and checks it as in tso mode.
 *
 * Its own set-up steps are TAP lines (the shell test shows them as comments).
 */
#include "frontend.h"
#include "ref_csum.h"

#include <linux/virtio_net.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KICK_FRAMES  2000
#define PINGS        100
#define TSO_PAYLOAD  1200
#define TSO_MSS      400
#define PLAIN_PAYLOAD 300
#define TSO_PORT     5001           /* source port of the TSO packet and its segments */
#define PLAIN_PORT   5003           /* source port of the plain frame */
#define ETH_IP_TCP   54             /* 14 + 20 + 20: the headers of every frame here */

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* The TCP pseudo-header's sum (RFC 793): addresses, protocol, TCP length. */
static uint32_t pseudo_sum(const uint8_t *ip, uint32_t tcp_len)
{
    return ref_sum(ip + 12, 8, 0) + 6 + tcp_len;
}

/* Ethernet + IPv4 + TCP with `payload` bytes, the TCP checksum field left
 * partial (the pseudo-header's folded sum, as Linux leaves it for
 * CHECKSUM_PARTIAL); returns the frame's length. */
static uint32_t build_tcp(uint8_t *f, uint16_t sport, uint32_t payload)
{
    static const uint8_t macs[12] = { 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0x12, 0x34, 0x57 };
    uint32_t len = ETH_IP_TCP + payload;
    memset(f, 0, ETH_IP_TCP);
    memcpy(f, macs, 12);
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14, *tcp = ip + 20;
    ip[0] = 0x45;
    put16(ip + 2, 20 + 20 + payload);
    put16(ip + 4, 0x1234);
    put16(ip + 6, 0x4000);          /* DF, as TCP sets it */
    ip[8] = 64;
    ip[9] = 6;
    memcpy(ip + 12, (const uint8_t[]){ 10, 0, 0, 2, 10, 0, 0, 1 }, 8);
    put16(ip + 10, (uint16_t)~ref_fold(ref_sum(ip, 20, 0)));
    put16(tcp, sport);
    put16(tcp + 2, 5002);
    put16(tcp + 4, 0); put16(tcp + 6, 1000);    /* sequence number 1000 */
    put16(tcp + 10, 1);                         /* acknowledgment 1 */
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;                             /* PSH | ACK */
    put16(tcp + 14, 0xffff);
    for (uint32_t i = 0; i < payload; i++)
        tcp[20 + i] = (uint8_t)(i * 7 + sport);
    put16(tcp + 16, ref_fold(pseudo_sum(ip, 20 + payload)));
    return len;
}

/* One frame with its virtio-net header onto TX, in one descriptor, and
 * published (ring_flush kicks if the device asks for it). */
static bool send_with_header(struct conn *c, struct pair *q, const struct virtio_net_hdr_mrg_rxbuf *h,
                             const uint8_t *frame, uint32_t len)
{
    uint16_t id;
    int head = ring_take(&q->tx, 1, &id);
    if (head < 0)
        return fail(c, "no free TX descriptor");
    uint8_t *slot = slot_of(&q->tx, head);
    memcpy(slot, h, HDR_LEN);
    memcpy(slot + HDR_LEN, frame, len);
    struct seg seg = { 0, HDR_LEN + len };
    ring_add(&q->tx, &id, 1, &seg, 1, false, false);
    ring_flush(&q->tx, c->event_idx);
    return true;
}

/* The next frame on RX with its header (frame_recv in tests/frontend.c,
 * header kept), waiting up to `secs`; its length with the header, 0 if none
 * came, -1 on a bad used entry. */
static int recv_with_header(struct conn *c, struct pair *q, uint8_t *out, uint32_t cap, double secs)
{
    struct ring *r = &q->rx;
    double end = now() + secs;
    while (__atomic_load_n(&r->used->idx, __ATOMIC_ACQUIRE) == r->last_used_idx) {
        if (now() > end)
            return 0;
        sleep_ms(1);
    }
    struct vring_used_elem e = r->used->ring[r->last_used_idx % r->num];
    if (e.id >= r->num || !r->chains[e.id].outstanding || e.len < HDR_LEN || e.len > r->chains[e.id].cap || e.len > cap)
        return fail_int(c, "RX used[%u]: id %u len %u is not a buffer we posted", r->last_used_idx, e.id, e.len);
    const struct chain *ch = &r->chains[e.id];
    uint32_t pos = 0;
    for (int i = 0; i < ch->nseg && pos < e.len; i++) {
        uint32_t n = ch->seg[i].len < e.len - pos ? ch->seg[i].len : e.len - pos;
        memcpy(out + pos, slot_of(r, e.id) + ch->seg[i].off, n);
        pos += n;
    }
    rx_release(c, q, (uint16_t)e.id);
    return (int)e.len;
}

/* Labs 1 and 2: a ping's pattern, one frame at a time, each back before the
 * next is sent, so that the device is idle when the driver publishes; the
 * frames that came back (the kicks are counted by ring_flush). */
static int probe_pings(struct conn *c)
{
    struct pair *q = &c->qp[0];
    struct virtio_net_hdr_mrg_rxbuf h = { .num_buffers = 0 };
    uint8_t frame[128], got[4096];
    int back = 0;
    for (int i = 0; i < PINGS; i++) {
        memset(frame, 0xff, 6);
        memset(frame + 6, 0x52, 6);
        put16(frame + 12, 0x88b5);          /* local experimental ethertype */
        memset(frame + 14, i, sizeof frame - 14);
        if (!send_with_header(c, q, &h, frame, sizeof frame) || recv_with_header(c, q, got, sizeof got, 5.0) <= 0 ||
            tx_reap(c, q) < 0)
            break;
        back++;
    }
    check(back == PINGS, "%d single frames back, one at a time%s%s", PINGS, c->err[0] ? ": " : "", c->err);
    return back;
}

/* What the receiving kernel would make of one frame from the RX ring
 * (header included): TCP/IPv4 frames are counted by source port, and
 * either "partial" (NEEDS_CSUM: a GUEST_CSUM driver takes it unverified)
 * or checked in full, a wrong IPv4 or TCP checksum counting as "bad". */
struct tally { int tso, plain, tcp, bad, partial; };
static void tally_frame(struct tally *t, const uint8_t *got, uint32_t n)
{
    const struct virtio_net_hdr_mrg_rxbuf *rh = (const void *)got;
    const uint8_t *f = got + HDR_LEN, *ip = f + 14, *tcp = ip + 20;
    uint32_t flen = n - HDR_LEN;
    if (n < HDR_LEN + ETH_IP_TCP || be16(f + 12) != 0x0800 || ip[0] != 0x45 || ip[9] != 6)
        return;
    uint32_t port = be16(tcp);
    t->tcp++;
    t->tso += port == TSO_PORT;
    t->plain += port == PLAIN_PORT;
    if (rh->hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        t->partial++;
        return;
    }
    uint32_t tcp_len = be16(ip + 2) - 20;
    bool ok = ref_fold(ref_sum(ip, 20, 0)) == 0xffff && tcp_len + 34 <= flen &&
              ref_fold(ref_sum(tcp, tcp_len, pseudo_sum(ip, tcp_len))) == 0xffff;
    t->bad += !ok;
}

/* Lab 7: what came in from the NIC while the peer sent (PROBE_SENDER). */
static int probe_nic(struct conn *c)
{
    struct pair *q = &c->qp[0];
    const char *sender = getenv("PROBE_SENDER");
    uint8_t got[4096];
    struct tally t = { 0 };
    int n;
    if (!check(sender && *sender, "PROBE_SENDER names the peer's command"))
        return 1;
    int rc = system(sender);
    diag("the sender exited with status %d", rc);
    while ((n = recv_with_header(c, q, got, sizeof got, 1.0)) > 0)
        tally_frame(&t, got, (uint32_t)n);
    check(n == 0, "RX read%s%s", c->err[0] ? ": " : "", c->err);
    printf("PROBE nic guest_csum=%d tcp_frames=%d csum_bad=%d partial=%d\n",
           !!(c->features & BIT(VIRTIO_NET_F_GUEST_CSUM)), t.tcp, t.bad, t.partial);
    return 0;
}

/* Lab 7: send the TSO packet and the plain frame, classify what comes back. */
static int probe_tso(struct conn *c)
{
    struct pair *q = &c->qp[0];
    uint8_t frame[2048], got[4096];
    struct virtio_net_hdr_mrg_rxbuf h = { .hdr = {
        .flags = VIRTIO_NET_HDR_F_NEEDS_CSUM, .gso_type = VIRTIO_NET_HDR_GSO_TCPV4, .hdr_len = ETH_IP_TCP,
        .gso_size = TSO_MSS, .csum_start = 34, .csum_offset = 16 } };
    uint32_t len = build_tcp(frame, TSO_PORT, TSO_PAYLOAD);
    if (!check(send_with_header(c, q, &h, frame, len), "TSO packet sent (%u payload bytes, gso_size %u)%s%s",
               TSO_PAYLOAD, TSO_MSS, c->err[0] ? ": " : "", c->err))
        return 1;
    h.hdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
    h.hdr.gso_size = 0;
    len = build_tcp(frame, PLAIN_PORT, PLAIN_PAYLOAD);
    if (!check(send_with_header(c, q, &h, frame, len), "plain NEEDS_CSUM frame sent%s%s", c->err[0] ? ": " : "",
               c->err))
        return 1;
    struct tally t = { 0 };
    int n;
    /* Until nothing more comes for a second: the loopback answers in
     * microseconds, so the second is only for a loaded machine. */
    while ((n = recv_with_header(c, q, got, sizeof got, 1.0)) > 0)
        tally_frame(&t, got, (uint32_t)n);
    check(n == 0 && tx_wait_done(c, q), "every TX chain back, RX read%s%s", c->err[0] ? ": " : "", c->err);
    printf("PROBE tso guest_csum=%d guest_tso4=%d tso_frames=%d plain_frames=%d csum_bad=%d partial=%d\n",
           !!(c->features & BIT(VIRTIO_NET_F_GUEST_CSUM)), !!(c->features & BIT(VIRTIO_NET_F_GUEST_TSO4)), t.tso,
           t.plain, t.bad, t.partial);
    return 0;
}

int main(int argc, char **argv)
{
    bool tso = argc > 2 && !strcmp(argv[2], "tso"), nic = argc > 2 && !strcmp(argv[2], "nic");
    bool guest = argc > 3 && !strcmp(argv[3], "guest");
    const char *iface = nic ? argv[guest ? 4 : 3] : NULL;
    if (argc < 3 || (!tso && !nic && strcmp(argv[2], "kicks")) || (nic && !iface)) {
        fprintf(stderr, "usage: %s BINARY kicks | tso [guest] | nic [guest] IFACE\n", argv[0]);
        return 2;
    }
    static const char *const args[] = { "--trace=rings", NULL };
    if (nic) {      /* BINARY --socket S --iface IFACE, not --loopback: fe_start's opening by hand */
        const char *nic_args[] = { "--socket", sock_path, "--iface", iface, "--trace=rings", NULL };
        if (!fe_setup("exercise_probe", 60) || !start_backend_argv(argv[1], nic_args) ||
            !check(wait_for_socket(20), "back-end creates its socket")) {
            print_backend_log(30);
            return fe_finish() | 1;
        }
    } else if (!fe_start("exercise_probe", 60, argv[1], args)) {
        return 1;
    }
    struct conn *c = conn_new("probe", false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = !tso && !nic, .npairs = 1 };
    if (tso || nic)
        o.more_features = BIT(VIRTIO_NET_F_CSUM) | (guest ? BIT(VIRTIO_NET_F_GUEST_CSUM) : 0);
    if (tso)
        o.more_features |= BIT(VIRTIO_NET_F_HOST_TSO4) | (guest ? BIT(VIRTIO_NET_F_GUEST_TSO4) : 0);
    struct pair *q = &c->qp[0];
    if (c && check(conn_connect(c), "connect") && check(handshake(c, &o), "handshake%s%s", c->err[0] ? ": " : "", c->err)) {
        if (tso) {
            probe_tso(c);
        } else if (nic) {
            probe_nic(c);
        } else if (check(traffic(c, q, KICK_FRAMES), "%d frames through the loopback%s%s", KICK_FRAMES,
                         c->err[0] ? ": " : "", c->err)) {
            unsigned long long stream_kicks = q->tx.kicks;
            int pings = probe_pings(c);
            printf("PROBE kicks event_idx=%d tx_kicks=%llu rx_kicks=%llu packets=%u ping_tx_kicks=%llu pings=%d\n",
                   c->event_idx ? 1 : 0, stream_kicks, (unsigned long long)q->rx.kicks, q->received,
                   q->tx.kicks - stream_kicks, pings);
        }
    }
    conn_free(c);
    stop_backend();
    return fe_finish();
}
