#!/bin/sh
# Regenerates the bundled sample stream used by the quick start (`fileproxy serve`
# with no config): a 4-second, 160x90 AES-128 encrypted HLS stream in ~1 s segments,
# plus a poster image. Key path of these files is `demo` (SPEC §2.1).
#
# Needs ffmpeg (Debian: apt-get install -y ffmpeg). Run from anywhere:
#   sh sample-media/make-sample.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="$here/media/demo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rm -rf "$out"
mkdir -p "$out"

# 16 random bytes: the AES-128 content key, served as enc.key next to the playlist.
head -c 16 /dev/urandom > "$out/enc.key"

# key info file: URI written in the playlist, then the key file ffmpeg reads.
printf 'enc.key\n%s\n' "$out/enc.key" > "$work/keyinfo"

ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc=size=160x90:rate=15:duration=4" \
  -c:v libx264 -preset veryfast -profile:v baseline -pix_fmt yuv420p \
  -g 15 -keyint_min 15 -sc_threshold 0 -b:v 100k \
  -f hls -hls_time 1 -hls_list_size 0 -hls_playlist_type vod \
  -hls_key_info_file "$work/keyinfo" \
  -hls_segment_filename "$out/seg%d.ts" \
  "$out/index.m3u8"

ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc=size=320x180" -frames:v 1 "$out/poster.png"

ls -l "$out"
