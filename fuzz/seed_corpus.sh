#!/usr/bin/env bash
# Seeds the decode_x86 fuzz corpus with real instructions: every instruction of the C
# fixtures, compiled with gcc, and the first instructions of glibc's .text.
#
# Each instruction becomes one file in fuzz/corpus/decode_x86/, named by its hex bytes, in
# the fuzz target's input layout: a length byte (instruction length - 1) and the bytes. The
# registers that follow in the layout are left to the fuzzer.
#
# Usage: fuzz/seed_corpus.sh [max glibc instructions, default 50000]
# Needs gcc and objdump (binutils).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus="$repo/fuzz/corpus/decode_x86"
libc_limit="${1:-50000}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$corpus"

# Prints the hex bytes of each instruction in the .text section of an ELF file, one line
# per instruction.
instructions() {
    objdump -d --wide --section=.text "$1" |
        awk -F'\t' '/^ *[0-9a-f]+:\t/ { gsub(/ /, "", $2); if ($2 != "") print $2 }'
}

# Writes one corpus file per input line of hex bytes.
write_seeds() {
    local hex escaped i count=0
    while read -r hex; do
        local length=$(( ${#hex} / 2 ))
        (( length >= 1 && length <= 15 )) || continue
        printf -v escaped '\\x%02x' $(( length - 1 ))
        for (( i = 0; i < ${#hex}; i += 2 )); do
            escaped+="\\x${hex:i:2}"
        done
        printf "$escaped" > "$corpus/$hex"
        count=$(( count + 1 ))
    done
    echo "$count"
}

# The fixtures: the repository's own, and the acceptance fixtures beside the repository if
# they exist. Each is compiled twice, without and with AVX2 and AVX-512, for both encodings.
# A fixture that uses vector intrinsics builds only with the second set of flags.
sources=("$repo"/tests/fixtures/*.c)
if [[ -d "$repo/../shared/cases/fixtures" ]]; then
    sources+=("$repo"/../shared/cases/fixtures/*.c)
fi
for source in "${sources[@]}"; do
    name="$(basename "$source" .c)"
    if gcc -O2 -shared -fPIC -o "$scratch/$name.so" "$source" 2>/dev/null; then
        instructions "$scratch/$name.so"
    fi
    gcc -O2 -shared -fPIC -mavx2 -mavx512f -mavx512bw -mavx512vl \
        -o "$scratch/$name.avx512.so" "$source"
    instructions "$scratch/$name.avx512.so"
done | sort -u | write_seeds > "$scratch/fixture-count"
echo "fixtures: $(cat "$scratch/fixture-count") instructions written"

libc="$(gcc -print-file-name=libc.so.6)"
# head closes the pipe early, so objdump's broken-pipe exit status is expected here.
{ instructions "$libc" || true; } | head -n "$libc_limit" | sort -u | write_seeds > "$scratch/libc-count"
echo "glibc: $(cat "$scratch/libc-count") distinct instructions written"
echo "corpus: $(find "$corpus" -type f | wc -l) files in $corpus"
