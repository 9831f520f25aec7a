/*
 * tests/test_offload.c - unit tests of offload.c on handmade frames and on
 * frames the kernel made.
 *
 * Every checksum offload.c writes is checked here by a reference written
 * independently, the slow way RFC 1071 draws it: 16-bit big-endian words
 * added one by one into a 32-bit sum, folded at the end (ref_sum), over a
 * pseudo-header laid out by hand (ref_l4_ok).  Five frames captured from
 * the kernel (a veth with TX checksum offload off, so the kernel computed
 * their checksums: TCP and UDP over IPv4 and IPv6) are the known answers:
 * given as the kernel would have left them for the hardware (the field
 * holding the pseudo-header sum), offload.c must produce the kernel's own
 * checksum.  Their payloads are regenerated here (tests/tcpcheck.c's
 * pattern, and the bytes 0, 1, 2, ... for UDP) rather than pasted.
 *
 * Frames sit at the end of a page with a guard page after it (unit.h,
 * map_guarded), so a read or write past a frame's end dies here, and a
 * frame "lent" from a sending guest is made read-only, so a write into it
 * dies too.  The hostile headers of issue 13 (gso_size 0 or larger than
 * the frame, csum_start or csum_offset past the frame, hdr_len too long,
 * unknown or unnegotiated gso_type, TSO on a packet that is not TCP, IP and
 * TCP lengths that lie) must each be dropped and counted, and nothing
 * sent.
 */
#include "vhost_xdp.h"
#include "unit.h"
#include "ref_csum.h"

#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

/* virtqueue.c defines it in the product; offload.c's --trace lines test it. */
bool vx_trace_rings;

/* === References, written apart from offload.c ============================ */

/* RFC 1071: ref_sum, ref_fold, be16 (tests/ref_csum.h). */
static uint32_t be32(const uint8_t *p) { return (uint32_t)be16(p) << 16 | be16(p + 2); }
static void wbe16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

/* Where the reference thinks the IP and transport headers are: Ethernet,
 * at most one VLAN tag, IPv4 or IPv6 with at most one hop-by-hop header. */
struct ref_frame { uint32_t l3, l4, end; int proto; bool v6; };

static bool ref_parse(const uint8_t *f, uint32_t len, struct ref_frame *r)
{
    r->l3 = be16(f + 12) == 0x8100 ? 18 : 14;
    uint16_t type = be16(f + r->l3 - 2);
    r->v6 = type == 0x86dd;
    if (type == 0x0800) {
        r->l4 = r->l3 + (f[r->l3] & 15) * 4;
        r->end = r->l3 + be16(f + r->l3 + 2);
        r->proto = f[r->l3 + 9];
    } else if (r->v6) {
        r->l4 = r->l3 + 40;
        r->end = r->l4 + be16(f + r->l3 + 4);
        r->proto = f[r->l3 + 6];
        if (r->proto == 0) {            /* hop-by-hop */
            r->proto = f[r->l4];
            r->l4 += (f[r->l4 + 1] + 1) * 8;
        }
    } else {
        return false;
    }
    return r->end <= len;
}

/* The pseudo-header (RFC 9293 §3.1, RFC 8200 §8.1), summed. */
static uint32_t ref_pseudo(const uint8_t *f, const struct ref_frame *r)
{
    uint32_t l4len = r->end - r->l4;
    if (r->v6)
        return ref_sum(f + r->l3 + 8, 32, 0) + (l4len >> 16) + (l4len & 0xffff) + (uint32_t)r->proto;
    return ref_sum(f + r->l3 + 12, 8, 0) + (uint32_t)r->proto + l4len;
}

/* The frame's TCP/UDP checksum is right (and, for IPv4, its header's). */
static bool ref_l4_ok(const uint8_t *f, uint32_t len)
{
    struct ref_frame r;
    if (!ref_parse(f, len, &r))
        return false;
    if (!r.v6 && ref_fold(ref_sum(f + r.l3, r.l4 - r.l3, 0)) != 0xffff)
        return false;
    return ref_fold(ref_sum(f + r.l4, r.end - r.l4, ref_pseudo(f, &r))) == 0xffff;
}

/* tests/tcpcheck.c's pattern: byte i of a stream is byte i % 8 of
 * splitmix64(seed + i / 8). */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void pattern(uint8_t *buf, uint64_t off, size_t len, uint64_t seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(mix(seed + (off + i) / 8) >> (8 * ((off + i) % 8)));
}

/* === Frames: where they live, the kernel's, handmade ones ================= */

/* A frame of len bytes ending where a guard page begins. */
#define AREA (128 * 1024)
static uint8_t *area;

static uint8_t *frame_at_end(uint32_t len)
{
    mprotect(area, AREA, PROT_READ | PROT_WRITE);
    return area + AREA - len;
}

/* Five frames from the kernel (checksums by the kernel, tx offload off):
 * their headers, then the payload, regenerated. */
static const uint8_t k_tcp4_syn[] = {   /* 10.9.0.1.52256 > 10.9.0.2.7001 SYN, cksum 0x6e0e */
    0xee, 0xca, 0x70, 0x0d, 0xfb, 0xf3, 0x42, 0x5f, 0x79, 0x39, 0xd5, 0xb8, 0x08, 0x00, 0x45, 0x00, 0x00, 0x3c,
    0xe5, 0x4c, 0x40, 0x00, 0x40, 0x06, 0x41, 0x5b, 0x0a, 0x09, 0x00, 0x01, 0x0a, 0x09, 0x00, 0x02, 0xcc, 0x20,
    0x1b, 0x59, 0x2a, 0xa8, 0x3a, 0x8b, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x6e, 0x0e, 0x00, 0x00,
    0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x7d, 0x97, 0x00, 0xa5, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03,
    0x03, 0x0a };
