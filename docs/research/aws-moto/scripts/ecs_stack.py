"""ECS on Fargate + ELBv2 + Logs + SSM + Application Auto Scaling against moto.

The server this talks to must have been started with MOTO_ECS_SERVICE_RUNNING / MOTO_ECS_SERVICE_FAILED_TASKS
as printed at the top (pass EXPECT_RUNNING/EXPECT_FAILED to label the output).
"""
import json
import os

from botocore.exceptions import ClientError

from common import client, err, show

print(f"=== server env: MOTO_ECS_SERVICE_RUNNING={os.environ.get('EXPECT_RUNNING')} MOTO_ECS_SERVICE_FAILED_TASKS={os.environ.get('EXPECT_FAILED')}")
ec2 = client("ec2")
ecs = client("ecs")
elb = client("elbv2")
logs = client("logs")
ssm = client("ssm")
aas = client("application-autoscaling")
iam = client("iam")

# network: VPC, two subnets, SG
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
sub1 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
sub2 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="alien-svc", Description="x", VpcId=vpc)["GroupId"]
show("default VPC exists in moto?", [v["VpcId"] for v in ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]])

# CloudWatch Logs
logs.create_log_group(logGroupName="/alien/dep1/web")
try:
    logs.create_log_group(logGroupName="/alien/dep1/web")
except ClientError as e:
    show("CreateLogGroup twice", err(e))
logs.put_retention_policy(logGroupName="/alien/dep1/web", retentionInDays=14)
show("DescribeLogGroups", [(g["logGroupName"], g.get("retentionInDays")) for g in logs.describe_log_groups(logGroupNamePrefix="/alien/")["logGroups"]])

# SSM
r = ssm.put_parameter(Name="/alien/dep1/DB_PASSWORD", Value="s3cret", Type="SecureString")
show("PutParameter SecureString version", r["Version"])
try:
    ssm.put_parameter(Name="/alien/dep1/DB_PASSWORD", Value="s3cret2", Type="SecureString")
except ClientError as e:
    show("PutParameter existing without Overwrite", err(e))
r = ssm.put_parameter(Name="/alien/dep1/DB_PASSWORD", Value="s3cret2", Type="SecureString", Overwrite=True)
show("PutParameter Overwrite version", r["Version"])
p = ssm.get_parameter(Name="/alien/dep1/DB_PASSWORD", WithDecryption=False)["Parameter"]
show("GetParameter no decryption value", p["Value"][:40])
p = ssm.get_parameter(Name="/alien/dep1/DB_PASSWORD", WithDecryption=True)["Parameter"]
show("GetParameter decrypted", (p["Value"], p["ARN"]))
param_arn = p["ARN"]

# IAM roles for the task
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
exec_role = iam.create_role(RoleName="alien-exec", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

# ECS
r = ecs.create_cluster(clusterName="alien")
show("CreateCluster", (r["cluster"]["clusterArn"], r["cluster"]["status"]))
r = ecs.create_cluster(clusterName="alien")
show("CreateCluster again (idempotent?)", r["cluster"]["clusterArn"])
td = dict(
    family="alien-dep1-web",
    networkMode="awsvpc",
    requiresCompatibilities=["FARGATE"],
    cpu="256",
    memory="512",
    executionRoleArn=exec_role,
    containerDefinitions=[{
        "name": "web",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/alien/dep1:v1",
        "essential": True,
        "command": ["/app", "--serve"],
        "portMappings": [{"containerPort": 8080, "protocol": "tcp"}],
        "environment": [{"name": "ALIEN_DEPLOYMENT_ID", "value": "dep1"}],
        "secrets": [{"name": "DB_PASSWORD", "valueFrom": param_arn}],
        "healthCheck": {"command": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health || exit 1"], "interval": 10, "timeout": 5, "retries": 3, "startPeriod": 10},
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/alien/dep1/web", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web"}},
    }],
)
r = ecs.register_task_definition(**td)["taskDefinition"]
show("RegisterTaskDefinition", (r["taskDefinitionArn"], r["revision"], r["status"], r["containerDefinitions"][0].get("secrets"), r["containerDefinitions"][0].get("healthCheck") is not None, r["containerDefinitions"][0]["logConfiguration"]["logDriver"]))
td1 = r["taskDefinitionArn"]
td["containerDefinitions"][0]["image"] = td["containerDefinitions"][0]["image"].replace(":v1", ":v2")
td2 = ecs.register_task_definition(**td)["taskDefinition"]["taskDefinitionArn"]
show("RegisterTaskDefinition again -> revision", td2)
bad = dict(td, cpu="300", memory="100")
try:
    ecs.register_task_definition(**bad)
    show("RegisterTaskDefinition Fargate cpu=300/memory=100 (invalid on AWS)", "accepted")
