/*
 * tests/test_mtu_rarp.c - NET_SET_MTU and SEND_RARP, seen from the frontend.
 *
 * Runs vhost-xdp --loopback --mtu 1500 --trace and drives it with the
 * frontend of tests/frontend.c (QEMU 7.2's handshake), then:
 *   - GET_FEATURES offers VIRTIO_NET_F_MTU, GET_PROTOCOL_FEATURES offers
 *     PROTOCOL_F_RARP and PROTOCOL_F_NET_MTU;
 *   - NET_SET_MTU with NEED_REPLY: 1400 acked 0; 1501 (above --mtu) and 67
 *     (below the spec's 68) acked 1, the connection going on;
 *   - with MTU 1400, frames back through the loopback: 1414 bytes (1400 +
 *     the 14-byte Ethernet header) and a VLAN-tagged 1418 arrive, 1415 does
 *     not (virtio 1.2 §5.1.4.1), and the drop is counted at exit;
 *   - SEND_RARP 52:54:00:12:34:56: exactly one frame arrives on the guest's
 *     RX, byte for byte the RFC 903 reverse request built here; a multicast
 *     MAC is acked 1 and sends nothing;
 *   - on fresh connections: either message without its protocol feature
 *     negotiated, or with a payload of the wrong size, is refused (REPLY_ACK
 *     1) and the connection reset, as for every malformed message.
 *
 *   tests/test_mtu_rarp [path/to/vhost-xdp]     TAP output
 */
#include "frontend.h"

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* From vhost-user.rst; frontend.h names only what the other tests need. */
#define VHOST_USER_NET_SET_MTU          20
#define VHOST_USER_PROTOCOL_F_NET_MTU   4
#define VIRTIO_NET_F_MTU_BIT            3   /* virtio 1.2 §5.1.3 */
#define ALL_PROTOCOL (BIT(VHOST_USER_PROTOCOL_F_MQ) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) | \
                      BIT(VHOST_USER_PROTOCOL_F_RARP) | BIT(VHOST_USER_PROTOCOL_F_NET_MTU))

static const uint8_t guest_mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

/* === Messages ============================================================= */

/* Send a u64 request with NEED_REPLY; the REPLY_ACK value in *ack. */
static bool send_acked(struct conn *c, uint32_t req, uint64_t v, uint64_t *ack)
{
    *ack = ~0ull;
    return vu_send(c, req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &v, sizeof v, NULL, 0) &&
           vu_reply(c, req, ack, sizeof *ack);
}

/* TAP: `ok` (already computed, so c->err is final), with c->err if any. */
static bool check_conn(struct conn *c, bool ok, const char *what)
{
    bool passed = check(ok, "%s%s%s", what, c->err[0] ? ": " : "", c->err);
    c->err[0] = 0;
    return passed;
}

/* TAP: request `req` with u64 v and NEED_REPLY gets REPLY_ACK `want`. */
static bool acked(struct conn *c, uint32_t req, uint64_t v, uint64_t want, const char *what)
{
    uint64_t ack;
    c->err[0] = 0;
    bool ok = send_acked(c, req, v, &ack);
    return check(ok && ack == want, "%s: REPLY_ACK %" PRIu64 " (got %" PRIu64 ")%s%s", what, want, ack,
                 c->err[0] ? ": " : "", c->err);
}

/* The MAC as SEND_RARP carries it: the payload's first 6 bytes. */
static uint64_t mac_payload(const uint8_t mac[6])
{
    uint64_t v = 0;
    memcpy(&v, mac, 6);
    return v;
}

/* Has the back-end closed the connection (after a refused message)? */
static bool peer_closed(struct conn *c)
{
    struct pollfd p = { c->sock, POLLIN, 0 };
    char b;
    return poll(&p, 1, (int)(REPLY_TIMEOUT_MS * time_scale)) == 1 && recv(c->sock, &b, 1, MSG_DONTWAIT) == 0;
}

/* Is the connection still served?  A GET_FEATURES gets its reply. */
static bool still_served(struct conn *c)
{
    uint64_t f;
    return vu_get_u64(c, VHOST_USER_GET_FEATURES, &f) && f == c->offered;
}

/* === Frames =============================================================== */

