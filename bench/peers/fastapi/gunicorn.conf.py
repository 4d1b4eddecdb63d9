"""Gunicorn settings for the FastAPI peer: the seed plan's gunicorn_fastapi.conf.py.

Kept from the plan: 4 UvicornWorker workers, worker_connections 1000, timeout 120,
keepalive 5, worker_tmp_dir /dev/shm, preload_app, graceful_timeout 30.
Changed: bind from PEER_BIND; no access log (no peer logs in the benchmark);
max_requests (the plan's 1000 ± 50 worker recycling) is off unless PEER_MAX_REQUESTS
is set, since recycling mid-run drops keep-alive connections and would count against it.
"""
import os

bind = os.environ.get("PEER_BIND", "127.0.0.1:10080")
workers = int(os.environ.get("PEER_WORKERS", "4"))
worker_class = "uvicorn.workers.UvicornWorker"
worker_connections = 1000
timeout = 120
keepalive = 5
worker_tmp_dir = "/dev/shm"
max_requests = int(os.environ.get("PEER_MAX_REQUESTS", "0"))
max_requests_jitter = 50 if max_requests else 0
accesslog = None
errorlog = "-"
loglevel = "warning"
proc_name = "fpb-fastapi"
preload_app = True
graceful_timeout = 30
backlog = 2048