except ClientError as e:
    show("RegisterTaskDefinition invalid Fargate size", err(e))

# ELBv2
r = elb.create_load_balancer(Name="alien-dep1", Subnets=[sub1, sub2], SecurityGroups=[sg], Scheme="internet-facing", Type="application")
alb = r["LoadBalancers"][0]
show("CreateLoadBalancer application", (alb["LoadBalancerArn"], alb["DNSName"], alb["State"], alb["Type"]))
r = elb.create_load_balancer(Name="alien-dep1", Subnets=[sub1, sub2], SecurityGroups=[sg], Scheme="internet-facing", Type="application")
show("CreateLoadBalancer same name again", r["LoadBalancers"][0]["LoadBalancerArn"] == alb["LoadBalancerArn"])
r = elb.create_load_balancer(Name="alien-dep1-nlb", Subnets=[sub1, sub2], Scheme="internet-facing", Type="network")
nlb = r["LoadBalancers"][0]
show("CreateLoadBalancer network", (nlb["LoadBalancerArn"], nlb["DNSName"], nlb["State"], nlb["Type"]))
try:
    elb.create_load_balancer(Name="alien-nosubnet", Subnets=[], Type="application")
except ClientError as e:
    show("CreateLoadBalancer no subnets", err(e))
try:
    elb.create_load_balancer(Name="alien-badsubnet", Subnets=["subnet-12345678"], Type="application")
except ClientError as e:
    show("CreateLoadBalancer unknown subnet", err(e))
tg = elb.create_target_group(Name="alien-dep1-web", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip",
                             HealthCheckPath="/health", HealthCheckProtocol="HTTP", Matcher={"HttpCode": "200-399"})["TargetGroups"][0]
show("CreateTargetGroup ip", (tg["TargetGroupArn"], tg["TargetType"], tg["HealthCheckPath"]))
try:
    elb.create_target_group(Name="x" * 33, Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip")
except ClientError as e:
    show("CreateTargetGroup 33-char name", err(e))
lst = elb.create_listener(LoadBalancerArn=alb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])["Listeners"][0]
show("CreateListener", lst["ListenerArn"])
tg_nlb = elb.create_target_group(Name="alien-dep1-tcp", Protocol="TCP", Port=8080, VpcId=vpc, TargetType="ip")["TargetGroups"][0]
lst2 = elb.create_listener(LoadBalancerArn=nlb["LoadBalancerArn"], Protocol="TCP", Port=80,
                           DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_nlb["TargetGroupArn"]}])["Listeners"][0]
show("CreateListener NLB TCP", lst2["ListenerArn"])
show("DescribeTargetHealth (no tasks)", elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"])

# ECS service with load balancer
svc_kw = dict(
    cluster="alien",
    serviceName="alien-dep1-web",
    taskDefinition=td1,
    desiredCount=2,
    launchType="FARGATE",
    networkConfiguration={"awsvpcConfiguration": {"subnets": [sub1, sub2], "securityGroups": [sg], "assignPublicIp": "ENABLED"}},
    loadBalancers=[{"targetGroupArn": tg["TargetGroupArn"], "containerName": "web", "containerPort": 8080}],
    healthCheckGracePeriodSeconds=30,
    deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}, "maximumPercent": 200, "minimumHealthyPercent": 100},
)
s = ecs.create_service(**svc_kw)["service"]