static const uint8_t k_tcp4_data[] = {  /* the same connection, 1448 bytes of pattern (seed 5), cksum 0x21d6 */
    0xee, 0xca, 0x70, 0x0d, 0xfb, 0xf3, 0x42, 0x5f, 0x79, 0x39, 0xd5, 0xb8, 0x08, 0x00, 0x45, 0x00, 0x05, 0xdc,
    0xe5, 0x4e, 0x40, 0x00, 0x40, 0x06, 0x3b, 0xb9, 0x0a, 0x09, 0x00, 0x01, 0x0a, 0x09, 0x00, 0x02, 0xcc, 0x20,
    0x1b, 0x59, 0x2a, 0xa8, 0x3a, 0x8c, 0x08, 0x3f, 0xc0, 0x43, 0x80, 0x10, 0x00, 0x3f, 0x21, 0xd6, 0x00, 0x00,
    0x01, 0x01, 0x08, 0x0a, 0x7d, 0x97, 0x00, 0xa5, 0xf3, 0x56, 0x5b, 0x8a };
static const uint8_t k_tcp6_data[] = {  /* fd09::1.40988 > fd09::2.7002, 1001 bytes of pattern (seed 5), cksum 0x406a */
    0xee, 0xca, 0x70, 0x0d, 0xfb, 0xf3, 0x42, 0x5f, 0x79, 0x39, 0xd5, 0xb8, 0x86, 0xdd, 0x60, 0x06, 0x4e, 0xce,
    0x04, 0x09, 0x06, 0x40, 0xfd, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xfd, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0xa0, 0x1c, 0x1b, 0x5a, 0xb4, 0x3c, 0x78, 0xd8, 0x28, 0xca, 0xc1, 0x17, 0x80, 0x18, 0x00, 0x40, 0x40, 0x6a,
    0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x55, 0x61, 0x4a, 0x35, 0x29, 0x8e, 0xeb, 0x2d };
static const uint8_t k_udp4[] = {       /* 10.9.0.1.33120 > 10.9.0.2.7003, the bytes 0..36, cksum 0xf77e */
    0xee, 0xca, 0x70, 0x0d, 0xfb, 0xf3, 0x42, 0x5f, 0x79, 0x39, 0xd5, 0xb8, 0x08, 0x00, 0x45, 0x00, 0x00, 0x41,
    0xa8, 0x70, 0x40, 0x00, 0x40, 0x11, 0x7e, 0x27, 0x0a, 0x09, 0x00, 0x01, 0x0a, 0x09, 0x00, 0x02, 0x81, 0x60,
    0x1b, 0x5b, 0x00, 0x2d, 0xf7, 0x7e };
static const uint8_t k_udp6[] = {       /* fd09::1.55675 > fd09::2.7004, the bytes 0..60, cksum 0x6aee */
    0xee, 0xca, 0x70, 0x0d, 0xfb, 0xf3, 0x42, 0x5f, 0x79, 0x39, 0xd5, 0xb8, 0x86, 0xdd, 0x60, 0x0d, 0x5d, 0xf8,
    0x00, 0x45, 0x11, 0x40, 0xfd, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x01, 0xfd, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    0xd9, 0x7b, 0x1b, 0x5c, 0x00, 0x45, 0x6a, 0xee };

struct kframe { const char *name; const uint8_t *hdr; uint32_t hdr_len, payload, csum_at; bool tcp; };
static const struct kframe kframes[] = {
    { "TCP/IPv4 SYN", k_tcp4_syn, sizeof k_tcp4_syn, 0, 50, true },
    { "TCP/IPv4 1448 bytes", k_tcp4_data, sizeof k_tcp4_data, 1448, 50, true },
    { "TCP/IPv6 1001 bytes", k_tcp6_data, sizeof k_tcp6_data, 1001, 70, true },
    { "UDP/IPv4 37 bytes", k_udp4, sizeof k_udp4, 37, 40, false },
    { "UDP/IPv6 61 bytes", k_udp6, sizeof k_udp6, 61, 60, false },
};

/* Kernel frame k, whole, at the end of the area; its length in *len. */
static uint8_t *kframe(const struct kframe *k, uint32_t *len)
{
    *len = k->hdr_len + k->payload;
    uint8_t *f = frame_at_end(*len);
    memcpy(f, k->hdr, k->hdr_len);
    if (k->tcp)
        pattern(f + k->hdr_len, 0, k->payload, 5);
    else
        for (uint32_t i = 0; i < k->payload; i++)
            f[k->hdr_len + i] = (uint8_t)i;
    return f;
}

/* ... and as its sender left it for the hardware: the checksum field
 * holding the folded pseudo-header sum (what CHECKSUM_PARTIAL means). */
static void make_partial(uint8_t *f, uint32_t len, uint32_t csum_at)
{
    struct ref_frame r;
    ref_parse(f, len, &r);
    wbe16(f + csum_at, ref_fold(ref_pseudo(f, &r)));
}

/* A handmade TCP packet: Ethernet (+ a VLAN tag), IPv4 or IPv6 (+ a
 * hop-by-hop header of 8 bytes), TCP with a 12-byte timestamp option,
 * `payload` bytes of pattern (seed 9), the given TCP flags; the checksums
 * left as a guest with CSUM leaves them for TSO: IPv4 header checksum
 * right, TCP field holding the pseudo-header sum. */
struct tcp_opts { bool v6, vlan, hbh; uint8_t flags; uint32_t seq; uint16_t ip_id; };

static uint32_t build_tcp(uint8_t *f, uint32_t payload, const struct tcp_opts *o)
{
    uint32_t l3 = o->vlan ? 18 : 14;
    memcpy(f, "\x52\x54\x00\x12\x34\x57\x52\x54\x00\x12\x34\x56", 12);
    if (o->vlan)
        memcpy(f + 12, "\x81\x00\x00\x07", 4);
    wbe16(f + l3 - 2, o->v6 ? 0x86dd : 0x0800);
    uint32_t l4 = l3 + (o->v6 ? 40 + (o->hbh ? 8 : 0) : 20), end = l4 + 32 + payload;
    if (o->v6) {
        memset(f + l3, 0, 40);
        f[l3] = 0x60;
        wbe16(f + l3 + 4, end - l3 - 40);
        f[l3 + 6] = o->hbh ? 0 : 6;
        f[l3 + 7] = 64;
        memcpy(f + l3 + 8, "\xfd\x00\0\0\0\0\0\0\0\0\0\0\0\0\0\x02\xfd\x00\0\0\0\0\0\0\0\0\0\0\0\0\0\x03", 32);
        if (o->hbh)                     /* next TCP, length 0 (8 bytes), a PadN option */
            memcpy(f + l3 + 40, "\x06\x00\x01\x04\x00\x00\x00\x00", 8);
    } else {
        memcpy(f + l3, "\x45\x00\x00\x00\x00\x00\x40\x00\x40\x06\x00\x00\x0a\x00\x00\x02\x0a\x00\x00\x03", 20);
        wbe16(f + l3 + 2, end - l3);
        wbe16(f + l3 + 4, o->ip_id);
        wbe16(f + l3 + 10, (uint16_t)~ref_fold(ref_sum(f + l3, 20, 0)));
    }
    uint8_t *t = f + l4;
    memcpy(t, "\x9c\x40\x13\x89\0\0\0\0\0\0\0\x01\x80\x00\x01\xf5\0\0\0\0\x01\x01\x08\x0a\0\0\0\x01\0\0\0\x02", 32);
    t[4] = (uint8_t)(o->seq >> 24), t[5] = (uint8_t)(o->seq >> 16), t[6] = (uint8_t)(o->seq >> 8), t[7] = (uint8_t)o->seq;
    t[13] = o->flags;
    pattern(f + l4 + 32, 0, payload, 9);
    make_partial(f, end, l4 + 16);
    return end;
}

