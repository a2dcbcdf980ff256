"""STS AssumeRole / GetCallerIdentity and ECR control plane against moto."""
import base64
import json

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from common import URL, client, err, show

sts = client("sts")
show("GetCallerIdentity (env creds testing/testing)", {k: v for k, v in sts.get_caller_identity().items() if k != "ResponseMetadata"})

# role that does not exist in moto's IAM
arn = "arn:aws:iam::210987654321:role/alien-push-role"
r = sts.assume_role(RoleArn=arn, RoleSessionName="alien-deploy-dep_0123456789abcdef", DurationSeconds=900, ExternalId="ext-123")
creds = r["Credentials"]
show("AssumeRole (non-existent role, other account, ExternalId)", {"AssumedRoleUser": r["AssumedRoleUser"], "Expiration": str(creds["Expiration"]), "AccessKeyId": creds["AccessKeyId"], "SessionToken_len": len(creds["SessionToken"])})
# session name limits
try:
    sts.assume_role(RoleArn=arn, RoleSessionName="x" * 65)
    show("AssumeRole session name 65 chars", "accepted")
except ClientError as e:
    show("AssumeRole session name 65 chars", err(e))
try:
    sts.assume_role(RoleArn=arn, RoleSessionName="bad name!")
    show("AssumeRole session name with space/!", "accepted")
except ClientError as e:
    show("AssumeRole session name invalid chars", err(e))
try:
    sts.assume_role(RoleArn=arn, RoleSessionName="ok", DurationSeconds=100)
    show("AssumeRole DurationSeconds=100 (<900)", "accepted")
except ClientError as e:
    show("AssumeRole DurationSeconds=100", err(e))
try:
    sts.assume_role(RoleArn="not-an-arn", RoleSessionName="ok")
    show("AssumeRole RoleArn='not-an-arn'", "accepted")
except ClientError as e:
    show("AssumeRole RoleArn='not-an-arn'", err(e))
try:
    sts.assume_role(RoleArn=arn, RoleSessionName="ok", ExternalId="a")
    show("AssumeRole ExternalId 1 char (AWS min 2)", "accepted")
except ClientError as e:
    show("AssumeRole ExternalId 1 char", err(e))

# use the assumed credentials
sts2 = boto3.client("sts", endpoint_url=URL, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                    aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
show("GetCallerIdentity with assumed creds", {k: v for k, v in sts2.get_caller_identity().items() if k != "ResponseMetadata"})
ecr_assumed = boto3.client("ecr", endpoint_url=URL, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                           aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
ecr_assumed.create_repository(repositoryName="assumed-repo")
show("ECR CreateRepository with assumed creds -> repo ARN account", ecr_assumed.describe_repositories(repositoryNames=["assumed-repo"])["repositories"][0]["repositoryArn"])
# garbage creds
sts3 = boto3.client("sts", endpoint_url=URL, region_name="us-east-1", aws_access_key_id="AKIAGARBAGE", aws_secret_access_key="x")
show("GetCallerIdentity with garbage creds", sts3.get_caller_identity()["Arn"])

# ECR
ecr = client("ecr")
r = ecr.create_repository(repositoryName="alien/dep-app", imageScanningConfiguration={"scanOnPush": False}, imageTagMutability="MUTABLE")
show("CreateRepository", {k: r["repository"][k] for k in ("repositoryArn", "registryId", "repositoryName", "repositoryUri")})
try:
    ecr.create_repository(repositoryName="alien/dep-app")
except ClientError as e:
    show("CreateRepository twice", err(e))
try:
    ecr.describe_repositories(repositoryNames=["missing"])
except ClientError as e:
    show("DescribeRepositories missing", err(e))
r = ecr.get_authorization_token()
ad = r["authorizationData"][0]
show("GetAuthorizationToken", {"proxyEndpoint": ad["proxyEndpoint"], "expiresAt": str(ad["expiresAt"]), "token_decoded": base64.b64decode(ad["authorizationToken"]).decode()[:80]})
r = ecr.get_authorization_token(registryIds=["210987654321"])
show("GetAuthorizationToken registryIds", [a["proxyEndpoint"] for a in r["authorizationData"]])
policy = {
    "Version": "2012-10-17",
    "Statement": [{
        "Sid": "AlienPull",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
    }],
}
r = ecr.set_repository_policy(repositoryName="alien/dep-app", policyText=json.dumps(policy))
show("SetRepositoryPolicy", r["policyText"][:80])
show("GetRepositoryPolicy", json.loads(ecr.get_repository_policy(repositoryName="alien/dep-app")["policyText"])["Statement"][0]["Sid"])
try:
    ecr.set_repository_policy(repositoryName="alien/dep-app", policyText="not json")
    show("SetRepositoryPolicy invalid JSON", "accepted")
except ClientError as e:
    show("SetRepositoryPolicy invalid JSON", err(e))
try:
    ecr.get_repository_policy(repositoryName="assumed-repo")
except ClientError as e:
    show("GetRepositoryPolicy none set", err(e))
r = ecr.delete_repository(repositoryName="alien/dep-app", force=True)
show("DeleteRepository force", r["repository"]["repositoryName"])
try:
    ecr.delete_repository(repositoryName="alien/dep-app")
except ClientError as e:
    show("DeleteRepository missing", err(e))
