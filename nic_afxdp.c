/*
 * nic_afxdp.c - the NIC side of the data path, through an AF_XDP socket.
 *
 * Not yet: this is where the XDP program (hand-written BPF loaded with
 * bpf(2)), the XSKMAP, the UMEM and its four rings will live (issue #3).
 * Until then --iface says so and vhost-xdp runs with --loopback only.
 */
#include "vhost_xdp.h"

int nic_afxdp_open(const char *ifname)
{
    vx_log("--iface %s: the AF_XDP port is not written yet; use --loopback", ifname);
    return -1;
}