/* Frame k of `len` bytes: to 02:00:00:00:00:01 from 02:aa:bb:cc:dd:k,
 * ethertype 0x88b6 (or an 802.1Q tag, then 0x88b6), then a pattern. */
static void make_frame(uint8_t *p, int k, uint32_t len, bool vlan)
{
    static const uint8_t eth[14] = { 2, 0, 0, 0, 0, 1, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0x88, 0xb6 };
    for (uint32_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 7 + k * 31 + 1);
    memcpy(p, eth, 14);
    p[11] = (uint8_t)k;
    if (vlan) {
        static const uint8_t tag[6] = { 0x81, 0x00, 0x00, 0x05, 0x88, 0xb6 };   /* VLAN 5 */
        memcpy(p + 12, tag, sizeof tag);
    }
}

/* Send frame k; if `arrives`, it must be the next frame on RX, byte for byte. */
static bool echo(struct conn *c, struct pair *q, int k, uint32_t len, bool vlan, bool arrives)
{
    uint8_t want[4096], got[4096];
    make_frame(want, k, len, vlan);
    if (!frame_send(c, q, want, len) || !tx_wait_done(c, q))
        return false;
    if (!arrives)
        return true;
    int n = frame_recv(c, q, got, sizeof got);
    if (n < 0)
        return false;
    if ((uint32_t)n != len || memcmp(got, want, len) != 0)
        return fail(c, "frame %d: sent %u bytes, the next one received has %d (source MAC byte 5: %u)", k, len, n,
                    n >= 12 ? got[11] : 0);
    return true;
}

/* Frames k = 5, 6, 7 of `lens` bytes published with one avail->idx store, so
 * the back-end takes them as one burst; the ones within the MTU must arrive,
 * in order (the MTU filter moves them to the front of the burst). */
static bool burst_of_three(struct conn *c, struct pair *q, const uint32_t lens[3], bool arrives[3])
{
    uint8_t want[3][4096], got[4096];
    for (int k = 0; k < 3; k++) {
        make_frame(want[k], 5 + k, lens[k], false);
        if (!frame_add(c, q, want[k], lens[k]))
            return false;
    }
    ring_flush(&q->tx, c->event_idx);
    if (!tx_wait_done(c, q))
        return false;
    for (int k = 0; k < 3; k++) {
        if (!arrives[k])
            continue;
        int n = frame_recv(c, q, got, sizeof got);
        if (n < 0)
            return false;
        if ((uint32_t)n != lens[k] || memcmp(got, want[k], lens[k]) != 0)
            return fail(c, "burst: frame %d (%u bytes) expected next, received %d bytes (source MAC byte 5: %u)",
                        5 + k, lens[k], n, n >= 12 ? got[11] : 0);
    }
    return true;
}

/* The RARP the back-end must send, built here from RFC 903 (and QEMU's
 * announcements): broadcast, ethertype 0x8035, Ethernet/IPv4, opcode 3
 * (reverse request), the MAC as sender and target, addresses 0, 60 bytes. */
static void expected_rarp(uint8_t f[60], const uint8_t mac[6])
{
    memset(f, 0, 60);
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    f[12] = 0x80, f[13] = 0x35;             /* ethertype RARP */
    f[14] = 0x00, f[15] = 0x01;             /* htype Ethernet */
    f[16] = 0x08, f[17] = 0x00;             /* ptype IPv4 */
    f[18] = 6, f[19] = 4;                   /* hlen, plen */
    f[20] = 0x00, f[21] = 0x03;             /* op: reverse request */
    memcpy(f + 22, mac, 6);                 /* sha; spa 0 */
    memcpy(f + 32, mac, 6);                 /* tha; tpa 0 */
}

/* === The parts ============================================================ */

static struct conn *connect_and_handshake(const char *tag)
{
    struct conn *c = conn_new(tag, false);
    struct fe_opts o = { .style = STYLE_QEMU, .mrg_rxbuf = false, .npairs = 1 };
    if (c && check_conn(c, conn_connect(c), "connect") && check_conn(c, handshake(c, &o), "handshake"))
        return c;
    conn_free(c);
    return NULL;
}

