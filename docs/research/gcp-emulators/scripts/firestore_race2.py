"""updateTime-precondition race: plain commit vs transaction (beginTransaction+batchGet+commit). FS=... python firestore_race2.py [trials]"""
import base64, os, sys, threading, requests
FS = os.environ.get("FS", "http://127.0.0.1:8681"); P = "demo-alien"
ROOT = f"projects/{P}/databases/(default)/documents"; DB = f"{FS}/v1/{ROOT}"
trials = int(sys.argv[1]) if len(sys.argv) > 1 else 40
def name(k): return f"{ROOT}/kv/{k}"
def put(k, v): return {"update": {"name": name(k), "fields": {"value": {"bytesValue": base64.b64encode(v).decode()}}}}
for mode in os.environ.get("MODES","plain,tx,txread").split(","):
    codes = {}; bad = 0
    for t in range(trials):
        key = f"{mode}{t}"
        ut = requests.post(f"{DB}:commit", json={"writes": [put(key, b"0")]}).json()["writeResults"][0]["updateTime"]
        wins = []; barrier = threading.Barrier(16)
        def go(i):
            s = requests.Session(); body = {"writes": [{**put(key, str(i).encode()), "currentDocument": {"updateTime": ut}}]}
            if mode == "tx":  # transaction without a read
                body["transaction"] = s.post(f"{DB}:beginTransaction", json={}).json()["transaction"]
            if mode == "txread":
                body["transaction"] = s.post(f"{DB}:beginTransaction", json={}).json()["transaction"]
                s.post(f"{DB}:batchGet", json={"documents": [name(key)], "transaction": body["transaction"]})
            barrier.wait()
            r = s.post(f"{DB}:commit", json=body)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if r.status_code == 200: wins.append(i)
        th = [threading.Thread(target=go, args=(i,)) for i in range(16)]; [x.start() for x in th]; [x.join() for x in th]
        if len(wins) != 1: bad += 1
    print(f"{mode}: {trials} trials x16, trials with !=1 winner: {bad}, status counts={codes}", flush=True)
