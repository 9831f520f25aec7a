#!/usr/bin/env bash
# tests/test_migrate_packed.sh - tests/test_migrate.sh with the guests' virtio-net-pci,packed=on,
# mrg_rxbuf=off,guest_announce=off: the same live migration, where vhost-xdp marks what the other
# layouts write: a packed ring's used descriptors (virtio 1.2 §2.8) and RX chains of one buffer per
# packet (no VIRTIO_NET_F_MRG_RXBUF); and, with no GUEST_ANNOUNCE, QEMU announces the guest through
# the backend (SEND_RARP), which the switch sends from the guest's new port.  The three together in
# one run, to keep make test short; each alone:
#   sudo VX_MIGRATE_NIC=,packed=on tests/test_migrate.sh
#   sudo VX_MIGRATE_NIC=,mrg_rxbuf=off tests/test_migrate.sh
#   sudo VX_MIGRATE_NIC=,guest_announce=off tests/test_migrate.sh
VX_MIGRATE_NIC=,packed=on,mrg_rxbuf=off,guest_announce=off exec "$(dirname "$0")/test_migrate.sh"
