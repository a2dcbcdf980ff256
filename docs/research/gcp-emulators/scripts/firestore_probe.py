"""Firestore emulator REST probes (requests). FS=http://127.0.0.1:8681 python firestore_probe.py"""
import base64, json, os, threading, time, requests
FS = os.environ.get("FS", "http://127.0.0.1:8681"); P = "demo-alien"
ROOT = f"projects/{P}/databases/(default)/documents"
DB = f"{FS}/v1/{ROOT}"
s = requests.Session()
def show(t, r): print(f"== {t}\n-> {r.status_code} {r.text.strip()[:400]}\n")
def name(k): return f"{ROOT}/kv/{k}"
def put(k, v=b"x", exp=None):
    f = {"value": {"bytesValue": base64.b64encode(v).decode()}}
    if exp: f["expiresAt"] = {"timestampValue": exp}
    return {"update": {"name": name(k), "fields": f}}
def commit(writes, **kw): return s.post(f"{DB}:commit", json={"writes": writes, **kw})
s.delete(f"{FS}/emulator/v1/projects/{P}/databases/(default)/documents")

r = commit([put("a", b"1")]); ut = r.json()["writeResults"][0]["updateTime"]; print("updateTime", ut)
show("commit update with currentDocument.updateTime = current (body)", commit([{**put("a", b"2"), "currentDocument": {"updateTime": ut}}]))
show("same, stale now", commit([{**put("a", b"3"), "currentDocument": {"updateTime": ut}}]))
show("updateTime precondition on missing doc", commit([{**put("zz"), "currentDocument": {"updateTime": ut}}]))
ut2 = s.get(f"{DB}/kv/a").json()["updateTime"]
show("PATCH ?currentDocument.updateTime=<url-encoded>", s.patch(f"{DB}/kv/a", params={"currentDocument.updateTime": ut2}, json={"fields": {}}))
show("PATCH ?currentDocument.updateTime=<stale>", s.patch(f"{DB}/kv/a", params={"currentDocument.updateTime": ut}, json={"fields": {}}))
# exists=true on missing inside batch
show("commit exists=true on missing", commit([{**put("missing"), "currentDocument": {"exists": True}}]))
# bytes round trip incl. empty, binary
blob = bytes(range(256)) * 4
commit([put("bin", blob), put("empty", b"")])
d = s.get(f"{DB}/kv/bin").json(); print("bin roundtrip ok:", base64.b64decode(d["fields"]["value"]["bytesValue"]) == blob)
print("empty:", s.get(f"{DB}/kv/empty").json()["fields"])
# big value: 1 MiB limit per document
show("value 1,000,000 bytes", commit([put("big", b"\0" * 1_000_000)]))
show("value 1,048,600 bytes", commit([put("big2", b"\0" * 1_048_600)]))
# timestamps: nanos
show("timestamp with nanos", commit([put("ts", b"", "2030-01-01T00:00:00.123456789Z")]))
print("read ts:", s.get(f"{DB}/kv/ts").json()["fields"]["expiresAt"])
# ordering of __name__, key alphabet [A-Za-z0-9-_:.]
keys = ["p:a", "p:B", "p:-", "p:_", "p:.", "p:0", "p:9", "p:a.b", "p:aa", "p:z", "p:Z", "p::", "p", "q:1", "o:1", "p:10", "p:2"]
commit([put(k) for k in keys])
def scan(prefix, after=None, limit=100):
    flt = [{"fieldFilter": {"field": {"fieldPath": "__name__"}, "op": "GREATER_THAN" if after else "GREATER_THAN_OR_EQUAL",
                            "value": {"referenceValue": name(after or prefix)}}},
           {"fieldFilter": {"field": {"fieldPath": "__name__"}, "op": "LESS_THAN", "value": {"referenceValue": name(prefix + "~")}}}]
    q = {"structuredQuery": {"from": [{"collectionId": "kv"}], "where": {"compositeFilter": {"op": "AND", "filters": flt}},
                             "orderBy": [{"field": {"fieldPath": "__name__"}, "direction": "ASCENDING"}], "limit": limit}}
    r = s.post(f"{DB}:runQuery", json=q)
    return r, [x["document"]["name"].rsplit("/", 1)[1] for x in r.json() if "document" in x]
r, got = scan("p:"); print("scan p: ->", got); print("python byte-sorted:", sorted(k for k in keys if k.startswith("p:")))
r, got = scan("p:", after="p:a", limit=3); print("scan p: after p:a limit 3 ->", got)
print("raw runQuery element (empty result):", s.post(f"{DB}:runQuery", json={"structuredQuery": {"from": [{"collectionId": "nothing"}]}}).text[:300])
r, got = scan("p:", limit=2); print("runQuery raw (limit 2):", r.text[:600])
# fields mask: only __name__? select
# transaction
tx = s.post(f"{DB}:beginTransaction", json={}).json(); print("beginTransaction:", tx)
g = s.post(f"{DB}:batchGet", json={"documents": [name("a"), name("nope")], "transaction": tx["transaction"]}); print("batchGet in tx:", g.text[:500])
# concurrent tx: another tx writes 'a' before commit
tx2 = s.post(f"{DB}:beginTransaction", json={}).json()["transaction"]
s.post(f"{DB}:batchGet", json={"documents": [name("a")], "transaction": tx2})
t0 = time.time(); r_other = commit([put("a", b"other")]); print("plain commit on doc read by open tx:", r_other.status_code, r_other.text[:200], f"{time.time()-t0:.2f}s")
show("commit tx after conflicting write", commit([put("a", b"tx")], transaction=tx["transaction"]))
show("commit tx2", commit([put("a", b"tx2")], transaction=tx2))
