"""Concurrency check: 16 concurrent conditional writers against moto's DynamoDB.

Usage: ddb_race.py TRIALS
Counts trials where the number of winners != 1 and where the winner's write was lost.
"""
import sys
import threading
import uuid

from botocore.exceptions import ClientError

from common import client, err

ddb = client("dynamodb")
T = "race-" + uuid.uuid4().hex[:8]
ddb.create_table(
    TableName=T,
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
)
N = 16
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 50
clients = [client("dynamodb") for _ in range(N)]


def item(k, v, ver):
    return {"pk": {"S": "b1"}, "sk": {"S": k}, "value": {"B": v}, "version": {"S": str(ver)}}


def run(kind):
    bad_winners = lost = 0
    for trial in range(TRIALS):
        k = f"{kind}{trial}"
        if kind != "absent":
            ddb.put_item(TableName=T, Item=item(k, b"base", 1))
        wins = []
        barrier = threading.Barrier(N)

        def go(i):
            c = clients[i]
            barrier.wait()
            try:
                if kind == "absent":
                    c.put_item(TableName=T, Item=item(k, f"r{i}".encode(), 100 + i), ConditionExpression="attribute_not_exists(pk)")
                elif kind == "version":
                    c.put_item(TableName=T, Item=item(k, f"r{i}".encode(), 100 + i), ConditionExpression="version = :v",
                               ExpressionAttributeValues={":v": {"S": "1"}})
                else:
                    c.transact_write_items(TransactItems=[
                        {"Put": {"TableName": T, "Item": item(k, f"r{i}".encode(), 100 + i), "ConditionExpression": "version = :v",
                                 "ExpressionAttributeValues": {":v": {"S": "1"}}}},
                        {"Put": {"TableName": T, "Item": item(f"{k}:side:{i:02}", b"s", 1)}},
                    ])
                wins.append(i)
            except ClientError as e:
                if e.response["Error"]["Code"] not in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                    print("unexpected", err(e))

        ts = [threading.Thread(target=go, args=(i,)) for i in range(N)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        got = ddb.get_item(TableName=T, Key={"pk": {"S": "b1"}, "sk": {"S": k}}, ConsistentRead=True)["Item"]
        if len(wins) != 1:
            bad_winners += 1
        elif got["value"]["B"] != f"r{wins[0]}".encode():
            lost += 1
        if kind == "tx" and len(wins) == 1:
            sides = ddb.query(TableName=T, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                              ExpressionAttributeValues={":pk": {"S": "b1"}, ":p": {"S": f"{k}:side:"}}, ConsistentRead=True)["Items"]
            if [s["sk"]["S"] for s in sides] != [f"{k}:side:{wins[0]:02}"]:
                lost += 1
    print(f"{kind}: {TRIALS} trials, {bad_winners} with != 1 winner, {lost} with the winner's write lost/other writes visible")


for kind in ("absent", "version", "tx"):
    run(kind)
