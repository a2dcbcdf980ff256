"""Does moto bind a presigned URL to its method and key (PayloadStore contract
`presigned_urls_are_bound_to_method_and_key`)? Uses plain curl like a remote client."""
import subprocess

from botocore.client import Config

from common import client, show

s3 = client("s3", config=Config(s3={"addressing_style": "path"}, parameter_validation=False))
B = "alien-binding"
s3.create_bucket(Bucket=B)
s3.put_object(Bucket=B, Key="bound/one", Body=b"original")
s3.put_object(Bucket=B, Key="bound/two", Body=b"other")
get = s3.generate_presigned_url("get_object", Params={"Bucket": B, "Key": "bound/one"}, ExpiresIn=60)
put = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "bound/one"}, ExpiresIn=60)


def curl(*args):
    p = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True)
    body, _, code = p.stdout.rpartition("\n")
    return code, body[:60]


show("GET URL used to PUT (-T, no content-type)", curl("-X", "PUT", "--data-binary", "overwritten", "-H", "Content-Type: application/octet-stream", get))
show("  object now", s3.get_object(Bucket=B, Key="bound/one")["Body"].read())
show("PUT URL used to GET", curl(put))
show("GET URL moved to another key", curl(get.replace("bound/one", "bound/two")))
show("GET URL with signature zeroed", curl(get.split("X-Amz-Signature=")[0] + "X-Amz-Signature=" + "0" * 64))
show("GET URL with no query at all", curl(get.split("?")[0]))
