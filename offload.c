/*
 * offload.c - checksums and TCP segmentation: the virtio-net offloads
 * (second reading: the first reading never needs this file).
 *
 * Where it sits.  Every packet carries its virtio-net header (struct
 * vx_net_hdr in vhost_xdp.h): guest TX copies it out of the chain
 * (virtqueue.c, vq_tx_copy), guest RX writes it in front of the frame.  In
 * between, pmd_loop.c calls this file once per direction:
 *
 *   guest TX --> ofl_to_nic()   --> AF_XDP --> wire    complete NEEDS_CSUM checksums,
 *                                                      cut TSO packets into MTU-sized frames
 *   guest TX --> ofl_to_guest() --> guest RX           pass the header on when the receiver
 *                                                      negotiated it, else do the work here
 *   wire --> AF_XDP --> ofl_from_nic() --> guest RX    frames whose checksum the peer left
 *                                                      for the hardware (CHECKSUM_PARTIAL)
 *
 * Why offloads matter: without them a guest's TCP stack cuts every segment
 * to the MTU and checksums each one itself; with them it hands over 64 KiB
 * at a time, and inside one host nobody needs to compute a checksum at all
 * (no wire can corrupt a copy in memory): the 64 KiB crosses to another
 * guest whole, as one chain, and only a packet that leaves for a real wire
 * is cut and checksummed, here, in software, as a NIC would in hardware.
 *
 * Spec: virtio 1.2 §5.1.3.1 (feature dependencies), §5.1.6.2 "Packet
 * Transmission" (what the driver may put in the header, and what the device
 * must check), §5.1.6.4 "Processing of Incoming Packets" (what we may put in
 * a header towards a guest); RFC 1071 (the Internet checksum), RFC 768
 * (UDP, whose checksum 0 means "none"), RFC 791 (IPv4 header), RFC 8200
 * (IPv6, the upper-layer checksum's pseudo-header in §8.1), RFC 9293 (TCP:
 * sequence numbers and flags), RFC 3168 (ECN: CWR).
 *
 * Everything in a header from a guest is hostile: each field is checked
 * against the frame before it is used (ofl_check_tx, ofl_cut_start), a bad
 * one drops the packet and counts it ("bad headers" in --stats and the exit
 * lines; the first is logged per ring), and every read and write stays
 * inside the frame.  Where the spec is silent we do what DPDK's vhost
 * library does; where we differ, the comment says so.
 *
 * Read in this order: the Internet checksum; reading a frame's headers;
 * completing a checksum; cutting a TSO packet; the guest's header checked;
 * then the three directions, and --trace at the end.
 */
#include "vhost_xdp.h"

#include <netinet/in.h>         /* IPPROTO_TCP, IPPROTO_UDP, htons */
#include <time.h>

/* From virtio 1.2 §5.1.6 (<linux/virtio_net.h> has the same values). */
#define HDR_F_NEEDS_CSUM 1      /* csum_start/csum_offset say where a checksum is to be completed */
#define HDR_F_DATA_VALID 2      /* RX only: the checksum was checked (we never set it, see ofl_from_nic) */
#define GSO_NONE         0
#define GSO_TCPV4        1
#define GSO_UDP          3      /* UFO: not offered, refused */
#define GSO_TCPV6        4
#define GSO_ECN          0x80   /* the TCP packet carries ECN's CWR: only its first segment keeps it */

/* TCP header (RFC 9293 §3.1): sequence number at 4, data offset at 12
 * (high nibble, in 32-bit words), flags at 13, checksum at 16. */
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80
#define TCP_CSUM_OFF 16
#define UDP_CSUM_OFF 6
#define IPPROTO_SCTP_ 132       /* SCTP: its CRC32c is not an Internet checksum */

/* A hostile gso_size of 1 would make a 64 KiB packet 65,000 segments, each
 * a copy and a checksum on the poll thread every other guest shares.
 * 1024 is more than a real TCP sends: Linux's smallest MSS is 88 bytes
 * (TCP_MIN_MSS), 745 segments for 64 KiB. */
#define OFL_MAX_SEGS 1024

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }    /* network order */
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static inline void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }

static void ofl_trace(struct vx_vring *vr, const struct vx_pkt *p, const char *what, int segs);
static const char *ofl_check_tx(struct vx_pkt *p);

/* === The Internet checksum (RFC 1071) ==================================== */

/*
 * The ones' complement sum of 16-bit words.  Two of RFC 1071's properties
 * make it cheap:
 *   - byte order does not matter (§2(B)): summing the words as they lie in
 *     memory on a little-endian CPU gives the byte-swapped sum, which,
 *     stored back the same way, is the right bytes on the wire;
 *   - it can be computed in wider words (§2(C)): 2^64 - 1 is a multiple of
 *     2^16 - 1, so adding 64-bit words with end-around carry and folding to
 *     16 bits at the end gives the same sum, four words per add.
 * An odd last byte counts as a word whose second byte is zero, which is
 * what loading it into a zeroed word does.  csum_add's regions must start
 * at an even offset from the start of what is summed.
 */
static uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
    uint64_t w;
    for (; len >= 8; p += 8, len -= 8) {
        memcpy(&w, p, 8);           /* an unaligned load: frames start anywhere */
        sum += w;
        sum += sum < w;             /* the carry out of bit 63 comes back in at bit 0 */
    }
    if (len) {
        w = 0;
        memcpy(&w, p, len);
        sum += w;
        sum += sum < w;
    }
    return sum;
}

/* 64 bits of ones' complement sum folded to 16: each fold adds the high
 * half to the low half, carries included, until nothing is left above. */
static uint16_t csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffu) + (sum >> 16);
    sum = (sum & 0xffffu) + (sum >> 16);
    return (uint16_t)((sum & 0xffffu) + (sum >> 16));
}

/* The checksum of len bytes: the complement of their sum, as it is stored
 * (memcpy it into the frame).  A region that holds its own checksum field
 * sums to 0xffff when the field is right, so this returns 0 then. */
uint16_t ofl_checksum(const void *data, size_t len)
{
    return (uint16_t)~csum_fold(csum_add(0, data, len));
}

/* === Reading a frame's headers =========================================== */

/* Where an IP packet's parts are in a frame (offsets from its first byte). */
struct ofl_frame {
    uint32_t l3;            /* the IPv4 or IPv6 header (after Ethernet and VLAN tags) */
    uint32_t l4;            /* the transport header */
    uint32_t end;           /* the IP packet's end: the frame may be longer (Ethernet padding) */
    uint8_t  proto;         /* transport protocol: IPPROTO_TCP, IPPROTO_UDP, ... */
    bool     ipv6;
};

/*
 * Read the Ethernet, VLAN and IP headers of an unfragmented IPv4 or IPv6
 * packet and check every length: 0 if they agree, -1 otherwise (*why says
 * what is wrong).  `have` bytes of f may be read (a private copy of the
 * headers may be shorter than the frame), `len` is the frame's length,
 * which the IP lengths must fit in.  IPv6 extension headers: hop-by-hop and
 * destination options are stepped over (at most four); a routing header
 * changes the destination the pseudo-header must use (RFC 8200 §8.1) and a
 * fragment header means no whole transport packet: both stop the walk with
 * proto 0, so that nobody touches a checksum there.
 */
static int ofl_parse(const uint8_t *f, uint32_t have, uint32_t len, struct ofl_frame *fr, const char **why)
{
    uint32_t l3 = 14;
    if (have < l3)
        return *why = "shorter than an Ethernet header", -1;
    uint16_t type = get16(f + 12);
    for (int tags = 0; tags < 2 && (type == 0x8100 || type == 0x88a8); tags++) {    /* 802.1Q, 802.1ad */
        if (have < l3 + 4)
            return *why = "VLAN tag cut short", -1;
        type = get16(f + l3 + 2);
        l3 += 4;
    }
    fr->l3 = l3;
    if (type == 0x0800 && have >= l3 + 20 && f[l3] >> 4 == 4) {    /* RFC 791 */
        uint32_t ihl = (f[l3] & 15u) * 4, total = get16(f + l3 + 2);
        if (ihl < 20 || total < ihl || l3 + ihl > have || l3 + total > len)
            return *why = "IPv4 header length or total length disagrees with the frame", -1;
        fr->ipv6 = false;
        fr->l4 = l3 + ihl;
        fr->end = l3 + total;
        /* A fragment (more fragments, or an offset) has no whole transport packet. */
        fr->proto = (get16(f + l3 + 6) & 0x3fff) ? 0 : f[l3 + 9];
        return 0;
    }
    if (type == 0x86dd && have >= l3 + 40 && f[l3] >> 4 == 6) {    /* RFC 8200 */
        uint32_t end = l3 + 40 + get16(f + l3 + 4), l4 = l3 + 40;
        if (end > len)
            return *why = "IPv6 payload length disagrees with the frame", -1;
        uint8_t next = f[l3 + 6];
        for (int ext = 0; ext < 4 && (next == 0 || next == 60); ext++) {   /* hop-by-hop, destination options */
            if (l4 + 8 > end || l4 + 8 > have)
                return *why = "IPv6 extension header cut short", -1;
            next = f[l4];
            l4 += (f[l4 + 1] + 1u) * 8;
        }
        if (l4 > end || l4 > have)
            return *why = "IPv6 extension header cut short", -1;
        fr->ipv6 = true;
        fr->l4 = l4;
        fr->end = end;
        fr->proto = next == 0 || next == 60 ? 0 : next;
        return 0;
    }
    return *why = "not an IPv4 or IPv6 packet", -1;
}

/* The sum of the pseudo-header that TCP and UDP checksums cover besides
 * their own bytes: the addresses, the protocol and the transport length
 * (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6), laid out as the RFCs
 * draw it and summed like any other bytes. */
static uint64_t ofl_pseudo_sum(const uint8_t *f, const struct ofl_frame *fr, uint32_t l4_len)
{
    uint8_t ph[40] = { 0 };
    if (fr->ipv6) {
        memcpy(ph, f + fr->l3 + 8, 32);     /* source, destination */
        put32(ph + 32, l4_len);
        ph[39] = fr->proto;
        return csum_add(0, ph, 40);
    }
    memcpy(ph, f + fr->l3 + 12, 8);         /* source, destination */
    ph[9] = fr->proto;
    put16(ph + 10, l4_len);
    return csum_add(0, ph, 12);
}

