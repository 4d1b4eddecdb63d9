"""Gunicorn settings for the aiohttp peer, as the Python team deploys it (SPEC §7).

The bind address comes from PEER_BIND (the runner sets it); access logging is off for
every peer in the benchmark, so logs are not what is measured.
"""
import os

bind = os.environ.get("PEER_BIND", "127.0.0.1:10080")
workers = int(os.environ.get("PEER_WORKERS", "4"))
worker_class = "aiohttp.GunicornUVLoopWebWorker"
keepalive = 60          # aiohttp's keepalive_timeout comes from this
timeout = 120
graceful_timeout = 30
backlog = 2048
worker_tmp_dir = "/dev/shm"
accesslog = None
errorlog = "-"
loglevel = "warning"
proc_name = "fpb-aiohttp"
