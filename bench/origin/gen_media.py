#!/usr/bin/env python3
"""Generate the origin's media tree for the benchmark.

Layout (the key path of SPEC §2.1 is the folder after the date, i.e. the video id):

    <out>/vod/2024-05-01/v0001/enc.key                16 bytes
    <out>/vod/2024-05-01/v0001/<rendition>/index.m3u8  VOD playlist, 10 s segments
    <out>/vod/2024-05-01/v0001/<rendition>/seg_00001.ts …

Renditions model what an adaptive player picks on each kind of link (sizes for 10 s):

    hi   1.6 Mbit/s ≈ 2.0 MB   (normal links)
    mid  0.5 Mbit/s ≈ 0.62 MB  (poor links)
    lo   0.2 Mbit/s ≈ 0.25 MB  (very poor links)

Segment bodies are random bytes laid out in 188-byte MPEG-TS packets (sync byte 0x47),
incompressible like real video. Sizes vary ±10 % per segment, deterministically
(--seed), so every run sees the same tree. The tree is regenerated only when its
manifest (`.manifest.json`) differs from the requested parameters.
"""
import argparse
import json
import os
import random
import shutil
import sys

DATE = "2024-05-01"
TS_PACKET = 188


def rendition_specs(args):
    """(name, bytes per segment) for each requested rendition."""
    out = []
    for item in args.renditions.split(","):
        name, kbit = item.split(":")
        out.append((name, int(int(kbit) * 1000 / 8 * args.segment_seconds * args.size_scale)))
    return out


def make_segment(rng, pool, size):
    """Bytes of one TS-like segment of about `size` bytes (a whole number of packets)."""
    packets = max(1, size // TS_PACKET)
    start = rng.randrange(0, len(pool) - packets * (TS_PACKET - 1))
    body = bytearray(packets * TS_PACKET)
    view = memoryview(pool)
    for i in range(packets):
        off = start + i * (TS_PACKET - 1)
        body[i * TS_PACKET] = 0x47
        body[i * TS_PACKET + 1:(i + 1) * TS_PACKET] = view[off:off + TS_PACKET - 1]
    return bytes(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="root folder of the origin")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--segments", type=int, default=12, help="segments per rendition")
    ap.add_argument("--segment-seconds", type=float, default=10.0)
    ap.add_argument("--renditions", default="hi:1600,mid:500,lo:200", help="name:kbit/s,…")
    ap.add_argument("--size-scale", type=float, default=1.0, help="multiply segment sizes (smoke: 0.05)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    manifest = {k: getattr(args, k) for k in ("videos", "segments", "segment_seconds", "renditions", "size_scale", "seed")}
    mpath = os.path.join(args.out, ".manifest.json")
    try:
        with open(mpath) as f:
            if json.load(f) == manifest:
                print(f"media tree up to date in {args.out}")
                return 0
    except (OSError, ValueError):
        pass
    root = os.path.join(args.out, "vod")
    if os.path.isdir(root):
        shutil.rmtree(root)
    rng = random.Random(args.seed)
    specs = rendition_specs(args)
    biggest = max(s for _, s in specs)
    # A pool of random bytes twice the largest segment; segments are random windows of it.
    pool = rng.randbytes(int(biggest * 1.2) * 2 + 4096)
    total = 0
    for v in range(1, args.videos + 1):
        vid = f"v{v:04d}"
        vdir = os.path.join(root, DATE, vid)
        os.makedirs(vdir, exist_ok=True)
        with open(os.path.join(vdir, "enc.key"), "wb") as f:
            f.write(rng.randbytes(16))
        for name, size in specs:
            rdir = os.path.join(vdir, name)
            os.makedirs(rdir, exist_ok=True)
            lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(round(args.segment_seconds))}",
                     "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD",
                     f'#EXT-X-KEY:METHOD=AES-128,URI="/vod/{DATE}/{vid}/enc.key",IV=0x{rng.randbytes(16).hex()}']
            for s in range(1, args.segments + 1):
                seg = make_segment(rng, pool, int(size * rng.uniform(0.9, 1.1)))
                fname = f"seg_{s:05d}.ts"
                with open(os.path.join(rdir, fname), "wb") as f:
                    f.write(seg)
                total += len(seg)
                lines += [f"#EXTINF:{args.segment_seconds:.3f},", fname]
            lines.append("#EXT-X-ENDLIST")
            with open(os.path.join(rdir, "index.m3u8"), "w") as f:
                f.write("\n".join(lines) + "\n")
    with open(mpath, "w") as f:
        json.dump(manifest, f)
    print(f"generated {args.videos} videos x {len(specs)} renditions x {args.segments} segments, "
          f"{total / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
