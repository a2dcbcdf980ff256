"""Golden vector for a Rust V4 signer: google-cloud-storage's own V4 signing with a fixed timestamp and a
throwaway RSA key (written to v4_vector.json). python gcs_v4_vector.py > v4_vector.json"""
import datetime, json
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import serialization
from google.oauth2 import service_account
from google.cloud.storage._signing import generate_signed_url_v4
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
creds = service_account.Credentials.from_service_account_info({"type": "service_account", "project_id": "demo", "private_key_id": "k1",
    "private_key": pem, "client_email": "alien@demo.iam.gserviceaccount.com", "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"})
ts = "20260102T030405Z"  # _request_timestamp takes the X-Goog-Date string
out = {"private_key_pem": pem, "client_email": creds.service_account_email, "request_timestamp": "20260102T030405Z", "cases": []}
for method, host, res, hdrs in [("GET", "https://storage.googleapis.com", "/alien-payloads/cmd/abc/payload", None),
                                ("PUT", "https://storage.googleapis.com", "/alien-payloads/cmd/abc/response", {"content-type": "application/octet-stream"}),
                                ("GET", "http://127.0.0.1:9023", "/alien-payloads/a%20b/c", None)]:
    url = generate_signed_url_v4(creds, res, expiration=datetime.timedelta(seconds=900), api_access_endpoint=host, method=method,
                                 headers=hdrs, _request_timestamp=ts)
    out["cases"].append({"method": method, "endpoint": host, "resource": res, "headers": hdrs or {}, "expires": 900, "url": url})
print(json.dumps(out, indent=1))
