#!/bin/sh
# Firestore emulator REST probes with curl. Usage: FS=http://127.0.0.1:8681 sh firestore_rest.sh
FS=${FS:-http://127.0.0.1:8681}; P=${P:-demo-alien}
DB="$FS/v1/projects/$P/databases/(default)/documents"
c() { echo "== $1"; shift; curl -s -g -w '\n-> HTTP %{http_code} %{time_total}s\n' "$@"; }
c "reset" -X DELETE "$FS/emulator/v1/projects/$P/databases/(default)/documents"
# create-if-absent via createDocument (documentId) - 409 if exists
c "createDocument k1" -X POST "$DB/kv?documentId=k1" -H 'content-type: application/json' \
  -d '{"fields":{"value":{"bytesValue":"aGVsbG8="},"expiresAt":{"timestampValue":"2030-01-01T00:00:00Z"}}}'
c "createDocument k1 again" -X POST "$DB/kv?documentId=k1" -H 'content-type: application/json' -d '{"fields":{}}'
# patch with currentDocument.exists=false
c "patch exists=false k2" -X PATCH "$DB/kv/k2?currentDocument.exists=false" -H 'content-type: application/json' \
  -d '{"fields":{"value":{"bytesValue":"AAEC"}}}'
c "patch exists=false k2 again" -X PATCH "$DB/kv/k2?currentDocument.exists=false" -H 'content-type: application/json' \
  -d '{"fields":{"value":{"bytesValue":"AAEC"}}}'
c "get k2" "$DB/kv/k2"
UT=$(curl -s -g "$DB/kv/k2" | python3 -c 'import sys,json;print(json.load(sys.stdin)["updateTime"])')
echo "updateTime=$UT"
c "patch updateTime=current" -X PATCH "$DB/kv/k2?currentDocument.updateTime=$UT" -H 'content-type: application/json' -d '{"fields":{"value":{"bytesValue":"AQ=="}}}'
c "patch updateTime=stale" -X PATCH "$DB/kv/k2?currentDocument.updateTime=$UT" -H 'content-type: application/json' -d '{"fields":{"value":{"bytesValue":"Ag=="}}}'
c "patch updateTime on missing doc" -X PATCH "$DB/kv/nope?currentDocument.updateTime=$UT" -H 'content-type: application/json' -d '{"fields":{}}'
c "get missing" "$DB/kv/nope"
c "delete missing (no precondition)" -X DELETE "$DB/kv/nope"
c "delete missing exists=true" -X DELETE "$DB/kv/nope?currentDocument.exists=true"
c "delete k1 exists=true" -X DELETE "$DB/kv/k1?currentDocument.exists=true"
# commit: batch, one failing precondition
N="projects/$P/databases/(default)/documents/kv"
c "commit 3 writes, 2nd fails (k2 exists=false)" -X POST "$DB:commit" -H 'content-type: application/json' -d "{\"writes\":[
 {\"update\":{\"name\":\"$N/b1\",\"fields\":{\"value\":{\"bytesValue\":\"AA==\"}}},\"currentDocument\":{\"exists\":false}},
 {\"update\":{\"name\":\"$N/k2\",\"fields\":{\"value\":{\"bytesValue\":\"AA==\"}}},\"currentDocument\":{\"exists\":false}},
 {\"delete\":\"$N/k3\"}]}"
c "get b1 (should be 404)" "$DB/kv/b1"
c "commit ok (create b1 + update k2 w/o precond + delete k3)" -X POST "$DB:commit" -H 'content-type: application/json' -d "{\"writes\":[
 {\"update\":{\"name\":\"$N/b1\",\"fields\":{\"value\":{\"bytesValue\":\"AA==\"}}},\"currentDocument\":{\"exists\":false}},
 {\"update\":{\"name\":\"$N/k2\",\"fields\":{\"value\":{\"bytesValue\":\"AA==\"}}}},
 {\"delete\":\"$N/k3\"}]}"
c "commit same doc twice" -X POST "$DB:commit" -H 'content-type: application/json' -d "{\"writes\":[
 {\"update\":{\"name\":\"$N/b2\",\"fields\":{}}},{\"update\":{\"name\":\"$N/b2\",\"fields\":{}}}]}"
c "commit delete stale updateTime" -X POST "$DB:commit" -H 'content-type: application/json' -d "{\"writes\":[
 {\"delete\":\"$N/b1\",\"currentDocument\":{\"updateTime\":\"2001-01-01T00:00:00.000001Z\"}}]}"
c "no auth header, with Bearer owner" -H 'Authorization: Bearer owner' "$DB/kv/b1"
c "invalid doc id '..'" -X PATCH "$DB/kv/..?currentDocument.exists=false" -H 'content-type: application/json' -d '{"fields":{}}'
c "doc id __x__" -X PATCH "$DB/kv/__x__" -H 'content-type: application/json' -d '{"fields":{}}'