/* === Completing a checksum (NEEDS_CSUM) ================================== */

/*
 * What VIRTIO_NET_HDR_F_NEEDS_CSUM asks of the device (§5.1.6.2): the
 * checksum from csum_start to the end of the packet is missing, the 16-bit
 * field at csum_start + csum_offset holds the sum of the pseudo-header, and
 * the device completes it: the checksum over [csum_start, end), field
 * included, goes into the field.  It needs no knowledge of the protocol
 * (TCP, UDP, anything with an Internet checksum), as Linux's
 * skb_checksum_help() and DPDK's vhost library do it.  A result of 0 is
 * written as 0xffff (the same number in ones' complement): for UDP, 0 would
 * mean "no checksum" (RFC 768).  The caller checked the offsets.
 */
static void ofl_complete(uint8_t *f, uint32_t start, uint32_t field, uint32_t end)
{
    uint16_t c = ofl_checksum(f + start, end - start);
    if (c == 0)
        c = 0xffff;
    memcpy(f + field, &c, 2);
}

/* NEEDS_CSUM, done in place: for a packet whose header ofl_check_tx()
 * accepted, in a buffer that is ours (never a lent frame: that is the
 * sending guest's memory).  Returns 0, or -1 if the offsets do not fit. */
int ofl_complete_csum(struct vx_pkt *p)
{
    uint32_t start = p->hdr.csum_start, field = start + p->hdr.csum_offset;
    if (start >= p->len || field + 2 > p->len)
        return -1;
    ofl_complete(p->data, start, field, p->len);
    p->hdr.flags &= (uint8_t)~HDR_F_NEEDS_CSUM;
    p->hdr.csum_start = p->hdr.csum_offset = 0;
    return 0;
}

/* === Cutting a TSO packet (segmentation) ================================= */

/*
 * A TSO packet (gso_type TCPV4 or TCPV6, §5.1.6.2) is one TCP segment of up
 * to 64 KiB that the guest wants sent as several of at most gso_size payload
 * bytes each, as a NIC's TCP segmentation offload would.  Each segment is a
 * copy of the headers followed by its share of the payload, with the fields
 * that differ rewritten (RFC 9293, and what Linux's own software GSO does):
 *   IPv4   total length, identification (+1 per segment), header checksum;
 *   IPv6   payload length;
 *   TCP    sequence number (+ the payload before it), FIN and PSH on the
 *          last segment only, CWR (RFC 3168) on the first only, checksum.
 * The headers are copied out of the packet once (cut->hdrs) and each segment
 * starts from that copy: the packet may be a lent frame in the sending
 * guest's memory, which it could rewrite while we cut.  The checksum: in
 * full for the wire or a guest without GUEST_CSUM; for a guest with it only
 * the pseudo-header sum, with NEEDS_CSUM, as Linux leaves a segment of its
 * own software GSO for a device that checksums (out_partial).
 */

/* Check a TSO packet's header against the packet and what the guest on tx
 * negotiated, and set up *cut to cut it into segments of at most `room`
 * bytes.  Returns the number of segments, or -1 (*why says why).
 * A gso_size of 0 cuts nothing; one larger than the whole frame is refused
 * too, as issue 13 asks: no sender we know makes one (Linux's TCP and
 * testpmd's `tso set` mark only packets longer than their MSS), where
 * Linux's own receive path would take it as a plain packet.  A payload no
 * larger than gso_size, in a frame that is, makes one segment. */
