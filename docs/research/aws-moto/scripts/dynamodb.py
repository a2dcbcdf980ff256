"""What moto's DynamoDB does for the operations the alien-aws Kv needs."""
import json
import threading
import time

from botocore.exceptions import ClientError

from common import client, err, show

ddb = client("dynamodb")
T = "alien-kv-test"

# DescribeTable on a missing table
try:
    ddb.describe_table(TableName=T)
except ClientError as e:
    show("DescribeTable missing", err(e))

# short table name
try:
    ddb.create_table(TableName="ab", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
except ClientError as e:
    show("CreateTable 2-char name", err(e))

r = ddb.create_table(
    TableName=T,
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
)
show("CreateTable status", r["TableDescription"]["TableStatus"])
show("DescribeTable status", ddb.describe_table(TableName=T)["Table"]["TableStatus"])
try:
    ddb.create_table(
        TableName=T,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST")
except ClientError as e:
    show("CreateTable twice", err(e))

# TTL
r = ddb.update_time_to_live(TableName=T, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
show("UpdateTimeToLive", r["TimeToLiveSpecification"])
show("DescribeTimeToLive", ddb.describe_time_to_live(TableName=T)["TimeToLiveDescription"])
try:
    ddb.update_time_to_live(TableName=T, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    show("UpdateTimeToLive again (same)", "accepted (real AWS: ValidationException 'TimeToLive is already enabled')")
except ClientError as e:
    show("UpdateTimeToLive again", err(e))


def key(k):
    return {"pk": {"S": "bucket_3"}, "sk": {"S": k}}


def item(k, v, ver, ttl=None):
    it = {**key(k), "value": {"B": v}, "version": {"S": str(ver)}}
    if ttl is not None:
        it["ttl"] = {"N": str(ttl)}
    return it


now = int(time.time())
# conditional put-if-absent (with ttl clause)
cond_absent = "attribute_not_exists(pk) OR #ttl <= :now"
r = ddb.put_item(TableName=T, Item=item("a", b"\x00\xff", 1), ConditionExpression=cond_absent,
                 ExpressionAttributeNames={"#ttl": "ttl"}, ExpressionAttributeValues={":now": {"N": str(now)}})
show("PutItem if absent (absent)", r["ResponseMetadata"]["HTTPStatusCode"])
try:
    ddb.put_item(TableName=T, Item=item("a", b"x", 2), ConditionExpression=cond_absent,
                 ExpressionAttributeNames={"#ttl": "ttl"}, ExpressionAttributeValues={":now": {"N": str(now)}},
                 ReturnValuesOnConditionCheckFailure="ALL_OLD")
except ClientError as e:
    show("PutItem if absent (present)", err(e) + " Item=" + str(e.response.get("Item")))
# present but expired (ttl in the past) -> should be treated as absent
ddb.put_item(TableName=T, Item=item("exp", b"old", 5, ttl=now - 10))
r = ddb.put_item(TableName=T, Item=item("exp", b"new", 6), ConditionExpression=cond_absent,
                 ExpressionAttributeNames={"#ttl": "ttl"}, ExpressionAttributeValues={":now": {"N": str(now)}})
show("PutItem if absent over expired item", "OK")
# wrong type comparison: ttl attribute absent on the item (no ttl) -> `#ttl <= :now` false, fine
# versioned
r = ddb.put_item(TableName=T, Item=item("a", b"v2", 2), ConditionExpression="version = :v",
                 ExpressionAttributeValues={":v": {"S": "1"}}, ReturnValues="ALL_OLD")
show("PutItem version=1 ok, ALL_OLD version", r["Attributes"]["version"])
try:
    ddb.put_item(TableName=T, Item=item("a", b"v3", 3), ConditionExpression="version = :v",
                 ExpressionAttributeValues={":v": {"S": "1"}})
except ClientError as e:
    show("PutItem stale version", err(e))
try:
    ddb.put_item(TableName=T, Item=item("missing", b"v", 3), ConditionExpression="version = :v",
                 ExpressionAttributeValues={":v": {"S": "1"}})
except ClientError as e:
    show("PutItem version on missing item", err(e))
# versioned and not expired
try:
    ddb.put_item(TableName=T, Item=item("exp2", b"v", 9, ttl=now - 5))
    ddb.put_item(TableName=T, Item=item("exp2", b"v", 10), ConditionExpression="version = :v AND (attribute_not_exists(#ttl) OR #ttl > :now)",
                 ExpressionAttributeNames={"#ttl": "ttl"},
                 ExpressionAttributeValues={":v": {"S": "9"}, ":now": {"N": str(now)}})
    show("versioned put over expired item", "WRONGLY accepted")
except ClientError as e:
    show("versioned put over expired item (expected fail)", err(e))

# delete conditional; ReturnValues
r = ddb.delete_item(TableName=T, Key=key("missing2"), ReturnValues="ALL_OLD")
show("DeleteItem missing, ALL_OLD Attributes present?", "Attributes" in r)
try:
    ddb.delete_item(TableName=T, Key=key("missing2"), ConditionExpression="attribute_exists(pk)")
except ClientError as e:
    show("DeleteItem attribute_exists on missing", err(e))

# ConsistentRead get
r = ddb.get_item(TableName=T, Key=key("a"), ConsistentRead=True)
show("GetItem ConsistentRead", {k: v for k, v in r["Item"].items()})
r = ddb.get_item(TableName=T, Key=key("nope"), ConsistentRead=True)
show("GetItem missing -> Item key present?", "Item" in r)
# empty binary value
try:
    ddb.put_item(TableName=T, Item=item("empty", b"", 1))
    r = ddb.get_item(TableName=T, Key=key("empty"), ConsistentRead=True)
    show("empty B value", r["Item"]["value"])
except ClientError as e:
    show("empty B value", err(e))

# Query begins_with + pagination
for i in range(30):
    ddb.put_item(TableName=T, Item={"pk": {"S": "bucket_7"}, "sk": {"S": f"target:d1:r1:pending:{i:04d}"}, "value": {"B": b"x" * 10}, "version": {"S": "1"}})
ddb.put_item(TableName=T, Item={"pk": {"S": "bucket_7"}, "sk": {"S": "targez"}, "value": {"B": b"x"}, "version": {"S": "1"}})
pages, keys, lek = 0, [], None
while True:
    kw = dict(TableName=T, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
              ExpressionAttributeValues={":pk": {"S": "bucket_7"}, ":p": {"S": "target:"}},
              ConsistentRead=True, Limit=7)
    if lek:
        kw["ExclusiveStartKey"] = lek
    r = ddb.query(**kw)
    pages += 1
    keys += [i["sk"]["S"] for i in r["Items"]]
    lek = r.get("LastEvaluatedKey")
    if pages == 1:
        show("Query page1 LastEvaluatedKey", lek)
    if not lek:
        break
show("Query pages/keys/sorted", (pages, len(keys), keys == sorted(keys)))
# begins_with + after: sk > :after
r = ddb.query(TableName=T, KeyConditionExpression="pk = :pk AND sk BETWEEN :a AND :b",
              ExpressionAttributeValues={":pk": {"S": "bucket_7"}, ":a": {"S": "target:d1:r1:pending:0025"}, ":b": {"S": "target:\uffff"}}, ConsistentRead=True)
show("Query BETWEEN", [i["sk"]["S"] for i in r["Items"]])
r = ddb.query(TableName=T, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)", FilterExpression="sk > :after",
              ExpressionAttributeValues={":pk": {"S": "bucket_7"}, ":p": {"S": "target:"}, ":after": {"S": "target:d1:r1:pending:0027"}}, ConsistentRead=True)
show("Query begins_with + Filter sk > after (Filter on key attr)", [i["sk"]["S"] for i in r["Items"]])
r = ddb.query(TableName=T, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)", FilterExpression="attribute_not_exists(#ttl) OR #ttl > :now",
              ExpressionAttributeNames={"#ttl": "ttl"},
              ExpressionAttributeValues={":pk": {"S": "bucket_3"}, ":p": {"S": "e"}, ":now": {"N": str(now)}}, ConsistentRead=True)
show("Query filter on ttl", [(i["sk"]["S"], i.get("ttl")) for i in r["Items"]])
# Limit + filter: Count vs ScannedCount
r = ddb.query(TableName=T, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)", FilterExpression="sk > :after",
              ExpressionAttributeValues={":pk": {"S": "bucket_7"}, ":p": {"S": "target:"}, ":after": {"S": "target:d1:r1:pending:0027"}}, ConsistentRead=True, Limit=5)
show("Query Limit=5 + filter: Count, ScannedCount, LEK", (r["Count"], r["ScannedCount"], r.get("LastEvaluatedKey")))

# TransactWriteItems
ddb.put_item(TableName=T, Item=item("held", b"1", 100))
tx = [
    {"Put": {"TableName": T, "Item": item("first", b"f", 1)}},
    {"Delete": {"TableName": T, "Key": key("held-too")}},
    {"Put": {"TableName": T, "Item": item("held", b"2", 101), "ConditionExpression": "version = :v",
             "ExpressionAttributeValues": {":v": {"S": "999"}}, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
    {"Put": {"TableName": T, "Item": item("last", b"l", 1)}},
]
try:
    ddb.transact_write_items(TransactItems=tx)
except ClientError as e:
    show("TransactWriteItems failed condition", err(e))
    show("CancellationReasons", json.dumps(e.response.get("CancellationReasons"), default=str))
    show("type(e)", type(e).__name__)
show("after failed tx: first present?", "Item" in ddb.get_item(TableName=T, Key=key("first"), ConsistentRead=True))
show("after failed tx: last present?", "Item" in ddb.get_item(TableName=T, Key=key("last"), ConsistentRead=True))
tx[2]["Put"]["ExpressionAttributeValues"] = {":v": {"S": "100"}}
r = ddb.transact_write_items(TransactItems=tx)
show("TransactWriteItems ok", r["ResponseMetadata"]["HTTPStatusCode"])
show("after ok tx: first/last present", ("Item" in ddb.get_item(TableName=T, Key=key("first")), "Item" in ddb.get_item(TableName=T, Key=key("last"))))
# ConditionCheck and delete condition in tx
try:
    ddb.transact_write_items(TransactItems=[
        {"Delete": {"TableName": T, "Key": key("nothere"), "ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"S": "1"}}}},
    ])
except ClientError as e:
    show("tx Delete with version on missing", err(e) + " reasons=" + json.dumps(e.response.get("CancellationReasons")))
# same key twice in tx
try:
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": T, "Item": item("dup", b"1", 1)}},
        {"Put": {"TableName": T, "Item": item("dup", b"2", 2)}},
    ])
except ClientError as e:
    show("tx same key twice", err(e))
# 26 items
try:
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": T, "Item": item(f"many{i}", b"1", 1)}} for i in range(101)])
except ClientError as e:
    show("tx 101 items", err(e))
try:
    r = ddb.transact_write_items(TransactItems=[{"Put": {"TableName": T, "Item": item(f"many{i}", b"1", 1)}} for i in range(26)])
    show("tx 26 items", "accepted (AWS limit is 100 since 2022)")
except ClientError as e:
    show("tx 26 items", err(e))

# item size limit: 24 KiB value fine; 400 KB limit
try:
    ddb.put_item(TableName=T, Item=item("big", b"x" * (400 * 1024 + 1), 1))
    show("PutItem > 400KB", "accepted")
except ClientError as e:
    show("PutItem > 400KB", err(e))

# Race: 16 concurrent put-if-absent
ddb_clients = [client("dynamodb") for _ in range(16)]
for trial in range(20):
    wins = []
    barrier = threading.Barrier(16)

    def go(i):
        c = ddb_clients[i]
        barrier.wait()
        try:
            c.put_item(TableName=T, Item=item(f"race{trial}", f"r{i}".encode(), i + 1), ConditionExpression="attribute_not_exists(pk)")
            wins.append(i)
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                print("race err", err(e))

    ts = [threading.Thread(target=go, args=(i,)) for i in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    if len(wins) != 1:
        show(f"RACE put-if-absent trial {trial}", f"{len(wins)} winners")
print("--- race put-if-absent: 20 trials done")
for trial in range(20):
    ddb.put_item(TableName=T, Item=item(f"vrace{trial}", b"base", 1))
    wins = []
    barrier = threading.Barrier(16)

    def go(i):
        c = ddb_clients[i]
        barrier.wait()
        try:
            c.transact_write_items(TransactItems=[
                {"Put": {"TableName": T, "Item": item(f"vrace{trial}", f"r{i}".encode(), 100 + i), "ConditionExpression": "version = :v", "ExpressionAttributeValues": {":v": {"S": "1"}}}},
                {"Put": {"TableName": T, "Item": item(f"vrace{trial}:side:{i}", b"s", 1)}},
            ])
            wins.append(i)
        except ClientError as e:
            if e.response["Error"]["Code"] != "TransactionCanceledException":
                print("race err", err(e))
            elif "ConditionalCheckFailed" not in str(e.response.get("CancellationReasons")):
                print("race reasons", e.response.get("CancellationReasons"))

    ts = [threading.Thread(target=go, args=(i,)) for i in range(16)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    if len(wins) != 1:
        show(f"RACE tx version trial {trial}", f"{len(wins)} winners")
print("--- race tx version: 20 trials done")

# TTL: are expired items hidden / deleted?
ddb.put_item(TableName=T, Item=item("ttlshort", b"s", 1, ttl=int(time.time()) + 1))
time.sleep(3)
r = ddb.get_item(TableName=T, Key=key("ttlshort"), ConsistentRead=True)
show("GetItem 2s after ttl", "still returned" if "Item" in r else "gone")
r = ddb.get_item(TableName=T, Key=key("exp"), ConsistentRead=True)
show("item 'exp' rewritten without ttl", r["Item"].get("ttl"))
# fractional ttl number
try:
    ddb.put_item(TableName=T, Item=item("fracttl", b"s", 1, ttl="1765000000.123"))
    show("fractional ttl N", ddb.get_item(TableName=T, Key=key("fracttl"))["Item"]["ttl"])
except ClientError as e:
    show("fractional ttl N", err(e))
# big version numbers in S / N
ddb.put_item(TableName=T, Item={**key("bigver"), "value": {"B": b""}, "version": {"N": str(2**63 + 5)}})
show("N with 2^63+5", ddb.get_item(TableName=T, Key=key("bigver"))["Item"]["version"])

# ListTables, DeleteTable
show("ListTables", ddb.list_tables()["TableNames"])