/* A TX ring of a guest that negotiated `features`, and one for its peer. */
static struct vx_vring ring(uint32_t index, uint64_t features)
{
    return (struct vx_vring){ .index = index, .features = features };
}

#define F(x) (1ull << VIRTIO_NET_F_##x)
#define ALL_TX (F(CSUM) | F(HOST_TSO4) | F(HOST_TSO6) | F(HOST_ECN))
#define ALL_RX (F(GUEST_CSUM) | F(GUEST_TSO4) | F(GUEST_TSO6) | F(GUEST_ECN))

/* What ofl_to_guest() handed on: a copy of each packet (its buffer may be
 * a scratch buffer reused for the next ones), and how many calls. */
#define SENT_MAX 256
static struct { int calls, n; struct vx_pkt pkt[SENT_MAX]; uint8_t *bytes[SENT_MAX]; } sent;

static void sent_reset(void)
{
    for (int i = 0; i < sent.n; i++)
        free(sent.bytes[i]);
    memset(&sent, 0, sizeof sent);
}

static void record(void *ctx, struct vx_pkt *pkts, int n)
{
    (void)ctx;
    sent.calls++;
    for (int i = 0; i < n && sent.n < SENT_MAX; i++, sent.n++) {
        sent.pkt[sent.n] = pkts[i];
        sent.bytes[sent.n] = malloc(pkts[i].len);
        memcpy(sent.bytes[sent.n], pkts[i].data, pkts[i].len);
    }
}

/* The thread's scratch buffers (VX_PKT_MAX each), as pmd_loop.c gives them. */
static struct vx_pkt scratch[VX_BURST];

/* === The cases ============================================================ */

static void t_rfc1071(void)
{
    begin("checksum: RFC 1071's example (00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2)");
    static const uint8_t ex[8] = { 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7 };
    uint16_t c = ofl_checksum(ex, 8);
    const uint8_t *b = (const uint8_t *)&c;
    CHECK(b[0] == 0x22 && b[1] == 0x0d, "stored as %02x %02x, want 22 0d (~0xddf2)", b[0], b[1]);
    CHECK(ofl_checksum(ex, 0) == 0xffff, "the checksum of nothing is 0xffff");
    end();
}

static void t_checksum_vs_reference(void)
{
    begin("checksum: equal to the reference for 0..2100 bytes, at 8 alignments, random and all-0xff data");
    uint64_t s = 42;
    int bad = 0;
    for (uint32_t len = 0; len <= 2100 && bad < 5; len += len < 80 ? 1 : 37) {
        for (uint32_t align = 0; align < 8; align++) {
            uint8_t *p = frame_at_end(len + align + 8) + align;
            for (uint32_t i = 0; i < len; i++)
                p[i] = (uint8_t)((s = mix(s)) >> 11);
            if (len % 5 == 0)
                memset(p, 0xff, len);       /* sums that carry at every step */
            uint16_t got = ofl_checksum(p, len), want = (uint16_t)~ref_fold(ref_sum(p, len, 0));
            uint8_t gb[2];
            memcpy(gb, &got, 2);
            if (be16(gb) != want && bad++ < 5)
                CHECK(0, "%u bytes at +%u: 0x%04x, the reference says 0x%04x", len, align, be16(gb), want);
        }
    }
    end();
}

static void t_kernel_frames(void)
{
    begin("NEEDS_CSUM: a kernel frame left partial gets the kernel's own checksum back (TCP, UDP, IPv4, IPv6)");
    for (size_t i = 0; i < sizeof kframes / sizeof kframes[0]; i++) {
        const struct kframe *k = &kframes[i];
        uint32_t len;
        uint8_t *f = kframe(k, &len);
        CHECK(ref_l4_ok(f, len), "%s: the kernel's frame verifies with the reference", k->name);
        uint16_t kernel = be16(f + k->csum_at);
        make_partial(f, len, k->csum_at);
        struct ref_frame r;
        ref_parse(f, len, &r);
        struct vx_pkt p = { .len = len, .room = len, .data = f,
                            .hdr = { .flags = 1, .csum_start = (uint16_t)r.l4, .csum_offset = (uint16_t)(k->csum_at - r.l4) } };
        CHECK(ofl_complete_csum(&p) == 0, "%s: completed", k->name);
        CHECK(be16(f + k->csum_at) == kernel, "%s: 0x%04x, the kernel wrote 0x%04x", k->name, be16(f + k->csum_at), kernel);
        CHECK(p.hdr.flags == 0, "%s: NEEDS_CSUM cleared", k->name);
    }
    end();
}