int ofl_cut_start(struct ofl_cut *cut, const struct vx_vring *tx, uint32_t room, const char **why)
{
    struct vx_pkt *p = &cut->big;
    const struct vx_net_hdr *h = &p->hdr;
    uint64_t f = tx->features;
    uint8_t type = h->gso_type & (uint8_t)~GSO_ECN;
    if ((*why = ofl_check_tx(p)))       /* hdr_len, csum_start/csum_offset */
        return -1;
    if (type != GSO_TCPV4 && type != GSO_TCPV6)
        return *why = "gso_type is not TCPV4 or TCPV6 (UDP and others are not offered)", -1;
    if (!(f & (1ull << (type == GSO_TCPV4 ? VIRTIO_NET_F_HOST_TSO4 : VIRTIO_NET_F_HOST_TSO6))) ||
        ((h->gso_type & GSO_ECN) && !(f & (1ull << VIRTIO_NET_F_HOST_ECN))))
        return *why = "gso_type the guest did not negotiate (HOST_TSO4, HOST_TSO6, HOST_ECN)", -1;
    if (h->gso_size == 0 || h->gso_size > p->len)
        return *why = "gso_size 0 or larger than the frame", -1;
    /* The headers, read once (see above); a packet whose headers are longer
     * than OFL_MAX_HDRS fails the parse or the check below. */
    uint32_t have = p->len < OFL_MAX_HDRS ? p->len : OFL_MAX_HDRS;
    memcpy(cut->hdrs, p->data, have);
    struct ofl_frame fr;
    if (ofl_parse(cut->hdrs, have, p->len, &fr, why) < 0)
        return -1;
    if (fr.proto != IPPROTO_TCP || fr.ipv6 != (type == GSO_TCPV6))
        return *why = "gso_type TCPV4/TCPV6 on a packet that is not TCP over IPv4/IPv6", -1;
    if (fr.end != p->len)   /* no Ethernet padding after 64 KiB: the IP length must be the frame's */
        return *why = "IP length disagrees with the frame's length", -1;
    if (fr.l4 + 20 > have)
        return *why = "TCP header past the headers we read (OFL_MAX_HDRS)", -1;
    uint32_t hdrs = fr.l4 + (cut->hdrs[fr.l4 + 12] >> 4) * 4u;
    if (hdrs < fr.l4 + 20 || hdrs > have)
        return *why = "TCP header length (data offset) disagrees with the frame", -1;
    if ((h->flags & HDR_F_NEEDS_CSUM) && (h->csum_start != fr.l4 || h->csum_offset != TCP_CSUM_OFF))
        return *why = "csum_start/csum_offset do not point at the TCP checksum", -1;
    uint32_t payload = p->len - hdrs, mss = h->gso_size;
    uint32_t nsegs = payload ? (payload + mss - 1) / mss : 1;
    if (nsegs > OFL_MAX_SEGS)
        return *why = "more than 1024 segments (gso_size too small for the packet)", -1;
    if (hdrs + (mss < payload ? mss : payload) > room)
        return *why = "segments larger than the port's buffers (gso_size too large)", -1;
    cut->l3 = fr.l3;
    cut->l4 = fr.l4;
    cut->payload = hdrs;
    cut->ipv6 = fr.ipv6;
    cut->mss = mss;
    cut->nsegs = nsegs;
    cut->next = cut->index = 0;
    return (int)nsegs;
}

/* Rewrite the fields of segment cut->index, whose `chunk` payload bytes
 * follow the headers copied into o (see the table above). */
static void ofl_fix_segment(const struct ofl_cut *cut, uint8_t *o, uint32_t chunk, struct vx_net_hdr *hdr)
{
    const uint8_t *in = cut->hdrs;
    uint32_t l3 = cut->l3, l4 = cut->l4, tcp_len = cut->payload - l4 + chunk;
    bool first = cut->index == 0, last = cut->index + 1 == cut->nsegs;
    if (cut->ipv6) {
        /* IPv6 has no header checksum; its payload length (at 4) counts
         * everything after the fixed 40 bytes: extension headers + TCP. */
        put16(o + l3 + 4, cut->payload - l3 - 40 + chunk);
    } else {
        /* IPv4: total length (at 2) of this segment; identification (at 4)
         * one more per segment, as Linux's GSO numbers them (a receiver
         * reassembling fragments tells datagrams apart by it); the header
         * checksum (at 10) over the header, computed with its field 0. */
        put16(o + l3 + 2, cut->payload - l3 + chunk);
        put16(o + l3 + 4, get16(in + l3 + 4) + cut->index);
        o[l3 + 10] = o[l3 + 11] = 0;
        uint16_t c = ofl_checksum(o + l3, l4 - l3);
        memcpy(o + l3 + 10, &c, 2);
    }
    /* TCP: the sequence number (at 4) is that of the segment's first byte;
     * the acknowledgment, window and options stay as the guest wrote them. */
    put32(o + l4 + 4, get32(in + l4 + 4) + cut->next);
    /* The flags (at 13): FIN and PSH belong to the end of the data, so to
     * the last segment; CWR answers one congestion signal, so it goes
     * once, with the first (RFC 3168; Linux's own GSO does the same). */
    uint8_t flags = in[l4 + 13];
    if (!last)
        flags &= (uint8_t)~(TCP_FIN | TCP_PSH);
    if (!first)
        flags &= (uint8_t)~TCP_CWR;
    o[l4 + 13] = flags;
    /* The TCP checksum covers the pseudo-header, whose length is this
     * segment's: computed afresh, whatever the guest left in the field. */
    struct ofl_frame fr = { .l3 = l3, .l4 = l4, .proto = IPPROTO_TCP, .ipv6 = cut->ipv6 };
    uint64_t pseudo = ofl_pseudo_sum(o, &fr, tcp_len);
    *hdr = (struct vx_net_hdr){ 0 };
    if (cut->out_partial) {             /* the receiver finishes it, or needs not */
        uint16_t ps = csum_fold(pseudo);
        memcpy(o + l4 + TCP_CSUM_OFF, &ps, 2);
        *hdr = (struct vx_net_hdr){ .flags = HDR_F_NEEDS_CSUM, .csum_start = (uint16_t)l4,
                                    .csum_offset = TCP_CSUM_OFF };
    } else {                            /* in full: pseudo-header, TCP header, payload */
        o[l4 + TCP_CSUM_OFF] = o[l4 + TCP_CSUM_OFF + 1] = 0;
        uint16_t c = (uint16_t)~csum_fold(csum_add(pseudo, o + l4, tcp_len));
        memcpy(o + l4 + TCP_CSUM_OFF, &c, 2);
    }
}

/* Up to n more segments of the packet ofl_cut_start() set up, into out[]
 * (each out[k].data has room for one: ofl_cut_start checked it).  Returns
 * how many; when the last is written, cut->big.len becomes 0. */
