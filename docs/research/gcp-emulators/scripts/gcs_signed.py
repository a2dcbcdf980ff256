"""V4 signed URLs from google-cloud-storage with a throwaway service-account key, against gcp-storage-emulator.
GCS=http://127.0.0.1:9023 python gcs_signed.py"""
import datetime, json, os, requests
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import serialization
from google.oauth2 import service_account
from google.cloud import storage
from google.auth.credentials import AnonymousCredentials
GCS = os.environ.get("GCS", "http://127.0.0.1:9023"); B = "alien-signed"
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
info = {"type": "service_account", "project_id": "demo", "private_key_id": "k1", "private_key": pem,
        "client_email": "alien@demo.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}
creds = service_account.Credentials.from_service_account_info(info)
os.environ["STORAGE_EMULATOR_HOST"] = GCS
client = storage.Client(project="demo", credentials=AnonymousCredentials())
requests.get(f"{GCS}/wipe")
client.create_bucket(B)
blob = client.bucket(B).blob("cmd/1/payload")
exp = datetime.timedelta(minutes=5)
put_url = blob.generate_signed_url(version="v4", expiration=exp, method="PUT", credentials=creds, api_access_endpoint=GCS, content_type="application/octet-stream")
get_url = blob.generate_signed_url(version="v4", expiration=exp, method="GET", credentials=creds, api_access_endpoint=GCS)
print("PUT URL:", put_url[:200], "...")
body = os.urandom(1 << 20)
r = requests.put(put_url, data=body, headers={"content-type": "application/octet-stream"}); print("signed PUT:", r.status_code, r.text[:200])
r = requests.get(get_url); print("signed GET:", r.status_code, len(r.content), r.content == body)
bad = get_url.replace("X-Goog-Signature=", "X-Goog-Signature=00")
r = requests.get(bad); print("GET with tampered signature:", r.status_code, "(accepted => signatures not verified)")
r = requests.get(f"{GCS}/{B}/cmd/1/payload"); print("GET without any signature:", r.status_code)
# path-style with virtual-host-less endpoint: url shape
print("URL path:", get_url.split("?")[0])
# python client through the emulator
print("client download:", len(blob.download_as_bytes()))
print("client exists:", blob.exists(), client.bucket(B).blob("nope").exists())
from google.api_core.exceptions import PreconditionFailed
try:
    blob.upload_from_string(b"x", if_generation_match=0); print("client if_generation_match=0 on existing: accepted (not enforced)")
except PreconditionFailed as e: print("client if_generation_match=0: 412", e)
blob.delete(); print("client delete ok")