static void t_from_nic(void)
{
    begin("NIC -> guest: partial checksums found without a payload pass; NEEDS_CSUM with GUEST_CSUM, else the kernel's checksum");
    for (size_t i = 0; i < sizeof kframes / sizeof kframes[0]; i++) {
        const struct kframe *k = &kframes[i];
        for (int guest_csum = 0; guest_csum < 2; guest_csum++) {
            uint32_t len;
            uint8_t *f = kframe(k, &len);
            uint16_t kernel = be16(f + k->csum_at);
            make_partial(f, len, k->csum_at);
            uint16_t partial = be16(f + k->csum_at);
            struct vx_vring rx = ring(0, guest_csum ? F(GUEST_CSUM) : 0);
            struct vx_pkt p = { .len = len, .room = len, .data = f, .hdr = { .gso_type = 0x55 } };  /* stale */
            ofl_from_nic(&rx, &p, 1);
            struct ref_frame r;
            ref_parse(f, len, &r);
            if (guest_csum) {
                CHECK(p.hdr.flags == 1 && p.hdr.csum_start == r.l4 && p.hdr.csum_start + p.hdr.csum_offset == k->csum_at &&
                      p.hdr.gso_type == 0 && be16(f + k->csum_at) == partial,
                      "%s: NEEDS_CSUM start %u offset %u, frame untouched", k->name, p.hdr.csum_start, p.hdr.csum_offset);
            } else {
                CHECK(*(uint64_t *)&p.hdr == 0 && be16(f + k->csum_at) == kernel,
                      "%s: header zero, checksum 0x%04x (kernel 0x%04x)", k->name, be16(f + k->csum_at), kernel);
            }
            CHECK(rx.stats.partial == 1 && rx.stats.csum_sw == (guest_csum ? 0u : 1u), "%s: counted: partial %llu, "
                  "completed %llu", k->name, (unsigned long long)rx.stats.partial, (unsigned long long)rx.stats.csum_sw);
        }
    }
    end();

    begin("NIC -> guest: full checksums, UDP checksum 0, fragments, truncated and non-IP frames go as they are");
    struct vx_vring rx = ring(0, F(GUEST_CSUM));
    uint32_t len;
    uint8_t *f = kframe(&kframes[1], &len);
    struct vx_pkt p = { .len = len, .room = len, .data = f };
    ofl_from_nic(&rx, &p, 1);
    CHECK(p.hdr.flags == 0 && ref_l4_ok(f, len), "a full TCP checksum: no flag, frame unchanged");
    f = kframe(&kframes[3], &len);
    f[40] = f[41] = 0;                  /* UDP over IPv4: "no checksum" */
    p = (struct vx_pkt){ .len = len, .room = len, .data = f };
    ofl_from_nic(&rx, &p, 1);
    CHECK(p.hdr.flags == 0 && f[40] == 0 && f[41] == 0, "UDP checksum 0 stays 0");
    f = kframe(&kframes[1], &len);
    make_partial(f, len, 50);
    f[20] |= 0x20;                      /* more fragments */
    p = (struct vx_pkt){ .len = len, .room = len, .data = f };
    ofl_from_nic(&rx, &p, 1);
    CHECK(p.hdr.flags == 0, "an IPv4 fragment is not a whole TCP packet: left alone");
    for (uint32_t cut = 0; cut <= 74; cut++) {  /* every length up to the whole 74-byte SYN */
        f = kframe(&kframes[0], &len);
        make_partial(f, len, 50);
        memmove(frame_at_end(cut), f, cut);
        p = (struct vx_pkt){ .len = cut, .room = cut, .data = area + AREA - cut };
        ofl_from_nic(&rx, &p, 1);
        CHECK(p.hdr.flags == (cut == 74), "a frame cut to %u bytes (IP length 60): flags %u", cut, p.hdr.flags);
    }
    CHECK(rx.stats.partial == 1, "only the whole partial frame was counted (%llu)", (unsigned long long)rx.stats.partial);
    end();

    begin("NIC -> guest: an SCTP checksum left for the hardware (zero) cannot be fixed: counted, passed on");
    f = frame_at_end(14 + 20 + 12 + 4);
    memcpy(f, k_udp4, 34);
    f[23] = 132;                        /* SCTP */
    wbe16(f + 16, 20 + 16);
    memset(f + 34, 0, 16);
    p = (struct vx_pkt){ .len = 50, .room = 50, .data = f };
    rx = ring(0, F(GUEST_CSUM));
    ofl_from_nic(&rx, &p, 1);
    CHECK(rx.stats.bad_hdr == 1 && p.hdr.flags == 0, "bad_hdr %llu", (unsigned long long)rx.stats.bad_hdr);
    end();
}

/* The segments of the TCP packet orig[0..olen) cut at mss: as many as
 * needed, each a copy of the headers with the fields of RFC 9293 rewritten,
 * each checksum right (partial: the pseudo-header sum in the field and
 * NEEDS_CSUM, right once completed), the payloads in order. */
