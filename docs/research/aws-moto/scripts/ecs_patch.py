"""Drive an ECS rollout to FAILED / COMPLETED after UpdateService via the wrapper's /_alien/ecs-service."""
import json, urllib.request
from common import URL, client, show
ecs = client("ecs"); ec2 = client("ec2")
subs = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]][:2]
sg = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}, {"Name": "vpc-id", "Values": [ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]]}])["SecurityGroups"][0]["GroupId"]
ecs.create_cluster(clusterName="alien")
td = lambda img: ecs.register_task_definition(family="f", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
    containerDefinitions=[{"name": "web", "image": img, "essential": True}])["taskDefinition"]["taskDefinitionArn"]
td1, td2 = td("img:1"), td("img:2")
ecs.create_service(cluster="alien", serviceName="svc", taskDefinition=td1, desiredCount=2, launchType="FARGATE",
                   networkConfiguration={"awsvpcConfiguration": {"subnets": subs, "securityGroups": [sg]}})
ecs.update_service(cluster="alien", service="svc", taskDefinition=td2)
def patch(**body):
    req = urllib.request.Request(URL + "/_alien/ecs-service", data=json.dumps(dict(cluster="alien", service="svc", **body)).encode(), method="POST")
    return json.loads(urllib.request.urlopen(req).read())
def d():
    s = ecs.describe_services(cluster="alien", services=["svc"])["services"][0]
    dep = s["deployments"][0]
    return (s["taskDefinition"][-3:], s["runningCount"], dep["taskDefinition"][-3:], dep["rolloutState"], dep["failedTasks"], dep["runningCount"])
show("after UpdateService (svc.td, running, dep.td, rollout, failed, dep.running)", d())
patch(syncDeployment=True, runningCount=0, rolloutState="IN_PROGRESS")
show("patched IN_PROGRESS", d())
patch(rolloutState="FAILED", failedTasks=4)
show("patched FAILED", d())
patch(rolloutState="COMPLETED", runningCount=2, failedTasks=0)
show("patched COMPLETED", d())
