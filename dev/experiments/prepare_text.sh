#!/usr/bin/env bash
# prepare_text.sh — the English text of the paper-mini experiments: the Collaborative International
# Dictionary of English (GCIDE: Webster's Revised Unabridged Dictionary of 1913 + WordNet 1.5
# glosses; GNU GPL, version 2 or later), from Debian's package registry (package dict-gcide).
#
#     bash dev/experiments/prepare_text.sh          # -> dev/experiments/data/gcide.txt (30.0 MB)
#
# Downloads the .deb with `apt-get download` (no root, nothing installed), unpacks the dictd
# database and keeps the entries as plain text: the database header entries, the source tags
# ("[1913 Webster]", "[PJC]", ...) and the pronunciation markup (\Ab*do"men\) are dropped, the
# indentation too. The trainers read the file with `--bytes -i dev/experiments/data/gcide.txt`
# (vocab 256 + the needle symbols; the last 10% is the val split). Records the package version and
# the file's sha256 in dev/experiments/data/SOURCE, and checks the text against gcide.sha256 (the
# text the committed results were measured on, from dict-gcide 0.48.5+nmu2): another text is an
# error, since the results would not be comparable. A text already there is only checked.
set -euo pipefail
cd "$(dirname "$0")"
out=data/gcide.txt
# check_text: the text's sha256 against the committed one
check_text() {
    local want got
    want=$(cut -d' ' -f1 gcide.sha256)
    got=$(sha256sum "$out" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "error: prepare_text.sh: $out has sha256 $got, the results were measured on $want (gcide.sha256); another dict-gcide version? remove $out to fetch it again" >&2
        exit 1
    fi
}
if [ -s "$out" ]; then check_text; echo "$out: already there ($(wc -c < "$out") bytes), sha256 as in gcide.sha256"; exit 0; fi
command -v apt-get > /dev/null || { echo "error: prepare_text.sh: needs apt-get (Debian/Ubuntu) to fetch dict-gcide" >&2; exit 1; }
mkdir -p data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download dict-gcide > /dev/null 2>&1) || { echo "error: prepare_text.sh: 'apt-get download dict-gcide' failed (network? apt sources?)" >&2; exit 1; }
deb=$(ls "$tmp"/dict-gcide_*.deb)
dpkg-deb -x "$deb" "$tmp/x"
# entries start at the first headword after the "00-database-*" header entries and the GPL preamble
# of file 1 ("Begin file 1 of 26"); from there: drop source tags, pronunciations, indentation
gzip -dc "$tmp/x/usr/share/dictd/gcide.dict.dz" \
    | awk 'started { print; next } /^A \\/ { started = 1; print }' \
    | sed -e '/^ *\[[^]]*\] *$/d' -e 's/ *\\[^\\]*\\//g' -e 's/^ *//' > "$out.tmp"
mv "$out.tmp" "$out"
check_text
{
    echo "dict-gcide $(dpkg-deb -f "$deb" Version) (Debian package registry), GNU GPL version 2 or later"
    echo "sha256 $(sha256sum "$out" | cut -d' ' -f1)  gcide.txt"
} > data/SOURCE
echo "wrote $out ($(wc -c < "$out") bytes, sha256 as in gcide.sha256): $(head -n 1 data/SOURCE)"
