#!/usr/bin/env bash
# tests/test_shape.sh - the reading edition's promises about the product's shape, checked so that they
# cannot drift as the code grows (README, "Reading order"):
#   - the first reading is at most 3,000 code lines, and comments are at least 35% of the product's
#     lines (tests/count_lines.sh counts both, and says how);
#   - no function of the product is longer than 80 lines, and main() is at most 40: a function is
#     counted from its opening "{" in column 0 to its closing "}" in column 0, both included;
#   - nothing sends a reader to a file outside the repository;
#   - the product builds with -Wshadow (in the Makefile's CFLAGS, and the build is warning-free:
#     -Werror).
set -u
. "$(dirname "$0")/lib.sh"
cd "$TESTS_DIR/.." || exit 1

out=$(tests/count_lines.sh 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
check "tests/count_lines.sh: first reading at most 3000 code lines, comments at least 35% (exit $rc)" [ "$rc" -eq 0 ]

# func_lengths: "FILE:NAME LINES" for every function definition of the product.
func_lengths() {
    local f
    for f in *.c; do
        awk -v file="$f" '
          /^[A-Za-z_].*\(/ && !/;[ \t]*$/ { sig = $0 }           # a definition starts at column 0
          /^\{/ { start = NR; name = sig; sub(/\(.*/, "", name); n = split(name, w, /[ \t*]+/); name = w[n] }
          /^\}/ && start { printf "%s:%s %d\n", file, name, NR - start + 1; start = 0 }' "$f"
    done
}
long=$(func_lengths | awk '{ split($1, a, ":"); if ($2 > 80 || (a[2] == "main" && $2 > 40)) print }')
nfuncs=$(func_lengths | wc -l)
check "no function over 80 lines, main() at most 40 (of $nfuncs functions; over: ${long:-none})" [ -z "$long" ]
check "the function counter found main() (sanity: $(func_lengths | grep ':main ' || echo none))" \
    eval 'func_lengths | grep -q "^main.c:main "'

# (The pattern is spelled so that it does not match itself.)
refs=$(git grep -n -i -E 'DESIGN[.]md|STYLE[.]md|shared/refer[e]nce|[.][.]/shared' -- . 2>/dev/null)
check "no file sends a reader outside the repository (${refs:-none})" [ -z "$refs" ]

check "CFLAGS has -Wshadow (and -Werror)" eval 'grep -q "^CFLAGS  += .*-Wshadow.*-Werror" Makefile'

done_testing
