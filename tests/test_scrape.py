"""Integration tests of `cyclegan_pws.scrape` against real HTTP(S) servers on loopback addresses (and SerpApi mocked
with `responses` at the transport level). Timeouts and deadlines are tiny and backoff sleeps are recorded, not slept.
Hostile servers (drip, hang, slow headers) end when the test's server closes. No test connects anywhere but
loopback: the autouse `connects` fixture records every connect and refuses any other address before it happens;
private and metadata addresses come from the stub resolver `fake_dns` and are shown refused without contact."""
import hashlib, io, ipaddress, json, logging, os, socket, ssl, subprocess, sys, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
import requests
from PIL import Image
from skimage import data as skdata

pytest.importorskip('serpapi'); pytest.importorskip('imagehash'); responses = pytest.importorskip('responses')

from cyclegan_pws.cli import main
from cyclegan_pws.io import read_jsonl
import cyclegan_pws.fetch as fetch_mod
from cyclegan_pws.fetch import DownloadConfig, fetch
from cyclegan_pws.scrape import (MANIFEST, PENDING, SEARCH_CACHE, MissingAPIKey, SearchError, download_images, download_urls,
                                 scrape, serpapi_client)

SERP = 'https://serpapi.com/search'
KEY = 'sk-test-9f8e7d6c5b4a'
CAP = 300_000  # bytes; small so the oversize bodies stay cheap
LOCAL = ('127.0.0.1',)  # the explicit opt-in that lets these tests fetch from their own loopback server
ALLOW_LOCAL = [a for n in LOCAL for a in ('--allow-net', n)]  # the same opt-in on the command line


def encode(arr, fmt='JPEG', size=None, **kw):
    im = Image.fromarray(arr)
    if size: im = im.resize(size)
    b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()


def jpeg_with_gps_and_rotation():
    "A 200x120 JPEG whose EXIF holds GPS coordinates and Orientation=6 (display rotated 90 degrees)."
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = 'PhoneMaker'
    gps = exif.get_ifd(0x8825)
    gps.update({1: 'N', 2: (51.0, 30.0, 12.5), 3: 'W', 4: (0.0, 7.0, 39.0)})
    return encode(skdata.astronaut()[100:220, 100:300], exif=exif.tobytes(), quality=90)


ASTRONAUT = encode(skdata.astronaut(), size=(256, 256), quality=90)
ASTRONAUT_BIG = encode(skdata.astronaut(), size=(480, 480), quality=70)   # same photo, re-encoded larger
COFFEE_PNG = encode(skdata.coffee(), 'PNG', size=(300, 200))
CHELSEA = encode(skdata.chelsea(), quality=90)
GPS = jpeg_with_gps_and_rotation()
HUGE = encode(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8), quality=100)
assert len(HUGE) > CAP


class Server:
    """A real HTTP server on a loopback address; `routes` maps a path to (status, headers, body | callable) or to a
    function `route(handler, server)` that answers by itself (drips, hangs). Every handler ends when the server
    closes, so no test leaves a thread behind for long."""
    def __init__(self, host='127.0.0.1', port=0, tls=None):
        self.hits, self.routes, self.hosts, self.abandoned = Counter(), {}, [], set()
        self.agent_hits = Counter()  # (path, User-Agent): tells a killed client's late-counted request from a new one
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'  # close-delimited bodies: a missing Content-Length is legal
            def log_message(self, *a): pass
            def do_GET(self):
                path = urlsplit(self.path).path
                outer.hits[path] += 1; outer.hosts.append(self.headers.get('Host'))
                outer.agent_hits[path, self.headers.get('User-Agent')] += 1
                route = outer.routes.get(path, (404, {}, b'not found'))
                try:
                    if callable(route): return route(self, outer)
                    status, headers, body = route
                    if callable(body): body = body()
                    self.send_response(status)
                    headers = {'Content-Length': str(len(body)), **headers}
                    for k, v in headers.items():
                        if v is not None: self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError): outer.abandoned.add(path)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        if tls: self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_port
        self.base = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.02}, daemon=True).start()

    def url(self, path): return self.base + path
    def close(self): self.closing.set(); self.httpd.shutdown(); self.httpd.server_close()


def drip(body, rate=16, ctype='image/jpeg'):
    "Headers at once, then `body` at `rate` bytes a second: never silent long enough to trip a read timeout."
    def route(h, srv):
        h.send_response(200); h.send_header('Content-Type', ctype); h.send_header('Content-Length', str(len(body)))
        h.end_headers()
        for i in range(len(body)):
            if srv.closing.wait(1 / rate): return
            h.wfile.write(body[i:i + 1])
    return route


def drip_headers(h, srv, rate=16):
    "A promising start (status, image type), then the rest of the headers a byte at a time; no Content-Length."
    h.wfile.write(b'HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n')
    head = b'X-Padding: ' + b'x' * 4000 + b'\r\n\r\n'
    for i in range(len(head)):
        if srv.closing.wait(1 / rate): return
        h.wfile.write(head[i:i + 1])


def hang(h, srv):
    "Read the request, never answer (until the server closes)."
    srv.closing.wait(60)


def silent_body(h, srv):
    "Headers promising a body that never comes."
    h.send_response(200); h.send_header('Content-Type', 'image/jpeg'); h.send_header('Content-Length', '5000')
    h.end_headers(); srv.closing.wait(60)


def slow_body():
    time.sleep(0.6)
    return ASTRONAUT