int ofl_cut_next(struct ofl_cut *cut, struct vx_pkt *out, int n)
{
    uint32_t hdrs = cut->payload, total = cut->big.len - hdrs;
    int k = 0;
    /* Each segment: the headers (from the copy read once), then its share
     * of the payload, read from the packet once, straight into place. */
    for (; k < n && cut->big.len; k++) {
        uint32_t chunk = total - cut->next < cut->mss ? total - cut->next : cut->mss;
        uint8_t *o = out[k].data;
        memcpy(o, cut->hdrs, hdrs);
        memcpy(o + hdrs, cut->big.data + hdrs + cut->next, chunk);
        out[k].len = hdrs + chunk;
        ofl_fix_segment(cut, o, chunk, &out[k].hdr);
        cut->next += chunk;
        if (++cut->index == cut->nsegs)
            cut->big.len = cut->nsegs = 0;      /* done: the state is free again */
    }
    return k;
}

/* === The guest's header, checked ========================================= */

/*
 * Before anything uses a header from a guest (§5.1.6.2, device
 * requirements): flag bits other than NEEDS_CSUM are ignored and cleared
 * (DATA_VALID and RSC_INFO belong to RX: a driver must not set them), so
 * they are never passed on to another guest; hdr_len may be wrong (the
 * spec lets it be a hint only, and Linux sends the length of its linear
 * part), but not longer than the frame (Linux's tun refuses that too; DPDK
 * ignores hdr_len altogether); csum_start and the 2-byte field at
 * csum_start + csum_offset must lie inside the frame.  A TSO header is
 * checked further by ofl_cut_start.  Returns NULL, or why it is refused.
 */
static const char *ofl_check_tx(struct vx_pkt *p)
{
    struct vx_net_hdr *h = &p->hdr;
    h->flags &= HDR_F_NEEDS_CSUM;
    if (h->hdr_len > p->len)
        return "hdr_len larger than the frame";
    if ((h->flags & HDR_F_NEEDS_CSUM) &&
        (h->csum_start >= p->len || (uint32_t)h->csum_start + h->csum_offset + 2 > p->len))
        return "csum_start/csum_offset past the frame's end";
    return NULL;
}

/* A refused header: the packet is dropped and counted on its TX ring; the
 * first on each ring (since it started) is logged with the whole header. */
static void ofl_bad(struct vx_vring *tx, const struct vx_pkt *p, const char *why)
{
    vx_counter_add(tx->stats.bad_hdr, 1);
    vx_counter_add(tx->stats.drops, 1);
    if (tx->bad_hdr_logged)
        return;
    tx->bad_hdr_logged = true;
    const struct vx_net_hdr *h = &p->hdr;
    vx_log("ring %u: packet of %u bytes dropped: %s (header: flags 0x%x gso_type 0x%x hdr_len %u gso_size %u "
           "csum_start %u csum_offset %u); more bad headers on this ring are only counted", tx->index, p->len, why,
           h->flags, h->gso_type, h->hdr_len, h->gso_size, h->csum_start, h->csum_offset);
}

/* === Guest TX to the NIC ================================================= */

/*
 * The wire takes only whole checksums and frames within its MTU, so what a
 * guest left for the hardware is done here, in the poll thread.  Packets of
 * the burst (in UMEM frames, ours to write) with NEEDS_CSUM get their
 * checksum completed in place, unless the port's kernel completes them
 * (`leave`: AF_XDP TX metadata, nic_afxdp.c's "TX checksums by the
 * kernel"), in which case their header goes on to nic_tx_submit as it
 * is, checked; a bad header drops its packet, whose frame moves behind the
 * kept ones (nic_tx_submit gives those back unused).  Returns how many are
 * kept, in order.
 */
static int ofl_fix_burst(struct vx_vring *tx, struct vx_pkt *pkts, int n, bool leave)
{
    int kept = 0;
    for (int i = 0; i < n; i++) {
        struct vx_pkt *p = &pkts[i];
        if (p->hdr.flags | p->hdr.gso_type) {
            const char *why = p->hdr.gso_type ? "TSO packet where none can be" : ofl_check_tx(p);
            if (why) {
                ofl_bad(tx, p, why);
                continue;
            }
            if (p->hdr.flags && leave)
                vx_counter_add(tx->stats.csum_nic, 1);
            else if (p->hdr.flags && ofl_complete_csum(p) == 0)
                vx_counter_add(tx->stats.csum_sw, 1);
        }
        if (i != kept) {
            struct vx_pkt keep = pkts[i];
            pkts[i] = pkts[kept];
            pkts[kept] = keep;
        }
        kept++;
    }
    return kept;
}

/*
 * Guest TX -> NIC, after vq_dequeue_burst_big() filled frames[0..filled-1]
 * (and perhaps cut->big) out of nframes free frames: completes the burst's
 * checksums, then cuts cut->big into the frames left, as many segments as
 * fit; the rest wait in *cut for the next polls, and meanwhile the caller
 * takes nothing more from the guest (back-pressure, not loss).  Returns how
 * many frames now hold packets, in the order they are to be sent.  tx is
 * only touched when filled > 0 or a packet has just arrived in cut->big:
 * both mean its ring is running on this thread.
 */
