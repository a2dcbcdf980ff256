"""Race and latency on the Firestore emulator. FS=... python firestore_race.py [trials]"""
import base64, os, sys, threading, time, statistics, requests
FS = os.environ.get("FS", "http://127.0.0.1:8681"); P = "demo-alien"
ROOT = f"projects/{P}/databases/(default)/documents"; DB = f"{FS}/v1/{ROOT}"
trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
def name(k): return f"{ROOT}/kv/{k}"
def put(k, v): return {"update": {"name": name(k), "fields": {"value": {"bytesValue": base64.b64encode(v).decode()}}}}
requests.delete(f"{FS}/emulator/v1/projects/{P}/databases/(default)/documents")
codes = {}
bad = 0
for t in range(trials):
    key = f"race{t}"; wins = []; barrier = threading.Barrier(16)
    def go(i):
        s = requests.Session(); barrier.wait()
        r = s.post(f"{DB}:commit", json={"writes": [{**put(key, str(i).encode()), "currentDocument": {"exists": False}}]})
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        if r.status_code == 200: wins.append(i)
    th = [threading.Thread(target=go, args=(i,)) for i in range(16)]; [x.start() for x in th]; [x.join() for x in th]
    v = base64.b64decode(requests.get(f"{DB}/kv/{key}").json()["fields"]["value"]["bytesValue"]).decode()
    if len(wins) != 1 or v != str(wins[0]): bad += 1; print("BAD", wins, v)
print(f"create-if-absent race: {trials} trials x16, bad={bad}, status counts={codes}")
# versioned race: all read same updateTime then update with precondition
codes = {}; bad = 0
for t in range(trials):
    key = f"ver{t}"
    ut = requests.post(f"{DB}:commit", json={"writes": [put(key, b"0")]}).json()["writeResults"][0]["updateTime"]
    wins = []; barrier = threading.Barrier(16)
    def go(i):
        s = requests.Session(); barrier.wait()
        r = s.post(f"{DB}:commit", json={"writes": [{**put(key, str(i).encode()), "currentDocument": {"updateTime": ut}}]})
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        if r.status_code == 200: wins.append(i)
    th = [threading.Thread(target=go, args=(i,)) for i in range(16)]; [x.start() for x in th]; [x.join() for x in th]
    if len(wins) != 1: bad += 1; print("BAD", wins)
print(f"updateTime race: {trials} trials x16, bad={bad}, status counts={codes}")
# latency, one keep-alive session
s = requests.Session()
def lat(label, f, n=200):
    xs = []
    for i in range(n):
        t0 = time.perf_counter(); r = f(i); xs.append((time.perf_counter() - t0) * 1000); assert r.status_code < 300, r.text
    xs.sort(); print(f"{label}: median {statistics.median(xs):.1f} ms, p95 {xs[int(n*.95)]:.1f} ms")
lat("commit 1 put", lambda i: s.post(f"{DB}:commit", json={"writes": [put(f"l{i}", b"v" * 100)]}))
lat("GET doc", lambda i: s.get(f"{DB}/kv/l{i}"))
lat("commit 10 puts exists=false", lambda i: s.post(f"{DB}:commit", json={"writes": [{**put(f"m{i}-{j}", b"v"), "currentDocument": {"exists": False}} for j in range(10)]}), 50)
q = lambda i: s.post(f"{DB}:runQuery", json={"structuredQuery": {"from": [{"collectionId": "kv"}], "where": {"fieldFilter": {"field": {"fieldPath": "__name__"}, "op": "GREATER_THAN_OR_EQUAL", "value": {"referenceValue": name("m1")}}}, "orderBy": [{"field": {"fieldPath": "__name__"}}], "limit": 20}})
lat(f"runQuery limit 20 (collection ~{200+500+trials*2} docs)", q, 50)
t0 = time.perf_counter(); r = requests.delete(f"{FS}/emulator/v1/projects/{P}/databases/(default)/documents"); print(f"reset: {r.status_code} {(time.perf_counter()-t0)*1000:.0f} ms")
