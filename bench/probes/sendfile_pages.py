#!/usr/bin/env python3
"""Sender CPU of sendfile(2) from a 2 MiB memfd to a loopback reader, with 4 KiB pages
(collapse=0) or collapsed into a huge page (collapse=1). Usage: sendfile_pages.py SIZE 0|1"""
import os, ctypes, sys, socket, time, resource
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
H = 2*1024*1024
SZ = int(sys.argv[1]) if len(sys.argv)>1 else H
collapse = sys.argv[2] == "1"
fd = os.memfd_create("x", os.MFD_ALLOW_SEALING)
os.write(fd, os.urandom(SZ))
PROT_READ=1; MAP_SHARED=1; MAP_PRIVATE=2; MAP_ANON=0x20; MAP_FIXED=0x10
maplen = (SZ + 4095)//4096*4096
res = libc.mmap(None, maplen + H, 0, MAP_PRIVATE|MAP_ANON, -1, 0)
al = (res + H - 1)//H*H
a = libc.mmap(al, maplen, PROT_READ, MAP_SHARED|MAP_FIXED, fd, 0)
if collapse:
    r = libc.madvise(a, maplen, 25)
    print("collapse", r, os.strerror(ctypes.get_errno()) if r else "")
print([l for l in open("/proc/meminfo") if "ShmemHuge" in l or "FilePmd" in l])
ls = socket.socket(); ls.bind(("127.0.0.1",0)); ls.listen()
port = ls.getsockname()[1]
pid = os.fork()
if pid == 0:
    c = socket.create_connection(("127.0.0.1",port)); buf = bytearray(1<<20)
    while c.recv_into(buf): pass
    os._exit(0)
s,_ = ls.accept(); N=3000
t0=time.time(); r0=resource.getrusage(resource.RUSAGE_SELF)
for i in range(N):
    off=0
    while off<SZ: off += os.sendfile(s.fileno(), fd, off, SZ-off)
r1=resource.getrusage(resource.RUSAGE_SELF); t1=time.time()
s.close(); os.waitpid(pid,0)
cpu=(r1.ru_utime-r0.ru_utime)+(r1.ru_stime-r0.ru_stime)
print(f"size {SZ} collapse={collapse}: {N/(t1-t0):.0f} sends/s, sender CPU {cpu/N*1e6:.0f} us per send")