int ofl_to_nic(struct ofl_cut *cut, struct vx_vring *tx, struct vx_pkt *frames, int filled, int nframes)
{
    /* A guest without CSUM sends no header (vq_tx_copy): one branch. */
    if (filled > 0 && (tx->features & (1ull << VIRTIO_NET_F_CSUM)))
        filled = ofl_fix_burst(tx, frames, filled, cut->nic_csum);
    /* Then the TSO packet, if one is waiting, into the frames left. */
    if (!cut->big.len || nframes == 0)
        return filled;
    if (cut->nsegs == 0) {              /* a packet just taken: check it, and count */
        const char *why = NULL;
        int segs = cut->big.hdr.gso_type ? ofl_cut_start(cut, tx, frames[0].room, &why) : -1;
        if (segs < 0) {
            if (why)
                ofl_bad(tx, &cut->big, why);
            else                        /* a frame too long for the port: as vq_dequeue_burst would */
                vx_counter_add(tx->stats.drops, 1);
            cut->big.len = cut->nsegs = 0;
            return filled;
        }
        /* The wire wants every checksum in full: computed here, or by the
         * port's kernel from each segment's NEEDS_CSUM header (nic_csum). */
        cut->out_partial = cut->nic_csum;
        vx_counter_add(tx->stats.tso, 1);
        vx_counter_add(tx->stats.segments, (uint64_t)segs);
        if (cut->nic_csum)
            vx_counter_add(tx->stats.csum_nic, (uint64_t)segs);
        if (__builtin_expect(vx_trace_rings, 0))
            ofl_trace(tx, &cut->big, "cut for the NIC into", segs);
    }
    return filled + ofl_cut_next(cut, frames + filled, nframes - filled);
}

/* === Guest TX to another guest =========================================== */

/* What a packet needs before the receiving guest may have it. */
enum ofl_need { OFL_AS_IS, OFL_CSUM, OFL_CUT, OFL_DROP };

/*
 * Check the header, then compare what the sender used with what the
 * receiver (ring rx) negotiated (§5.1.6.4: a device gives a guest NEEDS_CSUM
 * only with GUEST_CSUM, a gso_type only with GUEST_TSO4/6, and ECN with
 * GUEST_ECN).  A TSO packet the receiver can take crosses whole, its
 * hdr_len set to the exact length of its headers, as DPDK writes it.
 * DPDK's vhost library itself passes offload flags on without looking at
 * the receiver (the application, OVS, falls back to software): here that
 * fallback is ours.
 */
static enum ofl_need ofl_need(struct vx_vring *tx, const struct vx_vring *rx, struct vx_pkt *p, uint32_t room)
{
    const char *why = ofl_check_tx(p);
    if (why) {
        ofl_bad(tx, p, why);
        return OFL_DROP;
    }
    uint64_t rf = rx->features;
    bool guest_csum = rf & (1ull << VIRTIO_NET_F_GUEST_CSUM);
    if (p->hdr.gso_type) {
        /* Checked as if it were to be cut, even if it will cross whole:
         * another guest must not get a header we would refuse. */
        struct ofl_cut cut = { .big = *p };
        int segs = ofl_cut_start(&cut, tx, room, &why);
        if (segs < 0) {
            ofl_bad(tx, p, why);
            return OFL_DROP;
        }
        vx_counter_add(tx->stats.tso, 1);
        bool v4 = (p->hdr.gso_type & (uint8_t)~GSO_ECN) == GSO_TCPV4;
        bool whole = guest_csum && (rf & (1ull << (v4 ? VIRTIO_NET_F_GUEST_TSO4 : VIRTIO_NET_F_GUEST_TSO6))) &&
                     (!(p->hdr.gso_type & GSO_ECN) || (rf & (1ull << VIRTIO_NET_F_GUEST_ECN)));
        if (__builtin_expect(vx_trace_rings, 0))
            ofl_trace(tx, p, whole ? "crosses whole to the other guest" : "cut for the other guest into",
                      whole ? 0 : segs);
        if (whole) {
            p->hdr.hdr_len = (uint16_t)cut.payload;
            return OFL_AS_IS;
        }
        vx_counter_add(tx->stats.segments, (uint64_t)segs);
        return OFL_CUT;
    }
    if (p->hdr.flags && !guest_csum)
        return OFL_CSUM;
    return OFL_AS_IS;                   /* NEEDS_CSUM to a guest that takes it, or nothing left */
}

/*
 * The burst again, when some packet needs work: built afresh in out[], in
 * order, and handed to send() whenever out[] is full.  out[k] may use the
 * scratch buffer scratch[k] (the thread's own, VX_PKT_MAX each): a checksum
 * is completed in a copy (never in a lent frame: that is the sender's
 * memory), a TSO packet is cut into segments there.
 */
