import base64, threading, time, requests
FS="http://127.0.0.1:8681"; ROOT="projects/demo-alien/databases/(default)/documents"; DB=f"{FS}/v1/{ROOT}"
def put(k,v): return {"update":{"name":f"{ROOT}/kv/{k}","fields":{"value":{"bytesValue":base64.b64encode(v).decode()}}}}
for t in range(40):
    key=f"det{t}"; ut=requests.post(f"{DB}:commit",json={"writes":[put(key,b"0")]}).json()["writeResults"][0]["updateTime"]
    wins=[]; b=threading.Barrier(16)
    def go(i):
        s=requests.Session(); b.wait(); r=s.post(f"{DB}:commit",json={"writes":[{**put(key,str(i).encode()),"currentDocument":{"updateTime":ut}}]})
        if r.status_code==200: wins.append((i,r.json()["writeResults"][0]["updateTime"]))
    th=[threading.Thread(target=go,args=(i,)) for i in range(16)]; [x.start() for x in th]; [x.join() for x in th]
    if len(wins)!=1: print("double winners", wins, "final", requests.get(f"{DB}/kv/{key}").json()["updateTime"])
t0=time.time()
key="txtime"; ut=requests.post(f"{DB}:commit",json={"writes":[put(key,b"0")]}).json()["writeResults"][0]["updateTime"]; b=threading.Barrier(16); res=[]
def go2(i):
    s=requests.Session(); tx=s.post(f"{DB}:beginTransaction",json={}).json()["transaction"]; b.wait(); t=time.time()
    s.post(f"{DB}:batchGet",json={"documents":[f"{ROOT}/kv/{key}"],"transaction":tx})
    r=s.post(f"{DB}:commit",json={"writes":[{**put(key,b"x"),"currentDocument":{"updateTime":ut}}],"transaction":tx}); res.append((r.status_code, round(time.time()-t,2), r.json().get("error",{}).get("message","")[:60]))
th=[threading.Thread(target=go2,args=(i,)) for i in range(16)]; [x.start() for x in th]; [x.join() for x in th]
print("txread 16 racers:", sorted(res), f"total {time.time()-t0:.1f}s")
