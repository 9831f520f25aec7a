/*
 * tests/guest_ethstats.c - `ethtool -S IFACE` for the test guest, which has
 * busybox but no ethtool.
 *
 *   ethstats IFACE          prints, as ethtool -S does:
 *                             NIC statistics:
 *                                  rx_queue_0_packets: 123
 *                                  ...
 *
 * Where it sits: tests/build_guest.sh compiles it with `gcc -static -Os`
 * into the guest's initramfs as /bin/ethstats; the guest's /init
 * (vxtest=mqping) prints the per-queue packet counters with it, so that
 * tests/test_qemu_mq.sh can see which virtqueues of a multiqueue virtio-net
 * device carried traffic.  The Linux virtio_net driver counts per queue
 * (rx_queue_N_packets, tx_queue_N_packets, ...) but shows those counters
 * only through ethtool's statistics, not in /sys/class/net/IFACE/statistics,
 * which has the device totals.
 *
 * How ethtool asks (linux/ethtool.h; all three through ioctl(SIOCETHTOOL)
 * on any socket, struct ifreq naming the interface, ifr_data pointing at a
 * request that starts with its ETHTOOL_* command):
 *   1. ETHTOOL_GSSET_INFO  how many strings the ETH_SS_STATS set has (n);
 *   2. ETHTOOL_GSTRINGS    the n names, ETH_GSTRING_LEN (32) bytes each;
 *   3. ETHTOOL_GSTATS      the n values, u64 each, in the same order.
 * Read in that order: main() does the three steps.
 */
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>

/* One SIOCETHTOOL request: `cmd` points at a struct whose first u32 is the
 * ETHTOOL_* command; the kernel reads and writes it in place. */
static int ethtool(int sock, const char *ifname, void *cmd)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    ifr.ifr_data = cmd;
    return ioctl(sock, SIOCETHTOOL, &ifr);
}

int main(int argc, char **argv)
{
    if (argc != 2 || strlen(argv[1]) >= IFNAMSIZ) {
        fprintf(stderr, "usage: ethstats IFACE   (the statistics ethtool -S IFACE shows)\n");
        return 2;
    }
    const char *ifname = argv[1];
    int sock = socket(AF_INET, SOCK_DGRAM, 0);  /* any socket carries the ioctl */
    if (sock < 0) {
        fprintf(stderr, "ethstats: socket: %s\n", strerror(errno));
        return 1;
    }

    /* 1. The size of the statistics string set: the request names the sets
     * it asks about in sset_mask, the kernel answers one u32 per set in
     * data[] and clears the bits of sets the driver does not have. */
    uint64_t sset_buf[(sizeof(struct ethtool_sset_info) + sizeof(uint32_t) + 7) / 8] = { 0 };
    struct ethtool_sset_info *sset = (struct ethtool_sset_info *)sset_buf;
    sset->cmd = ETHTOOL_GSSET_INFO;
    sset->sset_mask = 1ull << ETH_SS_STATS;
    if (ethtool(sock, ifname, sset) < 0) {
        fprintf(stderr, "ethstats: %s: ETHTOOL_GSSET_INFO: %s\n", ifname, strerror(errno));
        return 1;
    }
    uint32_t n = sset->sset_mask & (1ull << ETH_SS_STATS) ? sset->data[0] : 0;
    if (n == 0 || n > 100000) {
        fprintf(stderr, "ethstats: %s: the driver has no statistics for ethtool (%u)\n", ifname, n);
        return 1;
    }

    /* 2. The names and 3. the values: each request is its header followed
     * by the n entries. */
    struct ethtool_gstrings *names = calloc(1, sizeof(*names) + (size_t)n * ETH_GSTRING_LEN);
    struct ethtool_stats *values = calloc(1, sizeof(*values) + (size_t)n * sizeof(uint64_t));
    if (!names || !values) {
        fprintf(stderr, "ethstats: out of memory for %u statistics\n", n);
        return 1;
    }
    names->cmd = ETHTOOL_GSTRINGS;
    names->string_set = ETH_SS_STATS;
    names->len = n;
    values->cmd = ETHTOOL_GSTATS;
    values->n_stats = n;
    if (ethtool(sock, ifname, names) < 0 || ethtool(sock, ifname, values) < 0) {
        fprintf(stderr, "ethstats: %s: ETHTOOL_GSTRINGS/GSTATS: %s\n", ifname, strerror(errno));
        return 1;
    }
    /* The kernel says how many it filled; a set that changed size between
     * the requests (queues added) gives the smaller count. */
    if (names->len < n)
        n = names->len;
    if (values->n_stats < n)
        n = values->n_stats;

    printf("NIC statistics:\n");
    for (uint32_t i = 0; i < n; i++) {
        const char *name = (const char *)names->data + (size_t)i * ETH_GSTRING_LEN;
        printf("     %.*s: %" PRIu64 "\n", ETH_GSTRING_LEN, name, (uint64_t)values->data[i]);
    }
    free(names);
    free(values);
    close(sock);
    return 0;
}
