"""S3 against moto: path-style presigned PUT/GET used with plain curl, HeadBucket on a missing bucket."""
import subprocess

from botocore.client import Config
from botocore.exceptions import ClientError

from common import URL, client, err, show

path = Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}, parameter_validation=False)
s3 = client("s3", config=path)
B = "alien-payloads"

try:
    s3.head_bucket(Bucket="no-such-bucket")
except ClientError as e:
    show("HeadBucket missing", err(e))
try:
    s3.get_object(Bucket="no-such-bucket", Key="k")
except ClientError as e:
    show("GetObject missing bucket", err(e))
s3.create_bucket(Bucket=B)
show("HeadBucket present", s3.head_bucket(Bucket=B)["ResponseMetadata"]["HTTPStatusCode"])
try:
    s3.get_object(Bucket=B, Key="nope")
except ClientError as e:
    show("GetObject missing key", err(e))
try:
    s3.head_object(Bucket=B, Key="nope")
except ClientError as e:
    show("HeadObject missing key", err(e))
try:
    s3.create_bucket(Bucket="ab")
    show("CreateBucket 2-char", "accepted")
except ClientError as e:
    show("CreateBucket 2-char", err(e))


def curl(*args):
    p = subprocess.run(["curl", "-sS", "-o", "/tmp/curl_body", "-w", "%{http_code}", *args], capture_output=True, text=True)
    body = open("/tmp/curl_body", "rb").read()
    return p.stdout, body[:300]


key = "arc/commands/cmd_1/params"
put_url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": key}, ExpiresIn=3600)
show("presigned PUT url", put_url)
open("/tmp/payload", "wb").write(b"x" * 200_000)
show("curl PUT (no content-type)", curl("-X", "PUT", "--data-binary", "@/tmp/payload", put_url))
get_url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": key}, ExpiresIn=3600)
code, body = curl(get_url)
show("curl GET", (code, len(open('/tmp/curl_body', 'rb').read())))
# tampered signature
show("curl GET bad signature", curl(get_url.replace("X-Amz-Signature=", "X-Amz-Signature=00")))
# expired URL
exp_url = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": key}, ExpiresIn=1)
import time
time.sleep(2)
show("curl GET expired (ExpiresIn=1, after 2s)", curl(exp_url))
# PUT with content-type signed
ct_url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "ct", "ContentType": "application/octet-stream"}, ExpiresIn=60)
show("presigned PUT signed Content-Type, curl w/o header", curl("-X", "PUT", "--data-binary", "abc", "-H", "Content-Type:", ct_url))
show("presigned PUT signed Content-Type, curl with other header", curl("-X", "PUT", "--data-binary", "abc", "-H", "Content-Type: text/plain", ct_url))
# content length in presigned URL
cl_url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "cl", "ContentLength": 10}, ExpiresIn=60)
show("presigned PUT with ContentLength=10 url", cl_url)
show("  curl 10 bytes", curl("-X", "PUT", "--data-binary", "0123456789", cl_url))
show("  curl 20 bytes", curl("-X", "PUT", "--data-binary", "01234567890123456789", cl_url))
# presigned POST with content-length-range (the S3 way to cap size)
post = s3.generate_presigned_post(B, "capped", Conditions=[["content-length-range", 0, 10]], ExpiresIn=60)
show("presigned POST url", post["url"])
args = []
for k, v in post["fields"].items():
    args += ["-F", f"{k}={v}"]
show("  POST 5 bytes", curl(*args, "-F", "file=@-;filename=x", post["url"], "--data-binary", "") if False else curl(*args, "-F", "file=12345", post["url"]))
show("  POST 50 bytes", curl(*args, "-F", "file=" + "x" * 50, post["url"]))
# object_store style: virtual hosted style against moto?
vh = client("s3", config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}))
try:
    vh.put_object(Bucket=B, Key="vh", Body=b"x")
    show("virtual-hosted put via endpoint 127.0.0.1", "ok (botocore falls back to path for IP endpoints?)")
except Exception as e:
    show("virtual-hosted put", repr(e)[:200])
# Delete of missing object -> 204
show("DeleteObject missing key", s3.delete_object(Bucket=B, Key="never")["ResponseMetadata"]["HTTPStatusCode"])
# conditional PUT If-None-Match: * (object_store PutMode::Create)
p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "If-None-Match: *", "--data-binary", "y",
                    s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": key}, ExpiresIn=60)], capture_output=True, text=True)
show("PUT If-None-Match:* over existing object (unsigned header)", p.stdout)
try:
    s3.put_object(Bucket=B, Key=key, Body=b"z", IfNoneMatch="*")
    show("PutObject IfNoneMatch=* existing", "accepted")
except ClientError as e:
    show("PutObject IfNoneMatch=* existing", err(e))
