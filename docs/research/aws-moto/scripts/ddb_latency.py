"""Rough per-request latency of moto DynamoDB (boto3 client overhead included) and the cost of
TransactWriteItems growing with table size (moto deep-copies the whole table per transaction)."""
import time, uuid
from common import client
ddb = client("dynamodb")
T = "lat-" + uuid.uuid4().hex[:6]
ddb.create_table(TableName=T, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                 AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
def item(k): return {"pk": {"S": "b" + str(hash(k) % 16)}, "sk": {"S": k}, "value": {"B": b"x" * 100}, "version": {"S": "1"}}
for n in (0, 1000, 5000):
    while sum(1 for _ in range(1)) and ddb.describe_table(TableName=T)["Table"]["ItemCount"] < n:
        have = ddb.describe_table(TableName=T)["Table"]["ItemCount"]
        for i in range(have, n):
            ddb.put_item(TableName=T, Item=item(f"fill:{i:06d}"))
    t = time.perf_counter()
    for i in range(100):
        ddb.put_item(TableName=T, Item=item(f"p:{n}:{i}"), ConditionExpression="attribute_not_exists(pk)")
    put = (time.perf_counter() - t) * 10
    t = time.perf_counter()
    for i in range(50):
        ddb.transact_write_items(TransactItems=[{"Put": {"TableName": T, "Item": item(f"t:{n}:{i}:a")}}, {"Put": {"TableName": T, "Item": item(f"t:{n}:{i}:b")}}])
    tx = (time.perf_counter() - t) * 20
    print(f"items~{n}: PutItem {put:.1f} ms/op, TransactWriteItems(2) {tx:.1f} ms/op")