static void ofl_to_guest_slow(struct vx_vring *tx, const struct vx_vring *rx, struct vx_pkt *pkts,
                              const uint8_t *need, int n, struct vx_pkt *scratch, ofl_send_fn *send, void *ctx)
{
    struct vx_pkt out[VX_BURST];
    int nout = 0;
    for (int i = 0; i < n; i++) {
        if (need[i] == OFL_AS_IS) {
            out[nout++] = pkts[i];
        } else if (need[i] == OFL_CSUM) {
            /* Completed in a copy: the frame may be lent, the sender's. */
            struct vx_pkt *c = &scratch[nout];
            memcpy(c->data, pkts[i].data, pkts[i].len);
            c->len = pkts[i].len;
            c->hdr = pkts[i].hdr;
            if (ofl_complete_csum(c) == 0)  /* checked by ofl_check_tx: it fits */
                vx_counter_add(tx->stats.csum_sw, 1);
            out[nout++] = *c;
        } else if (need[i] == OFL_CUT) {
            /* Segments into the scratch buffers, handed on whenever out[]
             * is full, so a 64 KiB packet of any gso_size fits. */
            const char *why;
            struct ofl_cut cut = { .big = pkts[i] };
            if (ofl_cut_start(&cut, tx, scratch[0].room, &why) < 0)
                continue;                   /* ofl_need checked the same: never */
            cut.out_partial = rx->features & (1ull << VIRTIO_NET_F_GUEST_CSUM);
            while (cut.big.len) {
                if (nout == VX_BURST) {
                    send(ctx, out, nout);
                    nout = 0;
                }
                int k = ofl_cut_next(&cut, scratch + nout, VX_BURST - nout);
                for (int j = 0; j < k; j++, nout++)
                    out[nout] = scratch[nout];
            }
        }
        if (nout == VX_BURST) {
            send(ctx, out, nout);
            nout = 0;
        }
    }
    if (nout)
        send(ctx, out, nout);
}

/*
 * Guest TX ring tx -> guest RX ring rx (loopback, VM-to-VM): from
 * pmd_deliver(), with the burst vq_dequeue_burst_lend() lent it.  A guest
 * that did not negotiate VIRTIO_NET_F_CSUM sends only plain packets (its
 * headers were never even copied, vq_tx_copy): one branch per burst.
 * Otherwise one branch per packet whose header is zero; and if no packet
 * needs work (the receiver negotiated all the sender used), the burst goes
 * on as it is.  At most VX_BURST packets at a time (the lent burst's size).
 */
void ofl_to_guest(struct vx_vring *tx, const struct vx_vring *rx, struct vx_pkt *pkts, int n,
                  struct vx_pkt *scratch, ofl_send_fn *send, void *ctx)
{
    if (!(tx->features & (1ull << VIRTIO_NET_F_CSUM)) || n > VX_BURST) {
        send(ctx, pkts, n);
        return;
    }
    /* First look at the whole burst, deciding for each packet (and
     * counting): only if one needs work is the burst built again. */
    uint8_t need[VX_BURST];
    bool work = false;
    for (int i = 0; i < n; i++) {
        need[i] = OFL_AS_IS;
        if (pkts[i].hdr.flags | pkts[i].hdr.gso_type) {
            need[i] = (uint8_t)ofl_need(tx, rx, &pkts[i], scratch[0].room);
            work |= need[i] != OFL_AS_IS;
        }
    }
    if (work)
        ofl_to_guest_slow(tx, rx, pkts, need, n, scratch, send, ctx);
    else
        send(ctx, pkts, n);
}

/* === NIC to guest ======================================================== */

/*
 * A frame from the wire reaches us through AF_XDP, which carries no
 * checksum information.  A real NIC delivers full checksums.  A veth does
 * not, by default: the sender's stack left its TCP and UDP checksums for
 * "the hardware" (CHECKSUM_PARTIAL: TX checksum offload is on on a veth)
 * and nothing computes them on the way; the checksum field holds only the
 * sum of the pseudo-header.  Given as they are, a guest's kernel drops them
 * as corrupt (a TCP SYN-ACK never arrives; ping, with an ICMP checksum the
 * stack always computes, works).  So, for each TCP or UDP frame, without a
 * pass over its payload: does the field hold the folded pseudo-header sum?
 * If so the frame is handed on as what it is, NEEDS_CSUM with csum_start
 * and csum_offset, to a guest that negotiated GUEST_CSUM (the checksum of a
 * copy in memory need not be computed at all); to one that did not, it is
 * completed here, in the UMEM frame (ours).  A full checksum that happens to
 * equal the pseudo-header sum (1 in 65,536) comes out of either unchanged:
 * completing a right checksum gives the same checksum.
 * DATA_VALID is never set: we verify no checksum from the wire.
 * SCTP's CRC32c left for the hardware (field 0) is not an Internet checksum
 * and is not computed here: such frames go on as they are, counted, and the
 * log says once what to change.  ofl_from_nic writes every frame's header.
 */
static bool ofl_partial_said, ofl_sctp_said;

static void ofl_say_once(bool *said, const char *what)
{
    if (!__atomic_exchange_n(said, true, __ATOMIC_SEQ_CST))
        vx_log("%s", what);
}