@pytest.fixture
def server():
    s = Server()
    jpg, png = {'Content-Type': 'image/jpeg'}, {'Content-Type': 'image/png'}
    s.routes.update({
        '/good.jpg': (200, jpg, ASTRONAUT),
        '/good.png': (200, png, COFFEE_PNG),
        '/dup-big.jpg': (200, jpg, ASTRONAUT_BIG),
        '/cat.jpg': (200, {'Content-Type': 'image/jpeg; charset=binary'}, CHELSEA),
        '/gps.jpg': (200, jpg, GPS),
        '/404.jpg': (404, {}, b'gone'),
        '/500.jpg': (500, {}, b'oops'),
        '/slow.jpg': (200, jpg, slow_body),
        '/to-file': (302, {'Location': 'file:///etc/passwd'}, b''),
        '/to-cat': (302, {'Location': '/cat.jpg'}, b''),
        '/html.jpg': (200, jpg, b'<!doctype html><html><body>Access denied</body></html>'),
        '/page.html': (200, {'Content-Type': 'text/html'}, b'<html></html>'),
        '/big-declared.jpg': (200, jpg, HUGE),
        '/big-nolength.jpg': (200, {**jpg, 'Content-Length': None}, HUGE),
        '/big-understated.jpg': (200, {**jpg, 'Content-Length': '1000'}, HUGE),
        '/truncated.jpg': (200, jpg, ASTRONAUT[:len(ASTRONAUT) // 2]),
    })
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for v in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.delenv(v, raising=False)


@pytest.fixture(autouse=True)
def connects(monkeypatch):
    "Every socket connect of the test, recorded; one to a non-loopback address is refused here, never attempted."
    attempts, real = [], socket.socket.connect
    def loopback(a):
        try: return ipaddress.ip_address(a.split('%')[0]).is_loopback
        except ValueError: return False  # a name: socket.connect would resolve it itself
    def connect(self, address):
        if isinstance(address, tuple):
            attempts.append(address[0])
            if not loopback(address[0]):
                raise ConnectionRefusedError(f'test guard: no connection to {address[0]} from a test')
        return real(self, address)
    monkeypatch.setattr(socket.socket, 'connect', connect)
    yield attempts
    outside = [a for a in attempts if not loopback(a)]
    assert not outside, f'the code under test tried to connect to {outside}'


@pytest.fixture
def fake_dns(monkeypatch):
    "Install a stub resolver: `fake_dns({name: [ip, ...] | callable(n) -> [ip, ...]})`; returns lookups per name."
    real, calls = socket.getaddrinfo, Counter()
    def install(table):
        def stub(host, port, *a, **kw):
            if host not in table: return real(host, port, *a, **kw)
            calls[host] += 1
            ips = table[host](calls[host]) if callable(table[host]) else table[host]
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, '', (ip, port, 0, 0)) if ':' in ip
                    else (socket.AF_INET, socket.SOCK_STREAM, 6, '', (ip, port)) for ip in ips]
        monkeypatch.setattr(socket, 'getaddrinfo', stub)
        return calls
    return install


def cfg(**kw):
    return DownloadConfig(**{'connect_timeout': 1.0, 'read_timeout': 0.2, 'retries': 2, 'backoff': 0.25,
                             'max_bytes': CAP, 'min_side': 64, 'allow_networks': LOCAL, **kw})


def run(server, tmp_path, paths, sleeps=None, **kw):
    out = tmp_path / 'out'
    counts = download_images([server.url(p) for p in paths], out, cfg=cfg(**kw),
                             sleep=(sleeps.append if sleeps is not None else (lambda s: None)))
    return counts, {r['url'].replace(server.base, ''): r for r in read_jsonl(out / MANIFEST)}, out


def pngs(out): return sorted(p.name for p in Path(out).iterdir() if p.suffix == '.png')
def leftovers(out): return [p.name for p in Path(out).iterdir() if p.name.endswith('.tmp')]


# ---------------------------------------------------------------- downloads