def summary(s):
    return {"status": s["status"], "desired": s["desiredCount"], "running": s["runningCount"], "pending": s["pendingCount"], "taskDefinition": s["taskDefinition"].split("/")[-1],
            "deployments": [{k: d.get(k) for k in ("status", "rolloutState", "desiredCount", "runningCount", "pendingCount", "failedTasks", "taskDefinition")} for d in s.get("deployments", [])],
            "loadBalancers": len(s.get("loadBalancers", [])), "deploymentConfiguration": s.get("deploymentConfiguration")}


show("CreateService", summary(s))
try:
    ecs.create_service(**svc_kw)
    show("CreateService twice", "accepted")
except ClientError as e:
    show("CreateService twice", err(e))
d = ecs.describe_services(cluster="alien", services=["alien-dep1-web", "missing-svc"])
show("DescribeServices", summary(d["services"][0]))
show("DescribeServices failures for missing", d["failures"])
show("ListTasks (does moto run tasks for a service?)", ecs.list_tasks(cluster="alien", serviceName="alien-dep1-web")["taskArns"])
s = ecs.update_service(cluster="alien", service="alien-dep1-web", taskDefinition=td2)["service"]
show("UpdateService taskDefinition=td2", summary(s))
s = ecs.update_service(cluster="alien", service="alien-dep1-web", desiredCount=3)["service"]
show("UpdateService desiredCount=3", summary(s))
s = ecs.update_service(cluster="alien", service="alien-dep1-web", forceNewDeployment=True)["service"]
show("UpdateService forceNewDeployment", summary(s))
try:
    ecs.update_service(cluster="alien", service="nope", desiredCount=1)
except ClientError as e:
    show("UpdateService missing", err(e))

