#!/usr/bin/env bash
# tests/test_migrate_packed.sh - tests/test_migrate.sh with the guests' virtio-net-pci,packed=on: the same live
# migration, where vhost-xdp marks a packed ring's used descriptors (virtio 1.2 §2.8).
VX_MIGRATE_NIC=,packed=on exec "$(dirname "$0")/test_migrate.sh"
