#!/usr/bin/env bash
# tests/test_migrate_mrgoff.sh - tests/test_migrate.sh with the guests' virtio-net-pci,mrg_rxbuf=off: the same live
# migration, where vhost-xdp marks RX chains of one buffer per packet, not merged (no VIRTIO_NET_F_MRG_RXBUF).
VX_MIGRATE_NIC=,mrg_rxbuf=off exec "$(dirname "$0")/test_migrate.sh"