static void check_segments(const uint8_t *orig, uint32_t olen, const struct vx_pkt *seg, int n, uint32_t mss,
                           bool partial)
{
    struct ref_frame r;
    ref_parse(orig, olen, &r);
    uint32_t hdrs = r.l4 + (orig[r.l4 + 12] >> 4) * 4, payload = olen - hdrs;
    int want = payload ? (int)((payload + mss - 1) / mss) : 1;     /* headers alone: one segment */
    CHECK(n == want, "%d segments, want %d", n, want);
    uint32_t done = 0;
    uint8_t f0 = orig[r.l4 + 13];
    for (int i = 0; i < n && i < want; i++) {
        const uint8_t *s = seg[i].data;
        uint32_t chunk = payload - done < mss ? payload - done : mss;
        bool first = i == 0, last = i == want - 1;
        CHECK(seg[i].len == hdrs + chunk, "segment %d: %u bytes, want %u", i, seg[i].len, hdrs + chunk);
        CHECK(!memcmp(s, orig, r.l3 + (r.v6 ? 4 : 2)) && !memcmp(s + r.l3 + 6, orig + r.l3 + 6, r.v6 ? 2 : 4) &&
              !memcmp(s + r.l3 + (r.v6 ? 8 : 12), orig + r.l3 + (r.v6 ? 8 : 12), r.l4 - r.l3 - (r.v6 ? 8 : 12)),
              "segment %d: the headers other than lengths, id and checksum are the packet's", i);
        if (r.v6)
            CHECK(be16(s + r.l3 + 4) == seg[i].len - r.l3 - 40, "segment %d: IPv6 payload length %u", i, be16(s + r.l3 + 4));
        else
            CHECK(be16(s + r.l3 + 2) == seg[i].len - r.l3 && be16(s + r.l3 + 4) == (uint16_t)(be16(orig + r.l3 + 4) + i),
                  "segment %d: IPv4 total length %u, id %u", i, be16(s + r.l3 + 2), be16(s + r.l3 + 4));
        CHECK(be32(s + r.l4 + 4) == be32(orig + r.l4 + 4) + done, "segment %d: seq %u, want %u", i, be32(s + r.l4 + 4),
              be32(orig + r.l4 + 4) + done);
        uint8_t fl = f0 & (uint8_t)~((last ? 0 : 0x09) | (first ? 0 : 0x80));
        CHECK(s[r.l4 + 13] == fl, "segment %d: flags 0x%02x, want 0x%02x (FIN/PSH last only, CWR first only)", i,
              s[r.l4 + 13], fl);
        CHECK(!memcmp(s + r.l4 + 14, orig + r.l4 + 14, 2) && !memcmp(s + r.l4 + 18, orig + r.l4 + 18, hdrs - r.l4 - 18),
              "segment %d: window, urgent pointer and options unchanged", i);
        CHECK(!memcmp(s + hdrs, orig + hdrs + done, chunk), "segment %d: payload bytes %u..%u", i, done, done + chunk);
        if (partial) {
            struct ref_frame sr;
            ref_parse(s, seg[i].len, &sr);
            CHECK(seg[i].hdr.flags == 1 && seg[i].hdr.csum_start == r.l4 && seg[i].hdr.csum_offset == 16 &&
                  be16(s + r.l4 + 16) == ref_fold(ref_pseudo(s, &sr)),
                  "segment %d: NEEDS_CSUM at %u+%u, the field the pseudo-header sum", i, seg[i].hdr.csum_start,
                  seg[i].hdr.csum_offset);
            uint8_t copy[2048];             /* segments are at most 1600 bytes here */
            if (seg[i].len <= sizeof copy) {
                memcpy(copy, s, seg[i].len);
                wbe16(copy + r.l4 + 16, 0);
                wbe16(copy + r.l4 + 16, (uint16_t)~ref_fold(ref_sum(copy + r.l4, seg[i].len - r.l4, ref_pseudo(copy, &sr))));
                CHECK(ref_l4_ok(copy, seg[i].len), "segment %d: completed, it verifies", i);
            }
        } else {
            CHECK(seg[i].hdr.flags == 0 && ref_l4_ok(s, seg[i].len), "segment %d: IP and TCP checksums verify", i);
        }
        done += chunk;
    }
}

/* Cut the packet with ofl_cut_start/next into buffers of `room` bytes,
 * `per_call` at a time; the segments in out[], their count returned. */
static uint8_t *seg_buf;
static int cut_all(const uint8_t *f, uint32_t len, struct vx_net_hdr hdr, uint64_t features, uint32_t room,
                   int per_call, bool partial, struct vx_pkt *out, int max)
{
    struct vx_vring tx = ring(1, features);
    struct ofl_cut cut = { .big = { .len = len, .room = len, .data = (uint8_t *)f, .hdr = hdr } };
    const char *why = NULL;
    int segs = ofl_cut_start(&cut, &tx, room, &why);
    if (segs < 0) {
        printf("#   refused: %s\n", why);
        return -1;
    }
    cut.out_partial = partial;
    int n = 0;
    while (cut.big.len && n < max) {
        int k = per_call < max - n ? per_call : max - n;
        for (int j = 0; j < k; j++)
            out[n + j] = (struct vx_pkt){ .room = room, .data = seg_buf + (size_t)(n + j) * room };
        n += ofl_cut_next(&cut, out + n, k);
    }
    CHECK(segs == n, "ofl_cut_start said %d segments, ofl_cut_next gave %d", segs, n);
    return n;
}

#define SEG_MAX 1100
static struct vx_pkt segs[SEG_MAX];