/* One frame: 1 if its checksum was partial, -1 if it cannot be fixed. */
static int ofl_nic_frame(struct vx_pkt *p, bool guest_csum)
{
    struct ofl_frame fr;
    const char *why;
    if (ofl_parse(p->data, p->len, p->len, &fr, &why) < 0)
        return 0;
    /* Where the checksum field is: TCP's at 16, UDP's at 6 (RFC 9293,
     * RFC 768); a transport header cut short has none to look at. */
    uint32_t l4_len = fr.end - fr.l4, off;
    if (fr.proto == IPPROTO_TCP && l4_len >= 20)
        off = TCP_CSUM_OFF;
    else if (fr.proto == IPPROTO_UDP && l4_len >= 8)
        off = UDP_CSUM_OFF;
    else
        return fr.proto == IPPROTO_SCTP_ && l4_len >= 12 && !memcmp(p->data + fr.l4 + 8, "\0\0\0\0", 4) ? -1 : 0;
    /* The test itself: 12 or 40 bytes summed, two compared; the payload
     * is only read if the checksum must be completed here. */
    uint16_t field, pseudo = csum_fold(ofl_pseudo_sum(p->data, &fr, l4_len));
    memcpy(&field, p->data + fr.l4 + off, 2);
    if (field != pseudo || (field == 0 && off == UDP_CSUM_OFF))    /* UDP 0: no checksum (RFC 768) */
        return 0;
    if (guest_csum)
        p->hdr = (struct vx_net_hdr){ .flags = HDR_F_NEEDS_CSUM, .csum_start = (uint16_t)fr.l4,
                                      .csum_offset = (uint16_t)off };
    else
        ofl_complete(p->data, fr.l4, fr.l4 + off, fr.end);
    return 1;
}

void ofl_from_nic(struct vx_vring *rx, struct vx_pkt *pkts, int n)
{
    bool guest_csum = rx->features & (1ull << VIRTIO_NET_F_GUEST_CSUM);
    for (int i = 0; i < n; i++) {
        /* Every header written: nic_rx_burst() leaves the one of the
         * frame's previous use (the vx_pkt array is reused). */
        pkts[i].hdr = (struct vx_net_hdr){ 0 };
        int r = ofl_nic_frame(&pkts[i], guest_csum);
        if (r > 0) {
            vx_counter_add(rx->stats.partial, 1);
            if (!guest_csum)
                vx_counter_add(rx->stats.csum_sw, 1);
            ofl_say_once(&ofl_partial_said, "frames from the NIC carry TCP/UDP checksums left for the hardware "
                         "(CHECKSUM_PARTIAL: the sender's TX checksum offload, on by default on a veth): vhost-xdp "
                         "completes them (NEEDS_CSUM to a guest with GUEST_CSUM, else in software)");
            if (__builtin_expect(vx_trace_rings, 0))
                ofl_trace(rx, &pkts[i], guest_csum ? "partial checksum from the NIC, given as NEEDS_CSUM"
                                                   : "partial checksum from the NIC, completed", 0);
        } else if (r < 0) {
            vx_counter_add(rx->stats.bad_hdr, 1);
            ofl_say_once(&ofl_sctp_said, "a frame from the NIC carries an SCTP checksum left for the hardware "
                         "(CRC32c, the sender's TX checksum offload), which vhost-xdp does not compute: the guest "
                         "will drop it; turn the offload off where the frame comes from: ethtool -K IFACE tx off "
                         "(such frames are counted as bad headers)");
        }
    }
}

/* === --trace: one line per header ======================================== */

/* With --trace=rings: the header of a TSO packet (or of a frame from the
 * NIC with a partial checksum), one line per ring every OFL_TRACE_GAP_MS at
 * most (plain NEEDS_CSUM packets, every ACK, are not shown; the packets
 * between are not shown).  Spread out rather than the first few of each
 * second: a TCP connection's first packets are short (slow start), its
 * later ones 64 KiB.  Kept out of line: without tracing the data path pays
 * one branch on a flag. */
#define OFL_TRACE_GAP_MS 333

static void __attribute__((cold, noinline)) ofl_trace(struct vx_vring *vr, const struct vx_pkt *p, const char *what,
                                                       int segs)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now_ms < vr->trace_hdr_next_ms)
        return;
    vr->trace_hdr_next_ms = now_ms + OFL_TRACE_GAP_MS;
    static const char *const gso[] = { [GSO_NONE] = "NONE", [GSO_TCPV4] = "TCPV4", [GSO_UDP] = "UDP",
                                       [GSO_TCPV6] = "TCPV6" };
    const struct vx_net_hdr *h = &p->hdr;
    uint8_t type = h->gso_type & (uint8_t)~GSO_ECN;
    char segments[32] = "";
    if (segs > 0)
        snprintf(segments, sizeof segments, " %d segments", segs);
    vx_log("trace: ring %u: header flags=%s gso_type=%s%s hdr_len=%u gso_size=%u csum_start=%u csum_offset=%u; "
           "%u bytes in %u buffer%s: %s%s", vr->index, h->flags & HDR_F_NEEDS_CSUM ? "NEEDS_CSUM" : "0",
           type < 5 && gso[type] ? gso[type] : "?", h->gso_type & GSO_ECN ? "|ECN" : "", h->hdr_len, h->gso_size,
           h->csum_start, h->csum_offset, p->len, p->bufs, p->bufs == 1 ? "" : "s", what, segments);
}
