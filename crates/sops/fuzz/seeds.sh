#!/bin/sh
# Seeds the fuzz corpus with the committed vectors: first byte = format (0 yaml, 1 json,
# 2 dotenv, 3 ini, 4 binary), as fuzz_targets/parse.rs reads it.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/parse
for f in ../tests/testdata/*; do
    case "$f" in
        *.yaml) b='\000' ;; *.json) b='\001' ;; *.env) b='\002' ;; *.ini) b='\003' ;; *) continue ;;
    esac
    { printf "$b"; cat "$f"; } > "corpus/parse/$(basename "$f")"
done
