# vhost-xdp: one binary, libc + pthreads only.
#   make            build ./vhost-xdp
#   make count      how long the first reading is, and the product's comment share
#   make test       build everything and run every test (ends with "N passed, N failed, N skipped")
#   make asan       ASan + UBSan build; runs the unit, protocol and hostile tests
#   make valgrind   the protocol test with vhost-xdp under valgrind's memcheck
#   sudo make demo  a QEMU guest pings a veth peer through vhost-xdp and AF_XDP (labs/demo.sh)
#   sudo make bench vhost-xdp against DPDK's vhost backend, same frontend and CPUs (bench/bench.sh)
#   make clean
CC      ?= gcc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Werror -pthread
LDFLAGS += -pthread

SRCS    = main.c vhost_user.c virtqueue.c pmd_loop.c nic_afxdp.c pcap.c fault.c offload.c switch.c
HDRS    = vhost_xdp.h
TESTS   = tests/test_virtqueue tests/test_packed tests/test_ringview tests/test_protocol tests/test_hostile tests/test_trace \
	  tests/afxdp_tool tests/test_tracedecode tests/test_pcap tests/test_mtu_rarp tests/tcpcheck tests/test_offload \
	  tests/exercise_probe tests/test_switch tests/test_adaptive tests/rtt_probe tests/memcompare
FRONTEND = tests/frontend.c tests/frontend.h    # the vhost-user front-end both C protocol tests drive

all: vhost-xdp

vhost-xdp: $(SRCS) $(HDRS)
	$(CC) $(CFLAGS) -o $@ $(SRCS) $(LDFLAGS)

tests/test_virtqueue: tests/test_virtqueue.c tests/unit.h tests/dirty_log.h virtqueue.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/test_virtqueue.c virtqueue.c $(LDFLAGS)

# offload.c alone, on handmade frames and frames the kernel made (tests/test_offload.c).
tests/test_offload: tests/test_offload.c tests/unit.h tests/ref_csum.h offload.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/test_offload.c offload.c $(LDFLAGS)

tests/test_ringview: tests/test_ringview.c virtqueue.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/test_ringview.c virtqueue.c $(LDFLAGS)

tests/test_packed: tests/test_packed.c tests/unit.h tests/dirty_log.h virtqueue.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/test_packed.c virtqueue.c $(LDFLAGS)

tests/afxdp_tool: tests/afxdp_tool.c nic_afxdp.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/afxdp_tool.c nic_afxdp.c $(LDFLAGS)

# A TCP transfer checked byte for byte (tests/test_tcp.sh: the veth peer's end; the guest has its own
# static copy, built by tests/build_guest.sh).
tests/tcpcheck: tests/tcpcheck.c
	$(CC) $(CFLAGS) -o $@ tests/tcpcheck.c $(LDFLAGS)

# Two dumps of a migrated guest's memory compared, the bytes vhost-xdp may write apart (tests/test_migrate.sh).
tests/memcompare: tests/memcompare.c
	$(CC) $(CFLAGS) -o $@ tests/memcompare.c $(LDFLAGS)

tests/test_protocol: tests/test_protocol.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_protocol.c tests/frontend.c $(LDFLAGS)

tests/test_hostile: tests/test_hostile.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_hostile.c tests/frontend.c $(LDFLAGS)

# --pmd-mode adaptive seen from the frontend: asleep on kicks, woken, never stranding a frame.
tests/test_adaptive: tests/test_adaptive.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_adaptive.c tests/frontend.c $(LDFLAGS)

tests/test_trace: tests/test_trace.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_trace.c tests/frontend.c $(LDFLAGS)

tests/test_pcap: tests/test_pcap.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_pcap.c tests/frontend.c $(LDFLAGS)

tests/test_mtu_rarp: tests/test_mtu_rarp.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_mtu_rarp.c tests/frontend.c $(LDFLAGS)

# The labs' exercises seen from the driver's side (tests/test_exercises.sh: kicks, segments, checksums).
tests/exercise_probe: tests/exercise_probe.c tests/ref_csum.h $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/exercise_probe.c tests/frontend.c $(LDFLAGS)

# One frame at a time round --loopback, timed: the backend's wake-up (Lab 3, make bench's rtt rows).
tests/rtt_probe: tests/rtt_probe.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/rtt_probe.c tests/frontend.c $(LDFLAGS)

tests/test_switch: tests/test_switch.c $(FRONTEND)
	$(CC) $(CFLAGS) -o $@ tests/test_switch.c tests/frontend.c $(LDFLAGS)

# The --trace decoder, driven in-process through vu_handle_event() (no socket file).
TRACEDECODE_SRCS = tests/test_tracedecode.c $(filter-out main.c,$(SRCS))   # every room but main()
tests/test_tracedecode: $(TRACEDECODE_SRCS) $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ $(TRACEDECODE_SRCS) $(LDFLAGS)

test: vhost-xdp $(TESTS)
	tests/run.sh