static void mtu_part(struct conn *c, struct pair *q)
{
    char line[600];
    long from = log_size();
    acked(c, VHOST_USER_NET_SET_MTU, 1400, 0, "NET_SET_MTU 1400");
    check(log_find(from, "NET_SET_MTU 1400 accepted", NULL, 5, line, sizeof line), "log: NET_SET_MTU 1400 accepted");
    acked(c, VHOST_USER_NET_SET_MTU, 1501, 1, "NET_SET_MTU 1501 (above --mtu 1500)");
    check(log_find(from, "NET_SET_MTU 1501 refused", NULL, 5, line, sizeof line), "log: NET_SET_MTU 1501 refused");
    acked(c, VHOST_USER_NET_SET_MTU, 67, 1, "NET_SET_MTU 67 (below 68)");
    check_conn(c, still_served(c), "after the refusals the connection is still served");

    /* The MTU in force is 1400: the frames to the guest may have 1414 bytes. */
    check_conn(c, echo(c, q, 1, 1414, false, true), "MTU 1400: a 1414-byte frame comes back");
    check_conn(c, echo(c, q, 2, 1418, true, true), "MTU 1400: a VLAN-tagged 1418-byte frame comes back");
    check_conn(c, echo(c, q, 3, 1415, false, false) && echo(c, q, 4, 60, false, true),
               "MTU 1400: a 1415-byte frame is not given to the guest (the next one received is the 60-byte one)");
    static const uint32_t lens[3] = { 60, 1415, 70 };
    bool arrives[3] = { true, false, true };
    check_conn(c, burst_of_three(c, q, lens, arrives),
               "MTU 1400: in one burst of 60, 1415 and 70 bytes, the 60 and the 70 arrive, in that order");
}

static void rarp_part(struct conn *c, struct pair *q)
{
    uint8_t want[60], got[4096];
    char line[600];
    long from = log_size();
    expected_rarp(want, guest_mac);
    acked(c, VHOST_USER_SEND_RARP, mac_payload(guest_mac), 0, "SEND_RARP 52:54:00:12:34:56");
    c->err[0] = 0;
    /* The PMD sends it at its next burst from the guest, even an empty one. */
    int n = frame_recv(c, q, got, sizeof got);
    int diff = -1;
    for (int i = 0; n == 60 && i < 60 && diff < 0; i++)
        if (got[i] != want[i])
            diff = i;
    char what[160];
    snprintf(what, sizeof what, "a RARP arrives on the guest's RX: 60 bytes, broadcast, 0x8035, op 3, the MAC "
             "(got %d bytes, first difference at byte %d)", n, diff);
    check_conn(c, n == 60 && diff < 0, what);
    /* Exactly one: the next frame received is the next one sent. */
    check_conn(c, echo(c, q, 5, 100, false, true), "only one RARP: the next frame received is the next one sent");
    check(log_find(from, "RARP from 52:54:00:12:34:56 sent on queue pair 0", NULL, 5, line, sizeof line),
          "log: RARP from 52:54:00:12:34:56 sent on queue pair 0");
    check(log_find(from, "<- SEND_RARP (19)", "mac=52:54:00:12:34:56", 5, line, sizeof line),
          "--trace decodes SEND_RARP's MAC");

    static const uint8_t multicast[6] = { 0x01, 0x00, 0x5e, 0x00, 0x00, 0x01 };
    acked(c, VHOST_USER_SEND_RARP, mac_payload(multicast), 1, "SEND_RARP 01:00:5e:00:00:01 (multicast)");
    check_conn(c, echo(c, q, 6, 100, false, true), "... and no RARP: the next frame received is the next one sent");
}

/* A fresh connection with `protocol` negotiated and SET_OWNER sent, then
 * one message with NEED_REPLY: it must be refused and the connection reset. */
static void refused(const char *what, uint64_t protocol, uint32_t req, uint32_t size)
{
    struct conn *c = conn_new(what, false);
    uint64_t v = 1400, ack = ~0ull, pf;
    bool ok = c && conn_connect(c) && vu_get_u64(c, VHOST_USER_GET_FEATURES, &c->offered) &&
              vu_get_u64(c, VHOST_USER_GET_PROTOCOL_FEATURES, &pf) &&
              vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, protocol) &&
              vu_send(c, VHOST_USER_SET_OWNER, VHOST_USER_VERSION, NULL, 0, NULL, 0);
    if (req == VHOST_USER_SEND_RARP)
        v = mac_payload(guest_mac);
    ok = ok && vu_send(c, req, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &v, size, NULL, 0) &&
         vu_reply(c, req, &ack, sizeof ack);
    check(ok && ack == 1 && peer_closed(c),
          "%s: REPLY_ACK 1 and the connection reset (ack %" PRIu64 ")%s%s", what, ack, c && c->err[0] ? ": " : "",
          c ? c->err : "");
    conn_free(c);
}

