# vhost-xdp: one binary, libc + pthreads only.
#   make            build ./vhost-xdp
#   make test       build everything and run every test (ends with "N passed, N failed, N skipped")
#   make asan       ASan + UBSan build; runs the unit and protocol tests
#   make clean
CC      ?= gcc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread
LDFLAGS += -pthread

SRCS    = main.c vhost_user.c virtqueue.c pmd_loop.c nic_afxdp.c
HDRS    = vhost_xdp.h
TESTS   = tests/test_virtqueue tests/test_protocol tests/afxdp_tool

all: vhost-xdp

vhost-xdp: $(SRCS) $(HDRS)
	$(CC) $(CFLAGS) -o $@ $(SRCS) $(LDFLAGS)

tests/test_virtqueue: tests/test_virtqueue.c virtqueue.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/test_virtqueue.c virtqueue.c $(LDFLAGS)

tests/afxdp_tool: tests/afxdp_tool.c nic_afxdp.c $(HDRS)
	$(CC) $(CFLAGS) -I. -o $@ tests/afxdp_tool.c nic_afxdp.c $(LDFLAGS)

tests/test_protocol: tests/test_protocol.c
	$(CC) $(CFLAGS) -o $@ tests/test_protocol.c $(LDFLAGS)

test: vhost-xdp $(TESTS)
	tests/run.sh

# Sanitizers: the same sources built apart in build-asan/, then the unit and
# protocol tests run against them (the protocol test drives the ASan binary).
ASAN_FLAGS = -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread -O1 -g \
	-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
asan: $(SRCS) $(HDRS) tests/test_virtqueue.c tests/test_protocol.c
	mkdir -p build-asan
	$(CC) $(ASAN_FLAGS) -o build-asan/vhost-xdp $(SRCS)
	$(CC) $(ASAN_FLAGS) -I. -o build-asan/test_virtqueue tests/test_virtqueue.c virtqueue.c
	$(CC) $(ASAN_FLAGS) -o build-asan/test_protocol tests/test_protocol.c
	build-asan/test_virtqueue && build-asan/test_protocol build-asan/vhost-xdp

clean:
	rm -rf vhost-xdp $(TESTS) build-asan

.PHONY: all test asan clean