# Sanitizers: the same sources built apart in build-asan/, then the unit,
# protocol, hostile and trace tests run against them (the last two drive the ASan
# binary, which aborts on the first error: the test then fails).
ASAN_FLAGS = -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Werror -pthread -O1 -g \
	-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
asan: $(SRCS) $(HDRS) tests/unit.h tests/dirty_log.h tests/ref_csum.h tests/test_virtqueue.c tests/test_packed.c tests/test_ringview.c tests/test_protocol.c tests/test_hostile.c \
	tests/test_offload.c tests/test_adaptive.c \
	tests/test_trace.c tests/test_tracedecode.c tests/test_pcap.c tests/test_mtu_rarp.c tests/test_switch.c $(FRONTEND)
	mkdir -p build-asan
	$(CC) $(ASAN_FLAGS) -o build-asan/vhost-xdp $(SRCS)
	$(CC) $(ASAN_FLAGS) -I. -o build-asan/test_virtqueue tests/test_virtqueue.c virtqueue.c
	$(CC) $(ASAN_FLAGS) -I. -o build-asan/test_ringview tests/test_ringview.c virtqueue.c
	$(CC) $(ASAN_FLAGS) -I. -o build-asan/test_packed tests/test_packed.c virtqueue.c
	$(CC) $(ASAN_FLAGS) -I. -o build-asan/test_offload tests/test_offload.c offload.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_protocol tests/test_protocol.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_hostile tests/test_hostile.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_adaptive tests/test_adaptive.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_trace tests/test_trace.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_pcap tests/test_pcap.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_mtu_rarp tests/test_mtu_rarp.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_switch tests/test_switch.c tests/frontend.c
	$(CC) $(ASAN_FLAGS) -I. -o build-asan/test_tracedecode $(TRACEDECODE_SRCS)
	build-asan/test_virtqueue && build-asan/test_packed && build-asan/test_offload && build-asan/test_ringview && \
	build-asan/test_protocol build-asan/vhost-xdp && \
	build-asan/test_hostile build-asan/vhost-xdp && build-asan/test_adaptive build-asan/vhost-xdp && \
	build-asan/test_trace build-asan/vhost-xdp && \
	build-asan/test_tracedecode && build-asan/test_pcap build-asan/vhost-xdp && \
	build-asan/test_mtu_rarp build-asan/vhost-xdp && build-asan/test_switch build-asan/vhost-xdp && \
	VX=build-asan/vhost-xdp tests/test_cli.sh

# valgrind's memcheck on the protocol test's back-end: vhost-xdp runs under
# valgrind (VX_BACKEND_WRAPPER, see tests/frontend.h) with every timeout
# VALGRIND_SLOWDOWN times longer.  A memcheck error or a definite leak makes
# valgrind exit with 99, which fails the test's "exits with status 0" check;
# the log lines the test prints at the end hold valgrind's summary.
# --fair-sched=yes: valgrind runs one thread at a time, and with its default
# lock a spinning poll thread can keep the control thread waiting for seconds
# on end (the run took 5 to 14 minutes, and a disconnect once took over 15 s
# to be handled); handed round in turn, the whole run takes seconds.
VALGRIND = valgrind --fair-sched=yes --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --vgdb=no
VALGRIND_SLOWDOWN ?= 30
valgrind: vhost-xdp tests/test_protocol
	VX_BACKEND_WRAPPER='$(VALGRIND)' VX_TIME_SCALE=$(VALGRIND_SLOWDOWN) VX_SHOW_LOG=1 \
	tests/test_protocol ./vhost-xdp

clean:
	rm -rf vhost-xdp $(TESTS) build-asan

.PHONY: all test asan valgrind clean

# The first reading's length and the product's comment share (tests/count_lines.sh says how it counts).
count:
	@tests/count_lines.sh

.PHONY: count

# The demo (labs/demo.sh): installs what is missing (asking first), builds vhost-xdp and the guest,
# runs until Ctrl-C and removes everything it made.  It needs root for the network namespace and the
# XDP program.  DEMO_ARGS=--once stops after a few ping replies (non-interactive: tests, CI).
demo:
	@if [ "$$(id -u)" != 0 ]; then echo "make demo needs root (network namespaces, XDP): run: sudo make demo" >&2; exit 1; fi
	labs/demo.sh $(DEMO_ARGS)

.PHONY: demo

# The benchmark (bench/bench.sh, issue 7): testpmd virtio_user against vhost-xdp and against DPDK's
# own vhost backend, loopback, (as root) forwarding to AF_XDP on a veth, and two frontend ports
# through the VM-to-VM cross-connect, the switch (issue 15) and DPDK, back to back; prints a
# table of Mpps, ratios and vhost-xdp's RSS.  A measurement, never a test.  A few minutes; knobs
# (BENCH_SECS, BENCH_SAMPLES, BENCH_SIZES, ...) are listed at the top of bench/bench.sh.  Then the
# TCP rows (bench/bench_tcp.sh, issue 13): QEMU guests' TCP through vhost-xdp with and without the
# offloads and through QEMU's tap backend (about 4 minutes; knobs BENCH_TCP_* at its top).  Last, the
# ring code's cost (bench/ring_cost.sh, as make bench-cost, 10 s): its second table is the loopback
# rate of the ring code with live migration's dirty log on against off (issue 16).
bench: vhost-xdp tests/tcpcheck tests/rtt_probe
	bench/bench.sh
	bench/bench_tcp.sh
	bench/ring_cost.sh