int main(int argc, char **argv)
{
    const char *binary = argc > 1 ? argv[1] : "./vhost-xdp";
    static const char *const args[] = { "--mtu", "1500", "--trace", NULL };
    char line[600];

    if (!fe_start("test_mtu_rarp", 120, binary, args))
        return 1;
    check(log_find(0, "MTU: a frontend may set up to 1500", NULL, 5, line, sizeof line), "log: --mtu 1500 announced");

    struct conn *c = connect_and_handshake("mtu conn");
    if (c) {
        struct pair *q = &c->qp[0];
        check(c->offered & BIT(VIRTIO_NET_F_MTU_BIT), "GET_FEATURES offers VIRTIO_NET_F_MTU (0x%" PRIx64 ")", c->offered);
        check((c->protocol_offered & ALL_PROTOCOL) == ALL_PROTOCOL,
              "GET_PROTOCOL_FEATURES offers MQ, RARP, REPLY_ACK, NET_MTU (0x%" PRIx64 ")", c->protocol_offered);
        /* frontend.c's handshake acks MQ and REPLY_ACK only; QEMU acks what
         * it knows of the offer.  SET_PROTOCOL_FEATURES may come again. */
        vu_set_u64(c, VHOST_USER_SET_PROTOCOL_FEATURES, ALL_PROTOCOL);
        mtu_part(c, q);
        rarp_part(c, q);
        /* A payload of the wrong size is malformed, as for every request. */
        uint32_t four = 1500;
        uint64_t ack = ~0ull;
        long from = log_size();
        check(vu_send(c, VHOST_USER_NET_SET_MTU, VHOST_USER_VERSION | VHOST_USER_NEED_REPLY_MASK, &four, sizeof four,
                      NULL, 0) && vu_reply(c, VHOST_USER_NET_SET_MTU, &ack, sizeof ack) && ack == 1 && peer_closed(c),
              "NET_SET_MTU with a 4-byte payload: REPLY_ACK 1 and the connection reset");
        check(log_find(from, "NET_SET_MTU: malformed: payload size 4, expected 8", NULL, 5, line, sizeof line),
              "log: NET_SET_MTU: malformed: payload size 4, expected 8");
    }
    conn_free(c);

    uint64_t base = BIT(VHOST_USER_PROTOCOL_F_MQ) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    long from = log_size();
    refused("NET_SET_MTU without PROTOCOL_F_NET_MTU", base, VHOST_USER_NET_SET_MTU, 8);
    check(log_find(from, "NET_SET_MTU: sent without PROTOCOL_F_NET_MTU negotiated", NULL, 5, line, sizeof line),
          "log: NET_SET_MTU: sent without PROTOCOL_F_NET_MTU negotiated");
    from = log_size();
    refused("SEND_RARP without PROTOCOL_F_RARP", base, VHOST_USER_SEND_RARP, 8);
    check(log_find(from, "SEND_RARP: sent without PROTOCOL_F_RARP negotiated", NULL, 5, line, sizeof line),
          "log: SEND_RARP: sent without PROTOCOL_F_RARP negotiated");
    from = log_size();
    refused("SEND_RARP with a 6-byte payload", ALL_PROTOCOL, VHOST_USER_SEND_RARP, 6);
    check(log_find(from, "SEND_RARP: malformed: payload size 6, expected 8", NULL, 5, line, sizeof line),
          "log: SEND_RARP: malformed: payload size 6, expected 8");

    long stopping = log_size();
    stop_backend();
    /* The two 1415-byte frames are the only drops of the whole run. */
    check(log_find(stopping, "exit: from guest", ", 2 drops,", 5, line, sizeof line),
          "exit line counts 2 drops, the two 1415-byte frames (%s)", line);
    return fe_finish();
}