# Application Auto Scaling
rid = "service/alien/alien-dep1-web"
aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=5)
show("DescribeScalableTargets", [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]])
r = aas.put_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration={"TargetValue": 60.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}, "ScaleInCooldown": 60, "ScaleOutCooldown": 60})
show("PutScalingPolicy CPU", (r["PolicyARN"], [a["AlarmName"] for a in r.get("Alarms", [])]))
label = alb["LoadBalancerArn"].split(":loadbalancer/")[1] + "/" + tg["TargetGroupArn"].split(":")[-1]
show("ALBRequestCountPerTarget ResourceLabel", label)
r = aas.put_scaling_policy(PolicyName="rps", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration={"TargetValue": 100.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ALBRequestCountPerTarget", "ResourceLabel": label}})
show("PutScalingPolicy ALBRequestCountPerTarget", (r["PolicyARN"], [a["AlarmName"] for a in r.get("Alarms", [])]))
try:
    aas.put_scaling_policy(PolicyName="rps-nolabel", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration={"TargetValue": 100.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ALBRequestCountPerTarget"}})
    show("PutScalingPolicy ALBRequestCountPerTarget without ResourceLabel", "accepted (AWS: ValidationException)")
except ClientError as e:
    show("PutScalingPolicy ALBRequestCountPerTarget without ResourceLabel", err(e))
r = aas.put_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration={"TargetValue": 70.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})
show("PutScalingPolicy same name again (update)", r["PolicyARN"])
show("DescribeScalingPolicies", [(p["PolicyName"], p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]) for p in aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]])
show("DescribeServices after autoscaling registered (desiredCount changed?)", summary(ecs.describe_services(cluster="alien", services=["alien-dep1-web"])["services"][0])["desired"])
try:
    aas.register_scalable_target(ServiceNamespace="ecs", ResourceId="service/alien/no-such-svc", ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=5)
    show("RegisterScalableTarget for non-existent ECS service", "accepted")
except ClientError as e:
    show("RegisterScalableTarget for non-existent ECS service", err(e))
aas.delete_scaling_policy(PolicyName="rps", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount")
aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount")
show("after Deregister: policies", aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"])

# teardown
try:
    ecs.delete_service(cluster="alien", service="alien-dep1-web")
except ClientError as e:
    show("DeleteService while desiredCount>0 (no force)", err(e))
s = ecs.delete_service(cluster="alien", service="alien-dep1-web", force=True)["service"]
show("DeleteService force", (s["status"], s["runningCount"]))
d = ecs.describe_services(cluster="alien", services=["alien-dep1-web"])
show("DescribeServices after delete", ([x["status"] for x in d["services"]], d["failures"]))
try:
    ecs.delete_service(cluster="alien", service="alien-dep1-web", force=True)
    show("DeleteService again", "accepted")
except ClientError as e:
    show("DeleteService again", err(e))
try:
    s = ecs.create_service(**svc_kw)["service"]
    show("CreateService again after delete (same name)", s["status"])
except ClientError as e:
    show("CreateService again after delete", err(e))
ecs.delete_service(cluster="alien", service="alien-dep1-web", force=True)
show("ListTaskDefinitions family", ecs.list_task_definitions(familyPrefix="alien-dep1-web")["taskDefinitionArns"])
r = ecs.deregister_task_definition(taskDefinition=td1)["taskDefinition"]
show("DeregisterTaskDefinition", r["status"])
show("ListTaskDefinitions ACTIVE after deregister", ecs.list_task_definitions(familyPrefix="alien-dep1-web", status="ACTIVE")["taskDefinitionArns"])
show("ListTaskDefinitions INACTIVE", ecs.list_task_definitions(familyPrefix="alien-dep1-web", status="INACTIVE")["taskDefinitionArns"])
show("DescribeTaskDefinition deregistered", ecs.describe_task_definition(taskDefinition=td1)["taskDefinition"]["status"])
try:
    ecs.deregister_task_definition(taskDefinition=td1)
    show("DeregisterTaskDefinition twice", "accepted")
except ClientError as e:
    show("DeregisterTaskDefinition twice", err(e))
try:
    r = ecs.delete_task_definitions(taskDefinitions=[td1])
    show("DeleteTaskDefinitions", (r.get("taskDefinitions"), r.get("failures")))
except ClientError as e:
    show("DeleteTaskDefinitions", err(e))

elb.delete_listener(ListenerArn=lst["ListenerArn"])
try:
    elb.delete_listener(ListenerArn=lst["ListenerArn"])
    show("DeleteListener twice", "accepted")
except ClientError as e:
    show("DeleteListener twice", err(e))
elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
try:
    elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
    show("DeleteTargetGroup twice", "accepted (idempotent)")
except ClientError as e:
    show("DeleteTargetGroup twice", err(e))
show("LBs named alien-dep1 (created twice)", [l["LoadBalancerArn"] for l in elb.describe_load_balancers()["LoadBalancers"] if l["LoadBalancerName"] == "alien-dep1"])
for l in elb.describe_load_balancers()["LoadBalancers"]:
    if l["LoadBalancerName"] == "alien-dep1":
        elb.delete_load_balancer(LoadBalancerArn=l["LoadBalancerArn"])
try:
    elb.delete_load_balancer(LoadBalancerArn=alb["LoadBalancerArn"])
    show("DeleteLoadBalancer twice", "accepted (idempotent)")
except ClientError as e:
    show("DeleteLoadBalancer twice", err(e))
try:
    elb.describe_load_balancers(Names=["alien-dep1"])
except ClientError as e:
    show("DescribeLoadBalancers deleted name", err(e))
try:
    elb.describe_target_groups(Names=["alien-dep1-web"])
except ClientError as e:
    show("DescribeTargetGroups deleted name", err(e))
try:
    elb.delete_target_group(TargetGroupArn=tg_nlb["TargetGroupArn"])
    show("DeleteTargetGroup still used by NLB listener", "accepted")
except ClientError as e:
    show("DeleteTargetGroup in use", err(e))
logs.delete_log_group(logGroupName="/alien/dep1/web")
try:
    logs.delete_log_group(logGroupName="/alien/dep1/web")
except ClientError as e:
    show("DeleteLogGroup missing", err(e))
ssm.delete_parameter(Name="/alien/dep1/DB_PASSWORD")
try:
    ssm.delete_parameter(Name="/alien/dep1/DB_PASSWORD")
except ClientError as e:
    show("DeleteParameter missing", err(e))
r = ssm.delete_parameters(Names=["/alien/dep1/DB_PASSWORD", "/x"])
show("DeleteParameters (batch) missing", (r["DeletedParameters"], r["InvalidParameters"]))
try:
    ecs.delete_cluster(cluster="alien")
    show("DeleteCluster", "ok")
except ClientError as e:
    show("DeleteCluster", err(e))
