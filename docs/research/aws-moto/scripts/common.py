import os
import boto3
from botocore.config import Config

PORT = open(os.path.join(os.path.dirname(__file__), "..", "port")).read().strip()
URL = os.environ.get("MOTO_URL", f"http://127.0.0.1:{PORT}")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def client(name, **kw):
    cfg = kw.pop("config", None) or Config(retries={"max_attempts": 1}, parameter_validation=False)
    return boto3.client(name, endpoint_url=URL, region_name="us-east-1", config=cfg, **kw)


def err(e):
    r = e.response
    return f"{type(e).__name__} code={r['Error'].get('Code')} msg={r['Error'].get('Message')!r} http={r['ResponseMetadata'].get('HTTPStatusCode')}"


def show(label, v):
    print(f"--- {label}: {v}")
