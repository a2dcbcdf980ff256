"""moto_server with every request serialized by one lock.

Stock `moto_server` runs werkzeug with threaded=True and moto's backends take no locks, so
concurrent conditional writes race (two put-if-absent winners), TransactWriteItems (which
deep-copies the whole table as its rollback snapshot and restores it on cancel) loses other
requests' writes and fails with 500 "RuntimeError: dictionary changed size during iteration".
Wrapping the WSGI app in a lock makes each request atomic, as DynamoDB's are; the server stays
threaded (HTTP/1.1 keep-alive) so many clients can still connect.

Also POST /_alien/env (see _set_env) and POST /_alien/ecs-service (see _patch_ecs_service).

Usage: python moto_serial.py -H 127.0.0.1 -p PORT   (same flags as moto_server)
"""
import json
import os
import threading

import moto.server as ms
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_lock = threading.Lock()
_orig_call = DomainDispatcherApplication.__call__


def _set_env(environ, start_response):
    """POST /_alien/env {"NAME": "value" | null}: set/unset process env vars that moto reads
    at call time (MOTO_ECS_SERVICE_RUNNING, MOTO_ECS_SERVICE_FAILED_TASKS), so one server can
    play both a healthy and a failing rollout."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    changes = json.loads(environ["wsgi.input"].read(length) or b"{}")
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: os.environ.get(k) for k in changes}).encode()]


def _patch_ecs_service(environ, start_response):
    """POST /_alien/ecs-service {"cluster", "service", "account"?, "region"?, "runningCount"?,
    "pendingCount"?, "rolloutState"?, "failedTasks"?, "syncDeployment"?: true}: edits a moto ECS
    service in place, so a test can make a rollout (also one started by UpdateService, which
    moto never reflects in deployments[]) complete or fail. syncDeployment copies the service's
    taskDefinition and desiredCount into deployments[0], as a new PRIMARY deployment on AWS has."""
    from moto.ecs.models import ecs_backends

    length = int(environ.get("CONTENT_LENGTH") or 0)
    req = json.loads(environ["wsgi.input"].read(length) or b"{}")
    backend = ecs_backends[req.get("account", "123456789012")][req.get("region", "us-east-1")]
    svc = backend.services[f"{req['cluster']}:{req['service']}"]
    dep = svc.deployments[0] if svc.deployments else {}
    if req.get("syncDeployment"):
        dep["taskDefinition"] = svc.task_definition
        dep["desiredCount"] = svc.desired_count
    if "runningCount" in req:
        svc.running_count = dep["runningCount"] = int(req["runningCount"])
    if "pendingCount" in req:
        svc.pending_count = dep["pendingCount"] = int(req["pendingCount"])
    if "failedTasks" in req:
        dep["failedTasks"] = int(req["failedTasks"])
    if "rolloutState" in req:
        dep["rolloutState"] = req["rolloutState"]
        dep["rolloutStateReason"] = f"set by test: {req['rolloutState']}"
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"runningCount": svc.running_count, "deployment": {k: v for k, v in dep.items() if isinstance(v, (str, int))}}).encode()]


def _serialized_call(self, environ, start_response):
    if environ.get("PATH_INFO") == "/_alien/env" and environ.get("REQUEST_METHOD") == "POST":
        with _lock:
            return _set_env(environ, start_response)
    if environ.get("PATH_INFO") == "/_alien/ecs-service" and environ.get("REQUEST_METHOD") == "POST":
        with _lock:
            return _patch_ecs_service(environ, start_response)
    with _lock:
        result = _orig_call(self, environ, start_response)
        try:
            body = b"".join(result)  # materialize inside the lock
        finally:
            close = getattr(result, "close", None)
            if close:
                close()
    return [body]


DomainDispatcherApplication.__call__ = _serialized_call

if __name__ == "__main__":
    ms.main()