static void t_tso(void)
{
    struct { const char *name; struct tcp_opts o; uint32_t payload, mss; uint8_t gso; uint64_t features; bool partial; int per; }
    cases[] = {
        { "TSO, IPv4: 64000 bytes at gso_size 1448 (FIN|PSH|CWR|ACK), 7 segments per call",
          { .flags = 0x99, .seq = 0xfffff000u, .ip_id = 0xfffe }, 64000, 1448, 1, ALL_TX, false, 7 },
        { "TSO, IPv6 with a hop-by-hop header and a VLAN tag: 30001 bytes at 1220",
          { .v6 = true, .vlan = true, .hbh = true, .flags = 0x18, .seq = 7 }, 30001, 1220, 4, ALL_TX, false, 32 },
        { "TSO, IPv4 for a guest with GUEST_CSUM: each segment NEEDS_CSUM, its field the pseudo-header sum",
          { .flags = 0x11, .seq = 100 }, 20000, 1000, 1, ALL_TX, true, 32 },
        { "TSO, ECN (gso_type TCPV4|ECN, HOST_ECN): CWR on the first segment only",
          { .flags = 0x90, .seq = 1 }, 5000, 1448, 0x81, ALL_TX, false, 32 },
        { "TSO, payload no larger than gso_size (850 of an 886-byte frame): one segment, lengths and checksums done",
          { .v6 = true, .flags = 0x19 }, 800, 850, 4, ALL_TX, false, 32 },
        { "TSO, no payload at all: one segment of headers", { .flags = 0x11 }, 0, 60, 1, ALL_TX, false, 1 },
        { "TSO, gso_size 88 (Linux's smallest MSS), 64000 bytes: 728 segments, one per call",
          { .flags = 0x10 }, 64000, 88, 1, ALL_TX, false, 1 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        begin(cases[c].name);
        uint8_t *f = frame_at_end(cases[c].payload + 200);
        uint32_t len = build_tcp(f, cases[c].payload, &cases[c].o);
        f = memmove(area + AREA - len, f, len);
        struct ref_frame r;
        ref_parse(f, len, &r);
        struct vx_net_hdr hdr = { .flags = 1, .gso_type = cases[c].gso, .gso_size = (uint16_t)cases[c].mss,
                                  .hdr_len = 54, .csum_start = (uint16_t)r.l4, .csum_offset = 16 };
        mprotect(area, AREA, PROT_READ);        /* a lent frame: never written */
        int n = cut_all(f, len, hdr, cases[c].features, 1600, cases[c].per, cases[c].partial, segs, SEG_MAX);
        mprotect(area, AREA, PROT_READ | PROT_WRITE);
        check_segments(f, len, segs, n, cases[c].mss, cases[c].partial);
        end();
    }
}

/* === Hostile headers ====================================================== */

/*
 * Each row spoils one thing of a good TSO (or NEEDS_CSUM) packet and says
 * how; the packet must be refused by ofl_to_guest (dropped, counted as a
 * bad header, nothing handed on) and by ofl_to_nic (the same, no frame
 * filled), and nothing outside the frame read or written: the frame ends
 * at a guard page and is read-only, as a lent frame of the sending guest.
 */
enum spoil { GSO0, GSO_BIG, START_PAST, FIELD_PAST, HDRLEN_PAST, GSO_UDP, GSO_5, GSO_7F, NO_TSO6, NO_ECN, TSO4_ON_V6,
             TSO_ON_UDP, IPLEN_LONG, IPLEN_SHORT, IHL_4, DOFF_4, DOFF_PAST, START_NOT_TCP, TOO_MANY, TOO_BIG_SEG,
             NOT_IP, V6LEN_SHORT };
static const struct { enum spoil how; const char *what; } spoils[] = {
    { GSO0, "gso_size 0" }, { GSO_BIG, "gso_size larger than the frame" },
    { START_PAST, "csum_start at the frame's end" }, { FIELD_PAST, "csum_start + csum_offset + 2 past the end" },
    { HDRLEN_PAST, "hdr_len past the end" }, { GSO_UDP, "gso_type UDP (UFO, not offered)" },
    { GSO_5, "gso_type 5 (UDP_L4, not offered)" }, { GSO_7F, "gso_type 0x7f" },
    { NO_TSO6, "gso_type TCPV6 without HOST_TSO6" }, { NO_ECN, "gso_type TCPV4|ECN without HOST_ECN" },
    { TSO4_ON_V6, "gso_type TCPV4 on an IPv6 packet" }, { TSO_ON_UDP, "TSO on a UDP packet" },
    { IPLEN_LONG, "IPv4 total length past the frame" }, { IPLEN_SHORT, "IPv4 total length shorter than the frame" },
    { IHL_4, "IPv4 header length 16" }, { DOFF_4, "TCP data offset 4 (16 bytes)" },
    { DOFF_PAST, "TCP data offset past the headers (60 bytes in a 54-byte frame)" },
    { START_NOT_TCP, "csum_start not at the TCP header" }, { TOO_MANY, "gso_size 8: more than 1024 segments" },
    { TOO_BIG_SEG, "gso_size 3000: segments larger than a 2048-byte buffer" },
    { NOT_IP, "ethertype ARP" }, { V6LEN_SHORT, "IPv6 payload length shorter than the frame" },
};

/* The good packet, spoiled as `how` says, at the end of the area; its
 * header in *hdr and the TX features in *features. */
static uint32_t spoiled(enum spoil how, struct vx_net_hdr *hdr, uint64_t *features)
{
    struct tcp_opts o = { .v6 = how == NO_TSO6 || how == TSO4_ON_V6 || how == V6LEN_SHORT, .flags = 0x10 };
    /* TSO packets of 9000 bytes; the NEEDS_CSUM ones fit a 2048-byte frame. */
    uint32_t payload = how == DOFF_PAST ? 0 : how == START_PAST || how == FIELD_PAST ? 1000 : 9000;
    uint8_t *f = frame_at_end(payload + 200);
    uint32_t len = build_tcp(f, payload, &o), l3 = 14, l4 = o.v6 ? 54 : 34;
    *hdr = (struct vx_net_hdr){ .flags = 1, .gso_type = o.v6 ? 4 : 1, .gso_size = 1448, .hdr_len = 66,
                                .csum_start = (uint16_t)l4, .csum_offset = 16 };
    *features = ALL_TX;
    switch (how) {
    case GSO0:          hdr->gso_size = 0; break;
    case GSO_BIG:       hdr->gso_size = (uint16_t)(len + 1); break;
    case START_PAST:    hdr->gso_type = 0; hdr->csum_start = (uint16_t)len; hdr->csum_offset = 0; break;
    case FIELD_PAST:    hdr->gso_type = 0; hdr->csum_offset = (uint16_t)(len - l4 - 1); break;
    case HDRLEN_PAST:   hdr->hdr_len = (uint16_t)(len + 1); break;
    case GSO_UDP:       hdr->gso_type = 3; break;
    case GSO_5:         hdr->gso_type = 5; break;
    case GSO_7F:        hdr->gso_type = 0x7f; break;
    case NO_TSO6:       *features &= ~F(HOST_TSO6); break;
    case NO_ECN:        hdr->gso_type = 0x81; *features &= ~F(HOST_ECN); break;
    case TSO4_ON_V6:    hdr->gso_type = 1; break;
    case TSO_ON_UDP:    f[l3 + 9] = 17; break;
    case IPLEN_LONG:    wbe16(f + l3 + 2, len - l3 + 1); break;
    case IPLEN_SHORT:   wbe16(f + l3 + 2, len - l3 - 1); break;
    case IHL_4:         f[l3] = 0x44; break;
    case DOFF_4:        f[l4 + 12] = 0x40; break;
    case DOFF_PAST:     f[l4 + 12] = 0xf0; break;
    case START_NOT_TCP: hdr->csum_start = (uint16_t)(l4 - 2); hdr->csum_offset = 18; break;
    case TOO_MANY:      hdr->gso_size = 8; break;
    case TOO_BIG_SEG:   hdr->gso_size = 3000; break;
    case NOT_IP:        wbe16(f + 12, 0x0806); break;
    case V6LEN_SHORT:   wbe16(f + l3 + 4, len - l3 - 40 - 1); break;
    }
    memmove(area + AREA - len, f, len);
    return len;
}

static void t_hostile(void)
{
    begin("hostile headers (22 kinds), guest to guest: each dropped and counted, nothing handed on or written");
    for (size_t i = 0; i < sizeof spoils / sizeof spoils[0]; i++) {
        struct vx_net_hdr hdr;
        uint64_t features;
        uint32_t len = spoiled(spoils[i].how, &hdr, &features);
        struct vx_vring tx = ring(1, features), rx = ring(0, F(GUEST_CSUM));   /* it must be cut or completed */
        struct vx_pkt p = { .len = len, .room = len, .data = area + AREA - len, .hdr = hdr };
        /* 2048-byte scratch rooms for this one, so that TOO_BIG_SEG is too big */
        struct vx_pkt small[VX_BURST];
        for (int k = 0; k < VX_BURST; k++)
            small[k] = (struct vx_pkt){ .room = 2048, .data = scratch[k].data };
        sent_reset();
        mprotect(area, AREA, PROT_READ);
        ofl_to_guest(&tx, &rx, &p, 1, spoils[i].how == TOO_BIG_SEG ? small : scratch, record, NULL);
        mprotect(area, AREA, PROT_READ | PROT_WRITE);
        bool refused = sent.n == 0 && tx.stats.bad_hdr == 1 && tx.stats.drops == 1;
        CHECK(refused, "%s: handed on %d packets, bad headers %llu, drops %llu", spoils[i].what, sent.n,
              (unsigned long long)tx.stats.bad_hdr, (unsigned long long)tx.stats.drops);
    }
    sent_reset();
    end();

    begin("hostile headers (22 kinds), guest to NIC: each dropped and counted, no frame filled, nothing written");
    for (size_t i = 0; i < sizeof spoils / sizeof spoils[0]; i++) {
        struct vx_net_hdr hdr;
        uint64_t features;
        uint32_t len = spoiled(spoils[i].how, &hdr, &features);
        struct vx_vring tx = ring(1, features);
        struct vx_pkt frames[4];
        for (int k = 0; k < 4; k++)
            frames[k] = (struct vx_pkt){ .room = 2048, .data = scratch[k].data };
        /* As vq_dequeue_burst_big leaves it: a TSO packet (or one too long
         * for a frame) in big, a plain one in the burst. */
        struct ofl_cut cut = { .big = { .len = len, .room = VX_PKT_MAX, .data = area + AREA - len, .hdr = hdr } };
        int filled = 0;
        if (!hdr.gso_type && len <= 2048) {
            memcpy(frames[0].data, cut.big.data, len);
            frames[0].len = len;
            frames[0].hdr = hdr;
            cut.big.len = 0;
            filled = 1;
        }
        mprotect(area, AREA, PROT_READ);
        filled = ofl_to_nic(&cut, &tx, frames, filled, 4);
        mprotect(area, AREA, PROT_READ | PROT_WRITE);
        CHECK(filled == 0 && cut.big.len == 0 && tx.stats.bad_hdr == 1,
              "%s: %d frames filled, bad headers %llu", spoils[i].what, filled, (unsigned long long)tx.stats.bad_hdr);
    }
    end();

    begin("DATA_VALID and RSC_INFO from a guest's TX are ignored: cleared, never passed on");
    struct tcp_opts o = { .flags = 0x10 };
    uint8_t *f = frame_at_end(300);
    uint32_t len = build_tcp(f, 100, &o);
    struct vx_vring tx = ring(1, ALL_TX), rx = ring(0, ALL_RX);
    struct vx_pkt p = { .len = len, .room = 300, .data = f, .hdr = { .flags = 1 | 2 | 4 | 0x80, .csum_start = 34,
                                                                     .csum_offset = 16 } };
    sent_reset();
    ofl_to_guest(&tx, &rx, &p, 1, scratch, record, NULL);
    CHECK(sent.n == 1 && sent.pkt[0].hdr.flags == 1, "handed on with flags 0x%x, want NEEDS_CSUM only",
          sent.n ? sent.pkt[0].hdr.flags : 0xff);
    sent_reset();
    end();
}

/* === The three directions ================================================= */

static void t_to_guest(void)
{
    begin("guest -> guest, sender without CSUM: the burst goes on untouched, in one call");
    struct vx_pkt burst[VX_BURST];
    uint8_t *f = frame_at_end(VX_BURST * 64);
    for (int i = 0; i < VX_BURST; i++)
        burst[i] = (struct vx_pkt){ .len = 60, .room = 64, .data = f + i * 64 };
    struct vx_vring tx = ring(1, 0), rx = ring(0, 0);
    sent_reset();
    ofl_to_guest(&tx, &rx, burst, VX_BURST, scratch, record, NULL);
    CHECK(sent.calls == 1 && sent.n == VX_BURST && sent.pkt[5].data == burst[5].data, "%d calls, %d packets", sent.calls, sent.n);
    end();

    begin("guest -> guest: a burst of plain, NEEDS_CSUM and TSO packets, in order, to receivers with and without offloads");
    /* plain, csum, TSO, plain, csum: lent (read-only) frames */
    struct tcp_opts o = { .flags = 0x18, .seq = 1000 };
    uint8_t *base = frame_at_end(AREA);
    uint32_t off = 0, lens[5];
    struct vx_pkt in[5];
    for (int i = 0; i < 5; i++) {
        uint32_t payload = i == 2 ? 10000 : 100 + (uint32_t)i;
        lens[i] = build_tcp(base + off, payload, &o);
        in[i] = (struct vx_pkt){ .len = lens[i], .room = lens[i], .data = base + off };
        if (i == 1 || i == 4)
            in[i].hdr = (struct vx_net_hdr){ .flags = 1, .csum_start = 34, .csum_offset = 16 };
        if (i == 2)
            in[i].hdr = (struct vx_net_hdr){ .flags = 1, .gso_type = 1, .gso_size = 1448, .hdr_len = 500,
                                             .csum_start = 34, .csum_offset = 16 };
        if (i == 0 || i == 3) {         /* plain: a full checksum */
            wbe16(base + off + 50, 0);
            wbe16(base + off + 50, (uint16_t)~ref_fold(ref_sum(base + off + 34, lens[i] - 34,
                                                               ref_sum(base + off + 26, 8, 0) + 6 + lens[i] - 34)));
        }
        off += (lens[i] + 63) & ~63u;
    }
    struct { const char *who; uint64_t rx; int n; } rcv[] = {
        { "receiver with every offload", ALL_RX, 5 },
        { "receiver with GUEST_CSUM only", F(GUEST_CSUM), 11 },
        { "receiver with none", 0, 11 },
    };
    for (int r = 0; r < 3; r++) {
        struct vx_pkt b[5];
        memcpy(b, in, sizeof b);
        tx = ring(1, ALL_TX);
        rx = ring(0, rcv[r].rx);
        sent_reset();
        mprotect(area, AREA, PROT_READ);
        ofl_to_guest(&tx, &rx, b, 5, scratch, record, NULL);
        mprotect(area, AREA, PROT_READ | PROT_WRITE);
        CHECK(sent.n == rcv[r].n, "%s: %d packets handed on, want %d", rcv[r].who, sent.n, rcv[r].n);
        if (sent.n != rcv[r].n)
            continue;
        int last = sent.n - 1;
        bool order = !memcmp(sent.bytes[0] + 66, base + 66, 100) && !memcmp(sent.bytes[last] + 66, in[4].data + 66, 104);
        CHECK(order, "%s: first and last packets in their places", rcv[r].who);
        if (rcv[r].rx & F(GUEST_TSO4)) {
            CHECK(sent.pkt[1].hdr.flags == 1 && sent.pkt[2].hdr.gso_type == 1 && sent.pkt[2].hdr.hdr_len == 66 &&
                  sent.pkt[2].len == lens[2] && sent.pkt[2].data == in[2].data,
                  "%s: NEEDS_CSUM crosses as is, the TSO packet whole (hdr_len %u, the exact 66)", rcv[r].who,
                  sent.pkt[2].hdr.hdr_len);
            CHECK(tx.stats.tso == 1 && tx.stats.segments == 0 && tx.stats.csum_sw == 0, "counted: tso %llu segments %llu",
                  (unsigned long long)tx.stats.tso, (unsigned long long)tx.stats.segments);
        } else {
            bool partial = rcv[r].rx & F(GUEST_CSUM);
            for (int k = 0; k < sent.n; k++) {
                struct vx_pkt v = sent.pkt[k];
                v.data = sent.bytes[k];
                bool needs = v.hdr.flags & 1;
                CHECK(v.hdr.gso_type == 0 && (needs ? partial : ref_l4_ok(v.data, v.len)),
                      "%s: packet %d: no gso_type, %s", rcv[r].who, k, needs ? "NEEDS_CSUM" : "checksum verifies");
            }
            check_segments(in[2].data, lens[2], (struct vx_pkt[]){ sent.pkt[2], sent.pkt[3], sent.pkt[4], sent.pkt[5],
                           sent.pkt[6], sent.pkt[7], sent.pkt[8] }, 7, 1448, partial);
            CHECK(tx.stats.tso == 1 && tx.stats.segments == 7 && tx.stats.csum_sw == (partial ? 0u : 2u),
                  "%s: counted: tso %llu segments %llu completed %llu", rcv[r].who, (unsigned long long)tx.stats.tso,
                  (unsigned long long)tx.stats.segments, (unsigned long long)tx.stats.csum_sw);
        }
    }
    sent_reset();
    end();
}

static void t_to_nic(void)
{
    begin("guest -> NIC: NEEDS_CSUM completed in the frames; a 60000-byte TSO packet cut over calls of 3 frames, in order");
    struct vx_vring tx = ring(1, ALL_TX);
    struct tcp_opts o = { .flags = 0x19, .seq = 5 };
    uint32_t len = build_tcp(frame_at_end(AREA), 60000, &o);
    uint8_t *big = area + AREA - len;
    memmove(big, area, len);
    struct ofl_cut cut = { .big = { .len = len, .room = VX_PKT_MAX, .data = big,
                                    .hdr = { .flags = 1, .gso_type = 1, .gso_size = 1448, .csum_start = 34, .csum_offset = 16 } } };
    /* First call: two packets of the burst (NEEDS_CSUM) and the TSO packet behind them. */
    struct vx_pkt frames[3];
    for (int k = 0; k < 3; k++)
        frames[k] = (struct vx_pkt){ .room = 4096, .data = scratch[k].data };
    for (int k = 0; k < 2; k++) {
        frames[k].len = build_tcp(frames[k].data, 500, &o);
        frames[k].hdr = (struct vx_net_hdr){ .flags = 1, .csum_start = 34, .csum_offset = 16 };
    }
    int n = ofl_to_nic(&cut, &tx, frames, 2, 3);
    CHECK(n == 3 && ref_l4_ok(frames[0].data, frames[0].len) && ref_l4_ok(frames[1].data, frames[1].len),
          "the burst's checksums completed, then the first segment: %d frames", n);
    CHECK(tx.stats.csum_sw == 2 && tx.stats.tso == 1 && tx.stats.segments == 42, "counted: completed %llu tso %llu "
          "segments %llu", (unsigned long long)tx.stats.csum_sw, (unsigned long long)tx.stats.tso,
          (unsigned long long)tx.stats.segments);
    static struct vx_pkt all[64];
    int got = 0;
    all[got] = frames[2], all[got].data = malloc(4096), memcpy(all[got].data, frames[2].data, frames[2].len), got++;
    /* Then as the poll loop does while cut->big.len: no burst, 3 frames a call. */
    int calls = 0;
    while (cut.big.len && calls++ < 100) {
        n = ofl_to_nic(&cut, &tx, frames, 0, 3);
        for (int k = 0; k < n && got < 64; k++, got++) {
            all[got] = frames[k];
            all[got].data = malloc(4096);
            memcpy(all[got].data, frames[k].data, frames[k].len);
        }
    }
    CHECK(calls == 14 && cut.big.len == 0 && cut.nsegs == 0, "%d more calls (want 14), the cut state free again", calls);
    check_segments(big, len, all, got, 1448, false);
    for (int k = 0; k < got; k++)
        free(all[k].data);
    end();
}

int main(void)
{
    unit_init();
    area = map_guarded(AREA, (size_t)page_size);
    seg_buf = map_guarded((size_t)SEG_MAX * 1600, (size_t)page_size);
    for (int k = 0; k < VX_BURST; k++)
        scratch[k] = (struct vx_pkt){ .room = VX_PKT_MAX, .data = map_guarded(VX_PKT_MAX + 18, (size_t)page_size) };
    t_rfc1071();
    t_checksum_vs_reference();
    t_kernel_frames();
    t_from_nic();
    t_tso();
    t_hostile();
    t_to_guest();
    t_to_nic();
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