def test_good_jpeg_and_png_saved_under_content_hash(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/good.jpg', '/good.png'])
    assert counts == Counter(ok=2)
    for path, body in [('/good.jpg', ASTRONAUT), ('/good.png', COFFEE_PNG)]:
        r = recs[path]
        sha = hashlib.sha256(body).hexdigest()
        assert (r['status'], r['sha256'], r['bytes'], r['file']) == ('ok', sha, len(body), sha[:16] + '.png')
        assert len(r['phash']) == 16 and r['error'] is None
        with Image.open(out / r['file']) as im:
            assert im.format == 'PNG' and (im.width, im.height) == (r['width'], r['height'])
    assert recs['/good.jpg']['content_type'] == 'image/jpeg' and recs['/good.png']['content_type'] == 'image/png'
    assert pngs(out) == sorted(r['file'] for r in recs.values())


def test_404_fails_at_once(server, tmp_path):
    sleeps = []
    counts, recs, out = run(server, tmp_path, ['/404.jpg'], sleeps)
    assert counts == Counter(error=1) and recs['/404.jpg']['error'] == 'HTTP 404'
    assert server.hits['/404.jpg'] == 1 and sleeps == []


def test_500_is_retried_with_backoff_then_fails(server, tmp_path):
    sleeps = []
    counts, recs, out = run(server, tmp_path, ['/500.jpg'], sleeps)
    assert counts == Counter(error=1)
    assert recs['/500.jpg']['error'] == 'HTTP 500 (after 3 attempts)'
    assert server.hits['/500.jpg'] == 3 and sleeps == [0.25, 0.5]


def test_read_timeout_is_retried_then_fails(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/slow.jpg'], retries=1)
    assert counts == Counter(error=1)
    assert 'timed out' in recs['/slow.jpg']['error'].lower() and '(after 2 attempts)' in recs['/slow.jpg']['error']
    assert server.hits['/slow.jpg'] == 2 and pngs(out) == []


def test_redirect_to_file_scheme_is_refused(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/to-file'])
    assert counts == Counter(error=1) and 'refused file://' in recs['/to-file']['error']
    assert server.hits['/to-file'] == 1 and pngs(out) == []


def test_redirect_to_an_image_is_followed(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/to-cat'])
    r = recs['/to-cat']
    assert counts == Counter(ok=1) and r['final_url'] == server.url('/cat.jpg')
    assert r['sha256'] == hashlib.sha256(CHELSEA).hexdigest() and server.hits['/cat.jpg'] == 1


def test_non_http_url_is_skipped_without_a_request(server, tmp_path):
    out = tmp_path / 'out'
    counts = download_images(['ftp://127.0.0.1/x.jpg', 'file:///etc/passwd'], out, cfg=cfg())
    assert counts == Counter(skipped=2)
    assert all('refused' in r['error'] for r in read_jsonl(out / MANIFEST)) and sum(server.hits.values()) == 0


@pytest.mark.parametrize('path,why', [('/html.jpg', 'not a readable image'),
                                      ('/truncated.jpg', 'not a readable image'),
                                      ('/page.html', "'text/html' is not image/*"),
                                      ('/big-declared.jpg', 'declared, over the 300,000-byte cap'),
                                      ('/big-nolength.jpg', 'passed the 300,000-byte cap while streaming'),
                                      ('/big-understated.jpg', 'not a readable image')])
def test_bad_bodies_are_rejected_and_nothing_is_written(server, tmp_path, path, why):
    counts, recs, out = run(server, tmp_path, [path])
    assert counts == Counter(error=1)
    assert why in recs[path]['error'], recs[path]['error']
    assert pngs(out) == [] and leftovers(out) == []
    assert server.hits[path] == 1  # not transient: no retry


def test_a_body_cut_short_is_an_error_not_a_truncated_photo(server, tmp_path):
    def cut(h, srv):  # declares 20,000 bytes, sends 3,000, closes
        h.send_response(200); h.send_header('Content-Type', 'image/jpeg'); h.send_header('Content-Length', '20000')
        h.end_headers(); h.wfile.write(ASTRONAUT[:3000])
    server.routes['/cut.jpg'] = cut
    counts, recs, out = run(server, tmp_path, ['/cut.jpg'])
    assert counts == Counter(error=1) and 'IncompleteRead' in recs['/cut.jpg']['error'], recs['/cut.jpg']['error']
    assert server.hits['/cut.jpg'] == 3 and pngs(out) == []  # a dropped connection is worth another try


def test_exif_gps_is_stripped_and_orientation_applied(server, tmp_path):
    assert Image.open(io.BytesIO(GPS)).getexif().get_ifd(0x8825)  # the source really carries GPS
    counts, recs, out = run(server, tmp_path, ['/gps.jpg'])
    r = recs['/gps.jpg']
    assert counts == Counter(ok=1) and (r['width'], r['height']) == (120, 200)  # rotated by Orientation=6
    saved = (out / r['file']).read_bytes()
    assert b'PhoneMaker' not in saved and b'Exif' not in saved and b'eXIf' not in saved
    with Image.open(out / r['file']) as im:
        assert not im.getexif() and 'exif' not in im.info and im.size == (120, 200)


def test_near_duplicate_recorded_as_duplicate_of_the_kept_file(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/good.jpg', '/dup-big.jpg', '/cat.jpg'])
    assert counts == Counter(ok=2, duplicate=1)
    d = recs['/dup-big.jpg']
    assert d['status'] == 'duplicate' and d['duplicate_of'] == recs['/good.jpg']['file']
    assert d['distance'] <= cfg().phash_distance and 'file' not in d
    assert pngs(out) == sorted([recs['/good.jpg']['file'], recs['/cat.jpg']['file']])
    # with the check off (distance -1), the re-encoded copy is kept as its own photo
    counts, _, _ = run(server, tmp_path / 'strict', ['/good.jpg', '/dup-big.jpg'], phash_distance=-1)
    assert counts == Counter(ok=2)


def test_resume_skips_done_urls_without_requests(server, tmp_path):
    paths = ['/good.jpg', '/good.png', '/404.jpg']
    run(server, tmp_path, paths)
    before = dict(server.hits)
    counts, recs, out = run(server, tmp_path, paths + ['/cat.jpg'])
    assert counts == Counter(resumed=3, ok=1)
    assert {p: server.hits[p] for p in paths} == {p: before[p] for p in paths}
    assert len(read_jsonl(out / MANIFEST)) == 4
    # retry_errors gives the failed URL (and only it) another go
    out2 = download_images([server.url(p) for p in paths], out, cfg=cfg(), retry_errors=True)
    assert out2 == Counter(resumed=2, error=1) and server.hits['/404.jpg'] == before['/404.jpg'] + 1


def test_interrupted_run_keeps_finished_work(server, tmp_path):
    "A crash mid-run (here: in the clock after the 2nd download) keeps the first two files and their lines."
    out, ticks = tmp_path / 'out', iter([0.0])
    paths = ['/good.jpg', '/cat.jpg', '/good.png']
    with pytest.raises(StopIteration):  # one worker, so the crash point is deterministic
        download_images([server.url(p) for p in paths], out, cfg=cfg(workers=1), clock=lambda: next(ticks) + 1.7e9)
    # the second image was saved before the crash, but its manifest line was not written: it is fetched again
    assert [r['url'] for r in read_jsonl(out / MANIFEST)] == [server.url('/good.jpg')]
    counts = download_images([server.url(p) for p in paths], out, cfg=cfg())
    assert counts == Counter(resumed=1, ok=2) and server.hits['/good.jpg'] == 1 and leftovers(out) == []


def test_a_duplicate_whose_copy_went_before_a_kill_is_not_fetched_again(server, tmp_path):
    "Killed between deleting a duplicate's copy and writing its line: the journal's record is enough, no new request."
    _, recs, out = run(server, tmp_path, ['/good.jpg'])
    _, alone, _ = run(server, tmp_path / 'alone', ['/dup-big.jpg'])  # its hashes and file name, as a killed run journals them
    (out / PENDING).write_text(json.dumps({**alone['/dup-big.jpg'], 'status': 'fetched'}) + '\n')  # its copy: not in `out`
    before = server.hits['/dup-big.jpg']
    counts = download_images([server.url('/good.jpg'), server.url('/dup-big.jpg')], out, cfg=cfg())
    assert counts == Counter(resumed=1, duplicate=1) and server.hits['/dup-big.jpg'] == before
    assert pngs(out) == [recs['/good.jpg']['file']] and not (out / PENDING).exists()


def test_download_rebuilds_from_manifest(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/good.jpg', '/dup-big.jpg', '/cat.jpg', '/404.jpg'])
    rebuilt = tmp_path / 'rebuilt'
    assert download_urls(out / MANIFEST, rebuilt, cfg=cfg()) == counts
    assert pngs(rebuilt) == pngs(out)
    again = read_jsonl(rebuilt / MANIFEST)
    assert [(r['url'], r['status'], r.get('sha256')) for r in again] == \
           [(r['url'], r['status'], r.get('sha256')) for r in recs.values()]


def test_cli_download_from_url_list(server, tmp_path, capsys):
    urls = tmp_path / 'urls.txt'
    urls.write_text(f"# test\n{server.url('/good.jpg')}\n\n{server.url('/404.jpg')}\n")
    with pytest.raises(SystemExit) as e:
        main(['download', '--urls', str(urls), '--out', str(tmp_path / 'o'), '--max-mb', '1', *ALLOW_LOCAL])
    assert e.value.code == 0
    cap = capsys.readouterr()
    assert 'ok=1 duplicate=0 skipped=0 error=1 resumed=0' in cap.out and 'HTTP 404' in cap.err


# ---------------------------------------------------------------- a hostile web: drip, hang, inward addresses

JPEG10K = encode(skdata.astronaut(), size=(200, 200), quality=75)  # ~10 KB
CAMERA = encode(np.stack([skdata.camera()] * 3, -1), size=(200, 200), quality=90)
HOSTILE = cfg(deadline=1.5, read_timeout=30, min_rate=1024, rate_grace=0.3)  # read timeout far above the deadline


def names(fake_dns, n):
    "`n` host names that the stub resolver sends to 127.0.0.1 (one host each, so per-host politeness is not what bounds time)."
    fake_dns({f'h{i}.test': ['127.0.0.1'] for i in range(n)})
    return [f'h{i}.test' for i in range(n)]


def test_drip_and_hang_urls_are_abandoned_within_the_deadline(server, tmp_path, fake_dns):
    assert 9_000 < len(JPEG10K) < 12_000  # at 16 B/s the old downloader spent ~11 minutes on it
    server.routes.update({'/drip.jpg': drip(JPEG10K), '/drip-headers.jpg': drip_headers, '/hang.jpg': hang,
                          '/silent-body.jpg': silent_body})
    hosts = names(fake_dns, 9)
    paths = ['/good.jpg', '/drip.jpg', '/hang.jpg', '/cat.jpg', '/drip-headers.jpg', '/good.png', '/silent-body.jpg',
             '/404.jpg', '/dup-big.jpg']
    urls = [f'http://{h}:{server.port}{p}' for h, p in zip(hosts, paths)]
    out = tmp_path / 'out'
    t0 = time.monotonic()
    counts = download_images(urls, out, cfg=HOSTILE)
    took = time.monotonic() - t0
    recs = {urlsplit(r['url']).path: r for r in read_jsonl(out / MANIFEST)}
    assert counts == Counter(ok=3, duplicate=1, error=5)
    assert [r['url'] for r in read_jsonl(out / MANIFEST)] == urls  # recorded in input order
    assert recs['/drip.jpg']['error'].startswith('stalled: ') and 'below min 1,024 B/s' in recs['/drip.jpg']['error']
    for p in ('/hang.jpg', '/drip-headers.jpg', '/silent-body.jpg'):
        assert recs[p]['error'].startswith('deadline 1.5 s exceeded'), (p, recs[p]['error'])
    assert recs['/404.jpg']['error'] == 'HTTP 404'
    assert all(server.hits[p] == 1 for p in paths)  # a stalled or timed-out URL is not tried again
    assert pngs(out) == sorted(recs[p]['file'] for p in ('/good.jpg', '/cat.jpg', '/good.png'))
    # a correctness bound, not a benchmark: the hostile URLs overlap (4 workers), each ends at its deadline
    assert took < HOSTILE.deadline + 3, took
    deadline = time.monotonic() + 5
    while '/drip.jpg' not in server.abandoned and time.monotonic() < deadline: time.sleep(0.05)
    assert '/drip.jpg' in server.abandoned  # the connection really was dropped, not just ignored


def test_a_drip_without_rate_check_ends_at_the_deadline_and_retries_respect_it(server, tmp_path):
    server.routes.update({'/drip.jpg': drip(JPEG10K), '/hang.jpg': hang})
    sleeps = []
    t0 = time.monotonic()
    counts, recs, out = run(server, tmp_path, ['/drip.jpg'], sleeps, deadline=1.0, read_timeout=30, min_rate=0)
    assert time.monotonic() - t0 < 1.0 + 3
    assert recs['/drip.jpg']['error'].startswith('deadline 1 s exceeded after ')  # ... N bytes of the body
    # a server that never answers: the read timeout (0.4 s) trips twice, then the next backoff (0.5 s) would
    # pass the 1.2 s deadline, so no third attempt is started
    counts, recs, out = run(server, tmp_path / 'b', ['/hang.jpg'], sleeps, deadline=1.2, read_timeout=0.4, backoff=0.25)
    err = recs['/hang.jpg']['error']
    assert err.startswith('deadline 1.2 s exceeded after 2 attempts (last: ReadTimeout'), err
    assert server.hits['/hang.jpg'] == 2
    assert sleeps == [0.25]


# ---- addresses

@pytest.mark.parametrize('host', ['127.0.0.1', 'localhost', '127.1', '0x7f.0.0.1', '2130706433', '0177.0.0.1',
                                  '127.0.0.2', '[::1]', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '0.0.0.0', '[::]'])
def test_defaults_send_nothing_to_loopback(server, tmp_path, connects, host):
    url = f'http://{host}:{server.port}/good.jpg'
    out = tmp_path / 'out'
    counts = download_images([url], out, cfg=DownloadConfig(backoff=0))  # the defaults: no allow_networks
    [rec] = read_jsonl(out / MANIFEST)
    assert counts == Counter(error=1)
    assert rec['error'].startswith(f'refused {url}: ') and 'only public addresses are fetched' in rec['error'], rec
    assert any(w in rec['error'] for w in ('loopback', 'unspecified')), rec['error']
    assert connects == [] and sum(server.hits.values()) == 0  # refused before any connection was attempted


def test_redirects_to_loopback_names_get_no_request(tmp_path, connects):
    try: front = Server('127.0.0.2')  # the one address these downloads may use
    except OSError: pytest.skip('127.0.0.2 is not a local address here')
    trap = Server('127.0.0.1')
    targets = [f'http://127.0.0.1:{trap.port}/x.jpg', f'http://localhost:{trap.port}/x.jpg', f'http://127.1:{trap.port}/x.jpg',
               f'http://[::1]:{trap.port}/x.jpg', f'http://[::ffff:127.0.0.1]:{trap.port}/x.jpg',
               f'http://0.0.0.0:{trap.port}/x.jpg', f'http://0x7f000001:{trap.port}/x.jpg']
    trap.routes['/x.jpg'] = (200, {'Content-Type': 'image/jpeg'}, ASTRONAUT)
    for i, t in enumerate(targets): front.routes[f'/r{i}'] = (302, {'Location': t}, b'')
    try:
        out = tmp_path / 'out'
        counts = download_images([front.url(f'/r{i}') for i in range(len(targets))], out,
                                 cfg=DownloadConfig(allow_networks=('127.0.0.2',), backoff=0))
        recs = read_jsonl(out / MANIFEST)
        assert counts == Counter(error=len(targets))
        for r, t in zip(recs, targets): assert r['error'].startswith(f'refused {t}: '), r['error']
        assert sum(trap.hits.values()) == 0 and all(front.hits[f'/r{i}'] == 1 for i in range(len(targets)))
        assert set(connects) == {'127.0.0.2'}  # the only connections: to the allowed front server
    finally: front.close(); trap.close()


def test_redirects_to_private_and_metadata_addresses_are_refused_before_connecting(server, tmp_path, connects, fake_dns):
    lookups = fake_dns({'metadata.google.internal': ['169.254.169.254'], 'intranet.corp': ['10.0.0.5'],
                        'router.lan': ['192.168.1.1'], 'v6.corp': ['fd00::5'], 'cgnat.example': ['100.64.1.1'],
                        'mixed.example': ['93.184.216.34', '172.16.0.9'],   # one public answer does not save it
                        'rebind.example': lambda n: ['93.184.216.34'] if n > 1 else ['10.9.9.9']})
    targets = {'http://169.254.169.254/latest/meta-data/iam/security-credentials/': '169.254.169.254 is link-local',
               'http://metadata.google.internal/computeMetadata/v1/': 'resolves to 169.254.169.254 (link-local)',
               'http://[fd00:ec2::254]/latest/meta-data/': 'fd00:ec2::254 is private',
               'http://[::ffff:169.254.169.254]/latest/meta-data/': 'link-local',
               'http://[fe80::1%25lo]/x.jpg': 'is link-local',
               'http://10.0.0.5/x.jpg': '10.0.0.5 is private', 'http://intranet.corp/x.jpg': '10.0.0.5 (private)',
               'https://router.lan/x.jpg': '192.168.1.1 (private)', 'http://v6.corp:8080/x.jpg': 'fd00::5 (private)',
               'http://cgnat.example/x.jpg': '100.64.1.1 (not public)', 'http://mixed.example/x.jpg': '172.16.0.9 (private)',
               'http://rebind.example/x.jpg': '10.9.9.9 (private)'}
    for i, t in enumerate(targets): server.routes[f'/r{i}'] = (307, {'Location': t}, b'')
    counts, recs, out = run(server, tmp_path, [f'/r{i}' for i in range(len(targets))])
    assert counts == Counter(error=len(targets))
    for i, (t, why) in enumerate(targets.items()):
        err = recs[f'/r{i}']['error']
        assert err.startswith(f'refused {t}: ') and why in err, (t, err)
    assert set(connects) == {'127.0.0.1'} and len(connects) == len(targets)  # only the first hops, to our server
    assert lookups['rebind.example'] == 1  # checked once; the connection would have used that very answer


def test_no_dns_rebinding_window_and_the_host_name_is_kept(tmp_path, connects, fake_dns):
    try: front = Server('127.0.0.2')
    except OSError: pytest.skip('127.0.0.2 is not a local address here')
    try: trap = Server('127.0.0.3', port=front.port)  # same port: only the address differs
    except OSError: front.close(); pytest.skip('127.0.0.3 is not a local address here, or the port is taken')
    front.routes['/good.jpg'] = trap.routes['/good.jpg'] = (200, {'Content-Type': 'image/jpeg'}, ASTRONAUT)
    # first lookup: the allowed address; every later one: another (not allowed) address
    lookups = fake_dns({'photos.test': lambda n: ['127.0.0.2'] if n == 1 else ['127.0.0.3']})
    c = DownloadConfig(allow_networks=('127.0.0.2',), min_side=64)
    try:
        got = fetch(f'http://photos.test:{front.port}/good.jpg', cfg=c)
        assert got.data == ASTRONAUT and lookups['photos.test'] == 1
        assert front.hosts == [f'photos.test:{front.port}'] and sum(trap.hits.values()) == 0
        with pytest.raises(fetch_mod.DownloadError, match=r'photos.test resolves to 127.0.0.3 \(loopback\)'):
            fetch(f'http://photos.test:{front.port}/good.jpg', cfg=c)  # the rebound answer is checked, and refused
        assert sum(trap.hits.values()) == 0 and set(connects) == {'127.0.0.2'}
    finally: front.close(); trap.close()


@pytest.fixture(scope='module')
def tls_files(tmp_path_factory):
    "A self-signed certificate for photos.test (and nothing else)."
    d = tmp_path_factory.mktemp('tls')
    try:
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=photos.test',
                        '-addext', 'subjectAltName=DNS:photos.test', '-keyout', str(d / 'key.pem'), '-out', str(d / 'cert.pem')],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as e: pytest.skip(f'openssl cannot make a test certificate: {e}')
    return d / 'cert.pem', d / 'key.pem'


def test_https_is_pinned_yet_verified_against_the_name_and_bounded(tmp_path, connects, fake_dns, tls_files):
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); ctx.load_cert_chain(cert, key)
    sni = []
    ctx.sni_callback = lambda sock, name, c: sni.append(name)
    front = Server('127.0.0.1', tls=ctx)
    front.routes.update({'/good.jpg': (200, {'Content-Type': 'image/jpeg'}, ASTRONAUT), '/drip.jpg': drip(JPEG10K)})
    mute = socket.create_server(('127.0.0.1', 0))  # accepts TCP, never says a word of TLS: a handshake that hangs
    fake_dns({'photos.test': ['127.0.0.1']})
    session = requests.Session(); session.verify = str(cert)  # trust our test CA only
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides session.verify
    out = tmp_path / 'out'
    try:
        counts = download_images([f'https://photos.test:{front.port}/good.jpg', f'https://127.0.0.1:{front.port}/good.jpg',
                                  f'https://photos.test:{front.port}/drip.jpg', f'https://photos.test:{mute.getsockname()[1]}/x.jpg'],
                                 out, session=session, cfg=HOSTILE)
        recs = read_jsonl(out / MANIFEST)
        assert counts == Counter(ok=1, error=3) and [r['status'] for r in recs] == ['ok', 'error', 'error', 'error'], recs
        assert 'photos.test' in sni and front.hosts[0] == f'photos.test:{front.port}'  # SNI and Host: the name
        assert 'certificate' in recs[1]['error'].lower() or 'hostname' in recs[1]['error'].lower(), recs[1]['error']
        assert recs[2]['error'].startswith('stalled: '), recs[2]['error']
        assert recs[3]['error'].startswith('deadline 1.5 s exceeded'), recs[3]['error']  # a TLS handshake that hangs
        assert isinstance(session.get_adapter('https://x/'), fetch_mod.GuardedAdapter)  # the caller's session is guarded
    finally: front.close(); mute.close()


def test_proxies_are_refused_not_bypassed(server, tmp_path, connects):
    session = requests.Session()
    session.proxies = {'http': 'http://127.0.0.1:9/'}
    counts = download_images([server.url('/good.jpg')], tmp_path / 'out', session=session, cfg=cfg())
    [rec] = read_jsonl(tmp_path / 'out' / MANIFEST)
    assert counts == Counter(error=1) and 'refused to download through the proxy' in rec['error']
    assert sum(server.hits.values()) == 0 and connects == []


def test_cli_refuses_loopback_by_default(server, tmp_path, capsys, connects):
    urls = tmp_path / 'urls.txt'
    urls.write_text(f"{server.url('/good.jpg')}\n")
    with pytest.raises(SystemExit) as e:
        main(['download', '--urls', str(urls), '--out', str(tmp_path / 'o')])
    assert e.value.code == 0
    cap = capsys.readouterr()
    assert 'ok=0 duplicate=0 skipped=0 error=1' in cap.out and '127.0.0.1 is loopback' in cap.err
    assert connects == [] and sum(server.hits.values()) == 0


# ---- parallel, polite, resumable

def test_parallel_downloads_are_bounded_and_polite_per_host(server, tmp_path, fake_dns):
    fake_dns({h: ['127.0.0.1'] for h in ('a.test', 'b.test', 'c.test')})
    lock, inflight, peak, full = threading.Lock(), Counter(), Counter(), threading.Event()
    def held(body):
        def route(h, srv):
            host = h.headers['Host'].split(':')[0]
            with lock:
                inflight[host] += 1; inflight['*'] += 1
                for k in (host, '*'): peak[k] = max(peak[k], inflight[k])
                if inflight['*'] >= 4: full.set()
            full.wait(5)  # hold until 4 are in flight at once (bounded: a one-at-a-time downloader fails after 5 s)
            time.sleep(0.05)
            with lock: inflight[host] -= 1; inflight['*'] -= 1
            h.send_response(200); h.send_header('Content-Type', 'image/jpeg'); h.send_header('Content-Length', str(len(body)))
            h.end_headers(); h.wfile.write(body)
        return route
    bodies = [ASTRONAUT, CHELSEA, COFFEE_PNG, CAMERA]
    for i in range(12): server.routes[f'/p{i}.jpg'] = held(bodies[i % 4])
    urls = [f'http://{h}:{server.port}/p{i}.jpg' for i, h in enumerate(['a.test'] * 6 + ['b.test'] * 3 + ['c.test'] * 3)]
    out = tmp_path / 'out'
    counts = download_images(urls, out, cfg=cfg(workers=4, per_host=2))
    assert counts == Counter(ok=4, duplicate=8)
    assert peak['*'] == 4 and all(peak[h] <= 2 for h in ('a.test', 'b.test', 'c.test')), peak
    recs = read_jsonl(out / MANIFEST)
    assert [r['url'] for r in recs] == urls  # in input order, whatever order they finished in
    assert [r['status'] for r in recs[:4]] == ['ok', 'ok', 'ok', 'ok'] and all(r['status'] == 'duplicate' for r in recs[4:])


def test_the_first_copy_is_kept_even_when_it_arrives_last(server, tmp_path):
    def slow_astronaut():
        time.sleep(0.5); return ASTRONAUT
    server.routes['/first.jpg'] = (200, {'Content-Type': 'image/jpeg'}, slow_astronaut)
    for attempt in range(2):  # twice, in separate folders: the same list keeps the same photo
        counts, recs, out = run(server, tmp_path / str(attempt), ['/first.jpg', '/dup-big.jpg', '/good.jpg'], read_timeout=5)
        assert [recs[p]['status'] for p in ('/first.jpg', '/dup-big.jpg', '/good.jpg')] == ['ok', 'duplicate', 'duplicate']
        assert pngs(out) == [recs['/first.jpg']['file']] and leftovers(out) == []  # the copies' files were removed


def test_politeness_delay_spaces_requests_to_one_host(server, tmp_path):
    sleeps = []
    run(server, tmp_path, ['/good.jpg', '/good.png', '/cat.jpg'], sleeps, delay=0.5)
    assert len(sleeps) == 2 and abs(sorted(sleeps)[0] - 0.5) < 0.25 and abs(sorted(sleeps)[1] - 1.0) < 0.25, sleeps


CHILD = '''
import json, sys
from cyclegan_pws.scrape import download_images
from cyclegan_pws.fetch import DownloadConfig
a = json.loads(sys.argv[1])
download_images(a['urls'], a['out'], cfg=DownloadConfig(**a['cfg']))
'''


def spawn(urls, out, **kw):
    "A real `download_images` run in a child process, to be killed with SIGKILL."
    c = {'connect_timeout': 1.0, 'read_timeout': 30, 'deadline': 60, 'max_bytes': CAP, 'min_side': 64,
         'allow_networks': list(LOCAL), **kw}
    return subprocess.Popen([sys.executable, '-c', CHILD, json.dumps({'urls': urls, 'out': str(out), 'cfg': c})],
                            env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(cond, timeout=30):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, 'timed out waiting for the child process'
        time.sleep(0.02)


def complete_lines(path):
    return path.read_bytes().count(b'\n') if path.exists() else 0


def lines(path):
    "Every line of a JSONL file, each of which must be complete JSON (never half-written)."
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_killed_while_waiting_on_a_hang_loses_nothing_and_fetches_nothing_twice(server, tmp_path):
    server.routes['/hang.jpg'] = hang
    paths = ['/hang.jpg', '/good.jpg', '/dup-big.jpg', '/cat.jpg', '/404.jpg', '/good.png', '/html.jpg']
    urls, out = [server.url(p) for p in paths], tmp_path / 'out'
    child = spawn(urls, out)
    try: wait_until(lambda: complete_lines(out / PENDING) == len(paths) - 1)  # all but the hang finished...
    finally: child.kill(); child.wait()
    assert lines(out / MANIFEST) == []  # ...and none recorded: the first URL (the hang) holds the order
    counts = download_images(urls, out, cfg=cfg(deadline=1, read_timeout=30))
    assert counts == Counter(ok=3, duplicate=1, error=3)
    assert {p: server.hits[p] for p in paths} == {**{p: 1 for p in paths}, '/hang.jpg': 2}  # only the one in flight
    recs = lines(out / MANIFEST)
    assert [r['url'] for r in recs] == urls and recs[0]['error'] == 'deadline 1 s exceeded'
    assert pngs(out) == sorted(r['file'] for r in recs if r['status'] == 'ok')  # the duplicate's saved copy is gone
    assert leftovers(out) == [] and not (out / PENDING).exists()


@pytest.mark.parametrize('kill_after', [1, 4, 7])
def test_killed_at_any_point_then_restarted(server, tmp_path, kill_after):
    "SIGKILL after `kill_after` requests reached the server; the restart records everything, fetching only what was in flight."
    def slow(body):
        def answer():
            time.sleep(0.15); return body
        return answer
    bodies = [ASTRONAUT, CHELSEA, COFFEE_PNG, CAMERA, ASTRONAUT_BIG]
    for i in range(10): server.routes[f'/s{i}.jpg'] = (200, {'Content-Type': 'image/jpeg'}, slow(bodies[i % 5]))
    urls, out = [server.url(f'/s{i}.jpg') for i in range(10)], tmp_path / 'out'
    # The child's requests carry their own User-Agent: one it sent just before the kill may reach a server thread
    # only after the restart began, and must not be counted as the restart's.
    child = spawn(urls, out, workers=2, user_agent='killed-child')
    try: wait_until(lambda: sum(server.hits.values()) >= kill_after)
    finally: child.kill(); child.wait()
    done = {r['url'] for r in lines(out / MANIFEST)} | {r['url'] for r in lines(out / PENDING)}  # every line parses
    counts = download_images(urls, out, cfg=cfg(user_agent='restart'))
    assert counts['resumed'] + counts['ok'] + counts['duplicate'] == 10 and counts['error'] == 0, counts
    assert len(done) < 10 and sum(server.agent_hits[urlsplit(u).path, 'killed-child'] for u in urls) >= kill_after
    for u in urls:
        p = urlsplit(u).path
        assert server.agent_hits[p, 'restart'] == (0 if u in done else 1), (p, u in done, server.agent_hits[p, 'restart'])
    latest = {r['url']: r for r in lines(out / MANIFEST)}
    assert list(latest) == urls and [r['status'] for r in latest.values()] == ['ok'] * 4 + ['duplicate'] * 6
    assert pngs(out) == sorted(r['file'] for r in latest.values() if r['status'] == 'ok')
    assert leftovers(out) == [] and not (out / PENDING).exists()


# ---------------------------------------------------------------- SerpApi

def serp_page(urls, start=0):
    return {'search_metadata': {'status': 'Success'},
            'images_results': [{'position': start + i + 1, 'original': u, 'link': f'https://site.example/{start + i}',
                                'source': 'site.example', 'title': f'PWS photo {start + i}'} for i, u in enumerate(urls)]}


def serp_calls(rm):
    return [dict(parse_qsl(urlsplit(c.request.url).query)) for c in rm.calls if c.request.url.startswith(SERP)]


def test_scrape_pages_until_empty_then_resumes_from_cache(server, tmp_path):
    out = tmp_path / 'out'
    with responses.RequestsMock() as rm:
        rm.add_passthru(server.base)
        rm.get(SERP, json=serp_page([server.url('/good.jpg'), server.url('/404.jpg')]))
        rm.get(SERP, json=serp_page([server.url('/good.png'), server.url('/dup-big.jpg')], start=2))
        rm.get(SERP, json={'search_metadata': {'status': 'Success'}, 'images_results': []})
        counts = scrape(out, ['port wine stain face'], max_pages=10, client=serpapi_client(api_key=KEY), cfg=cfg())
        calls = serp_calls(rm)
    assert counts == Counter(ok=2, error=1, duplicate=1)
    assert [(c['engine'], c['q'], c['ijn']) for c in calls] == [('google_images', 'port wine stain face', str(i))
                                                               for i in range(3)]
    recs = {r['url'].replace(server.base, ''): r for r in read_jsonl(out / MANIFEST)}
    assert (recs['/good.png']['query'], recs['/good.png']['source'], recs['/good.png']['title'], recs['/good.png']['page']) \
        == ('port wine stain face', 'https://site.example/2', 'PWS photo 2', 1)
    hits = dict(server.hits)
    with responses.RequestsMock() as rm:  # everything cached: no search, no download
        rm.add_passthru(server.base)
        assert scrape(out, ['port wine stain face'], max_pages=10, client=serpapi_client(api_key=KEY)) == Counter(resumed=4)
        assert serp_calls(rm) == []
    assert dict(server.hits) == hits


def test_200_with_error_ends_the_query_cleanly(server, tmp_path):
    with responses.RequestsMock() as rm:
        rm.add_passthru(server.base)
        rm.get(SERP, json=serp_page([server.url('/good.jpg')]))
        rm.get(SERP, json={'search_metadata': {'status': 'Error'}, 'error': "Google hasn't returned any results for this query."})
        rm.get(SERP, json=serp_page([server.url('/cat.jpg')]))
        rm.get(SERP, json={'error': "Google hasn't returned any results for this query."})
        counts = scrape(tmp_path / 'out', ['q one', 'q two'], max_pages=5, client=serpapi_client(api_key=KEY), cfg=cfg())
        calls = serp_calls(rm)
    assert counts == Counter(ok=2)
    assert [(c['q'], c['ijn']) for c in calls] == [('q one', '0'), ('q one', '1'), ('q two', '0'), ('q two', '1')]


def test_missing_key_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('SERPAPI_API_KEY', raising=False)
    with pytest.raises(MissingAPIKey, match='SERPAPI_API_KEY is not set'):
        scrape(tmp_path / 'out', ['pws'])
    with pytest.raises(SystemExit) as e:
        main(['scrape', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1
    assert 'SERPAPI_API_KEY is not set' in err and 'https://serpapi.com/manage-api-key' in err


def test_key_never_appears_in_output_manifest_or_errors(server, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv('SERPAPI_API_KEY', KEY)
    out = tmp_path / 'out'
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rm:
        rm.add_passthru(server.base)
        rm.get(SERP, json=serp_page([server.url('/good.jpg'), server.url('/404.jpg')]))
        rm.get(SERP, json={'error': "Google hasn't returned any results for this query."})
        with pytest.raises(SystemExit) as e:
            main(['scrape', '--out', str(out), '-q', 'pws adult', *ALLOW_LOCAL])
        assert e.value.code == 0
        assert all(c['api_key'] == KEY for c in serp_calls(rm))  # the key did go to SerpApi...
        rm.get(SERP, status=401, json={'error': 'Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key'})
        with pytest.raises(SystemExit) as e:
            main(['scrape', '--out', str(out), '-q', 'pws child', *ALLOW_LOCAL])
        assert e.value.code == 2
        rm.remove(responses.GET, SERP)
        rm.get(SERP, body=requests.ConnectionError(f'Max retries exceeded with url: /search?q=x&api_key={KEY}'))
        with pytest.raises(SearchError) as se:
            scrape(out, ['pws teen'], client=serpapi_client(), sleep=lambda s: None)
    cap = capsys.readouterr()
    assert 'ok=1' in cap.out and 'HTTP 401' in cap.err and 'SERPAPI_API_KEY' in cap.err
    assert 'could not reach serpapi.com' in str(se.value)
    texts = [cap.out, cap.err, caplog.text, str(se.value), repr(se.value)] + \
            [p.read_text(errors='replace') for p in out.iterdir() if p.suffix in ('.jsonl', '.json', '.txt')]
    assert len(texts) >= 7 and not any(KEY in t for t in texts)  # ...and nowhere else
    assert se.value.__cause__ is None and se.value.__suppress_context__