.PHONY: bench

# The ring code's cost counted, not timed (bench/ring_cost.sh): instructions per packet, guest to
# guest, split and packed, 64 and 1518 B, under callgrind; the same on every run, so a restructuring
# can show it did no harm on a machine too noisy for rates.  COST_VS=REV compares with a revision.
bench-cost:
	bench/ring_cost.sh $(COST_VS)

.PHONY: bench-cost

# Fuzzing (issue 4): four libFuzzer targets, built with clang (a test tool only,
# not a product dependency) and ASan + UBSan into build-fuzz/.
#   make fuzz          replay tests/fuzz/regressions/, then fuzz each target for
#                      FUZZ_SECONDS (default 60) from the seeds in tests/fuzz/corpus/;
#                      prints executions, coverage and crashes; fails on any crash
#   make fuzz-long     the same, FUZZ_RUNS (10 million) executions per target
#   make fuzz-seeds    regenerate tests/fuzz/corpus/ (tests/fuzz/make_seeds.c)
FUZZ_CC      ?= clang
comma        := ,
FUZZ_SECONDS ?= 60
FUZZ_FLAGS    = -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Werror -pthread -O1 -g -I. \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_VU_SRCS  = tests/fuzz/fuzz_vhost_user.c vhost_user.c virtqueue.c pmd_loop.c nic_afxdp.c pcap.c fault.c offload.c switch.c
FUZZ_VQ_SRCS  = tests/fuzz/fuzz_virtqueue.c virtqueue.c offload.c
FUZZ_OF_SRCS  = tests/fuzz/fuzz_offload.c offload.c

# The target plays the connection in memory, lends the fds it sends from pools
# and counts the product's mappings: the product's recvmsg/send/close/mmap/munmap
# are linked to the target's (tests/fuzz/fuzz_vhost_user.c, "The wire"), and so
# are fstat/readlink/fcntl/write, answered on pooled fds as the kernel would
# ("The kernel's answers on pooled fds").
FUZZ_VU_WRAP  = -Wl,--wrap=recvmsg,--wrap=send,--wrap=close,--wrap=mmap,--wrap=munmap \
	-Wl,--wrap=fstat,--wrap=readlink,--wrap=fcntl,--wrap=write
# The target's own code is built without coverage instrumentation: its
# checks after every step would otherwise cost more than the product's code
# (profiled) and count as "new coverage" that says nothing about the product.
build-fuzz/fuzz_vhost_user: $(FUZZ_VU_SRCS) $(HDRS) tests/fuzz/fuzz_format.h
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(subst -fsanitize=fuzzer$(comma),-fsanitize=,$(FUZZ_FLAGS)) -c -o build-fuzz/fuzz_vhost_user.o tests/fuzz/fuzz_vhost_user.c
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ build-fuzz/fuzz_vhost_user.o $(filter-out tests/fuzz/fuzz_vhost_user.c,$(FUZZ_VU_SRCS)) $(FUZZ_VU_WRAP)

build-fuzz/fuzz_virtqueue: $(FUZZ_VQ_SRCS) $(HDRS) tests/fuzz/fuzz_format.h
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(FUZZ_VQ_SRCS)

build-fuzz/fuzz_offload: $(FUZZ_OF_SRCS) $(HDRS) tests/fuzz/fuzz_format.h tests/ref_csum.h
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(FUZZ_OF_SRCS)

# switch.c's table and forwarding decision (the target includes switch.c and stubs its ports' I/O).
build-fuzz/fuzz_switch: tests/fuzz/fuzz_switch.c switch.c $(HDRS)
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_switch.c

fuzz: build-fuzz/fuzz_vhost_user build-fuzz/fuzz_virtqueue build-fuzz/fuzz_offload build-fuzz/fuzz_switch
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

# The long run: FUZZ_RUNS executions of each target (10 million: tens of
# minutes here, see tests/fuzz/README.md), for real depth; CI keeps the short one.
FUZZ_RUNS ?= 10000000
fuzz-long: build-fuzz/fuzz_vhost_user build-fuzz/fuzz_virtqueue build-fuzz/fuzz_offload build-fuzz/fuzz_switch
	FUZZ_RUNS=$(FUZZ_RUNS) tests/fuzz/run.sh

fuzz-seeds: tests/fuzz/make_seeds.c tests/fuzz/fuzz_format.h $(HDRS)
	@mkdir -p build-fuzz
	$(CC) -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g -I. -o build-fuzz/make_seeds tests/fuzz/make_seeds.c
	build-fuzz/make_seeds tests/fuzz/corpus

.PHONY: fuzz fuzz-long fuzz-seeds
