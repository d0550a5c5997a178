"""How long can a hostile web hold `download_images`? Drip, hang and slow-header servers among good ones.

    PYTHONPATH=. python benchmarks/hostile_downloads.py            # the DownloadConfig defaults (~2 minutes)
    PYTHONPATH=. python benchmarks/hostile_downloads.py --test     # the test settings (deadline 1.5 s, grace 0.3 s)
    PYTHONPATH=. python benchmarks/hostile_downloads.py --deadline 30 --min-rate 2048 --json out.json

Everything runs on this machine: one HTTP server per URL on 127.0.0.1, 127.0.0.2, ... (one host each, so
per-host politeness does not serialise them), fetched with `allow_networks=('127.0.0.0/8',)`. Reports how long
each URL takes alone (`fetch`, all URLs at once in threads) and how long the whole list takes through
`download_images` (4 workers), with the status recorded for each URL.
"""
import argparse, io, json, platform, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image
from skimage import data as skdata

from cyclegan_pws.io import read_jsonl
from cyclegan_pws.fetch import DownloadConfig, DownloadError, fetch
from cyclegan_pws.scrape import MANIFEST, download_images


def jpeg(arr, size, quality=75) -> bytes:
    b = io.BytesIO(); Image.fromarray(arr).resize(size).save(b, 'JPEG', quality=quality); return b.getvalue()


def build_routes(closing: threading.Event) -> dict:
    "name -> (description, route(handler)); a route answers by itself and ends when `closing` is set."
    small = jpeg(skdata.astronaut(), (200, 200))           # ~10 KB
    medium = jpeg(skdata.coffee(), (400, 267), quality=90)  # ~40 KB

    def whole(body):
        def route(h):
            h.send_response(200); h.send_header('Content-Type', 'image/jpeg')
            h.send_header('Content-Length', str(len(body))); h.end_headers(); h.wfile.write(body)
        return route

    def paced(body, rate, step=16):
        def route(h):
            h.send_response(200); h.send_header('Content-Type', 'image/jpeg')
            h.send_header('Content-Length', str(len(body))); h.end_headers()
            for i in range(0, len(body), step):
                if closing.wait(step / rate): return
                h.wfile.write(body[i:i + step])
        return route

    def drip_headers(h):
        head = b'HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: ' + b'x' * 4000 + b'\r\n\r\n'
        for i in range(len(head)):
            if closing.wait(1 / 16): return
            h.wfile.write(head[i:i + 1])

    def silent_body(h):
        h.send_response(200); h.send_header('Content-Type', 'image/jpeg'); h.send_header('Content-Length', '5000')
        h.end_headers(); closing.wait(3600)

    return {'good-astronaut': (f'{len(small):,} B at once', whole(small)),
            'drip': (f'{len(small):,} B at 16 B/s', paced(small, 16, step=1)),
            'good-chelsea': ('chelsea at once', whole(jpeg(skdata.chelsea(), (300, 200)))),
            'hang': ('reads the request, never answers', lambda h: closing.wait(3600)),
            'drip-headers': ('the headers at 16 B/s', drip_headers),
            'slow-but-fine': (f'{len(medium):,} B at 4 KB/s', paced(medium, 4096, step=256)),
            'silent-body': ('headers, then no body', silent_body),
            'good-rocket': ('rocket at once', whole(jpeg(skdata.rocket(), (300, 200))))}


def serve(routes: dict, closing: threading.Event) -> tuple[dict, list]:
    "One server per route on 127.0.0.<i>; returns name -> URL and the servers."
    urls, servers = {}, []
    for i, (name, (_, route)) in enumerate(routes.items(), start=1):
        class Handler(BaseHTTPRequestHandler):
            protocol_version, answer = 'HTTP/1.0', staticmethod(route)
            def log_message(self, *a): pass
            def do_GET(self):
                try: self.answer(self)
                except (BrokenPipeError, ConnectionResetError): pass
        httpd = ThreadingHTTPServer((f'127.0.0.{i}', 0), Handler); httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        urls[name] = f'http://127.0.0.{i}:{httpd.server_port}/{name}.jpg'; servers.append(httpd)
    return urls, servers


def alone(urls: dict, cfg: DownloadConfig) -> dict:
    "Seconds and outcome of `fetch` for each URL, all URLs at once (each in its own thread)."
    out = {}
    def one(name, url):
        t = time.monotonic()
        try: fetch(url, cfg=cfg); what = 'ok'
        except DownloadError as e: what = str(e)
        out[name] = (time.monotonic() - t, what)
    threads = [threading.Thread(target=one, args=kv) for kv in urls.items()]
    for t in threads: t.start()
    for t in threads: t.join()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--test', action='store_true', help='the test settings: deadline 1.5 s, min rate 1024 B/s after 0.3 s')
    ap.add_argument('--deadline', type=float); ap.add_argument('--min-rate', type=float); ap.add_argument('--rate-grace', type=float)
    ap.add_argument('--json', help='write the numbers here')
    a = ap.parse_args()
    kw = {'deadline': 1.5, 'rate_grace': 0.3} if a.test else {}
    kw.update({k: v for k, v in (('deadline', a.deadline), ('min_rate', a.min_rate), ('rate_grace', a.rate_grace)) if v is not None})
    cfg = DownloadConfig(allow_networks=('127.0.0.0/8',), min_side=64, **kw)
    closing = threading.Event()
    routes = build_routes(closing)
    urls, servers = serve(routes, closing)
    print(f'{platform.processor() or platform.machine()}, Python {platform.python_version()}; deadline {cfg.deadline:g} s, '
          f'min rate {cfg.min_rate:g} B/s after {cfg.rate_grace:g} s, read timeout {cfg.read_timeout:g} s, '
          f'{cfg.retries} retries, {cfg.workers} workers')
    try:
        each = alone(urls, cfg)
        print(f'\n{"URL":15} {"server":34} {"alone":>8}  outcome')
        for name, (desc, _) in routes.items():
            s, what = each[name]
            print(f'{name:15} {desc:34} {s:7.1f}s  {what[:90]}')
        with tempfile.TemporaryDirectory() as tmp:
            t = time.monotonic()
            counts = download_images(list(urls.values()), tmp, cfg=cfg)
            total = time.monotonic() - t
            recs = {r['url']: r for r in read_jsonl(f'{tmp}/{MANIFEST}')}
        print(f'\nwhole list through download_images: {total:.1f} s, {dict(counts)}')
        for name, url in urls.items():
            r = recs[url]
            print(f'  {name:15} {r["status"]:9} {(r.get("error") or r.get("file") or r.get("duplicate_of") or "")[:90]}')
        if a.json:
            with open(a.json, 'w') as f:
                json.dump({'config': {k: getattr(cfg, k) for k in ('deadline', 'min_rate', 'rate_grace', 'read_timeout',
                                                                    'retries', 'workers', 'per_host')},
                           'alone_s': {k: round(v[0], 2) for k, v in each.items()},
                           'alone_outcome': {k: v[1] for k, v in each.items()},
                           'list_s': round(total, 2), 'counts': dict(counts),
                           'list_status': {n: recs[u]['status'] for n, u in urls.items()}}, f, indent=2)
    finally:
        closing.set()
        for s in servers: s.shutdown(); s.server_close()


if __name__ == '__main__':
    main()
