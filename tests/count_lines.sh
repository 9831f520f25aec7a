#!/usr/bin/env bash
# tests/count_lines.sh - how long the first reading is, and how heavily the product is commented.
#
#   tests/count_lines.sh          one row per product file, then the totals
#   make count                    the same
#
# How it counts (the README's "Reading order" says the same):
#   - A line is blank, a comment line or a code line.  A comment line holds nothing but comment:
#     a line inside /* ... */, or one that starts with /* or //.  A code line is any other
#     non-blank line, including code with a comment after it.
#   - The first reading is the five files of the design card plus the header they share
#     (vhost_xdp.h, vhost_user.c, virtqueue.c, pmd_loop.c, nic_afxdp.c, main.c), each up to its
#     line "/* === Second reading: ..." (or to its end if it has none).  Everything after that
#     line, and every other .c/.h file at the top level, is second reading.
#   - The comment share is comment lines / (comment lines + code lines) over every product file.
# Exit status 1 if the first reading is over FIRST_MAX code lines (3000) or the comment share is
# under COMMENT_MIN percent (35): tests/test_shape.sh runs this, so the shape cannot drift.
set -u
cd "$(dirname "$0")/.."
FIRST_MAX=${FIRST_MAX:-3000}
COMMENT_MIN=${COMMENT_MIN:-35}
first_files="vhost_xdp.h vhost_user.c virtqueue.c pmd_loop.c nic_afxdp.c main.c"

# count FILE PART: "code comment" for PART = first (up to the banner), second (after it) or all
count() {
    awk -v part="$2" '
      /^\/\* =+ Second reading/ { second = 1 }
      part != "all" && (part == "first") == second { next }
      { line = $0; sub(/^[ \t]+/, "", line) }
      line == "" { next }
      inblk { comment++; if (line ~ /\*\//) inblk = 0; next }
      line ~ /^\/\*/ { comment++; if (line !~ /\*\//) inblk = 1; next }
      line ~ /^\/\// { comment++; next }
      { code++ }
      END { print code + 0, comment + 0 }' "$1"
}

printf '%-14s %22s %22s\n' "" "first reading" "second reading"
printf '%-14s %11s %10s %11s %10s\n' file code comment code comment
fc=0 fm=0 sc=0 sm=0
for f in $first_files $(ls *.c *.h | grep -vxF -f <(tr ' ' '\n' <<<"$first_files")); do
    case " $first_files " in
    *" $f "*) read c1 m1 < <(count "$f" first); read c2 m2 < <(count "$f" second) ;;
    *)        c1=0 m1=0; read c2 m2 < <(count "$f" all) ;;
    esac
    printf '%-14s %11d %10d %11d %10d\n' "$f" "$c1" "$m1" "$c2" "$m2"
    fc=$((fc + c1)) fm=$((fm + m1)) sc=$((sc + c2)) sm=$((sm + m2))
done
total_code=$((fc + sc)) total_comment=$((fm + sm))
share=$(( 100 * total_comment / (total_code + total_comment) ))
printf '%-14s %11d %10d %11d %10d\n' total "$fc" "$fm" "$sc" "$sm"
echo "first reading: $fc code lines (at most $FIRST_MAX)"
echo "comments: $total_comment of $((total_code + total_comment)) lines = $share% (at least $COMMENT_MIN%)"
[ "$fc" -le "$FIRST_MAX" ] && [ "$share" -ge "$COMMENT_MIN" ]
